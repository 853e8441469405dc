//! Schema evolution in the lake: `usage_counters` and `connector_heartbeat`
//! gained fields (v2, see `schemas/history/`). A fleet where old (v1) and
//! new edges report at once interleaves both versions on one partition; the
//! real `fleetpulse process` (against tansu) resolves every record to the
//! current schema, so each table gets one file, not a file per version
//! switch. DuckDB then reads the v1 files an older processor wrote
//! (`tests/fixtures/lake-v1/`) together with the new ones using
//! `union_by_name`: old rows have NULL in the new columns.

use std::time::{Duration, Instant};

use fleetpulse::{fleetpulse_bin, fleetpulse_ok, fpcheck, kafka_or_skip, repo_root, unique, Proc};

const SECRET: &str = "evolve-connector-secret-0123456789";
const PSEUDONYM_KEY: &str = "evolve-pseudonym-key-0123456789abc";
const CONNECTOR: &str = "conn-evolve";

#[test]
fn interleaved_schema_versions_make_one_file_and_old_files_still_query() {
    let Some(kafka) =
        kafka_or_skip("interleaved_schema_versions_make_one_file_and_old_files_still_query")
    else {
        return;
    };
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = unique("evolve");
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
            "group_id = \"{prefix}-processor\"\nlake_dir = \"{}\"\npseudonym_key = \"env:FLEETPULSE_PSEUDONYM_KEY\"\nroll_age = \"10m\"\nroll_idle = \"3s\"\n\n[derived]\nenabled = false\n\n[connector_secrets]\n{CONNECTOR} = \"env:FLEETPULSE_CONNECTOR_SECRET\"\n\n[kafka]\nbrokers = \"{kafka}\"\ntopic_prefix = \"{prefix}\"\n",
            lake.display()
        ),
    )
    .unwrap();
    let env = [
        ("FLEETPULSE_CONNECTOR_SECRET", SECRET),
        ("FLEETPULSE_PSEUDONYM_KEY", PSEUDONYM_KEY),
        ("FLEETPULSE_LOG", "info,rdkafka=warn"),
    ];
    let cfg = d.join("processor.toml").display().to_string();
    let n = 20;
    let injected = fpcheck(&[
        "evolve-inject",
        "--brokers",
        &kafka,
        "--prefix",
        &prefix,
        "--secret",
        SECRET,
        "--connector",
        CONNECTOR,
        "--n",
        &n.to_string(),
    ]);
    assert_eq!(injected["v1"], 20, "{injected}");
    assert_eq!(injected["current"], 20, "{injected}");
    let mut processor = Proc::spawn(&bin, "processor", &["process", "--config", &cfg], &env, d);
    // The 40 records arrive in one burst: each table's file is published
    // after 3 s without new rows (roll_idle); a split would show as more.
    let lake_s = lake.display().to_string();
    let start = Instant::now();
    loop {
        let l = fpcheck(&["lake", "--lake", &lake_s]);
        if l["rows"].as_u64().unwrap_or(0) >= 2 * n as u64 {
            break;
        }
        assert!(
            processor.is_running(),
            "processor died:\n{}",
            processor.log()
        );
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "rows did not arrive: {l}\n{}",
            processor.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        processor.sigterm(Duration::from_secs(30)),
        "processor did not stop"
    );
    let fixtures = repo_root().join("tests/fixtures/lake-v1");
    let c = fpcheck(&[
        "evolve-check",
        "--lake",
        &lake.display().to_string(),
        "--fixtures",
        &fixtures.display().to_string(),
    ]);
    let log = processor.log();
    for table in ["usage_counters", "connector_heartbeat"] {
        let t = &c[table];
        assert_eq!(t["old_files"], 1, "{table}: {c}");
        // 20 records, v1 and v2 alternating, one partition: one file.
        assert_eq!(
            t["new_files"], 1,
            "{table}: versions split files: {c}\n{log}"
        );
    }
    let uc = &c["usage_counters"];
    assert_eq!(uc["rows"], 2 + 20, "{c}");
    let fields: Vec<&str> = uc["marker_fields"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["m"], "{c}");
    let markers_type = uc["markers_type"].as_str().unwrap_or_default();
    for field in ["event", "wrap_modulus", "previous_life_count"] {
        assert!(
            markers_type.contains(field),
            "v2 marker field {field} missing: {markers_type}"
        );
    }
    assert_eq!(
        uc["markers"],
        2 + 20,
        "every marker of both versions readable: {c}"
    );
    let hb = &c["connector_heartbeat"];
    assert_eq!(hb["rows"], 1 + 20, "{c}");
    assert_eq!(
        hb["devices_null"], 1,
        "the v1 file's row has no devices column: {c}"
    );
    assert_eq!(
        hb["devices_set"], 20,
        "v1 and v2 records written now all carry it: {c}"
    );
}
