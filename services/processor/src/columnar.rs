//! Avro datum -> anonymised Arrow columns, directly, driven by the schema.
//!
//! The generic path ([`crate::privacy::Transformer::transform`]) decodes a
//! datum into an `apache_avro` value tree, turns it into a JSON row and lets
//! arrow-json parse the rows back into columns: three representations and
//! several allocations per field. This module does the same work in one
//! pass over the bytes: a plan compiled once per record type from the Avro
//! contract (the same `fleetpulse.privacy` annotations, the same output
//! columns as [`crate::privacy::Transformer::arrow_schema`]) reads each
//! field and appends it, dropped, pseudonymised or generalised, to Arrow
//! builders. Strings are copied once, from the message into the column.
//!
//! Two phases keep a bad record from leaving half a row behind:
//! [`ColumnarPlan::decode`] validates the whole datum (every varint, length,
//! union branch, enum index, UTF-8 and UUID, and that nothing trails) into a
//! reusable [`Scratch`] of cells that point into the message; only then does
//! [`ColumnarTable::append`] write the row, which cannot fail. Rejections use
//! the same classes as the generic path (`bad_datum`).
//!
//! Equivalence with the generic path is a test: every sample record, and
//! variants with nulls, empty arrays and non-finite floats, give identical
//! record batches both ways.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use apache_avro::schema::RecordSchema;
use apache_avro::Schema as AvroSchema;
use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, NullBufferBuilder,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, Fields, SchemaRef, TimeUnit};
use fleetpulse_core::pseudonym::Pseudonymizer;
use fleetpulse_core::schema::{privacy_action, Generalization, PrivacyAction, RecordType};

use crate::arrow_schema::{nullable_branch, Names};
use crate::privacy::{country_code, ipv4_slash24, truncate_to_hour, TransformError};
use crate::verify::Rejection;

/// Deepest nesting of a schema or a value (as the generic path).
const MAX_DEPTH: usize = 32;
/// Most items of one array in one datum: a hostile count fails cleanly.
const MAX_ITEMS: u64 = 1 << 20;
/// Distinct values remembered per pseudonymised field of one table.
const PSEUDONYM_CACHE: usize = 16_384;
/// Distinct values remembered by one table's country and /24 caches.
const GENERALIZE_CACHE: usize = 16_384;

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

/// How one Avro type is read.
#[derive(Debug, Clone)]
enum Kind {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Uuid,
    Enum(Arc<[String]>),
    Fixed(usize),
    /// `[null, T]`: the branch index of null, and T.
    Nullable(u8, Box<Kind>),
    /// Any other union (only skippable: such fields are never lake columns).
    Union(Vec<Kind>),
    Array(Box<Kind>),
    Map(Box<Kind>),
    Record(Vec<FieldPlan>),
}

/// What happens to a field's value.
#[derive(Debug, Clone)]
enum Act {
    Keep,
    Drop,
    Pseudonymize,
    Generalize(Generalization),
}

#[derive(Debug, Clone)]
struct FieldPlan {
    name: String,
    kind: Kind,
    act: Act,
}

impl FieldPlan {
    /// Output columns the field produces.
    fn columns(&self) -> usize {
        match self.act {
            Act::Drop => 0,
            Act::Pseudonymize => 2,
            Act::Keep | Act::Generalize(_) => 1,
        }
    }
}

fn kind_of(
    schema: &AvroSchema,
    names: &Names,
    path: &str,
    depth: usize,
) -> Result<Kind, TransformError> {
    if depth > MAX_DEPTH {
        return Err(terr(
            path,
            "schema nests deeper than 32 levels (recursive?)",
        ));
    }
    let schema = names
        .resolve(schema)
        .ok_or_else(|| terr(path, "unknown named type"))?;
    Ok(match schema {
        AvroSchema::Null => Kind::Null,
        AvroSchema::Boolean => Kind::Bool,
        AvroSchema::Int | AvroSchema::Date | AvroSchema::TimeMillis => Kind::Int,
        AvroSchema::Long
        | AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos
        | AvroSchema::TimeMicros => Kind::Long,
        AvroSchema::Float => Kind::Float,
        AvroSchema::Double => Kind::Double,
        AvroSchema::Bytes => Kind::Bytes,
        AvroSchema::String => Kind::Str,
        AvroSchema::Uuid => Kind::Uuid,
        AvroSchema::Enum(e) => Kind::Enum(e.symbols.clone().into()),
        AvroSchema::Fixed(f) => Kind::Fixed(f.size),
        AvroSchema::Array(a) => Kind::Array(Box::new(kind_of(&a.items, names, path, depth + 1)?)),
        AvroSchema::Map(m) => Kind::Map(Box::new(kind_of(&m.types, names, path, depth + 1)?)),
        AvroSchema::Union(u) => match (u.variants(), nullable_branch(u.variants())) {
            (_, Some((i, t))) => {
                Kind::Nullable((1 - i) as u8, Box::new(kind_of(t, names, path, depth + 1)?))
            }
            (variants, None) => Kind::Union(
                variants
                    .iter()
                    .map(|v| kind_of(v, names, path, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
        },
        AvroSchema::Record(r) => Kind::Record(record_plan(r, names, path, depth + 1)?),
        other => {
            return Err(terr(
                path,
                format!("Avro type {other} is not supported by the columnar path"),
            ))
        }
    })
}

fn record_plan(
    rec: &RecordSchema,
    names: &Names,
    path: &str,
    depth: usize,
) -> Result<Vec<FieldPlan>, TransformError> {
    rec.fields
        .iter()
        .map(|f| {
            let fpath = join(path, &f.name);
            let act = match privacy_action(&f.custom_attributes).map_err(|e| terr(&fpath, e))? {
                None => Act::Keep,
                Some(PrivacyAction::Drop) => Act::Drop,
                Some(PrivacyAction::Pseudonymize) => Act::Pseudonymize,
                Some(PrivacyAction::Generalize(g)) => Act::Generalize(g),
            };
            Ok(FieldPlan {
                name: f.name.clone(),
                kind: kind_of(&f.schema, names, &fpath, depth)?,
                act,
            })
        })
        .collect()
}

/// One decoded value: a cell of the [`Scratch`] tape, in schema order.
/// Strings are byte ranges of the datum.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Str(u32, u32),
    Sym(u32),
    Len(u32),
    /// A present value of a nullable record (its fields follow).
    Some,
}

/// Reusable decoding space (no allocation per record once warm).
#[derive(Debug, Default)]
pub struct Scratch {
    cells: Vec<Cell>,
    observed_at: Option<i64>,
    connector: Option<(u32, u32)>,
    /// Length of the datum the cells point into.
    datum_len: usize,
}

/// What [`ColumnarPlan::decode`] learned about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowInfo {
    /// `observed_at`, ms since the epoch, when the record has one.
    pub observed_at: Option<i64>,
}

impl Scratch {
    /// The record's top-level `connector_id` (a string of the datum).
    pub fn connector_id<'d>(&self, datum: &'d [u8]) -> Option<&'d str> {
        let (s, n) = self.connector?;
        datum
            .get(s as usize..(s + n) as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
    }
}

fn bad(reason: &str) -> Rejection {
    Rejection::new(
        "bad_datum",
        format!("datum does not match its schema: {reason}"),
    )
}

struct Reader<'d> {
    buf: &'d [u8],
    pos: usize,
}

impl Reader<'_> {
    fn long(&mut self) -> Result<i64, Rejection> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad("datum is truncated"))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(bad("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(bad("varint overflows 64 bits"));
            }
        }
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn int(&mut self) -> Result<i32, Rejection> {
        i32::try_from(self.long()?).map_err(|_| bad("int out of range"))
    }

    fn take(&mut self, n: usize) -> Result<(usize, usize), Rejection> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad("datum is truncated"))?;
        self.pos = end;
        Ok((start, n))
    }

    fn len(&mut self) -> Result<usize, Rejection> {
        usize::try_from(self.long()?).map_err(|_| bad("negative length"))
    }

    fn str(&mut self) -> Result<(u32, u32), Rejection> {
        let n = self.len()?;
        let (s, n) = self.take(n)?;
        std::str::from_utf8(&self.buf[s..s + n]).map_err(|_| bad("string is not UTF-8"))?;
        let s = u32::try_from(s).map_err(|_| bad("datum too large"))?;
        Ok((s, n as u32))
    }

    /// Item count of the next array/map block (0 ends), skipping a block's byte size.
    fn block(&mut self, total: &mut u64) -> Result<u64, Rejection> {
        let n = self.long()?;
        let n = if n < 0 {
            let _bytes = self.long()?;
            n.unsigned_abs()
        } else {
            n as u64
        };
        *total += n;
        if *total > MAX_ITEMS {
            return Err(bad("array has too many items"));
        }
        Ok(n)
    }
}

/// The compiled plan of one record type: how to read it, which columns it
/// becomes. Built once; shared by every [`ColumnarTable`] of that type.
#[derive(Debug)]
pub struct ColumnarPlan {
    record_type: RecordType,
    fields: Vec<FieldPlan>,
    schema: SchemaRef,
    observed_at: Option<usize>,
    connector: Option<usize>,
}

impl ColumnarPlan {
    /// Compile the plan of `t` for the lake columns `schema` (from
    /// [`crate::privacy::Transformer::arrow_schema`], lineage columns last).
    /// Fails when a column's type does not match the plan, so a change to
    /// the schema mapping cannot silently write something else.
    pub fn new(t: RecordType, schema: SchemaRef) -> Result<ColumnarPlan, TransformError> {
        let AvroSchema::Record(rec) = t.schema() else {
            return Err(terr(t.name(), "top-level schema is not a record"));
        };
        let names = Names::of(t.schema());
        let fields = record_plan(rec, &names, "", 0)?;
        let find = |name: &str| fields.iter().position(|f| f.name == name);
        let plan = ColumnarPlan {
            record_type: t,
            observed_at: find("observed_at"),
            connector: find("connector_id"),
            fields,
            schema,
        };
        // Building empty columns checks every field against its column type.
        plan.columns()?;
        Ok(plan)
    }

    /// The record type.
    pub fn record_type(&self) -> RecordType {
        self.record_type
    }

    /// The Arrow schema of the batches (lineage columns included).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn columns(&self) -> Result<Vec<Col>, TransformError> {
        let fields = self.schema.fields();
        let data = self.fields.iter().map(FieldPlan::columns).sum::<usize>();
        if fields.len() != data + 2 {
            return Err(terr(
                self.record_type.name(),
                "the lake columns differ from the schema's fields",
            ));
        }
        let mut cols = Vec::with_capacity(fields.len());
        record_cols(&self.fields, &fields[..data], "", &mut cols)?;
        cols.push(Col::new(fields[data].data_type(), fields[data].name())?);
        cols.push(Col::new(
            fields[data + 1].data_type(),
            fields[data + 1].name(),
        )?);
        if !matches!(cols[data], Col::I32(_)) || !matches!(cols[data + 1], Col::I64(_)) {
            return Err(terr(
                self.record_type.name(),
                "lineage columns have the wrong type",
            ));
        }
        Ok(cols)
    }

    /// Validate a datum (the bytes after the 10-byte single-object header)
    /// completely into `scratch`. Nothing is written anywhere yet.
    pub fn decode(&self, datum: &[u8], scratch: &mut Scratch) -> Result<RowInfo, Rejection> {
        scratch.cells.clear();
        scratch.observed_at = None;
        scratch.connector = None;
        scratch.datum_len = datum.len();
        let mut r = Reader { buf: datum, pos: 0 };
        for (i, f) in self.fields.iter().enumerate() {
            let emit = !matches!(f.act, Act::Drop);
            let at = scratch.cells.len();
            read(&f.kind, &mut r, &mut scratch.cells, emit, 1)?;
            if Some(i) == self.observed_at {
                scratch.observed_at = match scratch.cells.get(at) {
                    Some(Cell::I64(ms)) if emit => Some(*ms),
                    _ => None,
                };
            }
            if Some(i) == self.connector {
                scratch.connector = match scratch.cells.get(at) {
                    Some(Cell::Str(s, n)) if emit && matches!(f.kind, Kind::Str) => Some((*s, *n)),
                    _ => None,
                };
            }
        }
        if r.pos != datum.len() {
            return Err(bad(&format!(
                "{} trailing bytes after the datum",
                datum.len() - r.pos
            )));
        }
        Ok(RowInfo {
            observed_at: scratch.observed_at,
        })
    }
}

/// Read one value of `kind`; push its cells when `emit`.
fn read(
    kind: &Kind,
    r: &mut Reader<'_>,
    out: &mut Vec<Cell>,
    emit: bool,
    depth: usize,
) -> Result<(), Rejection> {
    if depth > MAX_DEPTH {
        return Err(bad("value nests deeper than 32 levels"));
    }
    let cell = match kind {
        Kind::Null => Cell::Null,
        Kind::Bool => match r.buf.get(r.pos) {
            Some(b @ (0 | 1)) => {
                r.pos += 1;
                Cell::Bool(*b == 1)
            }
            Some(_) => return Err(bad("boolean is neither 0 nor 1")),
            None => return Err(bad("datum is truncated")),
        },
        Kind::Int => Cell::I32(r.int()?),
        Kind::Long => Cell::I64(r.long()?),
        Kind::Float => {
            let (s, _) = r.take(4)?;
            let mut b = [0u8; 4];
            b.copy_from_slice(&r.buf[s..s + 4]);
            Cell::F32(f32::from_le_bytes(b))
        }
        Kind::Double => {
            let (s, _) = r.take(8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&r.buf[s..s + 8]);
            Cell::F64(f64::from_le_bytes(b))
        }
        Kind::Bytes => {
            let n = r.len()?;
            r.take(n)?;
            Cell::Null
        }
        Kind::Fixed(n) => {
            r.take(*n)?;
            Cell::Null
        }
        Kind::Str => {
            let (s, n) = r.str()?;
            Cell::Str(s, n)
        }
        Kind::Uuid => {
            let (s, n) = r.str()?;
            let text = std::str::from_utf8(&r.buf[s as usize..(s + n) as usize]).unwrap_or("");
            uuid::Uuid::try_parse(text).map_err(|_| bad("uuid field is not a UUID"))?;
            Cell::Str(s, n)
        }
        Kind::Enum(symbols) => {
            let i = r.long()?;
            if i < 0 || i as usize >= symbols.len() {
                return Err(bad("enum index out of range"));
            }
            Cell::Sym(i as u32)
        }
        Kind::Nullable(null_index, inner) => {
            let i = r.long()?;
            if i == i64::from(*null_index) {
                Cell::Null
            } else if i == i64::from(1 - *null_index) {
                if emit && matches!(**inner, Kind::Record(_)) {
                    out.push(Cell::Some);
                }
                return read(inner, r, out, emit, depth + 1);
            } else {
                return Err(bad("union branch out of range"));
            }
        }
        Kind::Union(variants) => {
            let i = r.long()?;
            let v = usize::try_from(i)
                .ok()
                .and_then(|i| variants.get(i))
                .ok_or_else(|| bad("union branch out of range"))?;
            // Never a lake column (see `kind_of`): read to validate only.
            return read(v, r, out, false, depth + 1);
        }
        Kind::Array(item) => {
            let at = out.len();
            if emit {
                out.push(Cell::Len(0));
            }
            let mut total = 0u64;
            loop {
                let n = r.block(&mut total)?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    read(item, r, out, emit, depth + 1)?;
                }
            }
            if emit {
                out[at] = Cell::Len(total as u32);
            }
            return Ok(());
        }
        Kind::Map(values) => {
            let mut total = 0u64;
            loop {
                let n = r.block(&mut total)?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    r.str()?;
                    read(values, r, out, false, depth + 1)?;
                }
            }
            return Ok(());
        }
        Kind::Record(fields) => {
            for f in fields {
                let keep = emit && !matches!(f.act, Act::Drop);
                read(&f.kind, r, out, keep, depth + 1)?;
            }
            return Ok(());
        }
    };
    if emit {
        out.push(cell);
    }
    Ok(())
}

/// An Arrow column being built.
#[derive(Debug)]
enum Col {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    Ts(TimestampMillisecondBuilder, Option<Arc<str>>),
    F32(Float32Builder),
    F64(Float64Builder),
    Utf8(StringBuilder),
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        child: Box<Col>,
    },
    Struct {
        fields: Fields,
        children: Vec<Col>,
        nulls: NullBufferBuilder,
    },
}

impl Col {
    fn new(dt: &DataType, path: &str) -> Result<Col, TransformError> {
        Ok(match dt {
            DataType::Boolean => Col::Bool(BooleanBuilder::new()),
            DataType::Int32 => Col::I32(Int32Builder::new()),
            DataType::Int64 => Col::I64(Int64Builder::new()),
            DataType::Timestamp(TimeUnit::Millisecond, tz) => {
                Col::Ts(TimestampMillisecondBuilder::new(), tz.clone())
            }
            DataType::Float32 => Col::F32(Float32Builder::new()),
            DataType::Float64 => Col::F64(Float64Builder::new()),
            DataType::Utf8 => Col::Utf8(StringBuilder::new()),
            DataType::List(item) => Col::List {
                field: item.clone(),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(0),
                child: Box::new(Col::new(item.data_type(), path)?),
            },
            DataType::Struct(fields) => Col::Struct {
                fields: fields.clone(),
                children: fields
                    .iter()
                    .map(|f| Col::new(f.data_type(), &join(path, f.name())))
                    .collect::<Result<_, _>>()?,
                nulls: NullBufferBuilder::new(0),
            },
            other => {
                return Err(terr(
                    path,
                    format!("column type {other} is not supported by the columnar path"),
                ))
            }
        })
    }

    fn append_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::Ts(b, _) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Utf8(b) => b.append_null(),
            Col::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
            Col::Struct {
                children, nulls, ..
            } => {
                for c in children {
                    c.append_null();
                }
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, arrow_schema::ArrowError> {
        Ok(match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::Ts(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Utf8(b) => Arc::new(b.finish()),
            Col::List {
                field,
                offsets,
                nulls,
                child,
            } => {
                let values = child.finish()?;
                let offs = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::try_new(
                    field.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offs)),
                    values,
                    nulls.finish(),
                )?)
            }
            Col::Struct {
                fields,
                children,
                nulls,
            } => {
                let arrays = children
                    .iter_mut()
                    .map(Col::finish)
                    .collect::<Result<Vec<_>, _>>()?;
                let len = arrays.first().map_or(0, |a| a.len());
                Arc::new(StructArray::try_new_with_length(
                    fields.clone(),
                    arrays,
                    nulls.finish(),
                    len,
                )?)
            }
        })
    }
}

/// Columns of a record's fields, checked against the plan.
fn record_cols(
    plan: &[FieldPlan],
    fields: &[FieldRef],
    path: &str,
    out: &mut Vec<Col>,
) -> Result<(), TransformError> {
    let mut i = 0;
    for f in plan {
        let fpath = join(path, &f.name);
        for k in 0..f.columns() {
            let field = fields
                .get(i + k)
                .ok_or_else(|| terr(&fpath, "missing lake column"))?;
            let expected = if k == 1 {
                format!("{}{}", f.name, crate::privacy::KEY_ID_SUFFIX)
            } else {
                f.name.clone()
            };
            if field.name() != &expected {
                return Err(terr(&fpath, format!("lake column is {}", field.name())));
            }
            let col = Col::new(field.data_type(), &fpath)?;
            check_kind(f, k, &col, &fpath)?;
            out.push(col);
        }
        i += f.columns();
    }
    if i != fields.len() {
        return Err(terr(path, "the lake has more columns than the record"));
    }
    Ok(())
}

fn unnull(kind: &Kind) -> &Kind {
    match kind {
        Kind::Nullable(_, inner) => inner,
        k => k,
    }
}

/// Does the value of `f` (output column `k` of it) fit the column `col`?
fn check_kind(f: &FieldPlan, k: usize, col: &Col, path: &str) -> Result<(), TransformError> {
    let mismatch = || terr(path, "lake column type does not match the Avro type");
    match (&f.act, unnull(&f.kind), col) {
        // The pseudonym (k = 0) and its key id (k = 1) are text.
        (Act::Pseudonymize, Kind::Str, Col::Utf8(_)) if k < 2 => Ok(()),
        (Act::Pseudonymize, _, _) => Err(terr(
            path,
            "the columnar path pseudonymizes string fields only",
        )),
        (
            Act::Generalize(Generalization::Ipv4Slash24 | Generalization::Country),
            Kind::Str | Kind::Uuid,
            Col::Utf8(_),
        ) => Ok(()),
        (Act::Generalize(Generalization::Hour), Kind::Long, Col::I64(_) | Col::Ts(..)) => Ok(()),
        (Act::Generalize(_), _, _) => Err(mismatch()),
        (Act::Keep, kind, col) => check_value(kind, col, path),
        (Act::Drop, _, _) => Err(mismatch()),
    }
}

fn check_value(kind: &Kind, col: &Col, path: &str) -> Result<(), TransformError> {
    let ok = match (unnull(kind), col) {
        (Kind::Bool, Col::Bool(_))
        | (Kind::Int, Col::I32(_))
        | (Kind::Long, Col::I64(_) | Col::Ts(..))
        | (Kind::Float, Col::F32(_))
        | (Kind::Double, Col::F64(_))
        | (Kind::Str | Kind::Uuid | Kind::Enum(_), Col::Utf8(_)) => true,
        (Kind::Array(item), Col::List { child, .. }) => {
            return check_value(item, child, &format!("{path}[]"))
        }
        (Kind::Record(fields), Col::Struct { children, .. }) => {
            let mut i = 0;
            for f in fields {
                let fpath = join(path, &f.name);
                for k in 0..f.columns() {
                    let c = children
                        .get(i + k)
                        .ok_or_else(|| terr(&fpath, "missing lake column"))?;
                    check_kind(f, k, c, &fpath)?;
                }
                i += f.columns();
            }
            i == children.len()
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(terr(path, "lake column type does not match the Avro type"))
    }
}

/// Rows of one table being built as Arrow columns.
#[derive(Debug)]
pub struct ColumnarTable {
    plan: Arc<ColumnarPlan>,
    pseudonymizer: Pseudonymizer,
    cols: Vec<Col>,
    rows: usize,
    pseudonyms: PseudonymCache,
    countries: HashMap<String, Option<&'static str>>,
    networks: HashMap<String, Option<Box<str>>>,
}

impl ColumnarTable {
    /// An empty table of `plan`'s record type.
    pub fn new(
        plan: Arc<ColumnarPlan>,
        pseudonymizer: Pseudonymizer,
    ) -> Result<ColumnarTable, TransformError> {
        let cols = plan.columns()?;
        Ok(ColumnarTable {
            plan,
            pseudonymizer,
            cols,
            rows: 0,
            pseudonyms: PseudonymCache::default(),
            countries: HashMap::new(),
            networks: HashMap::new(),
        })
    }

    /// Rows appended since the last [`ColumnarTable::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The plan.
    pub fn plan(&self) -> &Arc<ColumnarPlan> {
        &self.plan
    }

    /// Append the row [`ColumnarPlan::decode`] put in `scratch` (decoded
    /// from `datum`, with this table's plan), read at `partition`/`offset`.
    pub fn append(&mut self, scratch: &Scratch, datum: &[u8], partition: i32, offset: i64) {
        if scratch.datum_len != datum.len() {
            // Not the datum the cells point into: a caller bug, never input.
            debug_assert!(false, "scratch was decoded from another datum");
            return;
        }
        let mut e = Emitter {
            datum,
            cells: &scratch.cells,
            at: 0,
            pseudonymizer: &self.pseudonymizer,
            pseudonyms: &mut self.pseudonyms,
            countries: &mut self.countries,
            networks: &mut self.networks,
        };
        let data = self.cols.len() - 2;
        e.record(&self.plan.fields, &mut self.cols[..data]);
        if let Col::I32(b) = &mut self.cols[data] {
            b.append_value(partition);
        }
        if let Col::I64(b) = &mut self.cols[data + 1] {
            b.append_value(offset);
        }
        self.rows += 1;
    }

    /// The rows as one record batch; the table is empty again afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let arrays = self
            .cols
            .iter_mut()
            .map(Col::finish)
            .collect::<Result<Vec<_>, _>>()?;
        self.rows = 0;
        RecordBatch::try_new(self.plan.schema.clone(), arrays)
    }
}

/// Walks the plan and the cells together, appending to the columns.
struct Emitter<'a> {
    datum: &'a [u8],
    cells: &'a [Cell],
    at: usize,
    pseudonymizer: &'a Pseudonymizer,
    pseudonyms: &'a mut PseudonymCache,
    countries: &'a mut HashMap<String, Option<&'static str>>,
    networks: &'a mut HashMap<String, Option<Box<str>>>,
}

/// Recent pseudonyms by purpose and value: the same devices report again
/// and again, and a lookup is cheaper than the two SHA-256 blocks of an
/// HMAC. Bounded (cleared when full); lives as long as its table buffer.
#[derive(Debug, Default)]
struct PseudonymCache {
    by_purpose: Vec<(String, HashMap<String, [u8; 32]>)>,
    buf: [u8; 32],
}

impl PseudonymCache {
    fn get(&mut self, p: &Pseudonymizer, purpose: &str, value: &str) -> &str {
        let i = match self.by_purpose.iter().position(|(n, _)| n == purpose) {
            Some(i) => i,
            None => {
                self.by_purpose.push((purpose.to_string(), HashMap::new()));
                self.by_purpose.len() - 1
            }
        };
        let map = &mut self.by_purpose[i].1;
        if let Some(hex) = map.get(value) {
            self.buf = *hex;
        } else {
            p.pseudonymize_into(purpose, value, &mut self.buf);
            if map.len() >= PSEUDONYM_CACHE {
                map.clear();
            }
            map.insert(value.to_string(), self.buf);
        }
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }
}

/// A string cell's text (validated UTF-8 when decoded).
fn text_at(datum: &[u8], s: u32, n: u32) -> &str {
    datum
        .get(s as usize..(s + n) as usize)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default()
}

impl<'a> Emitter<'a> {
    fn next(&mut self) -> Cell {
        let c = self.cells.get(self.at).copied().unwrap_or(Cell::Null);
        self.at += 1;
        c
    }

    fn text(&self, s: u32, n: u32) -> &'a str {
        text_at(self.datum, s, n)
    }

    fn record(&mut self, fields: &[FieldPlan], cols: &mut [Col]) {
        let mut i = 0;
        for f in fields {
            match f.act {
                Act::Drop => {}
                Act::Keep => self.value(&f.kind, &mut cols[i]),
                Act::Pseudonymize => {
                    let cell = self.next();
                    let (head, tail) = cols.split_at_mut(i + 1);
                    if let (Col::Utf8(p), Some(Col::Utf8(k))) = (&mut head[i], tail.first_mut()) {
                        match cell {
                            Cell::Str(s, n) => {
                                let text = self.text(s, n);
                                p.append_value(self.pseudonyms.get(
                                    self.pseudonymizer,
                                    &f.name,
                                    text,
                                ));
                                k.append_value(self.pseudonymizer.key_id());
                            }
                            _ => {
                                p.append_null();
                                k.append_null();
                            }
                        }
                    }
                }
                Act::Generalize(g) => {
                    let cell = self.next();
                    self.generalize(g, &f.kind, cell, &mut cols[i]);
                }
            }
            i += f.columns();
        }
    }

    fn generalize(&mut self, g: Generalization, kind: &Kind, cell: Cell, col: &mut Col) {
        match (g, cell, col) {
            // As the generic path: only strings (not UUIDs) are generalised.
            (_, Cell::Str(..), col) if matches!(unnull(kind), Kind::Uuid) => col.append_null(),
            (Generalization::Ipv4Slash24, Cell::Str(s, n), Col::Utf8(b)) => {
                let text = self.text(s, n);
                if !self.networks.contains_key(text) {
                    if self.networks.len() >= GENERALIZE_CACHE {
                        self.networks.clear();
                    }
                    self.networks.insert(
                        text.to_string(),
                        ipv4_slash24(text).map(String::into_boxed_str),
                    );
                }
                match self.networks.get(text) {
                    Some(Some(net)) => b.append_value(net),
                    _ => b.append_null(),
                }
            }
            (Generalization::Country, Cell::Str(s, n), Col::Utf8(b)) => {
                let text = self.text(s, n);
                let code = match self.countries.get(text) {
                    Some(code) => *code,
                    None => {
                        let code = country_code(text);
                        if self.countries.len() >= GENERALIZE_CACHE {
                            self.countries.clear();
                        }
                        self.countries.insert(text.to_string(), code);
                        code
                    }
                };
                match code {
                    Some(c) => b.append_value(c),
                    None => b.append_null(),
                }
            }
            (Generalization::Hour, Cell::I64(ms), Col::I64(b)) => {
                b.append_value(truncate_to_hour(ms))
            }
            (Generalization::Hour, Cell::I64(ms), Col::Ts(b, _)) => {
                b.append_value(truncate_to_hour(ms))
            }
            (_, _, col) => col.append_null(),
        }
    }

    fn value(&mut self, kind: &Kind, col: &mut Col) {
        if let Kind::Record(fields) = unnull(kind) {
            // A record is its fields' cells; a nullable one is preceded by
            // `Some`, or is a single `Null`.
            if matches!(kind, Kind::Nullable(..)) && matches!(self.next(), Cell::Null) {
                col.append_null();
                return;
            }
            if let Col::Struct {
                children, nulls, ..
            } = col
            {
                self.record(fields, children);
                nulls.append_non_null();
            }
            return;
        }
        let cell = self.next();
        match (cell, unnull(kind), col) {
            (Cell::Null, _, col) => col.append_null(),
            (Cell::Bool(v), _, Col::Bool(b)) => b.append_value(v),
            (Cell::I32(v), _, Col::I32(b)) => b.append_value(v),
            (Cell::I64(v), _, Col::I64(b)) => b.append_value(v),
            (Cell::I64(v), _, Col::Ts(b, _)) => b.append_value(v),
            (Cell::F32(v), _, Col::F32(b)) => {
                if v.is_finite() {
                    b.append_value(v)
                } else {
                    b.append_null()
                }
            }
            (Cell::F64(v), _, Col::F64(b)) => {
                if v.is_finite() {
                    b.append_value(v)
                } else {
                    b.append_null()
                }
            }
            (Cell::Str(s, n), Kind::Uuid, Col::Utf8(b)) => {
                let text = self.text(s, n);
                if is_canonical_uuid(text) {
                    b.append_value(text);
                } else {
                    match uuid::Uuid::try_parse(text) {
                        Ok(u) => {
                            let _ = write!(b, "{u}");
                            b.append_value("");
                        }
                        Err(_) => b.append_null(),
                    }
                }
            }
            (Cell::Str(s, n), _, Col::Utf8(b)) => b.append_value(self.text(s, n)),
            (Cell::Sym(i), Kind::Enum(symbols), Col::Utf8(b)) => {
                b.append_value(symbols.get(i as usize).map_or("", String::as_str))
            }
            (
                Cell::Len(n),
                Kind::Array(item),
                Col::List {
                    offsets,
                    nulls,
                    child,
                    ..
                },
            ) => {
                for _ in 0..n {
                    self.value(item, child);
                }
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + n as i32);
                nulls.append_non_null();
            }
            // Cannot happen for a plan checked against its columns.
            (_, _, col) => col.append_null(),
        }
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower-case hex: how a UUID prints.
fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

#[cfg(test)]
mod tests;
