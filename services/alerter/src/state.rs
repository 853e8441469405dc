//! The alerter's memory and its state machine: which conditions hold, which
//! alerts are open, and which `MaintenanceAlert`s a new input causes.
//!
//! Pure: the wall clock is passed in as `now_ms`, so every transition is
//! tested without Kafka and without sleeping. Each alert key is either open
//! or not; `raised` is published only on the closed → open edge and
//! `cleared` only on the open → closed edge, so a condition that holds for a
//! week produces one alert, not one per poll.

use std::collections::{BTreeSet, HashMap, HashSet};

use fleetpulse_core::records::{
    ConnectorHeartbeat, DeviceHeartbeat, DeviceStatus, MaintenanceAlert, MaintenanceKind,
    MaintenanceSeverity, MaintenanceState, Supply, SCHEMA_VERSION,
};

use crate::config::AlerterConfig;
use crate::forecast::{Forecast, ForecastParams, Observed, SupplyHistory};
use crate::tail::utc;

/// Hysteresis: an open depletion alert clears only once the forecast is at
/// least this factor above the threshold, so an estimate wobbling around
/// the threshold does not flap.
const CLEAR_FACTOR: f64 = 1.2;

/// Remaining capacity (percent) at or below which a depletion is critical.
const CRITICAL_REMAINING_PCT: f64 = 2.0;

/// Supply indexes remembered per device; a status listing more (or a device
/// cycling through indexes) adds none beyond this.
pub(crate) const MAX_SUPPLIES_PER_DEVICE: usize = 64;

/// The alerting rules, from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rules {
    /// Forecast parameters.
    pub(crate) forecast: ForecastParams,
    /// `depletion_threshold` in days.
    pub(crate) threshold_days: f64,
    /// `heartbeat_interval × silent_after_intervals`, milliseconds.
    pub(crate) silent_after_ms: i64,
    /// `max_devices`: devices remembered at most.
    pub(crate) max_devices: usize,
    /// `forget_after`, milliseconds: a device not seen this long is forgotten.
    pub(crate) forget_after_ms: i64,
}

impl Rules {
    /// The rules a config describes.
    pub(crate) fn from_config(c: &AlerterConfig) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Rules {
            forecast: ForecastParams {
                window_ms: ms(c.history_window),
                min_points: c.min_points,
                min_span_ms: ms(c.min_history_span),
                replacement_jump_pct: c.replacement_jump_pct,
            },
            threshold_days: c.depletion_threshold.as_secs_f64() / 86_400.0,
            silent_after_ms: ms(c.silent_after()),
            max_devices: c.max_devices.max(1),
            forget_after_ms: ms(c.forget_after),
        }
    }
}

/// The set of alert keys currently raised.
#[derive(Debug, Default)]
pub(crate) struct OpenAlerts {
    keys: HashSet<String>,
}

impl OpenAlerts {
    /// Open `key`; true when it was not open (a `raised` must be published).
    pub(crate) fn raise(&mut self, key: &str) -> bool {
        self.keys.insert(key.to_string())
    }

    /// Close `key`; true when it was open (a `cleared` must be published).
    pub(crate) fn clear(&mut self, key: &str) -> bool {
        self.keys.remove(key)
    }

    /// Undo the transition `alert` made when it could not be delivered:
    /// a lost `raised` closes the key again, so the condition raises it
    /// again when next seen; a lost `cleared` reopens it, so it is cleared
    /// again when the condition is next seen not to hold.
    pub(crate) fn undo(&mut self, key: &str, state: MaintenanceState) {
        match state {
            MaintenanceState::Raised => self.keys.remove(key),
            MaintenanceState::Cleared => self.keys.insert(key.to_string()),
        };
    }

    /// Whether `key` is open.
    #[cfg(test)]
    pub(crate) fn is_open(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Number of open alerts.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Replay an alert read back from the alert topic (restart recovery).
    pub(crate) fn replay(&mut self, alert: &MaintenanceAlert) {
        match alert.state {
            MaintenanceState::Raised => self.keys.insert(alert.alert_key.clone()),
            MaintenanceState::Cleared => self.keys.remove(&alert.alert_key),
        };
    }
}

/// The alert key of a consumable.
pub(crate) fn depletion_key(device_id: &str, supply_index: i32) -> String {
    format!("{device_id}/consumable_depletion/{supply_index}")
}

/// The alert key of a silent device.
pub(crate) fn silent_key(device_id: &str) -> String {
    format!("{device_id}/device_silent")
}

/// The last heartbeat of a device.
#[derive(Debug, Clone)]
struct LastHeartbeat {
    /// Wall-clock time the alerter received it (silence is measured on this:
    /// event time stops when the edge stops, so only the receiver's clock
    /// can tell that nothing arrives).
    received_ms: i64,
    /// When the edge observed the device (shown in messages).
    observed_at: i64,
    tenant_id: String,
    connector_id: String,
}

/// Who an alert is about: copied from the record that caused it.
struct Source<'a> {
    tenant_id: &'a str,
    connector_id: &'a str,
    device_id: &'a str,
}

/// When each device was last seen (wall clock), oldest first.
#[derive(Debug, Default)]
struct Recency {
    by_device: HashMap<String, i64>,
    by_time: BTreeSet<(i64, String)>,
}

impl Recency {
    fn touch(&mut self, device_id: &str, now_ms: i64) {
        if let Some(old) = self.by_device.insert(device_id.to_string(), now_ms) {
            self.by_time.remove(&(old, device_id.to_string()));
        }
        self.by_time.insert((now_ms, device_id.to_string()));
    }

    fn contains(&self, device_id: &str) -> bool {
        self.by_device.contains_key(device_id)
    }

    fn len(&self) -> usize {
        self.by_device.len()
    }

    /// Remove and return the least recently seen device if it was last
    /// seen before `before_ms` (any age when `None`).
    fn pop_oldest(&mut self, before_ms: Option<i64>) -> Option<String> {
        let (t, _) = self.by_time.first()?;
        if before_ms.is_some_and(|b| *t >= b) {
            return None;
        }
        let (_, device) = self.by_time.pop_first()?;
        self.by_device.remove(&device);
        Some(device)
    }
}

/// Per-device memory and the open alerts.
///
/// Input is not authenticated here, so the memory is bounded: at most
/// `max_devices` devices (the least recently seen is forgotten to make room)
/// and [`MAX_SUPPLIES_PER_DEVICE`] supplies each; a device not seen for
/// `forget_after` is forgotten. Open alerts are kept (they are the state of
/// the alert topic, restored from it at start).
#[derive(Debug)]
pub(crate) struct Monitor {
    rules: Rules,
    supplies: HashMap<String, HashMap<i32, SupplyHistory>>,
    heartbeats: HashMap<String, LastHeartbeat>,
    recency: Recency,
    open: OpenAlerts,
}

impl Monitor {
    /// Empty memory.
    pub(crate) fn new(rules: Rules) -> Self {
        Monitor {
            rules,
            supplies: HashMap::new(),
            heartbeats: HashMap::new(),
            recency: Recency::default(),
            open: OpenAlerts::default(),
        }
    }

    /// The open alerts (to restore them at start).
    pub(crate) fn open_alerts_mut(&mut self) -> &mut OpenAlerts {
        &mut self.open
    }

    /// Number of open alerts.
    pub(crate) fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Number of devices remembered.
    pub(crate) fn device_count(&self) -> usize {
        self.recency.len()
    }

    /// Undo what an alert that could not be delivered did to the open set.
    pub(crate) fn undo(&mut self, alert_key: &str, state: MaintenanceState) {
        self.open.undo(alert_key, state);
    }

    /// Note that `device_id` was seen at `now_ms`, making room for it first.
    fn seen(&mut self, device_id: &str, now_ms: i64) {
        if !self.recency.contains(device_id) {
            while self.recency.len() >= self.rules.max_devices {
                let Some(old) = self.recency.pop_oldest(None) else {
                    break;
                };
                self.forget(&old);
                device_evicted(self.rules.max_devices);
            }
        }
        self.recency.touch(device_id, now_ms);
    }

    /// Forget devices not seen since `forget_after` before `now_ms`.
    fn expire(&mut self, now_ms: i64) {
        let before = now_ms.saturating_sub(self.rules.forget_after_ms);
        let mut n = 0u64;
        while let Some(old) = self.recency.pop_oldest(Some(before)) {
            self.forget(&old);
            n += 1;
        }
        if n > 0 {
            devices_expired(n);
        }
    }

    fn forget(&mut self, device_id: &str) {
        self.supplies.remove(device_id);
        self.heartbeats.remove(device_id);
    }

    /// Feed a status poll; returns the alerts it causes.
    pub(crate) fn on_status(
        &mut self,
        status: &DeviceStatus,
        now_ms: i64,
    ) -> Vec<MaintenanceAlert> {
        let src = Source {
            tenant_id: &status.tenant_id,
            connector_id: &status.connector_id,
            device_id: &status.device_id,
        };
        let mut out = Vec::new();
        self.seen(&status.device_id, now_ms);
        let device_supplies = self.supplies.entry(status.device_id.clone()).or_default();
        for supply in &status.supplies {
            let Some(level) = supply.percent.filter(|p| p.is_finite()) else {
                continue;
            };
            let level = level.clamp(0.0, 100.0);
            let waste = supply.supply_type.is_waste();
            if !device_supplies.contains_key(&supply.index)
                && device_supplies.len() >= MAX_SUPPLIES_PER_DEVICE
            {
                too_many_supplies(&status.device_id);
                continue;
            }
            let hist = device_supplies
                .entry(supply.index)
                .or_insert_with(|| SupplyHistory::new(waste));
            if hist.is_waste() != waste {
                // A different kind of supply now sits at this index.
                *hist = SupplyHistory::new(waste);
            }
            let key = depletion_key(&status.device_id, supply.index);
            match hist.observe(status.observed_at, level, &self.rules.forecast) {
                Observed::Stale => continue,
                Observed::Replaced => {
                    if self.open.clear(&key) {
                        let msg = if waste {
                            format!("{} was emptied, now {level:.1}% full", label(supply))
                        } else {
                            format!("{} was replaced, level now {level:.1}%", label(supply))
                        };
                        out.push(depletion_alert(
                            &src,
                            now_ms,
                            supply,
                            MaintenanceState::Cleared,
                            MaintenanceSeverity::Info,
                            level,
                            None,
                            msg,
                        ));
                    }
                    continue;
                }
                Observed::Recorded => {}
            }
            let threshold = self.rules.threshold_days;
            match hist.forecast(&self.rules.forecast) {
                Forecast::NotEnoughData => {}
                Forecast::Depleting { days, .. } if days < threshold => {
                    if self.open.raise(&key) {
                        let remaining = if waste { 100.0 - level } else { level };
                        let severity = if days < 1.0 || remaining <= CRITICAL_REMAINING_PCT {
                            MaintenanceSeverity::Critical
                        } else {
                            MaintenanceSeverity::Warning
                        };
                        let msg = if waste {
                            format!(
                                "{} at {level:.1}% full will be full in {days:.1} days",
                                label(supply)
                            )
                        } else {
                            format!(
                                "{} at {level:.1}% will be empty in {days:.1} days",
                                label(supply)
                            )
                        };
                        out.push(depletion_alert(
                            &src,
                            now_ms,
                            supply,
                            MaintenanceState::Raised,
                            severity,
                            level,
                            Some(days),
                            msg,
                        ));
                    }
                }
                Forecast::Depleting { days, .. } if days >= threshold * CLEAR_FACTOR => {
                    if self.open.clear(&key) {
                        let msg = format!(
                            "{} at {level:.1}% is no longer forecast to run out soon ({days:.1} days left)",
                            label(supply)
                        );
                        out.push(depletion_alert(
                            &src,
                            now_ms,
                            supply,
                            MaintenanceState::Cleared,
                            MaintenanceSeverity::Info,
                            level,
                            Some(days),
                            msg,
                        ));
                    }
                }
                // Between threshold and threshold × 1.2: keep whatever state holds.
                Forecast::Depleting { .. } => {}
                Forecast::NotDepleting => {
                    if self.open.clear(&key) {
                        let msg = format!(
                            "{} at {level:.1}% is no longer being used up",
                            label(supply)
                        );
                        out.push(depletion_alert(
                            &src,
                            now_ms,
                            supply,
                            MaintenanceState::Cleared,
                            MaintenanceSeverity::Info,
                            level,
                            None,
                            msg,
                        ));
                    }
                }
            }
        }
        out
    }

    /// Feed a heartbeat received at wall-clock `now_ms`; a silent device that
    /// speaks again clears its alert.
    pub(crate) fn on_heartbeat(
        &mut self,
        hb: &DeviceHeartbeat,
        now_ms: i64,
    ) -> Option<MaintenanceAlert> {
        let src = Source {
            tenant_id: &hb.tenant_id,
            connector_id: &hb.connector_id,
            device_id: &hb.device_id,
        };
        self.alive(&src, hb.observed_at, now_ms)
    }

    /// Feed a connector heartbeat received at wall-clock `now_ms`: every
    /// device it lists as reachable counts as having sent a heartbeat (the
    /// edge sends device heartbeats only on reachability changes). Devices
    /// listed as unreachable are left alone: their silence keeps growing.
    pub(crate) fn on_connector_heartbeat(
        &mut self,
        hb: &ConnectorHeartbeat,
        now_ms: i64,
    ) -> Vec<MaintenanceAlert> {
        hb.devices
            .iter()
            .filter(|d| d.reachable)
            .filter_map(|d| {
                let src = Source {
                    tenant_id: &hb.tenant_id,
                    connector_id: &hb.connector_id,
                    device_id: &d.device_id,
                };
                self.alive(&src, d.last_seen_at.unwrap_or(hb.observed_at), now_ms)
            })
            .collect()
    }

    /// A device is alive (observed at `observed_at`), as received at `now_ms`.
    fn alive(
        &mut self,
        src: &Source<'_>,
        observed_at: i64,
        now_ms: i64,
    ) -> Option<MaintenanceAlert> {
        let hb = src;
        self.seen(hb.device_id, now_ms);
        let previous = self.heartbeats.insert(
            hb.device_id.to_string(),
            LastHeartbeat {
                received_ms: now_ms,
                observed_at,
                tenant_id: hb.tenant_id.to_string(),
                connector_id: hb.connector_id.to_string(),
            },
        );
        let key = silent_key(hb.device_id);
        if !self.open.clear(&key) {
            return None;
        }
        // After a restart the previous receipt is unknown; the gap is then unknown too.
        let silent_for_s = previous.map(|p| (now_ms - p.received_ms).max(0) / 1000);
        let msg = match silent_for_s {
            Some(s) => format!(
                "Device {} is answering again after {s} s of silence",
                hb.device_id
            ),
            None => format!("Device {} is answering again", hb.device_id),
        };
        let mut a = base_alert(
            src,
            now_ms,
            key,
            MaintenanceKind::DeviceSilent,
            MaintenanceState::Cleared,
            MaintenanceSeverity::Info,
            msg,
        );
        a.silent_for_s = silent_for_s;
        Some(a)
    }

    /// Check every known device for silence at wall-clock `now_ms`.
    pub(crate) fn tick(&mut self, now_ms: i64) -> Vec<MaintenanceAlert> {
        self.expire(now_ms);
        let mut silent: Vec<(&String, &LastHeartbeat)> = self
            .heartbeats
            .iter()
            .filter(|(_, hb)| now_ms - hb.received_ms > self.rules.silent_after_ms)
            .collect();
        silent.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (device_id, hb) in silent {
            let key = silent_key(device_id);
            if !self.open.raise(&key) {
                continue;
            }
            let silent_for_s = (now_ms - hb.received_ms) / 1000;
            let msg = format!(
                "Device {device_id} has sent no heartbeat for {silent_for_s} s (last observed at {})",
                utc(hb.observed_at)
            );
            let src = Source {
                tenant_id: &hb.tenant_id,
                connector_id: &hb.connector_id,
                device_id,
            };
            let mut a = base_alert(
                &src,
                now_ms,
                key,
                MaintenanceKind::DeviceSilent,
                MaintenanceState::Raised,
                MaintenanceSeverity::Critical,
                msg,
            );
            a.silent_for_s = Some(silent_for_s);
            out.push(a);
        }
        out
    }
}

fn device_evicted(max_devices: usize) {
    static EVICTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = EVICTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    // Under a flood of new device ids, one line per thousand is enough.
    if n == 1 || n.is_multiple_of(1000) {
        tracing::warn!(
            max_devices,
            evicted_total = n,
            "alerter memory is full: forgot the least recently seen device (raise max_devices if the fleet is this large)"
        );
    }
    metrics::counter!("fleetpulse_alerter_devices_evicted_total").increment(1);
}

fn devices_expired(n: u64) {
    tracing::info!(devices = n, "forgot devices not seen for forget_after");
    metrics::counter!("fleetpulse_alerter_devices_expired_total").increment(n);
}

fn too_many_supplies(device_id: &str) {
    tracing::debug!(
        device = %crate::consumer::log_id(device_id),
        max = MAX_SUPPLIES_PER_DEVICE,
        "supply index ignored: the device has too many supplies"
    );
    metrics::counter!("fleetpulse_alerter_supplies_ignored_total").increment(1);
}

/// "Black Cartridge HP CF410A (supply 1)".
fn label(supply: &Supply) -> String {
    let desc = supply.description.trim();
    if desc.is_empty() {
        format!("Supply {}", supply.index)
    } else {
        format!("{desc} (supply {})", supply.index)
    }
}

fn base_alert(
    src: &Source<'_>,
    now_ms: i64,
    alert_key: String,
    kind: MaintenanceKind,
    state: MaintenanceState,
    severity: MaintenanceSeverity,
    message: String,
) -> MaintenanceAlert {
    MaintenanceAlert {
        event_id: fleetpulse_core::new_event_id(),
        tenant_id: src.tenant_id.to_string(),
        connector_id: src.connector_id.to_string(),
        device_id: src.device_id.to_string(),
        observed_at: now_ms,
        schema_version: SCHEMA_VERSION,
        alert_key,
        kind,
        state,
        severity,
        supply_index: None,
        supply_description: None,
        level_percent: None,
        days_to_empty: None,
        silent_for_s: None,
        message,
    }
}

#[allow(clippy::too_many_arguments)]
fn depletion_alert(
    src: &Source<'_>,
    now_ms: i64,
    supply: &Supply,
    state: MaintenanceState,
    severity: MaintenanceSeverity,
    level: f64,
    days: Option<f64>,
    message: String,
) -> MaintenanceAlert {
    let key = depletion_key(src.device_id, supply.index);
    let mut a = base_alert(
        src,
        now_ms,
        key,
        MaintenanceKind::ConsumableDepletion,
        state,
        severity,
        message,
    );
    a.supply_index = Some(supply.index);
    a.supply_description = Some(supply.description.clone());
    a.level_percent = Some(level);
    a.days_to_empty = days;
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::records::SupplyType;
    use fleetpulse_core::samples;

    const H: i64 = 3_600_000;
    const NOW: i64 = 1_800_000_000_000;

    fn monitor() -> Monitor {
        let c = AlerterConfig {
            heartbeat_interval: std::time::Duration::from_millis(1000),
            check_interval: std::time::Duration::from_millis(100),
            ..AlerterConfig::default()
        };
        Monitor::new(Rules::from_config(&c))
    }

    /// A status of SN-1 with one toner at `level` observed at hour `h`.
    fn status(h: i64, level: f64) -> DeviceStatus {
        let mut s = samples::device_status("SN-1");
        s.observed_at = h * H;
        s.supplies.truncate(1);
        s.supplies[0].percent = Some(level);
        s
    }

    fn heartbeat(device: &str) -> DeviceHeartbeat {
        samples::device_heartbeat(device)
    }

    #[test]
    fn open_alerts_raise_once_clear_once() {
        let mut o = OpenAlerts::default();
        assert!(o.raise("k"));
        assert!(!o.raise("k"), "raising an open alert again is a no-op");
        assert!(o.is_open("k"));
        assert!(o.clear("k"));
        assert!(!o.clear("k"), "clearing a closed alert is a no-op");
        assert!(o.raise("k"), "re-raise after clear");
    }

    #[test]
    fn depletion_raises_once_then_clears_on_replacement_and_re_raises() {
        let mut m = monitor();
        let mut raised = Vec::new();
        // Drains 2 points per 6 hours = 8/day; from ~40% that is ~5 days: below 7d.
        for (i, level) in [41.0, 39.0, 37.0, 35.0, 33.0, 31.0].into_iter().enumerate() {
            raised.extend(m.on_status(&status(6 * i as i64, level), NOW));
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        let a = &raised[0];
        assert_eq!(a.kind, MaintenanceKind::ConsumableDepletion);
        assert_eq!(a.state, MaintenanceState::Raised);
        assert_eq!(a.severity, MaintenanceSeverity::Warning);
        assert_eq!(a.alert_key, "SN-1/consumable_depletion/1");
        assert_eq!(a.supply_index, Some(1));
        assert_eq!(a.tenant_id, "tenant-a");
        assert_eq!(a.observed_at, NOW);
        // 4th reading: 35% at 8/day → 4.375 days.
        assert!((a.days_to_empty.unwrap() - 4.375).abs() < 1e-9, "{a:?}");
        assert_eq!(
            a.message,
            "Black Cartridge HP CF410A (supply 1) at 35.0% will be empty in 4.4 days"
        );

        let cleared = m.on_status(&status(40, 100.0), NOW);
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].state, MaintenanceState::Cleared);
        assert_eq!(cleared[0].alert_key, a.alert_key);
        assert_eq!(m.open_count(), 0);

        let mut again = Vec::new();
        for (i, level) in [92.0, 70.0, 48.0, 26.0].into_iter().enumerate() {
            again.extend(m.on_status(&status(40 + 6 * (i as i64 + 1), level), NOW));
        }
        assert_eq!(again.len(), 1, "re-raised after clear: {again:?}");
        assert_eq!(again[0].state, MaintenanceState::Raised);
        assert_eq!(
            again[0].severity,
            MaintenanceSeverity::Critical,
            "48% at ~71/day is < 1 day"
        );
    }

    #[test]
    fn depletion_clears_with_hysteresis_only() {
        let mut m = monitor();
        // 8/day from 46%: at the 4th reading 40% → 5 days → raised.
        for (i, level) in [46.0, 44.0, 42.0, 40.0].into_iter().enumerate() {
            m.on_status(&status(6 * i as i64, level), NOW);
        }
        assert_eq!(m.open_count(), 1);
        // Flat for a day: the slope shrinks; once the estimate passes 8.4 days it clears.
        let mut cleared = Vec::new();
        let mut h = 18;
        while cleared.is_empty() && h < 200 {
            h += 6;
            let out = m.on_status(&status(h, 40.0), NOW);
            for a in &out {
                if let Some(d) = a.days_to_empty {
                    assert!(d >= 7.0 * 1.2, "cleared inside the hysteresis band: {d}");
                }
            }
            cleared.extend(out);
        }
        assert_eq!(cleared.len(), 1);
        assert_eq!(cleared[0].state, MaintenanceState::Cleared);
    }

    #[test]
    fn waste_box_filling_raises() {
        let mut m = monitor();
        let mut out = Vec::new();
        for (i, level) in [80.0, 84.0, 88.0, 92.0].into_iter().enumerate() {
            let mut s = status(6 * i as i64, level);
            s.supplies[0].supply_type = SupplyType::WasteToner;
            s.supplies[0].description = "Waste Toner Box".into();
            out.extend(m.on_status(&s, NOW));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].message,
            "Waste Toner Box (supply 1) at 92.0% full will be full in 0.5 days"
        );
        assert_eq!(out[0].severity, MaintenanceSeverity::Critical);
    }

    #[test]
    fn supplies_without_percent_are_skipped() {
        let mut m = monitor();
        for i in 0..6 {
            let mut s = status(6 * i, 10.0 - i as f64);
            s.supplies[0].percent = None;
            assert!(m.on_status(&s, NOW).is_empty());
        }
        assert_eq!(m.open_count(), 0);
    }

    #[test]
    fn silence_raises_once_and_clears_on_heartbeat() {
        let mut m = monitor(); // silent after 3 × 1000 ms
        assert!(m.on_heartbeat(&heartbeat("SN-1"), NOW).is_none());
        assert!(m.on_heartbeat(&heartbeat("SN-2"), NOW).is_none());
        assert!(
            m.tick(NOW + 3000).is_empty(),
            "exactly 3 intervals is not yet silent"
        );
        m.on_heartbeat(&heartbeat("SN-2"), NOW + 2500);

        let raised = m.tick(NOW + 3001);
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].device_id, "SN-1");
        assert_eq!(raised[0].kind, MaintenanceKind::DeviceSilent);
        assert_eq!(raised[0].severity, MaintenanceSeverity::Critical);
        assert_eq!(raised[0].alert_key, "SN-1/device_silent");
        assert_eq!(raised[0].silent_for_s, Some(3));
        assert!(
            m.tick(NOW + 9000).iter().all(|a| a.device_id != "SN-1"),
            "raised once"
        );

        let cleared = m
            .on_heartbeat(&heartbeat("SN-1"), NOW + 10_000)
            .expect("cleared");
        assert_eq!(cleared.state, MaintenanceState::Cleared);
        assert_eq!(cleared.alert_key, "SN-1/device_silent");
        assert_eq!(cleared.silent_for_s, Some(10));
        assert!(m.on_heartbeat(&heartbeat("SN-1"), NOW + 10_500).is_none());

        let again = m.tick(NOW + 20_000);
        assert!(
            again
                .iter()
                .any(|a| a.device_id == "SN-1" && a.state == MaintenanceState::Raised),
            "re-raised after clear"
        );
    }

    #[test]
    fn connector_heartbeat_keeps_reachable_devices_alive() {
        use fleetpulse_core::records::DeviceLiveness;
        let mut m = monitor(); // silent after 3 × 1000 ms
        let chb = |reachable_1: bool| {
            let mut h = samples::connector_heartbeat("conn-1");
            h.devices = vec![
                DeviceLiveness {
                    device_id: "SN-1".into(),
                    reachable: reachable_1,
                    last_seen_at: Some(1_000),
                },
                DeviceLiveness {
                    device_id: "SN-2".into(),
                    reachable: true,
                    last_seen_at: None,
                },
            ];
            h
        };
        // A device first seen through a DeviceHeartbeat, then only through
        // connector heartbeats: never silent while listed as reachable.
        assert!(m.on_heartbeat(&heartbeat("SN-1"), NOW).is_none());
        assert!(m.on_connector_heartbeat(&chb(true), NOW + 2000).is_empty());
        assert!(m.on_connector_heartbeat(&chb(true), NOW + 4000).is_empty());
        assert!(
            m.tick(NOW + 6000).is_empty(),
            "both listed reachable 2 s ago"
        );
        // Listed as unreachable: its silence grows from its last sign of life.
        assert!(m.on_connector_heartbeat(&chb(false), NOW + 6500).is_empty());
        let raised = m.tick(NOW + 7001);
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].device_id, "SN-1");
        assert_eq!(raised[0].connector_id, "conn-1");
        // Reachable again in a connector heartbeat: cleared, once.
        let cleared = m.on_connector_heartbeat(&chb(true), NOW + 8000);
        assert_eq!(cleared.len(), 1, "{cleared:?}");
        assert_eq!(cleared[0].state, MaintenanceState::Cleared);
        assert_eq!(cleared[0].alert_key, "SN-1/device_silent");
        assert!(m.on_connector_heartbeat(&chb(true), NOW + 8500).is_empty());
    }

    #[test]
    fn replayed_open_alerts_are_not_raised_again_but_can_clear() {
        let mut m = monitor();
        let mut restored = samples::maintenance_alert("SN-1");
        restored.alert_key = silent_key("SN-1");
        restored.state = MaintenanceState::Raised;
        m.open_alerts_mut().replay(&restored);
        let cleared = m
            .on_heartbeat(&heartbeat("SN-1"), NOW)
            .expect("clears the restored alert");
        assert_eq!(cleared.silent_for_s, None);

        restored.state = MaintenanceState::Cleared;
        m.open_alerts_mut().replay(&restored);
        assert_eq!(m.open_count(), 0);
    }

    #[test]
    fn an_undelivered_alert_is_decided_again() {
        let mut m = monitor();
        m.on_heartbeat(&heartbeat("SN-1"), NOW);
        let raised = m.tick(NOW + 5000);
        assert_eq!(raised.len(), 1);
        // The raise was lost: undone, so the next tick raises it again.
        m.undo(&raised[0].alert_key, MaintenanceState::Raised);
        assert_eq!(m.open_count(), 0);
        let again = m.tick(NOW + 6000);
        assert_eq!(again.len(), 1, "raised again after a failed delivery");
        assert!(m.tick(NOW + 7000).is_empty());

        // The clear was lost: reopened, so the next heartbeat clears again.
        let cleared = m.on_heartbeat(&heartbeat("SN-1"), NOW + 8000).unwrap();
        assert_eq!(cleared.state, MaintenanceState::Cleared);
        m.undo(&cleared.alert_key, MaintenanceState::Cleared);
        assert_eq!(m.open_count(), 1);
        let cleared = m.on_heartbeat(&heartbeat("SN-1"), NOW + 8500);
        assert_eq!(cleared.map(|a| a.state), Some(MaintenanceState::Cleared));
        assert_eq!(m.open_count(), 0);
    }

    #[test]
    fn memory_is_capped_and_old_devices_are_forgotten() {
        let c = AlerterConfig {
            heartbeat_interval: std::time::Duration::from_millis(1000),
            check_interval: std::time::Duration::from_millis(100),
            max_devices: 3,
            forget_after: std::time::Duration::from_secs(60),
            ..AlerterConfig::default()
        };
        let mut m = Monitor::new(Rules::from_config(&c));
        for (i, d) in ["A", "B", "C"].iter().enumerate() {
            m.on_heartbeat(&heartbeat(d), NOW + i as i64);
        }
        // A is seen again, so B is the least recently seen when D arrives.
        m.on_heartbeat(&heartbeat("A"), NOW + 10);
        m.on_status(&status(1, 50.0), NOW + 11); // SN-1: evicts B
        assert_eq!(m.device_count(), 3);
        assert!(m.heartbeats.contains_key("A"));
        assert!(
            !m.heartbeats.contains_key("B"),
            "least recently seen forgotten"
        );
        assert!(m.supplies.contains_key("SN-1"));
        m.on_heartbeat(&heartbeat("E"), NOW + 12); // evicts C
        assert!(!m.heartbeats.contains_key("C"));
        assert_eq!(m.heartbeats.len() + m.supplies.len(), 3);

        // 1000 new ids later the memory is still 3 devices.
        for i in 0..1000 {
            m.on_heartbeat(&heartbeat(&format!("X{i}")), NOW + 20 + i);
        }
        assert_eq!(m.device_count(), 3);
        assert_eq!(m.heartbeats.len(), 3);
        assert!(m.supplies.is_empty());

        // Not seen for forget_after: forgotten by the next tick.
        let silent = m.tick(NOW + 5000);
        assert_eq!(silent.len(), 3, "still silent alerts while remembered");
        assert!(m.tick(NOW + 1020 + 61_000).is_empty());
        assert_eq!(m.device_count(), 0);
        assert!(m.heartbeats.is_empty());
        assert_eq!(m.open_count(), 3, "open alerts are kept");
    }

    #[test]
    fn supplies_per_device_are_capped() {
        let mut m = monitor();
        let mut s = status(1, 50.0);
        let one = s.supplies[0].clone();
        s.supplies = (0..200)
            .map(|i| {
                let mut x = one.clone();
                x.index = i;
                x
            })
            .collect();
        m.on_status(&s, NOW);
        assert_eq!(m.supplies["SN-1"].len(), MAX_SUPPLIES_PER_DEVICE);
    }
}
