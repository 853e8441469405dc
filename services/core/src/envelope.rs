//! The framing of signed records outside Kafka (the Firehose uplink, and
//! the S3 objects Firehose writes).
//!
//! Kafka carries a record's topic, key and signature headers next to its
//! payload. Firehose carries one opaque blob per record, so the edge puts
//! all of them in the blob, and the processor reads them back from the S3
//! objects Firehose delivers, verifying the signature exactly as it would
//! for a Kafka message.
//!
//! # Format, version 1 (`fleetpulse-envelope-v1`)
//!
//! One record is one line: a JSON object in UTF-8 terminated by a single
//! `\n` (0x0A). Firehose concatenates records into S3 objects without a
//! separator, so the newline is part of each record, and an S3 object is
//! newline-delimited JSON (one envelope per line; blank lines are ignored).
//! If the delivery stream compresses (GZIP, Snappy, ZIP), decompress the
//! object first. Members, always in this order, no others:
//!
//! | member    | JSON type | content |
//! |-----------|-----------|---------|
//! | `v`       | number    | `1` (format version; readers reject others) |
//! | `topic`   | string    | the Kafka topic the record would have had, e.g. `fleetpulse.raw.device_status` (it is signed) |
//! | `key`     | string    | the message key, standard base64 with padding (RFC 4648 §4) |
//! | `headers` | array     | `[name, value]` pairs in order: `name` a string, `value` base64 of the header bytes; the signature header `fps` (57 bytes, see [`crate::signing`]) and, on dead letters, the `fp-error-*` headers |
//! | `payload` | string    | the record value, base64: Avro single-object encoding (`C3 01` + fingerprint + datum), or the raw device response on the DLQ topic |
//!
//! The signature is `HMAC-SHA256` over (topic, key, seq, ts, payload) as
//! on Kafka: verify with
//! [`SigningKey::verify`](crate::signing::SigningKey::verify)`(topic, key,
//! &env.signature_fields()?, payload)`. Anything changed in the line (the
//! topic included) breaks it. A record may appear more than once (Firehose
//! is at-least-once, and the edge re-sends what was not acknowledged); the
//! sequence number in `fps` / the event id make duplicates recognisable.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::signing::{SignatureError, SignatureFields};

/// The format version written by [`Envelope::to_line`].
pub const VERSION: u32 = 1;

/// One signed record as carried outside Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Kafka topic of the record (signed).
    pub topic: String,
    /// Message key (the device id, or the device address on dead letters).
    pub key: Vec<u8>,
    /// Headers, signature headers included, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record value.
    pub payload: Vec<u8>,
}

/// Why a line is not an envelope. A retry never helps: the data is bad.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or members missing / mistyped / unknown.
    #[error("line {line}: not a fleetpulse envelope: {reason}")]
    Malformed {
        /// 1-based line number in the object.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A version this reader does not know.
    #[error("line {line}: envelope version {version} is not supported (expected {VERSION})")]
    Version {
        /// 1-based line number.
        line: usize,
        /// Version found.
        version: u32,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    topic: String,
    key: String,
    headers: Vec<(String, String)>,
    payload: String,
}

impl Envelope {
    /// The envelope as one line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let w = Wire {
            v: VERSION,
            topic: self.topic.clone(),
            key: B64.encode(&self.key),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), B64.encode(v)))
                .collect(),
            payload: B64.encode(&self.payload),
        };
        // Serialising a struct of strings and numbers cannot fail.
        let mut out = serde_json::to_vec(&w).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parse one line (with or without its `\n`); `line` numbers errors.
    pub fn from_line(text: &[u8], line: usize) -> Result<Envelope, EnvelopeError> {
        let bad = |reason: String| EnvelopeError::Malformed { line, reason };
        let w: Wire = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
        if w.v != VERSION {
            return Err(EnvelopeError::Version { line, version: w.v });
        }
        let b64 = |what: &str, s: &str| {
            B64.decode(s)
                .map_err(|e| bad(format!("{what} is not base64: {e}")))
        };
        let mut headers = Vec::with_capacity(w.headers.len());
        for (k, v) in &w.headers {
            headers.push((k.clone(), b64(&format!("header {k}"), v)?));
        }
        Ok(Envelope {
            key: b64("key", &w.key)?,
            payload: b64("payload", &w.payload)?,
            topic: w.topic,
            headers,
        })
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The signature headers, for [`crate::signing::SigningKey::verify`].
    pub fn signature_fields(&self) -> Result<SignatureFields, SignatureError> {
        SignatureFields::from_headers(
            self.headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
        )
    }
}

/// Every envelope of an (uncompressed) S3 object written by Firehose, in
/// order; blank lines are skipped, a bad line is an error for that line only.
pub fn decode_object(bytes: &[u8]) -> impl Iterator<Item = Result<Envelope, EnvelopeError>> + '_ {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| Envelope::from_line(l, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{SigningKey, HDR_SIG};

    fn signed(k: &SigningKey, seq: u64, payload: &[u8]) -> Envelope {
        let sig = k.sign(
            "fp.raw.device_status",
            b"dev-1",
            seq,
            1_700_000_000_000,
            payload,
        );
        Envelope {
            topic: "fp.raw.device_status".into(),
            key: b"dev-1".to_vec(),
            headers: vec![(HDR_SIG.into(), sig.to_bytes().to_vec())],
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn round_trip_and_verify() {
        let k = SigningKey::derive(b"0123456789abcdef", "c1");
        let a = signed(&k, 7, &[0xC3, 0x01, 0, 1, 2, 0xFF, b'\n']);
        let b = signed(&k, 8, b"");
        let mut object = a.to_line();
        assert_eq!(object.last(), Some(&b'\n'));
        assert_eq!(object.iter().filter(|c| **c == b'\n').count(), 1);
        object.extend(b.to_line());
        let back: Vec<Envelope> = decode_object(&object).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, vec![a.clone(), b]);
        let f = back[0].signature_fields().unwrap();
        assert_eq!(f.seq, 7);
        k.verify(&back[0].topic, &back[0].key, &f, &back[0].payload)
            .unwrap();
        // Moving the record to another topic breaks the signature.
        assert!(k
            .verify("fp.raw.supply", &back[0].key, &f, &back[0].payload)
            .is_err());
        // The documented member order.
        let text = String::from_utf8(a.to_line()).unwrap();
        assert!(text.starts_with("{\"v\":1,\"topic\":\"fp.raw.device_status\",\"key\":\"ZGV2LTE=\",\"headers\":[[\"fps\",\""), "{text}");
    }

    #[test]
    fn bad_lines_are_named() {
        let obj = b"{\"v\":1,\"topic\":\"t\",\"key\":\"\",\"headers\":[],\"payload\":\"@@\"}\n\n{\"v\":2,\"topic\":\"t\",\"key\":\"\",\"headers\":[],\"payload\":\"\"}\nnot json\n";
        let r: Vec<_> = decode_object(obj).collect();
        assert_eq!(r.len(), 3);
        assert!(
            matches!(&r[0], Err(EnvelopeError::Malformed { line: 1, reason }) if reason.contains("payload"))
        );
        assert!(matches!(
            r[1],
            Err(EnvelopeError::Version {
                line: 3,
                version: 2
            })
        ));
        assert!(matches!(
            r[2],
            Err(EnvelopeError::Malformed { line: 4, .. })
        ));
    }
}
