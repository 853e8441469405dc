//! Outage test: the broker is down while 200 simulated printers produce six
//! simulated hours of traffic (the sim clock runs 720× faster than the wall
//! clock). Afterwards every usage-counters and alert record arrives exactly
//! once (by event_id), in order per device, signed, and the buffer's files
//! never exceeded their bound (measured on disk, independently of the
//! buffer's own accounting).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetpulse_core::codec;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::records::{AlertEvent, ConnectorHeartbeat, UsageCounters};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::signing::{SignatureFields, SigningKey};
use fleetpulse_core::Shutdown;
use fleetpulse_edge::buffer::{BufferStats, Class, FsyncPolicy};
use fleetpulse_edge::{Buffer, BufferConfig, DeviceConfig, EdgeConfig, SnmpOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const SECRET: &str = "outage-test-secret-0123456789";
const PRINTERS: usize = 200;
const ACCELERATION: f64 = 720.0;
const SIM_OUTAGE: Duration = Duration::from_secs(6 * 3600);
const MAX_BYTES: u64 = 4 << 20;
const REPLAY_CAP: u64 = 2 << 20;
const PARTITIONS: i32 = 4;

/// Bytes of the buffer's own files in `dir`: segments, their compaction
/// temporaries, the ack cursor and the lock. The counters state file
/// (`schedule.counters_state_file`, by default `counters.json` in the same
/// directory) is not part of the buffer: its size follows the device count
/// (about 200 bytes a device), not the outage, and `buffer.max_bytes` does
/// not cover it (README). It is returned separately.
fn files_bytes(dir: &Path) -> (u64, u64) {
    let mut buffer = 0;
    let mut state = 0;
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.filter_map(|e| e.ok()) {
            let Ok(m) = e.metadata() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(fleetpulse_edge::buffer::COUNTERS_FILE) {
                state = state.max(m.len());
            } else {
                buffer += m.len();
            }
        }
    }
    (buffer, state)
}

struct Got {
    topic: String,
    partition: i32,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

fn consume_all(bootstrap: &str, kafka: &KafkaConfig, until: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "outage-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in [
        RecordType::UsageCounters,
        RecordType::AlertEvent,
        RecordType::ConnectorHeartbeat,
    ] {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&kafka.topic(t), p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut idle_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                got.push(Got {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| {
                                    (
                                        x.key.to_string(),
                                        x.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {
                // Keep reading a little past the expected count, to see duplicates.
                if until(&got) && idle_since.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hour_outage_loses_no_counters_or_alerts() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic_prefix: "outage".into(),
        properties: Default::default(),
        ..Default::default()
    };
    for t in kafka.all_topics() {
        cluster
            .create_topic(&t, PARTITIONS, 1)
            .expect("create topic");
    }
    let sim_stop = Shutdown::new();
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: PRINTERS,
            base_port: 0,
            acceleration: ACCELERATION,
            silence_probability: 0.0,
            jam_probability: 0.5,
            ..Default::default()
        },
        sim_stop.clone(),
    )
    .await
    .expect("sim fleet");
    let devices: Vec<DeviceConfig> = fleet
        .printers()
        .iter()
        .map(|p| DeviceConfig::new(p.addr.to_string(), p.community.clone()))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    std::env::set_var("FP_EDGE_OUTAGE_SECRET", SECRET);
    let config = EdgeConfig {
        tenant_id: "tenant-outage".into(),
        connector_id: "conn-outage".into(),
        connector_secret: "env:FP_EDGE_OUTAGE_SECRET".into(),
        devices,
        poll_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(1),
        // Counters after every poll: the test counts them through the outage.
        schedule: fleetpulse_edge::ScheduleConfig::every_poll(),
        snmp: SnmpOptions {
            timeout: Duration::from_millis(1500),
            retries: 1,
            poll_deadline: Duration::from_secs(5),
            ..SnmpOptions::default()
        },
        kafka: kafka.clone(),
        buffer: BufferConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: MAX_BYTES,
            segment_bytes: 256 << 10,
            fsync: FsyncPolicy::Batch,
            replay_bytes_per_sec: REPLAY_CAP,
            max_in_flight: 500,
            ..BufferConfig::default()
        },
        max_concurrent_polls: 32,
        ..EdgeConfig::default()
    };
    let buffer = Buffer::open(config.buffer.clone()).expect("buffer opens");

    // Watch the bound on disk throughout, every 10 ms.
    let peak = Arc::new(AtomicU64::new(0));
    let state_peak = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (peak, state_peak, watching, path) = (
            peak.clone(),
            state_peak.clone(),
            watching.clone(),
            dir.path().to_path_buf(),
        );
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while watching.load(Ordering::Relaxed) {
                let (buffer, state) = files_bytes(&path);
                peak.fetch_max(buffer, Ordering::Relaxed);
                state_peak.fetch_max(state, Ordering::Relaxed);
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };

    let edge_stop = Shutdown::new();
    let edge = tokio::spawn(fleetpulse_edge::run_with_buffer(
        config,
        buffer.clone(),
        edge_stop.clone(),
    ));
    // Normal operation first: records flow.
    let start = Instant::now();
    while buffer.last_upload_at().is_none() {
        if edge.is_finished() {
            panic!("edge stopped: {:?}", edge.await);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing was uploaded before the outage: {:?}",
            buffer.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let upload_before = buffer.last_upload_at();

    // Outage: six sim hours.
    cluster.broker_down(1).expect("broker down");
    let outage_started = Instant::now();
    let wall = SIM_OUTAGE.div_f64(ACCELERATION);
    tokio::time::sleep(wall).await;
    let at_up = buffer.stats();
    println!(
        "outage over after {:?} wall ({:?} sim): {} records / {} bytes buffered, dropped {:?}, rejected {:?}",
        outage_started.elapsed(),
        SIM_OUTAGE,
        at_up.records,
        at_up.live_bytes,
        at_up.dropped,
        at_up.rejected
    );
    assert!(
        BufferStats::of(&at_up.dropped, Class::Heartbeat) > 0,
        "the outage filled the buffer (test too small to exercise eviction)"
    );
    cluster.broker_up(1).expect("broker up");
    let replay_started = Instant::now();

    // Live traffic continues during the replay for a while, then the fleet stops.
    tokio::time::sleep(Duration::from_secs(5)).await;
    sim_stop.cancel();
    // Polls now time out: only connector heartbeats are added. Wait for the drain.
    let drained = loop {
        let s = buffer.stats();
        if s.records <= 2 {
            break replay_started.elapsed();
        }
        assert!(
            replay_started.elapsed() < Duration::from_secs(90),
            "buffer did not drain: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    edge_stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(30), edge).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "run() returns: {ended:?}");
    fleet.join().await;
    let end = buffer.stats();
    watching.store(false, Ordering::Relaxed);
    let samples = watcher.join().expect("watcher");
    let peak = peak.load(Ordering::Relaxed);
    let state_peak = state_peak.load(Ordering::Relaxed);

    let expected_counters = BufferStats::of(&end.appended, Class::Counters);
    let expected_alerts = BufferStats::of(&end.appended, Class::Alert);
    println!(
        "appended {:?}; dropped {:?}; rejected {:?}; acked {} (replayed {}); peak on disk {peak} of {MAX_BYTES} bytes ({samples} samples); peak by the index {}; drained in {drained:?}; left {}; counters state file up to {state_peak} bytes",
        end.appended, end.dropped, end.rejected, end.acked, end.replayed, end.peak_disk_bytes, end.records
    );
    // The counters state file is there (so the split above is real) and
    // stays small: a few hundred bytes per device.
    assert!(
        state_peak > 0 && state_peak < (PRINTERS as u64) * 1024,
        "counters state file peaked at {state_peak} bytes"
    );
    assert!(
        peak <= MAX_BYTES,
        "buffer files reached {peak} bytes, bound {MAX_BYTES}"
    );
    assert!(end.peak_disk_bytes <= MAX_BYTES);
    assert_eq!(end.rejected, [0; 7], "nothing was rejected");
    assert_eq!(BufferStats::of(&end.dropped, Class::Counters), 0);
    assert_eq!(BufferStats::of(&end.dropped, Class::Alert), 0);
    assert_eq!(end.records, 0, "every record was delivered before the stop");
    assert!(
        expected_counters > (PRINTERS as u64) * 10,
        "{expected_counters} counters"
    );
    assert!(expected_alerts > 0, "the sim produced alerts");

    // The replay respected the bandwidth cap (minus the bucket's burst and
    // what was already queued in librdkafka when the broker came back).
    let backlog = at_up.live_bytes.saturating_sub(4 << 20);
    let min_secs = backlog as f64 / REPLAY_CAP as f64 * 0.8;
    assert!(
        drained.as_secs_f64() >= min_secs,
        "replayed {} bytes in {drained:?}, faster than the cap allows ({min_secs:.1}s)",
        at_up.live_bytes
    );

    let counters_topic = kafka.topic(RecordType::UsageCounters);
    let alerts_topic = kafka.topic(RecordType::AlertEvent);
    let hb_topic = kafka.topic(RecordType::ConnectorHeartbeat);
    let got = tokio::task::spawn_blocking({
        let bootstrap = cluster.bootstrap_servers();
        let kafka = kafka.clone();
        let (ct, at) = (counters_topic.clone(), alerts_topic.clone());
        move || {
            consume_all(&bootstrap, &kafka, |g| {
                let c = g.iter().filter(|m| m.topic == ct).count() as u64;
                let a = g.iter().filter(|m| m.topic == at).count() as u64;
                c >= expected_counters && a >= expected_alerts
            })
        }
    })
    .await
    .expect("consumer thread");

    let key = SigningKey::derive(SECRET.as_bytes(), "conn-outage");
    let mut ids = HashSet::new();
    let mut per_device: HashMap<(String, Vec<u8>), (i64, u64, i32)> = HashMap::new();
    let (mut counters, mut alerts) = (0u64, 0u64);
    let mut heartbeats = Vec::new();
    for g in &got {
        let fields = SignatureFields::from_headers(
            g.headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
        )
        .expect("signature headers");
        key.verify(&g.topic, &g.key, &fields, &g.payload)
            .unwrap_or_else(|e| panic!("bad signature on {}: {e}", g.topic));
        let (event_id, observed_at) = if g.topic == counters_topic {
            counters += 1;
            let r: UsageCounters = codec::decode(&g.payload).expect("counters decode");
            (r.event_id, r.observed_at)
        } else if g.topic == alerts_topic {
            alerts += 1;
            let r: AlertEvent = codec::decode(&g.payload).expect("alert decodes");
            (r.event_id, r.observed_at)
        } else if g.topic == hb_topic {
            heartbeats.push(codec::decode::<ConnectorHeartbeat>(&g.payload).expect("hb decodes"));
            continue;
        } else {
            continue;
        };
        assert!(
            ids.insert(event_id.clone()),
            "duplicate event_id {event_id} on {}",
            g.topic
        );
        let slot = per_device
            .entry((g.topic.clone(), g.key.clone()))
            .or_insert((i64::MIN, 0, g.partition));
        assert_eq!(slot.2, g.partition, "a device stays on one partition");
        assert!(
            observed_at >= slot.0,
            "out of order for {:?} on {}: {observed_at} after {}",
            String::from_utf8_lossy(&g.key),
            g.topic,
            slot.0
        );
        assert!(fields.seq > slot.1, "sent out of buffer order");
        *slot = (observed_at, fields.seq, g.partition);
    }
    println!(
        "consumed {counters} counters (expected {expected_counters}), {alerts} alerts (expected {expected_alerts}), {} connector heartbeats, {} devices",
        heartbeats.len(),
        per_device.len()
    );
    assert_eq!(
        counters, expected_counters,
        "every counters record exactly once"
    );
    assert_eq!(alerts, expected_alerts, "every alert exactly once");

    // A heartbeat written during the outage tells what the buffer held.
    let during = heartbeats
        .iter()
        .filter(|h| h.buffer_depth > 1000)
        .max_by_key(|h| h.buffer_depth)
        .expect("a heartbeat from the outage reports a deep buffer");
    assert!(
        during.oldest_buffered_age_ms.is_some_and(|a| a >= 5_000),
        "{during:?}"
    );
    assert!(
        during.last_upload_at.is_some()
            && during.last_upload_at <= upload_before.map(|t| t + 1_000)
    );
    assert_eq!(during.device_count, PRINTERS as i32);
}
