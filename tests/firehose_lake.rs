//! The Firehose path end to end: simulated printers → `fleetpulse edge` with
//! the Firehose uplink → moto's Firehose, which delivers into its S3 →
//! `fleetpulse process` reading those objects (`[firehose]`) → the same lake
//! tables. Every delivered line is one row (by event id, DuckDB), also after
//! the processor is SIGKILLed mid-run and its checkpoint is lost; a malformed
//! line and a line with a broken signature go to the dead-letter topic.
//!
//! Needs FLEETPULSE_MOTO (moto server) and FLEETPULSE_KAFKA (tansu, for the
//! dead-letter topic), both set by `.ci/run`.

use std::path::Path;
use std::time::{Duration, Instant};

use fleetpulse::{fleetpulse_bin, fleetpulse_ok, fpcheck, kafka_or_skip, repo_root, unique, Proc};

const SECRET: &str = "firehose-lake-secret-0123456789";
const PSEUDONYM_KEY: &str = "firehose-lake-pseudonym-key-0123456";
const CONNECTOR: &str = "conn-fh";

fn moto_or_skip(test: &str) -> Option<String> {
    match std::env::var("FLEETPULSE_MOTO") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: FLEETPULSE_MOTO is not set under CI; .ci/run starts moto_server"
            );
            eprintln!("skipped {test}: FLEETPULSE_MOTO is not set (run `bash .ci/run`)");
            None
        }
    }
}

fn py(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Put an object with one malformed line and one line whose signature is
/// broken (a valid delivered line with its payload changed) under the prefix.
fn put_bad_object(endpoint: &str, bucket: &str, prefix: &str) {
    let code = format!(
        r#"
import base64, json, boto3
s3 = boto3.client("s3", endpoint_url="{endpoint}", region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="{bucket}", Prefix="{prefix}")["Contents"]]
line = s3.get_object(Bucket="{bucket}", Key=keys[0])["Body"].read().split(b"\n")[0]
env = json.loads(line)
p = bytearray(base64.b64decode(env["payload"])); p[-1] ^= 1
env["payload"] = base64.b64encode(bytes(p)).decode()
body = b"this is not an envelope\n" + json.dumps(env).encode() + b"\n"
s3.put_object(Bucket="{bucket}", Key="{prefix}zz-injected/bad-object", Body=body)
"#
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &code])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "injecting a bad object: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn firehose_objects_land_in_the_lake_exactly_once() {
    let test = "firehose_objects_land_in_the_lake_exactly_once";
    let (Some(kafka), Some(moto)) = (kafka_or_skip(test), moto_or_skip(test)) else {
        return;
    };
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("fh");
    let stream = format!("{prefix}-stream");
    let bucket = format!("{prefix}-bucket").replace('_', "-").to_lowercase();
    let s3_prefix = "edge/";
    let lake = d.join("lake");
    let printers = 4usize;
    let base_port = 36000 + (std::process::id() % 500) as u16 * 10;

    py(
        "tests/py/firehose_s3.py",
        &["create", &moto, &stream, &bucket],
    );
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
    let mut devices = String::new();
    for i in 0..printers {
        devices += &format!(
            "\n[[devices]]\naddress = \"127.0.0.1:{}\"\ncommunity = \"public\"\n",
            base_port + i as u16
        );
    }
    let kafka_section = format!("[kafka]\nbrokers = \"{kafka}\"\ntopic_prefix = \"{prefix}\"\n");
    write(
        &d.join("sim.toml"),
        &format!(
            "printers = {printers}\nbase_port = {base_port}\nseed = 11\nacceleration = 600.0\n"
        ),
    );
    write(
        &d.join("edge.toml"),
        &format!(
            "tenant_id = \"tenant-fh\"\nconnector_id = \"{CONNECTOR}\"\nconnector_secret = \"env:FLEETPULSE_CONNECTOR_SECRET\"\npoll_interval = \"1s\"\nheartbeat_interval = \"2s\"\n\n[schedule]\nmin_interval = \"1s\"\nstatus_interval = \"1s\"\ncounters_interval = \"1s\"\ndevice_heartbeats = \"every_poll\"\n\n[buffer]\ndir = \"{}\"\n\n[uplink]\nkind = \"firehose\"\n\n[uplink.firehose]\nstream = \"{stream}\"\nregion = \"us-east-1\"\nendpoint_url = \"{moto}\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\nrejected_dir = \"{}\"\n\n{kafka_section}{devices}",
            d.join("edge-buffer").display(),
            d.join("edge-rejected").display(),
        ),
    );
    write(
        &d.join("processor.toml"),
        &format!(
            "group_id = \"{prefix}-processor\"\nlake_dir = \"{}\"\npseudonym_key = \"env:FLEETPULSE_PSEUDONYM_KEY\"\npseudonym_key_id = \"fh-v1\"\nroll_age = \"3s\"\nroll_idle = \"2s\"\n\n[connector_secrets]\n{CONNECTOR} = \"env:FLEETPULSE_CONNECTOR_SECRET\"\n\n[firehose]\nbucket = \"{bucket}\"\nprefix = \"{s3_prefix}\"\nregion = \"us-east-1\"\nendpoint_url = \"{moto}\"\npath_style = true\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\npoll_interval = \"1s\"\n\n{kafka_section}",
            lake.display()
        ),
    );
    let env = [
        ("FLEETPULSE_CONNECTOR_SECRET", SECRET),
        ("FLEETPULSE_PSEUDONYM_KEY", PSEUDONYM_KEY),
        ("FLEETPULSE_LOG", "info,rdkafka=warn"),
    ];
    let cfg = |name: &str| d.join(name).display().to_string();
    let sim = Proc::spawn(&bin, "sim", &["sim", "--config", &cfg("sim.toml")], &env, d);
    let mut edge = Proc::spawn(
        &bin,
        "edge",
        &["edge", "--config", &cfg("edge.toml")],
        &env,
        d,
    );
    let proc_args = ["process", "--config", &cfg("processor.toml")];
    let mut processor = Proc::spawn(&bin, "processor", &proc_args, &env, d);
    let lake_s = lake.display().to_string();

    // Let records flow; crash the processor a few times while objects arrive.
    let start = Instant::now();
    let mut kills = 0;
    while kills < 4 {
        std::thread::sleep(Duration::from_millis(2500 + 700 * kills));
        assert!(edge.is_running(), "edge died:\n{}", edge.log());
        assert!(
            processor.is_running(),
            "processor died:\n{}",
            processor.log()
        );
        processor.sigkill();
        kills += 1;
        if kills == 2 {
            // Lose the checkpoint too: every object is read again and must
            // find its files present.
            for e in std::fs::read_dir(lake.join("_state"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().starts_with("firehose-") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        }
        processor = Proc::spawn(&bin, "processor", &proc_args, &env, d);
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "test ran too long"
        );
    }
    assert!(
        edge.sigterm(Duration::from_secs(20)),
        "edge did not stop:\n{}",
        edge.log()
    );
    drop(sim);
    put_bad_object(&moto, &bucket, s3_prefix);

    // Everything delivered (read independently with boto3 + fastavro).
    let ids_path = d.join("delivered.json");
    let delivered = fpcheck(&[
        "firehose",
        "--endpoint",
        &moto,
        "--bucket",
        &bucket,
        "--prefix",
        s3_prefix,
        "--ids-out",
        &ids_path.display().to_string(),
    ]);
    // The injected object: one line that is no envelope (undecodable) and
    // one copy of a delivered record with a changed payload (it may still
    // decode, under the original's event id).
    assert!(
        delivered["undecodable"].as_u64().unwrap_or(0) >= 1,
        "{delivered}"
    );
    let expected = delivered["distinct"].as_u64().unwrap();
    assert!(expected > 20, "too few records delivered: {delivered}");

    // Wait until the lake holds them, then stop the processor cleanly.
    let ids_s = ids_path.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = fpcheck(&["lake", "--lake", &lake_s, "--ids", &ids_s]);
        if l["rows"].as_u64().unwrap_or(0) >= expected || Instant::now() > deadline {
            break;
        }
        assert!(
            processor.is_running(),
            "processor died:\n{}",
            processor.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        processor.sigterm(Duration::from_secs(30)),
        "processor did not stop"
    );
    let lake_state = fpcheck(&["lake", "--lake", &lake_s, "--ids", &ids_s]);
    assert_eq!(
        lake_state["rows"].as_u64(),
        Some(expected),
        "{lake_state}\n{delivered}"
    );
    assert_eq!(
        lake_state["distinct"].as_u64(),
        Some(expected),
        "duplicates: {lake_state}"
    );
    assert_eq!(lake_state["missing"], 0, "{lake_state}");
    assert_eq!(lake_state["extra"], 0, "{lake_state}");

    // The two bad lines are dead letters with their reasons.
    let dlq = fpcheck(&["dlq", "--brokers", &kafka, "--prefix", &prefix]);
    let classes: Vec<&str> = dlq["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["fp-error-class"].as_str())
        .collect();
    assert!(classes.contains(&"malformed_envelope"), "{dlq}");
    assert!(classes.contains(&"bad_signature"), "{dlq}");
    let log = processor.log();
    assert!(log.contains("firehose object read"), "{log}");
    let _ = std::fs::remove_dir_all(d.join("edge-buffer"));
}
