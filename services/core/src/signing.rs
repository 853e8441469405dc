//! Record signatures: proof that a record came from a connector holding its secret.
//!
//! Each connector has a secret that never crosses the network. Both ends
//! derive a signing key from it (`HMAC-SHA256(secret, "fleetpulse-sign-v1|" + connector_id)`),
//! and identify the key by the first 8 bytes of `SHA-256(key)` (the key id,
//! shown in hex), so keys can rotate without ambiguity and the verifier
//! finds the connector from the key id alone.
//!
//! A publish batch is spread over many topics and partitions by Kafka, so the
//! verifiable unit is the record. Every message carries ONE binary header,
//! [`HDR_SIG`] (`fps`, 57 bytes), because site uplinks are thin and the
//! signature is sent with every record:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 1 | format version, `1` |
//! | 1 | 8 | key id |
//! | 9 | 8 | sequence number in the connector's stream, unsigned big-endian |
//! | 17 | 8 | signing time, ms since the epoch, signed big-endian |
//! | 25 | 32 | `HMAC-SHA256(key, version, topic, key, seq, ts, payload)` |
//!
//! The MAC input is the version byte, then topic, message key and payload
//! each preceded by its length (u64 big-endian), with seq and ts as 8-byte
//! big-endian integers between key and payload. Changing any of them, or
//! moving the payload to another topic, breaks the signature. The connector
//! id is not sent: the key id names the key, and the processor checks that
//! the record's own `connector_id` is the key's connector.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The signature header (one per record, binary, [`SIG_LEN`] bytes).
pub const HDR_SIG: &str = "fps";
/// Format version of the signature header, first byte of its value.
pub const SIG_VERSION: u8 = 1;
/// Length of the signature header value.
pub const SIG_LEN: usize = 1 + 8 + 8 + 8 + 32;

/// A connector's signing key, derived from its secret.
#[derive(Clone)]
pub struct SigningKey {
    /// HMAC state after absorbing the key, cloned per record (the key
    /// schedule is computed once per connector, not per message).
    mac: HmacSha256,
    key_id: [u8; 8],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// The signed metadata of one record: the content of the [`HDR_SIG`] header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureFields {
    /// Key id (first 8 bytes of `SHA-256(key)`).
    pub key_id: [u8; 8],
    /// Sequence number in the connector's stream.
    pub seq: u64,
    /// Signing time, ms since the epoch.
    pub ts: i64,
    /// `HMAC-SHA256` of the record.
    pub mac: [u8; 32],
}

/// Why a signature did not verify. None is helped by a retry.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is missing, or its value is not a signature of a known format.
    #[error("missing or malformed signature header {0}")]
    MissingHeader(&'static str),
    /// No configured connector has this key id.
    #[error("unknown key id {0}: no configured connector secret derives it")]
    UnknownConnector(String),
    /// The key id is not the one derived from the configured secret.
    #[error("key id {found} does not match the configured key {expected}")]
    KeyMismatch {
        /// Key id of the configured secret.
        expected: String,
        /// Key id in the record.
        found: String,
    },
    /// The MAC does not match.
    #[error("bad signature")]
    BadSignature,
}

impl SigningKey {
    /// Derive the signing key of `connector_id` from its secret.
    pub fn derive(secret: &[u8], connector_id: &str) -> SigningKey {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"fleetpulse-sign-v1|");
        mac.update(connector_id.as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&Sha256::digest(key)[..8]);
        SigningKey {
            mac: HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length"),
            key_id,
        }
    }

    /// The public identifier of this key, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(self.key_id)
    }

    /// The public identifier of this key, as sent.
    pub fn key_id_bytes(&self) -> [u8; 8] {
        self.key_id
    }

    fn mac(&self, topic: &str, msg_key: &[u8], seq: u64, ts: i64, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&[SIG_VERSION]);
        for part in [topic.as_bytes(), msg_key] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&seq.to_be_bytes());
        mac.update(&ts.to_be_bytes());
        mac.update(&(payload.len() as u64).to_be_bytes());
        mac.update(payload);
        mac
    }

    /// Sign one record: the fields of its signature header.
    pub fn sign(
        &self,
        topic: &str,
        msg_key: &[u8],
        seq: u64,
        ts: i64,
        payload: &[u8],
    ) -> SignatureFields {
        SignatureFields {
            key_id: self.key_id,
            seq,
            ts,
            mac: self
                .mac(topic, msg_key, seq, ts, payload)
                .finalize()
                .into_bytes()
                .into(),
        }
    }

    /// Verify one record's signature (constant time).
    pub fn verify(
        &self,
        topic: &str,
        msg_key: &[u8],
        fields: &SignatureFields,
        payload: &[u8],
    ) -> Result<(), SignatureError> {
        if fields.key_id != self.key_id {
            return Err(SignatureError::KeyMismatch {
                expected: self.key_id(),
                found: fields.key_id_hex(),
            });
        }
        self.mac(topic, msg_key, fields.seq, fields.ts, payload)
            .verify_slice(&fields.mac)
            .map_err(|_| SignatureError::BadSignature)
    }
}

impl SignatureFields {
    /// The key id in hex (logs, reasons).
    pub fn key_id_hex(&self) -> String {
        hex::encode(self.key_id)
    }

    /// The header value ([`SIG_LEN`] bytes).
    pub fn to_bytes(&self) -> [u8; SIG_LEN] {
        let mut out = [0u8; SIG_LEN];
        out[0] = SIG_VERSION;
        out[1..9].copy_from_slice(&self.key_id);
        out[9..17].copy_from_slice(&self.seq.to_be_bytes());
        out[17..25].copy_from_slice(&self.ts.to_be_bytes());
        out[25..].copy_from_slice(&self.mac);
        out
    }

    /// Parse a header value: exactly [`SIG_LEN`] bytes of version 1.
    pub fn from_bytes(v: &[u8]) -> Result<SignatureFields, SignatureError> {
        let v: &[u8; SIG_LEN] = v
            .try_into()
            .map_err(|_| SignatureError::MissingHeader(HDR_SIG))?;
        if v[0] != SIG_VERSION {
            return Err(SignatureError::MissingHeader(HDR_SIG));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&v[1..9]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&v[9..17]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&v[17..25]);
        let mut mac = [0u8; 32];
        mac.copy_from_slice(&v[25..]);
        Ok(SignatureFields {
            key_id,
            seq: u64::from_be_bytes(seq),
            ts: i64::from_be_bytes(ts),
            mac,
        })
    }

    /// Find and parse the signature header among `(name, value)` pairs (the
    /// last one counts when it appears more than once).
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<SignatureFields, SignatureError> {
        let value = headers
            .into_iter()
            .filter(|(name, _)| *name == HDR_SIG)
            .last()
            .and_then(|(_, v)| v)
            .ok_or(SignatureError::MissingHeader(HDR_SIG))?;
        SignatureFields::from_bytes(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = SigningKey::derive(b"s3cret", "conn-1");
        let f = k.sign("t", b"dev", 7, 1000, b"payload");
        assert_eq!(k.verify("t", b"dev", &f, b"payload"), Ok(()));
        assert_eq!(
            k.verify("t", b"dev", &f, b"payloaX"),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            k.verify("u", b"dev", &f, b"payload"),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            k.verify("t", b"dew", &f, b"payload"),
            Err(SignatureError::BadSignature)
        );
        for changed in [
            SignatureFields { seq: 8, ..f },
            SignatureFields { ts: 1001, ..f },
        ] {
            assert_eq!(
                k.verify("t", b"dev", &changed, b"payload"),
                Err(SignatureError::BadSignature)
            );
        }
        let other = SigningKey::derive(b"other", "conn-1");
        assert!(matches!(
            other.verify("t", b"dev", &f, b"payload"),
            Err(SignatureError::KeyMismatch { .. })
        ));
        // Key ids differ per connector even with the same secret.
        assert_ne!(SigningKey::derive(b"s3cret", "conn-2").key_id(), k.key_id());
        assert_eq!(k.key_id().len(), 16);
        assert_eq!(f.key_id_hex(), k.key_id());
    }

    #[test]
    fn header_layout_round_trips_and_rejects_other_formats() {
        let k = SigningKey::derive(b"s3cret", "conn-1");
        let f = k.sign("t", b"dev", 0x0102_0304_0506_0708, 1_763_700_000_000, b"p");
        let bytes = f.to_bytes();
        assert_eq!(bytes.len(), 57);
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..9], &k.key_id_bytes());
        assert_eq!(&bytes[9..17], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[17..25], &1_763_700_000_000i64.to_be_bytes());
        assert_eq!(SignatureFields::from_bytes(&bytes), Ok(f));
        let headers = [("other", Some(&b"x"[..])), (HDR_SIG, Some(&bytes[..]))];
        assert_eq!(SignatureFields::from_headers(headers), Ok(f));
        // Missing, truncated, too long, another version, no value: malformed.
        let bad = SignatureError::MissingHeader(HDR_SIG);
        assert_eq!(
            SignatureFields::from_headers([("x", Some(&b"y"[..]))]),
            Err(bad.clone())
        );
        assert_eq!(SignatureFields::from_bytes(&bytes[..56]), Err(bad.clone()));
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(SignatureFields::from_bytes(&long), Err(bad.clone()));
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(SignatureFields::from_bytes(&v2), Err(bad.clone()));
        assert_eq!(SignatureFields::from_headers([(HDR_SIG, None)]), Err(bad));
    }
}
