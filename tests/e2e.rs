//! End to end: simulated printers → edge → tansu (real Kafka protocol) →
//! processor → Parquet, and → alerter → alert topic, each service its own
//! `fleetpulse` process. Checked with independent readers (fastavro,
//! confluent-kafka, DuckDB, pyarrow): every event sent is one row, none
//! duplicated, even across a SIGKILL of the processor; no raw serial number
//! reaches the lake; an alert arrives; bad input ends in the dead-letter topic.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use fleetpulse::{fleetpulse_bin, fleetpulse_ok, fpcheck, kafka_or_skip, unique, Proc};

const SECRET: &str = "e2e-connector-secret-0123456789";
const PSEUDONYM_KEY: &str = "e2e-pseudonym-key-abcdefghijklmnop";
const CONNECTOR: &str = "conn-e2e";

/// A UDP "printer" that answers every request with a truncated response:
/// the request turned into a GetResponse PDU, then cut to two thirds.
fn start_truncating_agent() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let mut msg = buf[..n].to_vec();
            if let Some(pdu) = pdu_tag_offset(&msg) {
                msg[pdu] = 0xA2; // GetResponse
            }
            let cut = (msg.len() * 2 / 3).max(1);
            let _ = sock.send_to(&msg[..cut], peer);
        }
    });
    port
}

/// Offset of the PDU tag in a v1/v2c message: SEQUENCE { version, community, PDU }.
fn pdu_tag_offset(m: &[u8]) -> Option<usize> {
    fn skip_len(m: &[u8], i: usize) -> Option<(usize, usize)> {
        let b = *m.get(i)?;
        if b < 0x80 {
            Some((b as usize, i + 1))
        } else {
            let n = (b & 0x7f) as usize;
            let mut len = 0usize;
            for k in 0..n {
                len = (len << 8) | *m.get(i + 1 + k)? as usize;
            }
            Some((len, i + 1 + n))
        }
    }
    let (_, mut i) = skip_len(m, 1)?; // outer SEQUENCE header
    for _ in 0..2 {
        let (len, body) = skip_len(m, i + 1)?; // version, community
        i = body + len;
    }
    (i < m.len()).then_some(i)
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint reachable");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn pipeline_end_to_end_against_tansu() {
    let Some(kafka) = kafka_or_skip("pipeline_end_to_end_against_tansu") else {
        return;
    };
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("e2e");
    let lake = d.join("lake");
    let printers = 8usize;
    let base_port = 30000 + (std::process::id() % 1000) as u16 * 20;
    let metrics_port = free_tcp_port();

    fleetpulse_ok(
        &bin,
        &[
            "topics",
            "create",
            "--kafka",
            &kafka,
            "--topic-prefix",
            &prefix,
            "--partitions",
            "2",
        ],
    );

    let bad_port = start_truncating_agent();
    let mut devices = String::new();
    for i in 0..printers {
        devices += &format!(
            "\n[[devices]]\naddress = \"127.0.0.1:{}\"\ncommunity = \"public\"\n",
            base_port + i as u16
        );
    }
    devices +=
        &format!("\n[[devices]]\naddress = \"127.0.0.1:{bad_port}\"\ncommunity = \"public\"\n");
    let kafka_section = format!("[kafka]\nbrokers = \"{kafka}\"\ntopic_prefix = \"{prefix}\"\n");
    write(
        &d.join("sim.toml"),
        &format!(
            "printers = {printers}\nbase_port = {base_port}\nseed = 7\nacceleration = 600.0\n"
        ),
    );
    write(
        &d.join("edge.toml"),
        &format!(
            "tenant_id = \"tenant-e2e\"\nconnector_id = \"{CONNECTOR}\"\nconnector_secret = \"env:FLEETPULSE_CONNECTOR_SECRET\"\npoll_interval = \"1s\"\nheartbeat_interval = \"2s\"\n\n[schedule]\nmin_interval = \"1s\"\nstatus_interval = \"1s\"\ncounters_interval = \"1s\"\ndevice_heartbeats = \"every_poll\"\n\n[buffer]\ndir = \"{}\"\n\n{kafka_section}{devices}",
            d.join("edge-buffer").display()
        ),
    );
    write(
        &d.join("processor.toml"),
        &format!(
            "group_id = \"{prefix}-processor\"\nlake_dir = \"{}\"\npseudonym_key = \"env:FLEETPULSE_PSEUDONYM_KEY\"\npseudonym_key_id = \"e2e-v1\"\nroll_age = \"3s\"\nroll_idle = \"2s\"\nmetrics_addr = \"127.0.0.1:{metrics_port}\"\n\n[connector_secrets]\n{CONNECTOR} = \"env:FLEETPULSE_CONNECTOR_SECRET\"\n\n{kafka_section}",
            lake.display()
        ),
    );
    write(
        &d.join("alerter.toml"),
        &format!("group_id = \"{prefix}-alerter\"\ndepletion_threshold = \"3650d\"\nmin_history_span = \"3s\"\nheartbeat_interval = \"1s\"\n\n{kafka_section}"),
    );
    let env = [
        ("FLEETPULSE_CONNECTOR_SECRET", SECRET),
        ("FLEETPULSE_PSEUDONYM_KEY", PSEUDONYM_KEY),
        ("FLEETPULSE_LOG", "info,rdkafka=warn"),
    ];
    let cfg = |name: &str| d.join(name).display().to_string();
    let mut sim = Proc::spawn(&bin, "sim", &["sim", "--config", &cfg("sim.toml")], &env, d);
    let proc_args = ["process", "--config", &cfg("processor.toml")];
    let mut processor = Proc::spawn(&bin, "processor", &proc_args, &env, d);
    let mut alerter = Proc::spawn(
        &bin,
        "alerter",
        &["alert", "--config", &cfg("alerter.toml")],
        &env,
        d,
    );
    let mut edge = Proc::spawn(
        &bin,
        "edge",
        &["edge", "--config", &cfg("edge.toml")],
        &env,
        d,
    );
    let lake_s = lake.display().to_string();

    // Wait for the first durable Parquet files, then crash the processor mid-run.
    let start = Instant::now();
    loop {
        let l = fpcheck(&["lake", "--lake", &lake_s]);
        if l["files"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            processor.is_running(),
            "processor died:\n{}",
            processor.log()
        );
        assert!(edge.is_running(), "edge died:\n{}", edge.log());
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no Parquet after 90s:\n{}\n{}",
            processor.log(),
            edge.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The processor serves its health and metrics.
    let health = http_get(metrics_port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains("fleetpulse_processor_rows_written_total"),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    processor.sigkill();
    let mut processor = Proc::spawn(&bin, "processor", &proc_args, &env, d);

    // Bad input from outside: a bad signature, a well-signed record of the
    // wrong schema, one signed 10 minutes before it was produced, and a replay
    // of a valid record (the original belongs in the lake, once).
    let inject = fpcheck(&[
        "inject",
        "--brokers",
        &kafka,
        "--prefix",
        &prefix,
        "--secret",
        SECRET,
        "--connector",
        CONNECTOR,
    ]);
    assert_eq!(
        inject["valid"].as_array().map(Vec::len),
        Some(1),
        "the original of the replay was delivered: {inject}"
    );
    let injected: Vec<String> = inject["injected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(injected.len(), 4, "every bad record was delivered");

    std::thread::sleep(Duration::from_secs(8));
    assert!(
        edge.sigterm(Duration::from_secs(30)),
        "edge did not stop cleanly:\n{}",
        edge.log()
    );

    // Everything sent must end up in the lake exactly once.
    let ids = d.join("raw_ids.json").display().to_string();
    let mut raw_args = vec![
        "raw",
        "--brokers",
        kafka.as_str(),
        "--prefix",
        prefix.as_str(),
        "--ids-out",
        ids.as_str(),
        "--exclude",
    ];
    raw_args.extend(injected.iter().map(String::as_str));
    let raw = fpcheck(&raw_args);
    let sent = raw["count"].as_u64().unwrap();
    assert!(sent > 50, "too few events were sent: {raw}");
    assert_eq!(raw["undecodable"], 0, "{raw}");
    assert_eq!(
        raw["distinct"].as_u64(),
        Some(sent),
        "the edge sent duplicate event ids: {raw}"
    );
    let serials = serde_json::to_string(&raw["device_ids"]).unwrap();
    assert_eq!(
        raw["device_ids"].as_array().unwrap().len(),
        printers,
        "{raw}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lake_stats;
    loop {
        lake_stats = fpcheck(&["lake", "--lake", &lake_s, "--ids", &ids]);
        if lake_stats["rows"].as_u64() >= Some(sent) || Instant::now() > deadline {
            break;
        }
        assert!(
            processor.is_running(),
            "restarted processor died:\n{}",
            processor.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        processor.sigterm(Duration::from_secs(30)),
        "processor did not stop cleanly:\n{}",
        processor.log()
    );
    let lake_stats = fpcheck(&[
        "lake",
        "--lake",
        &lake_s,
        "--ids",
        &ids,
        "--serials",
        &serials,
    ]);
    eprintln!("raw: {raw}\nlake: {lake_stats}");
    assert_eq!(
        lake_stats["rows"].as_u64(),
        Some(sent),
        "rows in Parquet != events sent: {lake_stats}"
    );
    assert_eq!(
        lake_stats["distinct"].as_u64(),
        Some(sent),
        "duplicate rows: {lake_stats}"
    );
    assert_eq!(lake_stats["missing"], 0, "{lake_stats}");
    assert_eq!(lake_stats["extra"], 0, "{lake_stats}");
    assert_eq!(
        lake_stats["serial_hits"],
        serde_json::json!([]),
        "raw serial numbers in the lake"
    );

    // Alerts, decoded with confluent-kafka + fastavro.
    let alerts = fpcheck(&["alerts", "--brokers", &kafka, "--prefix", &prefix]);
    assert!(
        alerts["count"].as_u64().unwrap() >= 1,
        "no alert arrived: {alerts}\n{}",
        alerter.log()
    );
    let tail = fleetpulse_ok(
        &bin,
        &[
            "alerts",
            "tail",
            "--kafka",
            &kafka,
            "--topic-prefix",
            &prefix,
            "--from-beginning",
            "--max",
            "1",
            "--timeout",
            "60s",
        ],
    );
    assert!(
        tail.to_lowercase().contains("raised"),
        "alerts tail printed: {tail}"
    );

    // Dead letters: bad signature, wrong schema (processor) and truncated SNMP (edge).
    let dlq = fpcheck(&["dlq", "--brokers", &kafka, "--prefix", &prefix]);
    let classes: Vec<&str> = dlq["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["fp-error-class"].as_str())
        .collect();
    for want in [
        "bad_signature",
        "wrong_schema",
        "stale_signature",
        "replayed_sequence",
        "snmp_decode",
    ] {
        assert!(classes.contains(&want), "no {want} in the DLQ: {dlq}");
    }
    for h in dlq["records"].as_array().unwrap() {
        assert!(
            h["fp-error-reason"].as_str().is_some_and(|r| !r.is_empty()),
            "DLQ record without reason: {h}"
        );
    }
    for p in [&processor, &edge] {
        assert!(
            !p.log().contains("panicked"),
            "a service panicked:\n{}",
            p.log()
        );
    }
    let proc_log = processor.log();
    assert!(
        proc_log.contains("bad_signature") || proc_log.contains("bad signature"),
        "no log line for the bad signature"
    );
    alerter.sigterm(Duration::from_secs(20));
    sim.sigterm(Duration::from_secs(10));
}

#[test]
fn up_runs_everything_in_one_process() {
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summary = dir.path().join("summary.json");
    let out = fleetpulse_ok(
        &bin,
        &[
            "up",
            "--printers",
            "5",
            "--printers-3d",
            "2",
            "--duration",
            "25s",
            "--poll-interval",
            "1s",
            "--data-dir",
            &data.display().to_string(),
            "--summary-json",
            &summary.display().to_string(),
        ],
    );
    assert!(out.contains("duckdb"), "summary has no DuckDB query: {out}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    for k in [
        "events_sent",
        "rows_written",
        "alerts_raised",
        "dead_lettered",
    ] {
        assert!(s[k].is_u64(), "{k} missing from {s}");
    }
    let sent = s["events_sent"].as_u64().unwrap();
    assert!(sent > 20, "{s}");
    assert_eq!(
        s["rows_written"].as_u64(),
        Some(sent),
        "every event sent is a row: {s}"
    );
    assert_eq!(s["dead_lettered"], 0, "{s}");
    // The lake holds exactly what the summary claims, read by DuckDB.
    let runs: Vec<_> = std::fs::read_dir(data.join("lake"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let lake = fpcheck(&["lake", "--lake", &runs[0].display().to_string()]);
    assert_eq!(lake["rows"].as_u64(), Some(sent), "{lake}");
    assert_eq!(lake["distinct"].as_u64(), Some(sent), "{lake}");
    // The 3D printers' finished jobs (polled over pinned HTTPS) reach the lake.
    let jobs = &lake["tables"]["job_record"];
    assert!(
        jobs["rows"].as_u64().is_some_and(|n| n > 0),
        "no job_record rows with 3D printers running: {lake}"
    );
    assert_eq!(jobs["rows"], jobs["distinct"], "{lake}");
    assert!(out.contains("2 3D printers"), "{out}");
    assert!(data.join("keys.toml").exists());
}
