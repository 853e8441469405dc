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
use crate::lake::{utc_date, LakeWriter, Published, Segment};
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
    segment: Option<Segment>,
    started: Instant,
    touched: Instant,
    /// Highest offset whose fate is settled or buffered.
    consumed_through: Option<i64>,
    /// Next offset committed to the group.
    committed: Option<i64>,
    /// Offsets up to this one are in a lake file already.
    skip_until: Option<i64>,
}

impl PartState {
    fn new() -> PartState {
        let now = Instant::now();
        PartState {
            segment: None,
            started: now,
            touched: now,
            consumed_through: None,
            committed: None,
            skip_until: None,
        }
    }

    /// The offset to commit now, if the commit point moved and nothing buffered precedes it.
    fn pending_commit(&self) -> Option<i64> {
        if self.segment.is_some() {
            return None;
        }
        let next = self.consumed_through? + 1;
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
    /// Estimated bytes buffered over all partitions.
    buffered_bytes: u64,
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
}

/// The topics the processor reads.
pub(crate) fn input_topics(config: &ProcessorConfig) -> Vec<String> {
    RecordType::ALL
        .into_iter()
        .filter(|t| *t != RecordType::MaintenanceAlert || config.include_alerts)
        .map(|t| config.kafka.topic(t))
        .collect()
}

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
        let kafka_err =
            |context: &'static str| move |source| ProcessorError::Kafka { context, source };
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let consumer: StreamConsumer<Ctx> = client_config(
            &config.kafka,
            &[],
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
        consumer
            .subscribe(&topic_refs)
            .map_err(kafka_err("subscribe"))?;
        tracing::info!(topics = ?topics, group = %config.group_id, lake = %lake.dir().display(), "processor consuming");
        let mut seqs = SeqWindow::new(config.signature_window);
        for e in seqs.load(lake.dir()) {
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
            roll_age: config.roll_age,
            roll_idle: config.roll_idle,
            parts: HashMap::new(),
            revoked,
            stats,
            seqs,
            signature_window: config.signature_window,
            lake_dir: config.lake_dir.clone(),
            last_seq_save: Instant::now(),
        })
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

    /// Shutdown: make every buffer durable and commit.
    async fn drain(&mut self) -> Result<(), ProcessorError> {
        self.apply_revocations();
        let keys: Vec<PartKey> = self.parts.keys().cloned().collect();
        for k in keys {
            self.flush(&k).await?;
        }
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
                let rows = st.segment.as_ref().map_or(0, Segment::len);
                let bytes = st.segment.as_ref().map_or(0, Segment::estimated_bytes);
                self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes as u64);
                revoked_buffer_dropped(&key, rows);
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), ProcessorError> {
        self.apply_revocations();
        let now = Instant::now();
        let due: Vec<PartKey> = self
            .parts
            .iter()
            .filter(|(_, st)| {
                st.segment.is_some()
                    && (now.duration_since(st.started) >= self.roll_age
                        || now.duration_since(st.touched) >= self.roll_idle)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.flush(&k).await?;
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
        let Some(record_type) = self.kafka.record_type_of(&key.0) else {
            let rej = Rejection::new("unknown_topic", "topic carries no known record type");
            return self.dead_letter(&m, rej).await;
        };
        let st = self.parts.entry(key.clone()).or_insert_with(PartState::new);
        if st.consumed_through.is_some_and(|c| offset <= c) {
            tracing::debug!(topic = %key.0, partition = key.1, offset, "duplicate delivery ignored");
            return Ok(());
        }
        if st.skip_until.is_some_and(|s| offset <= s) {
            st.consumed_through = Some(offset);
            metrics::counter!("fleetpulse_processor_records_skipped_total").increment(1);
            // Verified by the run that wrote the file: remember its sequence
            // number, in case the saved memory missed it.
            if let Some(f) = signature_fields(&m) {
                if let Some(connector) = self.verifier.connector_of(&f).map(str::to_string) {
                    self.seqs
                        .remember(&connector, f.seq, f.ts, (&key.0, key.1, offset));
                }
            }
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
        let Some(date) = observed_at(&value).and_then(utc_date) else {
            let rej = Rejection::new("bad_datum", "observed_at is outside years 1..=9999");
            return self.dead_letter(m, rej).await;
        };
        drop(value);

        // One file holds one date: a record of another date closes the buffer.
        let other_date = self
            .parts
            .get(&key)
            .and_then(|st| st.segment.as_ref())
            .is_some_and(|s| s.date() != date);
        if other_date {
            self.flush(&key).await?;
        }
        let st = self.parts.entry(key.clone()).or_insert_with(PartState::new);
        let now = Instant::now();
        if st.segment.is_none() {
            st.started = now;
            st.segment = Some(Segment::new(record_type, &key.0, key.1, date));
        }
        let Some(segment) = st.segment.as_mut() else {
            return Ok(());
        };
        let before = segment.estimated_bytes();
        segment.push(offset, row);
        let after = segment.estimated_bytes();
        self.buffered_bytes += after.saturating_sub(before) as u64;
        st.touched = now;
        st.consumed_through = Some(offset);
        if after as u64 >= self.roll_bytes {
            self.flush(&key).await?;
        } else if self.buffered_bytes > self.roll_bytes.saturating_mul(2) {
            // Many partitions each below the roll size: bound memory by
            // closing the largest buffer early.
            let largest = self
                .parts
                .iter()
                .filter_map(|(k, st)| Some((st.segment.as_ref()?.estimated_bytes(), k)))
                .max()
                .map(|(_, k)| k.clone());
            if let Some(k) = largest {
                self.flush(&k).await?;
            }
        }
        Ok(())
    }

    /// Publish a partition's buffer durably, then commit past it.
    async fn flush(&mut self, key: &PartKey) -> Result<(), ProcessorError> {
        let Some(st) = self.parts.get_mut(key) else {
            return Ok(());
        };
        let Some(segment) = st.segment.take() else {
            return Ok(());
        };
        self.buffered_bytes = self
            .buffered_bytes
            .saturating_sub(segment.estimated_bytes() as u64);
        let record_type = segment.record_type();
        let Some(schema) = self.transformer.arrow_schema(record_type) else {
            return Ok(());
        };
        let lake = self.lake.clone();
        let published = tokio::task::spawn_blocking(move || lake.publish(segment, schema))
            .await
            .map_err(|e| ProcessorError::Task(e.to_string()))??;
        files_published(record_type, &published, &self.stats);
        if let Some(st) = self.parts.get_mut(key) {
            st.skip_until = st.skip_until.max(published.skip_until);
            st.consumed_through = st.consumed_through.max(published.durable_through);
        }
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
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut attempt = 0u32;
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dlq_topic).headers(headers.clone());
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(p) = m.payload() {
                record = record.payload(p);
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

/// The signature headers of a message, unverified (`None` if absent or
/// unreadable; rdkafka panics on a header name that is not UTF-8).
fn signature_fields(m: &OwnedMessage) -> Option<SignatureFields> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let headers = m.headers()?;
        SignatureFields::from_headers(headers.iter().map(|h| (h.key, h.value))).ok()
    }))
    .ok()
    .flatten()
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
        tracing::info!(table = record_type.name(), path = %f.display(), "lake file published");
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
