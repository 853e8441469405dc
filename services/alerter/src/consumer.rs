//! The Kafka side: restore open alerts, consume raw records, feed the
//! [`Monitor`], publish what it decides.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fleetpulse_core::codec::{self, CodecError};
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::records::{
    ConnectorHeartbeat, DeviceHeartbeat, DeviceStatus, MaintenanceAlert, MaintenanceState,
};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::telemetry::{self, COUNTERS};
use fleetpulse_core::{now_millis, Shutdown};
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::AlerterConfig;
use crate::state::{Monitor, Rules};
use crate::tail::{kind_label, state_label};
use crate::AlerterError;

/// How long the start-up read of the alert topic may take before the
/// alerter gives up on it and starts with what it has.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a shutdown waits for alerts still in flight.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one send may wait for room in a full producer queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// A delivery report to wait for: the alert key, its transition and the outcome.
type Delivery = BoxFuture<'static, (String, MaintenanceState, Result<(), String>)>;

/// How a device appears in the alerter's logs: a short keyed hash, never
/// the raw serial. The alert topic carries the serial for ops by design;
/// platform logs are kept, shipped and read more widely, so they get an id
/// that correlates lines within one process run (the key is random per
/// process) and reveals nothing about the device.
pub(crate) fn log_id(device_id: &str) -> String {
    static KEY: std::sync::OnceLock<fleetpulse_core::pseudonym::Pseudonymizer> =
        std::sync::OnceLock::new();
    let p = KEY.get_or_init(|| {
        let key = format!(
            "{}{}",
            fleetpulse_core::new_event_id(),
            fleetpulse_core::new_event_id()
        );
        fleetpulse_core::pseudonym::Pseudonymizer::new(key.as_bytes(), "log")
    });
    let mut id = p.pseudonymize("alerter-log", device_id);
    id.truncate(12);
    format!("dev-{id}")
}

/// The alert key with its device part replaced by [`log_id`].
fn log_key(alert_key: &str, device_id: &str) -> String {
    match alert_key.strip_prefix(device_id) {
        Some(rest) => format!("{}{rest}", log_id(device_id)),
        None => log_id(alert_key),
    }
}

/// The client config of `kafka` with `ours` set; the user's
/// `kafka.properties` are applied last so they win, as documented.
pub(crate) fn client_config(kafka: &KafkaConfig, ours: &[(&str, &str)]) -> ClientConfig {
    let mut c = kafka.client_config();
    for (k, v) in ours {
        c.set(*k, *v);
    }
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}

fn undecodable(topic: &str, partition: i32, offset: i64, err: &CodecError) {
    tracing::warn!(topic, partition, offset, class = err.class(), error = %err, "skipping undecodable record (the processor dead-letters it)");
    metrics::counter!("fleetpulse_alerter_undecodable_total", "class" => err.class()).increment(1);
}

fn consume_failed(err: &KafkaError) {
    tracing::warn!(error = %err, "consuming failed; librdkafka retries");
    metrics::counter!("fleetpulse_alerter_consume_errors_total").increment(1);
}

fn alert_published(a: &MaintenanceAlert) {
    if a.state == MaintenanceState::Raised {
        telemetry::add(
            &COUNTERS.alerts_raised,
            "fleetpulse_alerter_alerts_raised_total",
            1,
        );
    }
    metrics::counter!(
        "fleetpulse_alerter_alerts_total",
        "kind" => kind_label(a.kind),
        "state" => state_label(a.state)
    )
    .increment(1);
    // No raw serial in logs: the message names the device, so it is left out.
    tracing::info!(
        alert_key = %log_key(&a.alert_key, &a.device_id),
        kind = kind_label(a.kind),
        state = state_label(a.state),
        severity = ?a.severity,
        device = %log_id(&a.device_id),
        event_id = %a.event_id,
        "maintenance alert published"
    );
}

/// An alert could not be delivered: undo its transition so that it is
/// decided (and published) again when the condition is next seen.
pub(crate) fn delivery_failed(
    monitor: &mut Monitor,
    alert_key: &str,
    state: MaintenanceState,
    err: &dyn std::fmt::Display,
) {
    monitor.undo(alert_key, state);
    let device = alert_key.split('/').next().unwrap_or_default();
    tracing::error!(
        alert_key = %log_key(alert_key, device),
        state = state_label(state),
        error = %err,
        "publishing an alert failed; it will be decided again when the condition is next seen"
    );
    metrics::counter!("fleetpulse_alerter_publish_errors_total").increment(1);
}

fn alerts_restored(read: usize, open: usize) {
    tracing::info!(read, open, "restored open alerts from the alert topic");
    metrics::gauge!("fleetpulse_alerter_open_alerts").set(open as f64);
}

fn restore_failed(err: &KafkaError) {
    tracing::warn!(error = %err, "could not read the alert topic at start; open alerts from before the restart may be raised again");
    metrics::counter!("fleetpulse_alerter_restore_errors_total").increment(1);
}

/// Read the alert topic from its start to its current end (blocking).
///
/// The alert topic is small (one record per transition), so this is cheap;
/// it is bounded by [`RESTORE_TIMEOUT`] and shutdown anyway.
fn read_alert_topic(
    kafka: &KafkaConfig,
    shutdown: &Shutdown,
) -> Result<Vec<MaintenanceAlert>, KafkaError> {
    let topic = kafka.topic(RecordType::MaintenanceAlert);
    let group = format!(
        "fleetpulse-alerter-restore-{}",
        fleetpulse_core::new_event_id()
    );
    let consumer: BaseConsumer = client_config(
        kafka,
        &[
            ("group.id", group.as_str()),
            ("client.id", "fleetpulse-alerter-restore"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()?;
    let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    if t.error().is_some() {
        // Usually "unknown topic": nothing was ever alerted.
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(&topic, p.id(), Offset::Offset(low))?;
            ends.insert(p.id(), high);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    let mut alerts = Vec::new();
    while !ends.is_empty() && !shutdown.is_cancelled() && Instant::now() < deadline {
        let Some(res) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = res?;
        match codec::decode::<MaintenanceAlert>(msg.payload().unwrap_or_default()) {
            Ok(a) => alerts.push(a),
            Err(e) => undecodable(&topic, msg.partition(), msg.offset(), &e),
        }
        if ends
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() + 1 >= *end)
        {
            ends.remove(&msg.partition());
        }
    }
    if !ends.is_empty() && !shutdown.is_cancelled() {
        tracing::warn!("reading the alert topic timed out; continuing with what was read");
    }
    Ok(alerts)
}

/// What one consumed record does to the monitor.
fn handle(
    msg: &BorrowedMessage<'_>,
    kafka: &KafkaConfig,
    monitor: &mut Monitor,
) -> Vec<MaintenanceAlert> {
    let payload = msg.payload().unwrap_or_default();
    let now = now_millis();
    match kafka.record_type_of(msg.topic()) {
        Some(RecordType::DeviceStatus) => match codec::decode::<DeviceStatus>(payload) {
            Ok(s) => monitor.on_status(&s, now),
            Err(e) => {
                undecodable(msg.topic(), msg.partition(), msg.offset(), &e);
                Vec::new()
            }
        },
        Some(RecordType::DeviceHeartbeat) => match codec::decode::<DeviceHeartbeat>(payload) {
            Ok(h) => monitor.on_heartbeat(&h, now).into_iter().collect(),
            Err(e) => {
                undecodable(msg.topic(), msg.partition(), msg.offset(), &e);
                Vec::new()
            }
        },
        Some(RecordType::ConnectorHeartbeat) => {
            match codec::decode::<ConnectorHeartbeat>(payload) {
                Ok(h) => monitor.on_connector_heartbeat(&h, now),
                Err(e) => {
                    undecodable(msg.topic(), msg.partition(), msg.offset(), &e);
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    }
}

/// The consume → decide → publish loop of [`crate::run`].
pub(crate) async fn consume(config: AlerterConfig, shutdown: Shutdown) -> Result<(), AlerterError> {
    let kafka = &config.kafka;
    let status_topic = kafka.topic(RecordType::DeviceStatus);
    let heartbeat_topic = kafka.topic(RecordType::DeviceHeartbeat);
    let connector_topic = kafka.topic(RecordType::ConnectorHeartbeat);
    let alert_topic = kafka.topic(RecordType::MaintenanceAlert);
    let mut monitor = Monitor::new(Rules::from_config(&config));

    let restore_kafka = kafka.clone();
    let restore_shutdown = shutdown.clone();
    let restored = match tokio::task::spawn_blocking(move || {
        read_alert_topic(&restore_kafka, &restore_shutdown)
    })
    .await
    {
        Ok(r) => r,
        Err(join) => {
            tracing::error!(error = %join, "the restore task died");
            Err(KafkaError::Canceled)
        }
    };
    match restored {
        Ok(alerts) => {
            let open = monitor.open_alerts_mut();
            for a in &alerts {
                open.replay(a);
            }
            alerts_restored(alerts.len(), monitor.open_count());
        }
        Err(e) => restore_failed(&e),
    }
    if shutdown.is_cancelled() {
        return Ok(());
    }

    let consumer: StreamConsumer = client_config(
        kafka,
        &[
            ("group.id", config.group_id.as_str()),
            ("client.id", "fleetpulse-alerter"),
            ("enable.auto.commit", "true"),
            ("auto.offset.reset", "earliest"),
        ],
    )
    .create()
    .map_err(AlerterError::kafka("create the consumer"))?;
    consumer
        .subscribe(&[
            status_topic.as_str(),
            heartbeat_topic.as_str(),
            connector_topic.as_str(),
        ])
        .map_err(AlerterError::kafka("subscribe to the raw topics"))?;
    let producer: FutureProducer = client_config(
        kafka,
        &[
            ("client.id", "fleetpulse-alerter"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
        ],
    )
    .create()
    .map_err(AlerterError::kafka("create the producer"))?;

    let mut inflight: FuturesUnordered<Delivery> = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(config.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(group_id = %config.group_id, %status_topic, %heartbeat_topic, %alert_topic, "alerter consuming");

    loop {
        let alerts = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((key, state, res)) = inflight.next(), if !inflight.is_empty() => {
                if let Err(e) = res {
                    delivery_failed(&mut monitor, &key, state, &e);
                }
                continue;
            }
            _ = ticker.tick() => monitor.tick(now_millis()),
            msg = consumer.recv() => match msg {
                Ok(m) => handle(&m, kafka, &mut monitor),
                Err(e) => {
                    consume_failed(&e);
                    continue;
                }
            },
        };
        for alert in alerts {
            let payload = match codec::encode(&alert) {
                Ok(p) => p,
                Err(e) => {
                    delivery_failed(&mut monitor, &alert.alert_key, alert.state, &e);
                    continue;
                }
            };
            // Enqueue now (librdkafka batches); the delivery report is
            // awaited in `inflight` so the loop never waits for a round trip.
            let record = FutureRecord::to(&alert_topic)
                .key(alert.device_id.as_str())
                .payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    let key = alert.alert_key.clone();
                    let state = alert.state;
                    inflight.push(
                        async move {
                            let res: Result<(), String> = match delivery.await {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err((e, _))) => Err(e.to_string()),
                                Err(_) => Err("producer dropped the delivery".to_string()),
                            };
                            (key, state, res)
                        }
                        .boxed(),
                    );
                }
                Err((e, record)) => {
                    // Queue full: wait for room (back-pressure on consumption).
                    tracing::debug!(error = %e, "producer queue full; waiting");
                    if let Err((e, _)) = producer.send(record, QUEUE_TIMEOUT).await {
                        delivery_failed(&mut monitor, &alert.alert_key, alert.state, &e);
                        continue;
                    }
                }
            }
            alert_published(&alert);
        }
        metrics::gauge!("fleetpulse_alerter_open_alerts").set(monitor.open_count() as f64);
        metrics::gauge!("fleetpulse_alerter_devices").set(monitor.device_count() as f64);
    }

    // Drain: flush what is queued, then collect the delivery reports.
    let flusher = producer.clone();
    let flushed =
        tokio::task::spawn_blocking(move || flusher.flush(Timeout::After(FLUSH_TIMEOUT))).await;
    if let Ok(Err(e)) = flushed {
        tracing::warn!(error = %e, "flushing alerts at shutdown did not finish");
    }
    let drain = async {
        while let Some((key, state, res)) = inflight.next().await {
            if let Err(e) = res {
                delivery_failed(&mut monitor, &key, state, &e);
            }
        }
    };
    if tokio::time::timeout(FLUSH_TIMEOUT, drain).await.is_err() {
        tracing::warn!("delivery reports still pending at shutdown");
    }
    tracing::info!("alerter stopped");
    Ok(())
}
