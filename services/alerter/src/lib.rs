//! fleetpulse alerter: predictive maintenance from the raw device stream.
//!
//! The alerter reads the raw `device_status`, `device_heartbeat` and
//! `connector_heartbeat` topics
//! (not the lake) because maintenance is about *now*: a toner that will be
//! empty on Tuesday is worth knowing about while it can still be ordered,
//! and a printer that stopped answering matters within minutes. It publishes
//! `MaintenanceAlert`s to `<prefix>.alerts.maintenance`, keyed by device,
//! for the tenant's ops tooling (and `fleetpulse alerts tail`).
//!
//! # What it decides
//!
//! * **Consumable depletion.** Per device and supply index it keeps the
//!   level history (event time `observed_at`, `history_window`, at least
//!   `min_points` readings), fits a least-squares line and forecasts the
//!   days until the consumable is empty, or until a waste receptacle is
//!   full. Forecasting runs on event time so a backlog replayed after an
//!   outage yields the same forecast as live data. A jump up of the
//!   remaining level is a replacement: the history restarts and an open
//!   alert clears. See `forecast.rs` and `state.rs`.
//! * **Silent devices.** Silence is the *absence* of records, so it cannot
//!   be measured on event time: the alerter remembers the wall-clock receipt
//!   of each device's last heartbeat and a ticker raises `device_silent`
//!   when it is older than `silent_after_intervals × heartbeat_interval`.
//!   A device's heartbeat is either a `DeviceHeartbeat` or a connector
//!   heartbeat listing the device as reachable (the edge sends device
//!   heartbeats only when reachability changes and carries the liveness of
//!   every device in its own heartbeat: one record per connector and
//!   interval instead of one per device and poll).
//!
//! Each condition has a stable `alert_key`; `raised` is published once when
//! it starts to hold and `cleared` once when it stops (with hysteresis for
//! forecasts), never once per poll.
//!
//! # Restarts and offsets
//!
//! Offsets are committed automatically; a new consumer group starts at the
//! earliest retained record, so a first deployment forecasts from history.
//! Forecast and heartbeat memory is in-process and is rebuilt from the
//! stream *going forward* after a restart (a forecast needs `min_points`
//! new readings again, silence is measured from the first heartbeat seen).
//! What must not be forgotten is which alerts are open, or a restart would
//! raise them twice or never clear them: so at start the alerter reads its
//! own alert topic from the beginning to its current end (it is small: one
//! record per transition) and replays raised/cleared per `alert_key`. An
//! alert that was decided but not yet delivered when the process died is
//! simply decided again once the condition is seen again, because it was
//! never recorded as open.
//!
//! Devices are partitioned by `device_id` key on both raw topics, so
//! replicas sharing `group_id` split devices consistently as long as both
//! topics have the same partition count (librdkafka's default range
//! assignor co-partitions them).
//!
//! An alert whose delivery fails is not lost for good: its transition is
//! undone (a lost `raised` closes the key, a lost `cleared` reopens it), so
//! it is decided and published again when the condition is next seen.
//!
//! Undecodable records are logged, counted and skipped: the processor owns
//! the dead-letter topic, and the alerter is a best-effort reader of the
//! same stream. Signatures are the processor's job too; the alerter's output
//! is advisory. Known limit: the alerter does not verify connector
//! signatures, so whoever can write the raw topics can cause or suppress
//! alerts (guard them with broker ACLs). What such input cannot do is grow
//! its memory without bound: at most `max_devices` devices are remembered
//! (the least recently seen is forgotten first) with at most 64 supplies
//! each, and a device not seen for `forget_after` is forgotten.
//!
//! Alerts carry the raw serial on the alert topic (ops need it); the
//! alerter's logs do not: they name a device by a short keyed hash that is
//! random per process. If the processor writes alerts to the lake
//! (`include_alerts`), `device_id` and `alert_key` are pseudonymised and
//! `message` is dropped there.

mod config;
mod consumer;
mod forecast;
mod state;
mod tail;
#[cfg(test)]
mod tests;

pub use config::AlerterConfig;
pub use tail::tail;

use fleetpulse_core::config::{ConfigError, Validate};
use fleetpulse_core::Shutdown;
use rdkafka::error::KafkaError;

/// Why the alerter stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlerterError {
    /// The configuration is contradictory.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: cannot {context}: {source}")]
    Kafka {
        /// What was attempted.
        context: &'static str,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The `/healthz` + `/metrics` endpoint could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// Address configured.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing `tail` output failed (e.g. a closed pipe).
    #[error("cannot write alerts: {0}")]
    Output(#[source] std::io::Error),
}

impl AlerterError {
    fn kafka(context: &'static str) -> impl Fn(KafkaError) -> AlerterError {
        move |source| AlerterError::Kafka { context, source }
    }

    /// Whether running again unchanged may succeed: Kafka errors other than
    /// a bad client configuration may pass, a config or a closed output will not.
    pub fn is_retriable(&self) -> bool {
        match self {
            AlerterError::Kafka { source, .. } => !matches!(source, KafkaError::ClientConfig(..)),
            AlerterError::Metrics { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
            AlerterError::Config(_) | AlerterError::Output(_) => false,
        }
    }
}

/// Run the alerter until `shutdown` is cancelled.
///
/// Validates the config, serves `/healthz` and `/metrics` on `metrics_addr`
/// if set, restores open alerts from the alert topic, then consumes. On
/// shutdown, alerts in flight are flushed before it returns.
pub async fn run(config: AlerterConfig, shutdown: Shutdown) -> Result<(), AlerterError> {
    config.validate()?;
    if let Some(addr) = config.metrics_addr {
        fleetpulse_core::telemetry::serve(addr, shutdown.clone())
            .await
            .map_err(|source| AlerterError::Metrics { addr, source })?;
    }
    consumer::consume(config, shutdown).await
}
