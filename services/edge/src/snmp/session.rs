//! What the edge remembers about one agent between polls: the adaptive
//! GETBULK size, the SNMPv3 engine (id, boots, clock) and localised keys,
//! resolved credentials, and how slow or silent the agent has been.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::credentials::{Security, SnmpCredentials};
use super::usm::{Engine, LocalKeys};

/// GETBULKs that must succeed in a row before max-repetitions grows.
const GROW_AFTER: u32 = 4;

/// Longest backoff, as a multiple of the poll interval.
const MAX_BACKOFF_FACTOR: u32 = 8;

/// Per-target state shared by successive [`super::SnmpClient`]s.
///
/// Cheap to clone (an `Arc`); the lock is never held across an await.
#[derive(Debug, Clone, Default)]
pub struct SnmpSession(Arc<Mutex<State>>);

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Current GETBULK max-repetitions (None: start at the configured value).
    pub(crate) repetitions: Option<u32>,
    /// Successful GETBULKs since the last change of `repetitions`.
    pub(crate) bulk_successes: u32,
    /// The SNMPv3 engine, once discovered.
    pub(crate) engine: Option<Engine>,
    /// Keys localised to `engine`.
    pub(crate) keys: Option<LocalKeys>,
    /// Credentials resolved for this target, and what they were resolved from.
    pub(crate) security: Option<(SnmpCredentials, Security)>,
    /// Polls in a row that got no answer.
    pub(crate) silent_polls: u32,
    /// Whether the last poll was slow (see [`SnmpSession::record_poll`]).
    pub(crate) slow: bool,
}

impl std::fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKeys(..)")
    }
}

impl SnmpSession {
    /// A fresh session (nothing known about the agent yet).
    pub fn new() -> SnmpSession {
        SnmpSession::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent
        // in a harmful way (plain numbers and caches), so recover from poison.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The GETBULK max-repetitions to use now, within `1..=max`.
    pub fn repetitions(&self, max: u32) -> u32 {
        self.lock().repetitions.unwrap_or(max).clamp(1, max.max(1))
    }

    /// Halve max-repetitions (tooBig, oversize response, timeout). Returns the new value.
    pub fn shrink_repetitions(&self, max: u32) -> u32 {
        let mut s = self.lock();
        let current = s.repetitions.unwrap_or(max).clamp(1, max.max(1));
        let next = (current / 2).max(1);
        s.repetitions = Some(next);
        s.bulk_successes = 0;
        next
    }

    /// Record a successful GETBULK; every [`GROW_AFTER`] in a row grows
    /// max-repetitions by a quarter (at least 1), up to `max`.
    pub fn bulk_succeeded(&self, max: u32) {
        let mut s = self.lock();
        let current = s.repetitions.unwrap_or(max).clamp(1, max.max(1));
        s.bulk_successes += 1;
        if s.bulk_successes >= GROW_AFTER && current < max {
            s.repetitions = Some((current + (current / 4).max(1)).min(max));
            s.bulk_successes = 0;
        }
    }

    /// Record how a poll went, for [`SnmpSession::next_poll_delay`]: `silent`
    /// when the agent did not answer in time, `slow` when it answered but
    /// took more than half the poll deadline.
    pub fn record_poll(&self, silent: bool, slow: bool) {
        let mut s = self.lock();
        s.silent_polls = if silent {
            s.silent_polls.saturating_add(1)
        } else {
            0
        };
        s.slow = slow && !silent;
    }

    /// How long to wait before polling this agent again.
    ///
    /// `interval` normally. After `n` silent polls in a row, `interval × 2^n`
    /// (at most 8 × interval), so dead or overloaded agents are asked less
    /// often. After a slow poll, `2 × interval`, giving a struggling agent room.
    pub fn next_poll_delay(&self, interval: Duration) -> Duration {
        let s = self.lock();
        let factor = if s.silent_polls > 0 {
            2u32.saturating_pow(s.silent_polls.min(3))
                .min(MAX_BACKOFF_FACTOR)
        } else if s.slow {
            2
        } else {
            1
        };
        interval.saturating_mul(factor)
    }

    /// Credentials resolved from `creds`, resolving (and deriving keys) only
    /// when they changed since the last call.
    pub(crate) fn security(
        &self,
        creds: &SnmpCredentials,
        resolve: impl FnOnce() -> Result<Security, fleetpulse_core::config::ConfigError>,
    ) -> Result<Security, fleetpulse_core::config::ConfigError> {
        if let Some((c, s)) = &self.lock().security {
            if c == creds {
                return Ok(s.clone());
            }
        }
        let security = resolve()?;
        let mut s = self.lock();
        s.security = Some((creds.clone(), security.clone()));
        s.engine = None;
        s.keys = None;
        Ok(security)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitions_halve_and_grow_back_slowly() {
        let s = SnmpSession::new();
        assert_eq!(s.repetitions(20), 20);
        assert_eq!(s.shrink_repetitions(20), 10);
        assert_eq!(s.shrink_repetitions(20), 5);
        assert_eq!(s.shrink_repetitions(20), 2);
        assert_eq!(s.shrink_repetitions(20), 1);
        assert_eq!(s.shrink_repetitions(20), 1);
        for _ in 0..3 {
            s.bulk_succeeded(20);
        }
        assert_eq!(s.repetitions(20), 1, "no growth before 4 successes");
        s.bulk_succeeded(20);
        assert_eq!(s.repetitions(20), 2);
        for _ in 0..100 {
            s.bulk_succeeded(20);
        }
        assert_eq!(s.repetitions(20), 20, "capped at the configured value");
        // A lower configured cap applies at once.
        assert_eq!(s.repetitions(8), 8);
    }

    #[test]
    fn backoff_after_silence_and_slowness() {
        let s = SnmpSession::new();
        let i = Duration::from_secs(30);
        assert_eq!(s.next_poll_delay(i), i);
        s.record_poll(true, false);
        assert_eq!(s.next_poll_delay(i), i * 2);
        s.record_poll(true, false);
        assert_eq!(s.next_poll_delay(i), i * 4);
        for _ in 0..10 {
            s.record_poll(true, false);
        }
        assert_eq!(s.next_poll_delay(i), i * 8);
        s.record_poll(false, true);
        assert_eq!(s.next_poll_delay(i), i * 2);
        s.record_poll(false, false);
        assert_eq!(s.next_poll_delay(i), i);
    }
}
