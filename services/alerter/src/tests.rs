//! End-to-end test of `run` and `tail` against an in-process mock Kafka cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetpulse_core::codec;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::records::{
    DeviceStatus, MaintenanceAlert, MaintenanceKind, MaintenanceSeverity, MaintenanceState,
    SupplyType,
};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::{now_millis, samples, Shutdown};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

use crate::{run, tail, AlerterConfig};

const HOUR_MS: i64 = 3_600_000;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,rdkafka=warn")
        .with_test_writer()
        .try_init();
}

/// A status of `device` observed `hours_ago` with a black toner at `black`%
/// and a cyan toner that never moves.
fn status(device: &str, hours_ago: i64, black: f64, now: i64) -> DeviceStatus {
    let mut s = samples::device_status(device);
    s.event_id = fleetpulse_core::new_event_id();
    s.observed_at = now - hours_ago * HOUR_MS;
    s.supplies[0].percent = Some(black);
    s.supplies[0].level = Some(black as i32);
    let cyan = &mut s.supplies[1];
    cyan.supply_type = SupplyType::TonerCartridge;
    cyan.description = "Cyan Cartridge HP CF411A".into();
    cyan.percent = Some(80.0);
    s
}

async fn produce(producer: &FutureProducer, topic: &str, key: String, payload: Vec<u8>) {
    producer
        .send(
            FutureRecord::to(topic).key(&key).payload(&payload),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("test record delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_raises_depletion_and_silence_and_tail_prints_them() {
    init_logs();
    let cluster = MockCluster::new(1).expect("mock cluster");
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic_prefix: "it".into(),
        properties: BTreeMap::new(),
        ..Default::default()
    };
    let status_topic = kafka.topic(RecordType::DeviceStatus);
    let heartbeat_topic = kafka.topic(RecordType::DeviceHeartbeat);
    let alert_topic = kafka.topic(RecordType::MaintenanceAlert);
    let connector_topic = kafka.topic(RecordType::ConnectorHeartbeat);
    for t in [
        &status_topic,
        &heartbeat_topic,
        &alert_topic,
        &connector_topic,
    ] {
        cluster.create_topic(t, 1, 1).expect("topic");
    }
    let producer: FutureProducer = kafka.client_config().create().expect("producer");

    // History, hours apart in event time: SN-DRAIN's black toner loses 2
    // points every 3 hours (16/day) from 40%; SN-QUIET stays at 90%.
    let now = now_millis();
    let mut sends = Vec::new();
    for i in 0..8 {
        let hours_ago = 3 * (7 - i);
        let drain = status("SN-DRAIN", hours_ago, 40.0 - 2.0 * i as f64, now);
        let quiet = status("SN-QUIET", hours_ago, 90.0, now);
        for s in [drain, quiet] {
            let bytes = codec::encode(&s).expect("encode");
            sends.push(produce(
                &producer,
                &status_topic,
                s.device_id.clone(),
                bytes,
            ));
        }
    }
    futures::future::join_all(sends).await;
    // Garbage on the raw topic is skipped, not fatal.
    produce(
        &producer,
        &status_topic,
        "SN-X".into(),
        b"not avro at all".to_vec(),
    )
    .await;
    for device in ["SN-DRAIN", "SN-QUIET"] {
        let mut hb = samples::device_heartbeat(device);
        hb.observed_at = now_millis();
        produce(
            &producer,
            &heartbeat_topic,
            device.into(),
            codec::encode(&hb).expect("encode"),
        )
        .await;
    }

    // SN-DRAIN keeps answering every 100 ms; SN-QUIET never again.
    let shutdown = Shutdown::new();
    let pump = {
        let producer = producer.clone();
        let topic = heartbeat_topic.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {}
                }
                let mut hb = samples::device_heartbeat("SN-DRAIN");
                hb.event_id = fleetpulse_core::new_event_id();
                hb.observed_at = now_millis();
                let bytes = codec::encode(&hb).expect("encode");
                let _ = producer
                    .send(
                        FutureRecord::to(&topic).key("SN-DRAIN").payload(&bytes),
                        Duration::from_secs(1),
                    )
                    .await;
            }
        })
    };

    let config = AlerterConfig {
        kafka: kafka.clone(),
        group_id: "it-alerter".into(),
        heartbeat_interval: Duration::from_millis(300),
        silent_after_intervals: 3,
        check_interval: Duration::from_millis(50),
        ..AlerterConfig::default()
    };
    let alerter = tokio::spawn(run(config, shutdown.clone()));

    // Read the alert topic until both expected alerts are there, then a
    // little longer to catch any duplicate.
    let checker: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "it-checker")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("checker");
    checker
        .subscribe(&[alert_topic.as_str()])
        .expect("subscribe");
    let mut alerts: Vec<MaintenanceAlert> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || settle_until.is_some_and(|s| now > s) {
            break;
        }
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(200), checker.recv()).await
        else {
            continue;
        };
        let alert = codec::decode::<MaintenanceAlert>(msg.payload().expect("payload"))
            .expect("alert decodes");
        assert_eq!(
            msg.key(),
            Some(alert.device_id.as_bytes()),
            "keyed by device_id"
        );
        alerts.push(alert);
        let has = |kind, device: &str| {
            alerts.iter().any(|a| {
                a.kind == kind && a.device_id == device && a.state == MaintenanceState::Raised
            })
        };
        if settle_until.is_none()
            && has(MaintenanceKind::ConsumableDepletion, "SN-DRAIN")
            && has(MaintenanceKind::DeviceSilent, "SN-QUIET")
        {
            settle_until = Some(Instant::now() + Duration::from_millis(1500));
        }
    }

    let depletion: Vec<&MaintenanceAlert> = alerts
        .iter()
        .filter(|a| a.kind == MaintenanceKind::ConsumableDepletion)
        .collect();
    assert_eq!(
        depletion.len(),
        1,
        "exactly one depletion alert: {alerts:#?}"
    );
    let d = depletion[0];
    assert_eq!(d.state, MaintenanceState::Raised);
    assert_eq!(d.device_id, "SN-DRAIN");
    assert_eq!(d.alert_key, "SN-DRAIN/consumable_depletion/1");
    assert_eq!(d.supply_index, Some(1));
    assert_eq!(d.severity, MaintenanceSeverity::Warning);
    assert_eq!(d.tenant_id, "tenant-a");
    assert_eq!(d.connector_id, "conn-1");
    assert_eq!(d.schema_version, 1);
    // Raised on the 4th reading: 34% at 16 points/day.
    assert_eq!(d.level_percent, Some(34.0));
    let days = d.days_to_empty.expect("days_to_empty");
    assert!((days - 34.0 / 16.0).abs() < 1e-6, "{days}");
    assert!(
        d.message
            .contains("Black Cartridge HP CF410A (supply 1) at 34.0% will be empty in 2.1 days"),
        "{}",
        d.message
    );

    let silent: Vec<&MaintenanceAlert> = alerts
        .iter()
        .filter(|a| a.kind == MaintenanceKind::DeviceSilent)
        .collect();
    assert_eq!(
        silent.len(),
        1,
        "only SN-QUIET goes silent, once: {alerts:#?}"
    );
    assert_eq!(silent[0].device_id, "SN-QUIET");
    assert_eq!(silent[0].alert_key, "SN-QUIET/device_silent");
    assert_eq!(silent[0].severity, MaintenanceSeverity::Critical);
    assert!(silent[0].silent_for_s.is_some());
    assert_eq!(alerts.len(), 2, "{alerts:#?}");

    // `tail` prints both, readable and as JSON.
    let mut text = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_secs(30),
        tail(
            kafka.clone(),
            true,
            Some(2),
            false,
            &mut text,
            shutdown.child_token(),
        ),
    )
    .await
    .expect("tail finishes")
    .expect("tail ok");
    assert_eq!(n, 2);
    let text = String::from_utf8(text).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().any(|l| l.contains("RAISED   warning  consumable_depletion  device=SN-DRAIN supply=1 level=34.0% days_to_empty=2.1  Black Cartridge")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .contains("RAISED   critical device_silent         device=SN-QUIET silent_for=")),
        "{text}"
    );

    let mut json = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_secs(30),
        tail(
            kafka.clone(),
            true,
            Some(2),
            true,
            &mut json,
            shutdown.child_token(),
        ),
    )
    .await
    .expect("tail finishes")
    .expect("tail ok");
    assert_eq!(n, 2);
    let kinds: Vec<String> = String::from_utf8(json)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            format!(
                "{}/{}",
                v["kind"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert!(
        kinds.contains(&"consumable_depletion/raised".to_string()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"device_silent/raised".to_string()),
        "{kinds:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), alerter)
        .await
        .expect("run stops on shutdown")
        .expect("run task")
        .expect("run ok");
    pump.await.expect("pump");
}

#[tokio::test]
async fn run_rejects_a_contradictory_config() {
    let config = AlerterConfig {
        min_points: 1,
        ..AlerterConfig::default()
    };
    let err = run(config, Shutdown::new()).await.unwrap_err();
    assert!(err.to_string().contains("`min_points`"), "{err}");
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn tail_with_max_zero_prints_nothing() {
    let mut out = Vec::new();
    let n = tail(
        KafkaConfig::default(),
        true,
        Some(0),
        false,
        &mut out,
        Shutdown::new(),
    )
    .await
    .expect("ok");
    assert_eq!(n, 0);
    assert!(out.is_empty());
}
