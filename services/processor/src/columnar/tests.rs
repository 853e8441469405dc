//! The columnar path against the generic one (value tree -> JSON -> arrow-json).

use std::sync::Arc;

use arrow_array::RecordBatch;
use fleetpulse_core::pseudonym::Pseudonymizer;
use fleetpulse_core::records::Record;
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::{codec, samples};
use serde_json::Value as Json;

use super::*;
use crate::privacy::{Transformer, COL_OFFSET, COL_PARTITION};

const KEY: &[u8] = b"0123456789abcdef-key";

fn transformer() -> Transformer {
    Transformer::new(Pseudonymizer::new(KEY, "v1")).unwrap()
}

fn enc<R: Record>(r: &R) -> Vec<u8> {
    codec::encode(r).unwrap()
}

/// Every sample, and variants with nulls, empty arrays, odd text and
/// non-finite floats.
fn payloads() -> Vec<Vec<u8>> {
    let mut out = vec![
        enc(&samples::device_heartbeat("SER-1")),
        enc(&samples::device_status("SER-1")),
        enc(&samples::usage_counters("SER-1")),
        enc(&samples::alert_event("SER-1")),
        enc(&samples::job_record("SER-1")),
        enc(&samples::connector_heartbeat("conn-1")),
        enc(&samples::maintenance_alert("SER-1")),
    ];
    let mut hb = samples::device_heartbeat("SER-2");
    hb.ip_address = None;
    hb.sys_uptime_ticks = None;
    out.push(enc(&hb));
    hb.ip_address = Some("printer.local".into());
    out.push(enc(&hb));
    hb.ip_address = Some("10.1.2.0/24".into());
    out.push(enc(&hb));

    let mut st = samples::device_status("SER-3");
    st.vendor = None;
    st.sys_location = Some("Room 101".into());
    st.ip_address = Some("fe80::1".into());
    st.hr_device_status = None;
    st.detected_errors.clear();
    st.supplies[0].percent = Some(f64::NAN);
    st.supplies[1].percent = Some(f64::INFINITY);
    st.input_trays.clear();
    st.printheads[0].installed_at = None;
    st.build_unit = None;
    out.push(enc(&st));
    let mut st = samples::device_status("SER-4");
    st.sys_location = Some("Lyon, France".into());
    st.supplies.clear();
    st.printheads.clear();
    st.sys_name = None;
    st.sys_location = None;
    out.push(enc(&st));
    let mut st = samples::device_status("SER-5 ünïcode ✓");
    st.sys_location = Some("Zürich, Schweiz".into());
    st.model = Some(String::new());
    out.push(enc(&st));

    let mut job = samples::job_record("SER-6");
    job.user_name = Some("alice".into());
    job.created_at = None;
    job.bounding_box = None;
    job.parts[0].bounding_box = None;
    job.parts.push(samples::job_record("x").parts[0].clone());
    out.push(enc(&job));
    let mut job = samples::job_record("SER-7");
    job.parts.clear();
    job.ended_at = None;
    out.push(enc(&job));

    let mut uc = samples::usage_counters("SER-8");
    uc.markers.push(uc.markers[0].clone());
    uc.markers[1].power_on_count = None;
    uc.markers[1].life_count = i64::MAX;
    out.push(enc(&uc));
    uc.markers.clear();
    out.push(enc(&uc));

    // An event id in upper case: both paths store the canonical form.
    let mut upper = enc(&samples::device_heartbeat("SER-9"));
    for b in &mut upper[11..47] {
        b.make_ascii_uppercase();
    }
    out.push(upper);
    out
}

/// The generic path's batch of one table.
fn generic(tr: &Transformer, t: RecordType, rows: &[(i64, &[u8])]) -> RecordBatch {
    let json: Vec<serde_json::Map<String, Json>> = rows
        .iter()
        .map(|(offset, payload)| {
            let (found, v) = codec::decode_value(payload).unwrap();
            assert_eq!(found, t);
            let mut row = tr.transform(t, &v).unwrap();
            row.insert(COL_PARTITION.into(), Json::from(7));
            row.insert(COL_OFFSET.into(), Json::from(*offset));
            row
        })
        .collect();
    crate::arrow_schema::record_batch(&tr.arrow_schema(t).unwrap(), &json).unwrap()
}

fn columnar(tr: &Transformer, t: RecordType, rows: &[(i64, &[u8])]) -> RecordBatch {
    let plan = Arc::new(ColumnarPlan::new(t, tr.arrow_schema(t).unwrap()).unwrap());
    let mut table = ColumnarTable::new(plan.clone(), Pseudonymizer::new(KEY, "v1")).unwrap();
    let mut scratch = Scratch::default();
    for (offset, payload) in rows {
        let datum = &payload[10..];
        plan.decode(datum, &mut scratch).unwrap();
        table.append(&scratch, datum, 7, *offset);
    }
    assert_eq!(table.len(), rows.len());
    table.finish().unwrap()
}

#[test]
fn every_sample_gives_the_same_batch_both_ways() {
    let tr = transformer();
    let payloads = payloads();
    let mut covered = std::collections::BTreeSet::new();
    for t in RecordType::ALL {
        let rows: Vec<(i64, &[u8])> = payloads
            .iter()
            .filter(|p| codec::peek_type(p).unwrap() == t)
            .enumerate()
            .map(|(i, p)| (100 + i as i64, p.as_slice()))
            .collect();
        assert!(!rows.is_empty(), "{t}: no sample");
        covered.insert(t);
        let a = generic(&tr, t, &rows);
        let b = columnar(&tr, t, &rows);
        assert_eq!(a.schema(), b.schema(), "{t}");
        assert_eq!(a.num_rows(), b.num_rows(), "{t}");
        for (i, f) in a.schema().fields().iter().enumerate() {
            assert_eq!(a.column(i), b.column(i), "{t}: column {}", f.name());
        }
        // And the same Parquet rows once written and read back.
        let read = |batch: &RecordBatch| -> Vec<RecordBatch> {
            let props =
                crate::lake::LakeWriter::local("/nonexistent").writer_properties("t", 7, 0, 1);
            let file = tempfile::tempfile().unwrap();
            let file = crate::lake::write_parquet(file, batch, props).unwrap();
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(read(&a), read(&b), "{t}: Parquet rows differ");
    }
    assert_eq!(covered.len(), RecordType::ALL.len());
}

#[test]
fn pseudonyms_and_drops_as_the_contract_says() {
    let tr = transformer();
    let p = enc(&samples::device_status("SERIAL-XYZ-1"));
    let b = columnar(&tr, RecordType::DeviceStatus, &[(1, &p)]);
    let col = |n: &str| b.column_by_name(n).cloned();
    assert!(
        col("sys_name").is_none() && col("sys_contact").is_none() && col("mac_address").is_none()
    );
    let ids = col("device_id").unwrap();
    let ids = ids
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    assert_eq!(
        ids.value(0),
        Pseudonymizer::new(KEY, "v1").pseudonymize("device_id", "SERIAL-XYZ-1")
    );
    let debug = format!("{b:?}");
    assert!(!debug.contains("SERIAL-XYZ-1") && !debug.contains("Jane Admin"));
}

#[test]
fn bad_datums_are_rejected_like_the_generic_path() {
    let plan = ColumnarPlan::new(
        RecordType::DeviceHeartbeat,
        transformer()
            .arrow_schema(RecordType::DeviceHeartbeat)
            .unwrap(),
    )
    .unwrap();
    let good = enc(&samples::device_heartbeat("SER-1"));
    let mut scratch = Scratch::default();
    let info = plan.decode(&good[10..], &mut scratch).unwrap();
    assert_eq!(info.observed_at, Some(1_763_700_000_000));
    assert_eq!(scratch.connector_id(&good[10..]), Some("conn-1"));

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("truncated", good[..good.len() - 3].to_vec()));
    let mut trailing = good.clone();
    trailing.push(0);
    cases.push(("trailing", trailing));
    let mut bad_uuid = good.clone();
    bad_uuid[11] = b'z';
    cases.push(("uuid", bad_uuid));
    let mut bad_utf8 = good.clone();
    bad_utf8[48] = 0xff; // inside tenant_id
    cases.push(("utf8", bad_utf8));
    // protocol enum index: rebuild with an index past the symbols.
    let hb = samples::device_heartbeat("SER-1");
    let v = apache_avro::to_value(&hb).unwrap();
    if let apache_avro::types::Value::Record(mut fields) = v {
        for (n, v) in &mut fields {
            if n == "protocol" {
                *v = apache_avro::types::Value::Enum(9, "x".into());
            }
        }
        let schema = RecordType::DeviceHeartbeat.schema();
        // Write the datum by hand: the encoder would refuse the index.
        let mut ok = fields.clone();
        for (n, v) in &mut ok {
            if n == "protocol" {
                *v = apache_avro::types::Value::Enum(2, "http".into());
            }
        }
        let datum =
            apache_avro::to_avro_datum(schema, apache_avro::types::Value::Record(ok)).unwrap();
        // Find the enum index byte (zigzag 2 = 4) after observed_at/schema_version.
        let mut bad_enum = good[..10].to_vec();
        let mut d = datum.clone();
        let at = d.iter().rposition(|b| *b == 4).unwrap();
        d[at] = 18; // zigzag 9
        bad_enum.extend_from_slice(&d);
        cases.push(("enum", bad_enum));
    }
    for (name, payload) in cases {
        let generic = codec::decode_value(&payload);
        assert!(generic.is_err(), "{name}: the generic path accepts it");
        let r = plan.decode(&payload[10..], &mut scratch).unwrap_err();
        assert_eq!(r.class, "bad_datum", "{name}");
    }
}

#[test]
fn every_record_type_compiles_and_schema_drift_is_refused() {
    let tr = transformer();
    for t in RecordType::ALL {
        ColumnarPlan::new(t, tr.arrow_schema(t).unwrap()).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    // Columns of another table: refused at construction, never at write time.
    let e = ColumnarPlan::new(
        RecordType::DeviceHeartbeat,
        tr.arrow_schema(RecordType::UsageCounters).unwrap(),
    );
    assert!(e.is_err());
}
