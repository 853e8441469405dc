//! Running the derived-tables operator inside `fleetpulse process`, restart-safe.
//!
//! The sources (the Kafka pipeline and the Firehose source) hand every
//! accepted record to [`Derived::on_record`] with its position (topic,
//! partition, offset; for Firehose the object's pseudo-topic and line
//! number). The operator's state lives in memory; [`Derived::checkpoint`]
//! saves it to `<lake_dir>/_state/derived-<group>.json` and is called by the
//! sources **before** they publish a lake file (and therefore before any
//! offset or Firehose checkpoint moves), by the processor tick every
//! `derived.snapshot_interval`, and at shutdown.
//!
//! Why this is exactly-once:
//!
//! - The snapshot records, per position key, the next offset already applied
//!   to the state. A record at or past that offset is applied; one below is
//!   skipped. So records re-read after a crash (anything after the committed
//!   offset) are applied once: either the restored state already holds them
//!   (skipped) or it does not (applied).
//! - Every committed offset, and every lake file (whose records the Kafka
//!   path may skip without handing them over again), lies behind a snapshot
//!   that holds its records, because the snapshot is written before the file
//!   is published and before the commit.
//! - Rows produced by the operator are made visible only after the snapshot
//!   that holds the state which produced them: they are saved in the snapshot
//!   (`pending`) first, then written with [`super::write_tables`] (file name =
//!   hash of the rows, create-if-absent). A crash before the snapshot loses
//!   the rows *and* the state that made them, so the replay makes them again
//!   with the same versions; a crash after it writes the saved rows again at
//!   start, which finds the same files present.
//! - Versions come from the restored state, so they keep increasing across
//!   restarts.
//!
//! Limits: one state for all partitions, so the derived tables need a
//! single processor instance holding every partition (benchmarks compare
//! devices of every partition and a device-day needs records of several
//! topics, so the state cannot simply be split by partition); with several
//! instances set `derived.enabled = false` on all of them (README).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use fleetpulse_core::config::ConfigError;
use fleetpulse_core::schema::RecordType;
use serde::{Deserialize, Serialize};

use super::{write_tables, DerivedOperator, DerivedState, DerivedStateRef, Output};
use crate::privacy::keys::{BenchmarkKey, PurposeKey};
use crate::store::StoreError;
use crate::{LakeError, ProcessorConfig};

/// Format version of the snapshot file.
const SNAPSHOT_VERSION: u32 = 1;

/// `[derived]`: the derived tables (KPIs, late records, benchmarks, ledger).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DerivedConfig {
    /// Compute the derived tables while processing (default true). Needs a
    /// single processor instance holding every partition (see the README).
    pub enabled: bool,
    /// Save the operators' state and write the rows they produced at least
    /// this often (also before every lake file is published). Default 10s.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for DerivedConfig {
    fn default() -> Self {
        DerivedConfig {
            enabled: true,
            snapshot_interval: Duration::from_secs(10),
        }
    }
}

impl DerivedConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.snapshot_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "derived.snapshot_interval: must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

/// Position key: topic (or Firehose object pseudo-topic) and partition.
type PosKey = (String, i32);

/// What the snapshot file holds.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    scope: &'a str,
    #[serde(serialize_with = "positions_ref")]
    positions: &'a BTreeMap<PosKey, i64>,
    pending: &'a [Output],
    snapshots: u64,
    state: DerivedStateRef<'a>,
}

fn positions_ref<S: serde::Serializer>(
    p: &&BTreeMap<PosKey, i64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    super::pairs::serialize(*p, s)
}

#[derive(Deserialize)]
struct Snapshot {
    version: u32,
    scope: String,
    #[serde(with = "super::pairs")]
    positions: BTreeMap<PosKey, i64>,
    pending: Vec<Output>,
    snapshots: u64,
    state: DerivedState,
}

/// The operator with its positions and unwritten rows.
#[derive(Debug)]
pub struct DerivedRunner {
    op: DerivedOperator,
    lake_dir: PathBuf,
    path: PathBuf,
    scope: String,
    /// Next offset not yet applied, per position key.
    positions: BTreeMap<PosKey, i64>,
    /// Rows produced and not yet written.
    pending: Vec<Output>,
    /// State changed since the last snapshot.
    dirty: bool,
    snapshots: u64,
    last_snapshot: Instant,
    interval: Duration,
    /// Length and modification time of the file as this runner last wrote
    /// it: a difference means another instance writes the same state.
    last_written: Option<(u64, std::time::SystemTime)>,
}

/// Why the derived state could not be loaded. Not retriable: the file must
/// be fixed, moved away (the tables are then recomputed from what is read
/// next, with versions from 1), or `derived.enabled` set to false.
#[derive(Debug, thiserror::Error)]
#[error("derived-tables state {path}: {reason}")]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

fn state_file(lake_dir: &Path, group_id: &str) -> PathBuf {
    let safe: String = group_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    lake_dir.join("_state").join(format!("derived-{safe}.json"))
}

impl DerivedRunner {
    /// A runner for `config`, continuing from its saved state if there is
    /// one; rows that the saved state had not yet written are written now.
    pub fn open(
        config: &ProcessorConfig,
        lake_key: PurposeKey,
        bench_key: Option<BenchmarkKey>,
    ) -> Result<DerivedRunner, crate::ProcessorError> {
        let path = state_file(&config.lake_dir, &config.group_id);
        let mut runner = DerivedRunner {
            op: DerivedOperator::new(config, lake_key.clone(), bench_key.clone()),
            lake_dir: config.lake_dir.clone(),
            path: path.clone(),
            scope: config.group_id.clone(),
            positions: BTreeMap::new(),
            pending: Vec::new(),
            dirty: false,
            snapshots: 0,
            last_snapshot: Instant::now(),
            interval: config.derived.snapshot_interval,
            last_written: None,
        };
        let bad = |reason: String| StateError {
            path: path.clone(),
            reason,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let snap: Snapshot =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                if snap.version != SNAPSHOT_VERSION {
                    return Err(bad(format!("unknown format version {}", snap.version)).into());
                }
                if snap.scope != runner.scope {
                    return Err(bad(format!(
                        "belongs to group {:?}, not {:?}",
                        snap.scope, runner.scope
                    ))
                    .into());
                }
                runner.op = DerivedOperator::restore(config, lake_key, bench_key, snap.state);
                runner.positions = snap.positions;
                runner.snapshots = snap.snapshots;
                runner.last_written = file_stamp(&path);
                state_restored(&path, runner.positions.len(), snap.pending.len());
                // Rows saved but perhaps not written before the stop: write
                // them (same rows, same file names: present ones are kept).
                write_tables(&runner.lake_dir, &snap.pending)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no derived-tables state yet: starting empty");
            }
            Err(e) => return Err(bad(e.to_string()).into()),
        }
        Ok(runner)
    }

    /// Apply one record at `offset` of (`topic`, `partition`), unless the
    /// state already holds it.
    pub fn on_record(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        record_type: RecordType,
        value: &Value,
    ) {
        if matches!(
            record_type,
            RecordType::ConnectorHeartbeat | RecordType::MaintenanceAlert
        ) {
            // Not used by the operators: no state, no position to keep.
            return;
        }
        let key = (topic.to_string(), partition);
        if self.positions.get(&key).is_some_and(|next| offset < *next) {
            metrics::counter!("fleetpulse_processor_derived_already_applied_total").increment(1);
            return;
        }
        self.positions.insert(key, offset.saturating_add(1));
        let out = self.op.on_value(record_type, value);
        self.pending.extend(out);
        self.dirty = true;
    }

    /// Forget the position of a source that will not be read again (a
    /// Firehose object marked done in its checkpoint).
    pub fn forget(&mut self, topic: &str) {
        self.positions.retain(|(t, _), _| t != topic);
    }

    /// Advance the watermark (rows of closed days become pending).
    pub fn advance(&mut self) {
        let out = self.op.advance();
        if !out.is_empty() {
            self.pending.extend(out);
            self.dirty = true;
        }
    }

    /// Whether a snapshot is due by time.
    pub fn due(&self) -> bool {
        (self.dirty || !self.pending.is_empty()) && self.last_snapshot.elapsed() >= self.interval
    }

    /// Advance the watermark, save the state (with the rows not yet
    /// written) durably, then write those rows. Nothing to do when nothing
    /// changed since the last snapshot.
    pub fn checkpoint(&mut self) -> Result<(), LakeError> {
        self.advance();
        self.last_snapshot = Instant::now();
        if !self.dirty && self.pending.is_empty() {
            return Ok(());
        }
        if self.dirty {
            self.snapshots += 1;
            let snap = SnapshotRef {
                version: SNAPSHOT_VERSION,
                scope: &self.scope,
                positions: &self.positions,
                pending: &self.pending,
                snapshots: self.snapshots,
                state: self.op.state(),
            };
            let bytes = serde_json::to_vec(&snap).map_err(|e| LakeError::Encode {
                key: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
            if self.last_written.is_some() && file_stamp(&self.path) != self.last_written {
                state_conflict(&self.path);
            }
            write_atomic(&self.path, &bytes)?;
            self.last_written = file_stamp(&self.path);
            self.dirty = false;
            state_saved(&self.path, bytes.len(), self.pending.len());
        }
        let files = write_tables(&self.lake_dir, &self.pending)?;
        rows_written(&self.pending, files.len());
        self.pending.clear();
        Ok(())
    }
}

fn file_stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Write `bytes` to `path` atomically: temporary file, fsync, rename, fsync
/// of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LakeError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| {
            LakeError::Store(StoreError::Io {
                op,
                path: p,
                source,
            })
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}-{n}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))?;
    Ok(())
}

/// A runner shared by the sources, or nothing when `derived.enabled` is
/// false (every call is then a no-op).
#[derive(Debug, Clone, Default)]
pub struct Derived(Option<Arc<Mutex<DerivedRunner>>>);

impl Derived {
    /// Open the runner when `derived.enabled` (see [`DerivedRunner::open`]).
    pub fn start(
        config: &ProcessorConfig,
        lake_key: PurposeKey,
        bench_key: Option<BenchmarkKey>,
    ) -> Result<Derived, crate::ProcessorError> {
        if !config.derived.enabled {
            tracing::info!("derived tables disabled (derived.enabled = false)");
            return Ok(Derived(None));
        }
        let runner = DerivedRunner::open(config, lake_key, bench_key)?;
        Ok(Derived(Some(Arc::new(Mutex::new(runner)))))
    }

    fn lock(r: &Mutex<DerivedRunner>) -> MutexGuard<'_, DerivedRunner> {
        r.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`DerivedRunner::on_record`].
    pub fn on_record(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        record_type: RecordType,
        value: &Value,
    ) {
        if let Some(r) = &self.0 {
            Self::lock(r).on_record(topic, partition, offset, record_type, value);
        }
    }

    /// See [`DerivedRunner::forget`].
    pub fn forget(&self, topic: &str) {
        if let Some(r) = &self.0 {
            Self::lock(r).forget(topic);
        }
    }

    /// Save the state, then write pending rows (off the async threads).
    /// Call before publishing a lake file / committing offsets.
    pub async fn checkpoint(&self) -> Result<(), LakeError> {
        let Some(r) = self.0.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || Self::lock(&r).checkpoint())
            .await
            .map_err(|e| {
                LakeError::Store(StoreError::Io {
                    op: "derived checkpoint task",
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?
    }

    /// Processor tick: checkpoint when `derived.snapshot_interval` passed
    /// and something changed (this advances the watermark, so days close
    /// while running).
    pub async fn tick(&self) -> Result<(), LakeError> {
        let due = self.0.as_ref().is_some_and(|r| Self::lock(r).due());
        if due {
            self.checkpoint().await?;
        }
        Ok(())
    }
}

// Events: each logs its line and bumps its metrics together.

fn state_restored(path: &Path, positions: usize, pending: usize) {
    tracing::info!(path = %path.display(), positions, pending, "derived-tables state restored");
    metrics::counter!("fleetpulse_processor_derived_restores_total").increment(1);
}

fn state_conflict(path: &Path) {
    tracing::error!(
        path = %path.display(),
        "derived-tables state was changed by someone else since this processor saved it: \
         several instances of one group compute derived tables (unsupported: they \
         need a single instance; set derived.enabled = false on every instance)"
    );
    metrics::counter!("fleetpulse_processor_derived_state_conflicts_total").increment(1);
}

fn state_saved(path: &Path, bytes: usize, pending: usize) {
    tracing::debug!(path = %path.display(), bytes, pending, "derived-tables state saved");
    metrics::counter!("fleetpulse_processor_derived_snapshots_total").increment(1);
    metrics::gauge!("fleetpulse_processor_derived_state_bytes").set(bytes as f64);
}

fn rows_written(rows: &[Output], files: usize) {
    if rows.is_empty() {
        return;
    }
    tracing::debug!(rows = rows.len(), files, "derived-table rows written");
    for o in rows {
        let table = super::row_of(o).0;
        metrics::counter!("fleetpulse_processor_derived_rows_total", "table" => table).increment(1);
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
