//! Found devices, persisted across restarts (JSON, replaced atomically).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Format version of the state file.
const FORMAT: u32 = 1;

/// One printer found by discovery. Identity is the serial number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevice {
    /// Device id: prtGeneralSerialNumber (or the vendor serial).
    pub serial: String,
    /// Last address it answered at, `ip:port`.
    pub address: String,
    /// Which credentials answered: `discovery.credentials[N]`, `default`,
    /// or `ipp` for a printer found over IPP.
    pub credentials: String,
    /// `ipp` when found over IPP only (SNMP silent), else `snmp`.
    #[serde(default)]
    pub protocol: crate::config::Protocol,
    /// With `protocol = ipp`: the `ipp://ip:port/path` that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipp_url: Option<String>,
    /// When first found, ms since the epoch.
    pub first_seen: i64,
    /// When last found, ms since the epoch.
    pub last_seen: i64,
}

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStore {
    /// Format version.
    pub version: u32,
    /// Known devices, by serial (unique).
    pub devices: Vec<KnownDevice>,
}

/// What [`DeviceStore::upsert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    /// A serial never seen before.
    New,
    /// A known serial at a new address (the old one is returned).
    Moved(String),
    /// A known serial at its known address.
    Seen,
}

impl DeviceStore {
    /// Load `path`; a missing file is an empty store. An unreadable or
    /// corrupt file is moved aside (`.corrupt`) and an empty store returned,
    /// so one bad write never stops the connector.
    pub fn load(path: &Path) -> DeviceStore {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DeviceStore::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the discovery state file; starting empty");
                return DeviceStore::default();
            }
        };
        match serde_json::from_slice::<DeviceStore>(&bytes) {
            Ok(s) => s,
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                let _ = std::fs::rename(path, &aside);
                tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %e, "corrupt discovery state file; starting empty");
                metrics::counter!("fleetpulse_edge_discovery_state_corrupt_total").increment(1);
                DeviceStore::default()
            }
        }
    }

    /// Write to `path` atomically: a temporary file in the same directory,
    /// fsync, rename over the old file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let body = serde_json::to_vec_pretty(&DeviceStore {
            version: FORMAT,
            devices: self.devices.clone(),
        })
        .map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The device with this serial.
    pub fn get(&self, serial: &str) -> Option<&KnownDevice> {
        self.devices.iter().find(|d| d.serial == serial)
    }

    /// Record that `serial` answered at `address` with `credentials` at
    /// `now`, over SNMP (`ipp_url` None) or over IPP at `ipp_url`.
    pub fn upsert(
        &mut self,
        serial: &str,
        address: &str,
        credentials: &str,
        ipp_url: Option<&str>,
        now: i64,
    ) -> Upsert {
        let protocol = match ipp_url {
            Some(_) => crate::config::Protocol::Ipp,
            None => crate::config::Protocol::Snmp,
        };
        if let Some(d) = self.devices.iter_mut().find(|d| d.serial == serial) {
            d.last_seen = now;
            d.credentials = credentials.to_string();
            d.protocol = protocol;
            d.ipp_url = ipp_url.map(str::to_string);
            if d.address != address {
                let old = std::mem::replace(&mut d.address, address.to_string());
                return Upsert::Moved(old);
            }
            return Upsert::Seen;
        }
        self.devices.push(KnownDevice {
            serial: serial.to_string(),
            address: address.to_string(),
            credentials: credentials.to_string(),
            protocol,
            ipp_url: ipp_url.map(str::to_string),
            first_seen: now,
            last_seen: now,
        });
        Upsert::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_atomic_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/edge-devices.json");
        assert_eq!(DeviceStore::load(&path), DeviceStore::default());
        let mut s = DeviceStore::default();
        assert_eq!(
            s.upsert("SN1", "10.0.0.1:161", "default", None, 1),
            Upsert::New
        );
        assert_eq!(
            s.upsert("SN1", "10.0.0.1:161", "default", None, 2),
            Upsert::Seen
        );
        assert_eq!(
            s.upsert("SN1", "10.0.0.9:161", "default", None, 3),
            Upsert::Moved("10.0.0.1:161".into())
        );
        s.save(&path).unwrap();
        let back = DeviceStore::load(&path);
        assert_eq!(back.devices, s.devices);
        assert_eq!(back.get("SN1").unwrap().first_seen, 1);
        assert_eq!(back.get("SN1").unwrap().last_seen, 3);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary file renamed away");
        // Files written before IPP discovery (no protocol/ipp_url) still load.
        let old = r#"{"version":1,"devices":[{"serial":"S","address":"10.0.0.2:161","credentials":"default","first_seen":1,"last_seen":2}]}"#;
        std::fs::write(&path, old).unwrap();
        let loaded = DeviceStore::load(&path);
        assert_eq!(loaded.devices[0].protocol, crate::config::Protocol::Snmp);
        assert_eq!(loaded.devices[0].ipp_url, None);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(DeviceStore::load(&path), DeviceStore::default());
        assert!(path.with_extension("json.corrupt").exists());
    }
}
