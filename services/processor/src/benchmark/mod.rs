//! Cross-customer benchmarks: p25 / p50 / p75 of per-device monthly metrics
//! per cohort (model × region × month), published only where no tenant can be
//! singled out.
//!
//! - **Benchmark pseudonyms only.** The input names tenants and devices by
//!   [`BenchmarkPseudonym`]s, which only the benchmark key makes (a separate
//!   key from the lake's, rotating monthly by default), so this table cannot
//!   be joined with a tenant's lake tables. The output holds no id at all.
//! - **Primary suppression.** A cell is published only if it has at least
//!   `min_tenants` distinct tenants (default 5) *and* no tenant holds more
//!   than `max_tenant_share_pct` (default 60 %) of its devices (dominance;
//!   exactly 60 % is allowed). Integer arithmetic, no rounding at the edge.
//! - **Margins.** With `publish_margins` (default on), each model × month
//!   over all regions (`region = '*'`) and each region × month over all
//!   models (`model = '*'`) is published too, under the same primary rules.
//!   There is no grand total.
//! - **Secondary suppression.** A margin publishes `n_devices` and
//!   `n_tenants`, so a line (the interior cells of one model, or of one
//!   region, plus its margin) with exactly one hidden interior cell would
//!   give it away by subtraction (and narrow its percentiles). So in every
//!   line whose margin is published, the number of hidden interior cells is
//!   kept at 0 or ≥ 2: a second cell (the published one with the fewest
//!   devices) is hidden, or the margin itself when there is no other cell.
//!   This is repeated over model and region lines until nothing changes.
//!   Two unknowns with one known sum cannot be separated; a test attacks the
//!   output this way and fails.
//! - **Percentiles** use linear interpolation between closest ranks (the
//!   default of numpy, DuckDB's `quantile_cont`).
//! - **Versions.** A month is published when the watermark passes its end
//!   plus the allowed lateness; late data restates the whole month with a
//!   higher `version`. Queries take, per month, the rows of its highest
//!   version (a cell may disappear in a restatement, so not per cell).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};
use fleetpulse_core::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::privacy::keys::{BenchmarkIdentity, KeyRotation};

#[cfg(test)]
mod tests;

/// The value of `model` or `region` in a margin row.
pub const ALL: &str = "*";

/// Configuration of the benchmarks (`[benchmark]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchmarkConfig {
    /// Key of the benchmark pseudonyms, as a secret spec (`env:NAME`,
    /// `file:/path`). Must differ from `pseudonym_key`. Unset: no benchmarks.
    pub pseudonym_key: Option<String>,
    /// Id of the benchmark key, written (with the rotation period) in
    /// `key_version`. Must differ from `pseudonym_key_id`.
    pub pseudonym_key_id: String,
    /// Rotation of the benchmark key: `monthly`, `quarterly` or `yearly`.
    pub pseudonym_rotation: KeyRotation,
    /// Least number of distinct tenants in a published cell.
    pub min_tenants: u32,
    /// Largest share (percent) of a cell's devices one tenant may hold.
    pub max_tenant_share_pct: u32,
    /// Also publish model and region margins (with secondary suppression).
    pub publish_margins: bool,
}

impl Default for BenchmarkConfig {
    fn default() -> Self {
        BenchmarkConfig {
            pseudonym_key: None,
            pseudonym_key_id: "b1".into(),
            pseudonym_rotation: KeyRotation::Monthly,
            min_tenants: 5,
            max_tenant_share_pct: 60,
            publish_margins: true,
        }
    }
}

impl BenchmarkConfig {
    /// Reject contradictions, naming the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, r: &str| Err(ConfigError::Invalid(format!("benchmark.{k}: {r}")));
        if self.min_tenants < 2 {
            return bad("min_tenants", "must be at least 2");
        }
        if !(1..=100).contains(&self.max_tenant_share_pct) {
            return bad("max_tenant_share_pct", "must be in 1..=100");
        }
        if self.pseudonym_key_id.trim().is_empty() {
            return bad("pseudonym_key_id", "must not be empty");
        }
        if self.pseudonym_rotation == KeyRotation::Never {
            return bad(
                "pseudonym_rotation",
                "cross-tenant pseudonyms must rotate (monthly, quarterly or yearly)",
            );
        }
        Ok(())
    }
}

/// One device's value of one metric in one month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMonth {
    /// Benchmark pseudonyms of tenant and device.
    pub identity: BenchmarkIdentity,
    /// Printer model.
    pub model: String,
    /// Region (ISO country code).
    pub region: String,
    /// First day of the month.
    pub month: NaiveDate,
    /// Metric name, e.g. `pages`, `uptime_pct`.
    pub metric: String,
    /// The device's value.
    pub value: f64,
}

/// One row of `benchmark_cohort_monthly`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkRow {
    /// First day of the month.
    pub month: NaiveDate,
    /// Model, or `*` for a region margin.
    pub model: String,
    /// Region, or `*` for a model margin.
    pub region: String,
    /// Metric name.
    pub metric: String,
    /// Devices in the cell.
    pub n_devices: u32,
    /// Distinct tenants in the cell.
    pub n_tenants: u32,
    /// 25th percentile.
    pub p25: f64,
    /// Median.
    pub p50: f64,
    /// 75th percentile.
    pub p75: f64,
    /// Benchmark key version(s) of the input, comma separated.
    pub key_version: String,
    /// Publication version of the month (take the highest per month).
    pub version: u64,
}

/// Percentile `p` (0..=1) of sorted `xs` by linear interpolation.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    match xs.len() {
        0 => f64::NAN,
        1 => xs[0],
        n => {
            let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            xs[lo] + (h - lo as f64) * (xs[hi] - xs[lo])
        }
    }
}

#[derive(Debug, Default)]
struct Cell {
    values: Vec<f64>,
    devices_per_tenant: BTreeMap<String, u32>,
    key_versions: BTreeSet<String>,
}

impl Cell {
    fn n_devices(&self) -> u32 {
        self.values.len() as u32
    }

    fn passes(&self, cfg: &BenchmarkConfig) -> bool {
        let n = u64::from(self.n_devices());
        let top = u64::from(self.devices_per_tenant.values().copied().max().unwrap_or(0));
        self.devices_per_tenant.len() as u64 >= u64::from(cfg.min_tenants)
            && top * 100 <= u64::from(cfg.max_tenant_share_pct) * n
    }
}

/// Why a cell was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// Too few tenants or one dominant tenant.
    Primary,
    /// Hidden so that a primary-suppressed cell cannot be derived.
    Secondary,
}

/// Cells of one (month, metric), with the suppression decisions.
pub fn cells(
    cfg: &BenchmarkConfig,
    inputs: &[DeviceMonth],
    version: u64,
) -> (Vec<BenchmarkRow>, BTreeMap<(String, String), Suppression>) {
    cells_with(cfg, inputs, version, true)
}

/// [`cells`], with secondary suppression optional (tests show the attack
/// it prevents).
pub(crate) fn cells_with(
    cfg: &BenchmarkConfig,
    inputs: &[DeviceMonth],
    version: u64,
    with_secondary: bool,
) -> (Vec<BenchmarkRow>, BTreeMap<(String, String), Suppression>) {
    // One value per device: the mean if it came more than once.
    let mut per_device: BTreeMap<&str, (&DeviceMonth, f64, u32)> = BTreeMap::new();
    for d in inputs {
        let e = per_device
            .entry(d.identity.device.as_str())
            .or_insert((d, 0.0, 0));
        e.1 += d.value;
        e.2 += 1;
    }
    let (Some(first), true) = (inputs.first(), !per_device.is_empty()) else {
        return (Vec::new(), BTreeMap::new());
    };
    let mut grid: BTreeMap<(String, String), Cell> = BTreeMap::new();
    for (d, sum, n) in per_device.values() {
        let v = sum / f64::from(*n);
        if !v.is_finite() {
            continue;
        }
        let mut keys = vec![(d.model.clone(), d.region.clone())];
        if cfg.publish_margins {
            keys.push((d.model.clone(), ALL.to_string()));
            keys.push((ALL.to_string(), d.region.clone()));
        }
        for k in keys {
            let c = grid.entry(k).or_default();
            c.values.push(v);
            *c.devices_per_tenant
                .entry(d.identity.tenant.as_str().to_string())
                .or_insert(0) += 1;
            c.key_versions.insert(d.identity.key_version.clone());
        }
    }
    let mut hidden: BTreeMap<(String, String), Suppression> = grid
        .iter()
        .filter(|(_, c)| !c.passes(cfg))
        .map(|(k, _)| (k.clone(), Suppression::Primary))
        .collect();
    if cfg.publish_margins && with_secondary {
        secondary(&grid, &mut hidden);
    }
    let mut rows = Vec::new();
    for (k, c) in &mut grid {
        if hidden.contains_key(k) {
            continue;
        }
        c.values.sort_by(f64::total_cmp);
        rows.push(BenchmarkRow {
            month: first.month,
            model: k.0.clone(),
            region: k.1.clone(),
            metric: first.metric.clone(),
            n_devices: c.n_devices(),
            n_tenants: c.devices_per_tenant.len() as u32,
            p25: percentile(&c.values, 0.25),
            p50: percentile(&c.values, 0.50),
            p75: percentile(&c.values, 0.75),
            key_version: c.key_versions.iter().cloned().collect::<Vec<_>>().join(","),
            version,
        });
    }
    (rows, hidden)
}

/// Hide cells until no published margin leaves exactly one hidden interior
/// cell in its line.
fn secondary(
    grid: &BTreeMap<(String, String), Cell>,
    hidden: &mut BTreeMap<(String, String), Suppression>,
) {
    loop {
        let mut changed = false;
        for by_model in [true, false] {
            let lines: BTreeSet<String> = grid
                .keys()
                .filter(|(m, r)| m != ALL && r != ALL)
                .map(|(m, r)| if by_model { m.clone() } else { r.clone() })
                .collect();
            for line in lines {
                let margin = if by_model {
                    (line.clone(), ALL.to_string())
                } else {
                    (ALL.to_string(), line.clone())
                };
                if hidden.contains_key(&margin) || !grid.contains_key(&margin) {
                    continue;
                }
                let members: Vec<&(String, String)> = grid
                    .keys()
                    .filter(|(m, r)| {
                        m != ALL && r != ALL && if by_model { *m == line } else { *r == line }
                    })
                    .collect();
                let n_hidden = members.iter().filter(|k| hidden.contains_key(**k)).count();
                if n_hidden != 1 {
                    continue;
                }
                let victim = members
                    .iter()
                    .filter(|k| !hidden.contains_key(**k))
                    .min_by_key(|k| (grid[**k].n_devices(), (**k).clone()))
                    .map(|k| (*k).clone())
                    .unwrap_or(margin);
                hidden.insert(victim, Suppression::Secondary);
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// First day of the month holding `ms`.
pub fn month_of(ms: i64) -> Option<NaiveDate> {
    let d = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?.date_naive();
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1)
}

/// The benchmark operator: device-months in, published cohort rows out when
/// the watermark closes a month (and again, with a higher version, when late
/// data changes a month already published).
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchmarkOperator {
    /// Not part of the saved state (it names a secret): set again from the
    /// configuration.
    #[serde(skip)]
    cfg: BenchmarkConfig,
    lateness_ms: i64,
    months: BTreeMap<NaiveDate, BTreeMap<String, Vec<DeviceMonth>>>,
    /// Version last published per month, and whether data came since.
    published: BTreeMap<NaiveDate, (u64, bool)>,
}

impl BenchmarkOperator {
    /// An operator publishing a month once the watermark is `lateness_ms`
    /// past its end.
    pub fn new(cfg: BenchmarkConfig, lateness_ms: i64) -> BenchmarkOperator {
        BenchmarkOperator {
            cfg,
            lateness_ms,
            months: BTreeMap::new(),
            published: BTreeMap::new(),
        }
    }

    /// Set the configuration again after restoring saved state (the
    /// configuration is not part of the state).
    pub fn reconfigure(&mut self, cfg: BenchmarkConfig, lateness_ms: i64) {
        self.cfg = cfg;
        self.lateness_ms = lateness_ms;
    }

    /// Add one device's monthly value.
    pub fn add(&mut self, d: DeviceMonth) {
        if let Some(p) = self.published.get_mut(&d.month) {
            p.1 = true;
        }
        self.months
            .entry(d.month)
            .or_default()
            .entry(d.metric.clone())
            .or_default()
            .push(d);
    }

    /// Publish every month closed by `watermark_ms` that is new or changed.
    pub fn on_watermark(&mut self, watermark_ms: i64) -> Vec<BenchmarkRow> {
        let mut out = Vec::new();
        for (month, metrics) in &self.months {
            let Some(end) = month.checked_add_months(chrono::Months::new(1)) else {
                continue;
            };
            let end_ms = end
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
                .unwrap_or(i64::MAX);
            if watermark_ms < end_ms.saturating_add(self.lateness_ms) {
                continue;
            }
            let version = match self.published.get(month) {
                Some((_, false)) => continue,
                Some((v, true)) => v + 1,
                None => 1,
            };
            for inputs in metrics.values() {
                let (rows, hidden) = cells(&self.cfg, inputs, version);
                suppressed(*month, &hidden);
                out.extend(rows);
            }
            self.published.insert(*month, (version, false));
        }
        out
    }
}

fn suppressed(month: NaiveDate, hidden: &BTreeMap<(String, String), Suppression>) {
    let secondary = hidden
        .values()
        .filter(|s| **s == Suppression::Secondary)
        .count();
    let primary = hidden.len() - secondary;
    if !hidden.is_empty() {
        tracing::info!(%month, primary, secondary, "benchmark cells suppressed");
    }
    metrics::counter!("fleetpulse_processor_benchmark_cells_suppressed_total", "rule" => "primary")
        .increment(primary as u64);
    metrics::counter!("fleetpulse_processor_benchmark_cells_suppressed_total", "rule" => "secondary")
        .increment(secondary as u64);
}
