//! The runner: state round trip, positions across a restart, pending rows.

use std::path::Path;

use fleetpulse_core::codec;
use fleetpulse_core::records::*;
use fleetpulse_core::samples;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value as Json;

use super::*;
use crate::privacy::keys::{resolve_keys, KeyPurpose, KeyRotation};

/// 2026-01-30T00:00:00Z
const D1: i64 = 1_769_731_200_000;
const H: i64 = 3_600_000;

fn config(lake: &Path) -> ProcessorConfig {
    let mut cfg = ProcessorConfig {
        lake_dir: lake.to_path_buf(),
        pseudonym_key: Some("lake-key-0123456789".into()),
        ..ProcessorConfig::default()
    };
    cfg.benchmark.pseudonym_key = Some("bench-key-0123456789".into());
    cfg.benchmark.min_tenants = 2;
    cfg
}

/// Decoded records of `tenants` tenants (one device each) every hour from
/// `from` to `to` hours after D1: status, counters, heartbeat.
fn records(tenants: usize, from: i64, to: i64) -> Vec<(RecordType, Value)> {
    let mut out = Vec::new();
    for h in from..to {
        for t in 0..tenants {
            let dev = format!("SN-RAW-{t}");
            let at = D1 + h * H + t as i64 * 1000;
            let mut s = samples::device_status(&dev);
            s.tenant_id = format!("tenant-{t}");
            s.observed_at = at;
            s.hr_printer_status = Some(if h % 3 == 0 {
                HrPrinterStatus::Printing
            } else {
                HrPrinterStatus::Idle
            });
            let mut c = samples::usage_counters(&dev);
            c.tenant_id = format!("tenant-{t}");
            c.observed_at = at + 60_000;
            c.markers[0].life_count = 1_000 * (t as i64 + 1) + 37 * h;
            let mut hb = samples::device_heartbeat(&dev);
            hb.tenant_id = format!("tenant-{t}");
            hb.observed_at = at + 120_000;
            for bytes in [
                codec::encode(&s).unwrap(),
                codec::encode(&c).unwrap(),
                codec::encode(&hb).unwrap(),
            ] {
                out.push(codec::decode_value(&bytes).unwrap());
            }
        }
    }
    out
}

fn keys() -> (PurposeKey, Option<BenchmarkKey>) {
    (
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

fn feed(op: &mut DerivedOperator, recs: &[(RecordType, Value)]) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, (t, v)) in recs.iter().enumerate() {
        out.extend(op.on_value(*t, v));
        if i % 50 == 49 {
            out.extend(op.advance());
        }
    }
    out.extend(op.advance());
    out
}

#[test]
fn saved_and_restored_state_continues_exactly_like_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // Two days of January and the first of February: January closes.
    let first = records(3, 0, 40);
    let second = records(3, 40, 80);
    let (lk, bk) = keys();
    let mut whole = DerivedOperator::new(&cfg, lk.clone(), bk.clone());
    let mut expected = feed(&mut whole, &first);
    expected.extend(feed(&mut whole, &second));

    let mut a = DerivedOperator::new(&cfg, lk.clone(), bk.clone());
    let mut got = feed(&mut a, &first);
    let bytes = serde_json::to_vec(&a.state()).unwrap();
    drop(a);
    let state: DerivedState = serde_json::from_slice(&bytes).unwrap();
    let mut b = DerivedOperator::restore(&cfg, lk, bk, state);
    got.extend(feed(&mut b, &second));

    assert_eq!(got, expected);
    let count = |f: fn(&Output) -> bool| expected.iter().filter(|o| f(o)).count();
    assert!(count(|o| matches!(o, Output::Kpi(_))) > 0);
    assert!(count(|o| matches!(o, Output::Ledger(_))) > 0);
    assert!(
        count(|o| matches!(o, Output::Benchmark(_))) > 0,
        "January's benchmark is published after the restore"
    );
}

fn rows(lake: &Path, table: &str) -> usize {
    let Ok(dates) = std::fs::read_dir(lake.join(format!("table={table}"))) else {
        return 0;
    };
    let mut n = 0;
    for d in dates.flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "parquet") {
                let r = ParquetRecordBatchReaderBuilder::try_new(
                    std::fs::File::open(f.path()).unwrap(),
                )
                .unwrap()
                .build()
                .unwrap();
                n += r.map(|b| b.unwrap().num_rows()).sum::<usize>();
            }
        }
    }
    n
}

fn heartbeat(at: i64) -> (RecordType, Value) {
    let mut hb = samples::device_heartbeat("SN-RAW-LATE");
    hb.observed_at = at;
    codec::decode_value(&codec::encode(&hb).unwrap()).unwrap()
}

#[test]
fn records_below_the_saved_position_are_applied_once_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let open = || {
        let (lk, bk) = resolve_keys(&cfg).unwrap();
        DerivedRunner::open(&cfg, lk, bk).unwrap()
    };
    let apply = |r: &mut DerivedRunner, offset: i64, rec: &(RecordType, Value)| {
        r.on_record("fp.device_heartbeat", 0, offset, rec.0, &rec.1)
    };
    // Day 1 hourly, then 31 h: day 1 is final; then two late records.
    let mut recs: Vec<_> = (0..24).map(|h| heartbeat(D1 + h * H)).collect();
    recs.push(heartbeat(D1 + 31 * H));
    recs.push(heartbeat(D1 + 10 * H));
    recs.push(heartbeat(D1 + 11 * H));

    let mut r = open();
    for (i, rec) in recs.iter().take(25).enumerate() {
        apply(&mut r, i as i64, rec);
    }
    r.checkpoint().unwrap();
    apply(&mut r, 25, &recs[25]);
    r.checkpoint().unwrap();
    assert_eq!(rows(dir.path(), "kpi_device_daily"), 1);
    assert_eq!(rows(dir.path(), "late_records"), 1);
    // Crash after the last checkpoint, with offset 26 applied but not saved.
    apply(&mut r, 26, &recs[26]);
    drop(r);

    // The consumer replays from an older committed offset: 20..=26.
    let mut r = open();
    for (i, rec) in recs.iter().enumerate().skip(20) {
        apply(&mut r, i as i64, rec);
    }
    r.checkpoint().unwrap();
    assert_eq!(
        rows(dir.path(), "late_records"),
        2,
        "offset 25 (saved) skipped, offset 26 (lost in the crash) applied once"
    );
    assert_eq!(
        rows(dir.path(), "kpi_device_daily"),
        1,
        "day 1 not emitted again"
    );
    // And once more: nothing new.
    drop(r);
    let mut r = open();
    for (i, rec) in recs.iter().enumerate() {
        apply(&mut r, i as i64, rec);
    }
    r.checkpoint().unwrap();
    assert_eq!(rows(dir.path(), "late_records"), 2);
}

#[test]
fn rows_saved_in_the_snapshot_are_written_at_start_if_the_crash_came_first() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (lk, bk) = resolve_keys(&cfg).unwrap();
    let mut r = DerivedRunner::open(&cfg, lk.clone(), bk.clone()).unwrap();
    for (i, h) in [0, 5, 31].into_iter().enumerate() {
        let (t, v) = heartbeat(D1 + h * H);
        r.on_record("fp.device_heartbeat", 0, i as i64, t, &v);
    }
    r.checkpoint().unwrap();
    let written = rows(dir.path(), "kpi_device_daily");
    assert_eq!(written, 1);
    // Simulate a crash between the snapshot and the table write: remove the
    // files and put the rows back as pending in the saved state.
    std::fs::remove_dir_all(dir.path().join("table=kpi_device_daily")).unwrap();
    let path = state_file(dir.path(), &cfg.group_id);
    let mut snap: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let kpi_rows: Vec<Json> = vec![serde_json::to_value(Output::Kpi(crate::kpi::KpiDailyRow {
        tenant_id: "tenant-a".into(),
        device_id: "d".into(),
        day: chrono::NaiveDate::from_ymd_opt(2026, 1, 30).unwrap(),
        model: None,
        region: None,
        minutes_seen: 2,
        minutes_up: 2,
        minutes_printing: 0,
        uptime_pct: 0.1,
        utilisation_pct: Some(0.0),
        pages_counted: 0,
        media_length_m: 0.0,
        job_pages: 0,
        job_area_m2: 0.0,
        toner_g: 0.0,
        ink_ml: 0.0,
        agent_ml: 0.0,
        toner_used_pct: 0.0,
        ink_used_pct: 0.0,
        jobs_completed: 0,
        jobs_failed: 0,
        errors_by_class: Default::default(),
        packing_density_pct: None,
        recycled_material_pct: None,
        records: 2,
        version: 1,
    }))
    .unwrap()];
    snap["pending"] = Json::Array(kpi_rows);
    std::fs::write(&path, serde_json::to_vec(&snap).unwrap()).unwrap();
    let _r = DerivedRunner::open(&cfg, lk, bk).unwrap();
    assert_eq!(
        rows(dir.path(), "kpi_device_daily"),
        1,
        "pending rows written at start"
    );
}

#[test]
fn a_state_of_another_group_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let (lk, bk) = resolve_keys(&cfg).unwrap();
    let mut r = DerivedRunner::open(&cfg, lk.clone(), bk.clone()).unwrap();
    let (t, v) = heartbeat(D1);
    r.on_record("fp.device_heartbeat", 0, 0, t, &v);
    r.checkpoint().unwrap();
    let path = state_file(dir.path(), &cfg.group_id);
    std::fs::copy(&path, state_file(dir.path(), "other")).unwrap();
    cfg.group_id = "other".into();
    let err = DerivedRunner::open(&cfg, lk, bk).unwrap_err().to_string();
    assert!(err.contains("belongs to group"), "{err}");
}
