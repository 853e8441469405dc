//! The Parquet lake: one file per contiguous offset range of one partition
//! and one Hive partition directory, published with create-if-absent
//! semantics to a local folder or S3 ([`crate::store`]).
//!
//! Layout (keys relative to `lake_dir` or to `lake.s3.prefix`):
//!
//! ```text
//! table=<table>/date=YYYY-MM-DD/[hour=HH/]part-<topic>-<partition>-<first_offset:020>.parquet
//! ```
//!
//! Exactly-once without a transaction log: a file's name is derived from the
//! Kafka offset of its first row, and the store creates a name only if it is
//! free. A row's directory comes from the record itself (`observed_at`), so a
//! replay sends every offset to the directory it went to before.
//!
//! A partition may have several files open at once, one per directory (late
//! records, the minutes around an hour boundary): each file holds the rows
//! of its directory from a contiguous range of offsets, and the offset
//! committed to Kafka is the lowest first offset of the open files. When a
//! file is opened, the partition's files already present in that directory
//! are listed once, with their first and last offsets (S3 object metadata or
//! the Parquet footer). A row covered by a present file is skipped
//! ([`Admit::Covered`]); a row that would make the open file run into a
//! present file closes the open file first ([`Admit::Boundary`]). So a
//! replay whose roll timing or accept/reject decisions differ from the
//! crashed run's still writes every offset once.
//!
//! Files are built as they fill (rows -> Arrow batches -> Parquet row groups,
//! zstd, statistics on), so an open file holds encoded Parquet plus at most
//! one batch of rows; [`Segment::memory_bytes`] is what the consumer's global
//! budget counts.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_schema::SchemaRef;
use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use fleetpulse_core::config::ConfigError;
use fleetpulse_core::schema::RecordType;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use serde_json::{Map, Value as Json};

use crate::arrow_schema::record_batch;
use crate::config::{ProcessorConfig, StoreKind};
use crate::privacy::{COL_OFFSET, COL_PARTITION};
use crate::store::{
    by_first_offset, FileOffsets, LocalStore, Put, S3Store, Store, StoreError, StoredOffsets,
};

/// File metadata key: offset of the first row.
pub const META_FIRST_OFFSET: &str = "fleetpulse.first_offset";
/// File metadata key: offset of the last row.
pub const META_LAST_OFFSET: &str = "fleetpulse.last_offset";
/// File metadata key: topic the rows were read from.
pub const META_TOPIC: &str = "fleetpulse.topic";
/// File metadata key: partition the rows were read from.
pub const META_PARTITION: &str = "fleetpulse.partition";

/// Rows converted to one Arrow batch at a time.
const BATCH_ROWS: usize = 8192;

/// Why a file could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The store failed (file system or S3).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Rows could not be turned into Arrow / Parquet (a schema defect).
    #[error("cannot encode rows for {key}: {reason}")]
    Encode {
        /// Target file.
        key: String,
        /// The encoder's words.
        reason: String,
    },
    /// A published file lacks readable offsets.
    #[error("lake file {key} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Another writer published a file of the same name holding fewer rows
    /// after this one was opened (a zombie owner of the partition). A
    /// restart replays from the committed offset and sees that file.
    #[error("lake file {key} appeared meanwhile with rows through offset {present_last}, this one reaches {last}")]
    Conflict {
        /// The file.
        key: String,
        /// Last offset of the present file.
        present_last: i64,
        /// Last offset of the rows not written.
        last: i64,
    },
}

impl LakeError {
    /// Whether trying again later may succeed (I/O and transient S3 errors
    /// may, a restart resolves a conflict; a schema defect or a corrupt
    /// published file needs a person).
    pub fn is_retriable(&self) -> bool {
        match self {
            LakeError::Store(e) => e.is_retriable(),
            LakeError::Conflict { .. } => true,
            LakeError::Encode { .. } | LakeError::Corrupt { .. } => false,
        }
    }
}

/// UTC date of a timestamp, if it is within years 1..=9999 (a sane partition name).
pub fn utc_date(ms: i64) -> Option<NaiveDate> {
    let d = DateTime::from_timestamp_millis(ms)?.date_naive();
    (1..=9999).contains(&d.year()).then_some(d)
}

/// The Hive partition directory of a row: its UTC date, and its hour for
/// hourly tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionDir {
    /// `date=YYYY-MM-DD`.
    pub date: NaiveDate,
    /// `hour=HH`, for hourly tables.
    pub hour: Option<u32>,
}

impl PartitionDir {
    /// `table=<t>/date=YYYY-MM-DD[/hour=HH]`.
    pub fn key(&self, record_type: RecordType) -> String {
        let mut k = format!(
            "table={}/date={}",
            record_type.name(),
            self.date.format("%Y-%m-%d")
        );
        if let Some(h) = self.hour {
            k.push_str(&format!("/hour={h:02}"));
        }
        k
    }
}

/// Parquet options of every file.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// zstd level.
    pub zstd_level: i32,
    /// Close a row group at about this encoded size.
    pub row_group_bytes: usize,
    /// ... or at this many rows.
    pub row_group_rows: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            zstd_level: 3,
            row_group_bytes: 64 * 1024 * 1024,
            row_group_rows: 1024 * 1024,
        }
    }
}

/// What [`Segment::admit`] says about the next row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Buffer it.
    Row,
    /// A present file holds it (and every offset up to `last` of this directory).
    Covered {
        /// Last offset of the present file.
        last: i64,
    },
    /// It lies beyond a present file's first offset: publish this segment
    /// first, then open a new one.
    Boundary,
}

/// An open file: rows of one partition and one directory, in offset order.
pub struct Segment {
    record_type: RecordType,
    topic: String,
    partition: i32,
    dir: PartitionDir,
    schema: SchemaRef,
    props: WriterProperties,
    /// The partition's files present in the directory when it was opened,
    /// that may hold offsets from the opening offset on, by first offset.
    present: Vec<FileOffsets>,
    /// First offsets of the present files a row was found in.
    met: Vec<i64>,
    pending: Vec<Map<String, Json>>,
    pending_bytes: usize,
    writer: Option<ArrowWriter<Vec<u8>>>,
    first: Option<i64>,
    last: Option<i64>,
    rows: usize,
    opened: Instant,
    touched: Instant,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("table", &self.record_type.name())
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("dir", &self.dir)
            .field("first", &self.first)
            .field("last", &self.last)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Whether the row at `offset` is to be buffered, is already in a
    /// present file, or must start a new file.
    pub fn admit(&self, offset: i64) -> Admit {
        if let Some(p) = self
            .present
            .iter()
            .find(|p| p.first <= offset && offset <= p.last)
        {
            return Admit::Covered { last: p.last };
        }
        if let Some(first) = self.first {
            if self
                .present
                .iter()
                .any(|p| first < p.first && p.first <= offset)
            {
                return Admit::Boundary;
            }
        }
        Admit::Row
    }

    /// Note that the row at `offset` was found in a present file; true the
    /// first time that file is met (it is logged and counted once).
    pub fn met_present(&mut self, offset: i64) -> bool {
        let Some(p) = self
            .present
            .iter()
            .find(|p| p.first <= offset && offset <= p.last)
        else {
            return false;
        };
        if self.met.contains(&p.first) {
            return false;
        }
        self.met.push(p.first);
        skipped_existing(&self.key_at(p.first), *p);
        true
    }

    /// Add a transformed row read at `offset` (offsets must increase, and
    /// [`Segment::admit`] must have said [`Admit::Row`]). Every
    /// [`BATCH_ROWS`] rows are encoded into the file.
    pub fn push(&mut self, offset: i64, mut row: Map<String, Json>) -> Result<(), LakeError> {
        row.insert(COL_PARTITION.into(), Json::from(self.partition));
        row.insert(COL_OFFSET.into(), Json::from(offset));
        self.pending_bytes += 2 + row_estimate(&row);
        self.pending.push(row);
        self.first.get_or_insert(offset);
        self.last = Some(offset);
        self.rows += 1;
        self.touched = Instant::now();
        if self.pending.len() >= BATCH_ROWS {
            self.encode_pending()?;
        }
        Ok(())
    }

    fn encode_pending(&mut self) -> Result<(), LakeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let key = self.key();
        let encode = |reason: String| LakeError::Encode {
            key: key.clone(),
            reason,
        };
        let batch = record_batch(&self.schema, &self.pending).map_err(|e| encode(e.to_string()))?;
        self.pending.clear();
        self.pending_bytes = 0;
        if self.writer.is_none() {
            self.writer = Some(
                ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.props.clone()))
                    .map_err(|e| encode(e.to_string()))?,
            );
        }
        if let Some(w) = self.writer.as_mut() {
            // Row groups close at `row_group_rows` / `row_group_bytes`.
            w.write(&batch).map_err(|e| encode(e.to_string()))?;
        }
        Ok(())
    }

    /// Encode what is left and write the footer.
    fn finish(mut self) -> Result<(Vec<u8>, FileOffsets, usize), LakeError> {
        self.encode_pending()?;
        let key = self.key();
        let (Some(first), Some(last), Some(mut w)) = (self.first, self.last, self.writer.take())
        else {
            return Err(LakeError::Encode {
                key,
                reason: "no rows".into(),
            });
        };
        for (k, v) in [
            (META_FIRST_OFFSET, first.to_string()),
            (META_LAST_OFFSET, last.to_string()),
            (META_TOPIC, self.topic.clone()),
            (META_PARTITION, self.partition.to_string()),
        ] {
            w.append_key_value_metadata(KeyValue::new(k.into(), v));
        }
        let bytes = w.into_inner().map_err(|e| LakeError::Encode {
            key,
            reason: e.to_string(),
        })?;
        Ok((bytes, FileOffsets { first, last }, self.rows))
    }

    /// The key this segment is published under (from its first offset).
    pub fn key(&self) -> String {
        self.key_at(self.first.unwrap_or(0))
    }

    fn key_at(&self, first: i64) -> String {
        file_key(
            self.record_type,
            &self.dir,
            &self.topic,
            self.partition,
            first,
        )
    }

    /// Its directory.
    pub fn dir(&self) -> PartitionDir {
        self.dir
    }

    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Memory held: rows not yet encoded (an estimate) plus the encoded
    /// Parquet (flushed row groups and the one in progress).
    pub fn memory_bytes(&self) -> usize {
        // A buffered row lives as a `serde_json::Map`: about three times
        // the size of its JSON text.
        self.pending_bytes * 3
            + self
                .writer
                .as_ref()
                .map_or(0, |w| w.memory_size() + w.inner().len())
    }

    /// Estimated size of the file if it were closed now.
    pub fn file_bytes(&self) -> usize {
        self.pending_bytes / 8
            + self
                .writer
                .as_ref()
                .map_or(0, |w| w.in_progress_size() + w.bytes_written())
    }

    /// Offset of the first row.
    pub fn first_offset(&self) -> Option<i64> {
        self.first
    }

    /// Offset of the last row.
    pub fn last_offset(&self) -> Option<i64> {
        self.last
    }

    /// When it was opened.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// When the last row was added (or it was opened).
    pub fn touched(&self) -> Instant {
        self.touched
    }

    /// The record type of the rows.
    pub fn record_type(&self) -> RecordType {
        self.record_type
    }
}

fn row_estimate(row: &Map<String, Json>) -> usize {
    row.iter().map(|(k, v)| k.len() + 4 + estimate(v)).sum()
}

/// Rough JSON size of a value, without serialising it.
fn estimate(v: &Json) -> usize {
    match v {
        Json::Null | Json::Bool(_) => 5,
        Json::Number(_) => 12,
        Json::String(s) => s.len() + 2,
        Json::Array(a) => 2 + a.iter().map(|x| estimate(x) + 1).sum::<usize>(),
        Json::Object(o) => 2 + row_estimate(o),
    }
}

/// `table=<t>/date=YYYY-MM-DD[/hour=HH]/part-<topic>-<partition>-<first_offset:020>.parquet`.
pub fn file_key(
    record_type: RecordType,
    dir: &PartitionDir,
    topic: &str,
    partition: i32,
    first_offset: i64,
) -> String {
    format!(
        "{}/{}{first_offset:020}.parquet",
        dir.key(record_type),
        name_prefix(topic, partition)
    )
}

fn name_prefix(topic: &str, partition: i32) -> String {
    format!("part-{topic}-{partition}-")
}

/// What publishing a segment did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Rows this call made durable.
    pub rows_written: u64,
    /// Files this call created (printable locations).
    pub files: Vec<String>,
    /// Files found already present (rows skipped).
    pub files_skipped: u64,
    /// Rows dropped because a present file already holds them.
    pub rows_skipped: u64,
    /// Bytes this call stored.
    pub bytes_written: u64,
}

/// Opens and publishes files in a store.
#[derive(Debug, Clone)]
pub struct LakeWriter {
    store: Arc<Store>,
    options: FileOptions,
    hourly: Vec<RecordType>,
}

impl LakeWriter {
    /// A writer of `store` with these options; `hourly_tables` get an
    /// `hour=HH` directory level.
    pub fn new(store: Store, options: FileOptions, hourly_tables: &[String]) -> LakeWriter {
        LakeWriter {
            store: Arc::new(store),
            options,
            hourly: RecordType::ALL
                .into_iter()
                .filter(|t| hourly_tables.iter().any(|h| h == t.name()))
                .collect(),
        }
    }

    /// A writer of a local folder with the default options.
    pub fn local(dir: impl Into<std::path::PathBuf>) -> LakeWriter {
        let cfg = crate::config::LakeConfig::default();
        LakeWriter::new(
            Store::Local(LocalStore::new(dir)),
            FileOptions::default(),
            &cfg.hourly_tables,
        )
    }

    /// The writer a configuration describes (S3 credentials are read now).
    pub async fn from_config(config: &ProcessorConfig) -> Result<LakeWriter, ConfigError> {
        let lake = &config.lake;
        let store = match lake.store {
            StoreKind::Local => Store::Local(LocalStore::new(&config.lake_dir)),
            StoreKind::S3 => Store::S3(S3Store::new(&lake.s3).await?),
        };
        let options = FileOptions {
            zstd_level: lake.zstd_level,
            row_group_bytes: usize::try_from(lake.row_group_bytes).unwrap_or(usize::MAX),
            row_group_rows: lake.row_group_rows,
        };
        Ok(LakeWriter::new(store, options, &lake.hourly_tables))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The directory of a row of `record_type` observed at `observed_at_ms`
    /// (`None` outside years 1..=9999).
    pub fn partition_dir(
        &self,
        record_type: RecordType,
        observed_at_ms: i64,
    ) -> Option<PartitionDir> {
        let date = utc_date(observed_at_ms)?;
        let hour = self
            .hourly
            .contains(&record_type)
            .then(|| DateTime::from_timestamp_millis(observed_at_ms).map(|t| t.hour()))
            .flatten();
        Some(PartitionDir { date, hour })
    }

    fn props_builder(&self) -> parquet::file::properties::WriterPropertiesBuilder {
        WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.options.zstd_level).unwrap_or_default(),
            ))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_dictionary_enabled(true)
            // Unique per row: a dictionary only costs (every id is hashed
            // until the dictionary overflows and the writer falls back).
            .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
            .set_max_row_group_row_count(Some(self.options.row_group_rows.max(1)))
            .set_max_row_group_bytes(Some(self.options.row_group_bytes.max(1)))
    }

    fn props(&self) -> WriterProperties {
        self.props_builder().build()
    }

    /// The Parquet settings of a lake file holding `first_offset..=last_offset`
    /// of `topic`/`partition`, with its lineage metadata (for writers that
    /// encode a whole file at once, like `fleetpulse bench process`).
    pub fn writer_properties(
        &self,
        topic: &str,
        partition: i32,
        first_offset: i64,
        last_offset: i64,
    ) -> WriterProperties {
        self.props_builder()
            .set_key_value_metadata(Some(vec![
                KeyValue::new(META_FIRST_OFFSET.into(), first_offset.to_string()),
                KeyValue::new(META_LAST_OFFSET.into(), last_offset.to_string()),
                KeyValue::new(META_TOPIC.into(), topic.to_string()),
                KeyValue::new(META_PARTITION.into(), partition.to_string()),
            ]))
            .build()
    }

    /// Open a file of `partition` in `dir` whose first row will be at (or
    /// after) `offset`: lists the partition's files present in `dir` and
    /// reads the offsets of those that may hold `offset` or later ones.
    pub async fn open(
        &self,
        record_type: RecordType,
        schema: SchemaRef,
        topic: &str,
        partition: i32,
        dir: PartitionDir,
        offset: i64,
    ) -> Result<Segment, LakeError> {
        let prefix = name_prefix(topic, partition);
        let keys = self.store.list(&dir.key(record_type), &prefix).await?;
        let by_first = by_first_offset(&keys, &prefix);
        let mut relevant: Vec<&String> = by_first
            .range(..=offset)
            .next_back()
            .map(|(_, k)| k)
            .into_iter()
            .collect();
        relevant.extend(by_first.range(offset.saturating_add(1)..).map(|(_, k)| k));
        let mut present = Vec::with_capacity(relevant.len());
        for key in relevant {
            present.push(self.offsets_of(key).await?);
        }
        present.sort_by_key(|p| p.first);
        let now = Instant::now();
        Ok(Segment {
            record_type,
            topic: topic.to_string(),
            partition,
            dir,
            schema,
            props: self.props(),
            present,
            met: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            writer: None,
            first: None,
            last: None,
            rows: 0,
            opened: now,
            touched: now,
        })
    }

    /// First and last offset of a present file.
    async fn offsets_of(&self, key: &str) -> Result<FileOffsets, LakeError> {
        let corrupt = |reason: String| LakeError::Corrupt {
            key: self.store.describe(key),
            reason,
        };
        match self.store.offsets_of(key).await? {
            StoredOffsets::Known(o) => Ok(o),
            StoredOffsets::File(path) => {
                let meta = tokio::task::spawn_blocking(move || read_metadata(&path))
                    .await
                    .map_err(|e| corrupt(e.to_string()))??;
                footer_offsets(&meta).ok_or_else(|| {
                    corrupt("no integer fleetpulse.first_offset/last_offset in the footer".into())
                })
            }
            StoredOffsets::Bytes(bytes) => {
                let meta = ParquetMetaDataReader::new()
                    .parse_and_finish(&bytes)
                    .map_err(|e| corrupt(e.to_string()))?;
                footer_offsets(&key_values(&meta)).ok_or_else(|| {
                    corrupt("no integer fleetpulse.first_offset/last_offset in the footer".into())
                })
            }
        }
    }

    /// Make the segment durable under its name, unless a file of that name
    /// is present already (written by an earlier run that crashed before
    /// committing): then its rows are skipped. See the module docs.
    pub async fn publish(&self, segment: Segment) -> Result<Published, LakeError> {
        if segment.is_empty() {
            return Ok(Published::default());
        }
        let key = segment.key();
        let (bytes, offsets, rows) = tokio::task::spawn_blocking(move || segment.finish())
            .await
            .map_err(|e| LakeError::Encode {
                key: key.clone(),
                reason: e.to_string(),
            })??;
        let size = bytes.len() as u64;
        match self.store.put_if_absent(&key, bytes, offsets).await? {
            Put::Created => Ok(Published {
                rows_written: rows as u64,
                files: vec![self.store.describe(&key)],
                bytes_written: size,
                ..Published::default()
            }),
            Put::AlreadyExists => {
                let present = self.offsets_of(&key).await?;
                if present.last < offsets.last {
                    return Err(LakeError::Conflict {
                        key: self.store.describe(&key),
                        present_last: present.last,
                        last: offsets.last,
                    });
                }
                skipped_existing(&self.store.describe(&key), present);
                Ok(Published {
                    files_skipped: 1,
                    rows_skipped: rows as u64,
                    ..Published::default()
                })
            }
        }
    }
}

/// Encode `batch` as one Parquet file into `out`.
pub fn write_parquet<W: std::io::Write + Send>(
    out: W,
    batch: &arrow_array::RecordBatch,
    props: WriterProperties,
) -> Result<W, parquet::errors::ParquetError> {
    let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.into_inner()
}

fn skipped_existing(location: &str, present: FileOffsets) {
    tracing::info!(
        file = %location,
        first_offset = present.first,
        last_offset = present.last,
        "lake file already present, skipping the rows it holds"
    );
    metrics::counter!("fleetpulse_processor_files_skipped_total").increment(1);
}

fn key_values(meta: &parquet::file::metadata::ParquetMetaData) -> Vec<(String, String)> {
    meta.file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn footer_offsets(meta: &[(String, String)]) -> Option<FileOffsets> {
    let get = |k: &str| meta.iter().find(|(m, _)| m == k)?.1.parse().ok();
    Some(FileOffsets {
        first: get(META_FIRST_OFFSET)?,
        last: get(META_LAST_OFFSET)?,
    })
}

/// A local file's `fleetpulse.*` footer metadata, by key.
pub fn read_metadata(path: &Path) -> Result<Vec<(String, String)>, LakeError> {
    let corrupt = |reason: String| LakeError::Corrupt {
        key: path.display().to_string(),
        reason,
    };
    let file = File::open(path).map_err(|source| StoreError::Io {
        op: "open",
        path: path.to_path_buf(),
        source,
    })?;
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(key_values(&meta))
}

/// `fleetpulse.last_offset` of a local file.
pub fn read_last_offset(path: &Path) -> Result<i64, LakeError> {
    footer_offsets(&read_metadata(path)?)
        .map(|o| o.last)
        .ok_or_else(|| LakeError::Corrupt {
            key: path.display().to_string(),
            reason: format!("no integer {META_LAST_OFFSET} in the footer"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::Transformer;
    use fleetpulse_core::pseudonym::Pseudonymizer;
    use fleetpulse_core::{codec, samples};
    use parquet::basic::{Encoding, LogicalType, TimeUnit as PqTimeUnit};

    const AT: i64 = 1_763_700_000_000; // 2025-11-21T04:40:00Z

    fn transformer() -> Transformer {
        Transformer::new(Pseudonymizer::new(b"k-0123456789abcdef", "v1")).unwrap()
    }

    fn row(tr: &Transformer, t: RecordType) -> Map<String, Json> {
        let bytes = match t {
            RecordType::DeviceStatus => codec::encode(&samples::device_status("S")),
            _ => codec::encode(&samples::device_heartbeat("S")),
        }
        .unwrap();
        let (t, v) = codec::decode_value(&bytes).unwrap();
        tr.transform(t, &v).unwrap()
    }

    /// Open a heartbeat file of partition 2 at the first offset and push
    /// every offset the segment admits; returns what was not admitted.
    async fn fill(
        lake: &LakeWriter,
        tr: &Transformer,
        offsets: impl IntoIterator<Item = i64>,
    ) -> (Segment, Vec<(i64, Admit)>) {
        let t = RecordType::DeviceHeartbeat;
        let offsets: Vec<i64> = offsets.into_iter().collect();
        let dir = lake.partition_dir(t, AT).unwrap();
        let mut seg = lake
            .open(
                t,
                tr.arrow_schema(t).unwrap(),
                "fp.raw.hb",
                2,
                dir,
                offsets[0],
            )
            .await
            .unwrap();
        let mut refused = Vec::new();
        for o in offsets {
            match seg.admit(o) {
                Admit::Row => seg.push(o, row(tr, t)).unwrap(),
                a => refused.push((o, a)),
            }
        }
        (seg, refused)
    }

    #[tokio::test]
    async fn files_are_hive_partitioned_zstd_with_statistics_and_typed_columns() {
        let dir = tempfile::tempdir().unwrap();
        let tr = transformer();
        let lake = LakeWriter::local(dir.path());
        let (seg, refused) = fill(&lake, &tr, 10..15).await;
        assert!(refused.is_empty());
        let p = lake.publish(seg).await.unwrap();
        assert_eq!(p.rows_written, 5);
        let path = dir.path().join(
            "table=device_heartbeat/date=2025-11-21/hour=04/part-fp.raw.hb-2-00000000000000000010.parquet",
        );
        assert_eq!(p.files, [path.display().to_string()]);
        let meta: Vec<(String, String)> = read_metadata(&path).unwrap();
        for kv in [
            (META_FIRST_OFFSET, "10"),
            (META_LAST_OFFSET, "14"),
            (META_TOPIC, "fp.raw.hb"),
            (META_PARTITION, "2"),
        ] {
            assert!(
                meta.contains(&(kv.0.into(), kv.1.into())),
                "{kv:?} in {meta:?}"
            );
        }

        // Status is hourly too; usage counters are daily.
        let t = RecordType::UsageCounters;
        let d = lake.partition_dir(t, AT).unwrap();
        assert_eq!(d.key(t), "table=usage_counters/date=2025-11-21");
        let d = lake.partition_dir(RecordType::DeviceStatus, AT).unwrap();
        assert_eq!(
            d.key(RecordType::DeviceStatus),
            "table=device_status/date=2025-11-21/hour=04"
        );

        // A status file: enums dictionary-encoded strings, UTC timestamps,
        // supplies a list of structs.
        let t = RecordType::DeviceStatus;
        let mut seg = lake
            .open(t, tr.arrow_schema(t).unwrap(), "fp.raw.st", 0, d, 0)
            .await
            .unwrap();
        for o in 0..3 {
            seg.push(o, row(&tr, t)).unwrap();
        }
        let p = lake.publish(seg).await.unwrap();
        let file = File::open(&p.files[0]).unwrap();
        let pm = ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .unwrap();
        let schema = pm.file_metadata().schema_descr();
        let rg = pm.row_group(0);
        let col = |name: &str| {
            (0..schema.num_columns())
                .find(|i| schema.column(*i).path().string() == name)
                .unwrap_or_else(|| panic!("no column {name}"))
        };
        let observed = col("observed_at");
        assert!(matches!(
            schema.column(observed).logical_type_ref(),
            Some(LogicalType::Timestamp(ts)) if ts.is_adjusted_to_u_t_c && matches!(ts.unit, PqTimeUnit::MILLIS)
        ));
        let state = col("hr_printer_status");
        assert!(matches!(
            schema.column(state).logical_type_ref(),
            Some(LogicalType::String)
        ));
        let enc = rg.column(state).encodings().collect::<Vec<_>>();
        assert!(
            enc.contains(&Encoding::RLE_DICTIONARY) || enc.contains(&Encoding::PLAIN_DICTIONARY),
            "{enc:?}"
        );
        assert!(schema.columns().iter().any(|c| c
            .path()
            .string()
            .starts_with("supplies.list.item.supply_type")));
        for i in 0..rg.num_columns() {
            assert!(matches!(rg.column(i).compression(), Compression::ZSTD(_)));
            assert!(
                rg.column(i).statistics().is_some(),
                "statistics of column {i}"
            );
        }
    }

    #[tokio::test]
    async fn a_replay_meets_present_files_and_writes_each_offset_once() {
        let dir = tempfile::tempdir().unwrap();
        let tr = transformer();
        let lake = LakeWriter::local(dir.path());
        // Run 1 rejected offset 10 and published 11..=14, then crashed.
        let (seg, _) = fill(&lake, &tr, 11..15).await;
        lake.publish(seg).await.unwrap();

        // Run 2 accepts offset 10: it is written alone, 11..=14 are covered,
        // and a row past them may not join the file of offset 10.
        let (seg, refused) = fill(&lake, &tr, 10..12).await;
        assert_eq!(seg.admit(15), Admit::Boundary);
        assert_eq!(refused, [(11, Admit::Covered { last: 14 })]);
        assert_eq!(lake.publish(seg).await.unwrap().rows_written, 1);
        let (mut seg, refused) = fill(&lake, &tr, 11..20).await;
        assert_eq!(
            refused,
            (11..15)
                .map(|o| (o, Admit::Covered { last: 14 }))
                .collect::<Vec<_>>()
        );
        assert!(seg.met_present(12));
        assert!(!seg.met_present(13), "a present file is counted once");
        assert_eq!(seg.first_offset(), Some(15));
        lake.publish(seg).await.unwrap();

        // The same replay again: nothing new; a same-name file holding the
        // same rows is skipped.
        let (seg, refused) = fill(&lake, &tr, 15..20).await;
        assert_eq!(refused.len(), 5);
        assert!(seg.is_empty());
        let t = RecordType::DeviceHeartbeat;
        let d = lake.partition_dir(t, AT).unwrap();
        // Opened before run 2 published 15..=19 (a zombie): the name is taken.
        let mut zombie = lake
            .open(t, tr.arrow_schema(t).unwrap(), "fp.raw.hb", 2, d, 20)
            .await
            .unwrap();
        zombie.first = None;
        for o in 15..18 {
            zombie.push(o, row(&tr, t)).unwrap();
        }
        let p = lake.publish(zombie).await.unwrap();
        assert_eq!((p.rows_written, p.files_skipped, p.rows_skipped), (0, 1, 3));
        let mut zombie = lake
            .open(t, tr.arrow_schema(t).unwrap(), "fp.raw.hb", 2, d, 20)
            .await
            .unwrap();
        for o in 15..25 {
            zombie.push(o, row(&tr, t)).unwrap();
        }
        let e = lake.publish(zombie).await.unwrap_err();
        assert!(
            matches!(
                e,
                LakeError::Conflict {
                    present_last: 19,
                    last: 24,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.is_retriable());

        // Every offset 10..=19 exactly once, no temporary files left.
        let day = dir
            .path()
            .join("table=device_heartbeat/date=2025-11-21/hour=04");
        let mut names: Vec<String> = std::fs::read_dir(&day)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "part-fp.raw.hb-2-00000000000000000010.parquet",
                "part-fp.raw.hb-2-00000000000000000011.parquet",
                "part-fp.raw.hb-2-00000000000000000015.parquet",
            ]
        );
        let mut offsets = Vec::new();
        for n in names {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(day.join(n)).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for b in reader {
                let b = b.unwrap();
                let col = b
                    .column_by_name(COL_OFFSET)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .unwrap()
                    .clone();
                offsets.extend(col.values().iter().copied());
            }
        }
        offsets.sort();
        assert_eq!(offsets, (10..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_present_file_without_footer_is_an_error_not_a_skip() {
        let dir = tempfile::tempdir().unwrap();
        let tr = transformer();
        let lake = LakeWriter::local(dir.path());
        let t = RecordType::DeviceHeartbeat;
        let d = lake.partition_dir(t, AT).unwrap();
        let path = lake_path(dir.path(), &file_key(t, &d, "fp.raw.hb", 2, 0));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"garbage").unwrap();
        let e = lake
            .open(t, tr.arrow_schema(t).unwrap(), "fp.raw.hb", 2, d, 0)
            .await
            .unwrap_err();
        assert!(matches!(e, LakeError::Corrupt { .. }), "{e}");
        assert!(!e.is_retriable());
    }

    fn lake_path(root: &Path, key: &str) -> std::path::PathBuf {
        LocalStore::new(root).path(key)
    }

    #[tokio::test]
    async fn rows_are_encoded_as_they_come_in_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let tr = transformer();
        let lake = LakeWriter::new(
            Store::Local(LocalStore::new(dir.path())),
            FileOptions {
                row_group_rows: 5000,
                ..FileOptions::default()
            },
            &[],
        );
        let t = RecordType::DeviceHeartbeat;
        let d = lake.partition_dir(t, AT).unwrap();
        assert_eq!(d.hour, None, "no hourly tables configured");
        let mut seg = lake
            .open(t, tr.arrow_schema(t).unwrap(), "fp.raw.hb", 0, d, 0)
            .await
            .unwrap();
        let r = row(&tr, t);
        let mut json_bytes = 0;
        for o in 0..(BATCH_ROWS as i64 * 2 + 10) {
            json_bytes += 2 + row_estimate(&r) + 40;
            seg.push(o, r.clone()).unwrap();
        }
        // Two batches were encoded: memory is far below the rows' JSON size.
        assert!(seg.writer.is_some());
        assert!(
            seg.memory_bytes() < json_bytes / 3,
            "{} vs {json_bytes}",
            seg.memory_bytes()
        );
        let p = lake.publish(seg).await.unwrap();
        let file = File::open(&p.files[0]).unwrap();
        let pm = ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .unwrap();
        assert_eq!(pm.file_metadata().num_rows(), BATCH_ROWS as i64 * 2 + 10);
        assert!(pm.num_row_groups() >= 3, "row groups of at most 5000 rows");
        assert!(pm.row_groups().iter().all(|g| g.num_rows() <= 5000));
    }

    #[test]
    fn dates_outside_sane_years_are_rejected() {
        assert_eq!(
            utc_date(0).unwrap(),
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
        );
        assert!(utc_date(i64::MAX).is_none());
        assert!(utc_date(-62_200_000_000_000).is_none());
    }
}
