//! The watchdog: finds device tasks stuck in a poll and has them restarted;
//! decides whether the connector as a whole is healthy (`/healthz`).
//!
//! Why this shape:
//!
//! - **Busy, not idle.** A device task marks itself busy from the moment it
//!   holds a poll permit until its records are stored ([`Progress::enter`]).
//!   Every network exchange inside has its own deadline, so a task busy for
//!   much longer than `poll_interval + snmp.poll_deadline` is stuck on a bug
//!   or a hung resource, not on a slow printer. Waiting for a permit or
//!   sleeping between polls (even backed off 8×) is never a stall.
//! - **Restart, not report.** A stuck task is aborted and respawned with the
//!   same inputs ([`crate::supervisor`]); its alert state starts afresh, so
//!   the alerts it tracked are reported opened again once. Other devices are
//!   not touched.
//! - **Unhealthy means "restart me".** When the forwarder has died or more
//!   than `unhealthy_fraction` of the pollers were found stuck in one check,
//!   `/healthz` answers 503; the Helm chart's liveness probe then restarts
//!   the pod. A Kafka outage is not unhealthy: a restart would not help, and
//!   the buffer covers it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use serde::{Deserialize, Serialize};

/// `[watchdog]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// A device task busy in one poll for longer than this is restarted.
    /// Default (unset): 3 × (`poll_interval` + `snmp.poll_deadline`).
    #[serde(with = "humantime_serde")]
    pub stall_after: Option<Duration>,
    /// How often the watchdog looks.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// `/healthz` answers 503 when more than this fraction of the device
    /// tasks is found stuck in one check (0.0..=1.0).
    pub unhealthy_fraction: f64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            stall_after: None,
            check_interval: Duration::from_secs(5),
            unhealthy_fraction: 0.5,
        }
    }
}

impl WatchdogConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| ConfigError::Contradiction {
            key: key.into(),
            reason: reason.into(),
        };
        if self.check_interval < Duration::from_millis(100) {
            return Err(bad("watchdog.check_interval", "must be at least 100ms"));
        }
        if self.stall_after.is_some_and(|s| s < Duration::from_secs(1)) {
            return Err(bad("watchdog.stall_after", "must be at least 1s"));
        }
        if !(0.0..=1.0).contains(&self.unhealthy_fraction) {
            return Err(bad(
                "watchdog.unhealthy_fraction",
                "must be within 0.0..=1.0",
            ));
        }
        Ok(())
    }

    /// The effective stall threshold for a configuration.
    pub fn stall_after_for(&self, config: &crate::EdgeConfig) -> Duration {
        self.stall_after
            .unwrap_or(3 * (config.poll_interval + config.snmp.poll_deadline))
    }
}

/// Monotonic milliseconds since the process started the watchdog clock
/// (never 0, which means "idle").
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One device task's busy mark, read by the watchdog.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(Arc<AtomicU64>);

/// Clears the busy mark when the poll is over (or the task is aborted).
pub(crate) struct Busy(Arc<AtomicU64>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Progress {
    /// Mark the task busy until the returned guard drops.
    pub(crate) fn enter(&self) -> Busy {
        self.0.store(clock_ms(), Ordering::Relaxed);
        Busy(self.0.clone())
    }

    /// How long the task has been busy in its current poll (None: idle).
    pub(crate) fn busy_for(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(clock_ms().saturating_sub(since))),
        }
    }
}

/// Sets its flag to false when dropped (the forwarder's liveness).
pub(crate) struct AliveFlag(pub(crate) Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

pub(crate) fn poller_restarted(address: &str, busy: Duration) {
    tracing::error!(
        address,
        busy_s = busy.as_secs(),
        "watchdog: device task stuck in one poll; restarting it"
    );
    metrics::counter!("fleetpulse_edge_watchdog_restarts_total").increment(1);
}

pub(crate) fn health_changed(healthy: bool, reason: &str) {
    if healthy {
        tracing::info!("watchdog: connector healthy again");
    } else {
        tracing::error!(
            reason,
            "watchdog: connector unhealthy; /healthz answers 503"
        );
    }
    metrics::gauge!("fleetpulse_edge_healthy").set(if healthy { 1.0 } else { 0.0 });
    fleetpulse_core::telemetry::set_healthy(healthy);
}

/// Whether the connector is healthy after a check: (healthy, reason).
pub(crate) fn assess(
    forwarder_alive: bool,
    stalled: usize,
    tasks: usize,
    unhealthy_fraction: f64,
) -> (bool, &'static str) {
    if !forwarder_alive {
        return (false, "the forwarder has stopped");
    }
    if stalled > 0 && stalled as f64 > unhealthy_fraction * tasks as f64 {
        return (false, "too many device tasks were stuck");
    }
    (true, "")
}

#[cfg(test)]
static HANG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Test hook: the next poll of `address` hangs forever (once).
#[cfg(test)]
pub(crate) fn hang_next_poll(address: &str) {
    HANG.lock().unwrap().push(address.to_string());
}

/// Where a poll may be made to hang in tests; nothing otherwise.
pub(crate) async fn stall_point(_address: &str) {
    #[cfg(test)]
    {
        let hang = {
            let mut h = HANG.lock().unwrap_or_else(|p| p.into_inner());
            match h.iter().position(|a| a == _address) {
                Some(i) => {
                    h.remove(i);
                    true
                }
                None => false,
            }
        };
        if hang {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_mark_and_health() {
        let p = Progress::default();
        assert_eq!(p.busy_for(), None);
        let g = p.enter();
        assert!(p.busy_for().is_some());
        drop(g);
        assert_eq!(p.busy_for(), None);
        assert!(assess(true, 0, 10, 0.5).0);
        assert!(assess(true, 5, 10, 0.5).0);
        assert!(!assess(true, 6, 10, 0.5).0);
        assert!(!assess(false, 0, 10, 0.5).0);
        assert!(!assess(true, 1, 1, 0.5).0);
    }
}
