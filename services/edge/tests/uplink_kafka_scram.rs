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
//!
//! A second test runs SCRAM over verified TLS (`SASL_SSL`, the production
//! setting): it starts its own tansu (`FLEETPULSE_TANSU`), its own
//! `scram_front.py`, and a rustls TLS terminator in this process in front
//! of both (as `uplink_kafka_tls.rs` does): librdkafka → TLS → SCRAM → tansu.

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

/// The process-wide log capture (one subscriber for every test here).
fn logs() -> Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    })
    .clone()
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
    read_back_with(peer, prefix, mechanism, &[])
}

/// [`read_back`] with extra librdkafka properties (TLS).
fn read_back_with(peer: &Peer, prefix: &str, mechanism: &str, extra: &[String]) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/fpcheck.py");
    let ids_file = tempfile::NamedTempFile::new().unwrap();
    let mut props = vec![
        "security.protocol=SASL_PLAINTEXT".to_string(),
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={}", peer.user),
        format!("sasl.password={}", peer.password),
    ];
    props.extend(extra.iter().cloned());
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
    let logs = logs();
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

// --- SCRAM over verified TLS ------------------------------------------------

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA (PEM file) and a server certificate for `localhost` it signed (DER).
fn pki(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "fleetpulse SCRAM test CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = p.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(p, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut sp = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    (server.der().to_vec(), key.serialize_der())
}

/// TLS on `listener`, plaintext to `backend`.
fn tls_front(listener: tokio::net::TcpListener, backend: u16, cert: Vec<u8>, key: Vec<u8>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                }
            });
        }
    });
}

fn tansu_bin() -> Option<PathBuf> {
    let p = std::env::var_os("FLEETPULSE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/fleetpulse-ci/tansu"));
    p.is_file().then_some(p)
}

fn scramp_available() -> bool {
    Command::new("python3")
        .args(["-c", "import scramp"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_uplink_scram_over_verified_tls() {
    let (Some(tansu), true) = (tansu_bin(), scramp_available()) else {
        eprintln!(
            "SKIPPED kafka_uplink_scram_over_verified_tls: needs the tansu binary \
             (FLEETPULSE_TANSU) and python3 with scramp (tests/requirements.txt)"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "tansu and scramp are required under CI"
        );
        return;
    };
    let _logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki(dir.path());
    let password = format!("tls-scram-{}", fleetpulse_core::now_millis());
    std::fs::write(dir.path().join("pw"), &password).unwrap();
    std::env::set_var("FP_SCRAM_TLS_TEST_PASSWORD", &password);
    std::env::set_var("FP_SCRAM_TLS_TEST_WRONG", format!("{password}-wrong"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_port = listener.local_addr().unwrap().port();
    let (scram_port, tansu_port) = (free_port(), free_port());
    let _tansu = Child(
        Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{tansu_port}"),
                "--advertised-listener-url",
                &format!("tcp://localhost:{tls_port}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu"),
    );
    let front_script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/scram_front.py");
    let _front = Child(
        Command::new("python3")
            .arg(&front_script)
            .args(["--listen", &format!("127.0.0.1:{scram_port}")])
            .args(["--upstream", &format!("127.0.0.1:{tansu_port}")])
            .arg("--user")
            .arg(format!(
                "fleetpulse-edge:@{}",
                dir.path().join("pw").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start scram_front.py"),
    );
    wait_listening(tansu_port, "tansu");
    wait_listening(scram_port, "scram_front.py");
    tls_front(listener, scram_port, cert, key);

    let peer = Peer {
        brokers: format!("localhost:{tls_port}"),
        user: "fleetpulse-edge".into(),
        password: password.clone(),
    };
    let with_tls = |mut k: KafkaConfig| {
        k.tls.enabled = Some(true);
        k.tls.ca_file = Some(dir.path().join("ca.pem"));
        k
    };
    let prefix = unique("scramtls");
    let good = with_tls(kafka(
        &peer,
        &prefix,
        SaslMechanism::ScramSha512,
        "FP_SCRAM_TLS_TEST_PASSWORD",
    ));
    assert_eq!(
        good.security_protocol(TlsDefault::OnUnlessLoopback),
        "SASL_SSL"
    );
    create_topic(&good).await;
    let (mut sent, left, auth) = deliver(&good, 10, Duration::from_secs(60)).await;
    assert_eq!(left, 0, "SASL_SSL: every record acknowledged");
    assert_eq!(auth, None);
    let tls_props = [
        "security.protocol=SASL_SSL".to_string(),
        format!("ssl.ca.location={}", dir.path().join("ca.pem").display()),
    ];
    let peer_ref = &peer;
    let mut got = tokio::task::block_in_place(|| {
        read_back_with(peer_ref, &prefix, "SCRAM-SHA-512", &tls_props)
    });
    sent.sort();
    got.sort();
    assert_eq!(got, sent, "SASL_SSL: the records in tansu, by event id");

    // The wrong password over TLS: refused, named, nothing delivered.
    let wrong = with_tls(kafka(
        &peer,
        &prefix,
        SaslMechanism::ScramSha512,
        "FP_SCRAM_TLS_TEST_WRONG",
    ));
    let (_, left, auth) = deliver(&wrong, 3, Duration::from_secs(6)).await;
    assert_eq!(
        left, 3,
        "refused credentials over TLS: records stay in the buffer"
    );
    let auth = auth.expect("authentication failure reported");
    assert!(auth.contains("invalid credentials"), "{auth}");
    assert!(auth.contains("sasl_ssl://"), "over TLS: {auth}");
}
