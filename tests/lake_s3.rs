//! The lake on S3, exactly once through 50 SIGKILLs.
//!
//! The real `fleetpulse process` binary writes to moto's S3 while a Python
//! producer keeps feeding signed records into tansu. The processor is killed
//! with SIGKILL at random points 50 times and restarted each time. Then the
//! objects are downloaded with boto3 and DuckDB counts the rows by
//! `event_id`: every event the producer had acknowledged is there exactly
//! once. The same files are read by DuckDB, pyarrow and polars with no
//! options, and the column types they see are checked.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetpulse::{
    fleetpulse_bin, fleetpulse_ok, kafka_or_skip, moto_or_skip, pycheck, repo_root, unique, Proc,
};

const SECRET: &str = "lake-test-connector-secret-0123456789";
const PSEUDONYM_KEY: &str = "lake-test-pseudonym-key-0123456789";
const CONNECTOR: &str = "conn-lake";
const KILLS: usize = 50;

/// A small deterministic generator (the seed is printed, so a failing run can
/// be repeated).
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn s3_lake_is_exactly_once_through_50_sigkills_and_readable_by_every_reader() {
    let test = "s3_lake_is_exactly_once_through_50_sigkills_and_readable_by_every_reader";
    let Some(kafka) = kafka_or_skip(test) else {
        return;
    };
    let Some(moto) = moto_or_skip(test) else {
        return;
    };
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("lake");
    let bucket = unique("fp-lake-");
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
    pycheck(
        "lakecheck.py",
        &["bucket", "--endpoint", &moto, "--bucket", &bucket],
    );

    // Small files and quick rolls, so that many uploads happen between kills.
    write(
        &d.join("processor.toml"),
        &format!(
            r#"group_id = "{prefix}-processor"
lake_dir = "{state}"
pseudonym_key = "env:FLEETPULSE_PSEUDONYM_KEY"
roll_age = "3s"
roll_idle = "1s"

[connector_secrets]
{CONNECTOR} = "env:FLEETPULSE_CONNECTOR_SECRET"

[lake]
store = "s3"
buffer_budget_bytes = 16777216

[lake.s3]
bucket = "{bucket}"
prefix = "lake"
region = "us-east-1"
endpoint_url = "{moto}"
force_path_style = true
access_key_id = "testing-key-id"
secret_access_key = "testing-secret"
sse = "AES256"
part_size = 5242880

[kafka]
brokers = "{kafka}"
topic_prefix = "{prefix}"
# A killed member must leave the group quickly (tansu keeps its partitions
# until its session expires).
[kafka.properties]
"session.timeout.ms" = "2000"
"heartbeat.interval.ms" = "300"
"max.poll.interval.ms" = "3000"
"#,
            state = d.join("state").display(),
        ),
    );
    let env = [
        ("FLEETPULSE_CONNECTOR_SECRET", SECRET),
        ("FLEETPULSE_PSEUDONYM_KEY", PSEUDONYM_KEY),
        ("FLEETPULSE_LOG", "info,rdkafka=warn"),
    ];
    let cfg = d.join("processor.toml").display().to_string();
    let proc_args = ["process", "--config", cfg.as_str()];

    // The producer: signed records, acknowledged ids written at the end.
    let stop = d.join("stop-feed");
    let ids = d.join("ids.json");
    let feed_log = std::fs::File::create(d.join("feed.log")).unwrap();
    let mut feeder = Command::new("python3")
        .arg(repo_root().join("tests/py/lakecheck.py"))
        .args(["feed", "--brokers", &kafka, "--prefix", &prefix])
        .args(["--secret", SECRET, "--connector", CONNECTOR])
        .arg("--ids-out")
        .arg(&ids)
        .arg("--stop-file")
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(feed_log)
        .spawn()
        .expect("starting the producer");

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos() as u64)
        .unwrap_or(7);
    eprintln!("{test}: kill-point seed {seed}");
    let mut rng = Lcg(seed);
    let start = Instant::now();
    let mut uptime = Duration::ZERO;
    for i in 0..KILLS {
        let mut p = Proc::spawn(&bin, "processor", &proc_args, &env, d);
        // Anywhere from start-up (config, S3 client, group join: ~4 s on
        // tansu) to several rolls of files.
        let wait = Duration::from_millis(200 + (rng.next_f64() * 8_800.0) as u64);
        std::thread::sleep(wait);
        assert!(
            p.is_running(),
            "processor exited before kill {i}:\n{}",
            p.log()
        );
        p.sigkill();
        uptime += wait;
        assert!(
            feeder.try_wait().unwrap().is_none(),
            "the producer stopped early"
        );
    }
    eprintln!(
        "{test}: {KILLS} kills in {:?} ({uptime:?} of processor time)",
        start.elapsed()
    );

    // A last processor that is not killed catches up; the producer stops.
    let mut last = Proc::spawn(&bin, "processor", &proc_args, &env, d);
    std::thread::sleep(Duration::from_secs(3));
    write(&stop, "");
    let out = feeder.wait_with_output().unwrap();
    assert!(out.status.success(), "producer failed");
    let feed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{test}: producer {feed}");
    let delivered = feed["delivered"].as_u64().unwrap();
    assert!(delivered > 1000, "too few records were produced: {feed}");
    assert_eq!(feed["failed"], 0, "{feed}");

    let ids_s = ids.display().to_string();
    let lake_s = d.join("lake").display().to_string();
    let mut check = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let _ = std::fs::remove_dir_all(d.join("lake"));
        pycheck(
            "lakecheck.py",
            &[
                "download",
                "--endpoint",
                &moto,
                "--bucket",
                &bucket,
                "--prefix",
                "lake/",
                "--out",
                &lake_s,
            ],
        );
        check = pycheck(
            "lakecheck.py",
            &["count", "--lake", &lake_s, "--ids", &ids_s],
        );
        if check["missing"] == 0 {
            break;
        }
        assert!(last.is_running(), "processor died:\n{}", last.log());
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(
        last.sigterm(Duration::from_secs(60)),
        "processor did not stop cleanly:\n{}",
        last.log()
    );
    let _ = std::fs::remove_dir_all(d.join("lake"));
    let download = pycheck(
        "lakecheck.py",
        &[
            "download",
            "--endpoint",
            &moto,
            "--bucket",
            &bucket,
            "--prefix",
            "lake/",
            "--out",
            &lake_s,
        ],
    );
    eprintln!("{test}: {download}");
    assert_eq!(
        download["bad_keys"].as_array().map(Vec::len),
        Some(0),
        "{download}"
    );
    let check_final = pycheck(
        "lakecheck.py",
        &["count", "--lake", &lake_s, "--ids", &ids_s],
    );
    eprintln!("{test}: {check_final} (while running: {check})");
    assert_eq!(
        check_final["sent"], check_final["sent_distinct"],
        "{check_final}"
    );
    assert_eq!(check_final["missing"], 0, "gaps: {check_final}");
    assert_eq!(
        check_final["duplicated_ids"], 0,
        "duplicates: {check_final}"
    );
    assert_eq!(check_final["extra"], 0, "rows nobody sent: {check_final}");
    assert_eq!(check_final["rows"], check_final["sent"], "{check_final}");
    assert_eq!(check_final["rows"].as_u64(), Some(delivered));

    // The replays met files already present: skipping was exercised.
    let logs = std::fs::read_to_string(d.join("processor.log")).unwrap_or_default();
    assert!(
        logs.contains("lake file already present"),
        "no replay ever met a present file in {KILLS} kills"
    );

    // DuckDB, pyarrow and polars read the lake with no options.
    let readers = pycheck("lakecheck.py", &["readers", "--lake", &lake_s]);
    for table in ["device_status", "device_heartbeat", "usage_counters"] {
        let t = &readers[table];
        assert!(t["files"].as_u64().unwrap_or(0) > 0, "{table}: {t}");
        let rows = &t["duckdb_rows"];
        assert_eq!(&t["pyarrow_rows"], rows, "{table}");
        assert_eq!(&t["polars_rows"], rows, "{table}");
        assert_eq!(t["statistics"], true, "{table}");
        assert_eq!(t["compression"], serde_json::json!(["ZSTD"]), "{table}");
        assert_eq!(
            t["duckdb"]["observed_at"], "TIMESTAMP WITH TIME ZONE",
            "{table}"
        );
        assert_eq!(
            t["pyarrow"]["observed_at"], "timestamp[ms, tz=UTC]",
            "{table}"
        );
        assert_eq!(
            t["polars"]["observed_at"], "Datetime(time_unit='ms', time_zone='UTC')",
            "{table}"
        );
        // Hive partitions are seen as columns.
        assert_eq!(t["duckdb"]["date"], "DATE", "{table}");
        assert_eq!(t["polars"]["date"], "Date", "{table}");
        assert!(t["pyarrow"]["date"].is_string(), "{table}: {t}");
    }
    let st = &readers["device_status"];
    for reader in ["duckdb", "pyarrow", "polars"] {
        assert!(
            st[reader]["hour"].is_string(),
            "{reader}: hour partition: {st}"
        );
    }
    assert!(
        readers["usage_counters"]["duckdb"]["hour"].is_null(),
        "usage_counters is daily"
    );
    assert_eq!(st["duckdb"]["hr_printer_status"], "VARCHAR");
    assert_eq!(st["pyarrow"]["hr_printer_status"], "string");
    assert_eq!(st["polars"]["hr_printer_status"], "String");
    let enc = st["encodings"]["hr_printer_status"].to_string();
    assert!(
        enc.contains("DICTIONARY"),
        "enum column dictionary-encoded: {enc}"
    );
    let supplies = st["pyarrow"]["supplies"].as_str().unwrap_or_default();
    assert!(
        supplies.starts_with("list<item: struct<") && supplies.contains("supply_type: string"),
        "{supplies}"
    );
    let supplies = st["duckdb"]["supplies"].as_str().unwrap_or_default();
    assert!(
        supplies.starts_with("STRUCT(") && supplies.ends_with(")[]"),
        "{supplies}"
    );
    let supplies = st["polars"]["supplies"].as_str().unwrap_or_default();
    assert!(supplies.starts_with("List(Struct("), "{supplies}");
}
