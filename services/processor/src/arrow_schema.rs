//! Avro schema -> Arrow schema.
//!
//! The lake's column types follow from the Avro contract, so a schema change
//! is one `.avsc` edit and never a hand-maintained Arrow schema that drifts.
//! Only the types the contract uses are mapped; anything else is rejected at
//! startup (a build defect, not an input error).

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::schema::{Name, RecordSchema};
use apache_avro::Schema as AvroSchema;
use arrow_schema::{DataType, Field, Fields, Schema as ArrowSchema, SchemaRef, TimeUnit};

/// A part of an Avro schema that has no lake column type.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("cannot map Avro schema to Arrow at `{path}`: {reason}")]
pub struct MappingError {
    /// Dotted path of the field.
    pub path: String,
    /// What is not supported.
    pub reason: String,
}

/// Named types (records, enums, fixed) of a schema, by full and by simple name,
/// so `Schema::Ref`s can be followed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names(HashMap<String, AvroSchema>);

impl Names {
    pub(crate) fn of(schema: &AvroSchema) -> Names {
        let mut names = Names::default();
        names.collect(schema);
        names
    }

    fn insert(&mut self, name: &Name, schema: &AvroSchema) {
        self.0.insert(name.fullname(None), schema.clone());
        self.0
            .entry(name.name.clone())
            .or_insert_with(|| schema.clone());
    }

    fn collect(&mut self, schema: &AvroSchema) {
        match schema {
            AvroSchema::Record(r) => {
                self.insert(&r.name, schema);
                for f in &r.fields {
                    self.collect(&f.schema);
                }
            }
            AvroSchema::Enum(e) => self.insert(&e.name, schema),
            AvroSchema::Fixed(f) => self.insert(&f.name, schema),
            AvroSchema::Array(a) => self.collect(&a.items),
            AvroSchema::Map(m) => self.collect(&m.types),
            AvroSchema::Union(u) => {
                for v in u.variants() {
                    self.collect(v);
                }
            }
            _ => {}
        }
    }

    /// Follow a reference; other schemas are returned as they are.
    pub(crate) fn resolve<'a>(&'a self, schema: &'a AvroSchema) -> Option<&'a AvroSchema> {
        match schema {
            AvroSchema::Ref { name } => self
                .0
                .get(&name.fullname(None))
                .or_else(|| self.0.get(&name.name)),
            s => Some(s),
        }
    }
}

/// The non-null branch of a `[null, T]` union (in either order), if `u` is one.
pub(crate) fn nullable_branch(variants: &[AvroSchema]) -> Option<(usize, &AvroSchema)> {
    match variants {
        [AvroSchema::Null, t] => Some((1, t)),
        [t, AvroSchema::Null] => Some((0, t)),
        _ => None,
    }
}

/// Map a top-level Avro record schema to an Arrow schema.
///
/// record -> Struct, array -> List, `[null, T]` -> nullable T, enum / string /
/// uuid -> Utf8, int -> Int32, long -> Int64, timestamp-millis ->
/// Timestamp(ms, UTC), double -> Float64, float -> Float32, boolean -> Boolean.
/// Float columns are always nullable: Avro allows NaN and infinities, which
/// the lake stores as null.
pub fn avro_to_arrow(schema: &AvroSchema) -> Result<ArrowSchema, MappingError> {
    let names = Names::of(schema);
    let AvroSchema::Record(rec) = schema else {
        return Err(MappingError {
            path: String::new(),
            reason: "top-level schema is not a record".into(),
        });
    };
    Ok(ArrowSchema::new(record_fields(rec, "", &names)?))
}

fn record_fields(rec: &RecordSchema, path: &str, names: &Names) -> Result<Fields, MappingError> {
    rec.fields
        .iter()
        .map(|f| {
            let p = if path.is_empty() {
                f.name.clone()
            } else {
                format!("{path}.{}", f.name)
            };
            let (dt, nullable) = data_type(&f.schema, &p, names, 0)?;
            Ok(Arc::new(Field::new(&f.name, dt, nullable)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Fields::from)
}

/// Arrow type of an Avro schema and whether it admits null.
fn data_type(
    schema: &AvroSchema,
    path: &str,
    names: &Names,
    depth: usize,
) -> Result<(DataType, bool), MappingError> {
    let err = |reason: String| MappingError {
        path: path.to_string(),
        reason,
    };
    if depth > 32 {
        return Err(err("schema nests deeper than 32 levels (recursive?)".into()));
    }
    Ok(match schema {
        AvroSchema::Null => (DataType::Null, true),
        AvroSchema::Boolean => (DataType::Boolean, false),
        AvroSchema::Int => (DataType::Int32, false),
        AvroSchema::Long => (DataType::Int64, false),
        AvroSchema::Float => (DataType::Float32, true),
        AvroSchema::Double => (DataType::Float64, true),
        AvroSchema::String | AvroSchema::Uuid | AvroSchema::Enum(_) => (DataType::Utf8, false),
        AvroSchema::TimestampMillis => (
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        AvroSchema::Array(a) => {
            let (item, nullable) = data_type(&a.items, &format!("{path}[]"), names, depth + 1)?;
            (
                DataType::List(Arc::new(Field::new("item", item, nullable))),
                false,
            )
        }
        AvroSchema::Record(r) => (DataType::Struct(record_fields(r, path, names)?), false),
        AvroSchema::Union(u) => match nullable_branch(u.variants()) {
            Some((_, t)) => (data_type(t, path, names, depth + 1)?.0, true),
            None => {
                return Err(err(
                    "only [null, T] unions are supported as lake columns".into()
                ))
            }
        },
        AvroSchema::Ref { name } => {
            let target = names
                .resolve(schema)
                .ok_or_else(|| err(format!("unknown named type {}", name.fullname(None))))?;
            data_type(target, path, names, depth + 1)?
        }
        other => return Err(err(format!("Avro type {other} has no lake mapping"))),
    })
}

/// Build one record batch of `schema` from JSON-like rows (objects keyed by
/// column name, timestamps as epoch milliseconds).
pub fn record_batch<R: serde::Serialize>(
    schema: &SchemaRef,
    rows: &[R],
) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
    let mut decoder = arrow_json::ReaderBuilder::new(Arc::new(strip_timezones(schema)))
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    let columns = match decoder.flush()? {
        Some(batch) => batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| relabel(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?,
        None => return Ok(arrow_array::RecordBatch::new_empty(schema.clone())),
    };
    arrow_array::RecordBatch::try_new(schema.clone(), columns)
}

/// The same schema with every timestamp's time zone removed.
///
/// arrow-json can only parse offset time zones (`+00:00`) without the
/// `chrono-tz` feature, so JSON rows are decoded against this schema and the
/// resulting arrays relabelled with [`relabel`] (same memory, new type).
fn strip_timezones(schema: &ArrowSchema) -> ArrowSchema {
    ArrowSchema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| strip_field(f))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

fn strip_field(f: &Field) -> Arc<Field> {
    Arc::new(f.clone().with_data_type(strip_type(f.data_type())))
}

fn strip_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Timestamp(unit, Some(_)) => DataType::Timestamp(*unit, None),
        DataType::List(item) => DataType::List(strip_field(item)),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| strip_field(f)).collect::<Fields>())
        }
        other => other.clone(),
    }
}

/// Give `array` (decoded against a [`strip_timezones`] type) the type `target`.
fn relabel(
    array: &arrow_array::ArrayRef,
    target: &DataType,
) -> Result<arrow_array::ArrayRef, arrow_schema::ArrowError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use arrow_array::{Array, ListArray, StructArray};
    if array.data_type() == target {
        return Ok(array.clone());
    }
    Ok(match target {
        DataType::Timestamp(TimeUnit::Millisecond, tz) => Arc::new(
            array
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| arrow_schema::ArrowError::CastError("not a ms timestamp".into()))?
                .clone()
                .with_timezone_opt(tz.clone()),
        ),
        DataType::List(item) => {
            let list = array
                .as_list_opt::<i32>()
                .ok_or_else(|| arrow_schema::ArrowError::CastError("not a list".into()))?;
            Arc::new(ListArray::try_new(
                item.clone(),
                list.offsets().clone(),
                relabel(list.values(), item.data_type())?,
                list.nulls().cloned(),
            )?)
        }
        DataType::Struct(fields) => {
            let st = array
                .as_struct_opt()
                .ok_or_else(|| arrow_schema::ArrowError::CastError("not a struct".into()))?;
            let columns = st
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(c, f)| relabel(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(
                fields.clone(),
                columns,
                st.nulls().cloned(),
            )?)
        }
        _ => array.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz_ms() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    }

    #[test]
    fn maps_every_supported_type() {
        let schema = AvroSchema::parse_str(
            r#"{"type":"record","name":"T","namespace":"x","fields":[
              {"name":"id","type":{"type":"string","logicalType":"uuid"}},
              {"name":"s","type":"string"},
              {"name":"i","type":"int"},
              {"name":"l","type":"long"},
              {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
              {"name":"d","type":"double"},
              {"name":"f","type":"float"},
              {"name":"b","type":"boolean"},
              {"name":"e","type":{"type":"enum","name":"E","symbols":["a","b"]}},
              {"name":"oe","type":["null","E"],"default":null},
              {"name":"on","type":["null","long"],"default":null},
              {"name":"ots","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
              {"name":"arr","type":{"type":"array","items":{"type":"record","name":"R","fields":[
                  {"name":"k","type":"int"},{"name":"v","type":["null","string"],"default":null}]}}},
              {"name":"r2","type":["null","R"],"default":null},
              {"name":"tags","type":{"type":"array","items":"E"}}
            ]}"#,
        )
        .unwrap();
        let a = avro_to_arrow(&schema).unwrap();
        let f = |n: &str| a.field_with_name(n).unwrap().clone();
        assert_eq!(f("id"), Field::new("id", DataType::Utf8, false));
        assert_eq!(f("s"), Field::new("s", DataType::Utf8, false));
        assert_eq!(f("i"), Field::new("i", DataType::Int32, false));
        assert_eq!(f("l"), Field::new("l", DataType::Int64, false));
        assert_eq!(f("ts"), Field::new("ts", tz_ms(), false));
        assert_eq!(f("d"), Field::new("d", DataType::Float64, true));
        assert_eq!(f("f"), Field::new("f", DataType::Float32, true));
        assert_eq!(f("b"), Field::new("b", DataType::Boolean, false));
        assert_eq!(f("e"), Field::new("e", DataType::Utf8, false));
        assert_eq!(f("oe"), Field::new("oe", DataType::Utf8, true));
        assert_eq!(f("on"), Field::new("on", DataType::Int64, true));
        assert_eq!(f("ots"), Field::new("ots", tz_ms(), true));
        let r = DataType::Struct(Fields::from(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        assert_eq!(
            f("arr"),
            Field::new(
                "arr",
                DataType::List(Arc::new(Field::new("item", r.clone(), false))),
                false
            )
        );
        // A reference to a named record resolves to the same struct.
        assert_eq!(f("r2"), Field::new("r2", r, true));
        assert_eq!(
            f("tags"),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
                false
            )
        );
    }

    #[test]
    fn rejects_what_has_no_column_type() {
        let schema = AvroSchema::parse_str(
            r#"{"type":"record","name":"T","fields":[
              {"name":"u","type":["null","string","long"]}]}"#,
        )
        .unwrap();
        let e = avro_to_arrow(&schema).unwrap_err();
        assert_eq!(e.path, "u");
        let schema = AvroSchema::parse_str(
            r#"{"type":"record","name":"T","fields":[{"name":"m","type":{"type":"map","values":"long"}}]}"#,
        )
        .unwrap();
        assert_eq!(avro_to_arrow(&schema).unwrap_err().path, "m");
        assert!(avro_to_arrow(&AvroSchema::Long).is_err());
    }

    #[test]
    fn every_contract_schema_maps() {
        for t in fleetpulse_core::schema::RecordType::ALL {
            let a = avro_to_arrow(t.schema()).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(
                a.field_with_name("observed_at").unwrap().data_type(),
                &tz_ms()
            );
        }
    }
}
