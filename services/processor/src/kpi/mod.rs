//! Daily KPIs per device on event time, with watermarks and allowed lateness.
//!
//! The operator ([`KpiOperator`]) is fed records (`on_record`) and the
//! watermark (`on_watermark`: "no record older than this is expected any
//! more", normally the largest `observed_at` seen minus
//! `kpi.watermark_delay`). It produces rows for three tables:
//!
//! - `kpi_device_daily`: one row per device and UTC day, first emitted when
//!   the watermark passes the end of the day (`version` 1). Records of that
//!   day arriving later but within `kpi.allowed_lateness` update the state,
//!   and the next watermark emits the restated row with `version` + 1 (only
//!   if a figure changed). Queries take the highest version per
//!   (device_id, day). Once the watermark passes end + allowed lateness the
//!   day is final and its state is dropped (bounded memory).
//! - `late_records`: every record for a final day, with how late it was.
//!   Such records are never dropped silently: each is a row here, a log line
//!   and `fleetpulse_processor_late_records_total`.
//! - `usage_ledger` rows are not produced here; the daily counter figures
//!   reuse the ledger's logic ([`crate::ledger`]) with a daily period, so
//!   wraps, resets, swaps, duplicates and reordering are handled the same way.
//!
//! How each KPI is measured:
//!
//! - **Uptime %**: the day is 1440 minutes; a heartbeat or status marks the
//!   minutes it covers (`kpi.sample_interval`, clipped at midnight) as
//!   *seen*; a status with `hr_device_status = down` marks them *down*.
//!   Uptime = minutes seen and not down / 1440. Minute bitmaps make the
//!   result independent of arrival order and of duplicates.
//! - **Utilisation %**: minutes with `hr_printer_status = printing` / minutes
//!   seen (powered and answering).
//! - **Pages / media length**: usage of impression/sheet counters and of
//!   length counters (converted to metres) from `usage_counters`, per day;
//!   **job pages and area**: completed `job_record`s (latest record per job).
//! - **Consumables**: toner/ink used by jobs (`toner_g`, `ink_ml`); printhead
//!   agent from the cumulative `agent_used_ml` (as a counter); toner and ink
//!   cartridges as percent of capacity used (a refill is a counter reset).
//! - **Jobs**: distinct jobs completed / failed (failed, aborted, canceled).
//! - **Errors by class**: alerts opened, by alert code.
//! - **3D**: mean packing density and mean recycled material % of 3D jobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::NaiveDate;
use fleetpulse_core::config::ConfigError;
use fleetpulse_core::records::{
    AlertEvent, AlertTransition, CounterUnit, DeviceHeartbeat, DeviceStatus, HrDeviceStatus,
    HrPrinterStatus, JobCompletion, JobKind, JobRecord, SupplyType, UsageCounters,
};
use serde::{Deserialize, Serialize};

use crate::ledger::{ContractPeriod, CounterReading, LedgerConfig, UsageLedger};

#[cfg(test)]
mod tests;

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;
const MINUTES: usize = 1440;

/// Configuration of the KPI aggregates (`[kpi]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiConfig {
    /// The watermark trails the largest event time seen by this much
    /// (expected out-of-orderness).
    #[serde(with = "humantime_serde")]
    pub watermark_delay: Duration,
    /// How long after a day closed its records are still accepted (the day
    /// is then restated with a higher version). Later records go to
    /// `late_records`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Span of time one heartbeat or status sample vouches for (the poll
    /// interval of the edge).
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            watermark_delay: Duration::from_secs(5 * 60),
            allowed_lateness: Duration::from_secs(6 * 3600),
            sample_interval: Duration::from_secs(60),
        }
    }
}

impl KpiConfig {
    /// Reject contradictions, naming the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, r: &str| Err(ConfigError::Invalid(format!("kpi.{k}: {r}")));
        if self.sample_interval < Duration::from_secs(1)
            || self.sample_interval > Duration::from_secs(3600)
        {
            return bad("sample_interval", "must be between 1s and 1h");
        }
        if self.allowed_lateness > Duration::from_secs(31 * 86_400) {
            return bad(
                "allowed_lateness",
                "must be at most 31 days (open days are held in memory)",
            );
        }
        if self.watermark_delay > Duration::from_secs(86_400) {
            return bad("watermark_delay", "must be at most 1 day");
        }
        Ok(())
    }
}

/// A record the KPIs use, with its device already pseudonymised for the lake.
#[derive(Debug, Clone, PartialEq)]
pub enum KpiRecord {
    /// Device answered a poll.
    Heartbeat(DeviceHeartbeat),
    /// Status, supplies, printheads, build unit.
    Status(DeviceStatus),
    /// Cumulative counters.
    Counters(UsageCounters),
    /// Printer alert table change.
    Alert(AlertEvent),
    /// Print job.
    Job(JobRecord),
}

impl KpiRecord {
    fn envelope(&self) -> (&str, &str, i64, &'static str) {
        macro_rules! env {
            ($r:expr, $t:literal) => {
                (&$r.tenant_id[..], &$r.event_id[..], $r.observed_at, $t)
            };
        }
        match self {
            KpiRecord::Heartbeat(r) => env!(r, "device_heartbeat"),
            KpiRecord::Status(r) => env!(r, "device_status"),
            KpiRecord::Counters(r) => env!(r, "usage_counters"),
            KpiRecord::Alert(r) => env!(r, "alert_event"),
            KpiRecord::Job(r) => env!(r, "job_record"),
        }
    }
}

/// One row of `kpi_device_daily`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiDailyRow {
    /// Tenant.
    pub tenant_id: String,
    /// Device (lake pseudonym).
    pub device_id: String,
    /// UTC day.
    pub day: NaiveDate,
    /// Last model reported (status).
    pub model: Option<String>,
    /// Last country reported (status location, generalised).
    pub region: Option<String>,
    /// Minutes the device answered (heartbeat or status).
    pub minutes_seen: u32,
    /// Minutes seen and not down.
    pub minutes_up: u32,
    /// Minutes printing.
    pub minutes_printing: u32,
    /// Minutes up / 1440, in percent.
    pub uptime_pct: f64,
    /// Minutes printing / minutes seen, in percent (None if never seen).
    pub utilisation_pct: Option<f64>,
    /// Impressions and sheets counted by the device's counters.
    pub pages_counted: i64,
    /// Media length counted by length counters, metres.
    pub media_length_m: f64,
    /// Pages of completed jobs (pages × copies).
    pub job_pages: i64,
    /// Media area of completed jobs, m².
    pub job_area_m2: f64,
    /// Toner used by jobs, g.
    pub toner_g: f64,
    /// Ink used by jobs, ml.
    pub ink_ml: f64,
    /// Printhead agent used, ml (cumulative printhead counters).
    pub agent_ml: f64,
    /// Toner cartridge capacity used, percent points (sum over cartridges).
    pub toner_used_pct: f64,
    /// Ink cartridge capacity used, percent points.
    pub ink_used_pct: f64,
    /// Distinct jobs completed.
    pub jobs_completed: u32,
    /// Distinct jobs failed, aborted or canceled.
    pub jobs_failed: u32,
    /// Alerts opened, by alert code.
    pub errors_by_class: BTreeMap<String, u32>,
    /// Mean packing density of 3D jobs, percent.
    pub packing_density_pct: Option<f64>,
    /// Mean recycled material of 3D jobs, percent.
    pub recycled_material_pct: Option<f64>,
    /// Distinct records that went into the row.
    pub records: u32,
    /// 1 at first emission, +1 per restatement.
    pub version: u32,
}

/// One row of `late_records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateRecord {
    /// Table (record type) of the record.
    pub record_type: String,
    /// Its event id.
    pub event_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Device (lake pseudonym).
    pub device_id: String,
    /// Its event time.
    pub observed_at: i64,
    /// Watermark when it arrived.
    pub watermark: i64,
    /// How far past the end of its day's allowance it arrived, ms.
    pub late_by_ms: i64,
}

/// What the operator produces.
#[derive(Debug, Clone, PartialEq)]
pub enum KpiOutput {
    /// A new or restated daily row.
    Daily(KpiDailyRow),
    /// A record that arrived after its day was final.
    Late(LateRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Minutes([u64; MINUTES.div_ceil(64)]);

impl Minutes {
    fn set(&mut self, from: usize, to: usize) {
        for m in from..to.min(MINUTES) {
            self.0[m / 64] |= 1 << (m % 64);
        }
    }
    fn count_and_not(&self, other: Option<&Minutes>) -> u32 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.map_or(0, |o| o.0[i])).count_ones())
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct JobFacts {
    observed_at: i64,
    kind: Option<JobKind>,
    status: Option<JobCompletion>,
    pages: i64,
    area_m2: f64,
    toner_g: f64,
    ink_ml: f64,
    packing: Option<f64>,
    recycled: Option<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DayState {
    events: BTreeSet<String>,
    seen: Minutes,
    down: Minutes,
    printing: Minutes,
    /// Counter name -> (unit, usage this day).
    counters: BTreeMap<String, (String, i64)>,
    jobs: BTreeMap<String, JobFacts>,
    errors: BTreeMap<String, u32>,
    emitted: Option<KpiDailyRow>,
    dirty: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct DeviceInfo {
    model: Option<(i64, String)>,
    region: Option<(i64, String)>,
}

/// The KPI operator.
#[derive(Debug, Serialize, Deserialize)]
pub struct KpiOperator {
    /// Not part of the saved state: set again from the configuration.
    #[serde(skip)]
    cfg: KpiConfig,
    watermark: i64,
    #[serde(with = "crate::derived::pairs")]
    days: BTreeMap<(NaiveDate, String, String), DayState>,
    #[serde(with = "crate::derived::pairs")]
    devices: HashMap<(String, String), DeviceInfo>,
    counters: UsageLedger,
}

fn day_of(ms: i64) -> Option<NaiveDate> {
    ContractPeriod::Daily.start_of(ms)
}

fn day_start_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(i64::MIN)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl KpiOperator {
    /// A new operator; the watermark starts at the beginning of time.
    pub fn new(cfg: KpiConfig) -> KpiOperator {
        KpiOperator {
            cfg,
            watermark: i64::MIN,
            days: BTreeMap::new(),
            devices: HashMap::new(),
            counters: UsageLedger::new(Self::counter_config()),
        }
    }

    fn counter_config() -> LedgerConfig {
        LedgerConfig {
            period: ContractPeriod::Daily,
            ..LedgerConfig::default()
        }
    }

    /// Set the configuration again after restoring saved state (the
    /// configuration is not part of the state).
    pub fn reconfigure(&mut self, cfg: KpiConfig) {
        self.cfg = cfg;
        self.counters.reconfigure(Self::counter_config());
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Device-days held in memory.
    pub fn open_days(&self) -> usize {
        self.days.len()
    }

    fn is_final(&self, day: NaiveDate) -> bool {
        let end = day_start_ms(day).saturating_add(DAY_MS);
        self.watermark >= end.saturating_add(ms(self.cfg.allowed_lateness))
    }

    /// Take one record; `device_id` is the lake pseudonym of its device.
    /// Returns a `late_records` row when its day is already final.
    pub fn on_record(&mut self, device_id: &str, record: KpiRecord) -> Vec<KpiOutput> {
        let (tenant, event_id, at, table) = record.envelope();
        let Some(day) = day_of(at) else {
            return Vec::new();
        };
        if self.is_final(day) {
            let end = day_start_ms(day) + DAY_MS + ms(self.cfg.allowed_lateness);
            let late = LateRecord {
                record_type: table.to_string(),
                event_id: event_id.to_string(),
                tenant_id: tenant.to_string(),
                device_id: device_id.to_string(),
                observed_at: at,
                watermark: self.watermark,
                late_by_ms: self.watermark.saturating_sub(end),
            };
            late_record(&late);
            return vec![KpiOutput::Late(late)];
        }
        let (tenant, event_id) = (tenant.to_string(), event_id.to_string());
        let key = (day, tenant.clone(), device_id.to_string());
        if !self
            .days
            .entry(key.clone())
            .or_default()
            .events
            .insert(event_id)
        {
            return Vec::new();
        }
        let dev_key = (tenant.clone(), device_id.to_string());
        let cover = self.cfg.sample_interval.as_millis().div_ceil(60_000) as usize;
        let minute =
            (at.saturating_sub(day_start_ms(day)) / MINUTE_MS).clamp(0, MINUTES as i64) as usize;
        let mut readings = Vec::new();
        {
            let st = self.days.entry(key.clone()).or_default();
            st.dirty = true;
            match &record {
                KpiRecord::Heartbeat(_) => st.seen.set(minute, minute + cover),
                KpiRecord::Status(s) => {
                    st.seen.set(minute, minute + cover);
                    if s.hr_device_status == Some(HrDeviceStatus::Down) {
                        st.down.set(minute, minute + cover);
                    }
                    if s.hr_printer_status == Some(HrPrinterStatus::Printing) {
                        st.printing.set(minute, minute + cover);
                    }
                    let info = self.devices.entry(dev_key.clone()).or_default();
                    if let Some(m) = &s.model {
                        if info.model.as_ref().is_none_or(|(t, _)| *t <= at) {
                            info.model = Some((at, m.clone()));
                        }
                    }
                    if let Some(c) = s
                        .sys_location
                        .as_deref()
                        .and_then(crate::privacy::country_code)
                    {
                        if info.region.as_ref().is_none_or(|(t, _)| *t <= at) {
                            info.region = Some((at, c.to_string()));
                        }
                    }
                    readings.extend(status_counters(s));
                }
                KpiRecord::Counters(c) => readings.extend(marker_counters(c)),
                KpiRecord::Alert(a) => {
                    if a.transition == AlertTransition::Opened {
                        *st.errors.entry(a.code.clone()).or_insert(0) += 1;
                    }
                }
                KpiRecord::Job(j) => {
                    let facts = job_facts(j);
                    let keep = st
                        .jobs
                        .get(&j.job_id)
                        .is_none_or(|old| old.observed_at <= facts.observed_at);
                    if keep {
                        st.jobs.insert(j.job_id.clone(), facts);
                    }
                }
            }
        }
        for (counter, unit, value) in readings {
            let reading = CounterReading {
                tenant_id: tenant.clone(),
                device_id: device_id.to_string(),
                serial: None,
                counter,
                unit,
                observed_at: at,
                event_id: record.envelope().1.to_string(),
                value,
                mark: None,
            };
            for row in self.counters.on_reading(reading).unwrap_or_default() {
                let k = (row.period_start, row.tenant_id, row.device_id);
                // A day already final keeps its figure (cannot happen: a
                // reading only changes its own day and later ones).
                if let Some(st) = self.days.get_mut(&k) {
                    st.counters.insert(row.counter, (row.unit, row.quantity));
                    st.dirty = true;
                }
            }
        }
        Vec::new()
    }

    /// Advance the watermark (it never goes back): emit rows of days that
    /// closed or changed, and drop days that became final.
    pub fn on_watermark(&mut self, watermark_ms: i64) -> Vec<KpiOutput> {
        self.watermark = self.watermark.max(watermark_ms);
        let mut out = Vec::new();
        let mut finals = Vec::new();
        for (key, st) in &mut self.days {
            let (day, tenant, device) = key;
            let closed = self.watermark >= day_start_ms(*day).saturating_add(DAY_MS);
            if !closed {
                continue;
            }
            if st.dirty {
                st.dirty = false;
                let info = self.devices.get(&(tenant.clone(), device.clone()));
                let mut row = daily_row(key, st, info);
                let prev = st.emitted.as_ref();
                let changed = prev.is_none_or(|p| {
                    let mut p = p.clone();
                    p.version = row.version;
                    p != row
                });
                if changed {
                    row.version = prev.map_or(1, |p| p.version + 1);
                    st.emitted = Some(row.clone());
                    out.push(KpiOutput::Daily(row));
                }
            }
            let end = day_start_ms(*day) + DAY_MS + ms(self.cfg.allowed_lateness);
            if self.watermark >= end {
                finals.push(key.clone());
            }
        }
        for k in finals {
            self.days.remove(&k);
        }
        // Counter readings of final days are no longer needed except the
        // last one per series (the next day's baseline).
        let horizon = self
            .watermark
            .saturating_sub(ms(self.cfg.allowed_lateness) + DAY_MS);
        self.counters.close_before(horizon);
        out
    }
}

fn daily_row(
    key: &(NaiveDate, String, String),
    st: &DayState,
    info: Option<&DeviceInfo>,
) -> KpiDailyRow {
    let minutes_seen = st.seen.count_and_not(None);
    let minutes_up = st.seen.count_and_not(Some(&st.down));
    let minutes_printing = st.printing.count_and_not(None);
    let mut row = KpiDailyRow {
        tenant_id: key.1.clone(),
        device_id: key.2.clone(),
        day: key.0,
        model: info.and_then(|i| i.model.as_ref()).map(|m| m.1.clone()),
        region: info.and_then(|i| i.region.as_ref()).map(|m| m.1.clone()),
        minutes_seen,
        minutes_up,
        minutes_printing,
        uptime_pct: f64::from(minutes_up) * 100.0 / MINUTES as f64,
        utilisation_pct: (minutes_seen > 0)
            .then(|| f64::from(minutes_printing) * 100.0 / f64::from(minutes_seen)),
        pages_counted: 0,
        media_length_m: 0.0,
        job_pages: 0,
        job_area_m2: 0.0,
        toner_g: 0.0,
        ink_ml: 0.0,
        agent_ml: 0.0,
        toner_used_pct: 0.0,
        ink_used_pct: 0.0,
        jobs_completed: 0,
        jobs_failed: 0,
        errors_by_class: st.errors.clone(),
        packing_density_pct: None,
        recycled_material_pct: None,
        records: st.events.len() as u32,
        version: 0,
    };
    for (name, (unit, q)) in &st.counters {
        let q = *q;
        if name.starts_with("marker") {
            match unit.as_str() {
                "impressions" | "sheets" => row.pages_counted += q,
                u => row.media_length_m += metres(u, q),
            }
        } else if name.starts_with("printhead.") {
            row.agent_ml += q as f64 / 1000.0;
        } else if name.starts_with("supply.toner") {
            row.toner_used_pct += q as f64 / 100.0;
        } else if name.starts_with("supply.ink") {
            row.ink_used_pct += q as f64 / 100.0;
        }
    }
    let (mut packing, mut recycled) = (Vec::new(), Vec::new());
    for j in st.jobs.values() {
        match j.status {
            Some(JobCompletion::Completed) => {
                row.jobs_completed += 1;
                row.job_pages += j.pages;
                row.job_area_m2 += j.area_m2;
                row.toner_g += j.toner_g;
                row.ink_ml += j.ink_ml;
                if j.kind == Some(JobKind::Print3d) {
                    packing.extend(j.packing);
                    recycled.extend(j.recycled);
                }
            }
            Some(JobCompletion::Failed | JobCompletion::Aborted | JobCompletion::Canceled) => {
                row.jobs_failed += 1
            }
            _ => {}
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    row.packing_density_pct = mean(&packing);
    row.recycled_material_pct = mean(&recycled);
    row
}

fn metres(unit: &str, q: i64) -> f64 {
    let q = q as f64;
    match unit {
        "meters" => q,
        "feet" => q * 0.3048,
        "micrometers" => q / 1e6,
        "tenThousandthsOfInches" => q * 2.54e-6,
        _ => 0.0,
    }
}

fn unit_name(u: CounterUnit) -> String {
    serde_json::to_value(u)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn marker_counters(c: &UsageCounters) -> Vec<(String, String, i64)> {
    c.markers
        .iter()
        .filter(|m| m.life_count >= 0)
        .map(|m| {
            let unit = unit_name(m.unit);
            (
                format!("marker{}.{unit}", m.marker_index),
                unit,
                m.life_count,
            )
        })
        .collect()
}

/// Cumulative values hidden in a status: printhead agent used (µl) and
/// cartridge capacity used (basis points; a refill drops it = a reset).
fn status_counters(s: &DeviceStatus) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for p in &s.printheads {
        if let Some(ml) = p.agent_used_ml.filter(|v| v.is_finite() && *v >= 0.0) {
            out.push((
                format!("printhead.{}.agent", p.printhead_id),
                "microliters".into(),
                (ml * 1000.0).round() as i64,
            ));
        }
    }
    for sp in &s.supplies {
        let kind = match sp.supply_type {
            SupplyType::Toner | SupplyType::TonerCartridge | SupplyType::MatteToner => "toner",
            SupplyType::Ink | SupplyType::InkCartridge | SupplyType::MatteInk => "ink",
            _ => continue,
        };
        let used_bp = match (sp.level, sp.max_capacity) {
            (Some(l), Some(m)) if m > 0 && (0..=m).contains(&l) => {
                Some(i64::from(m - l) * 10_000 / i64::from(m))
            }
            _ => sp
                .percent
                .filter(|p| (0.0..=100.0).contains(p))
                .map(|p| ((100.0 - p) * 100.0).round() as i64),
        };
        if let Some(bp) = used_bp {
            out.push((
                format!("supply.{kind}.{}", sp.index),
                "basisPoints".into(),
                bp,
            ));
        }
    }
    out
}

fn job_facts(j: &JobRecord) -> JobFacts {
    let copies = i64::from(j.copies.unwrap_or(1).max(1));
    JobFacts {
        observed_at: j.observed_at,
        kind: Some(j.kind),
        status: Some(j.completion_status),
        pages: j.pages.unwrap_or(0).max(0).saturating_mul(copies),
        area_m2: j.media_area_m2.filter(|v| v.is_finite()).unwrap_or(0.0),
        toner_g: j.toner_g.filter(|v| v.is_finite()).unwrap_or(0.0),
        ink_ml: j.ink_ml.filter(|v| v.is_finite()).unwrap_or(0.0),
        packing: j.packing_density_pct.filter(|v| v.is_finite()),
        recycled: j.recycled_material_pct.filter(|v| v.is_finite()),
    }
}

fn late_record(l: &LateRecord) {
    tracing::warn!(
        record_type = %l.record_type,
        event_id = %l.event_id,
        observed_at = l.observed_at,
        watermark = l.watermark,
        late_by_ms = l.late_by_ms,
        "record arrived after its day was final; written to late_records"
    );
    metrics::counter!("fleetpulse_processor_late_records_total", "record_type" => l.record_type.clone())
        .increment(1);
}
