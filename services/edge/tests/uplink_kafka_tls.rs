//! The Kafka uplink over TLS against a real broker (tansu 0.6).
//!
//! tansu 0.6.0's `--cert`/`--key` cannot be used (clap declares them as
//! conflicting, and `--cert` alone leaves the listener in plaintext), so
//! the test puts a TLS terminator (rustls, in this process) in front of
//! tansu and has tansu advertise it: the edge's librdkafka talks TLS to
//! the terminator, which forwards plaintext Kafka to the broker. The
//! terminator records every handshake failure, so a rejected certificate
//! is seen as a TLS error, not just as silence. With `client_auth`, the
//! terminator requires a client certificate signed by the test CA (mTLS).
//!
//! Skips (with a message) when the tansu binary is missing: set
//! `FLEETPULSE_TANSU` or let `.ci/run` fetch it to /tmp/fleetpulse-ci/tansu.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_core::kafka::{KafkaConfig, KafkaTls, TlsDefault};
use fleetpulse_core::signing::{SignatureFields, SigningKey};
use fleetpulse_core::{samples, Shutdown};
use fleetpulse_edge::buffer::{Buffer, BufferConfig};
use fleetpulse_edge::{publish, Publisher, Uplink};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const SECRET: &[u8] = b"uplink-tls-test-secret-0123456789";

fn tansu_bin() -> Option<PathBuf> {
    let p = std::env::var_os("FLEETPULSE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/fleetpulse-ci/tansu"));
    p.is_file().then_some(p)
}

struct Tansu(Child);
impl Drop for Tansu {
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

/// A CA and a certificate it signed, as PEM files plus DER for rustls.
struct Pki {
    dir: tempfile::TempDir,
    server_der: Vec<u8>,
    server_key: Vec<u8>,
    ca_der: Vec<u8>,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn issue(
    names: &[&str],
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    client: bool,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, names[0].to_string());
    (p.signed_by(&key, issuer).unwrap(), key)
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(p, key))
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_cert, ca_issuer) = ca("fleetpulse test CA");
    let (other_ca, _) = ca("some other CA");
    let (server, server_key) = issue(&["localhost", "127.0.0.1"], &ca_issuer, false);
    let (client, client_key) = issue(&["edge-connector"], &ca_issuer, true);
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), other_ca.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
    Pki {
        dir,
        server_der: server.der().to_vec(),
        server_key: server_key.serialize_der(),
        ca_der: ca_cert.der().to_vec(),
    }
}

/// A TLS terminator on `listener` forwarding to `backend`; records handshake errors.
fn tls_front(
    listener: TcpListener,
    backend: u16,
    pki: &Pki,
    client_auth: bool,
) -> Arc<Mutex<Vec<String>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(v)
    } else {
        builder.with_no_client_auth()
    };
    let cfg = builder
        .with_single_cert(
            vec![CertificateDer::from(pki.server_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let errs = errors.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let errs = errs.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        if let Ok(mut up) =
                            tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                        }
                    }
                    Err(e) => errs.lock().unwrap().push(e.to_string()),
                }
            });
        }
    });
    errors
}

/// tansu in plaintext on a free port, advertising the TLS front `front`.
fn start_tansu(bin: &Path, front: u16) -> (Tansu, u16) {
    let port = free_port();
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://localhost:{front}"),
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let t = Tansu(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (t, port)
}

fn kafka(front: u16, prefix: &str, tls: KafkaTls) -> KafkaConfig {
    KafkaConfig {
        // "localhost": the certificate's name is checked.
        brokers: format!("localhost:{front}"),
        topic_prefix: prefix.into(),
        tls,
        ..Default::default()
    }
}

/// Append `n` records, forward them through the Kafka uplink for at most
/// `wait`; returns what is left in the buffer.
async fn deliver(kafka: &KafkaConfig, n: usize, wait: Duration) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(BufferConfig {
        dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    let records = (0..n)
        .map(|i| {
            publish::stored(kafka, &samples::usage_counters(&format!("dev-{i}")), "b-1").unwrap()
        })
        .collect();
    buffer.append(records).unwrap();
    let publisher = Publisher::new(kafka, SECRET, "conn-tls").expect("producer");
    let stop = Shutdown::new();
    let fwd = tokio::spawn(publish::forward(
        buffer.clone(),
        Uplink::Kafka(publisher),
        stop.clone(),
    ));
    let deadline = Instant::now() + wait;
    while buffer.stats().records > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    fwd.await.unwrap();
    buffer.stats().records
}

async fn create_topic(kafka: &KafkaConfig, topic: &str) {
    let cfg = kafka
        .try_client_config(TlsDefault::OnUnlessLoopback)
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = cfg.create().unwrap();
    admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic over TLS");
}

/// Read `n` records of `topic` over TLS and verify their signatures.
fn read_verified(kafka: &KafkaConfig, topic: &str, n: usize) -> usize {
    let mut cfg = kafka
        .try_client_config(TlsDefault::OnUnlessLoopback)
        .unwrap();
    cfg.set("group.id", "uplink-tls-check");
    let consumer: BaseConsumer = cfg.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let key = SigningKey::derive(SECRET, "conn-tls");
    let mut ok = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok < n && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume over TLS");
        let headers = m.headers().expect("signature headers");
        let fields =
            SignatureFields::from_headers(headers.iter().map(|h| (h.key, h.value))).unwrap();
        key.verify(topic, m.key().unwrap(), &fields, m.payload().unwrap())
            .expect("signature verifies");
        ok += 1;
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_uplink_verifies_the_broker_and_supports_mtls() {
    let Some(bin) = tansu_bin() else {
        eprintln!("SKIPPED kafka_uplink_verifies_the_broker_and_supports_mtls: no tansu binary (set FLEETPULSE_TANSU)");
        assert!(
            std::env::var_os("CI").is_none(),
            "FLEETPULSE_TANSU is required under CI"
        );
        return;
    };
    let pki = pki();

    // 1. Server verification against the right CA: delivered, signed.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().port();
    let (_tansu, port) = start_tansu(&bin, front);
    let errors = tls_front(listener, port, &pki, false);
    let good = kafka(
        front,
        "tls",
        KafkaTls {
            enabled: Some(true),
            ca_file: Some(pki.path("ca.pem")),
            ..Default::default()
        },
    );
    let topic = good.topic(fleetpulse_core::schema::RecordType::UsageCounters);
    create_topic(&good, &topic).await;
    let left = deliver(&good, 20, Duration::from_secs(30)).await;
    assert_eq!(left, 0, "all records acknowledged over verified TLS");
    let (k, t) = (good.clone(), topic.clone());
    assert_eq!(
        tokio::task::spawn_blocking(move || read_verified(&k, &t, 20))
            .await
            .unwrap(),
        20
    );
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );

    // 2. A CA that did not sign the broker's certificate: nothing is sent,
    //    the records stay in the buffer, and the handshake failed on the
    //    certificate (the client aborted with a TLS alert).
    let wrong = kafka(
        front,
        "tls",
        KafkaTls {
            enabled: Some(true),
            ca_file: Some(pki.path("other-ca.pem")),
            ..Default::default()
        },
    );
    let left = deliver(&wrong, 5, Duration::from_secs(4)).await;
    assert_eq!(left, 5, "unverified broker: records stay in the buffer");
    let errs = errors.lock().unwrap().clone();
    assert!(
        errs.iter().any(|e| e.contains("alert")),
        "expected TLS alerts from the client, got {errs:?}"
    );

    // 3. mTLS: a front that requires a client certificate signed by the CA.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().port();
    let (_tansu2, port) = start_tansu(&bin, front);
    let errors = tls_front(listener, port, &pki, true);
    let no_cert = kafka(
        front,
        "mtls",
        KafkaTls {
            enabled: Some(true),
            ca_file: Some(pki.path("ca.pem")),
            ..Default::default()
        },
    );
    let left = deliver(&no_cert, 3, Duration::from_secs(4)).await;
    assert_eq!(left, 3, "no client certificate: refused");
    assert!(
        errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.to_lowercase().contains("certificate")),
        "{:?}",
        errors.lock().unwrap()
    );
    let with_cert = kafka(
        front,
        "mtls",
        KafkaTls {
            enabled: Some(true),
            ca_file: Some(pki.path("ca.pem")),
            cert_file: Some(pki.path("client.pem")),
            key_file: Some(pki.path("client.key")),
            ..Default::default()
        },
    );
    with_cert
        .check("kafka", TlsDefault::OnUnlessLoopback)
        .unwrap();
    let topic = with_cert.topic(fleetpulse_core::schema::RecordType::UsageCounters);
    create_topic(&with_cert, &topic).await;
    let left = deliver(&with_cert, 10, Duration::from_secs(30)).await;
    assert_eq!(left, 0, "client certificate accepted: delivered");
    let (k, t) = (with_cert.clone(), topic.clone());
    assert_eq!(
        tokio::task::spawn_blocking(move || read_verified(&k, &t, 10))
            .await
            .unwrap(),
        10
    );
}
