use std::process::Command;

use fleetpulse_core::records::*;
use fleetpulse_core::samples;

use super::*;
use crate::privacy::keys::{KeyPurpose, KeyRotation};

/// 2026-01-01T00:00:00Z
const D1: i64 = 1_767_225_600_000;
const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

fn operator() -> DerivedOperator {
    let cfg = ProcessorConfig::default();
    DerivedOperator::new(
        &cfg,
        PurposeKey::new(
            KeyPurpose::Lake,
            b"lake-key-0123456789",
            "v1",
            KeyRotation::Never,
        ),
        Some(BenchmarkKey::new(
            b"bench-key-0123456789",
            "b1",
            KeyRotation::Monthly,
        )),
    )
}

/// Six tenants with one device each, three days of January: status every
/// 10 minutes (printing in the morning), counters every hour.
fn fleet() -> Vec<KpiRecord> {
    let mut out = Vec::new();
    for t in 0..6 {
        let device = format!("SN-RAW-{t}");
        let mut count = 10_000 * t as i64;
        for i in 0..(3 * 24 * 6) {
            let at = D1 + i * 600_000;
            let mut s = samples::device_status(&device);
            s.tenant_id = format!("tenant-{t}");
            s.event_id = format!("s-{t}-{i}");
            s.observed_at = at;
            s.hr_device_status = Some(HrDeviceStatus::Running);
            s.hr_printer_status = Some(if (at % DAY) < (t as i64 + 1) * H {
                HrPrinterStatus::Printing
            } else {
                HrPrinterStatus::Idle
            });
            out.push(KpiRecord::Status(s));
            if i % 6 == 0 {
                count += 100 * (t as i64 + 1);
                let mut c = samples::usage_counters(&device);
                c.tenant_id = format!("tenant-{t}");
                c.event_id = format!("c-{t}-{i}");
                c.observed_at = at;
                c.markers[0].life_count = count;
                out.push(KpiRecord::Counters(c));
            }
        }
    }
    // Devices report side by side: interleave by event time.
    out.sort_by_key(|r| match r {
        KpiRecord::Status(s) => s.observed_at,
        KpiRecord::Counters(c) => c.observed_at,
        _ => 0,
    });
    out
}

fn run(op: &mut DerivedOperator, records: Vec<KpiRecord>) -> Vec<Output> {
    let mut out = Vec::new();
    for r in records {
        out.extend(op.on_record(r));
        out.extend(op.advance());
    }
    out
}

#[test]
fn all_four_tables_come_out_without_raw_ids() {
    let mut op = operator();
    let mut out = run(&mut op, fleet());
    // A status of January 1st arriving on January 3rd: late.
    let mut late = samples::device_status("SN-RAW-0");
    late.event_id = "late-1".into();
    late.observed_at = D1 + 2 * H;
    out.extend(op.on_record(KpiRecord::Status(late)));
    out.extend(op.on_watermark(D1 + 40 * DAY));

    let kpi: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(r) => Some(r),
            _ => None,
        })
        .collect();
    let late: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Late(r) => Some(r),
            _ => None,
        })
        .collect();
    let bench: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Benchmark(r) => Some(r),
            _ => None,
        })
        .collect();
    let ledger: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Ledger(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(kpi.len(), 18, "6 devices x 3 days");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].event_id, "late-1");
    // Device 2 printed 3 hours a day: 18 of its 144 ten-minute samples, each
    // vouching for one minute (`kpi.sample_interval` = 60 s).
    let d2 = kpi
        .iter()
        .find(|r| r.day == NaiveDate::from_ymd_opt(2026, 1, 2).unwrap() && r.minutes_printing == 18)
        .expect("device 2, day 2");
    assert_eq!(d2.minutes_seen, 144);
    // Ledger: the latest row per entry is the January total.
    let mut latest: BTreeMap<&str, &LedgerRow> = BTreeMap::new();
    for r in &ledger {
        latest.insert(&r.entry_id, r);
    }
    let total: i64 = latest.values().map(|r| r.quantity).sum();
    // 72 readings per device, 71 steps of 100*(t+1) each.
    assert_eq!(total, 71 * 100 * 21);
    // Benchmark: 6 tenants in M × DE, published with margins.
    let cell = bench
        .iter()
        .find(|r| r.metric == "pages" && r.region == "DE" && r.model != crate::benchmark::ALL)
        .unwrap();
    assert_eq!((cell.n_devices, cell.n_tenants), (6, 6));
    assert_eq!(cell.key_version, "b1@2026-01");
    let text = format!("{out:?}");
    assert!(!text.contains("SN-RAW"), "a raw device id leaked");
    // The derived tables use the lake's pseudonyms: they join with the raw
    // lake tables.
    let tr = crate::Transformer::new(fleetpulse_core::pseudonym::Pseudonymizer::new(
        b"lake-key-0123456789",
        "v1",
    ))
    .unwrap();
    let s = samples::device_status("SN-RAW-0");
    let (t, v) =
        fleetpulse_core::codec::decode_value(&fleetpulse_core::codec::encode(&s).unwrap()).unwrap();
    let lake_id = tr.transform(t, &v).unwrap()["device_id"].clone();
    assert!(kpi
        .iter()
        .any(|r| Json::String(r.device_id.clone()) == lake_id));
    assert!(!format!("{bench:?}").contains(lake_id.as_str().unwrap()));
}

#[test]
fn tables_read_back_with_duckdb() {
    let mut op = operator();
    let mut out = run(&mut op, fleet());
    let mut late = samples::device_heartbeat("SN-RAW-0");
    late.event_id = "late-1".into();
    late.observed_at = D1 + 2 * H;
    out.extend(op.on_record(KpiRecord::Heartbeat(late)));
    out.extend(op.on_watermark(D1 + 40 * DAY));
    let dir = tempfile::tempdir().unwrap();
    let files = write_tables(dir.path(), &out).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    // Writing the same rows again writes nothing (same names).
    assert!(write_tables(dir.path(), &out).unwrap().is_empty());

    let script = r#"
import duckdb, json, sys
lake = sys.argv[1]
def q(sql):
    return duckdb.sql(sql.replace('LAKE', lake)).fetchall()
out = {
  "kpi": q("SELECT count(*), sum(minutes_printing) FROM (SELECT * FROM read_parquet('LAKE/table=kpi_device_daily/*/*.parquet') QUALIFY version = max(version) OVER (PARTITION BY device_id, day))")[0],
  "kpi_type": q("SELECT typeof(day), typeof(errors_by_class) FROM read_parquet('LAKE/table=kpi_device_daily/*/*.parquet') LIMIT 1")[0],
  "late": q("SELECT count(*), min(event_id) FROM read_parquet('LAKE/table=late_records/*/*.parquet')")[0],
  "ledger": q("SELECT sum(quantity) FROM (SELECT * FROM read_parquet('LAKE/table=usage_ledger/*/*.parquet') QUALIFY version = max(version) OVER (PARTITION BY entry_id))")[0],
  "bench": q("SELECT n_tenants, key_version FROM read_parquet('LAKE/table=benchmark_cohort_monthly/*/*.parquet') WHERE metric = 'pages' AND model <> '*' AND region = 'DE'")[0],
}
print(json.dumps(out, default=str))
"#;
    let res = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: Json = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(v["kpi"], json!([18, 3 * 6 * 21]));
    assert_eq!(v["kpi_type"][0], "DATE");
    assert_eq!(v["late"], json!([1, "late-1"]));
    assert_eq!(v["ledger"][0], json!(71 * 100 * 21));
    assert_eq!(v["bench"], json!([6, "b1@2026-01"]));
}

#[test]
fn decoded_avro_values_of_every_type_are_taken() {
    use fleetpulse_core::codec;
    let mut op = operator();
    let at = samples::device_status("SN-X").observed_at;
    let values = [
        codec::encode(&samples::device_status("SN-X")).unwrap(),
        codec::encode(&samples::device_heartbeat("SN-X")).unwrap(),
        codec::encode(&samples::usage_counters("SN-X")).unwrap(),
        codec::encode(&samples::alert_event("SN-X")).unwrap(),
        codec::encode(&samples::job_record("SN-X")).unwrap(),
        codec::encode(&samples::connector_heartbeat("conn-1")).unwrap(),
    ];
    let mut out = Vec::new();
    for bytes in values {
        let (t, v) = codec::decode_value(&bytes).unwrap();
        out.extend(op.on_value(t, &v));
    }
    out.extend(op.on_watermark(at + 2 * DAY));
    let kpi: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Kpi(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(kpi.len(), 1, "{out:?}");
    let r = kpi[0];
    assert_eq!(
        r.records, 5,
        "the connector heartbeat is not a device record"
    );
    assert_eq!(r.errors_by_class.get("jam"), Some(&1));
    assert_eq!(r.jobs_completed, 1);
    assert_eq!(r.packing_density_pct, Some(11.2));
    assert_eq!(r.region.as_deref(), Some("DE"));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Ledger(l) if l.counter == "marker1.impressions")));
    assert!(out.iter().any(|o| matches!(o, Output::Ledger(l) if l.counter == "printhead.PH-1.agent" && l.unit == "microliters")));
}
