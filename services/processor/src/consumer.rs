//! The consume -> verify -> transform -> buffer -> publish -> commit loop.
//!
//! Offsets are the processor's only state. A partition's committed offset
//! moves only past messages whose fate is durable: rows in a published lake
//! file, records acknowledged by the dead-letter topic, or messages skipped
//! because a present file already holds them. Everything buffered is
//! uncommitted, so a crash, a SIGKILL or a rebalance loses nothing: the next
//! owner replays from the committed offset and the lake's create-if-absent
//! file names ([`crate::lake`]) absorb what had already been written.
//!
//! A partition may have one open file per lake directory; its commit point
//! is the lowest first offset of its open files (everything before is
//! settled). Memory is bounded by `lake.buffer_budget_bytes` over all open
//! files: when a row takes the total over it, the largest open file is
//! published early, whatever the number of partitions and directories.
//!
//! The one piece of state beside the offsets is the memory of recently used
//! sequence numbers ([`crate::replay`]); it is saved next to the lake after
//! commits, and losing it only weakens replay detection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_core::kafka::{dlq_headers, KafkaConfig};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::signing::SignatureFields;
use fleetpulse_core::telemetry::{self, COUNTERS};
use fleetpulse_core::{now_millis, Shutdown};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::config::ProcessorConfig;
use crate::lake::{Admit, LakeWriter, PartitionDir, Published, Segment};
use crate::privacy::{observed_at, Transformer};
use crate::replay::{self, Seen, SeqWindow};
use crate::verify::{fmt_ms, ReferenceTime, Rejection, Verified, Verifier};
use crate::ProcessorError;

/// Per-run totals (the process-wide ones are in `telemetry::COUNTERS`).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) rows_written: AtomicU64,
    pub(crate) files_written: AtomicU64,
    pub(crate) files_skipped: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) commits: AtomicU64,
    /// Partitions in the latest assignment.
    pub(crate) assigned: AtomicU64,
    /// Rows added to open files.
    pub(crate) rows_buffered: AtomicU64,
    /// Highest memory held by all open files together, measured after a
    /// row was added and before the budget is enforced.
    pub(crate) peak_buffered_bytes: AtomicU64,
    /// Files published early because the budget was exceeded.
    pub(crate) budget_flushes: AtomicU64,
}

type PartKey = (String, i32);

/// Records partition revocations; the loop drops those buffers.
pub(crate) struct Ctx {
    revoked: Arc<Mutex<Vec<PartKey>>>,
    stats: Arc<Stats>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts: Vec<PartKey> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = parts.len(), "partitions revoked");
                self.revoked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(parts);
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                self.stats
                    .assigned
                    .store(tpl.count() as u64, Ordering::Relaxed);
            }
            Rebalance::Error(e) => rebalance_error(&e.to_string()),
        }
    }
}

struct PartState {
    /// Open files, one per lake directory.
    segments: HashMap<PartitionDir, Segment>,
    /// Highest offset whose fate is settled or buffered.
    consumed_through: Option<i64>,
    /// Next offset committed to the group.
    committed: Option<i64>,
}

impl PartState {
    fn new() -> PartState {
        PartState {
            segments: HashMap::new(),
            consumed_through: None,
            committed: None,
        }
    }

    /// The offset to commit now, if the commit point moved: the lowest
    /// first offset of the open files, or past everything consumed.
    fn pending_commit(&self) -> Option<i64> {
        let next = match self
            .segments
            .values()
            .filter_map(Segment::first_offset)
            .min()
        {
            Some(first) => first,
            None => self.consumed_through? + 1,
        };
        (self.committed.is_none_or(|c| c < next)).then_some(next)
    }
}

/// The running processor.
pub(crate) struct Pipeline {
    kafka: KafkaConfig,
    consumer: Arc<StreamConsumer<Ctx>>,
    producer: FutureProducer,
    verifier: Verifier,
    transformer: Arc<Transformer>,
    lake: LakeWriter,
    roll_bytes: u64,
    /// Memory held by all open files ([`Segment::memory_bytes`]).
    buffered_bytes: u64,
    /// Bound of `buffered_bytes` (`lake.buffer_budget_bytes`).
    budget_bytes: u64,
    roll_age: Duration,
    roll_idle: Duration,
    parts: HashMap<PartKey, PartState>,
    revoked: Arc<Mutex<Vec<PartKey>>>,
    stats: Arc<Stats>,
    dlq_topic: String,
    /// Recently used sequence numbers of each connector.
    seqs: SeqWindow,
    signature_window: Duration,
    lake_dir: PathBuf,
    last_seq_save: Instant,
    /// Seals dead letters (they are raw records: serials, MACs, IPs).
    sealer: crate::seal::DlqSealer,
    /// Derived tables, fed every accepted record (`crate::derived::runner`).
    pub(crate) derived: crate::derived::runner::Derived,
    /// Set for `process --replay`: a bounded re-read of a date range.
    backfill: Option<Backfill>,
}

/// A `process --replay --from --to` run: every input partition is read from
/// the offset whose timestamp is `from` minus the signature window (no
/// accepted record observed on or after `from` can sit earlier: it was signed
/// after it was observed, and its Kafka timestamp is within the window of its
/// signing time) up to the high watermark seen at the start. Rows observed
/// outside the range are not written; files are created only if absent, so
/// the run restores what is missing and changes nothing else. It joins no
/// consumer group, commits nothing, sends no dead letters (the live run did)
/// and saves no sequence-number memory: it can run beside the live processor.
#[derive(Debug)]
pub(crate) struct Backfill {
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    /// Next offset after the last one to read, per partition.
    end: HashMap<PartKey, i64>,
    /// Partitions read through `end`.
    done: std::collections::HashSet<PartKey>,
    /// Records rejected (already dead-lettered by the live run).
    rejected: u64,
    /// Records read whose date is outside the range.
    outside: u64,
}

/// The topics the processor reads.
pub(crate) fn input_topics(config: &ProcessorConfig) -> Vec<String> {
    RecordType::ALL
        .into_iter()
        .filter(|t| *t != RecordType::MaintenanceAlert || config.include_alerts)
        .map(|t| config.kafka.topic(t))
        .collect()
}

/// The consumer's librdkafka defaults (each unless set in
/// `kafka.properties`). librdkafka pre-fetches up to
/// `queued.max.messages.kbytes` (64 MiB by default), overshot by up to one
/// fetch response (`fetch.max.bytes`, 50 MiB by default, which with many
/// partitions fills up with up to 1 MiB per partition), while the processor
/// works through a few MB a second: 16 MiB each is seconds of work and keeps
/// the process within its stated memory bound (README, Memory bound).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.max.bytes", "16777216"),
];

fn client_config(
    kafka: &KafkaConfig,
    defaults: &[(&str, &str)],
    forced: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    let base = kafka.client_config();
    for (k, v) in base.config_map() {
        c.set(k, v);
    }
    for (k, v) in forced {
        c.set(*k, *v);
    }
    c
}

impl Pipeline {
    pub(crate) fn start(
        config: &ProcessorConfig,
        verifier: Verifier,
        transformer: Arc<Transformer>,
        lake: LakeWriter,
        stats: Arc<Stats>,
    ) -> Result<Pipeline, ProcessorError> {
        Pipeline::start_with(config, verifier, transformer, lake, stats, None)
    }

    /// A pipeline that re-reads the date range `from..=to` (see [`Backfill`]).
    pub(crate) fn start_backfill(
        config: &ProcessorConfig,
        verifier: Verifier,
        transformer: Arc<Transformer>,
        lake: LakeWriter,
        stats: Arc<Stats>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Pipeline, ProcessorError> {
        Pipeline::start_with(config, verifier, transformer, lake, stats, Some((from, to)))
    }

    fn start_with(
        config: &ProcessorConfig,
        verifier: Verifier,
        transformer: Arc<Transformer>,
        lake: LakeWriter,
        stats: Arc<Stats>,
        range: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
    ) -> Result<Pipeline, ProcessorError> {
        let kafka_err =
            |context: &'static str| move |source| ProcessorError::Kafka { context, source };
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let consumer: StreamConsumer<Ctx> = client_config(
            &config.kafka,
            CONSUMER_DEFAULTS,
            &[
                ("group.id", config.group_id.as_str()),
                // Offsets are committed by hand, only past durable outcomes.
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
            ],
        )
        .create_with_context(Ctx {
            revoked: revoked.clone(),
            stats: stats.clone(),
        })
        .map_err(kafka_err("create consumer"))?;
        let producer: FutureProducer = client_config(
            &config.kafka,
            // Fail a stuck DLQ delivery in 30 s (retried, then fatal) rather than 5 min.
            &[("acks", "all"), ("message.timeout.ms", "30000")],
            &[],
        )
        .create()
        .map_err(kafka_err("create dead-letter producer"))?;
        let topics = input_topics(config);
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let backfill = match range {
            None => {
                consumer
                    .subscribe(&topic_refs)
                    .map_err(kafka_err("subscribe"))?;
                None
            }
            Some((from, to)) => Some(assign_backfill(
                &consumer,
                &topics,
                from,
                config.signature_window,
                to,
            )?),
        };
        tracing::info!(topics = ?topics, group = %config.group_id, lake = %lake.store().describe(""), "processor consuming");
        let sealer = crate::seal::from_config(config)?;
        let mut seqs = SeqWindow::new(config.signature_window);
        for e in seqs.load(&config.lake_dir) {
            seq_state_failed("load", &e.to_string());
        }
        seq_state_loaded(&seqs);
        Ok(Pipeline {
            dlq_topic: config.kafka.dlq_topic(),
            kafka: config.kafka.clone(),
            consumer: Arc::new(consumer),
            producer,
            verifier,
            transformer,
            lake,
            roll_bytes: config.roll_bytes,
            buffered_bytes: 0,
            budget_bytes: config.lake.buffer_budget_bytes,
            roll_age: config.roll_age,
            roll_idle: config.roll_idle,
            parts: HashMap::new(),
            revoked,
            stats,
            seqs,
            signature_window: config.signature_window,
            lake_dir: config.lake_dir.clone(),
            last_seq_save: Instant::now(),
            sealer,
            backfill,
            derived: Default::default(),
        })
    }

    /// Whether a backfill has read every partition through its end.
    fn backfill_complete(&self) -> bool {
        self.backfill
            .as_ref()
            .is_some_and(|b| b.end.keys().all(|k| b.done.contains(k)))
    }

    pub(crate) async fn run(mut self, shutdown: Shutdown) -> Result<(), ProcessorError> {
        enum Step {
            Stop,
            Tick,
            Message(Result<OwnedMessage, KafkaError>),
        }
        let period = (self.roll_idle.min(self.roll_age) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer = self.consumer.clone();
        let mut last_error: Option<String> = None;
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Step::Stop,
                _ = tick.tick() => Step::Tick,
                m = consumer.recv() => Step::Message(m.map(|m| m.detach())),
            };
            match step {
                Step::Stop => break,
                Step::Tick => self.on_tick().await?,
                Step::Message(Ok(m)) => {
                    last_error = None;
                    self.on_message(m).await?;
                }
                Step::Message(Err(e)) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, "kafka consumer error (will keep trying)");
                        metrics::counter!("fleetpulse_processor_consumer_errors_total")
                            .increment(1);
                        last_error = Some(text);
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
        self.drain().await
    }

    /// Run a backfill pipeline until every partition is read through its
    /// end (or `shutdown`); returns (records rejected again, records outside
    /// the range).
    pub(crate) async fn run_backfill(
        mut self,
        shutdown: Shutdown,
    ) -> Result<(u64, u64), ProcessorError> {
        let consumer = self.consumer.clone();
        while !self.backfill_complete() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                m = consumer.recv() => match m {
                    Ok(m) => self.on_message(m.detach()).await?,
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error during the backfill (will keep trying)");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        self.drain().await?;
        Ok(self
            .backfill
            .as_ref()
            .map(|b| (b.rejected, b.outside))
            .unwrap_or_default())
    }

    /// Shutdown: make every buffer durable and commit.
    async fn drain(&mut self) -> Result<(), ProcessorError> {
        self.apply_revocations();
        for (k, dir) in self.open_files(|_| true) {
            self.flush(&k, dir).await?;
        }
        self.derived.checkpoint().await?;
        self.commit_pending().await;
        self.save_seqs().await;
        tracing::info!(
            rows = self.stats.rows_written.load(Ordering::Relaxed),
            files = self.stats.files_written.load(Ordering::Relaxed),
            "processor drained"
        );
        Ok(())
    }

    fn apply_revocations(&mut self) {
        let revoked: Vec<PartKey> =
            std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()));
        for key in revoked {
            if let Some(st) = self.parts.remove(&key) {
                let rows = st.segments.values().map(Segment::len).sum();
                let bytes: usize = st.segments.values().map(Segment::memory_bytes).sum();
                self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes as u64);
                revoked_buffer_dropped(&key, rows);
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), ProcessorError> {
        self.apply_revocations();
        self.derived.tick().await?;
        let now = Instant::now();
        let (age, idle) = (self.roll_age, self.roll_idle);
        let due = self.open_files(|s| {
            now.duration_since(s.opened()) >= age || now.duration_since(s.touched()) >= idle
        });
        for (k, dir) in due {
            self.flush(&k, dir).await?;
        }
        self.commit_pending().await;
        if self.last_seq_save.elapsed() >= replay::SAVE_INTERVAL {
            self.save_seqs().await;
        }
        Ok(())
    }

    async fn on_message(&mut self, m: OwnedMessage) -> Result<(), ProcessorError> {
        self.apply_revocations();
        let key: PartKey = (m.topic().to_string(), m.partition());
        let offset = m.offset();
        if let Some(b) = self.backfill.as_mut() {
            let end = b.end.get(&key).copied().unwrap_or(0);
            if offset + 1 >= end {
                b.done.insert(key.clone());
            }
            if offset >= end {
                return Ok(());
            }
        }
        let Some(record_type) = self.kafka.record_type_of(&key.0) else {
            let rej = Rejection::new("unknown_topic", "topic carries no known record type");
            return self.dead_letter(&m, rej).await;
        };
        let st = self.parts.entry(key.clone()).or_insert_with(PartState::new);
        if st.consumed_through.is_some_and(|c| offset <= c) {
            tracing::debug!(topic = %key.0, partition = key.1, offset, "duplicate delivery ignored");
            return Ok(());
        }
        if record_type == RecordType::MaintenanceAlert {
            // Produced inside the platform by the alerter, which holds no
            // connector key: decoded and anonymised, not signature-checked
            // (see `include_alerts`). Only the alerts topic is read this way.
            let value = match self
                .verifier
                .check_internal(record_type, m.payload().unwrap_or_default())
            {
                Ok(v) => v,
                Err(rej) => return self.dead_letter(&m, rej).await,
            };
            return self.buffer(&m, key, record_type, value).await;
        }
        let reference = ReferenceTime::of(m.timestamp(), now_millis());
        // rdkafka panics on a header name that is not UTF-8, and a decoder
        // bug must not stop the pipeline either: such input is dead-lettered.
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let header_pairs = m
                .headers()
                .into_iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value));
            self.verifier.check(
                &key.0,
                record_type,
                m.key().unwrap_or_default(),
                m.payload().unwrap_or_default(),
                header_pairs,
                reference,
            )
        }))
        .unwrap_or_else(|_| {
            Err(Rejection::new(
                "malformed",
                "headers or payload made the reader fail unexpectedly",
            ))
        });
        let Verified {
            record_type,
            value,
            signature: sig,
            connector_id,
        } = match checked {
            Ok(v) => v,
            Err(rej) => return self.dead_letter(&m, rej).await,
        };
        let position = (key.0.as_str(), key.1, offset);
        match self
            .seqs
            .observe(&connector_id, sig.seq, sig.ts, reference.ms, position)
        {
            Seen::New | Seen::Again => {}
            Seen::OutOfOrder { max } => sequence_out_of_order(&connector_id, &sig, max),
            Seen::Replay { first } => {
                let rej = Rejection::new(
                    "replayed_sequence",
                    format!(
                        "sequence number {} of connector {} (signed at {}) was already used \
                         by the record at {first}",
                        sig.seq,
                        connector_id,
                        fmt_ms(sig.ts)
                    ),
                );
                return self.dead_letter(&m, rej).await;
            }
        }
        self.buffer(&m, key, record_type, value).await
    }

    /// Transform an accepted record and add it to its partition's buffer.
    async fn buffer(
        &mut self,
        m: &OwnedMessage,
        key: PartKey,
        record_type: RecordType,
        value: apache_avro::types::Value,
    ) -> Result<(), ProcessorError> {
        let offset = m.offset();
        let row = match self.transformer.transform(record_type, &value) {
            Ok(row) => row,
            Err(e) => {
                return self
                    .dead_letter(m, Rejection::new("bad_datum", e.to_string()))
                    .await
            }
        };
        let Some(dir) = observed_at(&value).and_then(|ms| self.lake.partition_dir(record_type, ms))
        else {
            let rej = Rejection::new("bad_datum", "observed_at is outside years 1..=9999");
            return self.dead_letter(m, rej).await;
        };
        self.derived
            .on_record(&key.0, key.1, offset, record_type, &value);
        drop(value);
        if let Some(b) = self.backfill.as_mut() {
            if dir.date < b.from || dir.date > b.to {
                b.outside += 1;
                let st = self.parts.entry(key.clone()).or_insert_with(PartState::new);
                st.consumed_through = st.consumed_through.max(Some(offset));
                return Ok(());
            }
        }
        let Some(schema) = self.transformer.arrow_schema(record_type) else {
            let rej = Rejection::new("bad_datum", "no lake schema for this record type");
            return self.dead_letter(m, rej).await;
        };

        let mut row = Some(row);
        while let Some(r) = row.take() {
            let st = self.parts.entry(key.clone()).or_insert_with(PartState::new);
            let seg = match st.segments.entry(dir) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    self.lake
                        .open(record_type, schema.clone(), &key.0, key.1, dir, offset)
                        .await?,
                ),
            };
            match seg.admit(offset) {
                Admit::Row => {
                    let before = seg.memory_bytes() as u64;
                    seg.push(offset, r)?;
                    let after = seg.memory_bytes() as u64;
                    self.buffered_bytes = (self.buffered_bytes + after).saturating_sub(before);
                    self.stats.rows_buffered.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .peak_buffered_bytes
                        .fetch_max(self.buffered_bytes, Ordering::Relaxed);
                }
                Admit::Covered { .. } => {
                    // Verified and written by an earlier run.
                    if seg.met_present(offset) {
                        self.stats.files_skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    st.consumed_through = st.consumed_through.max(Some(offset));
                    metrics::counter!("fleetpulse_processor_records_skipped_total").increment(1);
                    return Ok(());
                }
                Admit::Boundary => {
                    // A present file starts here: close this one before it.
                    self.flush(&key, dir).await?;
                    row = Some(r);
                }
            }
        }
        let st = self.parts.entry(key.clone()).or_insert_with(PartState::new);
        st.consumed_through = st.consumed_through.max(Some(offset));
        let full = st
            .segments
            .get(&dir)
            .is_some_and(|s| s.file_bytes() as u64 >= self.roll_bytes);
        if full {
            self.flush(&key, dir).await?;
        }
        // Bound memory whatever the number of open files: publish the
        // largest early until the total is within the budget again.
        while self.buffered_bytes > self.budget_bytes {
            let largest = self
                .parts
                .iter()
                .flat_map(|(k, st)| {
                    st.segments
                        .iter()
                        .map(move |(d, s)| (s.memory_bytes(), k, *d))
                })
                .max_by_key(|(bytes, _, _)| *bytes)
                .map(|(bytes, k, d)| (bytes, k.clone(), d));
            match largest {
                Some((bytes, k, d)) if bytes > 0 => {
                    budget_exceeded(self.buffered_bytes, self.budget_bytes, bytes);
                    self.stats.budget_flushes.fetch_add(1, Ordering::Relaxed);
                    self.flush(&k, d).await?;
                }
                _ => {
                    self.buffered_bytes = 0;
                    break;
                }
            }
        }
        metrics::gauge!("fleetpulse_processor_buffered_bytes").set(self.buffered_bytes as f64);
        Ok(())
    }

    /// Open files whose segment satisfies `pred`.
    fn open_files(&self, pred: impl Fn(&Segment) -> bool) -> Vec<(PartKey, PartitionDir)> {
        self.parts
            .iter()
            .flat_map(|(k, st)| {
                st.segments
                    .iter()
                    .filter(|(_, s)| pred(s))
                    .map(move |(d, _)| (k.clone(), *d))
            })
            .collect()
    }

    /// Publish an open file durably, then commit what that settles.
    async fn flush(&mut self, key: &PartKey, dir: PartitionDir) -> Result<(), ProcessorError> {
        // Derived state first: it must hold every record of a published file.
        self.derived.checkpoint().await?;
        let Some(segment) = self
            .parts
            .get_mut(key)
            .and_then(|st| st.segments.remove(&dir))
        else {
            return Ok(());
        };
        self.buffered_bytes = self
            .buffered_bytes
            .saturating_sub(segment.memory_bytes() as u64);
        if segment.is_empty() {
            return Ok(());
        }
        let record_type = segment.record_type();
        let published = self.lake.publish(segment).await?;
        files_published(record_type, &published, &self.stats);
        self.commit(vec![key.clone()]).await;
        Ok(())
    }

    async fn commit_pending(&mut self) {
        let keys: Vec<PartKey> = self
            .parts
            .iter()
            .filter(|(_, st)| st.pending_commit().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if !keys.is_empty() {
            self.commit(keys).await;
        }
    }

    /// Synchronously commit the pending offsets of `keys`. Failures (e.g.
    /// after a rebalance took the partition away) are logged; the offset
    /// stays pending and is tried again on the next tick.
    async fn commit(&mut self, keys: Vec<PartKey>) {
        if self.backfill.is_some() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        let mut planned = Vec::new();
        for k in keys {
            let Some(next) = self.parts.get(&k).and_then(PartState::pending_commit) else {
                continue;
            };
            if tpl
                .add_partition_offset(&k.0, k.1, Offset::Offset(next))
                .is_ok()
            {
                planned.push((k, next));
            }
        }
        if planned.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                for (k, next) in planned {
                    if let Some(st) = self.parts.get_mut(&k) {
                        st.committed = Some(next);
                    }
                    tracing::debug!(topic = %k.0, partition = k.1, offset = next, "committed");
                }
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => commit_failed(&planned, &e),
        }
    }

    /// Save the sequence-number memory next to the lake (off the async
    /// threads). A failure is logged: it weakens replay detection after a
    /// restart, nothing else.
    async fn save_seqs(&mut self) {
        self.last_seq_save = Instant::now();
        if self.backfill.is_some() {
            return;
        }
        if !self.seqs.is_dirty() {
            return;
        }
        let mut seqs = std::mem::replace(&mut self.seqs, SeqWindow::new(self.signature_window));
        let dir = self.lake_dir.clone();
        match tokio::task::spawn_blocking(move || {
            let r = seqs.save(&dir);
            (seqs, r)
        })
        .await
        {
            Ok((seqs, result)) => {
                self.seqs = seqs;
                match result {
                    Ok(files) => seq_state_saved(&self.seqs, files),
                    Err(e) => seq_state_failed("save", &e.to_string()),
                }
            }
            Err(e) => seq_state_failed("save", &e.to_string()),
        }
    }

    /// Send a message to the dead-letter topic and wait for the broker's ack;
    /// only then may its offset be committed.
    async fn dead_letter(
        &mut self,
        m: &OwnedMessage,
        rej: Rejection,
    ) -> Result<(), ProcessorError> {
        if let Some(b) = self.backfill.as_mut() {
            // The live run dead-lettered it already.
            b.rejected += 1;
            tracing::debug!(
                class = rej.class,
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "rejected during the backfill (not dead-lettered again)"
            );
            let st = self
                .parts
                .entry((m.topic().to_string(), m.partition()))
                .or_insert_with(PartState::new);
            st.consumed_through = st.consumed_through.max(Some(m.offset()));
            return Ok(());
        }
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        // The original headers are copied natively (never parsed here).
        let mut headers = m.headers().cloned().unwrap_or_else(OwnedHeaders::new);
        for (k, v) in [
            (dlq_headers::ERROR_CLASS, rej.class),
            (dlq_headers::REASON, rej.reason.as_str()),
            (dlq_headers::ORIGINAL_TOPIC, m.topic()),
            (dlq_headers::ORIGINAL_PARTITION, partition.as_str()),
            (dlq_headers::ORIGINAL_OFFSET, offset.as_str()),
            (dlq_headers::STAGE, "processor"),
            (dlq_headers::SEALED, self.sealer.key_id()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let key = m.key().map(|k| self.sealer.message_key(k));
        let payload = m.payload().map(|p| self.sealer.seal(p));
        let mut attempt = 0u32;
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dlq_topic).headers(headers.clone());
            if let Some(k) = &key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &payload {
                record = record.payload(p.as_slice());
            }
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => break,
                Err((e, _)) if attempt < 5 => {
                    attempt += 1;
                    dead_letter_retry(&e, attempt);
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err((e, _)) => return Err(ProcessorError::DeadLetter(e)),
            }
        }
        dead_lettered(m, &rej, &self.stats);
        let st = self
            .parts
            .entry((m.topic().to_string(), m.partition()))
            .or_insert_with(PartState::new);
        st.consumed_through = st.consumed_through.max(Some(m.offset()));
        Ok(())
    }
}

/// Assign every partition of `topics` from the offset of `from - window`
/// (the beginning where the broker cannot look timestamps up, which is
/// slower but as correct: rows outside the range are filtered) to its
/// current high watermark.
fn assign_backfill(
    consumer: &StreamConsumer<Ctx>,
    topics: &[String],
    from: chrono::NaiveDate,
    window: Duration,
    to: chrono::NaiveDate,
) -> Result<Backfill, ProcessorError> {
    let kafka_err = |context: &'static str| move |source| ProcessorError::Kafka { context, source };
    let timeout = Duration::from_secs(30);
    let from_ms = from
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
        .saturating_sub(i64::try_from(window.as_millis()).unwrap_or(0))
        .max(0);
    let mut by_time = TopicPartitionList::new();
    let mut end = HashMap::new();
    let mut low = HashMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka_err("backfill metadata"))?;
        for t in md.topics() {
            for p in t.partitions() {
                let (lo, hi) = consumer
                    .fetch_watermarks(topic, p.id(), timeout)
                    .map_err(kafka_err("backfill watermarks"))?;
                let key = (topic.clone(), p.id());
                end.insert(key.clone(), hi);
                low.insert(key, lo);
                by_time
                    .add_partition_offset(topic, p.id(), Offset::Offset(from_ms))
                    .map_err(kafka_err("backfill offsets"))?;
            }
        }
    }
    let starts = consumer
        .offsets_for_times(by_time, timeout)
        .map_err(kafka_err("backfill offsets for times"))?;
    let mut assign = TopicPartitionList::new();
    let mut done = std::collections::HashSet::new();
    for e in starts.elements() {
        let key = (e.topic().to_string(), e.partition());
        let lo = low.get(&key).copied().unwrap_or(0);
        let hi = end.get(&key).copied().unwrap_or(0);
        let start = match e.offset() {
            Offset::Offset(o) if o >= 0 => o.max(lo),
            _ => lo,
        };
        if start >= hi {
            done.insert(key);
            continue;
        }
        assign
            .add_partition_offset(&key.0, key.1, Offset::Offset(start))
            .map_err(kafka_err("backfill assignment"))?;
        tracing::info!(topic = %key.0, partition = key.1, start, end = hi, "backfill reads");
    }
    consumer
        .assign(&assign)
        .map_err(kafka_err("backfill assign"))?;
    Ok(Backfill {
        from,
        to,
        end,
        done,
        rejected: 0,
        outside: 0,
    })
}

// Events: each logs its line and bumps its metrics together.

fn sequence_out_of_order(connector: &str, sig: &SignatureFields, max: u64) {
    tracing::debug!(
        connector,
        seq = sig.seq,
        max,
        "sequence number below the highest seen (normal across partitions; only reuse is rejected)"
    );
    metrics::counter!("fleetpulse_processor_sequence_out_of_order_total").increment(1);
}

fn seq_state_loaded(seqs: &SeqWindow) {
    tracing::info!(
        entries = seqs.len(),
        "sequence-number memory loaded from the lake's _state"
    );
    metrics::gauge!("fleetpulse_processor_seq_memory_entries").set(seqs.len() as f64);
}

fn seq_state_saved(seqs: &SeqWindow, files: usize) {
    tracing::debug!(files, entries = seqs.len(), "sequence-number memory saved");
    metrics::gauge!("fleetpulse_processor_seq_memory_entries").set(seqs.len() as f64);
}

fn seq_state_failed(op: &'static str, error: &str) {
    tracing::warn!(
        op,
        %error,
        "sequence-number memory: {op} failed (replay detection across restarts is weaker)"
    );
    metrics::counter!("fleetpulse_processor_seq_state_errors_total", "op" => op).increment(1);
}

fn dead_lettered(m: &OwnedMessage, rej: &Rejection, stats: &Stats) {
    tracing::warn!(
        class = rej.class,
        reason = %rej.reason,
        topic = m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        "record sent to the dead-letter topic"
    );
    metrics::counter!("fleetpulse_processor_dead_lettered_total", "class" => rej.class)
        .increment(1);
    telemetry::add(&COUNTERS.dead_lettered, "fleetpulse_dead_lettered_total", 1);
    COUNTERS
        .processor_dead_lettered
        .fetch_add(1, Ordering::Relaxed);
    stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
}

fn files_published(record_type: RecordType, p: &Published, stats: &Stats) {
    for f in &p.files {
        tracing::info!(table = record_type.name(), file = %f, bytes = p.bytes_written, "lake file published");
    }
    let table = record_type.name();
    if p.rows_written > 0 {
        metrics::counter!("fleetpulse_processor_rows_written_total", "table" => table)
            .increment(p.rows_written);
        telemetry::add(
            &COUNTERS.rows_written,
            "fleetpulse_rows_written_total",
            p.rows_written,
        );
        stats
            .rows_written
            .fetch_add(p.rows_written, Ordering::Relaxed);
    }
    if !p.files.is_empty() {
        metrics::counter!("fleetpulse_processor_files_written_total", "table" => table)
            .increment(p.files.len() as u64);
        stats
            .files_written
            .fetch_add(p.files.len() as u64, Ordering::Relaxed);
    }
    if p.files_skipped > 0 {
        stats
            .files_skipped
            .fetch_add(p.files_skipped, Ordering::Relaxed);
    }
}

fn budget_exceeded(buffered: u64, budget: u64, largest: usize) {
    tracing::debug!(
        buffered,
        budget,
        largest,
        "lake buffer budget exceeded: publishing the largest open file early"
    );
    metrics::counter!("fleetpulse_processor_budget_flushes_total").increment(1);
}

fn commit_failed(planned: &[(PartKey, i64)], error: &str) {
    for ((topic, partition), offset) in planned {
        tracing::warn!(%topic, partition, offset, %error, "offset commit failed (will retry; normal after a rebalance)");
    }
    metrics::counter!("fleetpulse_processor_commit_failures_total").increment(1);
}

fn rebalance_error(error: &str) {
    tracing::warn!(%error, "rebalance error");
    metrics::counter!("fleetpulse_processor_rebalance_errors_total").increment(1);
}

fn dead_letter_retry(error: &KafkaError, attempt: u32) {
    tracing::warn!(%error, attempt, "dead-letter produce failed, retrying");
    metrics::counter!("fleetpulse_processor_dead_letter_retries_total").increment(1);
}

fn revoked_buffer_dropped(key: &PartKey, rows: usize) {
    tracing::info!(
        topic = %key.0,
        partition = key.1,
        rows,
        "partition revoked: dropping its uncommitted buffer (the new owner replays it)"
    );
    metrics::counter!("fleetpulse_processor_revoked_rows_dropped_total").increment(rows as u64);
}
