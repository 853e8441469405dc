//! Configuration reloads: what may change while the connector runs.
//!
//! A new configuration (from SIGHUP re-reading the file, or from a signed
//! control-topic object, [`crate::control`]) is validated in full and
//! compared with the running one. Keys that name the connector's identity,
//! its uplink or its storage cannot change under a running connector (a new
//! secret, broker or buffer directory needs a restart that drains the
//! buffer first); a reload changing one of them is rejected, naming the key,
//! and the connector keeps running on its current configuration. So is an
//! invalid one.

use fleetpulse_core::config::{ConfigError, Validate};

use crate::config::{EdgeConfig, Protocol};

/// How much of the running connector a reload touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Nothing changed.
    Unchanged,
    /// Devices added or removed, `[privacy]`, `[watchdog]`: applied in place.
    Live,
    /// Shared poll settings or `[schedule]` changed: every poller restarts on
    /// the new ones.
    RestartAll,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRejected {
    /// The key cannot change while the connector runs.
    #[error("key `{0}` cannot change while the connector runs; restart it to apply")]
    Fixed(&'static str),
    /// The new configuration is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl ReloadRejected {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ReloadRejected::Fixed(_) => "fixed_key",
            ReloadRejected::Invalid(_) => "invalid",
        }
    }
}

/// Check `new` against the running `old` configuration.
pub(crate) fn plan(old: &EdgeConfig, new: &EdgeConfig) -> Result<Scope, ReloadRejected> {
    new.validate()?;
    for (i, d) in new.devices.iter().enumerate() {
        if d.protocol == Protocol::Snmp {
            d.credentials()
                .resolve(&format!("devices[{i}]"), new.snmp.version)?;
        }
    }
    let fixed: [(&'static str, bool); 10] = [
        ("tenant_id", old.tenant_id == new.tenant_id),
        ("connector_id", old.connector_id == new.connector_id),
        (
            "connector_secret",
            old.connector_secret == new.connector_secret,
        ),
        ("kafka", old.kafka == new.kafka),
        ("buffer", old.buffer == new.buffer),
        ("metrics_addr", old.metrics_addr == new.metrics_addr),
        ("discovery", old.discovery == new.discovery),
        ("control", old.control == new.control),
        (
            "schedule.counters_state_file",
            old.schedule.counters_state_file == new.schedule.counters_state_file,
        ),
        (
            "watchdog.check_interval",
            old.watchdog.check_interval == new.watchdog.check_interval,
        ),
    ];
    if let Some((key, _)) = fixed.iter().find(|(_, same)| !same) {
        return Err(ReloadRejected::Fixed(key));
    }
    if old == new {
        return Ok(Scope::Unchanged);
    }
    let shared_same = old.poll_interval == new.poll_interval
        && old.heartbeat_interval == new.heartbeat_interval
        && old.snmp == new.snmp
        && old.ipp == new.ipp
        && old.https3d == new.https3d
        && old.schedule == new.schedule
        && old.max_concurrent_polls == new.max_concurrent_polls
        && old.shutdown_grace == new.shutdown_grace;
    Ok(if shared_same {
        Scope::Live
    } else {
        Scope::RestartAll
    })
}

pub(crate) fn rejected(e: &ReloadRejected) {
    tracing::error!(error = %e, "configuration reload rejected; still running on the previous configuration");
    metrics::counter!("fleetpulse_edge_config_reloads_total", "outcome" => "rejected", "reason" => e.reason())
        .increment(1);
}

/// A re-read config file did not load (SIGHUP): log and count it; the
/// connector keeps its configuration.
pub fn file_rejected(e: &ConfigError) {
    rejected(&ReloadRejected::Invalid(ConfigError::Invalid(
        e.to_string(),
    )));
}

pub(crate) fn unchanged() {
    tracing::info!("configuration reloaded: nothing changed");
    metrics::counter!("fleetpulse_edge_config_reloads_total", "outcome" => "unchanged")
        .increment(1);
}

pub(crate) fn applied(how: &'static str, added: usize, removed: usize) {
    tracing::info!(
        how,
        devices_added = added,
        devices_removed = removed,
        "configuration reloaded"
    );
    metrics::counter!("fleetpulse_edge_config_reloads_total", "outcome" => "applied").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::config::from_toml;
    use std::time::Duration;

    const BASE: &str = "tenant_id = \"t\"\nconnector_id = \"c\"\nconnector_secret = \"x\"\n\
                        [[devices]]\naddress = \"10.0.0.1\"\n";

    fn cfg(extra: &str) -> EdgeConfig {
        from_toml(&format!("{BASE}{extra}")).unwrap()
    }

    #[test]
    fn scopes_and_fixed_keys() {
        let old = cfg("");
        assert_eq!(plan(&old, &old).unwrap(), Scope::Unchanged);
        let more = cfg("[[devices]]\naddress = \"10.0.0.2\"\n[privacy]\nsys_name = \"keep\"\n");
        assert_eq!(plan(&old, &more).unwrap(), Scope::Live);
        let mut faster = old.clone();
        faster.poll_interval = Duration::from_secs(5);
        assert_eq!(plan(&old, &faster).unwrap(), Scope::RestartAll);
        let mut other = old.clone();
        other.kafka.brokers = "elsewhere:9092".into();
        let e = plan(&old, &other).unwrap_err();
        assert!(e.to_string().contains("`kafka`"), "{e}");
        let mut other = old.clone();
        other.connector_secret = "env:OTHER".into();
        let e = plan(&old, &other).unwrap_err();
        assert!(e.to_string().contains("connector_secret"), "{e}");
        let mut bad = old.clone();
        bad.devices.clear();
        assert_eq!(plan(&old, &bad).unwrap_err().reason(), "invalid");
    }
}
