//! The schema contract may only evolve backward compatibly.
//!
//! `schemas/<type>.avsc` is the current version; every released version stays
//! in `schemas/history/<type>/v<N>.avsc`. These tests fail the build when
//! - the current schema is not a released version (someone edited it without
//!   recording the new version, so old readers and the history disagree);
//! - the current schema cannot read data written with ANY released version
//!   (Avro schema resolution rules: added fields need defaults, types may only
//!   be promoted, enum symbols only added with a default, …): Parquet files,
//!   Kafka topics and edge buffers keep old data for years;
//! - a record written with an older version does not decode to the current
//!   layout through the codec.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use fleetpulse_core::codec;
use fleetpulse_core::schema::{released_versions, writer_schema, RecordType};

#[test]
fn current_schema_is_a_released_version() {
    for t in RecordType::ALL {
        let versions: Vec<u32> = t.versions().map(|w| w.version).collect();
        assert!(
            !versions.is_empty(),
            "schemas/history/{t}/ is missing: copy schemas/{t}.avsc to schemas/history/{t}/v1.avsc"
        );
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        assert_eq!(
            versions, expected,
            "schemas/history/{t}/ must hold v1..vN without gaps"
        );
        let latest = t.versions().last().map(|w| w.version).unwrap_or(0);
        let current = t.versions().find(|w| w.is_current);
        assert!(
            current.is_some(),
            "schemas/{t}.avsc changed but is not recorded as a released version: \
             check it passes this test, then copy it to schemas/history/{t}/v{}.avsc \
            ",
            latest + 1
        );
        assert_eq!(
            current.map(|w| w.version),
            Some(latest),
            "schemas/{t}.avsc equals an OLDER released version than the newest one in schemas/history/{t}/"
        );
    }
}

#[test]
fn current_schema_reads_every_released_version() {
    let mut failures = Vec::new();
    for w in released_versions() {
        let current = w.record_type.schema();
        if let Err(e) = SchemaCompatibility::can_read(&w.schema, current) {
            failures.push(format!(
                "schemas/{t}.avsc cannot read data written with schemas/history/{t}/v{v}.avsc: {e}",
                t = w.record_type,
                v = w.version
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "incompatible schema change:\n{}",
        failures.join("\n")
    );
}

#[test]
fn fingerprints_are_unique_across_types_and_versions() {
    let all = released_versions();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(
                a.fingerprint != b.fingerprint || a.record_type == b.record_type,
                "{} v{} and {} v{} share a fingerprint",
                a.record_type,
                a.version,
                b.record_type,
                b.version
            );
            assert!(
                a.fingerprint != b.fingerprint,
                "{} v{} and v{} are identical: drop the duplicate",
                a.record_type,
                a.version,
                b.version
            );
        }
    }
}

/// Encode `value` (valid for the writer schema) with that writer's fingerprint.
fn encode_with(w: &fleetpulse_core::schema::WriterSchema, value: Value) -> Vec<u8> {
    let datum = apache_avro::to_avro_datum(&w.schema, value).expect("sample fits the writer");
    let mut out = vec![0xC3, 0x01];
    out.extend_from_slice(&w.fingerprint);
    out.extend_from_slice(&datum);
    out
}

#[test]
fn records_written_with_any_released_version_decode_to_the_current_layout() {
    for w in released_versions() {
        let t = w.record_type;
        // A sample of the current type, reduced to the writer's fields: what an
        // older edge would have sent.
        let sample = codec::encode_value(t, sample_value(t)).expect("sample encodes");
        let (_, current_value) = codec::decode_value(&sample).expect("sample decodes");
        let old_value = project(&current_value, &w.schema);
        let bytes = encode_with(w, old_value);
        assert_eq!(
            writer_schema(&bytes[2..10]).map(|x| x.version),
            Some(w.version)
        );
        let (found, value) =
            codec::decode_value(&bytes).unwrap_or_else(|e| panic!("{t} v{}: {e}", w.version));
        assert_eq!(found, t);
        // Resolved to the current schema: it re-encodes with the current one.
        codec::encode_value(t, value).unwrap_or_else(|e| {
            panic!(
                "{t} v{} did not resolve to the current schema: {e}",
                w.version
            )
        });
    }
}

/// An older schema the current one must read, built in the test: the current
/// `usage_counters` without its last field (which, like any added field,
/// must carry a default). Exercises resolution even while every type has only
/// one released version.
#[test]
fn an_added_field_with_a_default_is_filled_on_read() {
    let t = RecordType::UsageCounters;
    let apache_avro::Schema::Record(rec) = t.schema() else {
        unreachable!()
    };
    let last = rec.fields.last().expect("record has fields");
    assert!(
        last.default.is_some(),
        "the newest field of {t} ({}) has no default: old data cannot be read",
        last.name
    );
    let mut json: serde_json::Value = serde_json::from_str(t.source()).expect("schema is JSON");
    json["fields"].as_array_mut().expect("fields").pop();
    let older = apache_avro::Schema::parse_str(&json.to_string()).expect("reduced schema parses");
    SchemaCompatibility::can_read(&older, t.schema()).expect("current reads the older layout");
    let sample = codec::encode_value(t, sample_value(t)).expect("sample encodes");
    let (_, value) = codec::decode_value(&sample).expect("sample decodes");
    let datum = apache_avro::to_avro_datum(&older, project(&value, &older)).expect("fits");
    let resolved =
        apache_avro::from_avro_datum(&older, &mut &datum[..], Some(t.schema())).expect("resolves");
    let Value::Record(fields) = resolved else {
        panic!("not a record")
    };
    assert_eq!(
        fields.last().map(|(n, _)| n.as_str()),
        Some(last.name.as_str())
    );
}

fn sample_value(t: RecordType) -> Value {
    use fleetpulse_core::samples;
    let bytes = match t {
        RecordType::DeviceHeartbeat => codec::encode(&samples::device_heartbeat("SN1")),
        RecordType::DeviceStatus => codec::encode(&samples::device_status("SN1")),
        RecordType::UsageCounters => codec::encode(&samples::usage_counters("SN1")),
        RecordType::AlertEvent => codec::encode(&samples::alert_event("SN1")),
        RecordType::JobRecord => codec::encode(&samples::job_record("SN1")),
        RecordType::ConnectorHeartbeat => codec::encode(&samples::connector_heartbeat("c1")),
        RecordType::MaintenanceAlert => codec::encode(&samples::maintenance_alert("SN1")),
    }
    .expect("sample encodes");
    codec::decode_value(&bytes).expect("sample decodes").1
}

/// Keep only the fields `schema` knows, recursively through records, arrays and unions.
fn project(value: &Value, schema: &apache_avro::Schema) -> Value {
    use apache_avro::Schema;
    match (value, schema) {
        (Value::Record(fields), Schema::Record(rec)) => Value::Record(
            rec.fields
                .iter()
                .filter_map(|f| {
                    fields
                        .iter()
                        .find(|(n, _)| n == &f.name)
                        .map(|(n, v)| (n.clone(), project(v, &f.schema)))
                })
                .collect(),
        ),
        (Value::Array(items), Schema::Array(a)) => {
            Value::Array(items.iter().map(|v| project(v, &a.items)).collect())
        }
        (Value::Union(i, inner), Schema::Union(u)) => match u.variants().get(*i as usize) {
            Some(s) => Value::Union(*i, Box::new(project(inner, s))),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}
