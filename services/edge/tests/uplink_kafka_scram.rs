//! The Kafka uplink authenticating with SASL/SCRAM against a real SCRAM server.
//!
//! The peer is `tests/py/scram_front.py` in front of tansu, started by
//! `.ci/run` (tansu 0.6.0 cannot hold SCRAM users itself, see that file):
//! the SCRAM server side is the `scramp` library, librdkafka is the client,
//! and the records land in tansu. The edge's real path is used: records in
//! the store-and-forward buffer, `publish::forward` with a [`Publisher`]
//! configured by `[kafka.sasl]` (password from an environment variable,
//! `security.protocol` derived as `SASL_PLAINTEXT`).
//!
//! - right password (SCRAM-SHA-512, then SCRAM-SHA-256): every record is
//!   acknowledged and read back through the front by confluent-kafka +
//!   fastavro (`tests/py/fpcheck.py`), by event id;
//! - wrong password: nothing is acknowledged, the records stay in the
//!   buffer, nothing reaches the topic, and the edge logs an error naming
//!   the SASL keys to check ([`Publisher::auth_failure`] has librdkafka's
//!   account).
//!
//! Needs `FLEETPULSE_KAFKA_SCRAM` (host:port of the front),
//! `FLEETPULSE_KAFKA_SCRAM_USER` and `FLEETPULSE_KAFKA_SCRAM_PASSWORD`;
//! skips with a message without them, fails without them under CI.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_core::kafka::{KafkaConfig, KafkaSasl, SaslMechanism, TlsDefault};
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::{samples, Shutdown};
use fleetpulse_edge::buffer::{Buffer, BufferConfig};
use fleetpulse_edge::{publish, Publisher, Uplink};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

const SECRET: &[u8] = b"uplink-scram-test-secret-0123456789";
const WRONG_PW_VAR: &str = "FP_SCRAM_TEST_WRONG_PASSWORD";

struct Peer {
    brokers: String,
    user: String,
    password: String,
}

fn peer() -> Option<Peer> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("FLEETPULSE_KAFKA_SCRAM"),
        get("FLEETPULSE_KAFKA_SCRAM_USER"),
        get("FLEETPULSE_KAFKA_SCRAM_PASSWORD"),
    ) {
        (Some(brokers), Some(user), Some(password)) => Some(Peer {
            brokers,
            user,
            password,
        }),
        _ => None,
    }
}

/// Log lines written by the code under test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn kafka(peer: &Peer, prefix: &str, mechanism: SaslMechanism, password_var: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: peer.brokers.clone(),
        topic_prefix: prefix.into(),
        sasl: Some(KafkaSasl {
            mechanism,
            username: peer.user.clone(),
            password: format!("env:{password_var}"),
        }),
        ..Default::default()
    }
}

async fn create_topic(kafka: &KafkaConfig) {
    let cfg = kafka
        .try_client_config(TlsDefault::OnUnlessLoopback)
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = cfg.create().unwrap();
    let topic = kafka.topic(RecordType::UsageCounters);
    let r = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic over SASL/SCRAM");
    for t in r {
        t.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
}

/// Buffer `n` usage-counter records, forward them through the Kafka uplink
/// for at most `wait`; returns their event ids, what is left in the buffer
/// and the publisher's authentication failure.
async fn deliver(
    kafka: &KafkaConfig,
    n: usize,
    wait: Duration,
) -> (Vec<String>, u64, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(BufferConfig {
        dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    let records: Vec<_> = (0..n)
        .map(|i| {
            publish::stored(kafka, &samples::usage_counters(&format!("dev-{i}")), "b-1").unwrap()
        })
        .collect();
    let ids = records.iter().map(|r| r.event_id.clone()).collect();
    buffer.append(records).unwrap();
    kafka
        .check("kafka", TlsDefault::OnUnlessLoopback)
        .expect("valid [kafka] config");
    let publisher = Publisher::new(kafka, SECRET, "conn-scram").expect("producer");
    let stop = Shutdown::new();
    let fwd = tokio::spawn(publish::forward(
        buffer.clone(),
        Uplink::Kafka(publisher.clone()),
        stop.clone(),
    ));
    let deadline = Instant::now() + wait;
    while buffer.stats().records > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let auth = publisher.auth_failure();
    stop.cancel();
    fwd.await.unwrap();
    (ids, buffer.stats().records, auth)
}

/// Event ids on the prefix's raw topics, read through the SCRAM front by
/// confluent-kafka + fastavro.
fn read_back(peer: &Peer, prefix: &str, mechanism: &str) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/fpcheck.py");
    let ids_file = tempfile::NamedTempFile::new().unwrap();
    let props = [
        "security.protocol=SASL_PLAINTEXT".to_string(),
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={}", peer.user),
        format!("sasl.password={}", peer.password),
    ];
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    for p in &props {
        cmd.args(["--kafka-prop", p]);
    }
    let out = cmd
        .args(["raw", "--brokers", &peer.brokers, "--prefix", prefix])
        .arg("--ids-out")
        .arg(ids_file.path())
        .output()
        .expect("python3 tests/py/fpcheck.py");
    assert!(
        out.status.success(),
        "fpcheck failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["undecodable"], 0, "{summary}");
    serde_json::from_slice(&std::fs::read(ids_file.path()).unwrap()).unwrap()
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        fleetpulse_core::now_millis() % 1_000_000
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_uplink_authenticates_with_scram_and_names_a_refusal() {
    let Some(peer) = peer() else {
        eprintln!(
            "SKIPPED kafka_uplink_authenticates_with_scram_and_names_a_refusal: \
             FLEETPULSE_KAFKA_SCRAM(_USER/_PASSWORD) not set (`bash .ci/run` starts tests/py/scram_front.py in front of tansu)"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "FLEETPULSE_KAFKA_SCRAM is required under CI"
        );
        return;
    };
    let logs = Captured::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    std::env::set_var("FP_SCRAM_TEST_PASSWORD", &peer.password);
    std::env::set_var(WRONG_PW_VAR, format!("{}-but-wrong", peer.password));

    // 1. The right password, both SCRAM mechanisms: delivered, read back.
    for (mechanism, n) in [
        (SaslMechanism::ScramSha512, 20),
        (SaslMechanism::ScramSha256, 5),
    ] {
        let prefix = unique("scram");
        let good = kafka(&peer, &prefix, mechanism, "FP_SCRAM_TEST_PASSWORD");
        assert_eq!(
            good.security_protocol(TlsDefault::OnUnlessLoopback),
            "SASL_PLAINTEXT"
        );
        create_topic(&good).await;
        let (mut sent, left, auth) = deliver(&good, n, Duration::from_secs(60)).await;
        assert_eq!(left, 0, "{}: every record acknowledged", mechanism.name());
        assert_eq!(auth, None);
        let peer_ref = &peer;
        let mut got =
            tokio::task::block_in_place(|| read_back(peer_ref, &prefix, mechanism.name()));
        sent.sort();
        got.sort();
        assert_eq!(
            got,
            sent,
            "{}: the records in tansu, by event id",
            mechanism.name()
        );
    }

    // 2. A wrong password: refused, nothing delivered, the cause named.
    let prefix = unique("scramwrong");
    let wrong = kafka(&peer, &prefix, SaslMechanism::ScramSha512, WRONG_PW_VAR);
    let good = kafka(
        &peer,
        &prefix,
        SaslMechanism::ScramSha512,
        "FP_SCRAM_TEST_PASSWORD",
    );
    create_topic(&good).await;
    let (_, left, auth) = deliver(&wrong, 5, Duration::from_secs(6)).await;
    assert_eq!(
        left, 5,
        "refused credentials: every record stays in the buffer"
    );
    let auth = auth.expect("the publisher reports the authentication failure");
    assert!(
        auth.contains("SASL authentication error") && auth.contains("invalid credentials"),
        "{auth}"
    );
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("Kafka authentication failed"))
        .unwrap_or_else(|| panic!("no authentication error logged:\n{text}"));
    assert!(
        line.contains("ERROR")
            && line.contains("kafka.sasl.password")
            && line.contains("invalid credentials"),
        "{line}"
    );
    assert!(
        !text.contains(&peer.password),
        "the password must never be logged"
    );
    let peer_ref = &peer;
    let got = tokio::task::block_in_place(|| read_back(peer_ref, &prefix, "SCRAM-SHA-512"));
    assert!(got.is_empty(), "nothing may reach the topic: {got:?}");
}
