//! Privacy canaries: records whose personal fields carry planted values
//! (a serial number, a MAC, an IP, a user name, a job name, a host name, a
//! street-level location) go through the real `fleetpulse process` against
//! tansu, some valid and some rejected. Afterwards no canary may appear in
//! any lake file (raw bytes or any decoded value, pyarrow), in any dead
//! letter (key, headers, payload bytes, confluent-kafka) or in any line the
//! processor logged at debug level. Positive controls show the test could
//! fail: the canaries are inside the sealed dead letters once opened with
//! the DLQ key, and the lake holds the records (pseudonymised).

use std::time::{Duration, Instant};

use fleetpulse::{fleetpulse_bin, fleetpulse_ok, fpcheck, kafka_or_skip, unique, Proc};

const SECRET: &str = "canary-connector-secret-0123456789";
const PSEUDONYM_KEY: &str = "canary-pseudonym-key-0123456789abc";
const DLQ_KEY: &str = "canary-dlq-key-0123456789abcdefghij";
const CONNECTOR: &str = "conn-canary";

#[test]
fn no_canary_reaches_the_lake_the_dlq_or_the_logs() {
    let Some(kafka) = kafka_or_skip("no_canary_reaches_the_lake_the_dlq_or_the_logs") else {
        return;
    };
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("canary");
    let lake = d.join("lake");
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
            "1",
        ],
    );
    std::fs::write(
        d.join("processor.toml"),
        format!(
            "group_id = \"{prefix}-processor\"\nlake_dir = \"{}\"\npseudonym_key = \"env:FLEETPULSE_PSEUDONYM_KEY\"\ndlq_key = \"env:FLEETPULSE_DLQ_KEY\"\nroll_age = \"2s\"\nroll_idle = \"1s\"\n\n[connector_secrets]\n{CONNECTOR} = \"env:FLEETPULSE_CONNECTOR_SECRET\"\n\n[kafka]\nbrokers = \"{kafka}\"\ntopic_prefix = \"{prefix}\"\n",
            lake.display()
        ),
    )
    .unwrap();
    let canaries = serde_json::json!({
        "serial": "FPCANARYSN7731",
        "mac": "02:fc:77:31:aa:5e",
        "ip": "10.77.31.209",
        "user": "fpcanary.jdoe",
        "job": "FPCANARY-payroll-Q3.pdf",
        "host": "fpcanary-printer-host",
        "location": "Canarystrasse 7, FPCanaryville, Germany",
    })
    .to_string();
    let env = [
        ("FLEETPULSE_CONNECTOR_SECRET", SECRET),
        ("FLEETPULSE_PSEUDONYM_KEY", PSEUDONYM_KEY),
        ("FLEETPULSE_DLQ_KEY", DLQ_KEY),
        // Everything our code logs, librdkafka at warn.
        (
            "FLEETPULSE_LOG",
            "debug,rdkafka=warn,librdkafka=warn,aws=warn,hyper=warn",
        ),
    ];
    let cfg = d.join("processor.toml").display().to_string();
    let mut processor = Proc::spawn(&bin, "processor", &["process", "--config", &cfg], &env, d);
    fpcheck(&[
        "canary-inject",
        "--brokers",
        &kafka,
        "--prefix",
        &prefix,
        "--secret",
        SECRET,
        "--connector",
        CONNECTOR,
        "--canaries",
        &canaries,
    ]);
    let lake_s = lake.display().to_string();
    let start = Instant::now();
    loop {
        let l = fpcheck(&["lake", "--lake", &lake_s]);
        if l["rows"].as_u64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(
            processor.is_running(),
            "processor died:\n{}",
            processor.log()
        );
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the three valid records did not reach the lake:\n{}",
            processor.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        processor.sigterm(Duration::from_secs(30)),
        "processor did not stop"
    );

    let values: Vec<String> = serde_json::from_str::<serde_json::Value>(&canaries)
        .unwrap()
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let serials = serde_json::to_string(&values).unwrap();
    // Lake: every file, raw bytes and every decoded value.
    let l = fpcheck(&["lake", "--lake", &lake_s, "--serials", &serials]);
    assert_eq!(l["rows"], 3, "{l}");
    assert_eq!(
        l["serial_hits"],
        serde_json::json!([]),
        "canaries in the lake: {l}"
    );
    // Dead letters: key, headers, payload bytes.
    let dlq = fpcheck(&[
        "grep-dlq",
        "--brokers",
        &kafka,
        "--prefix",
        &prefix,
        "--canaries",
        &canaries,
        "--open-key",
        DLQ_KEY,
    ]);
    assert_eq!(dlq["count"], 3, "{dlq}");
    assert_eq!(
        dlq["hits"],
        serde_json::json!([]),
        "canaries in the DLQ: {dlq}"
    );
    assert!(
        dlq["opened_hits"].as_u64().unwrap_or(0) >= 3,
        "positive control: the sealed payloads hold the canaries: {dlq}"
    );
    // Logs: every line the processor wrote.
    let log = processor.log();
    assert!(
        log.contains("dead-letter"),
        "the log has the rejections: {log}"
    );
    let leaked: Vec<&str> = log
        .lines()
        .filter(|line| values.iter().any(|v| line.contains(v.as_str())))
        .collect();
    assert!(
        leaked.is_empty(),
        "canaries in the processor log:\n{}",
        leaked.join("\n")
    );
}
