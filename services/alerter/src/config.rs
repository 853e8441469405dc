//! `AlerterConfig`: what the alerter reads, how it forecasts, when it alerts.

use std::net::SocketAddr;
use std::time::Duration;

use fleetpulse_core::config::{ConfigError, Validate};
use fleetpulse_core::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

/// Configuration of the predictive-maintenance alerter.
///
/// Durations are humantime strings (`"24h"`, `"7d"`, `"500ms"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlerterConfig {
    /// Cluster, topic prefix and extra librdkafka properties.
    pub kafka: KafkaConfig,
    /// Consumer group of the raw `device_status` / `device_heartbeat` topics.
    /// Replicas sharing it split the devices between them.
    pub group_id: String,
    /// Event-time span of supply levels kept per consumable for the forecast.
    #[serde(with = "humantime_serde")]
    pub history_window: Duration,
    /// Fewest level readings a forecast needs; older readings than the window
    /// are kept while there are not more than this many.
    pub min_points: usize,
    /// Shortest event-time span the readings must cover before a forecast is
    /// trusted. Levels are whole percents on most devices: two readings a
    /// minute apart that differ by 1% would otherwise predict an empty
    /// cartridge within hours.
    #[serde(with = "humantime_serde")]
    pub min_history_span: Duration,
    /// Raise `consumable_depletion` when the consumable is forecast to run out
    /// (or a waste receptacle to fill up) sooner than this.
    #[serde(with = "humantime_serde")]
    pub depletion_threshold: Duration,
    /// A rise of the remaining level by more than this many percentage points
    /// between two readings means the consumable was replaced.
    pub replacement_jump_pct: f64,
    /// How often a healthy device's liveness arrives: the edge's
    /// `heartbeat_interval` (connector heartbeats list every reachable
    /// device), or its `poll_interval` with `schedule.device_heartbeats = "every_poll"`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A device is silent after this many heartbeat intervals without one.
    pub silent_after_intervals: u32,
    /// How often silence is checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Devices remembered at most (forecast history and last heartbeat).
    /// The raw topics are not signature-checked by the alerter, so its
    /// memory is capped: when full, the least recently seen device is
    /// forgotten (warning + `fleetpulse_alerter_devices_evicted_total`).
    pub max_devices: usize,
    /// A device not seen (no status, no heartbeat) for this long is
    /// forgotten; an open alert about it stays open.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Where `/healthz` and `/metrics` are served; none when unset.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for AlerterConfig {
    fn default() -> Self {
        AlerterConfig {
            kafka: KafkaConfig::default(),
            group_id: "fleetpulse-alerter".into(),
            history_window: Duration::from_secs(24 * 3600),
            min_points: 4,
            min_history_span: Duration::from_secs(3600),
            depletion_threshold: Duration::from_secs(7 * 24 * 3600),
            replacement_jump_pct: 20.0,
            heartbeat_interval: Duration::from_secs(30 * 60),
            silent_after_intervals: 3,
            check_interval: Duration::from_secs(1),
            max_devices: 100_000,
            forget_after: Duration::from_secs(7 * 24 * 3600),
            metrics_addr: None,
        }
    }
}

impl AlerterConfig {
    /// How long without a heartbeat makes a device silent.
    pub fn silent_after(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.silent_after_intervals)
    }
}

fn contradiction(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl Validate for AlerterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(contradiction("kafka.brokers", "must not be empty"));
        }
        if self.kafka.topic_prefix.trim().is_empty() {
            return Err(contradiction("kafka.topic_prefix", "must not be empty"));
        }
        if self.group_id.trim().is_empty() {
            return Err(contradiction("group_id", "must not be empty"));
        }
        if self.min_points < 2 {
            return Err(contradiction(
                "min_points",
                format!(
                    "is {}, a least-squares slope needs at least 2",
                    self.min_points
                ),
            ));
        }
        if self.history_window.is_zero() {
            return Err(contradiction("history_window", "must be greater than 0"));
        }
        if self.min_history_span >= self.history_window {
            return Err(contradiction(
                "min_history_span",
                format!(
                    "{} is not shorter than history_window {}: no forecast could ever be made",
                    humantime::format_duration(self.min_history_span),
                    humantime::format_duration(self.history_window)
                ),
            ));
        }
        if self.depletion_threshold.is_zero() {
            return Err(contradiction(
                "depletion_threshold",
                "must be greater than 0",
            ));
        }
        if !(self.replacement_jump_pct > 0.0 && self.replacement_jump_pct <= 100.0) {
            return Err(contradiction(
                "replacement_jump_pct",
                format!(
                    "is {}, must be within (0, 100] percentage points",
                    self.replacement_jump_pct
                ),
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(contradiction(
                "heartbeat_interval",
                "must be greater than 0",
            ));
        }
        if self.silent_after_intervals == 0 {
            return Err(contradiction(
                "silent_after_intervals",
                "must be at least 1",
            ));
        }
        if self.max_devices == 0 {
            return Err(contradiction("max_devices", "must be at least 1"));
        }
        if self.forget_after <= self.silent_after() {
            return Err(contradiction(
                "forget_after",
                format!(
                    "{} is not longer than heartbeat_interval × silent_after_intervals ({}): devices would be forgotten before they count as silent",
                    humantime::format_duration(self.forget_after),
                    humantime::format_duration(self.silent_after())
                ),
            ));
        }
        if self.check_interval.is_zero() {
            return Err(contradiction("check_interval", "must be greater than 0"));
        }
        if self.check_interval > self.silent_after() {
            return Err(contradiction(
                "check_interval",
                format!(
                    "{} is longer than heartbeat_interval × silent_after_intervals ({}): silence would be noticed late",
                    humantime::format_duration(self.check_interval),
                    humantime::format_duration(self.silent_after())
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::config::from_toml;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c: AlerterConfig = from_toml("").expect("defaults validate");
        assert_eq!(c.group_id, "fleetpulse-alerter");
        assert_eq!(c.history_window, Duration::from_secs(86_400));
        assert_eq!(c.depletion_threshold, Duration::from_secs(7 * 86_400));
        assert_eq!(c.min_points, 4);
        assert_eq!(c.silent_after(), Duration::from_secs(90 * 60));
        assert_eq!(c.max_devices, 100_000);
        assert_eq!(c.forget_after, Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn toml_with_humantime_durations() {
        let c: AlerterConfig = from_toml(
            r#"
            group_id = "g"
            depletion_threshold = "3d"
            heartbeat_interval = "200ms"
            check_interval = "50ms"
            metrics_addr = "0.0.0.0:9102"
            [kafka]
            brokers = "k:9092"
            topic_prefix = "fp"
            properties = { "security.protocol" = "SSL" }
            "#,
        )
        .expect("valid");
        assert_eq!(c.depletion_threshold, Duration::from_secs(3 * 86_400));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9102".parse().expect("addr")));
        assert_eq!(c.kafka.properties["security.protocol"], "SSL");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = from_toml::<AlerterConfig>("depletion_treshold = \"7d\"").unwrap_err();
        assert!(err.to_string().contains("depletion_treshold"), "{err}");
    }

    #[test]
    fn contradictions_name_the_key() {
        for (toml, key) in [
            ("min_points = 1", "min_points"),
            ("replacement_jump_pct = 0.0", "replacement_jump_pct"),
            ("heartbeat_interval = \"0s\"", "heartbeat_interval"),
            ("silent_after_intervals = 0", "silent_after_intervals"),
            ("max_devices = 0", "max_devices"),
            ("forget_after = \"1m\"", "forget_after"),
            ("check_interval = \"2h\"", "check_interval"),
            ("min_history_span = \"2d\"", "min_history_span"),
            ("group_id = \"\"", "group_id"),
        ] {
            let err = from_toml::<AlerterConfig>(toml).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{key}`")),
                "{toml}: {err}"
            );
        }
    }
}
