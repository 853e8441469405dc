use fleetpulse_core::records::*;
use fleetpulse_core::samples;

use super::*;

/// 2026-01-01T00:00:00Z
const D1: i64 = 1_767_225_600_000;
const H: i64 = 3_600_000;

fn hb(id: &str, at: i64) -> KpiRecord {
    let mut r = samples::device_heartbeat("SN1");
    r.event_id = id.into();
    r.observed_at = at;
    KpiRecord::Heartbeat(r)
}

fn status(id: &str, at: i64, printing: bool, down: bool) -> KpiRecord {
    let mut r = samples::device_status("SN1");
    r.event_id = id.into();
    r.observed_at = at;
    r.hr_printer_status = Some(if printing {
        HrPrinterStatus::Printing
    } else {
        HrPrinterStatus::Idle
    });
    r.hr_device_status = Some(if down {
        HrDeviceStatus::Down
    } else {
        HrDeviceStatus::Running
    });
    KpiRecord::Status(r)
}

fn counters(id: &str, at: i64, value: i64) -> KpiRecord {
    let mut r = samples::usage_counters("SN1");
    r.event_id = id.into();
    r.observed_at = at;
    r.markers[0].life_count = value;
    KpiRecord::Counters(r)
}

fn job(id: &str, job_id: &str, at: i64, status: JobCompletion, pages: i64) -> KpiRecord {
    let mut r = samples::job_record("SN1");
    r.event_id = id.into();
    r.job_id = job_id.into();
    r.observed_at = at;
    r.completion_status = status;
    r.kind = JobKind::Print2d;
    r.pages = Some(pages);
    r.copies = Some(2);
    r.media_area_m2 = Some(0.5);
    KpiRecord::Job(r)
}

fn dailies(out: Vec<KpiOutput>) -> Vec<KpiDailyRow> {
    out.into_iter()
        .filter_map(|o| match o {
            KpiOutput::Daily(r) => Some(r),
            KpiOutput::Late(_) => None,
        })
        .collect()
}

/// Twelve hours of heartbeats every minute, one printing hour, one down
/// quarter hour, counters, jobs and an alert.
fn day_one() -> Vec<KpiRecord> {
    let mut v = Vec::new();
    for m in 0..720 {
        v.push(hb(&format!("hb{m}"), D1 + 6 * H + m * 60_000));
    }
    for m in 0..60 {
        v.push(status(
            &format!("p{m}"),
            D1 + 8 * H + m * 60_000,
            true,
            false,
        ));
    }
    for m in 0..15 {
        v.push(status(
            &format!("d{m}"),
            D1 + 12 * H + m * 60_000,
            false,
            true,
        ));
    }
    v.push(counters("c1", D1 + 7 * H, 1000));
    v.push(counters("c2", D1 + 9 * H, 1100));
    v.push(job("j1", "job-1", D1 + 9 * H, JobCompletion::Completed, 5));
    v.push(job("j2", "job-2", D1 + 10 * H, JobCompletion::Running, 7));
    v.push(job("j3", "job-2", D1 + 11 * H, JobCompletion::Failed, 7));
    let mut a = samples::alert_event("SN1");
    a.event_id = "a1".into();
    a.observed_at = D1 + 9 * H;
    v.push(KpiRecord::Alert(a));
    v
}

#[test]
fn a_day_is_emitted_once_the_watermark_passes_its_end() {
    let mut op = KpiOperator::new(KpiConfig::default());
    for r in day_one() {
        assert!(op.on_record("dev-p", r).is_empty());
    }
    assert!(op.on_watermark(D1 + 23 * H).is_empty(), "day still open");
    let rows = dailies(op.on_watermark(D1 + 24 * H));
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.day, r.version),
        (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 1)
    );
    assert_eq!(r.device_id, "dev-p");
    assert_eq!(
        (r.minutes_seen, r.minutes_up, r.minutes_printing),
        (720, 705, 60)
    );
    assert!(
        (r.uptime_pct - 705.0 / 14.4).abs() < 1e-9,
        "{}",
        r.uptime_pct
    );
    assert!((r.utilisation_pct.unwrap() - 60.0 / 7.2).abs() < 1e-9);
    assert_eq!(r.pages_counted, 100);
    assert_eq!((r.jobs_completed, r.jobs_failed, r.job_pages), (1, 1, 10));
    assert_eq!(r.job_area_m2, 0.5);
    assert_eq!(r.errors_by_class.get("jam"), Some(&1));
    assert_eq!(r.model.as_deref(), Some("HP Color LaserJet M452nw"));
    assert_eq!(r.region.as_deref(), Some("DE"));
    // 54 % left of the toner cartridge all day: nothing used.
    assert_eq!(r.toner_used_pct, 0.0);
    assert!(
        op.on_watermark(D1 + 25 * H).is_empty(),
        "no change, no new version"
    );
}

#[test]
fn arrival_order_and_duplicates_do_not_change_the_row() {
    let mut a = KpiOperator::new(KpiConfig::default());
    let mut b = KpiOperator::new(KpiConfig::default());
    let records = day_one();
    for r in &records {
        a.on_record("dev-p", r.clone());
    }
    let mut shuffled = records.clone();
    shuffled.reverse();
    shuffled.extend(records.iter().step_by(3).cloned());
    for r in shuffled {
        b.on_record("dev-p", r);
    }
    assert_eq!(a.on_watermark(D1 + 24 * H), b.on_watermark(D1 + 24 * H));
}

#[test]
fn late_data_within_the_allowance_restates_the_day_with_a_new_version() {
    let mut op = KpiOperator::new(KpiConfig::default()); // 6 h lateness
    for r in day_one() {
        op.on_record("dev-p", r);
    }
    let v1 = dailies(op.on_watermark(D1 + 24 * H));
    assert_eq!(v1[0].jobs_completed, 1);
    // A job finished at 22:00 arrives at 03:00 the next day.
    assert!(op
        .on_record(
            "dev-p",
            job("j9", "job-9", D1 + 22 * H, JobCompletion::Completed, 3)
        )
        .is_empty());
    // A duplicate is ignored.
    op.on_record(
        "dev-p",
        job("j9", "job-9", D1 + 22 * H, JobCompletion::Completed, 3),
    );
    let v2 = dailies(op.on_watermark(D1 + 27 * H));
    assert_eq!(v2.len(), 1);
    assert_eq!(
        (v2[0].version, v2[0].jobs_completed, v2[0].job_pages),
        (2, 2, 16)
    );
    // A redelivered heartbeat changes nothing either.
    op.on_record("dev-p", hb("hb0", D1 + 6 * H));
    assert!(dailies(op.on_watermark(D1 + 28 * H)).is_empty());
    // A late counter reading moves usage: restated again.
    op.on_record("dev-p", counters("c0", D1 + 6 * H, 900));
    let v3 = dailies(op.on_watermark(D1 + 29 * H));
    assert_eq!((v3[0].version, v3[0].pages_counted), (3, 200));
}

#[test]
fn records_after_the_allowance_go_to_late_records_and_state_is_freed() {
    let mut op = KpiOperator::new(KpiConfig::default());
    for r in day_one() {
        op.on_record("dev-p", r);
    }
    op.on_record("dev-p", hb("next-day", D1 + 25 * H));
    assert_eq!(dailies(op.on_watermark(D1 + 30 * H)).len(), 1);
    assert_eq!(op.open_days(), 1, "day one is final and dropped");
    let out = op.on_record(
        "dev-p",
        job("jl", "job-l", D1 + 23 * H, JobCompletion::Completed, 1),
    );
    let KpiOutput::Late(late) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(late.event_id, "jl");
    assert_eq!(late.record_type, "job_record");
    assert_eq!(late.device_id, "dev-p");
    assert_eq!(late.late_by_ms, 0);
    let out = op.on_record("dev-p", hb("very-late", D1 + H));
    assert!(matches!(&out[0], KpiOutput::Late(l) if l.late_by_ms == 0));
    op.on_watermark(D1 + 31 * H);
    let out = op.on_record("dev-p", hb("later", D1 + 2 * H));
    assert!(matches!(&out[0], KpiOutput::Late(l) if l.late_by_ms == H));
    // The late job never reached a daily row.
    assert!(dailies(op.on_watermark(D1 + 60 * H))
        .iter()
        .all(|r| r.jobs_completed == 0));
}

#[test]
fn counters_across_days_wraps_and_consumables() {
    let mut op = KpiOperator::new(KpiConfig::default());
    op.on_record("dev-p", counters("c1", D1 + 20 * H, 999_950));
    op.on_record("dev-p", counters("c2", D1 + 26 * H, 30)); // wrapped at 10^6
    let mut s1 = samples::device_status("SN1");
    s1.event_id = "s1".into();
    s1.observed_at = D1 + 25 * H;
    let mut s2 = s1.clone();
    s2.event_id = "s2".into();
    s2.observed_at = D1 + 27 * H;
    s2.supplies[0].level = Some(50); // 54 -> 50 of 100
    s2.printheads[0].agent_used_ml = Some(14.0); // +1.5 ml
    op.on_record("dev-p", KpiRecord::Status(s1));
    op.on_record("dev-p", KpiRecord::Status(s2));
    let rows = dailies(op.on_watermark(D1 + 48 * H));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].pages_counted, 0);
    assert_eq!(rows[1].pages_counted, 80);
    assert!(
        (rows[1].toner_used_pct - 4.0).abs() < 1e-9,
        "{}",
        rows[1].toner_used_pct
    );
    assert!((rows[1].agent_ml - 1.5).abs() < 1e-9);
}

#[test]
fn three_d_jobs_give_packing_density_and_recycling() {
    let mut op = KpiOperator::new(KpiConfig::default());
    let mut j = samples::job_record("SN1");
    j.event_id = "3d".into();
    j.observed_at = D1 + H;
    op.on_record("dev-p", KpiRecord::Job(j.clone()));
    j.event_id = "3d-b".into();
    j.job_id = "job-43".into();
    j.packing_density_pct = Some(13.2);
    j.recycled_material_pct = Some(70.0);
    op.on_record("dev-p", KpiRecord::Job(j));
    let r = &dailies(op.on_watermark(D1 + 24 * H))[0];
    assert!((r.packing_density_pct.unwrap() - 12.2).abs() < 1e-9);
    assert_eq!(r.recycled_material_pct, Some(75.0));
}

#[test]
fn config_is_validated_with_the_key_named() {
    KpiConfig::default().validate().unwrap();
    let c = KpiConfig {
        sample_interval: Duration::ZERO,
        ..KpiConfig::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("kpi.sample_interval"));
    let c = KpiConfig {
        allowed_lateness: Duration::from_secs(40 * 86_400),
        ..KpiConfig::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("kpi.allowed_lateness"));
}
