//! The Parquet lake: one file per contiguous offset range of one partition
//! and one date, published with create-if-absent semantics.
//!
//! Exactly-once without a transaction log: a file's name is derived from the
//! Kafka offset of its first row (`part-<partition>-<first_offset>.parquet`),
//! and a file is published by `hard_link(tmp, final)`, which fails when the
//! name exists. After a crash, the processor replays from the committed
//! offset; the first row it buffers has the same offset as the first row of
//! the file the crashed run may have published, so it meets that file,
//! reads the last offset it holds from the footer, and skips exactly those
//! rows. Roll timing may differ between runs; the names never collide with
//! different contents because each file starts where the previous one ended.
//! A replay may also decide differently (a record the crashed run rejected,
//! e.g. for clock skew, is accepted now), so a replayed segment can start
//! before a present file or run into one: publishing looks at all of the
//! partition's files of that date, skips what a present file covers and
//! stops each new file before the next present one ([`LakeWriter::publish`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arrow_schema::SchemaRef;
use chrono::{DateTime, Datelike, NaiveDate};
use fleetpulse_core::schema::RecordType;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde_json::{Map, Value as Json};

use crate::arrow_schema::record_batch;
use crate::privacy::{COL_OFFSET, COL_PARTITION};

/// File metadata key: offset of the first row.
pub const META_FIRST_OFFSET: &str = "fleetpulse.first_offset";
/// File metadata key: offset of the last row.
pub const META_LAST_OFFSET: &str = "fleetpulse.last_offset";
/// File metadata key: topic the rows were read from.
pub const META_TOPIC: &str = "fleetpulse.topic";
/// File metadata key: partition the rows were read from.
pub const META_PARTITION: &str = "fleetpulse.partition";

/// Why a file could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A file-system operation failed (disk full, permissions…).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Rows could not be turned into Arrow / Parquet (a schema defect).
    #[error("cannot encode rows for {path}: {reason}")]
    Encode {
        /// Target file.
        path: PathBuf,
        /// The encoder's words.
        reason: String,
    },
    /// A published file lacks a readable `fleetpulse.last_offset`.
    #[error("lake file {path} is unreadable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl LakeError {
    /// Whether trying again later may succeed (I/O may; a schema defect or
    /// a corrupt published file needs a person).
    pub fn is_retriable(&self) -> bool {
        matches!(self, LakeError::Io { .. })
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LakeError + 'a {
    move |source| LakeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// UTC date of a timestamp, if it is within years 1..=9999 (a sane partition name).
pub fn utc_date(ms: i64) -> Option<NaiveDate> {
    let d = DateTime::from_timestamp_millis(ms)?.date_naive();
    (1..=9999).contains(&d.year()).then_some(d)
}

/// Buffered rows of one partition and one date, in offset order: the
/// contents of the next file.
#[derive(Debug, Clone)]
pub struct Segment {
    record_type: RecordType,
    topic: String,
    partition: i32,
    date: NaiveDate,
    rows: Vec<(i64, Map<String, Json>)>,
    bytes: usize,
}

impl Segment {
    /// An empty segment.
    pub fn new(record_type: RecordType, topic: &str, partition: i32, date: NaiveDate) -> Segment {
        Segment {
            record_type,
            topic: topic.to_string(),
            partition,
            date,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// Add a transformed row read at `offset` (offsets must increase).
    pub fn push(&mut self, offset: i64, mut row: Map<String, Json>) {
        row.insert(COL_PARTITION.into(), Json::from(self.partition));
        row.insert(COL_OFFSET.into(), Json::from(offset));
        self.bytes += 2 + row_estimate(&row);
        self.rows.push((offset, row));
    }

    /// The date of every row.
    pub fn date(&self) -> NaiveDate {
        self.date
    }

    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Estimated size of the rows (their JSON size).
    pub fn estimated_bytes(&self) -> usize {
        self.bytes
    }

    /// Offset of the first row.
    pub fn first_offset(&self) -> Option<i64> {
        self.rows.first().map(|(o, _)| *o)
    }

    /// Offset of the last row.
    pub fn last_offset(&self) -> Option<i64> {
        self.rows.last().map(|(o, _)| *o)
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

/// What publishing a segment did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Rows this call made durable.
    pub rows_written: u64,
    /// Files this call created.
    pub files: Vec<PathBuf>,
    /// Files found already present (rows skipped).
    pub files_skipped: u64,
    /// Rows dropped because a present file already holds them.
    pub rows_skipped: u64,
    /// Highest `fleetpulse.last_offset` of the files found present.
    pub skip_until: Option<i64>,
    /// Every offset up to this one is durable in the lake (or was not a row).
    pub durable_through: Option<i64>,
}

/// Writes segments as Parquet files under a lake directory.
#[derive(Debug, Clone)]
pub struct LakeWriter {
    dir: PathBuf,
    zstd_level: i32,
}

impl LakeWriter {
    /// A writer under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> LakeWriter {
        LakeWriter {
            dir: dir.into(),
            zstd_level: 3,
        }
    }

    /// The lake directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<lake>/<record_type>/date=YYYY-MM-DD/part-<partition>-<first_offset:020>.parquet`.
    pub fn file_path(
        &self,
        record_type: RecordType,
        date: NaiveDate,
        partition: i32,
        first_offset: i64,
    ) -> PathBuf {
        self.dir
            .join(record_type.name())
            .join(format!("date={}", date.format("%Y-%m-%d")))
            .join(format!("part-{partition}-{first_offset:020}.parquet"))
    }

    /// Make the segment durable: write the rows not already in a present
    /// file, skipping those that are. See the module docs.
    ///
    /// The partition's files present in the segment's date directory are
    /// listed first. Rows up to the `last_offset` of the nearest file that
    /// starts at or before a row are skipped, and a new file ends before the
    /// next present file's first offset (the rest is written as its own
    /// file), so a replay whose accept/reject decisions differ from the
    /// crashed run's (a record rejected then, accepted now) still writes
    /// every offset once. Only this date directory can hold the rows: a
    /// row's date comes from the record itself, so an offset accepted by two
    /// runs lands in the same directory both times. The listing is not
    /// cached, so files another processor published before a rebalance are
    /// always seen.
    pub fn publish(&self, segment: Segment, schema: SchemaRef) -> Result<Published, LakeError> {
        let mut out = Published {
            durable_through: segment.last_offset(),
            ..Published::default()
        };
        let rows = segment.rows;
        if rows.is_empty() {
            return Ok(out);
        }
        let dir = self
            .file_path(segment.record_type, segment.date, segment.partition, 0)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        self.ensure_dir(&dir)?;
        let mut present = present_files(&dir, segment.partition)?;
        let mut start = 0;
        while start < rows.len() {
            let first = rows[start].0;
            // A present file that starts at or before this row and reaches it.
            if let Some((&file_first, path)) = present.range(..=first).next_back() {
                let last = read_last_offset(path)?;
                if last >= first {
                    skipped_existing(path, file_first, last);
                    out.files_skipped += 1;
                    out.skip_until = out.skip_until.max(Some(last));
                    out.durable_through = out.durable_through.max(Some(last));
                    let next = start + rows[start..].partition_point(|(o, _)| *o <= last);
                    out.rows_skipped += (next - start) as u64;
                    start = next;
                    continue;
                }
            }
            // End before the next present file: it holds what follows.
            let next_file = present
                .range(first.saturating_add(1)..)
                .next()
                .map(|(f, _)| *f);
            let end =
                start + rows[start..].partition_point(|(o, _)| next_file.is_none_or(|n| *o < n));
            let path = self.file_path(segment.record_type, segment.date, segment.partition, first);
            let chunk = &rows[start..end];
            let tmp = dir.join(format!(
                ".part-{}-{first:020}.parquet.{}-{}.tmp",
                segment.partition,
                std::process::id(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            let written = self.write_file(
                &tmp,
                &path,
                schema.clone(),
                chunk,
                &segment.topic,
                segment.partition,
            );
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    sync_dir(&dir)?;
                    out.rows_written += chunk.len() as u64;
                    out.files.push(path.clone());
                    present.insert(first, path);
                    start = end;
                }
                // Someone published the same name meanwhile: read theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    present.insert(first, path);
                }
                Err(e) => return Err(io_err("publish", &path)(e)),
            }
        }
        Ok(out)
    }

    fn ensure_dir(&self, dir: &Path) -> Result<(), LakeError> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        // Make the new directory entries durable too.
        let mut d = dir.parent();
        while let Some(p) = d {
            sync_dir(p)?;
            if p == self.dir || !p.starts_with(&self.dir) {
                break;
            }
            d = p.parent();
        }
        Ok(())
    }

    fn write_file(
        &self,
        tmp: &Path,
        final_path: &Path,
        schema: SchemaRef,
        rows: &[(i64, Map<String, Json>)],
        topic: &str,
        partition: i32,
    ) -> Result<(), LakeError> {
        let encode = |reason: String| LakeError::Encode {
            path: final_path.to_path_buf(),
            reason,
        };
        let first = rows.first().map(|(o, _)| *o).unwrap_or(0);
        let last = rows.last().map(|(o, _)| *o).unwrap_or(0);
        let json_rows: Vec<&Map<String, Json>> = rows.iter().map(|(_, r)| r).collect();
        let batch = record_batch(&schema, &json_rows).map_err(|e| encode(e.to_string()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.zstd_level).unwrap_or_default(),
            ))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_key_value_metadata(Some(vec![
                KeyValue::new(META_FIRST_OFFSET.into(), first.to_string()),
                KeyValue::new(META_LAST_OFFSET.into(), last.to_string()),
                KeyValue::new(META_TOPIC.into(), topic.to_string()),
                KeyValue::new(META_PARTITION.into(), partition.to_string()),
            ]))
            .build();
        let file = File::create(tmp).map_err(io_err("create", tmp))?;
        let mut writer = ArrowWriter::try_new(
            file.try_clone().map_err(io_err("open", tmp))?,
            schema,
            Some(props),
        )
        .map_err(|e| encode(e.to_string()))?;
        writer.write(&batch).map_err(|e| encode(e.to_string()))?;
        writer.close().map_err(|e| LakeError::Io {
            op: "write",
            path: tmp.to_path_buf(),
            source: io::Error::other(e.to_string()),
        })?;
        file.sync_all().map_err(io_err("fsync", tmp))?;
        Ok(())
    }

    /// Remove temporary files older than `max_age` left by crashed writers.
    /// Younger ones may belong to a live processor and are left alone.
    pub fn sweep_temp_files(&self, max_age: Duration) -> usize {
        let mut removed = 0;
        let now = SystemTime::now();
        let Ok(tables) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        for table in tables.flatten() {
            let Ok(dates) = std::fs::read_dir(table.path()) else {
                continue;
            };
            for date in dates.flatten() {
                let Ok(files) = std::fs::read_dir(date.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name();
                    let name = name.to_string_lossy();
                    if !(name.starts_with(".part-") && name.ends_with(".tmp")) {
                        continue;
                    }
                    let old = f
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| now.duration_since(m).ok())
                        .is_some_and(|age| age > max_age);
                    if old && std::fs::remove_file(f.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        removed
    }
}

fn skipped_existing(path: &Path, first: i64, last: i64) {
    tracing::info!(
        path = %path.display(),
        first_offset = first,
        last_offset = last,
        "lake file already present, skipping the rows it holds"
    );
    metrics::counter!("fleetpulse_processor_files_skipped_total").increment(1);
}

/// The published files of `partition` in a date directory, by first offset
/// (from their names; temporary files and other partitions are ignored).
fn present_files(dir: &Path, partition: i32) -> Result<BTreeMap<i64, PathBuf>, LakeError> {
    let prefix = format!("part-{partition}-");
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(io_err("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".parquet"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        out.insert(first, entry.path());
    }
    Ok(out)
}

/// `fsync` a directory so the entries created in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// A file's `fleetpulse.*` footer metadata, by key.
pub fn read_metadata(path: &Path) -> Result<Vec<(String, String)>, LakeError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| LakeError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(meta
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
                .collect()
        })
        .unwrap_or_default())
}

/// `fleetpulse.last_offset` of a published file.
pub fn read_last_offset(path: &Path) -> Result<i64, LakeError> {
    read_metadata(path)?
        .into_iter()
        .find(|(k, _)| k == META_LAST_OFFSET)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| LakeError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("no integer {META_LAST_OFFSET} in the footer"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::Transformer;
    use fleetpulse_core::pseudonym::Pseudonymizer;
    use fleetpulse_core::{codec, samples};

    fn segment(tr: &Transformer, offsets: impl IntoIterator<Item = i64>) -> Segment {
        let date = utc_date(1_763_700_000_000).unwrap();
        let mut seg = Segment::new(RecordType::DeviceHeartbeat, "t", 2, date);
        for o in offsets {
            let bytes = codec::encode(&samples::device_heartbeat("S")).unwrap();
            let (t, v) = codec::decode_value(&bytes).unwrap();
            seg.push(o, tr.transform(t, &v).unwrap());
        }
        seg
    }

    #[test]
    fn publish_is_create_if_absent_and_skips_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let tr = Transformer::new(Pseudonymizer::new(b"k-0123456789abcdef", "v1")).unwrap();
        let schema = tr.arrow_schema(RecordType::DeviceHeartbeat).unwrap();
        let lake = LakeWriter::new(dir.path());

        let p = lake.publish(segment(&tr, 10..15), schema.clone()).unwrap();
        assert_eq!(p.rows_written, 5);
        assert_eq!(p.files.len(), 1);
        let name = p.files[0].strip_prefix(dir.path()).unwrap().to_owned();
        assert_eq!(
            name,
            PathBuf::from("device_heartbeat/date=2025-11-21/part-2-00000000000000000010.parquet")
        );
        assert_eq!(read_last_offset(&p.files[0]).unwrap(), 14);
        let meta = read_metadata(&p.files[0]).unwrap();
        assert!(meta.contains(&(META_TOPIC.into(), "t".into())));
        assert!(meta.contains(&(META_PARTITION.into(), "2".into())));
        assert!(meta.contains(&(META_FIRST_OFFSET.into(), "10".into())));
        let file = File::open(&p.files[0]).unwrap();
        let pm = ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .unwrap();
        let col = pm.row_group(0).column(0);
        assert!(matches!(col.compression(), Compression::ZSTD(_)));
        assert!(col.statistics().is_some(), "statistics written");

        // A replay that rolled differently: 10..20 meets the file 10..14,
        // drops those rows and writes 15..19 under its own name.
        let p = lake.publish(segment(&tr, 10..20), schema.clone()).unwrap();
        assert_eq!(p.files_skipped, 1);
        assert_eq!(p.rows_skipped, 5);
        assert_eq!(p.rows_written, 5);
        assert_eq!(p.skip_until, Some(14));
        assert_eq!(p.durable_through, Some(19));
        assert!(p.files[0].ends_with("part-2-00000000000000000015.parquet"));

        // A replay smaller than the present file writes nothing.
        let p = lake.publish(segment(&tr, 10..12), schema.clone()).unwrap();
        assert_eq!(p.rows_written, 0);
        assert_eq!(p.skip_until, Some(14));
        assert_eq!(p.durable_through, Some(14));

        // No temporary files left behind.
        let day = dir.path().join("device_heartbeat/date=2025-11-21");
        let mut names: Vec<String> = std::fs::read_dir(day)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "part-2-00000000000000000010.parquet",
                "part-2-00000000000000000015.parquet"
            ]
        );
    }

    /// Run 1 rejected offset 10, published 11..14 as part-11 and crashed
    /// before committing; run 2 accepts offset 10 and replays 10..14.
    #[test]
    fn a_replay_that_accepts_more_writes_each_offset_once() {
        let dir = tempfile::tempdir().unwrap();
        let tr = Transformer::new(Pseudonymizer::new(b"k-0123456789abcdef", "v1")).unwrap();
        let schema = tr.arrow_schema(RecordType::DeviceHeartbeat).unwrap();
        let lake = LakeWriter::new(dir.path());
        let p = lake.publish(segment(&tr, 11..15), schema.clone()).unwrap();
        assert!(p.files[0].ends_with("part-2-00000000000000000011.parquet"));
        // A present file of another partition does not matter.
        let mut other = segment(&tr, []);
        other.partition = 3;
        for (o, row) in segment(&tr, 8..10).rows {
            other.push(o, row);
        }
        lake.publish(other, schema.clone()).unwrap();

        let p = lake.publish(segment(&tr, 10..15), schema.clone()).unwrap();
        assert_eq!(p.rows_written, 1, "{p:?}");
        assert_eq!(p.rows_skipped, 4);
        assert_eq!(p.skip_until, Some(14));
        assert_eq!(p.durable_through, Some(14));
        // A later replay running past both files writes only the new tail,
        // and one starting in the middle of a file skips the rest of it.
        let p = lake.publish(segment(&tr, 9..18), schema.clone()).unwrap();
        assert_eq!(p.rows_written, 4, "{p:?}");
        assert_eq!(p.files.len(), 2, "9 alone, then 15..17");
        let p = lake.publish(segment(&tr, 12..18), schema.clone()).unwrap();
        assert_eq!(p.rows_written, 0, "{p:?}");
        assert_eq!(p.durable_through, Some(17));
        // Two present files with a gap between them: the gap is filled, each
        // new file ends before the next present one.
        let p = lake.publish(segment(&tr, 30..33), schema.clone()).unwrap();
        assert_eq!(p.rows_written, 3);
        let p = lake.publish(segment(&tr, 18..40), schema.clone()).unwrap();
        assert_eq!(p.rows_written, 22 - 3, "{p:?}");
        assert_eq!(p.files.len(), 2);

        let mut offsets = Vec::new();
        let day = dir.path().join("device_heartbeat/date=2025-11-21");
        for e in std::fs::read_dir(day).unwrap() {
            let path = e.unwrap().path();
            if path.to_string_lossy().contains("part-3-") {
                continue;
            }
            let meta = read_metadata(&path).unwrap();
            let get = |k: &str| -> i64 {
                meta.iter()
                    .find(|(m, _)| m == k)
                    .unwrap()
                    .1
                    .parse()
                    .unwrap()
            };
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(&path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            let mut in_file = Vec::new();
            for b in reader {
                let b = b.unwrap();
                let col = b
                    .column_by_name(COL_OFFSET)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .unwrap()
                    .clone();
                in_file.extend(col.values().iter().copied());
            }
            assert_eq!(in_file.first().copied(), Some(get(META_FIRST_OFFSET)));
            assert_eq!(in_file.last().copied(), Some(get(META_LAST_OFFSET)));
            offsets.extend(in_file);
        }
        offsets.sort();
        let expected: Vec<i64> = (9..40).collect();
        assert_eq!(offsets, expected, "every offset exactly once");
    }

    #[test]
    fn a_present_file_without_footer_is_an_error_not_a_skip() {
        let dir = tempfile::tempdir().unwrap();
        let tr = Transformer::new(Pseudonymizer::new(b"k-0123456789abcdef", "v1")).unwrap();
        let schema = tr.arrow_schema(RecordType::DeviceHeartbeat).unwrap();
        let lake = LakeWriter::new(dir.path());
        let seg = segment(&tr, 0..3);
        let path = lake.file_path(RecordType::DeviceHeartbeat, seg.date(), 2, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"garbage").unwrap();
        let e = lake.publish(seg, schema).unwrap_err();
        assert!(matches!(e, LakeError::Corrupt { .. }), "{e}");
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
