//! Edge connector configuration.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use fleetpulse_core::config::{ConfigError, Validate};
use fleetpulse_core::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

use crate::buffer::BufferConfig;
use crate::discovery::DiscoveryConfig;
use crate::ipp::{IppOptions, IppTarget};
use crate::snmp::{split_host_port, DeviceTarget, SnmpOptions};

/// Protocol a device is polled with (`devices[].protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SNMP v1/v2c/v3 (the `[snmp]` options, the device's credentials).
    #[default]
    Snmp,
    /// IPP Get-Printer-Attributes (the `[ipp]` options, `ipp_url`).
    Ipp,
    /// 3D printer JSON API over HTTPS (the `[https3d]` options, `url`, `tls`).
    Https3d,
}

/// One device to poll: `address` (`host[:port]`, port 161 when omitted)
/// and its credentials (`community`, default `public`, or SNMPv3 `user`,
/// passwords, protocols; see [`DeviceTarget`]). The same type is the target of
/// [`crate::poll_device`], so `fleetpulse poll` and the service agree.
/// `protocol = "ipp"` polls it with IPP instead, at `ipp_url` (default
/// `ipp://<address host>:631/ipp/print`; see [`crate::ipp`]); SNMP settings
/// (`version`, `user`, passwords, ...) are then an error.
pub type DeviceConfig = DeviceTarget;

/// Configuration of `fleetpulse edge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Customer owning this connector.
    pub tenant_id: String,
    /// This connector's id (signs records, keys its heartbeat).
    pub connector_id: String,
    /// Where the connector secret lives: `env:NAME`, `file:/path`, or inline. Required.
    pub connector_secret: String,
    /// Devices to poll (may be empty when `discovery.targets` is set).
    pub devices: Vec<DeviceConfig>,
    /// Time between two polls of the same device.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Time between two connector heartbeats (version, buffer, and the
    /// liveness of every device: the alerter's `heartbeat_interval`).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// SNMP timeouts, retries and limits.
    pub snmp: SnmpOptions,
    /// IPP timeout and response cap (devices with `protocol = "ipp"`).
    pub ipp: IppOptions,
    /// 3D printers over HTTPS: timeout, caps, job cursor file (devices with
    /// `protocol = "https3d"`).
    pub https3d: crate::http3d::Https3dOptions,
    /// Kafka cluster and topics (topic names are used by every uplink;
    /// `[kafka.tls]` and `[kafka.sasl]` secure the Kafka uplink: TLS with
    /// server verification unless every broker is a loopback address).
    pub kafka: KafkaConfig,
    /// Uplink choice (`kind = "kafka" | "firehose"`) and Firehose settings.
    pub uplink: crate::uplink::UplinkConfig,
    /// Store-and-forward buffer: every record is written here before it is sent.
    pub buffer: BufferConfig,
    /// `/metrics` and `/healthz` listen address (off when unset). The
    /// connector opens no other listening socket; this one must be a
    /// loopback address unless `metrics_public = true`.
    pub metrics_addr: Option<SocketAddr>,
    /// Allow a non-loopback `metrics_addr` (e.g. `0.0.0.0` for Kubernetes probes).
    pub metrics_public: bool,
    /// Devices polled at the same time, at most.
    pub max_concurrent_polls: usize,
    /// After shutdown is requested, how long in-flight polls may still finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Network discovery (off unless `discovery.targets` is set).
    pub discovery: DiscoveryConfig,
    /// What is sent when: status, counters, device heartbeats (`[schedule]`).
    pub schedule: ScheduleConfig,
    /// What identifying device data leaves the site (see [`crate::privacy`]).
    pub privacy: crate::privacy::PrivacyConfig,
    /// Restarting stuck pollers and reporting health (see [`crate::watchdog`]).
    pub watchdog: crate::watchdog::WatchdogConfig,
    /// Signed configuration from the Kafka control topic (see [`crate::control`]).
    pub control: crate::control::ControlConfig,
}

/// When device heartbeats are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceHeartbeats {
    /// Only when a device answers again after unanswered polls; liveness is
    /// otherwise carried by the connector heartbeat's `devices` list.
    #[default]
    OnChange,
    /// After every answered poll (one record per device and poll).
    EveryPoll,
}

/// `[schedule]`: what leaves the site when. Devices are read every
/// `poll_interval` (cheap, on the LAN); what is read is sent on this
/// schedule (see the crate docs for the rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Time between two status records of a device (supplies, trays, state),
    /// aligned across devices; sooner on a significant change.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// Time between two usage-counter records of a device, aligned across
    /// devices; sooner after `counters_after_pages` or `counters_after_jobs`,
    /// or on a counter wrap or reset.
    #[serde(with = "humantime_serde")]
    pub counters_interval: Duration,
    /// Send counters once this many pages were printed since the last record.
    pub counters_after_pages: u64,
    /// Send counters once this many jobs finished since the last record
    /// (where the driver knows jobs; 2D printers over SNMP/IPP count pages only).
    pub counters_after_jobs: u64,
    /// Lower bound of `status_interval` and `counters_interval` (the vendors'
    /// "at most every 30 minutes"). Lower it only for tests and demos.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// `on_change` (default) or `every_poll`.
    pub device_heartbeats: DeviceHeartbeats,
    /// Supply level (percent) under which a crossing sends the status at once.
    pub supply_low_percent: u8,
    /// Last counter readings, kept across restarts (default: `counters.json`
    /// next to `buffer.dir`).
    pub counters_state_file: Option<std::path::PathBuf>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            status_interval: Duration::from_secs(3 * 3600),
            counters_interval: Duration::from_secs(3 * 3600),
            counters_after_pages: 100,
            counters_after_jobs: 19,
            min_interval: Duration::from_secs(30 * 60),
            device_heartbeats: DeviceHeartbeats::OnChange,
            supply_low_percent: 10,
            counters_state_file: None,
        }
    }
}

impl ScheduleConfig {
    /// Everything after every poll (tests, demos): intervals of 1 s, device
    /// heartbeats every poll.
    pub fn every_poll() -> ScheduleConfig {
        ScheduleConfig {
            status_interval: Duration::from_secs(1),
            counters_interval: Duration::from_secs(1),
            min_interval: Duration::from_secs(1),
            device_heartbeats: DeviceHeartbeats::EveryPoll,
            ..Default::default()
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.min_interval < Duration::from_secs(1) {
            return Err(bad("schedule.min_interval", "must be at least 1s"));
        }
        for (key, v) in [
            ("schedule.status_interval", self.status_interval),
            ("schedule.counters_interval", self.counters_interval),
        ] {
            if v < self.min_interval {
                return Err(bad(
                    key,
                    format!(
                        "{} is below schedule.min_interval ({}); lower schedule.min_interval only for tests and demos",
                        humantime_serde::re::humantime::format_duration(v),
                        humantime_serde::re::humantime::format_duration(self.min_interval)
                    ),
                ));
            }
        }
        if self.counters_after_pages == 0 {
            return Err(bad("schedule.counters_after_pages", "must be at least 1"));
        }
        if self.counters_after_jobs == 0 {
            return Err(bad("schedule.counters_after_jobs", "must be at least 1"));
        }
        if self.supply_low_percent > 100 {
            return Err(bad("schedule.supply_low_percent", "must be within 0..=100"));
        }
        if self
            .counters_state_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(bad("schedule.counters_state_file", "must not be empty"));
        }
        Ok(())
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            tenant_id: String::new(),
            connector_id: String::new(),
            connector_secret: String::new(),
            devices: Vec::new(),
            poll_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(30 * 60),
            snmp: SnmpOptions::default(),
            ipp: IppOptions::default(),
            https3d: Default::default(),
            kafka: KafkaConfig::default(),
            uplink: Default::default(),
            buffer: BufferConfig::default(),
            metrics_addr: None,
            metrics_public: false,
            max_concurrent_polls: 64,
            shutdown_grace: Duration::from_secs(2),
            discovery: DiscoveryConfig::default(),
            schedule: ScheduleConfig::default(),
            privacy: Default::default(),
            watchdog: Default::default(),
            control: Default::default(),
        }
    }
}

fn bad(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key: key.into(),
        reason: reason.into(),
    }
}

/// An IPP or 3D device carries no SNMP settings: a `user` or password on it
/// is a mistake (probably meant for an SNMP entry), so it is named, not ignored.
fn reject_snmp_settings(i: usize, d: &DeviceConfig) -> Result<(), ConfigError> {
    let protocol = match d.protocol {
        Protocol::Snmp => return Ok(()),
        Protocol::Ipp => "ipp",
        Protocol::Https3d => "https3d",
    };
    for (k, set) in [
        ("version", d.version.is_some()),
        ("user", d.user.is_some()),
        ("security_level", d.security_level.is_some()),
        ("auth_protocol", d.auth_protocol.is_some()),
        ("auth_password", d.auth_password.is_some()),
        ("priv_protocol", d.priv_protocol.is_some()),
        ("priv_password", d.priv_password.is_some()),
    ] {
        if set {
            return Err(bad(
                format!("devices[{i}].{k}"),
                format!("is an SNMP setting but protocol is {protocol:?}"),
            ));
        }
    }
    Ok(())
}

impl Validate for EdgeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("tenant_id", &self.tenant_id),
            ("connector_id", &self.connector_id),
            ("connector_secret", &self.connector_secret),
        ] {
            if value.trim().is_empty() {
                return Err(bad(key, "must not be empty"));
            }
        }
        if self.devices.is_empty() && !self.discovery.enabled() {
            return Err(bad(
                "devices",
                "at least one device (or discovery.targets) is required",
            ));
        }
        let mut seen = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = format!("devices[{i}].address");
            let (host, port) = split_host_port(&d.address).map_err(|r| bad(&key, r))?;
            // A printer may be listed once per protocol (and per IPP queue).
            let https3d = crate::http3d::check_device(i, d)?;
            let identity = match d.protocol {
                Protocol::Snmp if d.ipp_url.is_some() => {
                    return Err(bad(
                        format!("devices[{i}].ipp_url"),
                        "only used with protocol = \"ipp\"",
                    ))
                }
                Protocol::Snmp => format!("snmp {}:{port}", host.to_ascii_lowercase()),
                Protocol::Ipp => {
                    let t = IppTarget::parse(&d.ipp_url_or_default())
                        .map_err(|e| bad(format!("devices[{i}].ipp_url"), e.to_string()))?;
                    format!("ipp {}:{}{}", t.host.to_ascii_lowercase(), t.port, t.path)
                }
                Protocol::Https3d => https3d.unwrap_or_default(),
            };
            if !seen.insert(identity) {
                return Err(bad(key, format!("duplicate address {:?}", d.address)));
            }
            match d.protocol {
                Protocol::Snmp => d
                    .credentials()
                    .validate(&format!("devices[{i}]"), self.snmp.version)?,
                Protocol::Ipp | Protocol::Https3d => reject_snmp_settings(i, d)?,
            }
        }
        self.discovery.validate(self.snmp.version)?;
        if self.poll_interval < Duration::from_secs(1) {
            return Err(bad("poll_interval", "must be at least 1s"));
        }
        if self.heartbeat_interval < Duration::from_secs(1) {
            return Err(bad("heartbeat_interval", "must be at least 1s"));
        }
        self.schedule.check()?;
        if self.max_concurrent_polls == 0 {
            return Err(bad("max_concurrent_polls", "must be at least 1"));
        }
        let s = &self.snmp;
        if s.timeout.is_zero() {
            return Err(bad("snmp.timeout", "must be positive"));
        }
        if s.max_repetitions == 0 {
            return Err(bad("snmp.max_repetitions", "must be at least 1"));
        }
        if s.max_response_bytes == 0 || s.max_response_bytes > 65_535 {
            return Err(bad("snmp.max_response_bytes", "must be within 1..=65535"));
        }
        if s.max_walk_varbinds == 0 || s.max_walk_iterations == 0 {
            return Err(bad(
                "snmp.max_walk_varbinds",
                "walk limits must be at least 1",
            ));
        }
        if s.poll_deadline < s.timeout {
            return Err(bad(
                "snmp.poll_deadline",
                "must be at least snmp.timeout, or no request could ever complete",
            ));
        }
        if self.ipp.timeout.is_zero() {
            return Err(bad("ipp.timeout", "must be positive"));
        }
        if self.ipp.max_response_bytes < 1024 {
            return Err(bad("ipp.max_response_bytes", "must be at least 1024"));
        }
        crate::http3d::check_options(&self.https3d)?;
        self.watchdog.check()?;
        match self.uplink.kind {
            crate::uplink::UplinkKind::Kafka => self.kafka.check(
                "kafka",
                fleetpulse_core::kafka::TlsDefault::OnUnlessLoopback,
            )?,
            crate::uplink::UplinkKind::Firehose => self.uplink.firehose.check()?,
        }
        if let Some(addr) = self.metrics_addr {
            if !addr.ip().is_loopback() && !self.metrics_public {
                return Err(bad(
                    "metrics_addr",
                    format!("{addr} is not a loopback address: the connector listens on loopback only; set metrics_public = true to expose it (e.g. for Kubernetes probes)"),
                ));
            }
        }
        self.buffer.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::config::from_toml;

    const BASE: &str = r#"
tenant_id = "t1"
connector_id = "c1"
connector_secret = "env:FP_EDGE_SECRET"
poll_interval = "10s"
[[devices]]
address = "10.0.0.1"
[[devices]]
address = "10.0.0.2:1161"
community = "private"
[snmp]
timeout = "500ms"
retries = 1
"#;

    #[test]
    fn parses_with_defaults() {
        let c: EdgeConfig = from_toml(BASE).unwrap();
        assert_eq!(c.devices[0].community, "public");
        assert_eq!(c.poll_interval, Duration::from_secs(10));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30 * 60));
        assert_eq!(c.schedule, ScheduleConfig::default());
        assert_eq!(c.schedule.status_interval, Duration::from_secs(3 * 3600));
        assert_eq!(c.schedule.counters_after_pages, 100);
        assert_eq!(c.schedule.counters_after_jobs, 19);
        assert_eq!(c.snmp.timeout, Duration::from_millis(500));
        assert_eq!(c.snmp.max_repetitions, 20);
        assert_eq!(c.max_concurrent_polls, 64);
        assert_eq!(c.buffer.max_bytes, 1 << 30);
        assert_eq!(
            c.buffer.dir,
            std::path::Path::new("./fleetpulse-data/edge-buffer")
        );
        assert_eq!(c.buffer.fsync, crate::buffer::FsyncPolicy::Batch);
        let c: EdgeConfig = from_toml(&format!(
            "{BASE}\n[buffer]\ndir = \"/var/lib/fp\"\nmax_bytes = 67108864\nsegment_bytes = 1048576\nfsync = \"interval\"\nfsync_interval = \"250ms\"\nreplay_bytes_per_sec = 0\n"
        ))
        .unwrap();
        assert_eq!(c.buffer.max_bytes, 64 << 20);
        assert_eq!(c.buffer.fsync_interval, Duration::from_millis(250));
        assert_eq!(c.buffer.replay_bytes_per_sec, 0);
    }

    #[test]
    fn buffer_errors_name_the_key() {
        for (toml, key) in [
            (
                "max_bytes = 1000000\nsegment_bytes = 1000000",
                "buffer.max_bytes",
            ),
            ("segment_bytes = 1000", "buffer.segment_bytes"),
            (
                "fsync = \"interval\"\nfsync_interval = \"0s\"",
                "buffer.fsync_interval",
            ),
            ("replay_bytes_per_sec = 10", "buffer.replay_bytes_per_sec"),
            ("max_in_flight = 0", "buffer.max_in_flight"),
            ("dir = \"\"", "buffer.dir"),
        ] {
            let err = from_toml::<EdgeConfig>(&format!("{BASE}\n[buffer]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let err = from_toml::<EdgeConfig>(&format!("{BASE}\n[buffer]\nfsync = \"sometimes\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fsync"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let dup = format!("{BASE}\n[[devices]]\naddress = \"10.0.0.1:161\"\n");
        let err = from_toml::<EdgeConfig>(&dup).unwrap_err().to_string();
        assert!(err.contains("devices[2].address"), "{err}");
        let err = from_toml::<EdgeConfig>(&BASE.replace("\"10s\"", "\"100ms\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("poll_interval"), "{err}");
        let err = from_toml::<EdgeConfig>(&BASE.replace("tenant_id = \"t1\"", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant_id"), "{err}");
        let err = from_toml::<EdgeConfig>(&format!("{BASE}\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let no_devices = "tenant_id = \"t\"\nconnector_id = \"c\"\nconnector_secret = \"x\"\n";
        let err = from_toml::<EdgeConfig>(no_devices).unwrap_err().to_string();
        assert!(err.contains("devices"), "{err}");
    }

    #[test]
    fn schedule_keys() {
        let c: EdgeConfig = from_toml(&format!(
            "{BASE}\n[schedule]\nstatus_interval = \"1h\"\ncounters_interval = \"30m\"\n\
             counters_after_pages = 50\ncounters_after_jobs = 5\ndevice_heartbeats = \"every_poll\"\n"
        ))
        .unwrap();
        assert_eq!(c.schedule.status_interval, Duration::from_secs(3600));
        assert_eq!(c.schedule.counters_interval, Duration::from_secs(1800));
        assert_eq!(c.schedule.device_heartbeats, DeviceHeartbeats::EveryPoll);
        for (toml, key) in [
            ("status_interval = \"10m\"", "schedule.status_interval"),
            ("counters_interval = \"29m\"", "schedule.counters_interval"),
            ("counters_after_pages = 0", "schedule.counters_after_pages"),
            ("counters_after_jobs = 0", "schedule.counters_after_jobs"),
            ("min_interval = \"0s\"", "schedule.min_interval"),
            ("supply_low_percent = 101", "schedule.supply_low_percent"),
            ("bogus = 1", "bogus"),
        ] {
            let err = from_toml::<EdgeConfig>(&format!("{BASE}\n[schedule]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        // Short intervals need the explicit floor override (tests, demos).
        let c: EdgeConfig = from_toml(&format!(
            "{BASE}\n[schedule]\nmin_interval = \"1s\"\nstatus_interval = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!(c.schedule.status_interval, Duration::from_secs(5));
    }

    #[test]
    fn ipp_devices() {
        let ipp = format!(
            "{BASE}\n[[devices]]\naddress = \"10.0.0.1\"\nprotocol = \"ipp\"\n\
             [[devices]]\naddress = \"10.0.0.3\"\nprotocol = \"ipp\"\nipp_url = \"ipp://10.0.0.3:8631/ipp/print\"\n\
             [ipp]\ntimeout = \"3s\"\n"
        );
        let c: EdgeConfig = from_toml(&ipp).unwrap();
        assert_eq!(c.devices[0].protocol, Protocol::Snmp);
        assert_eq!(c.devices[2].protocol, Protocol::Ipp);
        // Same host as devices[0], other protocol: not a duplicate.
        assert_eq!(
            c.devices[2].ipp_url_or_default(),
            "ipp://10.0.0.1:631/ipp/print"
        );
        assert_eq!(
            c.devices[3].ipp_url_or_default(),
            "ipp://10.0.0.3:8631/ipp/print"
        );
        assert_eq!(c.ipp.timeout, Duration::from_secs(3));
        assert_eq!(c.ipp.max_response_bytes, 1024 * 1024);

        let err = |toml: String| from_toml::<EdgeConfig>(&toml).unwrap_err().to_string();
        let e = err(format!("{BASE}\n[[devices]]\naddress = \"h\"\nprotocol = \"ipp\"\nipp_url = \"ipps://h/ipp\"\n"));
        assert!(e.contains("devices[2].ipp_url") && e.contains("TLS"), "{e}");
        let e = err(format!(
            "{BASE}\n[[devices]]\naddress = \"h\"\nipp_url = \"ipp://h/ipp\"\n"
        ));
        assert!(e.contains("devices[2].ipp_url"), "{e}");
        let e = err(format!(
            "{BASE}\n[[devices]]\naddress = \"h\"\nprotocol = \"http\"\n"
        ));
        assert!(e.contains("protocol"), "{e}");
        let e = err(format!(
            "{BASE}\n[[devices]]\naddress = \"h\"\nprotocol = \"ipp\"\n[[devices]]\naddress = \"h:9\"\nprotocol = \"ipp\"\n"
        ));
        assert!(e.contains("devices[3].address"), "{e}");
        let e = err(format!("{BASE}\n[ipp]\ntimeout = \"0s\"\n"));
        assert!(e.contains("ipp.timeout"), "{e}");
        // SNMPv3 settings on an IPP device are named, not ignored.
        let e = err(format!(
            "{BASE}\n[[devices]]\naddress = \"h\"\nprotocol = \"ipp\"\nuser = \"fpuser\"\nauth_password = \"env:FP_AUTH\"\n"
        ));
        assert!(e.contains("devices[2].user") && e.contains("ipp"), "{e}");
        let e = err(format!(
            "{BASE}\n[[devices]]\naddress = \"h\"\nprotocol = \"ipp\"\nversion = \"v2c\"\n"
        ));
        assert!(e.contains("devices[2].version"), "{e}");
        // The same printer over SNMPv3 and over IPP: two entries, both valid.
        let both = format!(
            "{BASE}\n[[devices]]\naddress = \"10.0.0.7\"\nuser = \"fpuser\"\nauth_password = \"env:FP_AUTH\"\n\
             [[devices]]\naddress = \"10.0.0.7\"\nprotocol = \"ipp\"\n"
        );
        let c: EdgeConfig = from_toml(&both).unwrap();
        assert_eq!(c.devices[2].protocol, Protocol::Snmp);
        assert_eq!(c.devices[2].version, None);
        assert_eq!(c.devices[3].protocol, Protocol::Ipp);
    }

    #[test]
    fn snmpv3_and_discovery_keys() {
        let v3 = format!(
            "{BASE}\n[[devices]]\naddress = \"10.0.0.3\"\nversion = \"v3\"\nuser = \"fpuser\"\n\
             auth_protocol = \"sha512\"\nauth_password = \"env:FP_AUTH\"\n\
             priv_protocol = \"aes128\"\npriv_password = \"env:FP_PRIV\"\nsecurity_level = \"authPriv\"\n\
             [discovery]\ntargets = [\"10.0.0.5\", \"10.0.0.10-10.0.0.40\", \"192.168.1.0/24\"]\n\
             [[discovery.credentials]]\nrange = \"192.168.1.0/24\"\nuser = \"fpuser\"\nauth_password = \"env:FP_AUTH\"\n"
        );
        let c: EdgeConfig = from_toml(&v3).unwrap();
        let d = &c.devices[2];
        assert_eq!(d.version, Some(crate::SnmpVersion::V3));
        assert_eq!(d.auth_protocol, Some(crate::AuthProtocol::Sha512));
        assert_eq!(d.security_level, Some(crate::SecurityLevel::AuthPriv));
        assert_eq!(c.discovery.interval, Duration::from_secs(3600));
        assert_eq!(c.discovery.max_concurrency, 32);
        assert_eq!(c.discovery.probes_per_second, 50);
        assert_eq!(c.discovery.port, 161);
        assert_eq!(
            c.discovery.state_file,
            std::path::PathBuf::from("./fleetpulse-data/edge-devices.json")
        );

        let no_priv = v3.replace("priv_password = \"env:FP_PRIV\"\n", "");
        let err = from_toml::<EdgeConfig>(&no_priv).unwrap_err().to_string();
        assert!(err.contains("devices[2].priv_password"), "{err}");
        let too_big = v3.replace("192.168.1.0/24\"]", "10.0.0.0/8\"]");
        let err = from_toml::<EdgeConfig>(&too_big).unwrap_err().to_string();
        assert!(err.contains("discovery.targets[2]"), "{err}");
        let bad_range = v3.replace("range = \"192.168.1.0/24\"", "range = \"nope\"");
        let err = from_toml::<EdgeConfig>(&bad_range).unwrap_err().to_string();
        assert!(err.contains("discovery.credentials[0].range"), "{err}");
        let v2_user = v3.replace("version = \"v3\"", "version = \"v2c\"");
        let err = from_toml::<EdgeConfig>(&v2_user).unwrap_err().to_string();
        assert!(err.contains("devices[2].user"), "{err}");

        // Discovery alone is enough to run.
        let only_discovery = "tenant_id = \"t\"\nconnector_id = \"c\"\nconnector_secret = \"x\"\n\
                              [discovery]\ntargets = [\"10.0.0.0/24\"]\n";
        from_toml::<EdgeConfig>(only_discovery).unwrap();
    }

    #[test]
    fn uplink_and_listening_keys() {
        let c: EdgeConfig = from_toml(BASE).unwrap();
        assert_eq!(c.uplink.kind, crate::uplink::UplinkKind::Kafka);
        assert!(!c.metrics_public);
        let err = |t: String| from_toml::<EdgeConfig>(&t).unwrap_err().to_string();
        // Metrics on a non-loopback address needs the explicit opt-in.
        let e = err(format!("metrics_addr = \"0.0.0.0:9102\"\n{BASE}"));
        assert!(
            e.contains("metrics_addr") && e.contains("metrics_public"),
            "{e}"
        );
        let c: EdgeConfig = from_toml(&format!(
            "metrics_addr = \"0.0.0.0:9102\"\nmetrics_public = true\n{BASE}"
        ))
        .unwrap();
        assert!(c.metrics_public);
        from_toml::<EdgeConfig>(&format!("metrics_addr = \"[::1]:9102\"\n{BASE}")).unwrap();
        // Firehose needs a stream; the Kafka security keys are checked only for Kafka.
        let e = err(format!("{BASE}\n[uplink]\nkind = \"firehose\"\n"));
        assert!(e.contains("uplink.firehose.stream"), "{e}");
        let fh = format!(
            "{BASE}\n[uplink]\nkind = \"firehose\"\n[uplink.firehose]\nstream = \"fp\"\nregion = \"eu-west-1\"\nentry_retries = 2\nretry_backoff = \"1s\"\n"
        );
        let c: EdgeConfig = from_toml(&fh).unwrap();
        assert_eq!(c.uplink.firehose.entry_retries, 2);
        assert_eq!(c.uplink.firehose.retry_backoff, Duration::from_secs(1));
        let e = err(format!("{BASE}\n[uplink]\nkind = \"pigeon\"\n"));
        assert!(e.contains("pigeon") || e.contains("kind"), "{e}");
        let e = err(format!("{BASE}\n[kafka]\nbrokers = \"kafka.example.com:9093\"\ntopic_prefix = \"fp\"\n[kafka.tls]\ncert_file = \"/etc/hostname\"\n"));
        assert!(e.contains("kafka.tls.key_file"), "{e}");
    }
}
