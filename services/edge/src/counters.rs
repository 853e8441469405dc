//! Usage counters: wrap and reset detection, usage since the last record,
//! and the last readings kept across restarts.
//!
//! `prtMarkerLifeCount` is cumulative, so a lost record is covered by the
//! next one, but a counter can go back: it **wraps** (Counter32 at 2^32;
//! some devices roll over at 999,999 or 2^24 − 1) or it is **reset** (board
//! or counter replaced, factory reset). Each reading is compared with the
//! previous reading of the same (device, marker):
//!
//! - not lower: usage = the difference (a large jump is usage, never a wrap);
//! - lower, the device did not reboot, the previous reading was in the top
//!   1/16 of a modulus (smallest first: 1,000,000, 2^24, 2^32) and the new
//!   one in its bottom 1/16: a wrap at that modulus, usage = modulus −
//!   previous + current;
//! - any other decrease (or a decrease while sysUpTime went back: the device
//!   rebooted, so a counter that went back was reset with it): a reset, usage
//!   = the current reading (counted from 0).
//!
//! The record sent marks the marker `wrapped` (with `wrap_modulus`) or
//! `reset`, with `previous_life_count` = the life count of the previous
//! *record* of that marker, so a reader can compute usage across it. A reset
//! outranks a wrap when both happened between two records.
//!
//! The last readings are saved in a small JSON state file (written to a
//! temporary file, then renamed) so that a restart compares with what was
//! read before it instead of taking a wrap for a new device.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use fleetpulse_core::records::{CounterEvent, CounterUnit, MarkerCounter};
use serde::{Deserialize, Serialize};

/// Moduli some devices wrap their life counters at, smallest first.
pub const WRAP_MODULI: [u64; 3] = [1_000_000, 1 << 24, 1 << 32];

/// How one reading relates to the previous one of the same counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// First reading: nothing to compare with.
    First,
    /// Grew by (or stayed: 0) this much.
    Advanced(u64),
    /// Wrapped at `modulus`; `usage` units were used across the wrap.
    Wrapped {
        /// The modulus.
        modulus: u64,
        /// Usage since the previous reading.
        usage: u64,
    },
    /// Went back for another reason; usage counted from 0.
    Reset {
        /// Usage since the reset (the current reading).
        usage: u64,
    },
}

impl Change {
    /// Usage since the previous reading.
    pub fn usage(&self) -> u64 {
        match *self {
            Change::First => 0,
            Change::Advanced(u) | Change::Wrapped { usage: u, .. } | Change::Reset { usage: u } => {
                u
            }
        }
    }
}

/// Compare `current` with `previous` (`rebooted`: sysUpTime went back
/// between the two readings).
pub fn classify(previous: Option<u64>, current: u64, rebooted: bool) -> Change {
    let Some(prev) = previous else {
        return Change::First;
    };
    if current >= prev {
        return Change::Advanced(current - prev);
    }
    if !rebooted {
        for m in WRAP_MODULI {
            let near = m / 16;
            if prev < m && prev >= m - near && current < near {
                return Change::Wrapped {
                    modulus: m,
                    usage: m - prev + current,
                };
            }
        }
    }
    Change::Reset { usage: current }
}

/// Last reading and pending marks of one marker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MarkerState {
    /// Last life count read.
    pub(crate) last: u64,
    /// Life count in the last record sent (None: none sent yet).
    pub(crate) sent: Option<u64>,
    /// A wrap since the last record (its modulus).
    pub(crate) wrapped: Option<u64>,
    /// A reset since the last record.
    pub(crate) reset: bool,
    /// Usage since the last record.
    pub(crate) usage: u64,
    /// Unit of the counter (pages are counted from page units).
    pub(crate) pages: bool,
}

/// Counters of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceCounters {
    /// sysUpTime of the last reading (ticks).
    pub(crate) uptime: Option<u64>,
    /// Markers by `device_index.marker_index`.
    pub(crate) markers: BTreeMap<String, MarkerState>,
    /// Finished jobs since the last record (where the driver knows them).
    pub(crate) jobs: u64,
}

/// What a reading changed, for the schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Pages since the last record (page-unit markers; all markers when
    /// none has a page unit).
    pub(crate) pages_since_sent: u64,
    /// Jobs since the last record.
    pub(crate) jobs_since_sent: u64,
    /// A wrap or reset is pending (sent at once).
    pub(crate) event_pending: bool,
    /// No record was sent yet for some marker.
    pub(crate) never_sent: bool,
}

fn is_page_unit(u: CounterUnit) -> bool {
    matches!(u, CounterUnit::Impressions | CounterUnit::Sheets)
}

fn counter_event(address: &str, key: &str, change: &Change) {
    match change {
        Change::Wrapped { modulus, usage } => {
            tracing::info!(
                address,
                marker = key,
                modulus,
                usage,
                "life counter wrapped"
            );
            metrics::counter!("fleetpulse_edge_counter_events_total", "event" => "wrapped")
                .increment(1);
        }
        Change::Reset { usage } => {
            tracing::warn!(
                address,
                marker = key,
                usage,
                "life counter went back: reset (board or counter replaced?)"
            );
            metrics::counter!("fleetpulse_edge_counter_events_total", "event" => "reset")
                .increment(1);
        }
        _ => {}
    }
}

impl DeviceCounters {
    /// Take a reading (sysUpTime, markers, jobs finished since the last
    /// reading); returns what it means for the schedule.
    pub(crate) fn observe(
        &mut self,
        address: &str,
        uptime: Option<u64>,
        markers: &[MarkerCounter],
        new_jobs: u64,
    ) -> Observed {
        let rebooted = matches!((self.uptime, uptime), (Some(a), Some(b)) if b < a);
        if uptime.is_some() {
            self.uptime = uptime;
        }
        self.jobs = self.jobs.saturating_add(new_jobs);
        for m in markers {
            let key = format!("{}.{}", m.device_index, m.marker_index);
            let current = u64::try_from(m.life_count).unwrap_or(0);
            let st = self
                .markers
                .entry(key.clone())
                .or_insert_with(|| MarkerState {
                    last: current,
                    ..Default::default()
                });
            st.pages = is_page_unit(m.unit);
            let change = classify(Some(st.last), current, rebooted);
            counter_event(address, &key, &change);
            match change {
                Change::Wrapped { modulus, .. } => st.wrapped = Some(modulus),
                Change::Reset { .. } => st.reset = true,
                _ => {}
            }
            st.usage = st.usage.saturating_add(change.usage());
            st.last = current;
        }
        self.observed()
    }

    fn observed(&self) -> Observed {
        let any_pages = self.markers.values().any(|m| m.pages);
        Observed {
            pages_since_sent: self
                .markers
                .values()
                .filter(|m| m.pages || !any_pages)
                .map(|m| m.usage)
                .fold(0u64, u64::saturating_add),
            jobs_since_sent: self.jobs,
            event_pending: self
                .markers
                .values()
                .any(|m| m.reset || m.wrapped.is_some()),
            never_sent: self.markers.values().any(|m| m.sent.is_none()),
        }
    }

    /// Mark `markers` (the current reading) with the events since the last
    /// record, and start counting anew: they are about to be stored.
    pub(crate) fn mark_sent(&mut self, markers: &mut [MarkerCounter]) {
        for m in markers.iter_mut() {
            let key = format!("{}.{}", m.device_index, m.marker_index);
            let Some(st) = self.markers.get_mut(&key) else {
                continue;
            };
            let previous = st.sent.and_then(|v| i64::try_from(v).ok());
            (m.event, m.wrap_modulus, m.previous_life_count) = if st.reset {
                (CounterEvent::Reset, None, previous)
            } else if let Some(modulus) = st.wrapped {
                (CounterEvent::Wrapped, i64::try_from(modulus).ok(), previous)
            } else {
                (CounterEvent::None, None, None)
            };
            st.sent = Some(st.last);
            st.wrapped = None;
            st.reset = false;
            st.usage = 0;
        }
        self.jobs = 0;
    }
}

/// The last readings of every device, saved across restarts.
#[derive(Debug, Default)]
pub(crate) struct CounterStore {
    path: Option<PathBuf>,
    devices: HashMap<String, DeviceCounters>,
    dirty: bool,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    devices: BTreeMap<String, DeviceCounters>,
}

fn state_unreadable(path: &Path, reason: &str) {
    tracing::warn!(path = %path.display(), reason, "counter state file unreadable; wraps and resets are detected from the next readings on");
    metrics::counter!("fleetpulse_edge_counter_state_errors_total", "op" => "load").increment(1);
}

fn state_not_saved(path: &Path, e: &std::io::Error) {
    tracing::warn!(path = %path.display(), error = %e, "counter state file not saved");
    metrics::counter!("fleetpulse_edge_counter_state_errors_total", "op" => "save").increment(1);
}

impl CounterStore {
    /// Load the state file (missing or unreadable: start empty, said once).
    pub(crate) fn load(path: Option<PathBuf>) -> CounterStore {
        let mut store = CounterStore {
            path,
            ..Default::default()
        };
        let Some(p) = &store.path else { return store };
        match std::fs::read(p) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(f) if f.version == 1 => store.devices = f.devices.into_iter().collect(),
                Ok(_) => state_unreadable(p, "unknown version"),
                Err(_) => state_unreadable(p, "not valid JSON"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => state_unreadable(p, &e.to_string()),
        }
        store
    }

    /// The counters of a device (created empty).
    pub(crate) fn device(&mut self, device_id: &str) -> &mut DeviceCounters {
        self.dirty = true;
        self.devices.entry(device_id.to_string()).or_default()
    }

    /// Write the state file if anything changed (temporary file + rename).
    pub(crate) fn save(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if !self.dirty {
            return;
        }
        let file = StateFile {
            version: 1,
            devices: self
                .devices
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let result = (|| {
            let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)
        })();
        match result {
            Ok(()) => self.dirty = false,
            Err(e) => state_not_saved(&path, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(i: i32, life: i64) -> MarkerCounter {
        MarkerCounter {
            marker_index: i,
            device_index: 1,
            unit: CounterUnit::Impressions,
            life_count: life,
            power_on_count: None,
            event: CounterEvent::None,
            wrap_modulus: None,
            previous_life_count: None,
        }
    }

    #[test]
    fn wraps_at_each_modulus() {
        for m in WRAP_MODULI {
            // Last value before the modulus, then 0: one unit of usage.
            assert_eq!(
                classify(Some(m - 1), 0, false),
                Change::Wrapped {
                    modulus: m,
                    usage: 1
                },
                "{m}"
            );
            assert_eq!(
                classify(Some(m - 10), 25, false),
                Change::Wrapped {
                    modulus: m,
                    usage: 35
                },
                "{m}"
            );
            // Same situation after a reboot: a reset, not a wrap.
            assert_eq!(
                classify(Some(m - 10), 25, true),
                Change::Reset { usage: 25 }
            );
            // Reaching the modulus exactly is not a wrap of that modulus
            // (the counter never shows it): it is plain growth.
            assert_eq!(classify(Some(m - 1), m, false), Change::Advanced(1));
        }
        // 999,999 → 3 is the 1,000,000 rollover, not 2^24 or 2^32.
        assert_eq!(
            classify(Some(999_999), 3, false),
            Change::Wrapped {
                modulus: 1_000_000,
                usage: 4
            }
        );
        // Just under 2^24 (above 1,000,000): the 2^24 rollover.
        assert_eq!(
            classify(Some((1 << 24) - 5), 5, false),
            Change::Wrapped {
                modulus: 1 << 24,
                usage: 10
            }
        );
        assert_eq!(
            classify(Some(u64::from(u32::MAX)), 7, false),
            Change::Wrapped {
                modulus: 1 << 32,
                usage: 8
            }
        );
    }

    #[test]
    fn resets_jumps_and_duplicates() {
        // A decrease far from any modulus: reset.
        assert_eq!(
            classify(Some(500_000), 12, false),
            Change::Reset { usage: 12 }
        );
        // Near a modulus but landing high: reset, not a wrap.
        assert_eq!(
            classify(Some(999_000), 900_000, false),
            Change::Reset { usage: 900_000 }
        );
        // Board replaced with a counter already at some value below.
        assert_eq!(
            classify(Some(3_000_000_000), 2_000_000, false),
            Change::Reset { usage: 2_000_000 }
        );
        // A legitimately large jump is usage.
        assert_eq!(
            classify(Some(10), 3_000_000_000, false),
            Change::Advanced(2_999_999_990)
        );
        // Duplicate readings: no usage, no event.
        assert_eq!(classify(Some(42), 42, false), Change::Advanced(0));
        assert_eq!(classify(Some(42), 42, true), Change::Advanced(0));
        assert_eq!(classify(None, 42, false), Change::First);
    }

    #[test]
    fn property_wrap_usage_is_exact() {
        // Deterministic pseudo-random walk over each modulus: the usage found
        // across every wrap equals the increments made.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for m in WRAP_MODULI {
            let mut reading = m - m / 20;
            let mut total_true = 0u64;
            let mut total_seen = 0u64;
            let mut wraps = 0;
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let inc = x % (m / 64);
                let next = (reading + inc) % m;
                let c = classify(Some(reading), next, false);
                assert!(
                    !matches!(c, Change::Reset { .. }),
                    "{m}: {reading} -> {next}"
                );
                if matches!(c, Change::Wrapped { .. }) {
                    wraps += 1;
                }
                total_true += inc;
                total_seen += c.usage();
                reading = next;
            }
            assert_eq!(total_true, total_seen, "{m}");
            assert!(wraps > 0, "{m}: the walk never wrapped");
        }
    }

    #[test]
    fn record_marks_events_since_last_record() {
        let mut d = DeviceCounters::default();
        let o = d.observe("a", Some(100), &[marker(1, 999_990)], 0);
        assert!(o.never_sent && !o.event_pending);
        let mut sent = vec![marker(1, 999_990)];
        d.mark_sent(&mut sent);
        assert_eq!(sent[0].event, CounterEvent::None);
        let o = d.observe("a", Some(200), &[marker(1, 999_999)], 0);
        assert_eq!(o.pages_since_sent, 9);
        let o = d.observe("a", Some(300), &[marker(1, 20)], 2);
        assert!(o.event_pending);
        assert_eq!((o.pages_since_sent, o.jobs_since_sent), (30, 2));
        let mut sent = vec![marker(1, 20)];
        d.mark_sent(&mut sent);
        assert_eq!(sent[0].event, CounterEvent::Wrapped);
        assert_eq!(sent[0].wrap_modulus, Some(1_000_000));
        assert_eq!(sent[0].previous_life_count, Some(999_990));
        // A reboot with the counter back near 0: reset.
        d.observe("a", Some(5), &[marker(1, 3)], 0);
        let mut sent = vec![marker(1, 3)];
        d.mark_sent(&mut sent);
        assert_eq!(sent[0].event, CounterEvent::Reset);
        assert_eq!(sent[0].previous_life_count, Some(20));
        let o = d.observe("a", Some(6), &[marker(1, 3)], 0);
        assert_eq!(o, Observed::default());
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("counters.json");
        let mut s = CounterStore::load(Some(path.clone()));
        s.device("SN1")
            .observe("a", Some(10), &[marker(1, 4_294_967_290)], 0);
        s.save();
        assert!(path.exists());
        assert!(!path.with_extension("json.tmp").exists());
        // After a restart the wrap is seen as a wrap, not as a new device.
        let mut s = CounterStore::load(Some(path.clone()));
        let o = s.device("SN1").observe("a", Some(20), &[marker(1, 4)], 0);
        assert!(o.event_pending);
        assert_eq!(o.pages_since_sent, 10);
        // A corrupt file: start empty, no panic.
        std::fs::write(&path, b"{not json").unwrap();
        let mut s = CounterStore::load(Some(path));
        assert_eq!(s.device("SN1").markers.len(), 0);
    }
}
