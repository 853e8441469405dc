//! The anonymiser: what of a record may reach the lake, and in what form.
//!
//! The rules live in the Avro contract itself (`"fleetpulse.privacy"` on a
//! field), not in code, so a new identifying field is protected by editing
//! its schema and cannot be forgotten here. The walk goes through records,
//! arrays and unions at any depth:
//!
//! - `drop`: the field is removed from the output table entirely (no column,
//!   never logged);
//! - `pseudonymize`: the value becomes a keyed HMAC pseudonym and a column
//!   `<field>_key_id` right after it names the key, so keys can rotate;
//! - `generalize`: the value is coarsened (IPv4 -> /24 network, free-text
//!   location -> ISO country code, timestamp -> its hour).
//!
//! The same walk produces the output Avro schema, from which the Arrow schema
//! of the lake table is derived ([`crate::arrow_schema::avro_to_arrow`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use apache_avro::schema::{ArraySchema, RecordField, RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema as AvroSchema;
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use fleetpulse_core::pseudonym::Pseudonymizer;
use fleetpulse_core::schema::{privacy_action, Generalization, PrivacyAction, RecordType};
use serde_json::{Map, Value as Json};

use crate::arrow_schema::{avro_to_arrow, nullable_branch, Names};

/// Column with the Kafka partition a row was read from.
pub const COL_PARTITION: &str = "_kafka_partition";
/// Column with the Kafka offset a row was read at.
pub const COL_OFFSET: &str = "_kafka_offset";
/// Suffix of the column that names the pseudonym key of a field.
pub const KEY_ID_SUFFIX: &str = "_key_id";

const HOUR_MS: i64 = 3_600_000;

/// A schema or a value the anonymiser cannot handle. The message names the
/// field path but never contains a value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("cannot transform `{path}`: {reason}")]
pub struct TransformError {
    /// Dotted path of the field.
    pub path: String,
    /// What was wrong (never the value itself).
    pub reason: String,
}

fn terr(path: &str, reason: impl Into<String>) -> TransformError {
    TransformError {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// One lake table: the input schema's names, the output schemas.
#[derive(Debug)]
struct Table {
    names: Names,
    output: AvroSchema,
    arrow: SchemaRef,
}

/// Turns decoded records into anonymised JSON rows for the lake.
#[derive(Debug)]
pub struct Transformer {
    pseudonymizer: Pseudonymizer,
    tables: BTreeMap<RecordType, Table>,
}

impl Transformer {
    /// Prepare every record type of the contract. Fails when a schema uses a
    /// privacy attribute or a type the lake cannot represent.
    pub fn new(pseudonymizer: Pseudonymizer) -> Result<Transformer, TransformError> {
        let mut tables = BTreeMap::new();
        for t in RecordType::ALL {
            let input = t.schema();
            let names = Names::of(input);
            let output = output_schema(input, &names, t.name(), 0)?;
            let mut arrow = avro_to_arrow(&output).map_err(|e| terr(&e.path, e.reason))?;
            for col in [COL_PARTITION, COL_OFFSET] {
                if arrow.field_with_name(col).is_ok() {
                    return Err(terr(
                        col,
                        "reserved lineage column name is used by the schema",
                    ));
                }
            }
            let mut fields: Vec<Arc<Field>> = arrow.fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(COL_PARTITION, DataType::Int32, false)));
            fields.push(Arc::new(Field::new(COL_OFFSET, DataType::Int64, false)));
            arrow = ArrowSchema::new(fields);
            tables.insert(
                t,
                Table {
                    names,
                    output,
                    arrow: Arc::new(arrow),
                },
            );
        }
        Ok(Transformer {
            pseudonymizer,
            tables,
        })
    }

    fn table(&self, t: RecordType) -> Result<&Table, TransformError> {
        self.tables
            .get(&t)
            .ok_or_else(|| terr(t.name(), "record type not prepared"))
    }

    /// The Avro schema of the lake table (after drop / pseudonymize / generalize).
    pub fn output_schema(&self, t: RecordType) -> Option<&AvroSchema> {
        self.tables.get(&t).map(|tb| &tb.output)
    }

    /// The Arrow schema of the lake table, lineage columns included.
    pub fn arrow_schema(&self, t: RecordType) -> Option<SchemaRef> {
        self.tables.get(&t).map(|tb| tb.arrow.clone())
    }

    /// Anonymise one decoded record into a JSON row shaped like
    /// [`Transformer::arrow_schema`] (without the lineage columns).
    pub fn transform(
        &self,
        t: RecordType,
        value: &Value,
    ) -> Result<Map<String, Json>, TransformError> {
        let table = self.table(t)?;
        let AvroSchema::Record(rec) = t.schema() else {
            return Err(terr(t.name(), "top-level schema is not a record"));
        };
        self.record(rec, value, &table.names, "", 0)
    }

    fn record(
        &self,
        rec: &RecordSchema,
        value: &Value,
        names: &Names,
        path: &str,
        depth: usize,
    ) -> Result<Map<String, Json>, TransformError> {
        let Value::Record(values) = value else {
            return Err(terr(path, "expected a record"));
        };
        if values.len() != rec.fields.len() {
            return Err(terr(path, "record has the wrong number of fields"));
        }
        let mut out = Map::with_capacity(values.len() + 2);
        for (field, (name, v)) in rec.fields.iter().zip(values) {
            let fpath = join(path, &field.name);
            if &field.name != name {
                return Err(terr(&fpath, "field order differs from the schema"));
            }
            let action = privacy_action(&field.custom_attributes).map_err(|e| terr(&fpath, e))?;
            match action {
                Some(PrivacyAction::Drop) => {}
                Some(PrivacyAction::Pseudonymize) => {
                    let (p, key) = match text_of(v) {
                        Some(s) => (
                            Json::String(self.pseudonymizer.pseudonymize(name, s)),
                            Json::String(self.pseudonymizer.key_id().to_string()),
                        ),
                        None if is_null(v) => (Json::Null, Json::Null),
                        None => return Err(terr(&fpath, "pseudonymized field is not text")),
                    };
                    out.insert(name.clone(), p);
                    out.insert(format!("{name}{KEY_ID_SUFFIX}"), key);
                }
                Some(PrivacyAction::Generalize(g)) => {
                    out.insert(name.clone(), generalize_value(g, v));
                }
                None => {
                    out.insert(
                        name.clone(),
                        self.value(&field.schema, v, names, &fpath, depth + 1)?,
                    );
                }
            }
        }
        Ok(out)
    }

    fn value(
        &self,
        schema: &AvroSchema,
        value: &Value,
        names: &Names,
        path: &str,
        depth: usize,
    ) -> Result<Json, TransformError> {
        if depth > 32 {
            return Err(terr(path, "value nests deeper than 32 levels"));
        }
        let schema = names
            .resolve(schema)
            .ok_or_else(|| terr(path, "unknown named type"))?;
        Ok(match (schema, value) {
            (AvroSchema::Union(u), Value::Union(idx, inner)) => {
                let branch = u
                    .variants()
                    .get(*idx as usize)
                    .ok_or_else(|| terr(path, "union branch out of range"))?;
                return self.value(branch, inner, names, path, depth + 1);
            }
            (_, Value::Null) => Json::Null,
            (_, Value::Boolean(b)) => Json::Bool(*b),
            (_, Value::Int(i)) => Json::from(*i),
            (_, Value::Long(l)) | (_, Value::TimestampMillis(l)) => Json::from(*l),
            (_, Value::Float(f)) => finite(f64::from(*f)),
            (_, Value::Double(d)) => finite(*d),
            (_, Value::String(s)) => Json::String(s.clone()),
            (_, Value::Uuid(u)) => Json::String(u.to_string()),
            (_, Value::Enum(_, symbol)) => Json::String(symbol.clone()),
            (AvroSchema::Array(a), Value::Array(items)) => Json::Array(
                items
                    .iter()
                    .map(|it| self.value(&a.items, it, names, path, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            (AvroSchema::Record(r), v @ Value::Record(_)) => {
                Json::Object(self.record(r, v, names, path, depth + 1)?)
            }
            _ => return Err(terr(path, "value does not match its schema")),
        })
    }
}

fn finite(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or(Json::Null)
}

fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => unwrap_union(inner),
        v => v,
    }
}

fn is_null(v: &Value) -> bool {
    matches!(unwrap_union(v), Value::Null)
}

fn text_of(v: &Value) -> Option<&str> {
    match unwrap_union(v) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Coarsen one value as the schema says. Values of an unexpected kind become null.
fn generalize_value(g: Generalization, v: &Value) -> Json {
    let v = unwrap_union(v);
    match g {
        Generalization::Ipv4Slash24 => match v {
            Value::String(s) => ipv4_slash24(s).map(Json::String).unwrap_or(Json::Null),
            _ => Json::Null,
        },
        Generalization::Country => match v {
            Value::String(s) => country_code(s)
                .map(|c| Json::String(c.to_string()))
                .unwrap_or(Json::Null),
            _ => Json::Null,
        },
        Generalization::Hour => match v {
            Value::TimestampMillis(ms) | Value::Long(ms) => Json::from(truncate_to_hour(*ms)),
            _ => Json::Null,
        },
    }
}

pub use fleetpulse_core::generalize::{country_code, ipv4_slash24};

/// Truncate milliseconds since the epoch to the start of their UTC hour.
pub fn truncate_to_hour(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

fn is_text_schema(schema: &AvroSchema) -> Option<bool> {
    match schema {
        AvroSchema::String | AvroSchema::Uuid => Some(false),
        AvroSchema::Union(u) => match nullable_branch(u.variants()) {
            Some((_, AvroSchema::String | AvroSchema::Uuid)) => Some(true),
            _ => None,
        },
        _ => None,
    }
}

fn is_timestamp_schema(schema: &AvroSchema) -> bool {
    match schema {
        AvroSchema::TimestampMillis | AvroSchema::Long => true,
        AvroSchema::Union(u) => matches!(
            nullable_branch(u.variants()),
            Some((_, AvroSchema::TimestampMillis | AvroSchema::Long))
        ),
        _ => false,
    }
}

fn nullable_string() -> Result<AvroSchema, TransformError> {
    UnionSchema::new(vec![AvroSchema::Null, AvroSchema::String])
        .map(AvroSchema::Union)
        .map_err(|e| terr("", e.to_string()))
}

fn derived_field(template: &RecordField, name: String, schema: AvroSchema) -> RecordField {
    RecordField {
        name,
        doc: template.doc.clone(),
        aliases: None,
        default: None,
        schema,
        order: template.order.clone(),
        position: 0,
        custom_attributes: BTreeMap::new(),
    }
}

/// The Avro schema of what [`Transformer::transform`] produces: dropped
/// fields removed, `<field>_key_id` added after pseudonymised fields,
/// generalised text fields made nullable, references inlined.
fn output_schema(
    schema: &AvroSchema,
    names: &Names,
    path: &str,
    depth: usize,
) -> Result<AvroSchema, TransformError> {
    if depth > 32 {
        return Err(terr(
            path,
            "schema nests deeper than 32 levels (recursive?)",
        ));
    }
    let schema = names
        .resolve(schema)
        .ok_or_else(|| terr(path, "unknown named type"))?;
    Ok(match schema {
        AvroSchema::Record(rec) => {
            let mut fields: Vec<RecordField> = Vec::with_capacity(rec.fields.len() + 2);
            for f in &rec.fields {
                let fpath = join(path, &f.name);
                let action = privacy_action(&f.custom_attributes).map_err(|e| terr(&fpath, e))?;
                match action {
                    Some(PrivacyAction::Drop) => {}
                    Some(PrivacyAction::Pseudonymize) => {
                        let nullable =
                            is_text_schema(names.resolve(&f.schema).unwrap_or(&f.schema))
                                .ok_or_else(|| {
                                    terr(&fpath, "only text fields can be pseudonymized")
                                })?;
                        let text = if nullable {
                            nullable_string()?
                        } else {
                            AvroSchema::String
                        };
                        fields.push(derived_field(f, f.name.clone(), text.clone()));
                        fields.push(derived_field(f, format!("{}{KEY_ID_SUFFIX}", f.name), text));
                    }
                    Some(PrivacyAction::Generalize(g)) => {
                        let out = match g {
                            Generalization::Ipv4Slash24 | Generalization::Country => {
                                is_text_schema(&f.schema).ok_or_else(|| {
                                    terr(&fpath, "only text fields can be generalized this way")
                                })?;
                                nullable_string()?
                            }
                            Generalization::Hour => {
                                if !is_timestamp_schema(&f.schema) {
                                    return Err(terr(
                                        &fpath,
                                        "only timestamp fields can be generalized to the hour",
                                    ));
                                }
                                f.schema.clone()
                            }
                        };
                        fields.push(derived_field(f, f.name.clone(), out));
                    }
                    None => {
                        let out = output_schema(&f.schema, names, &fpath, depth + 1)?;
                        let mut nf = f.clone();
                        nf.schema = out;
                        fields.push(nf);
                    }
                }
            }
            let mut seen = HashSet::new();
            let mut lookup = BTreeMap::new();
            for (i, f) in fields.iter_mut().enumerate() {
                if !seen.insert(f.name.clone()) {
                    return Err(terr(&join(path, &f.name), "duplicate output column"));
                }
                f.position = i;
                lookup.insert(f.name.clone(), i);
            }
            AvroSchema::Record(RecordSchema {
                name: rec.name.clone(),
                aliases: rec.aliases.clone(),
                doc: rec.doc.clone(),
                fields,
                lookup,
                attributes: rec.attributes.clone(),
            })
        }
        AvroSchema::Array(a) => AvroSchema::Array(ArraySchema {
            items: Box::new(output_schema(&a.items, names, path, depth + 1)?),
            attributes: a.attributes.clone(),
        }),
        AvroSchema::Union(u) => {
            let variants = u
                .variants()
                .iter()
                .map(|v| output_schema(v, names, path, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            AvroSchema::Union(UnionSchema::new(variants).map_err(|e| terr(path, e.to_string()))?)
        }
        other => other.clone(),
    })
}

/// `observed_at` of a decoded record, ms since the epoch.
pub fn observed_at(value: &Value) -> Option<i64> {
    let Value::Record(fields) = value else {
        return None;
    };
    fields
        .iter()
        .find(|(n, _)| n == "observed_at")
        .and_then(|(_, v)| match unwrap_union(v) {
            Value::TimestampMillis(ms) | Value::Long(ms) => Some(*ms),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::{codec, samples};

    #[test]
    fn ipv4_generalises_to_slash24() {
        assert_eq!(ipv4_slash24("192.0.2.17").as_deref(), Some("192.0.2.0/24"));
        assert_eq!(ipv4_slash24(" 10.1.2.255 ").as_deref(), Some("10.1.2.0/24"));
        assert_eq!(ipv4_slash24("2001:db8::1"), None);
        assert_eq!(ipv4_slash24("300.1.1.1"), None);
        assert_eq!(ipv4_slash24("printer.local"), None);
        assert_eq!(ipv4_slash24(""), None);
    }

    #[test]
    fn country_is_recognised_as_a_word() {
        assert_eq!(country_code("Berlin, DE, 2nd floor"), Some("DE"));
        assert_eq!(country_code("Lyon, France"), Some("FR"));
        assert_eq!(country_code("München (Deutschland)"), Some("DE"));
        assert_eq!(country_code("Austin, TX, USA"), Some("US"));
        assert_eq!(country_code("London United Kingdom"), Some("GB"));
        assert_eq!(country_code("HQ/UK/3rd"), Some("GB"));
        assert_eq!(country_code("Zürich, Schweiz"), Some("CH"));
        assert_eq!(country_code("Wien AT"), Some("AT"));
        // Names win over codes, lower-case short words are not codes.
        assert_eq!(country_code("IT dept, Madrid, Spain"), Some("ES"));
        assert_eq!(country_code("Rue de la Paix, 2e étage"), None);
        // Substrings are not words.
        assert_eq!(country_code("Frankfurt DEPOT"), None);
        assert_eq!(country_code("Room 101"), None);
        assert_eq!(country_code(""), None);
    }

    #[test]
    fn hour_truncation() {
        assert_eq!(truncate_to_hour(1_763_690_100_000), 1_763_686_800_000);
        assert_eq!(truncate_to_hour(3_600_000), 3_600_000);
        assert_eq!(truncate_to_hour(-1), -3_600_000);
    }

    fn transformer() -> Transformer {
        Transformer::new(Pseudonymizer::new(b"0123456789abcdef-key", "v1")).unwrap()
    }

    #[test]
    fn status_is_anonymised() {
        let tr = transformer();
        let s = samples::device_status("SERIAL-XYZ-1");
        let (t, v) = codec::decode_value(&codec::encode(&s).unwrap()).unwrap();
        let row = tr.transform(t, &v).unwrap();
        let p = Pseudonymizer::new(b"0123456789abcdef-key", "v1");
        assert_eq!(
            row["device_id"],
            Json::String(p.pseudonymize("device_id", "SERIAL-XYZ-1"))
        );
        assert_eq!(row["device_id_key_id"], "v1");
        for dropped in ["sys_name", "sys_contact", "mac_address"] {
            assert!(!row.contains_key(dropped), "{dropped} leaked");
        }
        assert_eq!(row["ip_address"], "192.0.2.0/24");
        assert_eq!(row["sys_location"], "DE");
        assert_eq!(row["observed_at"], 1_763_700_000_000i64);
        assert_eq!(row["supplies"][1]["level_special"], "someRemaining");
        assert_eq!(row["detected_errors"][0], "lowToner");
        let text = serde_json::to_string(&row).unwrap();
        assert!(!text.contains("SERIAL-XYZ-1"));
        assert!(!text.contains("Jane Admin"));

        // Columns of the Arrow schema follow the output, key id right after.
        let arrow = tr.arrow_schema(t).unwrap();
        let names: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
        let i = names.iter().position(|n| *n == "device_id").unwrap();
        assert_eq!(names[i + 1], "device_id_key_id");
        assert!(!names.contains(&"sys_name"));
        assert_eq!(names[names.len() - 2..], [COL_PARTITION, COL_OFFSET]);
    }

    #[test]
    fn job_times_are_generalised_and_user_dropped() {
        let tr = transformer();
        let mut j = samples::job_record("SER-2");
        j.user_name = Some("alice".into());
        let (t, v) = codec::decode_value(&codec::encode(&j).unwrap()).unwrap();
        let row = tr.transform(t, &v).unwrap();
        assert_eq!(row["started_at"], 1_763_686_800_000i64);
        // Submitted 13:33:20, generalised to 13:00 like started_at.
        assert_eq!(j.created_at, Some(1_763_690_000_000));
        assert_eq!(row["created_at"], 1_763_686_800_000i64);
        assert_eq!(row["created_at"].as_i64().unwrap() % 3_600_000, 0);
        assert_eq!(row["ended_at"].as_i64().map(|t| t % 3_600_000), Some(0));
        assert!(!row.contains_key("user_name"));
        assert_ne!(row["job_id"], "job-42");
        assert_eq!(row["job_id_key_id"], "v1");
        assert_eq!(row["parts"][0]["bounding_box"]["x_mm"], 20.0);
    }

    #[test]
    fn every_sample_becomes_a_record_batch() {
        let tr = transformer();
        let encoded = [
            codec::encode(&samples::device_heartbeat("d")).unwrap(),
            codec::encode(&samples::device_status("d")).unwrap(),
            codec::encode(&samples::usage_counters("d")).unwrap(),
            codec::encode(&samples::alert_event("d")).unwrap(),
            codec::encode(&samples::job_record("d")).unwrap(),
            codec::encode(&samples::connector_heartbeat("c")).unwrap(),
            codec::encode(&samples::maintenance_alert("d")).unwrap(),
        ];
        for bytes in encoded {
            let (t, v) = codec::decode_value(&bytes).unwrap();
            let mut row = tr.transform(t, &v).unwrap();
            row.insert(COL_PARTITION.into(), Json::from(3));
            row.insert(COL_OFFSET.into(), Json::from(42));
            let schema = tr.arrow_schema(t).unwrap();
            let batch = crate::arrow_schema::record_batch(&schema, &[row])
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(batch.num_rows(), 1, "{t}");
            assert_eq!(batch.schema(), schema, "{t}");
        }
    }
}
