//! Derived tables: the KPI, ledger and benchmark operators behind one
//! `on_record` / `on_watermark` interface, and their Parquet output.
//!
//! [`DerivedOperator`] takes decoded records and pseudonymises the device
//! for each purpose: the lake tables (`kpi_device_daily`, `usage_ledger`,
//! `late_records`) use the lake key, exactly like the raw lake tables, so
//! they join; the benchmark sees only pseudonyms made with the benchmark key
//! ([`BenchmarkKey`], applied to the tenant and to the lake pseudonym), which
//! cannot be linked to the lake without that key. Raw ids never leave this
//! module, and the lake's anonymised rows are enough to recompute every
//! derived table.
//!
//! Monthly benchmark metrics per device are built from the *final* daily KPI
//! rows (latest version of each day): `pages` (sum of counted pages),
//! `uptime_pct` (mean over the days with a row) and `utilisation_pct`
//! (printing minutes / minutes seen). A month goes to the benchmark once its
//! last day is final, so benchmark months are never restated by KPI data.
//!
//! [`write_tables`] writes rows as zstd Parquet under
//! `<lake>/<table>/date=YYYY-MM-DD/part-derived-<hash>.parquet`, the name
//! being a hash of the rows: a replay that produces the same rows finds the
//! file present and writes nothing; rows carry keys and versions, so readers
//! keep the highest version per key and any duplicate rows are harmless.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::types::Value;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use fleetpulse_core::records::{
    AlertEvent, DeviceHeartbeat, DeviceStatus, JobRecord, UsageCounters,
};
use fleetpulse_core::schema::RecordType;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::benchmark::{month_of, BenchmarkOperator, BenchmarkRow, DeviceMonth};
use crate::kpi::{KpiDailyRow, KpiOperator, KpiOutput, KpiRecord, LateRecord};
use crate::ledger::{CounterReading, LedgerRow, Refused, UsageLedger};
use crate::privacy::keys::{BenchmarkIdentity, BenchmarkKey, PurposeKey};
use crate::{LakeError, ProcessorConfig};

pub mod runner;
#[cfg(test)]
mod tests;

/// Serde of maps whose keys are not strings (tuples): as a list of pairs.
pub(crate) mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<'a, S, M, K, V>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
    {
        s.collect_seq(map)
    }

    pub(crate) fn deserialize<'de, D, M, K, V>(d: D) -> Result<M, D::Error>
    where
        D: Deserializer<'de>,
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// Table of daily KPIs per device.
pub const TABLE_KPI: &str = "kpi_device_daily";
/// Table of records that came after their day was final.
pub const TABLE_LATE: &str = "late_records";
/// Table of cohort benchmarks.
pub const TABLE_BENCHMARK: &str = "benchmark_cohort_monthly";
/// Table of billable usage.
pub const TABLE_LEDGER: &str = "usage_ledger";

/// A row of one of the derived tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// `kpi_device_daily`.
    Kpi(KpiDailyRow),
    /// `late_records`.
    Late(LateRecord),
    /// `benchmark_cohort_monthly`.
    Benchmark(BenchmarkRow),
    /// `usage_ledger`.
    Ledger(LedgerRow),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DeviceMonthAcc {
    identity: Option<BenchmarkIdentity>,
    days: BTreeMap<NaiveDate, KpiDailyRow>,
}

/// The derived-tables operator.
#[derive(Debug)]
pub struct DerivedOperator {
    lake_key: PurposeKey,
    bench_key: Option<BenchmarkKey>,
    kpi: KpiOperator,
    ledger: UsageLedger,
    benchmark: Option<BenchmarkOperator>,
    months: BTreeMap<(NaiveDate, String, String), DeviceMonthAcc>,
    lateness_ms: i64,
    delay_ms: i64,
    max_seen: i64,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl DerivedOperator {
    /// Operators configured from `config`, with the keys from
    /// [`crate::privacy::keys::resolve_keys`]. Without a benchmark key there
    /// are no benchmark rows.
    pub fn new(
        config: &ProcessorConfig,
        lake_key: PurposeKey,
        bench_key: Option<BenchmarkKey>,
    ) -> DerivedOperator {
        let lateness_ms = ms(config.kpi.allowed_lateness);
        DerivedOperator {
            benchmark: bench_key
                .as_ref()
                .map(|_| BenchmarkOperator::new(config.benchmark.clone(), lateness_ms)),
            lake_key,
            bench_key,
            kpi: KpiOperator::new(config.kpi.clone()),
            ledger: UsageLedger::new(config.ledger.clone()),
            months: BTreeMap::new(),
            lateness_ms,
            delay_ms: ms(config.kpi.watermark_delay),
            max_seen: i64::MIN,
        }
    }

    /// The operators' state, to save (keys and configuration are not part
    /// of it). [`DerivedOperator::restore`] takes it back.
    pub fn state(&self) -> DerivedStateRef<'_> {
        DerivedStateRef {
            kpi: &self.kpi,
            ledger: &self.ledger,
            benchmark: self.benchmark.as_ref(),
            months: &self.months,
            max_seen: self.max_seen,
        }
    }

    /// An operator configured from `config` (like [`DerivedOperator::new`])
    /// that continues from a saved `state`: open days, counters, published
    /// versions and the watermark carry on where they were.
    pub fn restore(
        config: &ProcessorConfig,
        lake_key: PurposeKey,
        bench_key: Option<BenchmarkKey>,
        state: DerivedState,
    ) -> DerivedOperator {
        let mut op = DerivedOperator::new(config, lake_key, bench_key);
        let DerivedState {
            mut kpi,
            mut ledger,
            benchmark,
            months,
            max_seen,
        } = state;
        kpi.reconfigure(config.kpi.clone());
        ledger.reconfigure(config.ledger.clone());
        op.kpi = kpi;
        op.ledger = ledger;
        if op.benchmark.is_some() {
            if let Some(mut b) = benchmark {
                b.reconfigure(config.benchmark.clone(), op.lateness_ms);
                op.benchmark = Some(b);
            }
            op.months = months;
        }
        op.max_seen = max_seen;
        op
    }

    /// Take one decoded record of the contract (other types are ignored).
    pub fn on_value(&mut self, t: RecordType, value: &Value) -> Vec<Output> {
        let record = match t {
            RecordType::DeviceHeartbeat => {
                apache_avro::from_value::<DeviceHeartbeat>(value).map(KpiRecord::Heartbeat)
            }
            RecordType::DeviceStatus => {
                apache_avro::from_value::<DeviceStatus>(value).map(KpiRecord::Status)
            }
            RecordType::UsageCounters => {
                apache_avro::from_value::<UsageCounters>(value).map(KpiRecord::Counters)
            }
            RecordType::AlertEvent => {
                apache_avro::from_value::<AlertEvent>(value).map(KpiRecord::Alert)
            }
            RecordType::JobRecord => {
                apache_avro::from_value::<JobRecord>(value).map(KpiRecord::Job)
            }
            _ => return Vec::new(),
        };
        match record {
            Ok(r) => self.on_record(r),
            Err(e) => {
                tracing::warn!(record_type = t.name(), error = %e, "record not usable for derived tables");
                metrics::counter!("fleetpulse_processor_derived_skipped_total").increment(1);
                Vec::new()
            }
        }
    }

    /// Take one record (device ids raw, as decoded).
    pub fn on_record(&mut self, record: KpiRecord) -> Vec<Output> {
        let (tenant, raw_device, at) = match &record {
            KpiRecord::Heartbeat(r) => (&r.tenant_id, &r.device_id, r.observed_at),
            KpiRecord::Status(r) => (&r.tenant_id, &r.device_id, r.observed_at),
            KpiRecord::Counters(r) => (&r.tenant_id, &r.device_id, r.observed_at),
            KpiRecord::Alert(r) => (&r.tenant_id, &r.device_id, r.observed_at),
            KpiRecord::Job(r) => (&r.tenant_id, &r.device_id, r.observed_at),
        };
        let (tenant, raw_device) = (tenant.clone(), raw_device.clone());
        self.max_seen = self.max_seen.max(at);
        let device = self.lake_key.at(at).pseudonymize("device_id", &raw_device);
        if let (Some(k), Some(month)) = (&self.bench_key, month_of(at)) {
            let acc = self
                .months
                .entry((month, tenant.clone(), device.clone()))
                .or_default();
            if acc.identity.is_none() {
                // From the lake pseudonym, not the raw id: the benchmark key
                // still makes it unlinkable, and the lake alone suffices to
                // rebuild the derived tables.
                acc.identity = Some(k.identify(at, &tenant, &device));
            }
        }
        let mut out = Vec::new();
        let readings = ledger_readings(&record, &tenant, &device);
        let late = self.kpi.on_record(&device, record);
        let is_late = !late.is_empty();
        out.extend(late.into_iter().map(kpi_output));
        if !is_late {
            for r in readings {
                match self.ledger.on_reading(r) {
                    Ok(rows) => out.extend(rows.into_iter().map(Output::Ledger)),
                    Err(reason) => ledger_refused(reason),
                }
            }
        }
        out
    }

    /// Advance the watermark to `max observed_at - kpi.watermark_delay`.
    pub fn advance(&mut self) -> Vec<Output> {
        if self.max_seen == i64::MIN {
            return Vec::new();
        }
        self.on_watermark(self.max_seen.saturating_sub(self.delay_ms))
    }

    /// Advance the watermark: closed and restated days, benchmark months.
    pub fn on_watermark(&mut self, watermark_ms: i64) -> Vec<Output> {
        let mut out = Vec::new();
        for o in self.kpi.on_watermark(watermark_ms) {
            if let KpiOutput::Daily(row) = &o {
                if let Some(month) = NaiveDate::from_ymd_opt(
                    chrono::Datelike::year(&row.day),
                    chrono::Datelike::month(&row.day),
                    1,
                ) {
                    if let Some(acc) =
                        self.months
                            .get_mut(&(month, row.tenant_id.clone(), row.device_id.clone()))
                    {
                        acc.days.insert(row.day, row.clone());
                    }
                }
            }
            out.push(kpi_output(o));
        }
        let watermark = self.kpi.watermark();
        self.ledger
            .close_before(watermark.saturating_sub(self.lateness_ms));
        if let Some(bench) = &mut self.benchmark {
            let closed: Vec<_> = self
                .months
                .keys()
                .filter(|(m, _, _)| {
                    let end = m
                        .checked_add_months(chrono::Months::new(1))
                        .and_then(|e| e.and_hms_opt(0, 0, 0))
                        .map(|t| t.and_utc().timestamp_millis())
                        .unwrap_or(i64::MAX);
                    watermark >= end.saturating_add(self.lateness_ms)
                })
                .cloned()
                .collect();
            for k in closed {
                if let Some(acc) = self.months.remove(&k) {
                    for d in device_months(k.0, acc) {
                        bench.add(d);
                    }
                }
            }
            out.extend(
                bench
                    .on_watermark(watermark)
                    .into_iter()
                    .map(Output::Benchmark),
            );
        }
        out
    }
}

/// Borrowed view of a [`DerivedOperator`]'s state, for saving.
#[derive(Debug, Serialize)]
pub struct DerivedStateRef<'a> {
    kpi: &'a KpiOperator,
    ledger: &'a UsageLedger,
    benchmark: Option<&'a BenchmarkOperator>,
    #[serde(serialize_with = "months_ref")]
    months: &'a BTreeMap<(NaiveDate, String, String), DeviceMonthAcc>,
    max_seen: i64,
}

fn months_ref<S: serde::Serializer>(
    m: &&BTreeMap<(NaiveDate, String, String), DeviceMonthAcc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    pairs::serialize(*m, s)
}

/// Saved state of a [`DerivedOperator`] (see [`DerivedOperator::restore`]).
#[derive(Debug, Deserialize)]
pub struct DerivedState {
    kpi: KpiOperator,
    ledger: UsageLedger,
    benchmark: Option<BenchmarkOperator>,
    #[serde(with = "pairs")]
    months: BTreeMap<(NaiveDate, String, String), DeviceMonthAcc>,
    max_seen: i64,
}

fn ledger_refused(reason: Refused) {
    let reason = match reason {
        // Redelivery is normal (at-least-once transport): debug only.
        Refused::Duplicate => {
            tracing::debug!("duplicate counter reading ignored by the ledger");
            "duplicate"
        }
        Refused::Invalid => {
            tracing::warn!(
                "counter reading with a negative value or impossible time ignored by the ledger"
            );
            "invalid"
        }
        Refused::Late => {
            tracing::warn!("counter reading for a closed contract period ignored by the ledger");
            "late"
        }
    };
    metrics::counter!("fleetpulse_processor_ledger_refused_total", "reason" => reason).increment(1);
}

fn kpi_output(o: KpiOutput) -> Output {
    match o {
        KpiOutput::Daily(r) => Output::Kpi(r),
        KpiOutput::Late(r) => Output::Late(r),
    }
}

/// Cumulative counters to bill: marker counters (pages, media length) and
/// printhead agent (ink volume, µl) of large-format and 3D devices.
fn ledger_readings(record: &KpiRecord, tenant: &str, device: &str) -> Vec<CounterReading> {
    let base = |event_id: &str, at: i64, counter: String, unit: &str, value: i64| CounterReading {
        tenant_id: tenant.to_string(),
        device_id: device.to_string(),
        serial: None,
        counter,
        unit: unit.to_string(),
        observed_at: at,
        event_id: event_id.to_string(),
        value,
        mark: None,
    };
    match record {
        KpiRecord::Counters(c) => c
            .markers
            .iter()
            .map(|m| {
                let unit = serde_json::to_value(m.unit)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "unknown".into());
                base(
                    &c.event_id,
                    c.observed_at,
                    format!("marker{}.{unit}", m.marker_index),
                    &unit,
                    m.life_count,
                )
            })
            .collect(),
        KpiRecord::Status(s) => s
            .printheads
            .iter()
            .filter_map(|p| {
                let ml = p.agent_used_ml.filter(|v| v.is_finite() && *v >= 0.0)?;
                Some(base(
                    &s.event_id,
                    s.observed_at,
                    format!("printhead.{}.agent", p.printhead_id),
                    "microliters",
                    (ml * 1000.0).round() as i64,
                ))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A device's monthly benchmark metrics from its final daily rows.
fn device_months(month: NaiveDate, acc: DeviceMonthAcc) -> Vec<DeviceMonth> {
    let Some(identity) = acc.identity else {
        return Vec::new();
    };
    let last = acc.days.values().next_back();
    let (Some(model), Some(region)) = (
        last.and_then(|r| r.model.clone()),
        last.and_then(|r| r.region.clone()),
    ) else {
        return Vec::new();
    };
    if acc.days.is_empty() {
        return Vec::new();
    }
    let n = acc.days.len() as f64;
    let pages: i64 = acc.days.values().map(|r| r.pages_counted).sum();
    let uptime = acc.days.values().map(|r| r.uptime_pct).sum::<f64>() / n;
    let seen: u32 = acc.days.values().map(|r| r.minutes_seen).sum();
    let printing: u32 = acc.days.values().map(|r| r.minutes_printing).sum();
    let mut metrics = vec![("pages", pages as f64), ("uptime_pct", uptime)];
    if seen > 0 {
        metrics.push((
            "utilisation_pct",
            f64::from(printing) * 100.0 / f64::from(seen),
        ));
    }
    metrics
        .into_iter()
        .map(|(metric, value)| DeviceMonth {
            identity: identity.clone(),
            model: model.clone(),
            region: region.clone(),
            month,
            metric: metric.into(),
            value,
        })
        .collect()
}

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    )
}

/// Arrow schema of a derived table.
pub fn schema(table: &str) -> Option<SchemaRef> {
    use DataType::*;
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    let fields = match table {
        TABLE_KPI => vec![
            f("tenant_id", Utf8, false),
            f("device_id", Utf8, false),
            f("day", Date32, false),
            f("model", Utf8, true),
            f("region", Utf8, true),
            f("minutes_seen", Int32, false),
            f("minutes_up", Int32, false),
            f("minutes_printing", Int32, false),
            f("uptime_pct", Float64, false),
            f("utilisation_pct", Float64, true),
            f("pages_counted", Int64, false),
            f("media_length_m", Float64, false),
            f("job_pages", Int64, false),
            f("job_area_m2", Float64, false),
            f("toner_g", Float64, false),
            f("ink_ml", Float64, false),
            f("agent_ml", Float64, false),
            f("toner_used_pct", Float64, false),
            f("ink_used_pct", Float64, false),
            f("jobs_completed", Int32, false),
            f("jobs_failed", Int32, false),
            f(
                "errors_by_class",
                List(Arc::new(Field::new(
                    "item",
                    Struct(
                        vec![
                            Field::new("class", Utf8, false),
                            Field::new("count", Int32, false),
                        ]
                        .into(),
                    ),
                    true,
                ))),
                false,
            ),
            f("packing_density_pct", Float64, true),
            f("recycled_material_pct", Float64, true),
            f("records", Int32, false),
            f("version", Int32, false),
        ],
        TABLE_LATE => vec![
            f("record_type", Utf8, false),
            f("event_id", Utf8, false),
            f("tenant_id", Utf8, false),
            f("device_id", Utf8, false),
            ts_field("observed_at", false),
            ts_field("watermark", false),
            f("late_by_ms", Int64, false),
        ],
        TABLE_BENCHMARK => vec![
            f("month", Date32, false),
            f("model", Utf8, false),
            f("region", Utf8, false),
            f("metric", Utf8, false),
            f("n_devices", Int32, false),
            f("n_tenants", Int32, false),
            f("p25", Float64, false),
            f("p50", Float64, false),
            f("p75", Float64, false),
            f("key_version", Utf8, false),
            f("version", Int64, false),
        ],
        TABLE_LEDGER => vec![
            f("entry_id", Utf8, false),
            f("tenant_id", Utf8, false),
            f("device_id", Utf8, false),
            f("counter", Utf8, false),
            f("unit", Utf8, false),
            f("period_start", Date32, false),
            f("period_end", Date32, false),
            f("quantity", Int64, false),
            f("readings", Int32, false),
            f("wraps", Int32, false),
            f("resets", Int32, false),
            f("swaps", Int32, false),
            ts_field("last_observed_at", false),
            f("version", Int64, false),
        ],
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

fn finite(v: f64) -> Json {
    if v.is_finite() {
        json!(v)
    } else {
        Json::Null
    }
}

/// Table, partition date and JSON row of an output.
pub fn row_of(o: &Output) -> (&'static str, NaiveDate, Map<String, Json>) {
    let (table, date, v) = match o {
        Output::Kpi(r) => (
            TABLE_KPI,
            r.day,
            json!({
                "tenant_id": r.tenant_id, "device_id": r.device_id, "day": r.day.to_string(),
                "model": r.model, "region": r.region, "minutes_seen": r.minutes_seen,
                "minutes_up": r.minutes_up, "minutes_printing": r.minutes_printing,
                "uptime_pct": finite(r.uptime_pct),
                "utilisation_pct": r.utilisation_pct.map(finite),
                "pages_counted": r.pages_counted, "media_length_m": finite(r.media_length_m),
                "job_pages": r.job_pages, "job_area_m2": finite(r.job_area_m2),
                "toner_g": finite(r.toner_g), "ink_ml": finite(r.ink_ml),
                "agent_ml": finite(r.agent_ml), "toner_used_pct": finite(r.toner_used_pct),
                "ink_used_pct": finite(r.ink_used_pct), "jobs_completed": r.jobs_completed,
                "jobs_failed": r.jobs_failed,
                "errors_by_class": r.errors_by_class.iter()
                    .map(|(c, n)| json!({"class": c, "count": n})).collect::<Vec<_>>(),
                "packing_density_pct": r.packing_density_pct.map(finite),
                "recycled_material_pct": r.recycled_material_pct.map(finite),
                "records": r.records, "version": r.version,
            }),
        ),
        Output::Late(r) => (
            TABLE_LATE,
            crate::lake::utc_date(r.observed_at).unwrap_or_default(),
            json!({
                "record_type": r.record_type, "event_id": r.event_id, "tenant_id": r.tenant_id,
                "device_id": r.device_id, "observed_at": r.observed_at,
                "watermark": r.watermark, "late_by_ms": r.late_by_ms,
            }),
        ),
        Output::Benchmark(r) => (
            TABLE_BENCHMARK,
            r.month,
            json!({
                "month": r.month.to_string(), "model": r.model, "region": r.region,
                "metric": r.metric, "n_devices": r.n_devices, "n_tenants": r.n_tenants,
                "p25": finite(r.p25), "p50": finite(r.p50), "p75": finite(r.p75),
                "key_version": r.key_version, "version": r.version,
            }),
        ),
        Output::Ledger(r) => (
            TABLE_LEDGER,
            r.period_start,
            json!({
                "entry_id": r.entry_id, "tenant_id": r.tenant_id, "device_id": r.device_id,
                "counter": r.counter, "unit": r.unit,
                "period_start": r.period_start.to_string(),
                "period_end": r.period_end.to_string(), "quantity": r.quantity,
                "readings": r.readings, "wraps": r.wraps, "resets": r.resets,
                "swaps": r.swaps, "last_observed_at": r.last_observed_at,
                "version": r.version,
            }),
        ),
    };
    let Json::Object(map) = v else {
        unreachable!("json! of an object literal is an object")
    };
    (table, date, map)
}

/// Write outputs as Parquet files, one per table and date, named by a hash
/// of their rows (create-if-absent). Returns the files written.
pub fn write_tables(lake_dir: &Path, outputs: &[Output]) -> Result<Vec<PathBuf>, LakeError> {
    let mut groups: BTreeMap<(&str, NaiveDate), Vec<Map<String, Json>>> = BTreeMap::new();
    for o in outputs {
        let (t, d, row) = row_of(o);
        groups.entry((t, d)).or_default().push(row);
    }
    let mut written = Vec::new();
    let mut hashes: HashMap<PathBuf, ()> = HashMap::new();
    for ((table, date), rows) in groups {
        let Some(schema) = schema(table) else {
            continue;
        };
        let text = serde_json::to_string(&rows).unwrap_or_default();
        let hash = hex::encode(&Sha256::digest(text.as_bytes())[..12]);
        let dir = lake_dir
            .join(format!("table={table}"))
            .join(format!("date={}", date.format("%Y-%m-%d")));
        let path = dir.join(format!("part-derived-{hash}.parquet"));
        if path.exists() || hashes.insert(path.clone(), ()).is_some() {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|source| {
            LakeError::Store(crate::store::StoreError::Io {
                op: "create directory",
                path: dir.clone(),
                source,
            })
        })?;
        let encode = |reason: String| LakeError::Encode {
            key: path.display().to_string(),
            reason,
        };
        let batch =
            crate::arrow_schema::record_batch(&schema, &rows).map_err(|e| encode(e.to_string()))?;
        let tmp = dir.join(format!(
            ".part-derived-{hash}.parquet.{}.tmp",
            std::process::id()
        ));
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| {
                LakeError::Store(crate::store::StoreError::Io {
                    op,
                    path: p,
                    source,
                })
            }
        };
        let file = File::create(&tmp).map_err(io("create", &tmp))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let mut w = ArrowWriter::try_new(
            file.try_clone().map_err(io("open", &tmp))?,
            schema,
            Some(props),
        )
        .map_err(|e| encode(e.to_string()))?;
        w.write(&batch).map_err(|e| encode(e.to_string()))?;
        w.close().map_err(|e| encode(e.to_string()))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => written.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("publish", &path)(e)),
        }
    }
    Ok(written)
}
