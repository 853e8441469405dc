//! What a device's poll sends: the schedule of `[schedule]`.
//!
//! Devices are read every `poll_interval` (cheap, on the LAN); only some
//! readings leave the site:
//!
//! - **Status** (supplies, trays, state) at the first poll, then every
//!   `status_interval` (default 3 h), and on a significant change since the
//!   previous poll (at the next `min_interval` slot, start + k ×
//!   `min_interval`, at least `min_interval` after the previous status —
//!   the vendors' "at most every 30 minutes"): `hrDeviceStatus` changed, an
//!   error flag of
//!   `hrPrinterDetectedErrorState` appeared, or a supply fell to or below
//!   `supply_low_percent` (or to level 0). A flag clearing or `hrPrinterStatus`
//!   moving between idle and printing is not significant: it goes with the
//!   next status (a jam clearing usually also changes `hrDeviceStatus`).
//! - **Usage counters** at the first poll, then every `counters_interval`
//!   (3 h), or as soon as `counters_after_pages` pages (100) or
//!   `counters_after_jobs` jobs (19) accumulated since the last record, or a
//!   counter wrapped or was reset ([`crate::counters`]) — at the same
//!   `min_interval` slots.
//! - **Alerts**: a `critical` alert row opening or clearing goes at once;
//!   other severities go with the next status record or critical alert,
//!   whichever is first (a device's alert events stay in order).
//! - **Device heartbeats** (`device_heartbeats = "on_change"`, default) only
//!   when a device answers again after unanswered polls; liveness otherwise
//!   travels in the connector heartbeat's `devices` list. `every_poll` sends
//!   one after every answered poll.
//! - **3D printers** (`protocol = "https3d"`) have no usage counters: their
//!   cumulative usage (agent used and hours per printhead) is in the status
//!   record, so it goes on both schedules ([`DevicePlan::on_poll_3d`]):
//!   the status rules above, and every `counters_interval` or after
//!   `counters_after_jobs` finished jobs. Job records go as jobs finish.
//!
//! Batching: what can wait leaves at shared instants. Interval due times
//! are aligned for all devices on the connector's start (start + k ×
//! interval), held changes and triggers on the `min_interval` slots, and the
//! first records of every device wait for the end of the first round of
//! polls (start + `poll_interval`); each device is polled once more exactly
//! at such an instant (an extra poll; its regular polls keep their spread
//! phase), and the connector heartbeat goes at the same slots. So a slot's
//! records share one produce request and compress together (zstd on the
//! batch). Only critical alerts (and a device heartbeat after silence) leave
//! on their own.

use std::collections::HashSet;

use fleetpulse_core::records::{AlertSeverity, DeviceStatus, HrDeviceStatus, PrinterErrorFlag};
use tokio::time::{Duration, Instant};

use crate::config::{DeviceHeartbeats, ScheduleConfig};
use crate::counters::Observed;
use crate::poller::PollRecords;

/// The next aligned due time after `now`: `anchor + k × interval`.
pub(crate) fn next_due(anchor: Instant, interval: Duration, now: Instant) -> Instant {
    let interval = interval.max(Duration::from_millis(1));
    let since = now.saturating_duration_since(anchor);
    let k = since.as_nanos() / interval.as_nanos() + 1;
    anchor + interval * u32::try_from(k).unwrap_or(u32::MAX)
}

/// The part of a status whose change is significant.
#[derive(Debug, Clone, Default, PartialEq)]
struct Significant {
    device_status: Option<HrDeviceStatus>,
    errors: Vec<PrinterErrorFlag>,
    low_supplies: HashSet<(i32, i32)>,
}

impl Significant {
    fn of(s: &DeviceStatus, low_percent: u8) -> Significant {
        Significant {
            device_status: s.hr_device_status,
            errors: s.detected_errors.clone(),
            low_supplies: s
                .supplies
                .iter()
                .filter(|x| {
                    x.level == Some(0) || x.percent.is_some_and(|p| p <= f64::from(low_percent))
                })
                .map(|x| (x.device_index, x.index))
                .collect(),
        }
    }

    /// Why `self` (now) differs significantly from `before`, if it does.
    fn change_from(&self, before: &Significant) -> Option<&'static str> {
        if self.device_status != before.device_status {
            return Some("device_state");
        }
        if !self.errors.iter().all(|e| before.errors.contains(e)) {
            return Some("error_flag");
        }
        if !self.low_supplies.is_subset(&before.low_supplies) {
            return Some("supply_low");
        }
        None
    }
}

/// What to store after one answered poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) heartbeat: bool,
    pub(crate) status: bool,
    pub(crate) counters: bool,
    /// Why the status goes (for logs and tests).
    pub(crate) status_reason: Option<&'static str>,
    /// Why the counters go.
    pub(crate) counters_reason: Option<&'static str>,
}

/// One device's schedule state.
#[derive(Debug)]
pub(crate) struct DevicePlan {
    anchor: Instant,
    status_due: Option<Instant>,
    counters_due: Option<Instant>,
    /// When the last status / counters record went.
    status_sent: Option<Instant>,
    counters_sent: Option<Instant>,
    /// A change or trigger waiting for its slot: why, and since when.
    status_pending: Option<(&'static str, Instant)>,
    counters_pending: Option<(&'static str, Instant)>,
    /// Nothing goes before this (the end of the connector's first round of
    /// polls), so the first records of all devices leave together.
    first_slot: Instant,
    /// `schedule.min_interval`, for [`DevicePlan::next_due`].
    floor: Duration,
    previous: Option<Significant>,
    /// `Some(false)` after an unanswered poll.
    reachable: Option<bool>,
    /// Non-critical alert events waiting for the next status.
    pending_alerts: Vec<fleetpulse_core::records::AlertEvent>,
    /// (`status_interval`, `counters_interval`) the due times were computed
    /// with: a reload changing them moves the due times at the next poll.
    intervals: Option<(Duration, Duration)>,
}

impl DevicePlan {
    /// A plan whose intervals are aligned on `anchor` (the connector's start).
    pub(crate) fn new(anchor: Instant) -> DevicePlan {
        DevicePlan {
            anchor,
            status_due: None,
            counters_due: None,
            status_sent: None,
            counters_sent: None,
            status_pending: None,
            counters_pending: None,
            first_slot: anchor,
            floor: Duration::ZERO,
            previous: None,
            reachable: None,
            pending_alerts: Vec::new(),
            intervals: None,
        }
    }

    /// Hold the first records until `first` (the end of the connector's
    /// first round of polls).
    pub(crate) fn starting_at(mut self, first: Instant) -> DevicePlan {
        self.first_slot = first;
        self
    }

    /// The next time something falls due: the first slot, an interval, or a
    /// pending change reaching its slot.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let pending_status = self
            .status_pending
            .map(|(_, since)| self.pending_slot(self.status_sent, since));
        let pending_counters = self
            .counters_pending
            .map(|(_, since)| self.pending_slot(self.counters_sent, since));
        let first =
            (self.status_due.is_none() || self.counters_due.is_none()).then_some(self.first_slot);
        [
            self.status_due,
            self.counters_due,
            pending_status,
            pending_counters,
            first,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When a change or trigger noticed at `since` goes: at the first slot
    /// (`anchor + k × min_interval`) at or after `since` that is at least
    /// `min_interval` after `last`. Every device's held records, and the
    /// connector heartbeat, leave at the same slots: one request per slot.
    fn pending_slot(&self, last: Option<Instant>, since: Instant) -> Instant {
        let at_or_after = next_due(
            self.anchor,
            self.floor,
            since.checked_sub(Duration::from_nanos(1)).unwrap_or(since),
        );
        self.floor_slot(last, self.floor).max(at_or_after)
    }

    /// The earliest slot (`anchor + k × floor`) at least `floor` after
    /// `last` (the anchor when nothing was sent).
    fn floor_slot(&self, last: Option<Instant>, floor: Duration) -> Instant {
        match last {
            None => self.anchor,
            Some(t) => next_due(
                self.anchor,
                floor,
                (t + floor)
                    .checked_sub(Duration::from_nanos(1))
                    .unwrap_or(t),
            ),
        }
    }

    /// The device did not answer a poll.
    pub(crate) fn unanswered(&mut self) {
        self.reachable = Some(false);
    }

    /// An answered poll at `now`: decide what goes, and trim `records` to it
    /// (alerts that wait are kept here; waiting ones join a status that goes).
    pub(crate) fn on_poll(
        &mut self,
        cfg: &ScheduleConfig,
        now: Instant,
        records: &mut PollRecords,
        observed: Observed,
    ) -> Decision {
        self.decide(cfg, now, records, observed, false)
    }

    /// An answered poll of a 3D printer. It has no usage counters: its
    /// cumulative usage (agent used and hours per printhead, build unit) is
    /// in the status record, so the status goes on the union of both
    /// schedules — status rules, and the counter rules (`counters_interval`,
    /// `counters_after_jobs` finished jobs) — and either resets both.
    pub(crate) fn on_poll_3d(
        &mut self,
        cfg: &ScheduleConfig,
        now: Instant,
        records: &mut PollRecords,
        observed: Observed,
    ) -> Decision {
        self.decide(cfg, now, records, observed, true)
    }

    fn decide(
        &mut self,
        cfg: &ScheduleConfig,
        now: Instant,
        records: &mut PollRecords,
        observed: Observed,
        usage_in_status: bool,
    ) -> Decision {
        let has_usage = records.counters.is_some() || usage_in_status;
        let heartbeat = match cfg.device_heartbeats {
            DeviceHeartbeats::EveryPoll => true,
            DeviceHeartbeats::OnChange => self.reachable == Some(false),
        };
        self.reachable = Some(true);

        self.floor = cfg.min_interval;
        let intervals = (cfg.status_interval, cfg.counters_interval);
        if self.intervals.is_some_and(|i| i != intervals) {
            // A new schedule (reload): the next slot of the new interval
            // after what was last sent, not the old due time.
            self.status_due = self
                .status_sent
                .map(|t| next_due(self.anchor, cfg.status_interval, t));
            self.counters_due = self
                .counters_sent
                .map(|t| next_due(self.anchor, cfg.counters_interval, t));
        }
        self.intervals = Some(intervals);
        let sig = Significant::of(&records.status, cfg.supply_low_percent);
        if let Some(change) = self.previous.as_ref().and_then(|p| sig.change_from(p)) {
            self.status_pending.get_or_insert((change, now));
        }
        self.previous = Some(sig);
        let status_reason = match (self.status_due, self.status_pending) {
            (None, _) if now >= self.first_slot => Some("first"),
            (None, _) => None,
            (Some(due), _) if now >= due => Some("interval"),
            // A change waits for its slot (at most `min_interval`).
            (Some(_), Some((why, since))) if now >= self.pending_slot(self.status_sent, since) => {
                Some(why)
            }
            (Some(_), _) => None,
        };

        if has_usage {
            let trigger = if observed.event_pending {
                Some("wrap_or_reset")
            } else if observed.pages_since_sent >= cfg.counters_after_pages {
                Some("pages")
            } else if observed.jobs_since_sent >= cfg.counters_after_jobs {
                Some("jobs")
            } else {
                None
            };
            if let Some(t) = trigger {
                self.counters_pending.get_or_insert((t, now));
            }
        }
        let counters_reason = if !has_usage {
            None
        } else if self.counters_due.is_none() || observed.never_sent {
            (now >= self.first_slot).then_some("first")
        } else if self.counters_due.is_some_and(|d| now >= d) {
            Some("interval")
        } else {
            match self.counters_pending {
                Some((why, since)) if now >= self.pending_slot(self.counters_sent, since) => {
                    Some(why)
                }
                _ => None,
            }
        };

        let (status_reason, counters_reason) = if usage_in_status {
            let r = status_reason.or(counters_reason);
            (r, r)
        } else {
            (status_reason, counters_reason)
        };
        if status_reason.is_some() {
            self.status_due = Some(next_due(self.anchor, cfg.status_interval, now));
            self.status_sent = Some(now);
            self.status_pending = None;
        }
        if counters_reason.is_some() {
            self.counters_due = Some(next_due(self.anchor, cfg.counters_interval, now));
            self.counters_sent = Some(now);
            self.counters_pending = None;
        }

        // Critical alerts now; the others with the next status or critical
        // alert, in order (a device's alert events never overtake each other).
        self.pending_alerts.append(&mut records.alerts);
        let critical = self
            .pending_alerts
            .iter()
            .any(|a| a.severity == AlertSeverity::Critical);
        if status_reason.is_some() || critical {
            records.alerts = std::mem::take(&mut self.pending_alerts);
        }
        // A device that keeps raising minor alerts without a status going:
        // bounded memory (oldest dropped; the alert table is read again).
        const MAX_PENDING: usize = 256;
        if self.pending_alerts.len() > MAX_PENDING {
            let excess = self.pending_alerts.len() - MAX_PENDING;
            self.pending_alerts.drain(..excess);
        }
        Decision {
            heartbeat,
            status: status_reason.is_some(),
            counters: counters_reason.is_some(),
            status_reason,
            counters_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::DeviceCounters;
    use fleetpulse_core::records::{
        AlertEvent, AlertTransition, CounterEvent, CounterUnit, DeviceHeartbeat, MarkerCounter,
        UsageCounters,
    };
    use fleetpulse_core::samples;

    const H: Duration = Duration::from_secs(3600);

    fn records(pages: i64, alerts: Vec<AlertSeverity>) -> PollRecords {
        let mut status = samples::device_status("SN1");
        status.detected_errors.clear();
        status.hr_device_status = Some(HrDeviceStatus::Running);
        for s in &mut status.supplies {
            s.level = Some(80);
            s.percent = Some(80.0);
        }
        let mut counters = samples::usage_counters("SN1");
        counters.markers = vec![MarkerCounter {
            marker_index: 1,
            device_index: 1,
            unit: CounterUnit::Impressions,
            life_count: pages,
            power_on_count: None,
            event: CounterEvent::None,
            wrap_modulus: None,
            previous_life_count: None,
        }];
        let alerts = alerts
            .into_iter()
            .map(|severity| {
                let mut a: AlertEvent = samples::alert_event("SN1");
                a.severity = severity;
                a.transition = AlertTransition::Opened;
                a
            })
            .collect();
        let heartbeat: DeviceHeartbeat = samples::device_heartbeat("SN1");
        PollRecords {
            heartbeat,
            status,
            counters: Some(counters as UsageCounters),
            alerts,
        }
    }

    /// One device's plan on an injected clock (`now`).
    struct Sim {
        cfg: ScheduleConfig,
        plan: DevicePlan,
        counters: DeviceCounters,
        start: Instant,
        now: Instant,
    }

    impl Sim {
        fn new() -> Sim {
            let start = Instant::now();
            Sim {
                cfg: ScheduleConfig::default(),
                plan: DevicePlan::new(start),
                counters: DeviceCounters::default(),
                start,
                now: start,
            }
        }
        fn poll(
            &mut self,
            pages: i64,
            jobs: u64,
            alerts: Vec<AlertSeverity>,
        ) -> (Decision, PollRecords) {
            let mut r = records(pages, alerts);
            let markers = r.counters.as_ref().unwrap().markers.clone();
            let o = self.counters.observe("a", Some(1), &markers, jobs);
            let d = self.plan.on_poll(&self.cfg, self.now, &mut r, o);
            if d.counters {
                self.counters
                    .mark_sent(&mut r.counters.as_mut().unwrap().markers);
            }
            (d, r)
        }
    }

    #[test]
    fn counters_after_100_pages_before_3h() {
        let mut s = Sim::new();
        let (d, _) = s.poll(1000, 0, vec![]);
        assert_eq!(
            (d.status_reason, d.counters_reason),
            (Some("first"), Some("first"))
        );
        let mut pages = 1000;
        let mut sent_at = None;
        for i in 1..=120 {
            s.now += Duration::from_secs(30);
            pages += 1; // 1 page per poll: 100 pages after 50 min
            let (d, _) = s.poll(pages, 0, vec![]);
            assert!(
                !d.status,
                "poll {i}: status went early ({:?})",
                d.status_reason
            );
            if d.counters {
                sent_at = Some((i, d.counters_reason));
                break;
            }
        }
        // 100 pages after 50 min; they go at the next 30-minute slot (60 min).
        assert_eq!(sent_at, Some((120, Some("pages"))));
        assert!(s.now - s.start < 3 * H);
    }

    #[test]
    fn counters_and_status_every_3h_without_pages() {
        let mut s = Sim::new();
        s.poll(5, 0, vec![]);
        let mut sent = Vec::new();
        for i in 1..=(6 * 120 + 1) {
            s.now += Duration::from_secs(30);
            let (d, _) = s.poll(5, 0, vec![]);
            assert!(!d.heartbeat);
            if d.counters || d.status {
                assert!(d.counters && d.status, "{d:?}");
                assert_eq!(d.counters_reason, Some("interval"));
                sent.push(i);
            }
        }
        // At 3 h and 6 h of the anchored schedule.
        assert_eq!(sent, vec![360, 720]);
    }

    #[test]
    fn counters_after_19_jobs() {
        let mut s = Sim::new();
        s.poll(5, 0, vec![]);
        for i in 1..=30u64 {
            // One job every 2 min: the 19th after 38 min; the counters go at
            // the next 30-minute slot (60 min).
            s.now += Duration::from_secs(120);
            // Jobs without page-unit growth (e.g. 3D jobs).
            let jobs = u64::from(i <= 19);
            let (d, _) = s.poll(5, jobs, vec![]);
            assert_eq!(d.counters, i == 30, "poll {i}");
            if d.counters {
                assert_eq!(d.counters_reason, Some("jobs"));
            }
        }
    }

    #[test]
    fn critical_alert_at_once_others_with_status() {
        let mut s = Sim::new();
        s.cfg.min_interval = Duration::from_secs(1);
        s.poll(5, 0, vec![]);
        s.now += Duration::from_secs(30);
        let (d, r) = s.poll(5, 0, vec![AlertSeverity::Warning]);
        assert!(!d.status && !d.counters, "{d:?}");
        assert!(r.alerts.is_empty(), "a warning waits");
        // A critical alert goes at once, after the waiting warning (order kept).
        s.now += Duration::from_secs(30);
        let (d, r) = s.poll(5, 0, vec![AlertSeverity::Critical]);
        assert!(!d.status && !d.counters, "{d:?}");
        let sev: Vec<_> = r.alerts.iter().map(|a| a.severity).collect();
        assert_eq!(sev, vec![AlertSeverity::Warning, AlertSeverity::Critical]);
        s.now += Duration::from_secs(30);
        let (_, r) = s.poll(5, 0, vec![AlertSeverity::Warning]);
        assert!(r.alerts.is_empty(), "a warning waits");
        // The warning waits for the next status (here: a new error flag).
        s.now += Duration::from_secs(30);
        let mut r = records(5, vec![]);
        r.status.detected_errors.push(PrinterErrorFlag::Jammed);
        let o = s.counters.observe("a", Some(1), &[], 0);
        let d = s.plan.on_poll(&s.cfg, s.now, &mut r, o);
        assert_eq!(d.status_reason, Some("error_flag"));
        assert_eq!(r.alerts.len(), 1);
        assert_eq!(r.alerts[0].severity, AlertSeverity::Warning);
    }

    #[test]
    fn significant_changes_and_reachability() {
        let mut s = Sim::new();
        s.cfg.min_interval = Duration::from_secs(1);
        s.poll(5, 0, vec![]);
        let step = |s: &mut Sim, f: &dyn Fn(&mut PollRecords)| {
            let mut r = records(5, vec![]);
            f(&mut r);
            let o = s.counters.observe("a", Some(1), &[], 0);
            s.plan.on_poll(&s.cfg, s.now, &mut r, o)
        };
        s.now += Duration::from_secs(30);
        let d = step(&mut s, &|r| r.status.supplies[0].percent = Some(9.0));
        assert_eq!(d.status_reason, Some("supply_low"));
        // Still low: nothing new.
        let d = step(&mut s, &|r| r.status.supplies[0].percent = Some(8.0));
        assert_eq!(d.status_reason, None);
        s.now += Duration::from_secs(30);
        let d = step(&mut s, &|r| {
            r.status.hr_device_status = Some(HrDeviceStatus::Warning)
        });
        assert_eq!(d.status_reason, Some("device_state"));
        // Printing vs idle is not significant.
        let d = step(&mut s, &|r| {
            r.status.hr_device_status = Some(HrDeviceStatus::Warning);
            r.status.hr_printer_status = Some(fleetpulse_core::records::HrPrinterStatus::Printing);
        });
        assert_eq!(d.status_reason, None);
        // A device answering again after silence: one device heartbeat.
        s.plan.unanswered();
        let d = step(&mut s, &|r| {
            r.status.hr_device_status = Some(HrDeviceStatus::Warning)
        });
        assert!(d.heartbeat);
        let d = step(&mut s, &|r| {
            r.status.hr_device_status = Some(HrDeviceStatus::Warning)
        });
        assert!(!d.heartbeat);
    }

    #[test]
    fn changes_and_triggers_respect_the_floor() {
        // Default floor: 30 min. 100 pages within 10 min and a new error
        // flag at 5 min both wait for the 30 min slot, then go together.
        let mut s = Sim::new();
        s.poll(0, 0, vec![]);
        let mut pages = 0;
        for i in 1..=60 {
            s.now += Duration::from_secs(30);
            pages += 10;
            let mut r = records(pages, vec![AlertSeverity::Critical]);
            if i >= 10 {
                r.status.detected_errors.push(PrinterErrorFlag::DoorOpen);
            }
            let markers = r.counters.as_ref().unwrap().markers.clone();
            let o = s.counters.observe("a", Some(1), &markers, 0);
            let d = s.plan.on_poll(&s.cfg, s.now, &mut r, o);
            // Critical alerts are never held.
            assert_eq!(r.alerts.len(), 1);
            if i < 60 {
                assert!(!d.status && !d.counters, "poll {i}: {d:?}");
                if i >= 20 {
                    assert_eq!(
                        s.plan.next_due(),
                        Some(s.start + 30 * Duration::from_secs(60))
                    );
                }
            } else {
                assert_eq!(d.status_reason, Some("error_flag"));
                assert!(d.status && d.counters, "{d:?}");
                assert_eq!(d.counters_reason, Some("pages"));
            }
            if d.counters {
                s.counters
                    .mark_sent(&mut r.counters.as_mut().unwrap().markers);
            }
        }
    }

    #[test]
    fn a_new_interval_moves_the_due_times() {
        let mut s = Sim::new();
        s.cfg = ScheduleConfig::every_poll();
        s.poll(5, 0, vec![]);
        s.now += Duration::from_secs(30);
        let (d, _) = s.poll(5, 0, vec![]);
        assert_eq!(d.status_reason, Some("interval"));
        // Back to 3 h (a reload): the old 1 s due time does not fire again,
        // nor does anything count as "first"; the next status is at the 3 h slot.
        s.cfg = ScheduleConfig {
            min_interval: Duration::from_secs(1),
            ..Default::default()
        };
        let mut sent = Vec::new();
        for i in 1..=400 {
            s.now += Duration::from_secs(30);
            let (d, _) = s.poll(5, 0, vec![]);
            if d.status {
                sent.push((i, d.status_reason));
            }
        }
        assert_eq!(sent, vec![(359, Some("interval"))]);
    }

    #[test]
    fn held_records_leave_on_shared_slots() {
        // The first records wait for the end of the first round of polls.
        let mut s = Sim::new();
        s.plan = DevicePlan::new(s.start).starting_at(s.start + Duration::from_secs(30));
        s.now += Duration::from_secs(10);
        let (d, _) = s.poll(5, 0, vec![]);
        assert!(!d.status && !d.counters, "{d:?}");
        assert_eq!(s.plan.next_due(), Some(s.start + Duration::from_secs(30)));
        s.now = s.start + Duration::from_secs(30);
        let (d, _) = s.poll(5, 0, vec![]);
        assert_eq!(
            (d.status_reason, d.counters_reason),
            (Some("first"), Some("first"))
        );
        // A change long after the last status still waits for the next
        // 30-minute slot (where every device's held records and the
        // connector heartbeat go), not a moment of its own.
        s.now = s.start + 100 * Duration::from_secs(60);
        let mut r = records(5, vec![]);
        r.status.detected_errors.push(PrinterErrorFlag::Jammed);
        let o = s.counters.observe("a", Some(1), &[], 0);
        let d = s.plan.on_poll(&s.cfg, s.now, &mut r, o);
        assert!(!d.status, "{d:?}");
        assert_eq!(
            s.plan.next_due(),
            Some(s.start + 120 * Duration::from_secs(60))
        );
        s.now = s.start + 120 * Duration::from_secs(60);
        let (d, _) = s.poll(5, 0, vec![]);
        assert_eq!(d.status_reason, Some("error_flag"));
    }

    #[test]
    fn due_times_are_aligned() {
        let a = Instant::now();
        assert_eq!(next_due(a, H, a), a + H);
        assert_eq!(next_due(a, H, a + H / 2), a + H);
        assert_eq!(next_due(a, H, a + H), a + 2 * H);
    }
}
