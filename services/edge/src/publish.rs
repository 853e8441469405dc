//! Signed publishing to Kafka.
//!
//! Every record is signed over (topic, key, batch, seq, ts, payload) so the
//! processor can prove it came from this connector and was not moved or
//! altered. Sends are never awaited one by one (each would cost `linger.ms`):
//! delivery futures go to one acknowledgement task that counts what the
//! broker confirmed and logs what it refused.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_core::kafka::{dlq_headers, KafkaConfig};
use fleetpulse_core::records::Record;
use fleetpulse_core::signing::{
    SigningKey, HDR_BATCH, HDR_CONNECTOR, HDR_KEY_ID, HDR_SEQ, HDR_SIG, HDR_TS,
};
use fleetpulse_core::telemetry::{self, COUNTERS};
use fleetpulse_core::{codec, now_millis};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use tokio::sync::mpsc;

/// Largest raw SNMP response copied to the dead-letter topic.
pub const DLQ_PAYLOAD_MAX: usize = 64 * 1024;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created (bad config).
    #[error("cannot create Kafka producer: {0}")]
    Create(#[source] KafkaError),
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

/// What a delivery acknowledgement counts towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Record,
    DeadLetter,
}

struct Pending {
    future: DeliveryFuture,
    topic: String,
    kind: Kind,
}

/// A signed Kafka publisher for one connector.
pub struct Publisher {
    producer: FutureProducer,
    kafka: KafkaConfig,
    key: SigningKey,
    connector_id: String,
    seq: AtomicU64,
    pending: mpsc::UnboundedSender<Pending>,
    last_upload_at: Arc<AtomicI64>,
    compression: &'static str,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("connector_id", &self.connector_id)
            .field("key_id", &self.key.key_id())
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

/// Handle on the acknowledgement task; await it after the last send.
#[derive(Debug)]
pub struct AckTask(tokio::task::JoinHandle<()>);

impl AckTask {
    /// Wait until every queued send was acknowledged or failed.
    pub async fn join(self) {
        let _ = self.0.await;
    }
}

fn producer_config(kafka: &KafkaConfig, compression: &str) -> ClientConfig {
    let mut c = kafka.client_config();
    // Our settings, unless the operator overrode them in kafka.properties.
    for (k, v) in [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("compression.type", compression),
        ("linger.ms", "50"),
        ("message.timeout.ms", "300000"),
    ] {
        if !kafka.properties.contains_key(k) {
            c.set(k, v);
        }
    }
    c
}

impl Publisher {
    /// Create the producer (zstd when this librdkafka has it, else lz4) and
    /// start the acknowledgement task.
    pub fn new(
        kafka: &KafkaConfig,
        secret: &[u8],
        connector_id: &str,
    ) -> Result<(Arc<Publisher>, AckTask), PublishError> {
        let (producer, compression) = match producer_config(kafka, "zstd")
            .create::<FutureProducer>()
        {
            Ok(p) => (p, "zstd"),
            Err(e) => {
                tracing::info!(error = %e, "zstd unavailable in this librdkafka build, using lz4");
                (
                    producer_config(kafka, "lz4")
                        .create::<FutureProducer>()
                        .map_err(PublishError::Create)?,
                    "lz4",
                )
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let last_upload_at = Arc::new(AtomicI64::new(0));
        let ack = AckTask(tokio::spawn(acknowledge(rx, last_upload_at.clone())));
        let seq_start = u64::try_from(now_millis())
            .unwrap_or(0)
            .saturating_mul(1000);
        Ok((
            Arc::new(Publisher {
                producer,
                kafka: kafka.clone(),
                key: SigningKey::derive(secret, connector_id),
                connector_id: connector_id.to_string(),
                seq: AtomicU64::new(seq_start),
                pending: tx,
                last_upload_at,
                compression,
            }),
            ack,
        ))
    }

    /// The compression codec in use.
    pub fn compression(&self) -> &'static str {
        self.compression
    }

    /// Last time the broker acknowledged a record, ms since epoch.
    pub fn last_upload_at(&self) -> Option<i64> {
        Some(self.last_upload_at.load(Ordering::Relaxed)).filter(|v| *v > 0)
    }

    /// Sign and queue one record on its topic, keyed by its device id.
    pub async fn publish<R: Record>(&self, record: &R, batch: &str) -> Result<(), PublishError> {
        let topic = self.kafka.topic(R::TYPE);
        let payload = codec::encode(record)?;
        self.send(
            topic,
            record.device_id().as_bytes(),
            &payload,
            batch,
            OwnedHeaders::new(),
            Kind::Record,
        )
        .await
    }

    /// Queue a dead-letter record for an SNMP response that did not decode.
    pub async fn dead_letter_snmp(
        &self,
        address: &str,
        reason: &str,
        raw: &[u8],
        batch: &str,
    ) -> Result<(), PublishError> {
        let payload = &raw[..raw.len().min(DLQ_PAYLOAD_MAX)];
        let original = format!("snmp://{address}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: dlq_headers::ERROR_CLASS,
                value: Some("snmp_decode"),
            })
            .insert(Header {
                key: dlq_headers::REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: dlq_headers::STAGE,
                value: Some("edge"),
            })
            .insert(Header {
                key: dlq_headers::ORIGINAL_TOPIC,
                value: Some(original.as_str()),
            });
        self.send(
            self.kafka.dlq_topic(),
            address.as_bytes(),
            payload,
            batch,
            headers,
            Kind::DeadLetter,
        )
        .await
    }

    async fn send(
        &self,
        topic: String,
        key: &[u8],
        payload: &[u8],
        batch: &str,
        headers: OwnedHeaders,
        kind: Kind,
    ) -> Result<(), PublishError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let ts = now_millis();
        let sig = self.key.sign(&topic, key, batch, seq, ts, payload);
        let seq_s = seq.to_string();
        let ts_s = ts.to_string();
        let headers = headers
            .insert(Header {
                key: HDR_CONNECTOR,
                value: Some(self.connector_id.as_str()),
            })
            .insert(Header {
                key: HDR_KEY_ID,
                value: Some(self.key.key_id()),
            })
            .insert(Header {
                key: HDR_BATCH,
                value: Some(batch),
            })
            .insert(Header {
                key: HDR_SEQ,
                value: Some(seq_s.as_str()),
            })
            .insert(Header {
                key: HDR_TS,
                value: Some(ts_s.as_str()),
            })
            .insert(Header {
                key: HDR_SIG,
                value: Some(sig.as_str()),
            });
        let mut record = FutureRecord::to(&topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        // A full local queue is back-pressure, not failure: wait and retry for a while.
        let mut waited = Duration::ZERO;
        loop {
            match self.producer.send_result(record) {
                Ok(future) => {
                    let _ = self.pending.send(Pending {
                        future,
                        topic: topic.clone(),
                        kind,
                    });
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if waited < Duration::from_secs(30) =>
                {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    waited += Duration::from_millis(50);
                }
                Err((source, _)) => {
                    publish_failed(&topic, &source);
                    return Err(PublishError::Enqueue { topic, source });
                }
            }
        }
    }

    /// Flush the producer (bounded), so queued records reach the broker.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::error!(error = %e, ?timeout, "Kafka flush did not complete; unsent records are lost");
            metrics::counter!("fleetpulse_edge_flush_failures_total").increment(1);
        }
    }
}

/// Count acknowledged records; log refused ones. Ends when every sender is gone
/// and every pending delivery resolved.
async fn acknowledge(mut rx: mpsc::UnboundedReceiver<Pending>, last_upload_at: Arc<AtomicI64>) {
    let mut inflight = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            p = rx.recv(), if open => match p {
                Some(p) => inflight.push(async move {
                    let r = p.future.await;
                    (r, p.topic, p.kind)
                }),
                None => open = false,
            },
            Some((result, topic, kind)) = inflight.next(), if !inflight.is_empty() => {
                match result {
                    Ok(Ok(_)) => {
                        last_upload_at.store(now_millis(), Ordering::Relaxed);
                        match kind {
                            Kind::Record => telemetry::add(&COUNTERS.events_sent, "fleetpulse_edge_events_sent_total", 1),
                            Kind::DeadLetter => telemetry::add(&COUNTERS.dead_lettered, "fleetpulse_edge_dead_lettered_total", 1),
                        }
                    }
                    Ok(Err((e, _))) => delivery_failed(&topic, &e),
                    Err(_) => delivery_failed(&topic, &KafkaError::Canceled),
                }
            },
            else => break,
        }
    }
}

fn publish_failed(topic: &str, e: &KafkaError) {
    tracing::error!(topic, error = %e, "cannot queue record for Kafka; it is dropped");
    metrics::counter!("fleetpulse_edge_publish_failures_total").increment(1);
}

fn delivery_failed(topic: &str, e: &KafkaError) {
    tracing::error!(
        topic,
        error = %e,
        "Kafka did not acknowledge a record after librdkafka's retries; it is lost (store-and-forward is not implemented yet)"
    );
    metrics::counter!("fleetpulse_edge_delivery_failures_total").increment(1);
}
