//! Avro single-object encoding: `C3 01`, the 8-byte CRC-64-AVRO fingerprint of
//! the writer schema (little-endian), then the Avro binary datum.
//!
//! Any Avro library decodes this without a schema registry: the fingerprint
//! names one of the `schemas/*.avsc` files. Decoding untrusted bytes never
//! panics: every failure is a [`CodecError`] that names what was wrong, which
//! the processor puts on the dead-letter topic.

use apache_avro::types::Value;

use crate::records::Record;
use crate::schema::{writer_schema, RecordType};

/// The two magic bytes that open a single-object encoded message.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];

/// Largest allocation the Avro decoder may make for one value (strings, arrays).
/// Hostile length prefixes fail cleanly instead of exhausting memory.
const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Why bytes could not be encoded or decoded. None of these is helped by a retry.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer than the 10 header bytes.
    #[error("message too short for single-object encoding ({0} bytes, need at least 10)")]
    TooShort(usize),
    /// The first two bytes are not `C3 01`.
    #[error("not Avro single-object encoding: magic is {0:02x?}, expected c3 01")]
    BadMagic([u8; 2]),
    /// The fingerprint is not one of our schemas.
    #[error("unknown schema fingerprint {0}")]
    UnknownFingerprint(String),
    /// The fingerprint is one of ours, but not the one the caller expected.
    #[error("schema mismatch: message is {found}, expected {expected}")]
    WrongType {
        /// What the caller wanted.
        expected: RecordType,
        /// What the message is.
        found: RecordType,
    },
    /// The datum does not decode with the schema.
    #[error("datum does not match schema {record_type}: {reason}")]
    Datum {
        /// Schema tried.
        record_type: RecordType,
        /// The decoder's words.
        reason: String,
    },
    /// A value could not be encoded with its schema (a programming error on the writer side).
    #[error("cannot encode {record_type}: {reason}")]
    Encode {
        /// Schema tried.
        record_type: RecordType,
        /// The encoder's words.
        reason: String,
    },
}

impl CodecError {
    /// A short, stable class for metrics and DLQ headers.
    pub fn class(&self) -> &'static str {
        match self {
            CodecError::TooShort(_) | CodecError::BadMagic(_) => "not_avro",
            CodecError::UnknownFingerprint(_) => "unknown_schema",
            CodecError::WrongType { .. } => "wrong_schema",
            CodecError::Datum { .. } => "bad_datum",
            CodecError::Encode { .. } => "encode",
        }
    }
}

fn init_limits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    });
}

/// Encode a record of the contract.
pub fn encode<R: Record>(record: &R) -> Result<Vec<u8>, CodecError> {
    let value = apache_avro::to_value(record).map_err(|e| CodecError::Encode {
        record_type: R::TYPE,
        reason: e.to_string(),
    })?;
    encode_value(R::TYPE, value)
}

/// Encode a generic Avro value with the schema of `record_type`.
pub fn encode_value(record_type: RecordType, value: Value) -> Result<Vec<u8>, CodecError> {
    init_limits();
    let compiled = record_type.compiled();
    let resolved = value
        .resolve(&compiled.schema)
        .map_err(|e| CodecError::Encode {
            record_type,
            reason: e.to_string(),
        })?;
    let datum =
        apache_avro::to_avro_datum(&compiled.schema, resolved).map_err(|e| CodecError::Encode {
            record_type,
            reason: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(10 + datum.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&compiled.fingerprint);
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Read the header: which record type the bytes claim to be.
pub fn peek_type(bytes: &[u8]) -> Result<RecordType, CodecError> {
    if bytes.len() < 10 {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[..2] != MAGIC {
        return Err(CodecError::BadMagic([bytes[0], bytes[1]]));
    }
    RecordType::from_fingerprint(&bytes[2..10])
        .ok_or_else(|| CodecError::UnknownFingerprint(hex::encode(&bytes[2..10])))
}

/// Decode any record of the contract into a generic Avro value.
pub fn decode_value(bytes: &[u8]) -> Result<(RecordType, Value), CodecError> {
    init_limits();
    let record_type = peek_type(bytes)?;
    let reader_schema = record_type.schema();
    // The current schema, or an older released version that the writer used:
    // then the datum is read with the writer's schema and resolved to the
    // current one (added fields take their defaults).
    let (schema, resolve_to) = match writer_schema(&bytes[2..10]) {
        Some(w) if !w.is_current => (&w.schema, Some(reader_schema)),
        _ => (reader_schema, None),
    };
    // apache-avro turns end-of-input inside a union or boolean into null
    // instead of an error. A one-byte sentinel after the datum makes
    // truncation detectable: a complete datum leaves exactly the sentinel.
    let sentinel = [0u8; 1];
    let mut reader = std::io::Read::chain(&bytes[10..], &sentinel[..]);
    let value = apache_avro::from_avro_datum(schema, &mut reader, resolve_to).map_err(|e| {
        CodecError::Datum {
            record_type,
            reason: e.to_string(),
        }
    })?;
    let (rest, tail) = reader.into_inner();
    if tail.is_empty() {
        return Err(CodecError::Datum {
            record_type,
            reason: "datum is truncated".into(),
        });
    }
    if !rest.is_empty() {
        return Err(CodecError::Datum {
            record_type,
            reason: format!("{} trailing bytes after the datum", rest.len()),
        });
    }
    Ok((record_type, value))
}

/// Decode bytes that must be a record of type `R`.
pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, CodecError> {
    let (found, value) = decode_value(bytes)?;
    if found != R::TYPE {
        return Err(CodecError::WrongType {
            expected: R::TYPE,
            found,
        });
    }
    apache_avro::from_value::<R>(&value).map_err(|e| CodecError::Datum {
        record_type: found,
        reason: e.to_string(),
    })
}
