//! The Firehose path: raw S3 objects into the same lake tables.
//!
//! An edge that ships through AWS Firehose (`[uplink] kind = "firehose"`)
//! never touches Kafka: Firehose concatenates its envelopes
//! ([`fleetpulse_core::envelope`], one JSON line per record) into objects
//! under the stream's prefix. This source lists that prefix, reads each new
//! object, and sends every line through the same checks as a Kafka message —
//! signature, time window (against the object's LastModified, widened by
//! the stream's buffering interval), decoding, privacy transform — into the
//! same tables. Bad lines go to the dead-letter topic with a reason.
//!
//! Why it is exactly-once: an object's rows are written to files named after
//! the object (`fh-<hash of bucket/key>` takes the place of the topic, the
//! line number the place of the offset) and created only if absent; the
//! object is marked done in a durable checkpoint only afterwards. A crash in
//! between reads the object again, produces the same file names, finds them
//! present and moves on.
//!
//! What it does not do: Firehose itself is at-least-once, and an edge that
//! did not see a PutRecordBatch answer sends the records again, so the same
//! record (same `event_id`) can arrive in two objects; both copies are kept
//! (each is one delivered line, written once). The Kafka path's sequence-number
//! replay memory is not applied here.

pub mod checkpoint;
pub mod config;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use fleetpulse_core::envelope::Envelope;
use fleetpulse_core::kafka::{dlq_headers, KafkaConfig};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::telemetry::{self, COUNTERS};
use fleetpulse_core::Shutdown;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sha2::{Digest, Sha256};

pub use checkpoint::CheckpointError;
pub use config::FirehoseSourceConfig;

use crate::consumer::Stats;
use crate::lake::{Admit, LakeWriter, PartitionDir, Segment};
use crate::privacy::{observed_at, Transformer};
use crate::verify::{ReferenceTime, Rejection, TimeSource, Verifier};
use crate::ProcessorError;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) last_modified_ms: i64,
    pub(crate) size: u64,
}

/// Why reading the bucket failed. Network and service errors may pass.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    /// Listing or reading failed.
    #[error("s3://{bucket}/{key}: {op}: {reason}")]
    S3 {
        /// What was being done.
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// The SDK's message.
        reason: String,
    },
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl FirehoseError {
    /// Whether trying again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            FirehoseError::S3 { .. } => true,
            FirehoseError::Checkpoint(e) => e.is_retriable(),
        }
    }
}

async fn s3_client(config: &FirehoseSourceConfig) -> Result<aws_sdk_s3::Client, ConfigError> {
    crate::store::s3_client(&crate::store::S3Connection {
        region: config.region.as_deref(),
        endpoint_url: config.endpoint_url.as_deref(),
        force_path_style: config.path_style,
        access_key_id: config.access_key_id.as_deref(),
        secret_access_key: config.secret_access_key.as_deref(),
        section: "firehose",
        operation_timeout: None,
    })
    .await
}

/// The lake "topic" of an object: `fh-` and 16 hex digits of
/// SHA-256(bucket/key). It names the object's files, so a replay of the same
/// object finds them.
pub(crate) fn object_topic(bucket: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{bucket}/{key}").as_bytes());
    format!("fh-{}", hex_prefix(&digest, 8))
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// Reads Firehose objects into the lake.
pub(crate) struct FirehoseSource {
    client: aws_sdk_s3::Client,
    config: FirehoseSourceConfig,
    kafka: KafkaConfig,
    verifier: Verifier,
    transformer: Arc<Transformer>,
    lake: LakeWriter,
    producer: FutureProducer,
    dlq_topic: String,
    checkpoint: checkpoint::Checkpoint,
    checkpoint_path: PathBuf,
    stats: Arc<Stats>,
    sealer: crate::seal::DlqSealer,
    /// Derived tables, fed every accepted line (`crate::derived::runner`).
    derived: crate::derived::runner::Derived,
}

/// What reading one object did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ObjectOutcome {
    pub(crate) lines: u64,
    pub(crate) rows_written: u64,
    pub(crate) rows_skipped: u64,
    pub(crate) dead_lettered: u64,
}

impl FirehoseSource {
    /// Build the client and load the checkpoint (no listing yet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn new(
        config: FirehoseSourceConfig,
        kafka: KafkaConfig,
        verifier: Verifier,
        signature_window: Duration,
        transformer: Arc<Transformer>,
        lake: LakeWriter,
        state_dir: PathBuf,
        stats: Arc<Stats>,
        sealer: crate::seal::DlqSealer,
    ) -> Result<FirehoseSource, ProcessorError> {
        config.check()?;
        let client = s3_client(&config).await?;
        let checkpoint_path = state_dir.join(format!(
            "firehose-{}.json",
            hex_prefix(
                &Sha256::digest(format!("{}/{}", config.bucket, config.prefix).as_bytes()),
                8
            )
        ));
        let checkpoint =
            checkpoint::Checkpoint::load(&checkpoint_path, &config.bucket, &config.prefix)
                .map_err(FirehoseError::from)?;
        let mut producer_config = kafka.client_config();
        producer_config
            .set("acks", "all")
            .set("message.timeout.ms", "30000");
        let producer: FutureProducer =
            producer_config
                .create()
                .map_err(|source| ProcessorError::Kafka {
                    context: "create dead-letter producer (firehose)",
                    source,
                })?;
        tracing::info!(
            bucket = %config.bucket,
            prefix = %config.prefix,
            checkpoint = %checkpoint_path.display(),
            done = checkpoint.done.len(),
            "firehose source reading"
        );
        Ok(FirehoseSource {
            client,
            verifier: verifier.with_window(signature_window + config.delivery_allowance),
            dlq_topic: kafka.dlq_topic(),
            kafka,
            config,
            transformer,
            lake,
            producer,
            checkpoint,
            checkpoint_path,
            stats,
            sealer,
            derived: Default::default(),
        })
    }

    /// Feed accepted records to the derived tables.
    pub(crate) fn with_derived(mut self, derived: crate::derived::runner::Derived) -> Self {
        self.derived = derived;
        self
    }

    /// Poll the prefix until `shutdown`; retriable errors wait and retry.
    pub(crate) async fn run(mut self, shutdown: Shutdown) -> Result<(), ProcessorError> {
        let mut failures = 0u32;
        loop {
            let wait = match self.poll_once(&shutdown).await {
                Ok(_) => {
                    failures = 0;
                    self.config.poll_interval
                }
                Err(e) if e.is_retriable() => {
                    failures = failures.saturating_add(1);
                    let wait = self
                        .config
                        .poll_interval
                        .min(Duration::from_secs(1) * 2u32.saturating_pow(failures.min(6)));
                    source_retry(&e, wait);
                    wait
                }
                Err(e) => return Err(e),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// List once and read every object not yet done, oldest key first.
    pub(crate) async fn poll_once(&mut self, shutdown: &Shutdown) -> Result<usize, ProcessorError> {
        let listed = self.list().await?;
        let mut read = 0;
        for obj in listed {
            if shutdown.is_cancelled() {
                break;
            }
            if self.checkpoint.is_done(&obj.key) {
                continue;
            }
            let outcome = self.ingest(&obj).await?;
            object_done(&self.config.bucket, &obj, &outcome);
            let lookback = i64::try_from(self.config.lookback.as_millis()).unwrap_or(i64::MAX);
            self.checkpoint
                .mark(&obj.key, obj.last_modified_ms, lookback);
            self.checkpoint
                .save(&self.checkpoint_path)
                .map_err(FirehoseError::from)?;
            self.derived
                .forget(&object_topic(&self.config.bucket, &obj.key));
            read += 1;
        }
        Ok(read)
    }

    async fn list(&self) -> Result<Vec<Listed>, FirehoseError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(&self.config.prefix)
                .set_start_after(self.checkpoint.start_after.clone())
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| FirehoseError::S3 {
                    op: "list",
                    bucket: self.config.bucket.clone(),
                    key: self.config.prefix.clone(),
                    reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                })?;
            for o in resp.contents() {
                let Some(key) = o.key() else { continue };
                out.push(Listed {
                    key: key.to_string(),
                    last_modified_ms: o
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or(0),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, FirehoseError> {
        let err = |op: &'static str, reason: String| FirehoseError::S3 {
            op,
            bucket: self.config.bucket.clone(),
            key: key.to_string(),
            reason,
        };
        let resp = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| err("get", aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
        let body = resp
            .body
            .collect()
            .await
            .map_err(|e| err("read body", e.to_string()))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Read one object into the lake; dead-letter what fails.
    async fn ingest(&mut self, obj: &Listed) -> Result<ObjectOutcome, ProcessorError> {
        let mut outcome = ObjectOutcome::default();
        let source = format!("s3://{}/{}", self.config.bucket, obj.key);
        if obj.size > self.config.max_object_bytes {
            let rej = Rejection::new(
                "object_too_large",
                format!(
                    "{} bytes, above firehose.max_object_bytes = {}",
                    obj.size, self.config.max_object_bytes
                ),
            );
            self.dead_letter(&source, 0, &[], &[], &[], rej).await?;
            outcome.dead_lettered += 1;
            return Ok(outcome);
        }
        if obj.key.ends_with(".gz") || obj.key.ends_with(".snappy") || obj.key.ends_with(".zip") {
            let rej = Rejection::new(
                "compressed_object",
                "compressed Firehose objects are not read: create the delivery stream with \
                 CompressionFormat UNCOMPRESSED (Parquet compresses the lake)",
            );
            self.dead_letter(&source, 0, &[], &[], &[], rej).await?;
            outcome.dead_lettered += 1;
            return Ok(outcome);
        }
        let bytes = self.get(&obj.key).await?;
        let topic = object_topic(&self.config.bucket, &obj.key);
        let reference = ReferenceTime {
            ms: obj.last_modified_ms,
            source: TimeSource::ObjectStore,
        };
        let mut segments: HashMap<(RecordType, PartitionDir), Segment> = HashMap::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line_no = i + 1;
            let offset = i64::try_from(line_no).unwrap_or(i64::MAX);
            outcome.lines += 1;
            let env = match Envelope::from_line(line, line_no) {
                Ok(env) => env,
                Err(e) => {
                    let rej = Rejection::new("malformed_envelope", e.to_string());
                    self.dead_letter(&source, offset, &[], line, &[], rej)
                        .await?;
                    outcome.dead_lettered += 1;
                    continue;
                }
            };
            let (record_type, dir, row, value) = match self.accept(&env, reference) {
                Ok(accepted) => accepted,
                Err(rej) => {
                    self.dead_letter(&source, offset, &env.key, &env.payload, &env.headers, rej)
                        .await?;
                    outcome.dead_lettered += 1;
                    continue;
                }
            };
            self.derived
                .on_record(&topic, 0, offset, record_type, &value);
            drop(value);
            let Some(schema) = self.transformer.arrow_schema(record_type) else {
                continue;
            };
            let mut row = Some(row);
            while let Some(r) = row.take() {
                let seg = match segments.entry((record_type, dir)) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(
                        self.lake
                            .open(record_type, schema.clone(), &topic, 0, dir, offset)
                            .await?,
                    ),
                };
                match seg.admit(offset) {
                    Admit::Row => seg.push(offset, r)?,
                    // Written by an earlier read of this object.
                    Admit::Covered { .. } => {
                        seg.met_present(offset);
                        outcome.rows_skipped += 1;
                    }
                    // A present file starts here: publish before it, reopen.
                    Admit::Boundary => {
                        if let Some(full) = segments.remove(&(record_type, dir)) {
                            self.publish(record_type, full, &mut outcome).await?;
                        }
                        row = Some(r);
                    }
                }
            }
        }
        // Derived state first: it must hold every record of a published file.
        self.derived.checkpoint().await?;
        for ((record_type, _), segment) in segments {
            self.publish(record_type, segment, &mut outcome).await?;
        }
        Ok(outcome)
    }

    async fn publish(
        &self,
        record_type: RecordType,
        segment: Segment,
        outcome: &mut ObjectOutcome,
    ) -> Result<(), ProcessorError> {
        if segment.is_empty() {
            return Ok(());
        }
        // Derived state first: it must hold every record of a published file.
        self.derived.checkpoint().await?;
        let published = self.lake.publish(segment).await?;
        outcome.rows_written += published.rows_written;
        outcome.rows_skipped += published.rows_skipped;
        rows_published(
            record_type,
            &published.files,
            published.rows_written,
            &self.stats,
        );
        Ok(())
    }

    /// Verify, decode and transform one envelope.
    fn accept(
        &self,
        env: &Envelope,
        reference: ReferenceTime,
    ) -> Result<
        (
            RecordType,
            PartitionDir,
            serde_json::Map<String, serde_json::Value>,
            apache_avro::types::Value,
        ),
        Rejection,
    > {
        let Some(record_type) = self.kafka.record_type_of(&env.topic) else {
            return Err(Rejection::new(
                "unknown_topic",
                format!(
                    "envelope topic {:?} carries no known record type",
                    env.topic
                ),
            ));
        };
        if record_type == RecordType::MaintenanceAlert {
            return Err(Rejection::new(
                "unknown_topic",
                "maintenance alerts are produced inside the platform, never by a site",
            ));
        }
        let headers = env
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_slice())));
        let verified = self.verifier.check(
            &env.topic,
            record_type,
            &env.key,
            &env.payload,
            headers,
            reference,
        )?;
        let row = self
            .transformer
            .transform(record_type, &verified.value)
            .map_err(|e| Rejection::new("bad_datum", e.to_string()))?;
        let dir = observed_at(&verified.value)
            .and_then(|ms| self.lake.partition_dir(record_type, ms))
            .ok_or_else(|| Rejection::new("bad_datum", "observed_at is outside years 1..=9999"))?;
        Ok((record_type, dir, row, verified.value))
    }

    async fn dead_letter(
        &self,
        source: &str,
        line: i64,
        key: &[u8],
        payload: &[u8],
        original_headers: &[(String, Vec<u8>)],
        rej: Rejection,
    ) -> Result<(), ProcessorError> {
        let line_text = line.to_string();
        let mut headers = OwnedHeaders::new();
        for (k, v) in original_headers {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: Some(v.as_slice()),
            });
        }
        for (k, v) in [
            (dlq_headers::ERROR_CLASS, rej.class),
            (dlq_headers::REASON, rej.reason.as_str()),
            (dlq_headers::ORIGINAL_TOPIC, source),
            (dlq_headers::ORIGINAL_PARTITION, "-1"),
            (dlq_headers::ORIGINAL_OFFSET, line_text.as_str()),
            (dlq_headers::STAGE, "processor-firehose"),
            (dlq_headers::SEALED, self.sealer.key_id()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let sealed = self.sealer.seal(payload);
        let key = self.sealer.message_key(key);
        let mut attempt = 0u32;
        loop {
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.dlq_topic)
                .headers(headers.clone())
                .payload(sealed.as_slice())
                .key(key.as_slice());
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => break,
                Err((e, _)) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "dead-letter send failed, retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err((e, _)) => return Err(ProcessorError::DeadLetter(e)),
            }
        }
        tracing::warn!(class = rej.class, reason = %rej.reason, %source, line, "firehose line sent to the dead-letter topic");
        metrics::counter!("fleetpulse_processor_dead_lettered_total", "class" => rej.class)
            .increment(1);
        telemetry::add(&COUNTERS.dead_lettered, "fleetpulse_dead_lettered_total", 1);
        COUNTERS
            .processor_dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn rows_published(record_type: RecordType, files: &[String], rows: u64, stats: &Stats) {
    let table = record_type.name();
    for f in files {
        tracing::info!(table, file = %f, "lake file published (firehose)");
    }
    if rows > 0 {
        metrics::counter!("fleetpulse_processor_rows_written_total", "table" => table)
            .increment(rows);
        telemetry::add(
            &COUNTERS.rows_written,
            "fleetpulse_rows_written_total",
            rows,
        );
        stats.rows_written.fetch_add(rows, Ordering::Relaxed);
    }
    if !files.is_empty() {
        stats
            .files_written
            .fetch_add(files.len() as u64, Ordering::Relaxed);
    }
}

fn object_done(bucket: &str, obj: &Listed, o: &ObjectOutcome) {
    tracing::info!(
        object = %format!("s3://{bucket}/{}", obj.key),
        lines = o.lines,
        rows_written = o.rows_written,
        rows_skipped = o.rows_skipped,
        dead_lettered = o.dead_lettered,
        "firehose object read"
    );
    metrics::counter!("fleetpulse_processor_firehose_objects_total").increment(1);
    metrics::counter!("fleetpulse_processor_firehose_lines_total").increment(o.lines);
}

fn source_retry(e: &ProcessorError, wait: Duration) {
    tracing::warn!(error = %e, wait = ?wait, "firehose source failed, retrying");
    metrics::counter!("fleetpulse_processor_firehose_errors_total").increment(1);
}
