//! Edge connector configuration.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use fleetpulse_core::config::{ConfigError, Validate};
use fleetpulse_core::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

use crate::buffer::BufferConfig;
use crate::snmp::{split_host_port, DeviceTarget, SnmpOptions};

/// One device to poll: `address` (`host[:port]`, port 161 when omitted)
/// and `community` (default `public`). The same type is the target of
/// [`crate::poll_device`], so `fleetpulse poll` and the service agree.
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
    /// Devices to poll.
    pub devices: Vec<DeviceConfig>,
    /// Time between two polls of the same device.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Time between two connector heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// SNMP timeouts, retries and limits.
    pub snmp: SnmpOptions,
    /// Kafka cluster and topics.
    pub kafka: KafkaConfig,
    /// Store-and-forward buffer: every record is written here before it is sent.
    pub buffer: BufferConfig,
    /// `/metrics` and `/healthz` listen address (off when unset).
    pub metrics_addr: Option<SocketAddr>,
    /// Devices polled at the same time, at most.
    pub max_concurrent_polls: usize,
    /// After shutdown is requested, how long in-flight polls may still finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            tenant_id: String::new(),
            connector_id: String::new(),
            connector_secret: String::new(),
            devices: Vec::new(),
            poll_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(60),
            snmp: SnmpOptions::default(),
            kafka: KafkaConfig::default(),
            buffer: BufferConfig::default(),
            metrics_addr: None,
            max_concurrent_polls: 64,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

fn bad(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key: key.into(),
        reason: reason.into(),
    }
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
        if self.devices.is_empty() {
            return Err(bad("devices", "at least one device is required"));
        }
        let mut seen = HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = format!("devices[{i}].address");
            let (host, port) = split_host_port(&d.address).map_err(|r| bad(&key, r))?;
            if !seen.insert((host.to_ascii_lowercase(), port)) {
                return Err(bad(key, format!("duplicate address {:?}", d.address)));
            }
            if d.community.is_empty() {
                return Err(bad(format!("devices[{i}].community"), "must not be empty"));
            }
        }
        if self.poll_interval < Duration::from_secs(1) {
            return Err(bad("poll_interval", "must be at least 1s"));
        }
        if self.heartbeat_interval < Duration::from_secs(1) {
            return Err(bad("heartbeat_interval", "must be at least 1s"));
        }
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
        if self.kafka.brokers.trim().is_empty() {
            return Err(bad("kafka.brokers", "must not be empty"));
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
        assert_eq!(c.heartbeat_interval, Duration::from_secs(60));
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
}
