//! Trust and decode one Kafka message, or say precisely why not.
//!
//! Order matters: the signature is checked before the payload is parsed, so
//! unauthenticated bytes never reach the Avro decoder; the record type is
//! checked against the topic, because a correctly signed record moved to
//! another topic would otherwise land in the wrong table. Every failure has a
//! short stable class (the DLQ header and metric label) and a reason that
//! never quotes field values.

use std::collections::BTreeMap;

use apache_avro::types::Value;
use fleetpulse_core::codec;
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::signing::{SignatureError, SignatureFields, SigningKey};

/// Why a message cannot go to the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable class: `missing_signature`, `unknown_connector`, `bad_signature`,
    /// `connector_mismatch`, `not_avro`, `unknown_schema`, `wrong_schema`,
    /// `bad_datum`, `unknown_topic`, `malformed` (input that made a reader fail unexpectedly).
    pub class: &'static str,
    /// Human-readable reason (no field values).
    pub reason: String,
}

impl Rejection {
    pub(crate) fn new(class: &'static str, reason: impl Into<String>) -> Rejection {
        Rejection {
            class,
            reason: reason.into(),
        }
    }
}

/// Verifies signatures with the configured connectors' keys and decodes.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: BTreeMap<String, SigningKey>,
}

impl Verifier {
    /// A verifier for connectors with these secrets (connector id -> secret).
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Verifier {
        Verifier {
            keys: secrets
                .into_iter()
                .map(|(id, secret)| (id.to_string(), SigningKey::derive(secret, id)))
                .collect(),
        }
    }

    /// Check the signature headers of a message read from `topic`, decode its
    /// payload and check it is a record of `expected` type.
    pub fn check<'h>(
        &self,
        topic: &str,
        expected: RecordType,
        key: &[u8],
        payload: &[u8],
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> Result<(RecordType, Value), Rejection> {
        let fields = SignatureFields::from_headers(headers)
            .map_err(|e| Rejection::new("missing_signature", e.to_string()))?;
        let signing = self.keys.get(&fields.connector_id).ok_or_else(|| {
            Rejection::new(
                "unknown_connector",
                SignatureError::UnknownConnector(fields.connector_id.clone()).to_string(),
            )
        })?;
        signing
            .verify(topic, key, &fields, payload)
            .map_err(|e| Rejection::new("bad_signature", e.to_string()))?;
        let (found, value) =
            codec::decode_value(payload).map_err(|e| Rejection::new(e.class(), e.to_string()))?;
        if found != expected {
            let e = codec::CodecError::WrongType { expected, found };
            return Err(Rejection::new(e.class(), e.to_string()));
        }
        // A connector may only speak for itself: its key must not vouch for
        // records that claim to come from another connector.
        if record_connector(&value) != Some(fields.connector_id.as_str()) {
            return Err(Rejection::new(
                "connector_mismatch",
                format!(
                    "record's connector_id differs from the signing connector {}",
                    fields.connector_id
                ),
            ));
        }
        Ok((found, value))
    }
}

fn record_connector(value: &Value) -> Option<&str> {
    let Value::Record(fields) = value else {
        return None;
    };
    fields.iter().find_map(|(n, v)| match (n.as_str(), v) {
        ("connector_id", Value::String(s)) => Some(s.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::signing::*;
    use fleetpulse_core::{codec, samples};

    const SECRET: &[u8] = b"a-connector-secret-0001";

    fn signed(
        topic: &str,
        payload: &[u8],
        connector: &str,
        secret: &[u8],
    ) -> Vec<(&'static str, Vec<u8>)> {
        let k = SigningKey::derive(secret, connector);
        let sig = k.sign(topic, b"dev-1", "batch-1", 5, 1000, payload);
        vec![
            (HDR_CONNECTOR, connector.as_bytes().to_vec()),
            (HDR_KEY_ID, k.key_id().as_bytes().to_vec()),
            (HDR_BATCH, b"batch-1".to_vec()),
            (HDR_SEQ, b"5".to_vec()),
            (HDR_TS, b"1000".to_vec()),
            (HDR_SIG, sig.into_bytes()),
        ]
    }

    fn check(
        v: &Verifier,
        topic: &str,
        t: RecordType,
        payload: &[u8],
        h: &[(&'static str, Vec<u8>)],
    ) -> Result<RecordType, &'static str> {
        v.check(
            topic,
            t,
            b"dev-1",
            payload,
            h.iter().map(|(n, v)| (*n, Some(v.as_slice()))),
        )
        .map(|(t, _)| t)
        .map_err(|r| r.class)
    }

    #[test]
    fn classifies_every_failure() {
        let v = Verifier::new([("conn-1", SECRET), ("conn-2", SECRET)]);
        let st = RecordType::DeviceStatus;
        let status = codec::encode(&samples::device_status("S1")).unwrap();
        let hb = codec::encode(&samples::device_heartbeat("S1")).unwrap();

        let ok = signed("t.status", &status, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, &status, &ok), Ok(st));
        // Moved to another topic: the signature covers the topic.
        assert_eq!(check(&v, "t.other", st, &status, &ok), Err("bad_signature"));
        let wrong_secret = signed("t.status", &status, "conn-1", b"another-secret-xxxxx");
        assert_eq!(
            check(&v, "t.status", st, &status, &wrong_secret),
            Err("bad_signature")
        );
        assert_eq!(
            check(&v, "t.status", st, &status, &[]),
            Err("missing_signature")
        );
        let unknown = signed("t.status", &status, "conn-9", SECRET);
        assert_eq!(
            check(&v, "t.status", st, &status, &unknown),
            Err("unknown_connector")
        );
        let wrong = signed("t.status", &hb, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, &hb, &wrong), Err("wrong_schema"));
        let junk = b"\x00\x01random bytes here";
        let h = signed("t.status", junk, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, junk, &h), Err("not_avro"));
        let mut unknown_fp = status.clone();
        unknown_fp[2] ^= 0xff;
        let h = signed("t.status", &unknown_fp, "conn-1", SECRET);
        assert_eq!(
            check(&v, "t.status", st, &unknown_fp, &h),
            Err("unknown_schema")
        );
        let truncated = &status[..status.len() - 3];
        let h = signed("t.status", truncated, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, truncated, &h), Err("bad_datum"));
        // conn-2 signs a record that claims to be from conn-1.
        let h = signed("t.status", &status, "conn-2", SECRET);
        assert_eq!(
            check(&v, "t.status", st, &status, &h),
            Err("connector_mismatch")
        );
    }
}
