//! The derived tables produced by a running processor: KPIs, late records,
//! benchmarks and the usage ledger, across a crash (the task is aborted, no
//! drain) and a restart. Rows are read back with DuckDB (python3).

use std::process::Command;

use chrono::NaiveDate;
use serde_json::Value as Json;

use super::*;
use crate::derived::{TABLE_BENCHMARK, TABLE_KPI, TABLE_LATE, TABLE_LEDGER};

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;
const DEVICES: usize = 5;

fn day_ms(y: i32, m: u32, d: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("date")
        .and_utc()
        .timestamp_millis()
}

/// Run a DuckDB query in `lake` (relative globs), rows as JSON objects.
fn duck(lake: &Path, sql: &str) -> Vec<serde_json::Map<String, Json>> {
    let script = "import duckdb, json, sys\n\
        con = duckdb.connect()\n\
        cur = con.execute(sys.argv[1])\n\
        cols = [d[0] for d in cur.description]\n\
        print(json.dumps([dict(zip(cols, r)) for r in cur.fetchall()], default=str))\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(sql)
        .current_dir(lake)
        .output()
        .expect("python3 runs (pip install duckdb)");
    assert!(
        out.status.success(),
        "duckdb failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).expect("json from duckdb");
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| r.as_object().expect("object").clone())
        .collect()
}

fn int(r: &serde_json::Map<String, Json>, k: &str) -> i64 {
    r[k].as_i64()
        .or_else(|| r[k].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{k} is not an integer: {:?}", r[k]))
}

fn table_rows(lake: &Path, table: &str) -> usize {
    count_rows(&lake.join(format!("table={table}")))
}

fn raw_rows(lake: &Path) -> usize {
    [
        RecordType::DeviceHeartbeat,
        RecordType::UsageCounters,
        RecordType::DeviceStatus,
    ]
    .iter()
    .map(|t| table_rows(lake, t.name()))
    .sum()
}

/// Records of every device for hour `h` after `t0`: a heartbeat, counters
/// (life count 10 000 × (device + 1) + 100 per hour) and every 6 h a status.
fn hour_records(t0: i64, h: i64) -> Vec<(RecordType, String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..DEVICES {
        let tenant = format!("tenant-{i}");
        let mut hb = samples::device_heartbeat(&serial(i));
        hb.tenant_id = tenant.clone();
        hb.observed_at = t0 + h * HOUR + i as i64 * 1000;
        out.push(encoded(&hb));
        let mut c = samples::usage_counters(&serial(i));
        c.tenant_id = tenant.clone();
        c.observed_at = t0 + h * HOUR + 30 * MINUTE;
        // One marker per device: the sample's second marker (a wrap mark
        // example) would add ledger entries with no usage.
        c.markers.truncate(1);
        c.markers[0].life_count = 10_000 * (i as i64 + 1) + 100 * h;
        out.push(encoded(&c));
        if h % 6 == 0 {
            let mut s = samples::device_status(&serial(i));
            s.tenant_id = tenant;
            s.observed_at = t0 + h * HOUR + 10 * MINUTE;
            out.push(encoded(&s));
        }
    }
    out
}

fn derived_config(h: &Harness) -> ProcessorConfig {
    let mut cfg = h.config();
    cfg.derived.snapshot_interval = Duration::from_millis(100);
    cfg.benchmark.pseudonym_key = Some("benchmark-key-for-tests-00001".into());
    cfg
}

/// Produce hours `from..=to` a few hours at a time, each chunk in the raw
/// lake before the next (records of different topics are read in any
/// order; chunks keep the event-time spread below the allowed lateness).
async fn produce_hours(h: &Harness, t0: i64, from: i64, to: i64, expected_raw: &mut usize) {
    let mut start = from;
    while start <= to {
        let end = (start + 2).min(to);
        let mut recs = Vec::new();
        for hr in start..=end {
            recs.extend(hour_records(t0, hr));
        }
        *expected_raw += recs.len();
        h.produce_records(recs).await;
        let lake = h.lake.path().to_path_buf();
        let want = *expected_raw;
        wait_for("chunk in the raw lake", || raw_rows(&lake) >= want).await;
        start = end + 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_tables_are_produced_while_running_and_survive_a_crash() {
    let h = Harness::new(1);
    let lake = h.lake.path().to_path_buf();
    // Day 1 = 30 March, day 2 = 31 March, day 3 = 1 April: March closes.
    let t0 = day_ms(2025, 3, 30);
    let mut expected_raw = 0;

    // Run 1: day 1 and the start of day 2; day 1 is emitted while running.
    let (_shutdown, _stats, handle) = start(derived_config(&h));
    produce_hours(&h, t0, 0, 27, &mut expected_raw).await;
    wait_for("day 1 KPI rows while running", || {
        table_rows(&lake, TABLE_KPI) >= DEVICES
    })
    .await;
    // Two more hours, then a crash (no drain) while they are in flight.
    let mut recs = hour_records(t0, 28);
    recs.extend(hour_records(t0, 29));
    expected_raw += recs.len();
    h.produce_records(recs).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    handle.abort();
    let _ = handle.await;
    let run1 = duck(
        &lake,
        "SELECT device_id, CAST(day AS VARCHAR) AS day, max(version) AS v \
         FROM read_parquet('table=kpi_device_daily/*/*.parquet') GROUP BY ALL",
    );
    assert!(run1.len() >= DEVICES, "run 1 emitted day 1: {run1:?}");
    assert!(
        table_rows(&lake, TABLE_LEDGER) > 0,
        "run 1 wrote ledger rows"
    );
    let ledger_v1 = int(
        &duck(
            &lake,
            "SELECT max(version) AS v FROM read_parquet('table=usage_ledger/*/*.parquet')",
        )[0],
        "v",
    );

    // Run 2: a heartbeat of day 1 within the allowed lateness (restates
    // day 1 of device 0), then the rest until March is closed.
    let (shutdown, _stats, handle) = start(derived_config(&h));
    let mut hb = samples::device_heartbeat(&serial(0));
    hb.tenant_id = "tenant-0".into();
    hb.observed_at = t0 + 23 * HOUR + 45 * MINUTE;
    h.produce_records(vec![encoded(&hb)]).await;
    expected_raw += 1;
    wait_for(
        "re-read and the restating heartbeat in the raw lake",
        || raw_rows(&lake) >= expected_raw,
    )
    .await;
    produce_hours(&h, t0, 30, 56, &mut expected_raw).await;
    wait_for("benchmark published", || {
        table_rows(&lake, TABLE_BENCHMARK) > 0
    })
    .await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(raw_rows(&lake), expected_raw, "raw lake exactly once");

    // KPI: per device and day, versions 1..=n, each version one content.
    let kpi = duck(
        &lake,
        "SELECT device_id, CAST(day AS VARCHAR) AS day, count(*) AS n, \
         count(DISTINCT version) AS versions, min(version) AS lo, max(version) AS hi, \
         arg_max(records, version) AS records, arg_max(minutes_seen, version) AS seen \
         FROM (SELECT DISTINCT * EXCLUDE (errors_by_class) \
               FROM read_parquet('table=kpi_device_daily/*/*.parquet')) GROUP BY ALL ORDER BY ALL",
    );
    let days: BTreeSet<String> = kpi
        .iter()
        .map(|r| r["day"].as_str().unwrap().into())
        .collect();
    assert!(
        days.contains("2025-03-30") && days.contains("2025-03-31"),
        "{days:?}"
    );
    for r in &kpi {
        assert_eq!(
            int(r, "n"),
            int(r, "versions"),
            "one content per version: {r:?}"
        );
        assert_eq!(int(r, "lo"), 1, "{r:?}");
        assert_eq!(
            int(r, "hi"),
            int(r, "versions"),
            "no gap in versions: {r:?}"
        );
    }
    // Day 1 holds every record of the device-day (none recomputed from a
    // partial replay): 24 heartbeats + 24 counters + 4 statuses, and device
    // 0's restating heartbeat.
    let day1: Vec<_> = kpi.iter().filter(|r| r["day"] == "2025-03-30").collect();
    assert_eq!(day1.len(), DEVICES);
    let mut records: Vec<i64> = day1.iter().map(|r| int(r, "records")).collect();
    records.sort();
    assert_eq!(records, vec![52, 52, 52, 52, 53], "{day1:?}");
    let restated = day1.iter().find(|r| int(r, "records") == 53).unwrap();
    let before = run1
        .iter()
        .find(|r| r["device_id"] == restated["device_id"] && r["day"] == "2025-03-30")
        .map(|r| int(r, "v"))
        .expect("device 0 day 1 in run 1");
    assert!(
        int(restated, "hi") > before,
        "version continued after the restart: {before} -> {restated:?}"
    );

    // Ledger: billed = true usage (100 pages per hour per device over 56
    // hours), counting the latest version of each entry once.
    let billed = duck(
        &lake,
        "SELECT sum(quantity) AS billed, count(*) AS entries, max(version) AS v FROM ( \
           SELECT * FROM read_parquet('table=usage_ledger/*/*.parquet') \
           QUALIFY version = max(version) OVER (PARTITION BY entry_id)) \
         WHERE counter LIKE 'marker%'",
    );
    assert_eq!(
        int(&billed[0], "billed"),
        DEVICES as i64 * 100 * 56,
        "{billed:?}"
    );
    // March and April for each device.
    assert_eq!(int(&billed[0], "entries"), DEVICES as i64 * 2, "{billed:?}");
    assert!(
        int(&billed[0], "v") > ledger_v1,
        "ledger versions continued"
    );
    let dup = duck(
        &lake,
        "SELECT entry_id, version, count(DISTINCT quantity) AS q \
         FROM read_parquet('table=usage_ledger/*/*.parquet') GROUP BY ALL HAVING q > 1",
    );
    assert!(dup.is_empty(), "a ledger version with two figures: {dup:?}");

    // Benchmark: March, 5 tenants of one model in DE.
    let bench = duck(
        &lake,
        "SELECT CAST(month AS VARCHAR) AS month, region, metric, n_tenants, p50 \
         FROM read_parquet('table=benchmark_cohort_monthly/*/*.parquet') \
         WHERE model <> '*' AND region <> '*' ORDER BY metric",
    );
    assert!(!bench.is_empty(), "benchmark rows");
    for r in &bench {
        assert_eq!(r["month"], "2025-03-01", "{r:?}");
        assert_eq!(r["region"], "DE", "{r:?}");
        assert_eq!(int(r, "n_tenants"), DEVICES as i64, "{r:?}");
    }
    assert!(
        bench.iter().any(|r| r["metric"] == "pages"),
        "pages metric: {bench:?}"
    );
    // Nothing came late here.
    assert_eq!(table_rows(&lake, TABLE_LATE), 0);
    // The state file is where the README says.
    assert!(lake
        .join("_state/derived-fleetpulse-processor.json")
        .exists());
    drop(h.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_later_than_the_allowance_goes_to_late_records() {
    let h = Harness::new(1);
    let lake = h.lake.path().to_path_buf();
    let t0 = day_ms(2025, 6, 2);
    let hb_at = |at: i64| {
        let mut hb = samples::device_heartbeat(&serial(1));
        hb.observed_at = at;
        encoded(&hb)
    };
    let (shutdown, _stats, handle) = start(derived_config(&h));
    // Day 1 every hour, then one at 31 h: the watermark (31 h - 5 min) is
    // past end of day 1 + 6 h allowed lateness, so day 1 is final.
    let mut recs: Vec<_> = (0..24).map(|hr| hb_at(t0 + hr * HOUR)).collect();
    recs.push(hb_at(t0 + 31 * HOUR));
    h.produce_records(recs).await;
    wait_for("heartbeats in the raw lake", || {
        table_rows(&lake, "device_heartbeat") >= 25
    })
    .await;
    wait_for("day 1 emitted", || table_rows(&lake, TABLE_KPI) >= 1).await;
    let late = hb_at(t0 + 10 * HOUR);
    let late_id = late.1.clone();
    h.produce_records(vec![late]).await;
    wait_for("late record written", || table_rows(&lake, TABLE_LATE) >= 1).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();

    let rows = duck(
        &lake,
        "SELECT event_id, record_type, late_by_ms, CAST(observed_at AS VARCHAR) AS at \
         FROM read_parquet('table=late_records/*/*.parquet')",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["event_id"], late_id.as_str());
    assert_eq!(rows[0]["record_type"], "device_heartbeat");
    // 31 h - 5 min watermark, day 1 final at 30 h: 55 minutes late.
    assert_eq!(int(&rows[0], "late_by_ms"), 55 * MINUTE, "{rows:?}");
    assert!(rows[0]["at"]
        .as_str()
        .unwrap()
        .starts_with("2025-06-02 10:00:00"));
    // Not counted in the final day...
    let kpi = duck(
        &lake,
        "SELECT max(records) AS r FROM read_parquet('table=kpi_device_daily/*/*.parquet') \
         WHERE day = DATE '2025-06-02'",
    );
    assert_eq!(int(&kpi[0], "r"), 24);
    // ...and still in the raw lake: never dropped.
    let (raw, _) = lake_rows(&lake, "device_heartbeat");
    assert!(raw.iter().any(|r| r.0 == late_id));
    drop(h.cluster);
}
