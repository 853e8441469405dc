//! Every `.avsc` in `schemas/` parses, is covered by a Rust type, and a sample
//! of each type survives encode → decode unchanged, with single-object framing.

use fleetpulse_core::codec::{self, CodecError};
use fleetpulse_core::records::Record;
use fleetpulse_core::samples;
use fleetpulse_core::schema::{privacy_action, RecordType};

fn round_trip<R: Record + PartialEq + std::fmt::Debug>(r: R) {
    let bytes = codec::encode(&r).unwrap_or_else(|e| panic!("{}: {e}", R::TYPE));
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(&bytes[2..10], &R::TYPE.compiled().fingerprint);
    let back: R = codec::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", R::TYPE));
    assert_eq!(back, r, "{} changed in a round trip", R::TYPE);
}

#[test]
fn every_schema_file_is_a_record_type() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut known: Vec<String> = RecordType::ALL
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    known.sort();
    assert_eq!(names, known);
    for t in RecordType::ALL {
        let schema = t.schema();
        let apache_avro::Schema::Record(rec) = schema else {
            panic!("{t} is not a record")
        };
        assert_eq!(
            rec.name.namespace.as_deref(),
            Some("io.fleetpulse.v1"),
            "{t}"
        );
        let names: Vec<&str> = rec.fields.iter().map(|f| f.name.as_str()).take(6).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "tenant_id",
                "connector_id",
                "device_id",
                "observed_at",
                "schema_version"
            ],
            "{t}"
        );
        for f in &rec.fields {
            privacy_action(&f.custom_attributes).unwrap_or_else(|e| panic!("{t}.{}: {e}", f.name));
        }
    }
}

#[test]
fn schemas_round_trip() {
    round_trip(samples::device_heartbeat("SN1"));
    round_trip(samples::device_status("SN1"));
    round_trip(samples::usage_counters("SN1"));
    round_trip(samples::alert_event("SN1"));
    round_trip(samples::job_record("SN1"));
    round_trip(samples::connector_heartbeat("conn-1"));
    round_trip(samples::maintenance_alert("SN1"));
}

#[test]
fn personal_fields_are_annotated() {
    use fleetpulse_core::schema::PrivacyAction::*;
    let action = |t: RecordType, field: &str| {
        let apache_avro::Schema::Record(rec) = t.schema() else {
            unreachable!()
        };
        let f = rec.fields.iter().find(|f| f.name == field).unwrap();
        privacy_action(&f.custom_attributes).unwrap()
    };
    assert_eq!(
        action(RecordType::DeviceStatus, "device_id"),
        Some(Pseudonymize)
    );
    assert_eq!(action(RecordType::DeviceStatus, "sys_name"), Some(Drop));
    assert_eq!(action(RecordType::DeviceStatus, "sys_contact"), Some(Drop));
    assert_eq!(action(RecordType::DeviceStatus, "mac_address"), Some(Drop));
    assert!(matches!(
        action(RecordType::DeviceStatus, "ip_address"),
        Some(Generalize(_))
    ));
    assert!(matches!(
        action(RecordType::DeviceStatus, "sys_location"),
        Some(Generalize(_))
    ));
    assert_eq!(action(RecordType::JobRecord, "user_name"), Some(Drop));
}

#[test]
fn bad_bytes_are_errors_not_panics() {
    let good = codec::encode(&samples::device_status("SN1")).unwrap();
    assert!(matches!(
        codec::decode_value(&good[..5]),
        Err(CodecError::TooShort(5))
    ));
    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    assert!(matches!(
        codec::decode_value(&bad_magic),
        Err(CodecError::BadMagic(_))
    ));
    let mut unknown = good.clone();
    unknown[5] ^= 0xff;
    assert!(matches!(
        codec::decode_value(&unknown),
        Err(CodecError::UnknownFingerprint(_))
    ));
    for cut in 10..good.len() {
        let r = codec::decode_value(&good[..cut]);
        assert!(
            r.is_err(),
            "truncated at {cut} of {} decoded: {r:?}",
            good.len()
        );
    }
    assert!(matches!(
        codec::decode::<fleetpulse_core::records::DeviceHeartbeat>(&good),
        Err(CodecError::WrongType { .. })
    ));
    // A hostile length prefix: a string claiming 2^62 bytes.
    let mut hostile = good[..10].to_vec();
    hostile.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    let r = codec::decode_value(&hostile);
    assert!(r.is_err(), "{r:?}");
}
