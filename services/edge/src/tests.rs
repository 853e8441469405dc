//! In-crate tests: a scriptable (and hostile) SNMP agent, the client's
//! failure modes against it, and `run()` end to end on a mock Kafka cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v2::{ApplicationSyntax, ObjectSyntax, SimpleSyntax};
use rasn_snmp::{v2, v2c};
use tokio::net::UdpSocket;

use crate::mapping::oids;
use crate::snmp::{oid, Oid, SnmpClient, SnmpError, SnmpOptions, SnmpValue};
use crate::{poll_device, DeviceTarget, PollError};

mod health;

/// How the test agent misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A correct SNMPv2c agent.
    Normal,
    /// Sends the first half of each valid response.
    Truncate,
    /// Sends random bytes.
    Garbage,
    /// Answers with another request id.
    WrongId,
    /// First a stray response with another id, then the right one.
    StrayThenRight,
    /// GETBULK answers repeat the requested OID (an agent loop).
    Loop,
}

type Mib = Arc<Mutex<BTreeMap<Oid, SnmpValue>>>;

struct TestAgent {
    addr: SocketAddr,
    mib: Mib,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn to_rasn(v: &SnmpValue) -> v2::VarBindValue {
    use v2::VarBindValue as V;
    match v {
        SnmpValue::Integer(i) => V::Value(ObjectSyntax::Simple(SimpleSyntax::Integer(
            Integer::from(*i),
        ))),
        SnmpValue::OctetString(b) => V::Value(ObjectSyntax::Simple(SimpleSyntax::String(
            OctetString::from(b.clone()),
        ))),
        SnmpValue::ObjectId(o) => V::Value(ObjectSyntax::Simple(SimpleSyntax::ObjectId(
            ObjectIdentifier::new_unchecked(o.0.clone().into()),
        ))),
        SnmpValue::Counter32(c) => V::Value(ObjectSyntax::ApplicationWide(
            ApplicationSyntax::Counter(rasn_smi::v1::Counter(*c)),
        )),
        SnmpValue::Gauge32(g) => V::Value(ObjectSyntax::ApplicationWide(
            ApplicationSyntax::Unsigned(rasn_smi::v1::Gauge(*g)),
        )),
        SnmpValue::TimeTicks(t) => V::Value(ObjectSyntax::ApplicationWide(
            ApplicationSyntax::Ticks(rasn_smi::v1::TimeTicks(*t)),
        )),
        SnmpValue::Counter64(c) => V::Value(ObjectSyntax::ApplicationWide(
            ApplicationSyntax::BigCounter(rasn_smi::v2::Counter64(*c)),
        )),
        SnmpValue::NoSuchObject => V::NoSuchObject,
        SnmpValue::NoSuchInstance => V::NoSuchInstance,
        SnmpValue::EndOfMibView => V::EndOfMibView,
        _ => V::Unspecified,
    }
}

fn answer(
    mib: &BTreeMap<Oid, SnmpValue>,
    pdus: v2::Pdus,
    mode: Mode,
) -> Option<(i32, Vec<(Oid, SnmpValue)>)> {
    let next = |o: &Oid| -> (Oid, SnmpValue) {
        mib.range((
            std::ops::Bound::Excluded(o.clone()),
            std::ops::Bound::Unbounded,
        ))
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or((o.clone(), SnmpValue::EndOfMibView))
    };
    let names =
        |vbs: &[v2::VarBind]| -> Vec<Oid> { vbs.iter().map(|vb| Oid(vb.name.to_vec())).collect() };
    Some(match pdus {
        v2::Pdus::GetRequest(v2::GetRequest(p)) => (
            p.request_id,
            names(&p.variable_bindings)
                .into_iter()
                .map(|o| {
                    let v = mib.get(&o).cloned().unwrap_or(SnmpValue::NoSuchObject);
                    (o, v)
                })
                .collect(),
        ),
        v2::Pdus::GetNextRequest(v2::GetNextRequest(p)) => (
            p.request_id,
            names(&p.variable_bindings).iter().map(next).collect(),
        ),
        v2::Pdus::GetBulkRequest(v2::GetBulkRequest(p)) => {
            let mut out = Vec::new();
            for start in names(&p.variable_bindings) {
                if mode == Mode::Loop {
                    // Claim the requested OID itself follows it, again and again.
                    for _ in 0..3 {
                        out.push((start.child(&[1]), SnmpValue::Integer(1)));
                        out.push((start.clone(), SnmpValue::Integer(1)));
                    }
                    continue;
                }
                let mut cursor = start;
                for _ in 0..p.max_repetitions.min(50) {
                    let (o, v) = next(&cursor);
                    let end = v == SnmpValue::EndOfMibView;
                    out.push((o.clone(), v));
                    if end {
                        break;
                    }
                    cursor = o;
                }
            }
            (p.request_id, out)
        }
        _ => return None,
    })
}

fn encode_response(request_id: i32, varbinds: Vec<(Oid, SnmpValue)>) -> Vec<u8> {
    let msg = v2c::Message {
        version: Integer::from(1),
        community: OctetString::from(b"public".to_vec()),
        data: v2::Pdus::Response(v2::Response(v2::Pdu {
            request_id,
            error_status: 0,
            error_index: 0,
            variable_bindings: varbinds
                .iter()
                .map(|(o, v)| v2::VarBind {
                    name: ObjectIdentifier::new_unchecked(o.0.clone().into()),
                    value: to_rasn(v),
                })
                .collect(),
        })),
    };
    rasn::ber::encode(&msg).expect("test agent encodes its responses")
}

async fn start_agent(mode: Mode, mib: BTreeMap<Oid, SnmpValue>) -> TestAgent {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind test agent");
    let addr = socket.local_addr().expect("local addr");
    let mib: Mib = Arc::new(Mutex::new(mib));
    let shared = mib.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(msg) = rasn::ber::decode::<v2c::Message<v2::Pdus>>(&buf[..n]) else {
                continue;
            };
            let reply = {
                let mib = shared.lock().expect("mib lock");
                answer(&mib, msg.data, mode)
            };
            let Some((id, vbs)) = reply else { continue };
            let out = match mode {
                Mode::Normal | Mode::Loop => encode_response(id, vbs),
                Mode::Truncate => {
                    let full = encode_response(id, vbs);
                    full[..full.len() / 2].to_vec()
                }
                Mode::Garbage => (0..64)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        (rng & 0xff) as u8
                    })
                    .collect(),
                Mode::WrongId => encode_response(id.wrapping_add(1000), vbs),
                Mode::StrayThenRight => {
                    let _ = socket
                        .send_to(&encode_response(id.wrapping_sub(7), vec![]), peer)
                        .await;
                    encode_response(id, vbs)
                }
            };
            let _ = socket.send_to(&out, peer).await;
        }
    });
    TestAgent { addr, mib, task }
}

fn put(m: &mut BTreeMap<Oid, SnmpValue>, arcs: &[u32], rest: &[u32], v: SnmpValue) {
    m.insert(oid(arcs).child(rest), v);
}

fn s(v: &str) -> SnmpValue {
    SnmpValue::OctetString(v.as_bytes().to_vec())
}

/// A small but complete printer MIB.
fn printer_mib(serial: &str) -> BTreeMap<Oid, SnmpValue> {
    let mut m = BTreeMap::new();
    put(&mut m, oids::SYS_DESCR, &[], s("Test LaserJet 9000"));
    put(
        &mut m,
        oids::SYS_OBJECT_ID,
        &[],
        SnmpValue::ObjectId(oid(&[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 1])),
    );
    put(&mut m, oids::SYS_UPTIME, &[], SnmpValue::TimeTicks(123_456));
    put(&mut m, oids::SYS_NAME, &[], s("printer-1"));
    put(&mut m, oids::PRT_GENERAL_SERIAL, &[], s(serial));
    put(
        &mut m,
        oids::HR_DEVICE_ENTRY,
        &[2, 1],
        SnmpValue::ObjectId(oid(oids::HR_DEVICE_PRINTER)),
    );
    put(
        &mut m,
        oids::HR_DEVICE_ENTRY,
        &[3, 1],
        s("Test LaserJet 9000 PCL"),
    );
    put(
        &mut m,
        oids::HR_DEVICE_ENTRY,
        &[5, 1],
        SnmpValue::Integer(3),
    );
    put(
        &mut m,
        oids::HR_PRINTER_ENTRY,
        &[1, 1],
        SnmpValue::Integer(3),
    );
    put(
        &mut m,
        oids::HR_PRINTER_ENTRY,
        &[2, 1],
        SnmpValue::OctetString(vec![0x20, 0x00]),
    );
    put(
        &mut m,
        oids::IF_PHYS_ADDRESS,
        &[1],
        SnmpValue::OctetString(vec![0x00, 0x11, 0x22, 0x33, 0x44, 0x55]),
    );
    let sup = oids::PRT_SUPPLIES_ENTRY;
    put(&mut m, sup, &[5, 1, 1], SnmpValue::Integer(3));
    put(&mut m, sup, &[6, 1, 1], s("Black Toner"));
    put(&mut m, sup, &[7, 1, 1], SnmpValue::Integer(7));
    put(&mut m, sup, &[8, 1, 1], SnmpValue::Integer(8000));
    put(&mut m, sup, &[9, 1, 1], SnmpValue::Integer(2000));
    put(&mut m, sup, &[5, 1, 2], SnmpValue::Integer(4));
    put(&mut m, sup, &[6, 1, 2], s("Waste Toner"));
    put(&mut m, sup, &[8, 1, 2], SnmpValue::Integer(-2));
    put(&mut m, sup, &[9, 1, 2], SnmpValue::Integer(-3));
    let inp = oids::PRT_INPUT_ENTRY;
    put(&mut m, inp, &[9, 1, 1], SnmpValue::Integer(500));
    put(&mut m, inp, &[10, 1, 1], SnmpValue::Integer(250));
    put(&mut m, inp, &[13, 1, 1], s("Tray 1"));
    let mk = oids::PRT_MARKER_ENTRY;
    put(&mut m, mk, &[3, 1, 1], SnmpValue::Integer(7));
    put(&mut m, mk, &[4, 1, 1], SnmpValue::Counter32(42_000));
    let al = oids::PRT_ALERT_ENTRY;
    put(&mut m, al, &[2, 1, 5], SnmpValue::Integer(4));
    put(&mut m, al, &[4, 1, 5], SnmpValue::Integer(11));
    put(&mut m, al, &[7, 1, 5], SnmpValue::Integer(1104));
    put(&mut m, al, &[8, 1, 5], s("Toner low"));
    m
}

fn fast() -> SnmpOptions {
    SnmpOptions {
        timeout: Duration::from_millis(200),
        retries: 1,
        poll_deadline: Duration::from_secs(5),
        ..SnmpOptions::default()
    }
}

#[tokio::test]
async fn polls_a_correct_agent() {
    let agent = start_agent(Mode::Normal, printer_mib("SN-OK-1")).await;
    let snap = poll_device(
        &DeviceTarget::new(agent.addr.to_string(), "public"),
        &fast(),
    )
    .await
    .expect("poll succeeds");
    assert_eq!(snap.identity.device_id, "SN-OK-1");
    assert_eq!(snap.identity.vendor.as_deref(), Some("HP"));
    assert_eq!(
        snap.identity.model.as_deref(),
        Some("Test LaserJet 9000 PCL")
    );
    assert_eq!(
        snap.identity.mac_address.as_deref(),
        Some("00:11:22:33:44:55")
    );
    assert_eq!(snap.supplies.len(), 2);
    assert_eq!(snap.supplies[0].percent, Some(25.0));
    assert_eq!(
        snap.supplies[1].percent, None,
        "someRemaining stays distinct from 50%"
    );
    assert_eq!(snap.trays[0].percent, Some(50.0));
    assert_eq!(snap.counters[0].life_count, 42_000);
    assert_eq!(snap.alerts[0].code, "markerTonerAlmostEmpty");
    assert_eq!(snap.alerts[0].group.as_deref(), Some("markerSupplies"));
    let text = crate::render_text(&snap);
    for needle in [
        "SN-OK-1",
        "Black Toner",
        "someRemaining(-3)",
        "Tray 1",
        "42000",
        "markerTonerAlmostEmpty",
        "lowToner",
    ] {
        assert!(text.contains(needle), "report lacks {needle}:\n{text}");
    }
}

#[tokio::test]
async fn stray_datagram_with_other_id_is_ignored() {
    let agent = start_agent(Mode::StrayThenRight, printer_mib("SN-STRAY")).await;
    let snap = poll_device(
        &DeviceTarget::new(agent.addr.to_string(), "public"),
        &fast(),
    )
    .await
    .expect("the matching answer is used");
    assert_eq!(snap.identity.device_id, "SN-STRAY");
}

#[tokio::test]
async fn hostile_truncated_response_is_a_decode_error_with_raw_bytes() {
    let agent = start_agent(Mode::Truncate, printer_mib("X")).await;
    let err = poll_device(
        &DeviceTarget::new(agent.addr.to_string(), "public"),
        &fast(),
    )
    .await
    .expect_err("truncated response must fail");
    assert_eq!(err.class(), "snmp_decode", "{err}");
    assert!(!err.is_retriable());
    let raw = err.raw_response().expect("raw bytes kept for the DLQ");
    assert!(
        !raw.is_empty() && raw[0] == 0x30,
        "the truncated datagram itself"
    );
}

#[tokio::test]
async fn hostile_random_bytes_are_a_decode_error() {
    let agent = start_agent(Mode::Garbage, printer_mib("X")).await;
    let err = poll_device(
        &DeviceTarget::new(agent.addr.to_string(), "public"),
        &fast(),
    )
    .await
    .expect_err("garbage must fail");
    assert!(
        matches!(&err, PollError::Snmp { source: SnmpError::Decode { raw, .. }, .. } if raw.len() == 64),
        "{err:?}"
    );
}

#[tokio::test]
async fn hostile_wrong_request_id_then_silence_times_out() {
    let agent = start_agent(Mode::WrongId, printer_mib("X")).await;
    // 200 ms + 400 ms backoff; the outer guard only catches a hang (speed
    // is for benchmarks, not for a busy CI machine).
    let err = tokio::time::timeout(
        HANG_GUARD,
        poll_device(
            &DeviceTarget::new(agent.addr.to_string(), "public"),
            &fast(),
        ),
    )
    .await
    .expect("must not hang")
    .expect_err("no matching answer");
    assert!(
        matches!(
            &err,
            PollError::Snmp {
                source: SnmpError::Timeout { attempts: 2, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retriable() && err.is_silence());
}

#[tokio::test]
async fn hostile_non_increasing_oids_are_an_agent_loop() {
    let agent = start_agent(Mode::Loop, printer_mib("X")).await;
    let err = poll_device(
        &DeviceTarget::new(agent.addr.to_string(), "public"),
        &fast(),
    )
    .await
    .expect_err("loop must be detected");
    assert!(
        matches!(
            &err,
            PollError::Snmp {
                source: SnmpError::NonIncreasingOid { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn hostile_huge_string_is_truncated_to_255_bytes() {
    let mut mib = printer_mib("SN-HUGE");
    mib.insert(
        oid(oids::SYS_DESCR),
        SnmpValue::OctetString(vec![b'A'; 5000]),
    );
    let agent = start_agent(Mode::Normal, mib).await;
    let snap = poll_device(
        &DeviceTarget::new(agent.addr.to_string(), "public"),
        &fast(),
    )
    .await
    .expect("a long string is not an error");
    assert_eq!(snap.identity.sys_descr.as_deref().map(str::len), Some(255));
}

#[tokio::test]
async fn oversize_response_and_walk_caps_are_typed_errors() {
    let agent = start_agent(Mode::Normal, printer_mib("SN")).await;
    let opts = SnmpOptions {
        max_response_bytes: 60,
        ..fast()
    };
    let mut c = SnmpClient::connect(agent.addr, "public", &opts)
        .await
        .unwrap();
    let err = c
        .get(&[oid(oids::SYS_DESCR), oid(oids::SYS_NAME)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SnmpError::ResponseTooLarge { limit: 60, .. }),
        "{err:?}"
    );

    let opts = SnmpOptions {
        max_walk_varbinds: 5,
        ..fast()
    };
    let mut c = SnmpClient::connect(agent.addr, "public", &opts)
        .await
        .unwrap();
    let err = c.walk(&oid(&[1, 3, 6, 1])).await.unwrap_err();
    assert!(
        matches!(err, SnmpError::TooManyVarbinds { limit: 5, .. }),
        "{err:?}"
    );

    let opts = SnmpOptions {
        max_repetitions: 1,
        max_walk_iterations: 3,
        ..fast()
    };
    let mut c = SnmpClient::connect(agent.addr, "public", &opts)
        .await
        .unwrap();
    let err = c.walk(&oid(&[1, 3, 6, 1])).await.unwrap_err();
    assert!(
        matches!(err, SnmpError::TooManyIterations { limit: 3, .. }),
        "{err:?}"
    );

    // An absent subtree is an empty walk, not an error.
    let mut c = SnmpClient::connect(agent.addr, "public", &fast())
        .await
        .unwrap();
    assert!(c
        .walk(&oid(&[1, 3, 6, 1, 2, 1, 99]))
        .await
        .unwrap()
        .is_empty());
    let got = c.get(&[oid(&[1, 3, 6, 1, 2, 1, 1, 99, 0])]).await.unwrap();
    assert_eq!(got[0].1, SnmpValue::NoSuchObject);
}

#[tokio::test]
async fn silent_device_times_out_within_the_deadline() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let opts = SnmpOptions {
        timeout: Duration::from_millis(300),
        retries: 5,
        poll_deadline: Duration::from_millis(800),
        ..SnmpOptions::default()
    };
    // The typed Deadline error proves the deadline cut the retries short
    // (5 retries with backoff would take far longer and end in Timeout);
    // the outer guard only catches a hang.
    let err = tokio::time::timeout(
        HANG_GUARD,
        poll_device(
            &DeviceTarget::new(silent.local_addr().unwrap().to_string(), "public"),
            &opts,
        ),
    )
    .await
    .expect("must not hang")
    .unwrap_err();
    assert!(matches!(err, PollError::Deadline { .. }), "{err:?}");
}

/// Outer guard for tests of timeouts: fails only on a hang.
const HANG_GUARD: Duration = Duration::from_secs(30);

mod end_to_end {
    use super::*;
    use fleetpulse_core::codec;
    use fleetpulse_core::kafka::{dlq_headers, KafkaConfig};
    use fleetpulse_core::records::{
        AlertEvent, AlertTransition, ConnectorHeartbeat, DeviceHeartbeat, DeviceStatus,
        PollProtocol, UsageCounters,
    };
    use fleetpulse_core::schema::RecordType;
    use fleetpulse_core::signing::{SignatureFields, SigningKey};
    use fleetpulse_core::Shutdown;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::ClientConfig;

    use crate::config::{DeviceConfig, EdgeConfig};

    const SECRET: &str = "an-edge-test-secret-of-some-length";

    #[derive(Debug)]
    struct Got {
        topic: String,
        key: Vec<u8>,
        payload: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
    }

    impl Got {
        fn header(&self, name: &str) -> Option<String> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_publishes_signed_records_and_dead_letters_garbled_devices() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let kafka = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            topic_prefix: "e2e".into(),
            properties: Default::default(),
            ..Default::default()
        };
        for t in kafka.all_topics() {
            cluster.create_topic(&t, 1, 1).expect("create topic");
        }

        let shutdown = Shutdown::new();
        let fleet = fleetpulse_sim::start(
            fleetpulse_sim::SimConfig {
                printers: 3,
                base_port: 0,
                ipp_base_port: Some(0),
                silence_probability: 0.0,
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .expect("sim fleet");
        let good = start_agent(Mode::Normal, printer_mib("SN-E2E-ALERT")).await;
        let garbled = start_agent(Mode::Truncate, printer_mib("SN-NEVER")).await;
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // net-snmp's agent with an SNMPv3 user (authPriv, SHA-256 + AES), on
        // its own loopback address so its `addr:` device id is its own.
        let snmpd = if crate::snmp::netsnmp_tests::snmpd_available() {
            Some(crate::snmp::netsnmp_tests::Snmpd::start("127.0.0.3", "").await)
        } else {
            None
        };

        // Sim printers 0 and 1 over SNMP v2c, printer 2 over IPP only.
        let (snmp_printers, ipp_printers) = fleet.printers().split_at(2);
        let mut devices: Vec<DeviceConfig> = snmp_printers
            .iter()
            .map(|p| DeviceConfig::new(p.addr.to_string(), p.community.clone()))
            .collect();
        for p in ipp_printers {
            let ipp_addr = p.ipp_addr.expect("IPP enabled");
            devices.push(DeviceConfig {
                protocol: crate::config::Protocol::Ipp,
                ipp_url: Some(format!("ipp://{ipp_addr}/ipp/print")),
                ..DeviceConfig::new(ipp_addr.to_string(), "public")
            });
        }
        for a in [good.addr, garbled.addr, silent.local_addr().unwrap()] {
            devices.push(DeviceConfig::new(a.to_string(), "public"));
        }
        std::env::set_var("FP_EDGE_E2E_V3_AUTH", "authpass123");
        std::env::set_var("FP_EDGE_E2E_V3_PRIV", "privpass123");
        if let Some(snmpd) = &snmpd {
            devices.push(DeviceConfig {
                user: Some("fpuser".into()),
                auth_protocol: Some(crate::AuthProtocol::Sha256),
                auth_password: Some("env:FP_EDGE_E2E_V3_AUTH".into()),
                priv_password: Some("env:FP_EDGE_E2E_V3_PRIV".into()),
                ..DeviceConfig::new(snmpd.addr.to_string(), "public")
            });
        }
        let v3_id = snmpd.as_ref().map(|s| format!("addr:{}", s.addr.ip()));
        let ipp_serial = ipp_printers[0].serial.clone();
        let device_count = devices.len();
        std::env::set_var("FP_EDGE_E2E_SECRET", SECRET);
        let buffer_dir = tempfile::tempdir().expect("temp dir");
        let config = EdgeConfig {
            buffer: crate::buffer::BufferConfig {
                dir: buffer_dir.path().to_path_buf(),
                ..Default::default()
            },
            tenant_id: "tenant-e2e".into(),
            connector_id: "conn-e2e".into(),
            connector_secret: "env:FP_EDGE_E2E_SECRET".into(),
            devices,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
            // Every record after every poll: the test checks each type.
            schedule: crate::ScheduleConfig::every_poll(),
            snmp: SnmpOptions {
                timeout: Duration::from_millis(300),
                retries: 1,
                poll_deadline: Duration::from_secs(3),
                ..SnmpOptions::default()
            },
            kafka: kafka.clone(),
            ..EdgeConfig::default()
        };
        let edge = tokio::spawn(crate::run(config, shutdown.clone()));

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "e2e-check")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let topics = kafka.all_topics();
        consumer
            .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
            .expect("subscribe");

        // Every sim printer (SNMP and IPP alike) and the SNMPv3 agent report status.
        let mut sim_serials: Vec<String> =
            fleet.printers().iter().map(|p| p.serial.clone()).collect();
        sim_serials.extend(v3_id.clone());
        let mut got: Vec<Got> = Vec::new();
        let mut removed_alert = false;
        let deadline = Instant::now() + Duration::from_secs(45);
        let done = |got: &[Got]| {
            let status_of = |id: &str| {
                got.iter().any(|g| {
                    g.topic == kafka.topic(RecordType::DeviceStatus) && g.key == id.as_bytes()
                })
            };
            let alert = |t: AlertTransition| {
                got.iter().any(|g| {
                    g.topic == kafka.topic(RecordType::AlertEvent)
                        && codec::decode::<AlertEvent>(&g.payload)
                            .is_ok_and(|a| a.transition == t && a.device_id == "SN-E2E-ALERT")
                })
            };
            let ipp_heartbeat = got.iter().any(|g| {
                g.topic == kafka.topic(RecordType::DeviceHeartbeat)
                    && codec::decode::<DeviceHeartbeat>(&g.payload)
                        .is_ok_and(|h| h.device_id == ipp_serial && h.protocol == PollProtocol::Ipp)
            });
            sim_serials.iter().all(|s| status_of(s))
                && ipp_heartbeat
                && status_of("SN-E2E-ALERT")
                && alert(AlertTransition::Opened)
                && alert(AlertTransition::Cleared)
                && got.iter().any(|g| g.topic == kafka.dlq_topic())
                && got
                    .iter()
                    .any(|g| g.topic == kafka.topic(RecordType::ConnectorHeartbeat))
        };
        while Instant::now() < deadline && !done(&got) {
            let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
            if let Some(Ok(m)) = polled {
                let headers = m
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
                    .unwrap_or_default();
                got.push(Got {
                    topic: m.topic().to_string(),
                    key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            }
            // Once the alert was seen opened, the condition ends on the device.
            if !removed_alert
                && got
                    .iter()
                    .any(|g| g.topic == kafka.topic(RecordType::AlertEvent))
            {
                let mut mib = good.mib.lock().unwrap();
                mib.retain(|o, _| !o.starts_with(&oid(oids::PRT_ALERT_ENTRY)));
                removed_alert = true;
            }
        }
        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(20), edge).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "run() returns after shutdown: {stopped:?}"
        );
        assert!(
            done(&got),
            "did not see every expected record; got topics {:?}",
            got.iter().map(|g| &g.topic).collect::<Vec<_>>()
        );

        let key = SigningKey::derive(SECRET.as_bytes(), "conn-e2e");
        let silent_id = format!("addr:{}", silent.local_addr().unwrap().ip());
        let mut seqs = Vec::new();
        for g in &got {
            let fields = SignatureFields::from_headers(
                g.headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
            )
            .expect("signature headers present");
            key.verify(&g.topic, &g.key, &fields, &g.payload)
                .unwrap_or_else(|e| panic!("bad signature on {}: {e}", g.topic));
            seqs.push(fields.seq);
            if g.topic == kafka.dlq_topic() {
                assert_eq!(
                    g.header(dlq_headers::ERROR_CLASS).as_deref(),
                    Some("snmp_decode")
                );
                assert_eq!(g.header(dlq_headers::STAGE).as_deref(), Some("edge"));
                assert_eq!(
                    g.header(dlq_headers::ORIGINAL_TOPIC),
                    Some(format!("snmp://{}", garbled.addr))
                );
                assert!(g.header(dlq_headers::REASON).is_some_and(|r| !r.is_empty()));
                assert_eq!(g.key, garbled.addr.to_string().as_bytes());
                assert!(!g.payload.is_empty() && g.payload.len() <= 64 * 1024);
                continue;
            }
            let key_s = String::from_utf8(g.key.clone()).unwrap();
            assert_ne!(key_s, "SN-NEVER", "a garbled device produces no records");
            assert_ne!(key_s, silent_id, "a silent device produces no records");
            match kafka.record_type_of(&g.topic).expect("one of our topics") {
                RecordType::DeviceStatus => {
                    let r: DeviceStatus = codec::decode(&g.payload).expect("decodes");
                    assert_eq!(r.device_id, key_s);
                    assert_eq!(r.tenant_id, "tenant-e2e");
                    assert_eq!(r.schema_version, 1);
                    assert!(
                        uuid::Uuid::parse_str(&r.event_id).is_ok_and(|u| u.get_version_num() == 7)
                    );
                    if v3_id.as_deref() == Some(key_s.as_str()) {
                        // net-snmp's agent is no printer: identity only.
                        // sysName is dropped by the default privacy policy.
                        assert_eq!(r.sys_name, None);
                    } else {
                        assert!(!r.supplies.is_empty());
                    }
                }
                RecordType::DeviceHeartbeat => {
                    let r: DeviceHeartbeat = codec::decode(&g.payload).expect("decodes");
                    assert_eq!(r.device_id, key_s);
                    let expected = if key_s == ipp_serial {
                        PollProtocol::Ipp
                    } else {
                        PollProtocol::Snmp
                    };
                    assert_eq!(r.protocol, expected, "{key_s}");
                }
                RecordType::UsageCounters => {
                    let r: UsageCounters = codec::decode(&g.payload).expect("decodes");
                    assert_eq!(r.device_id, key_s);
                    assert!(!r.markers.is_empty());
                }
                RecordType::AlertEvent => {
                    let r: AlertEvent = codec::decode(&g.payload).expect("decodes");
                    assert_eq!(r.device_id, key_s);
                }
                RecordType::ConnectorHeartbeat => {
                    let r: ConnectorHeartbeat = codec::decode(&g.payload).expect("decodes");
                    assert_eq!(r.device_id, "conn-e2e");
                    assert_eq!(r.device_count, device_count as i32);
                    // The garbled and the silent device never count as reachable.
                    assert!(r.devices_reachable <= device_count as i32 - 2);
                }
                other => panic!("unexpected record type {other:?}"),
            }
        }
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), seqs.len(), "sequence numbers are unique");
        let good_alerts: Vec<AlertEvent> = got
            .iter()
            .filter(|g| g.topic == kafka.topic(RecordType::AlertEvent))
            .filter_map(|g| codec::decode::<AlertEvent>(&g.payload).ok())
            .filter(|a| a.device_id == "SN-E2E-ALERT")
            .collect();
        assert_eq!(
            good_alerts
                .iter()
                .filter(|a| a.transition == AlertTransition::Opened)
                .count(),
            1
        );
        assert_eq!(good_alerts[0].code, "markerTonerAlmostEmpty");
        fleet.join().await;
    }
}
