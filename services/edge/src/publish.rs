//! Signed publishing to the uplink (Kafka or Firehose), from the store-and-forward buffer.
//!
//! Records are encoded when they are produced ([`stored`],
//! [`dead_letter`]) and appended to the [`crate::buffer`]; [`forward`]
//! reads the buffer oldest first and sends through an [`Uplink`]
//! ([`Publisher`] for Kafka, [`crate::uplink::FirehoseUplink`]). Why this shape:
//!
//! - **Sign at send time.** The signature covers (topic, key, seq, ts,
//!   payload), in one compact binary header; `ts` is the send time, because the processor will check
//!   signature timestamps against a window, and a record replayed after a
//!   six-hour outage must not look stale or forged. (A poll's batch id
//!   stays in the buffer as local bookkeeping; it is not sent.)
//! - **Never one by one.** Up to `buffer.max_in_flight` sends are in flight
//!   at once (awaiting each would cost `linger.ms`); their delivery futures
//!   resolve in one [`FuturesUnordered`], and only a broker acknowledgement
//!   removes a record from the buffer.
//! - **librdkafka never gives up on its own.** `message.timeout.ms = 0`
//!   (infinite) by default: during an outage the in-flight window simply
//!   stays full and the backlog stays on disk, bounded, instead of in
//!   memory; when the broker returns, the idempotent producer delivers the
//!   window in order and the buffer replays the rest behind it. Were a
//!   delivery to fail anyway (an operator-set timeout, a permanent broker
//!   error), the record goes back to the buffer and is sent again after a
//!   back-off.
//! - **Bandwidth cap.** A token bucket (`buffer.replay_bytes_per_sec`,
//!   counted in stored record bytes, before compression) paces all sends,
//!   so a replay after an outage does not saturate a branch office uplink.
//!   Live traffic shares the cap; it must be above the fleet's steady rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_core::kafka::{dlq_headers, KafkaConfig, TlsDefault};
use fleetpulse_core::records::Record;
use fleetpulse_core::signing::{SigningKey, HDR_SIG};
use fleetpulse_core::telemetry::{self, COUNTERS};
use fleetpulse_core::{codec, now_millis, Shutdown};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Partitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientConfig;

use crate::buffer::{Buffer, Class, StoredRecord};
use crate::uplink::{FirehoseError, FirehoseUplink};

/// Largest SNMP response summarised for the dead-letter topic (the rest is ignored).
pub const DLQ_PAYLOAD_MAX: usize = 64 * 1024;

/// How long the producer may take to deliver what is in flight at shutdown.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Records read from the buffer per claim.
const CLAIM_BATCH: usize = 500;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created (bad config).
    #[error("cannot create Kafka producer: {0}")]
    Create(#[source] KafkaError),
    /// The uplink's security or client settings are invalid.
    #[error(transparent)]
    Config(#[from] fleetpulse_core::config::ConfigError),
    /// A record could not be encoded (a bug: records are built by us).
    #[error(transparent)]
    Encode(#[from] codec::CodecError),
    /// librdkafka refused to queue the record.
    #[error("cannot queue record for {topic}: {source}")]
    Enqueue {
        /// Topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

impl PublishError {
    /// Whether trying again may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, PublishError::Enqueue { .. })
    }
}

/// Encode a record for the buffer: its topic, its device id as key.
pub fn stored<R: Record>(
    kafka: &KafkaConfig,
    record: &R,
    batch: &str,
) -> Result<StoredRecord, PublishError> {
    Ok(StoredRecord {
        seq: 0,
        class: Class::of(R::TYPE),
        enqueued_at: 0,
        topic: kafka.topic(R::TYPE),
        key: record.device_id().as_bytes().to_vec(),
        batch: batch.to_string(),
        event_id: record.event_id().to_string(),
        headers: Vec::new(),
        payload: codec::encode(record)?,
    })
}

/// A dead-letter record for an SNMP response that did not decode.
///
/// The payload is not the datagram: a v1/v2c datagram carries the community
/// in clear and a response any string the edge asked for (sysName,
/// sysContact…). It is the JSON summary of
/// [`crate::snmp::redact::redact`] (length, version, PDU type, request-id,
/// where the BER broke, a hex dump with every string value replaced by
/// `<redacted N bytes>`), and the reason is cleaned the same way. The raw
/// datagram is never written to the buffer either.
pub fn dead_letter(
    kafka: &KafkaConfig,
    address: &str,
    reason: &str,
    raw: &[u8],
    batch: &str,
) -> StoredRecord {
    let raw = &raw[..raw.len().min(DLQ_PAYLOAD_MAX)];
    let payload = crate::snmp::redact::redacted_payload(raw);
    let reason = crate::snmp::redact::redact_reason(reason, raw);
    let headers = vec![
        (
            dlq_headers::ERROR_CLASS.to_string(),
            b"snmp_decode".to_vec(),
        ),
        (dlq_headers::REASON.to_string(), reason.as_bytes().to_vec()),
        (dlq_headers::STAGE.to_string(), b"edge".to_vec()),
        (
            dlq_headers::ORIGINAL_TOPIC.to_string(),
            format!("snmp://{address}").into_bytes(),
        ),
    ];
    StoredRecord {
        seq: 0,
        class: Class::DeadLetter,
        enqueued_at: 0,
        topic: kafka.dlq_topic(),
        key: address.as_bytes().to_vec(),
        batch: batch.to_string(),
        event_id: String::new(),
        headers,
        payload,
    }
}

/// Signs records at send time, for either uplink: one key, one sequence.
pub struct Signer {
    key: SigningKey,
    connector_id: String,
    seq: AtomicU64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("connector_id", &self.connector_id)
            .field("key_id", &self.key.key_id())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Derive the key; the sequence starts at now (ms) × 1000, so it keeps
    /// increasing across restarts.
    pub fn new(secret: &[u8], connector_id: &str) -> Arc<Signer> {
        let seq_start = u64::try_from(now_millis())
            .unwrap_or(0)
            .saturating_mul(1000);
        Arc::new(Signer {
            key: SigningKey::derive(secret, connector_id),
            connector_id: connector_id.to_string(),
            seq: AtomicU64::new(seq_start),
        })
    }

    /// The connector id.
    pub fn connector_id(&self) -> &str {
        &self.connector_id
    }

    /// Sign a record now: its one binary signature header (`fps`: key id,
    /// seq, ts and MAC, 57 bytes; see [`fleetpulse_core::signing`]).
    pub fn sign(&self, r: &StoredRecord) -> Vec<(String, Vec<u8>)> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let ts = now_millis();
        let f = self.key.sign(&r.topic, &r.key, seq, ts, &r.payload);
        vec![(HDR_SIG.to_string(), f.to_bytes().to_vec())]
    }
}

/// All of a connector's records go to ONE partition of each topic:
/// `FNV-1a(connector_id) mod partitions`. librdkafka sends one Produce
/// request per partition, so spreading a slot's few records over every
/// partition by device key multiplies the requests (and the per-batch
/// headers) without any benefit at a site's rate; one partition keeps each
/// device's records in order (the message key stays the device id), and
/// co-partitions a connector's records across topics with the same number
/// of partitions (better replay detection in the processor, see README).
/// Many connectors still spread over all partitions.
#[derive(Debug, Clone, Copy)]
pub struct ByConnector {
    hash: u32,
}

impl ByConnector {
    /// The partitioner of `connector_id`.
    pub fn new(connector_id: &str) -> ByConnector {
        let mut h: u32 = 0x811c_9dc5;
        for b in connector_id.as_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        ByConnector { hash: h }
    }

    /// The partition of a topic with `partitions` partitions.
    pub fn pick(&self, partitions: i32) -> i32 {
        match u32::try_from(partitions) {
            Ok(n) if n > 0 => i32::try_from(self.hash % n).unwrap_or(0),
            // No metadata yet: librdkafka's "unassigned", it asks again.
            _ => -1,
        }
    }
}

impl Partitioner for ByConnector {
    fn partition(
        &self,
        _topic_name: &str,
        _key: Option<&[u8]>,
        partition_cnt: i32,
        _is_partition_available: impl Fn(i32) -> bool,
    ) -> i32 {
        self.pick(partition_cnt)
    }
}

/// What a send resolves to: the broker's acknowledgement, an error, or
/// `Canceled` when the producer went away first.
pub type Ack = futures::channel::oneshot::Receiver<Result<(), KafkaError>>;

/// The producer's context: the [`ByConnector`] partitioner, and delivery
/// reports handed to the [`Ack`] of each record.
/// Authentication failures go to an [`AuthWatch`], fatal errors are logged
/// as errors, other client errors as warnings (librdkafka recovers from
/// them by itself).
pub struct EdgeProducerContext {
    partitioner: ByConnector,
    auth: Arc<AuthWatch>,
}

impl ClientContext for EdgeProducerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::Authentication) {
            self.auth.refused(reason);
        } else if code == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(error = %error, reason, "Kafka producer fatal error: the producer must be recreated (restart the connector); records stay in the buffer");
        } else {
            tracing::warn!(error = %error, reason, "Kafka client error (librdkafka retries)");
        }
    }
}

impl ProducerContext<ByConnector> for EdgeProducerContext {
    type DeliveryOpaque = Box<futures::channel::oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        });
    }

    fn get_custom_partitioner(&self) -> Option<&ByConnector> {
        Some(&self.partitioner)
    }
}

/// How often a persisting Kafka authentication failure is logged again.
const AUTH_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the Kafka uplink knows about broker authentication.
///
/// librdkafka retries a refused SASL login forever and, with
/// `message.timeout.ms = 0`, no delivery ever fails: records just stay in
/// the buffer. Without this, a wrong password would only show as
/// librdkafka's own log lines. Here the failure is named together with the
/// keys to check, counted, and kept until a delivery succeeds.
#[derive(Debug, Default)]
struct AuthWatch {
    state: Mutex<AuthState>,
}

#[derive(Debug, Default)]
struct AuthState {
    /// librdkafka's account of the last refusal, while unresolved.
    last: Option<String>,
    /// When it was last logged.
    logged_at: Option<Instant>,
    /// Refusals since then.
    unlogged: u64,
}

impl AuthWatch {
    fn refused(&self, reason: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // librdkafka appends "(after Nms in state …, N identical error(s)
        // suppressed)": the same refusal, not a new one.
        let cause = |r: &str| r.split(" (after ").next().unwrap_or_default().to_string();
        let due = s.logged_at.is_none_or(|t| t.elapsed() >= AUTH_LOG_EVERY)
            || s.last.as_deref().map(cause) != Some(cause(reason));
        s.last = Some(reason.to_string());
        s.unlogged += 1;
        if due {
            kafka_auth_failed(reason, s.unlogged);
            s.logged_at = Some(Instant::now());
            s.unlogged = 0;
        }
        metrics::counter!("fleetpulse_edge_kafka_auth_failures_total").increment(1);
    }

    fn delivered(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.last.take().is_some() {
            tracing::info!("Kafka authentication succeeded again; the buffer drains");
            s.logged_at = None;
            s.unlogged = 0;
        }
    }

    fn last(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .clone()
    }
}

fn kafka_auth_failed(reason: &str, attempts: u64) {
    tracing::error!(
        reason,
        attempts,
        "Kafka authentication failed: the brokers refused our SASL credentials; check kafka.sasl.username, kafka.sasl.password and kafka.sasl.mechanism (and the user's SCRAM credentials on the brokers). Nothing is delivered; records stay in the buffer and are sent once authentication succeeds"
    );
}

/// A signing Kafka producer for one connector.
pub struct Publisher {
    producer: ThreadedProducer<EdgeProducerContext, ByConnector>,
    kafka: KafkaConfig,
    signer: Arc<Signer>,
    compression: &'static str,
    auth: Arc<AuthWatch>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("signer", &self.signer)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

/// The edge's producer defaults for a thin WAN link (each unless set in
/// `kafka.properties`): few, full batches (what leaves the site is small, so
/// waiting a second lets a slot's records share requests and compress
/// together); a metadata refresh every hour (librdkafka's maximum) instead
/// of every 5 minutes (librdkafka also refreshes at once on any error such
/// as a leader change; the cache lives 3 refresh intervals, librdkafka's
/// rule). Disabling the
/// periodic refresh (`-1`) was measured to be far worse: librdkafka 2.12
/// then asked for metadata about every second. No client metrics pushed to
/// the broker (KIP-714).
pub const WAN_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "1000"),
    ("topic.metadata.refresh.interval.ms", "3600000"),
    ("metadata.max.age.ms", "10800000"),
    ("enable.metrics.push", "false"),
];

fn producer_config(kafka: &KafkaConfig, compression: &str) -> Result<ClientConfig, PublishError> {
    // The edge crosses networks: TLS unless every broker is on loopback.
    let mut c = kafka.try_client_config(TlsDefault::OnUnlessLoopback)?;
    // Our settings, unless the operator overrode them in kafka.properties.
    for (k, v) in [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("compression.type", compression),
        // The buffer owns durability: librdkafka retries until delivered.
        ("message.timeout.ms", "0"),
    ]
    .into_iter()
    .chain(WAN_DEFAULTS.iter().copied())
    {
        if !kafka.properties.contains_key(k) {
            c.set(k, v);
        }
    }
    Ok(c)
}

impl Publisher {
    /// Create the producer (zstd when this librdkafka has it, else lz4).
    pub fn new(
        kafka: &KafkaConfig,
        secret: &[u8],
        connector_id: &str,
    ) -> Result<Arc<Publisher>, PublishError> {
        Publisher::with_signer(kafka, Signer::new(secret, connector_id))
    }

    /// Create the producer around an existing [`Signer`].
    pub fn with_signer(
        kafka: &KafkaConfig,
        signer: Arc<Signer>,
    ) -> Result<Arc<Publisher>, PublishError> {
        let auth = Arc::new(AuthWatch::default());
        let context = || EdgeProducerContext {
            partitioner: ByConnector::new(signer.connector_id()),
            auth: auth.clone(),
        };
        let (producer, compression) = match producer_config(kafka, "zstd")?
            .create_with_context::<_, ThreadedProducer<_, _>>(context())
        {
            Ok(p) => (p, "zstd"),
            Err(e) => {
                tracing::info!(error = %e, "zstd unavailable in this librdkafka build, using lz4");
                (
                    producer_config(kafka, "lz4")?
                        .create_with_context::<_, ThreadedProducer<_, _>>(context())
                        .map_err(PublishError::Create)?,
                    "lz4",
                )
            }
        };
        Ok(Arc::new(Publisher {
            producer,
            kafka: kafka.clone(),
            signer,
            compression,
            auth,
        }))
    }

    /// librdkafka's account of the last authentication refusal by the
    /// brokers (e.g. "SASL authentication error: Authentication failed …"),
    /// while no record has been delivered since; `None` when authentication
    /// works or was never refused.
    pub fn auth_failure(&self) -> Option<String> {
        self.auth.last()
    }

    /// The compression codec in use.
    pub fn compression(&self) -> &'static str {
        self.compression
    }

    /// The Kafka settings (topic names).
    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// Sign a buffered record now and queue it; the future resolves when
    /// the broker acknowledged (or librdkafka gave up on) it.
    pub fn send(&self, r: &StoredRecord) -> Result<Ack, PublishError> {
        let signature = self.signer.sign(r);
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + signature.len());
        for (k, v) in r.headers.iter().chain(signature.iter()) {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: Some(v.as_slice()),
            });
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        let record = BaseRecord::with_opaque_to(&r.topic, Box::new(tx))
            .key(&r.key)
            .payload(&r.payload)
            .headers(headers);
        self.producer
            .send(record)
            .map(|()| rx)
            .map_err(|(source, _)| PublishError::Enqueue {
                topic: r.topic.clone(),
                source,
            })
    }

    /// Flush the producer (bounded), so queued records reach the broker.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, ?timeout, "Kafka flush did not complete; unacknowledged records stay in the buffer");
            metrics::counter!("fleetpulse_edge_flush_failures_total").increment(1);
        }
    }
}

/// Paces sends to a byte rate (0 = unlimited).
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(bytes_per_sec: u64) -> TokenBucket {
        let rate = bytes_per_sec as f64;
        let burst = (rate / 4.0).max(64.0 * 1024.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Spend `n` bytes; how long to wait before sending them.
    fn take(&mut self, n: usize) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Why an uplink did not acknowledge a record.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Kafka's delivery report.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Firehose's answer.
    #[error("Firehose: {0}")]
    Firehose(#[from] FirehoseError),
}

/// One record's outcome: buffer seq, class, acknowledged or why not.
pub(crate) type Delivery = (u64, Class, Result<(), DeliveryError>);

/// Where [`forward`] sends: one of two concrete uplinks.
#[derive(Debug, Clone)]
pub enum Uplink {
    /// Kafka (`uplink.kind = "kafka"`).
    Kafka(Arc<Publisher>),
    /// AWS Firehose (`uplink.kind = "firehose"`).
    Firehose(Arc<FirehoseUplink>),
}

impl Uplink {
    /// `"kafka"` or `"firehose"`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Uplink::Kafka(_) => "kafka",
            Uplink::Firehose(_) => "firehose",
        }
    }

    /// How long in-flight sends may take at shutdown.
    fn drain_timeout(&self) -> Duration {
        match self {
            // librdkafka was flushed (bounded) already.
            Uplink::Kafka(_) => Duration::from_secs(1),
            Uplink::Firehose(_) => FLUSH_TIMEOUT,
        }
    }
}

fn delivered(class: Class, n: u64) {
    if class == Class::DeadLetter {
        telemetry::add(
            &COUNTERS.dead_lettered,
            "fleetpulse_edge_dead_lettered_total",
            n,
        );
    } else {
        telemetry::add(
            &COUNTERS.events_sent,
            "fleetpulse_edge_events_sent_total",
            n,
        );
    }
}

fn delivery_failed(seq: u64, e: &DeliveryError, backoff: Duration) {
    tracing::warn!(
        seq,
        error = %e,
        ?backoff,
        "the uplink did not acknowledge a record; it stays in the buffer and is sent again"
    );
    metrics::counter!("fleetpulse_edge_delivery_failures_total").increment(1);
}

fn send_failed(e: &PublishError, backoff: Duration) {
    tracing::warn!(error = %e, ?backoff, "cannot queue a record for Kafka; it stays in the buffer");
    metrics::counter!("fleetpulse_edge_publish_failures_total").increment(1);
}

fn buffer_failed(e: &crate::buffer::BufferError) {
    tracing::error!(error = %e, "buffer: cannot write the ack cursor; acknowledged records may be sent again after a restart");
    metrics::counter!("fleetpulse_edge_buffer_errors_total").increment(1);
}

/// Apply delivery results to the buffer (acks remove, failures put back).
async fn settle(buffer: &Arc<Buffer>, results: &mut Vec<Delivery>, force_checkpoint: bool) -> bool {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut failure = false;
    for (seq, class, r) in results.drain(..) {
        match r {
            Ok(()) => {
                delivered(class, 1);
                ok.push(seq);
            }
            Err(e) => {
                delivery_failed(seq, &e, Duration::from_secs(1));
                failed.push(seq);
                failure = true;
            }
        }
    }
    let b = buffer.clone();
    let res = tokio::task::spawn_blocking(move || {
        b.ack(&ok);
        b.nack(&failed);
        b.checkpoint(force_checkpoint)
    })
    .await;
    if let Ok(Err(e)) = res {
        buffer_failed(&e);
    }
    failure
}

/// Send the buffer's records through the uplink, oldest first, until
/// `shutdown`; then give in-flight sends a bounded time ([`FLUSH_TIMEOUT`])
/// and write the ack cursor.
pub async fn forward(buffer: Arc<Buffer>, uplink: Uplink, shutdown: Shutdown) {
    let window = buffer.config().max_in_flight;
    let mut bucket = TokenBucket::new(buffer.config().replay_bytes_per_sec);
    // Each in-flight future yields the outcomes of one or more records.
    let mut inflight: FuturesUnordered<BoxFuture<'static, Vec<Delivery>>> = FuturesUnordered::new();
    let mut inflight_records = 0usize;
    let mut results: Vec<Delivery> = Vec::new();
    let mut backoff = Duration::from_secs(1);
    let mut paused_until: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let take = |d: Vec<Delivery>, n: &mut usize, results: &mut Vec<Delivery>| {
        *n = n.saturating_sub(d.len());
        results.extend(d);
    };
    'run: loop {
        if paused_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
            paused_until = None;
        }
        let room = window.saturating_sub(inflight_records);
        let mut claimed = 0;
        if room > 0 && paused_until.is_none() {
            let b = buffer.clone();
            let batch =
                tokio::task::spawn_blocking(move || b.claim(room.min(CLAIM_BATCH), 4 << 20))
                    .await
                    .unwrap_or_default();
            claimed = batch.len();
            let mut for_firehose = Vec::new();
            for r in batch {
                let wait = bucket.take(r.frame_len());
                if !wait.is_zero() {
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'run,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                let publisher = match &uplink {
                    Uplink::Kafka(p) => p,
                    Uplink::Firehose(_) => {
                        for_firehose.push(r);
                        continue;
                    }
                };
                match publisher.send(&r) {
                    Ok(fut) => {
                        let (seq, class) = (r.seq, r.class);
                        let auth = publisher.auth.clone();
                        inflight_records += 1;
                        inflight.push(
                            fut.map(move |d| {
                                let r = match d {
                                    Ok(Ok(())) => {
                                        auth.delivered();
                                        Ok(())
                                    }
                                    Ok(Err(e)) => Err(e.into()),
                                    Err(_) => Err(KafkaError::Canceled.into()),
                                };
                                vec![(seq, class, r)]
                            })
                            .boxed(),
                        );
                    }
                    Err(e) => {
                        send_failed(&e, backoff);
                        results.push((r.seq, r.class, Err(KafkaError::Canceled.into())));
                        paused_until = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            if let Uplink::Firehose(f) = &uplink {
                if !for_firehose.is_empty() {
                    let (now, calls) = f.submit(&for_firehose);
                    inflight_records += for_firehose.len() - now.len();
                    results.extend(now);
                    inflight.extend(calls);
                }
            }
        }
        while let Some(Some(d)) = inflight.next().now_or_never() {
            take(d, &mut inflight_records, &mut results);
        }
        if claimed == 0 || !results.is_empty() {
            if claimed == 0 && results.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    Some(d) = inflight.next(), if !inflight.is_empty() => take(d, &mut inflight_records, &mut results),
                    _ = buffer.wait_for_records(), if inflight_records < window && paused_until.is_none() => {}
                    _ = tick.tick() => {}
                }
                while let Some(Some(d)) = inflight.next().now_or_never() {
                    take(d, &mut inflight_records, &mut results);
                }
            }
            if !results.is_empty() {
                if settle(&buffer, &mut results, false).await {
                    paused_until = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                } else {
                    backoff = Duration::from_secs(1);
                }
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Shutdown: deliver what is in flight (bounded), record the acks.
    if let Uplink::Kafka(p) = &uplink {
        let p = p.clone();
        let _ = tokio::task::spawn_blocking(move || p.flush(FLUSH_TIMEOUT)).await;
    }
    let deadline = tokio::time::Instant::now() + uplink.drain_timeout();
    while !inflight.is_empty() {
        match tokio::time::timeout_at(deadline, inflight.next()).await {
            Ok(Some(d)) => take(d, &mut inflight_records, &mut results),
            _ => break,
        }
    }
    settle(&buffer, &mut results, true).await;
    let stats = buffer.stats();
    tracing::info!(
        uplink = uplink.name(),
        left_in_buffer = stats.records,
        in_flight_unacknowledged = inflight_records,
        "forwarder stopped"
    );
}
