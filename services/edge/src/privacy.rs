//! Privacy at source: what the connector removes or coarsens before a
//! record leaves the site (`[privacy]`).
//!
//! Why here and why this way:
//!
//! - **One place.** Every record the edge produces (SNMP, IPP and 3D
//!   printers alike, and the connector heartbeat) is encoded by [`stored`],
//!   which applies the policy to a copy of the record first. There is no
//!   other path into the buffer, so no protocol can forget it, and a new
//!   record type must say how it is redacted ([`Redact`]) to be stored.
//! - **Safe defaults.** sysName and sysContact (host names and people) are
//!   dropped, sysLocation is generalised to a country code, IP addresses are
//!   masked to their /24 and MAC addresses dropped, unless the operator
//!   opts in. The processor coarsens the same fields again in the lake
//!   ([`fleetpulse_core::generalize`]), so the lake is the same either way.
//! - **Never, not "by default".** Job contents, job names, part names and
//!   user names are not read from devices at all; `JobRecord.user_name` is
//!   cleared here as well, so even a future driver that filled it could not
//!   send it. There is no key to turn that on.
//! - **Live.** The policy can change on a config reload without restarting
//!   any poller ([`Policy`] is shared).

use std::sync::{Arc, RwLock};

use fleetpulse_core::generalize::{country_code, ipv4_slash24};
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::records::{
    AlertEvent, ConnectorHeartbeat, DeviceHeartbeat, DeviceStatus, JobRecord, Record, UsageCounters,
};
use serde::{Deserialize, Serialize};

use crate::buffer::StoredRecord;
use crate::publish::{self, PublishError};

/// `privacy.ip_address`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPolicy {
    /// Send the address as read.
    Keep,
    /// Send only its /24 network, `a.b.c.0/24` (non-IPv4 addresses are dropped).
    #[default]
    Mask24,
    /// Send no address.
    Drop,
}

/// `privacy.mac_address`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacPolicy {
    /// Send the address as read.
    Keep,
    /// Send the vendor part (OUI) only: `00:11:22:00:00:00`.
    Mask,
    /// Send no hardware address.
    #[default]
    Drop,
}

/// `privacy.sys_name` and `privacy.sys_contact`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextPolicy {
    /// Send the text as read.
    Keep,
    /// Send nothing.
    #[default]
    Drop,
}

/// `privacy.sys_location`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocationPolicy {
    /// Send the text as read.
    Keep,
    /// Send the ISO 3166 country code named in it (`"Berlin, DE, Room 4"`
    /// → `DE`), nothing when none is recognisable.
    #[default]
    Country,
    /// Send nothing.
    Drop,
}

/// `[privacy]`: what identifying device data leaves the site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// IP addresses in `DeviceStatus` and `DeviceHeartbeat`: `keep`, `mask24`
    /// (default) or `drop`.
    pub ip_address: IpPolicy,
    /// MAC address in `DeviceStatus`: `keep`, `mask` (OUI only) or `drop` (default).
    pub mac_address: MacPolicy,
    /// sysName (a host name; 3D printers: their host name): `drop` (default) or `keep`.
    pub sys_name: TextPolicy,
    /// sysContact (usually a person): `drop` (default) or `keep`.
    pub sys_contact: TextPolicy,
    /// sysLocation: `drop`, `country` (default) or `keep`.
    pub sys_location: LocationPolicy,
}

impl PrivacyConfig {
    /// Everything kept (tests, and sites that opt out of masking entirely).
    pub fn keep_all() -> Self {
        PrivacyConfig {
            ip_address: IpPolicy::Keep,
            mac_address: MacPolicy::Keep,
            sys_name: TextPolicy::Keep,
            sys_contact: TextPolicy::Keep,
            sys_location: LocationPolicy::Keep,
        }
    }

    fn ip(&self, v: Option<String>) -> Option<String> {
        match self.ip_address {
            IpPolicy::Keep => v,
            IpPolicy::Mask24 => v.and_then(|ip| ipv4_slash24(&ip)),
            IpPolicy::Drop => None,
        }
    }

    fn mac(&self, v: Option<String>) -> Option<String> {
        match self.mac_address {
            MacPolicy::Keep => v,
            MacPolicy::Mask => v.and_then(|m| mask_mac(&m)),
            MacPolicy::Drop => None,
        }
    }

    fn text(p: TextPolicy, v: Option<String>) -> Option<String> {
        match p {
            TextPolicy::Keep => v,
            TextPolicy::Drop => None,
        }
    }

    fn location(&self, v: Option<String>) -> Option<String> {
        match self.sys_location {
            LocationPolicy::Keep => v,
            LocationPolicy::Country => v.and_then(|l| country_code(&l).map(str::to_string)),
            LocationPolicy::Drop => None,
        }
    }
}

/// `00:11:22:33:44:55` (or `-` separated) → `00:11:22:00:00:00`; anything
/// that is not six hex octets → `None` (never sent half-masked).
fn mask_mac(mac: &str) -> Option<String> {
    let octets: Vec<&str> = mac.split([':', '-']).collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then(|| {
        format!(
            "{}:{}:{}:00:00:00",
            octets[0].to_ascii_lowercase(),
            octets[1].to_ascii_lowercase(),
            octets[2].to_ascii_lowercase()
        )
    })
}

/// A record type's redaction under a policy. Every record the edge stores
/// implements it, so none bypasses the policy.
pub(crate) trait Redact: Record + Clone {
    /// Remove or coarsen what the policy says.
    fn redact(&mut self, p: &PrivacyConfig);
}

impl Redact for DeviceStatus {
    fn redact(&mut self, p: &PrivacyConfig) {
        self.sys_name = PrivacyConfig::text(p.sys_name, self.sys_name.take());
        self.sys_contact = PrivacyConfig::text(p.sys_contact, self.sys_contact.take());
        self.sys_location = p.location(self.sys_location.take());
        self.ip_address = p.ip(self.ip_address.take());
        self.mac_address = p.mac(self.mac_address.take());
    }
}

impl Redact for DeviceHeartbeat {
    fn redact(&mut self, p: &PrivacyConfig) {
        self.ip_address = p.ip(self.ip_address.take());
    }
}

impl Redact for JobRecord {
    fn redact(&mut self, _: &PrivacyConfig) {
        // Never sent, whatever the policy (see the module docs).
        self.user_name = None;
    }
}

/// Records with no identifying device fields: sent as built.
macro_rules! nothing_to_redact {
    ($($t:ty),*) => {$(
        impl Redact for $t {
            fn redact(&mut self, _: &PrivacyConfig) {}
        }
    )*};
}
nothing_to_redact!(UsageCounters, AlertEvent, ConnectorHeartbeat);

/// The live policy, shared by every device task; a reload replaces it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy(Arc<RwLock<PrivacyConfig>>);

impl Policy {
    pub(crate) fn new(c: PrivacyConfig) -> Self {
        Policy(Arc::new(RwLock::new(c)))
    }

    pub(crate) fn get(&self) -> PrivacyConfig {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set(&self, c: PrivacyConfig) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = c;
    }
}

/// Redact a copy of `record` under `policy` and encode it for the buffer.
/// The only way records reach the buffer (dead letters aside, see
/// [`crate::publish::dead_letter`]).
pub(crate) fn stored<R: Redact>(
    kafka: &KafkaConfig,
    policy: &Policy,
    record: &R,
    batch: &str,
) -> Result<StoredRecord, PublishError> {
    let mut r = record.clone();
    r.redact(&policy.get());
    publish::stored(kafka, &r, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::samples;

    fn canary_status() -> DeviceStatus {
        let mut s = samples::device_status("SN-1");
        s.event_id = "01a1fd36-3136-7652-87e9-7f50e8bd7cc5".into();
        s.sys_name = Some("CANARY-HOST".into());
        s.sys_contact = Some("CANARY-PERSON".into());
        s.sys_location = Some("Berlin, DE, CANARY-ROOM".into());
        s.ip_address = Some("10.77.66.55".into());
        s.mac_address = Some("00:11:22:AA:BB:CC".into());
        s
    }

    fn encoded(p: PrivacyConfig) -> Vec<u8> {
        stored(
            &KafkaConfig::default(),
            &Policy::new(p),
            &canary_status(),
            "b",
        )
        .unwrap()
        .payload
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn defaults_drop_or_coarsen_every_canary() {
        let bytes = encoded(PrivacyConfig::default());
        for canary in [
            "CANARY",
            "Berlin",
            "10.77.66.55",
            "AA:BB:CC",
            "aa:bb:cc",
            "00:11:22",
        ] {
            assert!(!contains(&bytes, canary), "{canary} leaked");
        }
        let s: DeviceStatus = fleetpulse_core::codec::decode(&bytes).unwrap();
        assert_eq!(s.sys_name, None);
        assert_eq!(s.sys_contact, None);
        assert_eq!(s.sys_location.as_deref(), Some("DE"));
        assert_eq!(s.ip_address.as_deref(), Some("10.77.66.0/24"));
        assert_eq!(s.mac_address, None);
    }

    #[test]
    fn keep_keeps_and_masks_mask() {
        let s: DeviceStatus =
            fleetpulse_core::codec::decode(&encoded(PrivacyConfig::keep_all())).unwrap();
        assert_eq!(s, canary_status());
        let p = PrivacyConfig {
            mac_address: MacPolicy::Mask,
            ip_address: IpPolicy::Drop,
            sys_location: LocationPolicy::Drop,
            ..PrivacyConfig::keep_all()
        };
        let s: DeviceStatus = fleetpulse_core::codec::decode(&encoded(p)).unwrap();
        assert_eq!(s.mac_address.as_deref(), Some("00:11:22:00:00:00"));
        assert_eq!(s.ip_address, None);
        assert_eq!(s.sys_location, None);
        assert_eq!(s.sys_name.as_deref(), Some("CANARY-HOST"));
        // Unrecognisable locations and malformed MACs are not sent half-done.
        assert_eq!(mask_mac("00:11:22:33:44"), None);
        assert_eq!(
            mask_mac("00-11-22-33-44-55").as_deref(),
            Some("00:11:22:00:00:00")
        );
        let p = PrivacyConfig::default();
        assert_eq!(p.location(Some("Room 101".into())), None);
        assert_eq!(p.ip(Some("fe80::1".into())), None);
    }

    #[test]
    fn job_user_names_never_leave() {
        let mut j = samples::job_record("SN-1");
        j.user_name = Some("CANARY-USER".into());
        let r = stored(
            &KafkaConfig::default(),
            &Policy::new(PrivacyConfig::keep_all()),
            &j,
            "b",
        )
        .unwrap();
        assert!(!contains(&r.payload, "CANARY-USER"));
    }

    #[test]
    fn config_keys() {
        let c: PrivacyConfig = toml_de(
            "ip_address = \"drop\"\nmac_address = \"mask\"\nsys_name = \"keep\"\nsys_location = \"country\"\n",
        );
        assert_eq!(c.ip_address, IpPolicy::Drop);
        assert_eq!(c.mac_address, MacPolicy::Mask);
        assert_eq!(c.sys_name, TextPolicy::Keep);
        assert_eq!(c.sys_contact, TextPolicy::Drop);
    }

    fn toml_de(s: &str) -> PrivacyConfig {
        use fleetpulse_core::config::from_toml;
        let full = format!(
            "tenant_id = \"t\"\nconnector_id = \"c\"\nconnector_secret = \"x\"\n[[devices]]\naddress = \"h\"\n[privacy]\n{s}"
        );
        from_toml::<crate::EdgeConfig>(&full).unwrap().privacy
    }
}
