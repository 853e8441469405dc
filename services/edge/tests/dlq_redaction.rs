//! Dead letters never carry the community or a device string.
//!
//! A hostile "printer" answers every request with a v2c GetResponse that
//! carries the configured community, a known sysName and sysContact, and
//! is cut short in its last varbind, so the edge's decoder rejects it and
//! dead-letters it. The whole connector runs (`fleetpulse_edge::run`)
//! against librdkafka's mock cluster; the DLQ records are read back from
//! the topic as bytes, and neither the community nor the strings may occur
//! in their key, headers or payload, nor anywhere in the on-disk buffer.
//! The payload must still say what broke (version, PDU, request-id, where
//! the BER stopped).

use std::path::Path;
use std::time::{Duration, Instant};

use fleetpulse_core::kafka::{dlq_headers, KafkaConfig};
use fleetpulse_core::Shutdown;
use fleetpulse_edge::{DeviceConfig, EdgeConfig, SnmpOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use tokio::net::UdpSocket;

const COMMUNITY: &str = "Xk9-community-canary-77";
const SYS_NAME: &str = "PRN-CANARY-FLOOR3";
const SYS_CONTACT: &str = "jane.canary@example.org";
const REQUEST_ID: [u8; 2] = [0x42, 0x42];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        out.extend_from_slice(&[0x81, content.len() as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// The malformed answer: a sound GetResponse cut 2 bytes short.
fn hostile_response() -> Vec<u8> {
    let vb = |oid: &[u8], v: Vec<u8>| tlv(0x30, &[tlv(0x06, oid), v].concat());
    let varbinds = [
        vb(&[0x2b, 6, 1, 2, 1, 1, 5, 0], tlv(0x04, SYS_NAME.as_bytes())),
        vb(
            &[0x2b, 6, 1, 2, 1, 1, 4, 0],
            tlv(0x04, SYS_CONTACT.as_bytes()),
        ),
        vb(
            &[0x2b, 6, 1, 2, 1, 43, 10, 2, 1, 4, 1, 1],
            tlv(0x41, &[0x00, 0x98, 0x96, 0x7f]),
        ),
    ]
    .concat();
    let pdu = tlv(
        0xa2,
        &[
            tlv(0x02, &REQUEST_ID),
            tlv(0x02, &[0]),
            tlv(0x02, &[0]),
            tlv(0x30, &varbinds),
        ]
        .concat(),
    );
    let full = tlv(
        0x30,
        &[tlv(0x02, &[1]), tlv(0x04, COMMUNITY.as_bytes()), pdu].concat(),
    );
    full[..full.len() - 2].to_vec()
}

/// Header (name, value) pairs.
type Headers8 = Vec<(String, Vec<u8>)>;

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_no_community_and_no_device_strings() {
    let raw = hostile_response();
    // The test can fail: the datagram itself carries all three secrets.
    for s in [COMMUNITY, SYS_NAME, SYS_CONTACT] {
        assert!(contains(&raw, s));
    }
    let agent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = agent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = agent.recv_from(&mut buf).await {
            let _ = agent.send_to(&raw, peer).await;
        }
    });

    let cluster = MockCluster::new(1).expect("mock cluster");
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic_prefix: "redact".into(),
        ..Default::default()
    };
    for t in kafka.all_topics() {
        cluster.create_topic(&t, 1, 1).expect("create topic");
    }
    std::env::set_var(
        "FP_DLQ_REDACTION_SECRET",
        "a-dlq-redaction-test-secret-0123",
    );
    let buffer_dir = tempfile::tempdir().unwrap();
    let config = EdgeConfig {
        buffer: fleetpulse_edge::BufferConfig {
            dir: buffer_dir.path().to_path_buf(),
            ..Default::default()
        },
        tenant_id: "tenant-redact".into(),
        connector_id: "conn-redact".into(),
        connector_secret: "env:FP_DLQ_REDACTION_SECRET".into(),
        devices: vec![DeviceConfig::new(agent_addr.to_string(), COMMUNITY)],
        poll_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(1),
        snmp: SnmpOptions {
            timeout: Duration::from_millis(300),
            retries: 0,
            poll_deadline: Duration::from_secs(3),
            ..SnmpOptions::default()
        },
        kafka: kafka.clone(),
        ..EdgeConfig::default()
    };
    let shutdown = Shutdown::new();
    let edge = tokio::spawn(fleetpulse_edge::run(config, shutdown.clone()));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "redact-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&kafka.dlq_topic()]).unwrap();
    // (key, headers, payload) of each dead letter, as read from the topic.
    let mut got: Vec<(Vec<u8>, Headers8, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while got.len() < 2 && Instant::now() < deadline {
        let m = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        let Some(Ok(m)) = m else { continue };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        got.push((
            m.key().unwrap_or_default().to_vec(),
            headers,
            m.payload().unwrap_or_default().to_vec(),
        ));
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert!(got.len() >= 2, "expected dead letters, got {}", got.len());

    for (key, headers, payload) in &got {
        let mut all = key.clone();
        for (k, v) in headers {
            all.extend_from_slice(k.as_bytes());
            all.extend_from_slice(v);
        }
        all.extend_from_slice(payload);
        for s in [COMMUNITY, SYS_NAME, SYS_CONTACT] {
            assert!(
                !contains(&all, s),
                "{s:?} leaked into a dead letter: {}",
                String::from_utf8_lossy(&all)
            );
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(
            header(dlq_headers::ERROR_CLASS).as_deref(),
            Some("snmp_decode")
        );
        assert!(header(dlq_headers::REASON).is_some_and(|r| !r.is_empty()));
        // What helps debugging is still there.
        let doc: serde_json::Value = serde_json::from_slice(payload).expect("JSON payload");
        assert_eq!(doc["format"], "fleetpulse.snmp_redacted.v1", "{doc}");
        assert_eq!(doc["length"], hostile_response().len(), "{doc}");
        assert_eq!(doc["version"], "v2c", "{doc}");
        assert_eq!(doc["pdu"], "GetResponse (0xa2)", "{doc}");
        assert_eq!(doc["request_id"], 0x4242, "{doc}");
        assert!(doc["stopped_at"]["offset"].is_u64(), "{doc}");
        let dump = doc["dump"].as_str().unwrap();
        assert!(
            dump.contains(&format!("<community redacted, {} bytes>", COMMUNITY.len())),
            "{dump}"
        );
        assert!(
            dump.contains(&format!("<redacted {} bytes>", SYS_NAME.len())),
            "{dump}"
        );
        assert!(
            dump.contains("2b 06 01 02 01 01 05 00"),
            "OIDs are shown: {dump}"
        );
    }
    // Nor did the datagram reach the disk.
    let mut files = Vec::new();
    files_under(buffer_dir.path(), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for s in [COMMUNITY, SYS_NAME, SYS_CONTACT] {
            assert!(!contains(&bytes, s), "{s:?} in buffer file {}", f.display());
        }
    }
}
