//! The Firehose uplink against moto server (S3 + Firehose emulator), and
//! through an HTTP proxy taken from the environment.
//!
//! moto delivers each PutRecordBatch at once as an S3 object; the test
//! reads the objects back with boto3 (`tests/py/firehose_s3.py`, no
//! fleetpulse code), decodes them with `fleetpulse_core::envelope` and
//! verifies every signature. Needs `FLEETPULSE_MOTO` (the moto server
//! URL, set by `.ci/run`); skips with a message otherwise.
//!
//! One test per binary on purpose: it sets proxy variables in the
//! process environment.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use fleetpulse_core::envelope::decode_object;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::signing::SigningKey;
use fleetpulse_core::{samples, Shutdown};
use fleetpulse_edge::buffer::{Buffer, BufferConfig};
use fleetpulse_edge::uplink::{FirehoseConfig, FirehoseUplink};
use fleetpulse_edge::{publish, Signer, Uplink};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &[u8] = b"firehose-test-secret-0123456789";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/firehose_s3.py")
}

fn py(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "firehose_s3.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A forward proxy: `CONNECT host:port` tunnels, absolute-form requests are
/// relayed to their host. Records each request line.
async fn proxy() -> (u16, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let conns = Arc::new(AtomicUsize::new(0));
    let (l, c) = (lines.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let l = l.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(tcp);
                let mut first = String::new();
                if r.read_line(&mut first).await.is_err() {
                    return;
                }
                l.lock().unwrap().push(first.trim_end().to_string());
                let mut parts = first.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if method == "CONNECT" {
                    // Headers up to the blank line, then tunnel (or refuse).
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    match TcpStream::connect(target).await {
                        Ok(mut up) => {
                            let mut down = r.into_inner();
                            let _ = down
                                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                                .await;
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                        Err(_) => {
                            let _ = r
                                .into_inner()
                                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                                .await;
                        }
                    }
                    return;
                }
                // http://host:port/path -> relay the whole connection to host:port.
                let Some(rest) = target.strip_prefix("http://") else {
                    return;
                };
                let host = rest.split('/').next().unwrap_or("").to_string();
                let Ok(mut up) = TcpStream::connect(&host).await else {
                    return;
                };
                let _ = up.write_all(first.as_bytes()).await;
                let buffered = r.buffer().to_vec();
                let _ = up.write_all(&buffered).await;
                let mut down = r.into_inner();
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    (port, lines, conns)
}

fn firehose_config(endpoint: &str, stream: &str, rejected: PathBuf) -> FirehoseConfig {
    FirehoseConfig {
        stream: stream.into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        retry_backoff: Duration::from_millis(50),
        rejected_dir: rejected,
        ..Default::default()
    }
}

/// Append records, forward them through Firehose; what is left in the buffer.
async fn deliver(
    cfg: &FirehoseConfig,
    records: Vec<fleetpulse_edge::buffer::StoredRecord>,
    wait: Duration,
) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(BufferConfig {
        dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    buffer.append(records).unwrap();
    let up = FirehoseUplink::new(cfg, Signer::new(SECRET, "conn-fh"))
        .await
        .expect("client");
    let stop = Shutdown::new();
    let fwd = tokio::spawn(publish::forward(
        buffer.clone(),
        Uplink::Firehose(Arc::new(up)),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_uplink_lands_signed_envelopes_in_s3_through_the_proxy() {
    let Ok(moto) = std::env::var("FLEETPULSE_MOTO") else {
        eprintln!("SKIPPED firehose_uplink_lands_signed_envelopes_in_s3_through_the_proxy: FLEETPULSE_MOTO is not set (moto_server URL)");
        assert!(
            std::env::var_os("CI").is_none(),
            "FLEETPULSE_MOTO is required under CI"
        );
        return;
    };
    let moto = moto.trim_end_matches('/').to_string();
    let stream = format!("fp-edge-{}", std::process::id());
    let bucket = format!("fp-lake-{}", std::process::id());
    py(&["create", &moto, &stream, &bucket]);

    let (proxy_port, lines, conns) = proxy().await;
    // The process environment, as an operator would set it.
    std::env::set_var("HTTP_PROXY", format!("http://127.0.0.1:{proxy_port}"));
    std::env::set_var("HTTPS_PROXY", format!("http://127.0.0.1:{proxy_port}"));
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    let kafka = KafkaConfig {
        topic_prefix: "fh".into(),
        ..Default::default()
    };
    let rejected = tempfile::tempdir().unwrap();
    let cfg = firehose_config(&moto, &stream, rejected.path().to_path_buf());
    let mut records: Vec<_> = (0..1200)
        .map(|i| {
            publish::stored(&kafka, &samples::usage_counters(&format!("dev-{i}")), "b-1").unwrap()
        })
        .collect();
    records.push(publish::dead_letter(
        &kafka,
        "10.0.0.9:161",
        "bad BER",
        &[0x30, 0x82, 0xFF],
        "b-1",
    ));
    // A record Firehose cannot take (> 1,000 KiB framed): set aside, not dropped.
    let mut huge = publish::stored(&kafka, &samples::job_record("dev-big"), "b-1").unwrap();
    huge.payload = vec![0xAB; 800 * 1024];
    records.push(huge);
    let expected: HashSet<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
    let left = deliver(&cfg, records, Duration::from_secs(60)).await;
    assert_eq!(left, 0, "every record acknowledged (or set aside)");

    // Through the proxy (moto is http://, so HTTP_PROXY applies).
    assert!(conns.load(Ordering::SeqCst) >= 1);
    let seen = lines.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.starts_with(&format!("POST {moto}/"))),
        "proxy saw {seen:?}"
    );

    // In S3: exactly the signed records, each verifying.
    let dump = py(&["dump", &moto, &bucket]);
    let objects = dump["objects"].as_array().unwrap();
    assert!(
        objects.len() >= 3,
        "1,201 records need at least 3 PutRecordBatch calls: {}",
        objects.len()
    );
    let key = SigningKey::derive(SECRET, "conn-fh");
    let mut got = HashSet::new();
    let mut count = 0;
    for o in objects {
        assert!(
            o["key"].as_str().unwrap().starts_with("edge/"),
            "{}",
            o["key"]
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(o["b64"].as_str().unwrap())
            .unwrap();
        for env in decode_object(&bytes) {
            let env = env.expect("envelope");
            let f = env.signature_fields().expect("signature headers");
            key.verify(&env.topic, &env.key, &f, &env.payload)
                .expect("signature verifies");
            if env.topic == kafka.dlq_topic() {
                assert_eq!(env.header("fp-error-class"), Some(&b"snmp_decode"[..]));
            }
            got.insert(env.payload);
            count += 1;
        }
    }
    assert_eq!(count, 1201, "1,200 counters + 1 dead letter, none twice");
    let mut without_huge = expected.clone();
    without_huge.retain(|p| p.len() < 800 * 1024);
    assert_eq!(got, without_huge);
    let set_aside: Vec<_> = std::fs::read_dir(rejected.path()).unwrap().collect();
    assert_eq!(set_aside.len(), 1, "the oversized record is kept on disk");

    // HTTPS endpoints go through a CONNECT tunnel (name resolved by the proxy).
    let before = lines.lock().unwrap().len();
    let https = firehose_config(
        "https://firehose.fleetpulse.invalid",
        &stream,
        rejected.path().to_path_buf(),
    );
    let mut https = https;
    https.entry_retries = 0;
    let left = deliver(
        &https,
        vec![publish::stored(&kafka, &samples::usage_counters("dev-x"), "b-2").unwrap()],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        left, 1,
        "unreachable endpoint: the record stays in the buffer"
    );
    let seen = lines.lock().unwrap()[before..].to_vec();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("CONNECT firehose.fleetpulse.invalid:443")),
        "proxy saw {seen:?}"
    );

    // NO_PROXY bypasses it.
    std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
    let before = conns.load(Ordering::SeqCst);
    let left = deliver(
        &cfg,
        vec![publish::stored(&kafka, &samples::usage_counters("dev-y"), "b-3").unwrap()],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(left, 0);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        before,
        "NO_PROXY host went direct"
    );
}
