//! The processor's per-message work without a broker: for benchmarks and
//! offline tools.
//!
//! A [`PartitionWriter`] is one partition's pipeline: it takes messages as
//! the consumer receives them (topic, key, payload, headers, Kafka
//! timestamp) and runs the processor's own steps on them: signature and time
//! check ([`Verifier::authenticate`]), schema check ([`Verifier::datum`]),
//! decode and anonymise, then Arrow and zstd Parquet with the lake's writer
//! settings ([`LakeWriter::writer_properties`], [`crate::lake::write_parquet`]).
//! Files go to memory (counted, then dropped) or to a directory; there is no
//! Kafka, no fsync and no offset commit, which is what makes it a measure of
//! the CPU work per record.
//!
//! Two encoders are available ([`Encoder`]): the generic one the consumer
//! runs (Avro value tree -> JSON row -> arrow-json) and the columnar one
//! ([`crate::columnar`]). Stage timing is optional because reading the
//! clock between stages costs a few percent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::schema::RecordType;

use crate::columnar::{ColumnarPlan, ColumnarTable, Scratch};
use crate::lake::{utc_date, write_parquet, LakeWriter};
use crate::privacy::{observed_at, TransformError, Transformer};
use crate::verify::{connector_matches, ReferenceTime, Rejection, Verifier};
use fleetpulse_core::codec;

/// One message as the consumer receives it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Topic it was read from.
    pub topic: &'a str,
    /// Its offset.
    pub offset: i64,
    /// Message key.
    pub key: &'a [u8],
    /// Message value (Avro single-object encoding).
    pub payload: &'a [u8],
    /// Headers, `(name, value)`.
    pub headers: &'a [(String, Vec<u8>)],
    /// Kafka timestamp (CreateTime), ms.
    pub timestamp_ms: i64,
}

/// How records become Arrow columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// Avro value tree -> anonymised JSON row -> arrow-json (the consumer's path).
    Generic,
    /// Schema-driven decoder straight into Arrow builders ([`crate::columnar`]).
    Columnar,
}

impl Encoder {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Generic => "generic",
            Encoder::Columnar => "columnar",
        }
    }
}

/// Where the Parquet files go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Written to memory, counted, dropped.
    Memory,
    /// Written as `<dir>/<table>/part-<partition>-<first_offset>.parquet`.
    Dir(PathBuf),
}

/// Time spent per stage (filled when stage timing is on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages {
    /// Signature headers, HMAC over the message, signing-time window.
    pub authenticate: Duration,
    /// Avro decode and checks (schema, datum, connector, date).
    pub decode: Duration,
    /// Anonymise into the buffer (generic: JSON row; columnar: Arrow builders).
    pub anonymise: Duration,
    /// Buffered rows to an Arrow record batch.
    pub arrow: Duration,
    /// Record batch to zstd Parquet bytes.
    pub parquet: Duration,
}

impl Stages {
    /// Sum of the stages.
    pub fn total(&self) -> Duration {
        self.authenticate + self.decode + self.anonymise + self.arrow + self.parquet
    }

    /// Add another partition's stages.
    pub fn add(&mut self, o: &Stages) {
        self.authenticate += o.authenticate;
        self.decode += o.decode;
        self.anonymise += o.anonymise;
        self.arrow += o.arrow;
        self.parquet += o.parquet;
    }
}

/// What a partition did.
#[derive(Debug, Clone, Default)]
pub struct PartitionStats {
    /// Records accepted into a buffer.
    pub accepted: u64,
    /// Rejected records by class.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Rows in the Parquet files written.
    pub rows_written: u64,
    /// Files written.
    pub files: u64,
    /// Bytes of the Parquet files.
    pub parquet_bytes: u64,
    /// Payload bytes of the messages processed.
    pub payload_bytes: u64,
    /// Time per stage (zero unless stage timing is on).
    pub stages: Stages,
}

/// Why a partition writer could not be built or could not write.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A schema of the contract cannot be encoded.
    #[error("schema: {0}")]
    Schema(#[from] TransformError),
    /// Rows could not become a Parquet file.
    #[error("encode {table}: {reason}")]
    Encode {
        /// The table.
        table: &'static str,
        /// What failed.
        reason: String,
    },
    /// A file could not be written to the sink directory.
    #[error("write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl BatchError {
    /// Whether trying again may help (I/O may; a schema defect will not).
    pub fn is_retriable(&self) -> bool {
        matches!(self, BatchError::Io { .. })
    }
}

/// The columnar plans of every record type, compiled once and shared.
#[derive(Debug, Clone)]
pub struct Plans(Arc<BTreeMap<RecordType, Arc<ColumnarPlan>>>);

impl Plans {
    /// Compile the plans of every record type for `transformer`'s lake columns.
    pub fn new(transformer: &Transformer) -> Result<Plans, TransformError> {
        let mut plans = BTreeMap::new();
        for t in RecordType::ALL {
            let schema = transformer.arrow_schema(t).ok_or_else(|| TransformError {
                path: t.name().into(),
                reason: "record type not prepared".into(),
            })?;
            plans.insert(t, Arc::new(ColumnarPlan::new(t, schema)?));
        }
        Ok(Plans(Arc::new(plans)))
    }
}

/// Transformed rows (the generic JSON-row path) of one table and date.
#[derive(Debug)]
struct RowBuffer {
    date: NaiveDate,
    first: i64,
    last: i64,
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Rows of one table waiting for their file.
#[derive(Debug)]
enum Buffer {
    Generic(RowBuffer),
    Columnar {
        table: Box<ColumnarTable>,
        date: NaiveDate,
        first: i64,
        last: i64,
    },
}

impl Buffer {
    fn len(&self) -> usize {
        match self {
            Buffer::Generic(s) => s.rows.len(),
            Buffer::Columnar { table, .. } => table.len(),
        }
    }

    fn date(&self) -> NaiveDate {
        match self {
            Buffer::Generic(s) => s.date,
            Buffer::Columnar { date, .. } => *date,
        }
    }
}

/// One partition's pipeline (see the module docs).
#[derive(Debug)]
pub struct PartitionWriter {
    kafka: KafkaConfig,
    verifier: Verifier,
    transformer: Arc<Transformer>,
    plans: Plans,
    lake: LakeWriter,
    encoder: Encoder,
    partition: i32,
    rows_per_file: usize,
    sink: Sink,
    buffers: BTreeMap<RecordType, Buffer>,
    scratch: Scratch,
    timing: bool,
    stats: PartitionStats,
}

impl PartitionWriter {
    /// A pipeline for `partition` of the topics named by `kafka`, writing a
    /// file per table every `rows_per_file` rows (and at [`PartitionWriter::finish`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kafka: KafkaConfig,
        verifier: Verifier,
        transformer: Arc<Transformer>,
        plans: Plans,
        encoder: Encoder,
        partition: i32,
        rows_per_file: usize,
        sink: Sink,
    ) -> PartitionWriter {
        PartitionWriter {
            kafka,
            verifier,
            transformer,
            plans,
            lake: LakeWriter::local("."),
            encoder,
            partition,
            rows_per_file: rows_per_file.max(1),
            sink,
            buffers: BTreeMap::new(),
            scratch: Scratch::default(),
            timing: false,
            stats: PartitionStats::default(),
        }
    }

    /// Time every stage (costs a few clock reads per record).
    pub fn with_stage_timing(mut self, on: bool) -> PartitionWriter {
        self.timing = on;
        self
    }

    /// What was done so far.
    pub fn stats(&self) -> &PartitionStats {
        &self.stats
    }

    fn lap(&self, since: &mut Option<Instant>) -> Duration {
        match since {
            Some(t) => {
                let now = Instant::now();
                let d = now - *t;
                *t = now;
                d
            }
            None => Duration::ZERO,
        }
    }

    /// Process one message; a rejected one is counted by class (the
    /// processor would dead-letter it) and returned.
    pub fn process(&mut self, m: &Message<'_>, now_ms: i64) -> Result<(), BatchError> {
        self.stats.payload_bytes += m.payload.len() as u64;
        match self.accept(m, now_ms) {
            Ok(()) => {
                self.stats.accepted += 1;
                Ok(())
            }
            Err(Outcome::Rejected(r)) => {
                *self.stats.rejected.entry(r.class).or_default() += 1;
                Ok(())
            }
            Err(Outcome::Failed(e)) => Err(e),
        }
    }

    fn accept(&mut self, m: &Message<'_>, now_ms: i64) -> Result<(), Outcome> {
        let mut clock = self.timing.then(Instant::now);
        let Some(t) = self.kafka.record_type_of(m.topic) else {
            return Err(
                Rejection::new("unknown_topic", "topic carries no known record type").into(),
            );
        };
        let reference = ReferenceTime::of(rdkafka::Timestamp::CreateTime(m.timestamp_ms), now_ms);
        // The alerter's topic is not signed (see `include_alerts`).
        let fields = if t == RecordType::MaintenanceAlert {
            None
        } else {
            let headers = m
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())));
            Some(
                self.verifier
                    .authenticate(m.topic, m.key, m.payload, headers, reference)?,
            )
        };
        self.stats.stages.authenticate += self.lap(&mut clock);
        let datum = self.verifier.datum(t, m.payload)?;
        match self.encoder {
            Encoder::Generic => {
                let (_, value) = codec::decode_value(m.payload)
                    .map_err(|e| Rejection::new(e.class(), e.to_string()))?;
                if let Some((_, connector)) = &fields {
                    connector_matches(connector, crate::verify::record_connector(&value))?;
                }
                let date = observed_at(&value).and_then(utc_date).ok_or_else(|| {
                    Rejection::new("bad_datum", "observed_at is outside years 1..=9999")
                })?;
                self.stats.stages.decode += self.lap(&mut clock);
                let row = self
                    .transformer
                    .transform(t, &value)
                    .map_err(|e| Rejection::new("bad_datum", e.to_string()))?;
                drop(value);
                self.roll_if_other_date(t, date)?;
                let partition = self.partition;
                let buffer = self.buffers.entry(t).or_insert_with(|| {
                    Buffer::Generic(RowBuffer {
                        date,
                        first: m.offset,
                        last: m.offset,
                        rows: Vec::new(),
                    })
                });
                if let Buffer::Generic(s) = buffer {
                    let mut row = row;
                    row.insert(
                        crate::privacy::COL_PARTITION.into(),
                        serde_json::Value::from(partition),
                    );
                    row.insert(
                        crate::privacy::COL_OFFSET.into(),
                        serde_json::Value::from(m.offset),
                    );
                    s.last = m.offset;
                    s.rows.push(row);
                }
                self.stats.stages.anonymise += self.lap(&mut clock);
            }
            Encoder::Columnar => {
                let plan = self.plans.0.get(&t).ok_or_else(|| {
                    Outcome::Failed(BatchError::Schema(TransformError {
                        path: t.name().into(),
                        reason: "no columnar plan".into(),
                    }))
                })?;
                let info = plan.decode(datum, &mut self.scratch)?;
                if let Some((_, connector)) = &fields {
                    connector_matches(connector, self.scratch.connector_id(datum))?;
                }
                let date = info.observed_at.and_then(utc_date).ok_or_else(|| {
                    Rejection::new("bad_datum", "observed_at is outside years 1..=9999")
                })?;
                self.stats.stages.decode += self.lap(&mut clock);
                self.roll_if_other_date(t, date)?;
                if !self.buffers.contains_key(&t) {
                    let plan = self.plans.0.get(&t).cloned().ok_or_else(|| {
                        Outcome::Failed(BatchError::Schema(TransformError {
                            path: t.name().into(),
                            reason: "no columnar plan".into(),
                        }))
                    })?;
                    let table = ColumnarTable::new(plan, self.transformer.pseudonymizer().clone())
                        .map_err(|e| Outcome::Failed(e.into()))?;
                    self.buffers.insert(
                        t,
                        Buffer::Columnar {
                            table: Box::new(table),
                            date,
                            first: m.offset,
                            last: m.offset,
                        },
                    );
                }
                if let Some(Buffer::Columnar { table, last, .. }) = self.buffers.get_mut(&t) {
                    *last = m.offset;
                    table.append(&self.scratch, datum, self.partition, m.offset);
                }
                self.stats.stages.anonymise += self.lap(&mut clock);
            }
        }
        if self
            .buffers
            .get(&t)
            .is_some_and(|b| b.len() >= self.rows_per_file)
        {
            self.flush(t).map_err(Outcome::Failed)?;
        }
        Ok(())
    }

    /// One file holds one date: a record of another date closes the buffer.
    fn roll_if_other_date(&mut self, t: RecordType, date: NaiveDate) -> Result<(), Outcome> {
        if self
            .buffers
            .get(&t)
            .is_some_and(|b| b.len() > 0 && b.date() != date)
        {
            self.flush(t).map_err(Outcome::Failed)?;
        }
        Ok(())
    }

    /// Write every buffered row.
    pub fn finish(&mut self) -> Result<&PartitionStats, BatchError> {
        let types: Vec<RecordType> = self.buffers.keys().copied().collect();
        for t in types {
            self.flush(t)?;
        }
        Ok(&self.stats)
    }

    fn flush(&mut self, t: RecordType) -> Result<(), BatchError> {
        let mut clock = self.timing.then(Instant::now);
        let table = t.name();
        let encode = |reason: String| BatchError::Encode { table, reason };
        let topic = self.kafka.topic(t);
        let (batch, first, last) = match self.buffers.remove(&t) {
            None => return Ok(()),
            Some(b) if b.len() == 0 => return Ok(()),
            Some(Buffer::Generic(buf)) => {
                let schema = self
                    .transformer
                    .arrow_schema(t)
                    .ok_or_else(|| encode("record type not prepared".into()))?;
                let rows: Vec<&serde_json::Map<String, serde_json::Value>> =
                    buf.rows.iter().collect();
                let batch = crate::arrow_schema::record_batch(&schema, &rows)
                    .map_err(|e| encode(e.to_string()))?;
                (batch, buf.first, buf.last)
            }
            Some(Buffer::Columnar {
                mut table,
                first,
                last,
                ..
            }) => {
                let batch = table.finish().map_err(|e| encode(e.to_string()))?;
                (batch, first, last)
            }
        };
        self.stats.stages.arrow += self.lap(&mut clock);
        let props = self
            .lake
            .writer_properties(&topic, self.partition, first, last);
        let bytes =
            write_parquet(Vec::new(), &batch, props).map_err(|e| encode(format!("{e:?}")))?;
        self.stats.stages.parquet += self.lap(&mut clock);
        self.stats.rows_written += batch.num_rows() as u64;
        self.stats.files += 1;
        self.stats.parquet_bytes += bytes.len() as u64;
        if let Sink::Dir(dir) = &self.sink {
            let dir = dir.join(table);
            let path = dir.join(format!("part-{}-{first:020}.parquet", self.partition));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, &bytes))
                .map_err(|source| BatchError::Io { path, source })?;
        }
        Ok(())
    }
}

enum Outcome {
    Rejected(Rejection),
    Failed(BatchError),
}

impl From<Rejection> for Outcome {
    fn from(r: Rejection) -> Outcome {
        Outcome::Rejected(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::pseudonym::Pseudonymizer;
    use fleetpulse_core::samples;
    use fleetpulse_core::signing::*;

    const SECRET: &[u8] = b"batch-test-secret-000001";

    #[test]
    fn topics_map_back_to_their_record_type() {
        for prefix in ["fleetpulse", "acme.prod"] {
            let k = KafkaConfig {
                topic_prefix: prefix.into(),
                ..KafkaConfig::default()
            };
            for t in RecordType::ALL {
                assert_eq!(k.record_type_of(&k.topic(t)), Some(t), "{prefix} {t}");
            }
            assert_eq!(k.record_type_of(&format!("{prefix}.raw.nope")), None);
            assert_eq!(
                k.record_type_of(&format!("{prefix}raw.device_status")),
                None
            );
            assert_eq!(k.record_type_of("other.raw.device_status"), None);
        }
    }

    /// Both encoders accept the same messages, write the same rows and
    /// reject tampered ones with the consumer's classes.
    #[test]
    fn both_encoders_accept_and_reject_the_same() {
        let kafka = KafkaConfig::default();
        let tr =
            Arc::new(Transformer::new(Pseudonymizer::new(b"k-0123456789abcdef", "v1")).unwrap());
        let plans = Plans::new(&tr).unwrap();
        let key = SigningKey::derive(SECRET, "conn-1");
        let ts = 1_763_700_000_000;
        let mut input = Vec::new();
        for (i, payload) in [
            codec::encode(&samples::device_status("S1")).unwrap(),
            codec::encode(&samples::device_heartbeat("S2")).unwrap(),
            codec::encode(&samples::usage_counters("S3")).unwrap(),
        ]
        .into_iter()
        .enumerate()
        {
            let t = codec::peek_type(&payload).unwrap();
            let topic = kafka.topic(t);
            let sig = key.sign(&topic, b"S", i as u64, ts, &payload);
            let headers = vec![(HDR_SIG.to_string(), sig.to_bytes().to_vec())];
            input.push((topic, payload, headers));
        }
        // Tampered payload, and a record moved to another topic.
        let mut bad = input[1].clone();
        let last = bad.1.len() - 1;
        bad.1[last] ^= 1;
        input.push(bad);
        let mut moved = input[2].clone();
        moved.0 = kafka.topic(RecordType::DeviceStatus);
        input.push(moved);
        for encoder in [Encoder::Generic, Encoder::Columnar] {
            let mut w = PartitionWriter::new(
                kafka.clone(),
                Verifier::new([("conn-1", SECRET)]),
                tr.clone(),
                plans.clone(),
                encoder,
                3,
                2,
                Sink::Memory,
            );
            for (offset, (topic, payload, headers)) in input.iter().enumerate() {
                let m = Message {
                    topic,
                    offset: offset as i64,
                    key: b"S",
                    payload,
                    headers,
                    timestamp_ms: ts,
                };
                w.process(&m, ts + 1_000).unwrap();
            }
            let st = w.finish().unwrap().clone();
            assert_eq!(st.accepted, 3, "{encoder:?}");
            assert_eq!(st.rows_written, 3, "{encoder:?}");
            assert_eq!(st.files, 3, "{encoder:?}");
            assert!(st.parquet_bytes > 0);
            assert_eq!(
                st.rejected.into_iter().collect::<Vec<_>>(),
                [("bad_signature", 2)],
                "{encoder:?}"
            );
        }
    }
}
