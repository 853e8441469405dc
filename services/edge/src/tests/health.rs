//! Privacy at source, the watchdog, reloads and the control topic, each
//! through `run()` on a mock Kafka cluster.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fleetpulse_core::codec;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::records::{ConnectorHeartbeat, DeviceStatus};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::Shutdown;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use tokio::sync::watch;

use super::{printer_mib, start_agent, Mode, TestAgent};
use crate::privacy::PrivacyConfig;
use crate::{DeviceConfig, EdgeConfig, SnmpOptions};

const SECRET: &str = "a-health-test-secret-of-some-length";

/// Every log line of this test process, at every level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let w = W(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
        buf
    })
    .clone()
}

struct Rig {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    kafka: KafkaConfig,
    _dir: tempfile::TempDir,
    config: EdgeConfig,
}

fn rig(connector: &str, devices: Vec<DeviceConfig>) -> Rig {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic_prefix: "h".into(),
        properties: Default::default(),
        ..Default::default()
    };
    for t in kafka.all_topics() {
        cluster.create_topic(&t, 1, 1).expect("create topic");
    }
    std::env::set_var("FP_EDGE_HEALTH_SECRET", SECRET);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EdgeConfig {
        buffer: crate::buffer::BufferConfig {
            dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        tenant_id: "tenant-h".into(),
        connector_id: connector.into(),
        connector_secret: "env:FP_EDGE_HEALTH_SECRET".into(),
        devices,
        poll_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(1),
        snmp: SnmpOptions {
            timeout: Duration::from_millis(300),
            retries: 1,
            poll_deadline: Duration::from_secs(2),
            ..SnmpOptions::default()
        },
        kafka: kafka.clone(),
        // Status every poll: these tests follow devices through their statuses.
        schedule: crate::ScheduleConfig::every_poll(),
        ..EdgeConfig::default()
    };
    Rig {
        cluster,
        kafka,
        _dir: dir,
        config,
    }
}

#[derive(Debug, Clone)]
struct Got {
    topic: String,
    key: String,
    payload: Vec<u8>,
}

struct Reader {
    consumer: BaseConsumer,
    got: Vec<Got>,
}

impl Reader {
    fn new(kafka: &KafkaConfig) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", "health-check")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let topics = kafka.all_topics();
        consumer
            .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
            .expect("subscribe");
        Reader {
            consumer,
            got: Vec::new(),
        }
    }

    /// Read until `done` holds or `timeout` passes; whether it held.
    fn until(&mut self, timeout: Duration, done: impl Fn(&[Got]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.got) {
                return true;
            }
            let m = tokio::task::block_in_place(|| self.consumer.poll(Duration::from_millis(100)));
            if let Some(Ok(m)) = m {
                self.got.push(Got {
                    topic: m.topic().to_string(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
        }
        done(&self.got)
    }
}

fn status_count(kafka: &KafkaConfig, got: &[Got], device: &str) -> usize {
    got.iter()
        .filter(|g| g.topic == kafka.topic(RecordType::DeviceStatus) && g.key == device)
        .count()
}

fn connector_heartbeats(kafka: &KafkaConfig, got: &[Got]) -> Vec<ConnectorHeartbeat> {
    got.iter()
        .filter(|g| g.topic == kafka.topic(RecordType::ConnectorHeartbeat))
        .filter_map(|g| codec::decode(&g.payload).ok())
        .collect()
}

fn agent_device(a: &TestAgent) -> DeviceConfig {
    DeviceConfig::new(a.addr.to_string(), "public")
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Canary identity values on a test agent (sysName, sysContact, sysLocation; the MAC is 00:11:22:33:44:55).
fn canary_agent_mib(
    serial: &str,
) -> std::collections::BTreeMap<crate::snmp::Oid, crate::snmp::SnmpValue> {
    use crate::mapping::oids;
    let mut m = printer_mib(serial);
    super::put(&mut m, oids::SYS_NAME, &[], super::s("CANARY-HOST"));
    super::put(
        &mut m,
        oids::SYS_CONTACT,
        &[],
        super::s("CANARY-PERSON <canary@example.com>"),
    );
    super::put(
        &mut m,
        oids::SYS_LOCATION,
        &[],
        super::s("Berlin, DE, CANARY-ROOM"),
    );
    m
}

async fn privacy_run(privacy: PrivacyConfig) -> (Vec<Got>, KafkaConfig, Vec<String>) {
    let shutdown = Shutdown::new();
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: 2,
            base_port: 0,
            ipp_base_port: Some(0),
            silence_probability: 0.0,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("sim fleet");
    let agent = start_agent(Mode::Normal, canary_agent_mib("SN-PRIV-1")).await;
    // What the sim printers would reveal: read it directly.
    let mut canaries: Vec<String> = vec![
        "CANARY".into(),
        "Berlin".into(),
        "00:11:22:33:44:55".into(),
        "127.0.0.1".into(),
    ];
    let p0 = &fleet.printers()[0];
    let snap = crate::poll_device(
        &DeviceConfig::new(p0.addr.to_string(), p0.community.clone()),
        &SnmpOptions::default(),
    )
    .await
    .expect("sim printer answers");
    canaries.extend(snap.identity.sys_name.clone());
    canaries.extend(snap.identity.sys_contact.clone());
    canaries.extend(snap.identity.sys_location.clone());
    canaries.extend(snap.identity.mac_address.clone());
    let p1 = &fleet.printers()[1];
    let ipp_addr = p1.ipp_addr.expect("IPP enabled");
    let devices = vec![
        DeviceConfig::new(p0.addr.to_string(), p0.community.clone()),
        DeviceConfig {
            protocol: crate::config::Protocol::Ipp,
            ipp_url: Some(format!("ipp://{ipp_addr}/ipp/print")),
            ..DeviceConfig::new(ipp_addr.to_string(), "public")
        },
        agent_device(&agent),
    ];
    let serials = [
        p0.serial.clone(),
        p1.serial.clone(),
        "SN-PRIV-1".to_string(),
    ];
    let mut r = rig("conn-privacy", devices);
    r.config.privacy = privacy;
    let edge = tokio::spawn(crate::run(r.config.clone(), shutdown.clone()));
    let mut reader = Reader::new(&r.kafka);
    let kafka = r.kafka.clone();
    let ok = reader.until(Duration::from_secs(30), |got| {
        serials.iter().all(|s| status_count(&kafka, got, s) > 0)
    });
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), edge).await;
    fleet.join().await;
    drop(r.cluster);
    assert!(ok, "every device reported status");
    (reader.got, kafka, canaries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_defaults_keep_canaries_on_site_and_keep_sends_them() {
    let logs = captured_logs();
    let (got, kafka, canaries) = privacy_run(PrivacyConfig::default()).await;
    for g in &got {
        for c in &canaries {
            assert!(
                !contains(&g.payload, c),
                "{c:?} left the site in {}",
                g.topic
            );
        }
    }
    let statuses: Vec<DeviceStatus> = got
        .iter()
        .filter(|g| g.topic == kafka.topic(RecordType::DeviceStatus))
        .filter_map(|g| codec::decode(&g.payload).ok())
        .collect();
    let canary = statuses
        .iter()
        .find(|s| s.device_id == "SN-PRIV-1")
        .expect("canary status");
    assert_eq!(canary.sys_location.as_deref(), Some("DE"));
    assert_eq!(canary.ip_address.as_deref(), Some("127.0.0.0/24"));
    assert_eq!(canary.mac_address, None);
    assert_eq!(canary.sys_name, None);
    // Nor in the connector's own logs (every level).
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("edge connector started"), "logs are captured");
    for c in canaries.iter().filter(|c| *c != "127.0.0.1") {
        assert!(!text.contains(c.as_str()), "{c:?} in the edge logs");
    }

    // Opting in sends them.
    let (got, kafka, _) = privacy_run(PrivacyConfig::keep_all()).await;
    let canary: DeviceStatus = got
        .iter()
        .filter(|g| g.topic == kafka.topic(RecordType::DeviceStatus) && g.key == "SN-PRIV-1")
        .find_map(|g| codec::decode(&g.payload).ok())
        .expect("canary status");
    assert_eq!(canary.sys_name.as_deref(), Some("CANARY-HOST"));
    assert_eq!(
        canary.sys_contact.as_deref(),
        Some("CANARY-PERSON <canary@example.com>")
    );
    assert_eq!(
        canary.sys_location.as_deref(),
        Some("Berlin, DE, CANARY-ROOM")
    );
    assert_eq!(canary.ip_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(canary.mac_address.as_deref(), Some("00:11:22:33:44:55"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_restarts_a_hung_poller_and_the_others_continue() {
    let stuck = start_agent(Mode::Normal, printer_mib("SN-STUCK")).await;
    let fine = start_agent(Mode::Normal, printer_mib("SN-FINE")).await;
    // The first poll of SN-STUCK hangs forever, past every deadline.
    crate::watchdog::hang_next_poll(&stuck.addr.to_string());
    let mut r = rig(
        "conn-watchdog",
        vec![agent_device(&stuck), agent_device(&fine)],
    );
    r.config.watchdog.stall_after = Some(Duration::from_secs(2));
    r.config.watchdog.check_interval = Duration::from_millis(200);
    r.config.watchdog.unhealthy_fraction = 1.0;
    let shutdown = Shutdown::new();
    let started = Instant::now();
    let edge = tokio::spawn(crate::run(r.config.clone(), shutdown.clone()));
    let mut reader = Reader::new(&r.kafka);
    let kafka = r.kafka.clone();
    // The other device keeps reporting while SN-STUCK hangs...
    let fine_first = reader.until(Duration::from_secs(20), |got| {
        status_count(&kafka, got, "SN-FINE") >= 2
    });
    assert!(fine_first, "the healthy device is polled meanwhile");
    assert_eq!(
        status_count(&kafka, &reader.got, "SN-STUCK"),
        0,
        "first poll hangs"
    );
    // ...and after stall_after the watchdog restarts SN-STUCK's task, which then reports.
    let restarted = reader.until(Duration::from_secs(20), |got| {
        status_count(&kafka, got, "SN-STUCK") >= 1
    });
    let after = started.elapsed();
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert!(restarted, "the stuck poller was restarted");
    assert!(after >= Duration::from_secs(2), "not before stall_after");
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(status_count(&kafka, &reader.got, "SN-FINE") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_devices_and_rejects_fixed_keys() {
    let a = start_agent(Mode::Normal, printer_mib("SN-RA")).await;
    let b = start_agent(Mode::Normal, printer_mib("SN-RB")).await;
    let c = start_agent(Mode::Normal, printer_mib("SN-RC")).await;
    let r = rig("conn-reload", vec![agent_device(&a)]);
    let (tx, rx) = watch::channel(r.config.clone());
    let shutdown = Shutdown::new();
    let edge = tokio::spawn(crate::run_with_reload(
        r.config.clone(),
        Some(rx),
        shutdown.clone(),
    ));
    let mut reader = Reader::new(&r.kafka);
    let kafka = r.kafka.clone();
    assert!(reader.until(Duration::from_secs(20), |g| status_count(
        &kafka, g, "SN-RA"
    ) > 0));

    // A reload changing the uplink is rejected, device C included.
    let mut bad = r.config.clone();
    bad.kafka.topic_prefix = "elsewhere".into();
    bad.devices.push(agent_device(&c));
    tx.send(bad).unwrap();
    // An invalid one too.
    let mut invalid = r.config.clone();
    invalid.poll_interval = Duration::from_millis(10);
    invalid.devices.push(agent_device(&c));
    tx.send(invalid).unwrap();
    // Add B (live), then remove A.
    let mut add = r.config.clone();
    add.devices.push(agent_device(&b));
    tx.send(add.clone()).unwrap();
    assert!(
        reader.until(Duration::from_secs(20), |g| {
            status_count(&kafka, g, "SN-RB") > 0
                && connector_heartbeats(&kafka, g)
                    .iter()
                    .any(|h| h.device_count == 2)
        }),
        "device B added by the reload"
    );
    let mut remove = add.clone();
    remove.devices.remove(0);
    remove.privacy = PrivacyConfig::keep_all();
    tx.send(remove).unwrap();
    let seen = reader.got.len();
    assert!(
        reader.until(Duration::from_secs(20), |g| {
            connector_heartbeats(&kafka, &g[seen..])
                .iter()
                .any(|h| h.device_count == 1)
                && g[seen..].iter().any(|x| {
                    x.key == "SN-RB"
                        && codec::decode::<DeviceStatus>(&x.payload)
                            .is_ok_and(|s| s.sys_name.as_deref() == Some("printer-1"))
                })
        }),
        "device A removed, privacy changed live"
    );
    // A change of shared settings restarts the pollers on the new interval.
    let slower = reader.got.len();
    let mut cfg = add.clone();
    cfg.devices.remove(0);
    cfg.poll_interval = Duration::from_secs(2);
    tx.send(cfg).unwrap();
    assert!(reader.until(Duration::from_secs(20), |g| status_count(
        &kafka,
        &g[slower..],
        "SN-RB"
    ) > 0));
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert_eq!(
        status_count(&kafka, &reader.got, "SN-RC"),
        0,
        "rejected reloads not applied"
    );
}

/// `[schedule]` changes by reload apply to the running pollers, and what
/// each device last sent carries over (no "first" status again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_new_schedule_without_resending() {
    let a = start_agent(Mode::Normal, printer_mib("SN-SA")).await;
    let mut r = rig("conn-schedule", vec![agent_device(&a)]);
    // The default schedule, its floor lowered for the test: one status at
    // the first poll, the next one in 3 h.
    let quiet = crate::ScheduleConfig {
        min_interval: Duration::from_secs(1),
        ..Default::default()
    };
    r.config.schedule = quiet.clone();
    let (tx, rx) = watch::channel(r.config.clone());
    let shutdown = Shutdown::new();
    let edge = tokio::spawn(crate::run_with_reload(
        r.config.clone(),
        Some(rx),
        shutdown.clone(),
    ));
    let mut reader = Reader::new(&r.kafka);
    let kafka = r.kafka.clone();
    // First status, then heartbeats listing the device alive (polled every second).
    assert!(reader.until(Duration::from_secs(20), |g| {
        status_count(&kafka, g, "SN-SA") == 1
            && connector_heartbeats(&kafka, g)
                .iter()
                .filter(|h| {
                    h.devices
                        .iter()
                        .any(|d| d.device_id == "SN-SA" && d.reachable)
                })
                .count()
                >= 3
    }));
    assert_eq!(
        status_count(&kafka, &reader.got, "SN-SA"),
        1,
        "one status on the 3 h schedule"
    );

    // Reload: status every poll. The pollers restart on it.
    let mut every = r.config.clone();
    every.schedule = crate::ScheduleConfig::every_poll();
    tx.send(every).unwrap();
    assert!(
        reader.until(Duration::from_secs(20), |g| status_count(
            &kafka, g, "SN-SA"
        ) >= 4),
        "the every-poll schedule applies after the reload"
    );

    // Reload back to the 3 h schedule: no status resent as "first", none on
    // the old 1 s due time; statuses stop.
    tx.send(r.config.clone()).unwrap();
    let hb_seen = |g: &[Got], from: usize| connector_heartbeats(&kafka, &g[from..]).len();
    let mark = reader.got.len();
    assert!(reader.until(Duration::from_secs(20), |g| hb_seen(g, mark) >= 3));
    let settled = status_count(&kafka, &reader.got, "SN-SA");
    let mark = reader.got.len();
    assert!(reader.until(Duration::from_secs(20), |g| hb_seen(g, mark) >= 4));
    assert_eq!(
        status_count(&kafka, &reader.got, "SN-SA"),
        settled,
        "no status after switching back to the 3 h schedule"
    );
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_topic_applies_signed_configs_and_rejects_the_rest() {
    use crate::control::{control_topic, publish_config, ConfigSigningKey};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let agents = [
        start_agent(Mode::Normal, printer_mib("SN-C0")).await,
        start_agent(Mode::Normal, printer_mib("SN-C1")).await,
        start_agent(Mode::Normal, printer_mib("SN-UNSIGNED")).await,
        start_agent(Mode::Normal, printer_mib("SN-WRONGKEY")).await,
        start_agent(Mode::Normal, printer_mib("SN-OLDER")).await,
        start_agent(Mode::Normal, printer_mib("SN-C2")).await,
    ];
    let mut r = rig("conn-control", vec![agent_device(&agents[0])]);
    r.config.control.enabled = true;
    let topic = control_topic(&r.kafka, "conn-control");
    r.cluster.create_topic(&topic, 1, 1).expect("control topic");
    // The document an operator would publish: the running config plus devices.
    let doc = |devices: &[usize]| {
        let mut c = r.config.clone();
        c.devices = devices.iter().map(|i| agent_device(&agents[*i])).collect();
        toml_of(&c)
    };
    let shutdown = Shutdown::new();
    let edge = tokio::spawn(crate::run(r.config.clone(), shutdown.clone()));
    let mut reader = Reader::new(&r.kafka);
    let kafka = r.kafka.clone();
    assert!(reader.until(Duration::from_secs(20), |g| status_count(
        &kafka, g, "SN-C0"
    ) > 0));

    publish_config(
        &r.kafka,
        None,
        "conn-control",
        SECRET.as_bytes(),
        &doc(&[0, 1]),
        10,
    )
    .await
    .expect("publish v10");
    assert!(
        reader.until(Duration::from_secs(20), |g| status_count(
            &kafka, g, "SN-C1"
        ) > 0),
        "signed config v10 applied"
    );
    // Unsigned, signed with another secret, and an older version: all rejected.
    let producer: FutureProducer = r.kafka.client_config().create().unwrap();
    let raw = |payload: String, headers: Vec<(&'static str, String)>| {
        let mut h = OwnedHeaders::new();
        for (k, v) in &headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let p = producer.clone();
        let topic = topic.clone();
        async move {
            p.send(
                FutureRecord::to(&topic)
                    .key("conn-control")
                    .payload(&payload)
                    .headers(h),
                Duration::from_secs(5),
            )
            .await
            .expect("sent");
        }
    };
    raw(doc(&[0, 1, 2]), Vec::new()).await;
    let wrong = ConfigSigningKey::derive(b"not-the-connector-secret", "conn-control");
    let d = doc(&[0, 1, 3]);
    raw(d.clone(), wrong.sign(11, 1, d.as_bytes()).headers()).await;
    publish_config(
        &r.kafka,
        None,
        "conn-control",
        SECRET.as_bytes(),
        &doc(&[0, 1, 4]),
        9,
    )
    .await
    .expect("publish v9");
    // A valid later one is still applied, after the rejected ones.
    publish_config(
        &r.kafka,
        None,
        "conn-control",
        SECRET.as_bytes(),
        &doc(&[0, 1, 5]),
        12,
    )
    .await
    .expect("publish v12");
    assert!(
        reader.until(Duration::from_secs(20), |g| status_count(
            &kafka, g, "SN-C2"
        ) > 0),
        "signed config v12 applied"
    );
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    for never in ["SN-UNSIGNED", "SN-WRONGKEY", "SN-OLDER"] {
        assert_eq!(
            status_count(&kafka, &reader.got, never),
            0,
            "{never} applied"
        );
    }
}

/// The TOML document of the settings these tests use (the edge has no TOML writer).
fn toml_of(c: &EdgeConfig) -> String {
    let mut s = format!(
        "tenant_id = {:?}\nconnector_id = {:?}\nconnector_secret = {:?}\npoll_interval = \"1s\"\nheartbeat_interval = \"1s\"\n",
        c.tenant_id, c.connector_id, c.connector_secret
    );
    s.push_str("[snmp]\ntimeout = \"300ms\"\nretries = 1\npoll_deadline = \"2s\"\n");
    s.push_str(&format!(
        "[kafka]\nbrokers = {:?}\ntopic_prefix = {:?}\n",
        c.kafka.brokers, c.kafka.topic_prefix
    ));
    s.push_str(&format!(
        "[buffer]\ndir = {:?}\n[control]\nenabled = {}\n",
        c.buffer.dir.display().to_string(),
        c.control.enabled
    ));
    for d in &c.devices {
        s.push_str(&format!("[[devices]]\naddress = {:?}\n", d.address));
    }
    s
}
