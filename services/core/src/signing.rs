//! Record signatures: proof that a record came from a connector holding its secret.
//!
//! Each connector has a secret that never crosses the network. Both ends
//! derive a signing key from it (`HMAC-SHA256(secret, "fleetpulse-sign-v1|" + connector_id)`),
//! and identify the key by the first 8 bytes of `SHA-256(key)` in hex (the key id),
//! so keys can rotate without ambiguity.
//!
//! A publish batch is spread over many topics and partitions by Kafka, so the
//! verifiable unit is the record: every message carries, in headers, the batch
//! id, its sequence number in the connector's stream, the signing time, the key
//! id and `HMAC-SHA256(key, topic | key | batch | seq | ts | payload)`. Changing
//! any of them, or moving the payload to another topic, breaks the signature.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Header with the key id.
pub const HDR_KEY_ID: &str = "fp-key-id";
/// Header with the batch id (UUID v7 of the publish batch).
pub const HDR_BATCH: &str = "fp-batch";
/// Header with the connector's monotonic sequence number.
pub const HDR_SEQ: &str = "fp-seq";
/// Header with the signing time, ms since epoch.
pub const HDR_TS: &str = "fp-ts";
/// Header with the connector id.
pub const HDR_CONNECTOR: &str = "fp-connector";
/// Header with the hex HMAC.
pub const HDR_SIG: &str = "fp-sig";

/// A connector's signing key, derived from its secret.
#[derive(Clone)]
pub struct SigningKey {
    /// HMAC state after absorbing the key, cloned per record (the key
    /// schedule is computed once per connector, not per message).
    mac: HmacSha256,
    key_id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The signed metadata of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFields {
    /// Connector id.
    pub connector_id: String,
    /// Key id.
    pub key_id: String,
    /// Batch id.
    pub batch: String,
    /// Sequence number.
    pub seq: u64,
    /// Signing time, ms.
    pub ts: i64,
    /// Hex HMAC.
    pub sig: String,
}

/// Why a signature did not verify. None is helped by a retry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// A header is missing or not parseable.
    #[error("missing or malformed signature header {0}")]
    MissingHeader(&'static str),
    /// No secret is configured for the connector.
    #[error("unknown connector {0}: no secret configured")]
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
        let key_id = hex::encode(&Sha256::digest(key)[..8]);
        SigningKey {
            mac: HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length"),
            key_id,
        }
    }

    /// The public identifier of this key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn mac(
        &self,
        topic: &str,
        msg_key: &[u8],
        batch: &str,
        seq: u64,
        ts: i64,
        payload: &[u8],
    ) -> HmacSha256 {
        let mut mac = self.mac.clone();
        for part in [topic.as_bytes(), msg_key, batch.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&seq.to_be_bytes());
        mac.update(&ts.to_be_bytes());
        mac.update(&(payload.len() as u64).to_be_bytes());
        mac.update(payload);
        mac
    }

    /// Sign one record.
    pub fn sign(
        &self,
        topic: &str,
        msg_key: &[u8],
        batch: &str,
        seq: u64,
        ts: i64,
        payload: &[u8],
    ) -> String {
        hex::encode(
            self.mac(topic, msg_key, batch, seq, ts, payload)
                .finalize()
                .into_bytes(),
        )
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
                expected: self.key_id.clone(),
                found: fields.key_id.clone(),
            });
        }
        let mac = self.mac(
            topic,
            msg_key,
            &fields.batch,
            fields.seq,
            fields.ts,
            payload,
        );
        // A SHA-256 MAC is 64 hex digits: decoded on the stack.
        let mut sig = [0u8; 32];
        let checked = if fields.sig.len() == 2 * sig.len() {
            hex::decode_to_slice(&fields.sig, &mut sig)
                .map_err(|_| SignatureError::MissingHeader(HDR_SIG))?;
            mac.verify_slice(&sig)
        } else {
            let sig =
                hex::decode(&fields.sig).map_err(|_| SignatureError::MissingHeader(HDR_SIG))?;
            mac.verify_slice(&sig)
        };
        checked.map_err(|_| SignatureError::BadSignature)
    }
}

impl SignatureFields {
    /// Read the signature headers from `(name, value)` pairs.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<SignatureFields, SignatureError> {
        let mut connector_id = None;
        let mut key_id = None;
        let mut batch = None;
        let mut seq = None;
        let mut ts = None;
        let mut sig = None;
        for (name, value) in headers {
            let Some(text) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            match name {
                HDR_CONNECTOR => connector_id = Some(text.to_string()),
                HDR_KEY_ID => key_id = Some(text.to_string()),
                HDR_BATCH => batch = Some(text.to_string()),
                HDR_SEQ => seq = text.parse().ok(),
                HDR_TS => ts = text.parse().ok(),
                HDR_SIG => sig = Some(text.to_string()),
                _ => {}
            }
        }
        Ok(SignatureFields {
            connector_id: connector_id.ok_or(SignatureError::MissingHeader(HDR_CONNECTOR))?,
            key_id: key_id.ok_or(SignatureError::MissingHeader(HDR_KEY_ID))?,
            batch: batch.ok_or(SignatureError::MissingHeader(HDR_BATCH))?,
            seq: seq.ok_or(SignatureError::MissingHeader(HDR_SEQ))?,
            ts: ts.ok_or(SignatureError::MissingHeader(HDR_TS))?,
            sig: sig.ok_or(SignatureError::MissingHeader(HDR_SIG))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = SigningKey::derive(b"s3cret", "conn-1");
        let sig = k.sign("t", b"dev", "b1", 7, 1000, b"payload");
        let f = SignatureFields {
            connector_id: "conn-1".into(),
            key_id: k.key_id().into(),
            batch: "b1".into(),
            seq: 7,
            ts: 1000,
            sig,
        };
        assert_eq!(k.verify("t", b"dev", &f, b"payload"), Ok(()));
        assert_eq!(
            k.verify("t", b"dev", &f, b"payloaX"),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            k.verify("u", b"dev", &f, b"payload"),
            Err(SignatureError::BadSignature)
        );
        let other = SigningKey::derive(b"other", "conn-1");
        assert!(matches!(
            other.verify("t", b"dev", &f, b"payload"),
            Err(SignatureError::KeyMismatch { .. })
        ));
        // Key ids differ per connector even with the same secret.
        assert_ne!(SigningKey::derive(b"s3cret", "conn-2").key_id(), k.key_id());
    }
}
