//! Sealed dead letters: what the processor rejects stays recoverable, but
//! only for whoever holds the DLQ key.
//!
//! A rejected record is still a raw record: its key is the device's serial
//! number and its payload may carry MACs, IPs, user names. The lake never
//! sees those fields, and the dead-letter topic — read by operators, tools
//! and alerting that are not cleared for personal data — must not either.
//! Dropping the bytes would lose the record (a bad record is often a bug on
//! our side, to be fixed and replayed), so the payload is encrypted with
//! ChaCha20-Poly1305 under a key of its own purpose (`dlq_key`), and the
//! message key is replaced by its HMAC pseudonym, which keeps one device's
//! dead letters on one partition without naming it.
//!
//! Sealed payload layout (`fp-sealed: <key id>` header on the message):
//!
//! | bytes | content |
//! |---|---|
//! | 4 | magic `FPS1` |
//! | 12 | random nonce |
//! | rest | ChaCha20-Poly1305 ciphertext + 16-byte tag; associated data: the key id |
//!
//! The 32-byte cipher key is `HMAC-SHA256(dlq_key, "fleetpulse-dlq-seal-v1")`,
//! the pseudonym key `HMAC-SHA256(dlq_key, "fleetpulse-dlq-key-v1")`.
//! `tests/py/fpcheck.py dlq --open-key` opens them with Python's
//! `cryptography` package.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use fleetpulse_core::config::{resolve_secret, ConfigError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// First bytes of a sealed payload.
pub const MAGIC: &[u8; 4] = b"FPS1";

/// Why a sealed payload does not open. A retry never helps.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Too short or without the magic.
    #[error("not a sealed dead letter")]
    NotSealed,
    /// Wrong key, wrong key id, or the bytes were changed.
    #[error("the sealed dead letter does not open with this key")]
    Tampered,
}

fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Seals dead-letter payloads and pseudonymises their keys.
#[derive(Clone)]
pub struct DlqSealer {
    cipher: ChaCha20Poly1305,
    pseudonym_key: [u8; 32],
    key_id: String,
}

impl std::fmt::Debug for DlqSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqSealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl DlqSealer {
    /// A sealer for `key` (the resolved `dlq_key` secret) named `key_id`.
    pub fn new(key: &[u8], key_id: &str) -> DlqSealer {
        let cipher_key = derive(key, b"fleetpulse-dlq-seal-v1");
        DlqSealer {
            cipher: ChaCha20Poly1305::new((&cipher_key).into()),
            pseudonym_key: derive(key, b"fleetpulse-dlq-key-v1"),
            key_id: key_id.to_string(),
        }
    }

    /// The key id, for the `fp-sealed` header.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypt `plaintext`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: self.key_id.as_bytes(),
        };
        // Encryption only fails for messages above 256 GiB.
        let ct = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + 12 + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt what [`DlqSealer::seal`] produced.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 4 + 12 + 16 || &sealed[..4] != MAGIC {
            return Err(SealError::NotSealed);
        }
        let nonce = chacha20poly1305::Nonce::from_slice(&sealed[4..16]);
        self.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[16..],
                    aad: self.key_id.as_bytes(),
                },
            )
            .map_err(|_| SealError::Tampered)
    }

    /// The pseudonym that replaces a dead letter's message key: hex of
    /// `HMAC-SHA256(pseudonym key, key)`, first 16 bytes.
    pub fn message_key(&self, key: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.pseudonym_key)
            .unwrap_or_else(|_| unreachable!());
        mac.update(key);
        let digest = mac.finalize().into_bytes();
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes()
    }
}

/// The sealer the configuration asks for: `dlq_key`, or when it is not set
/// a key derived from `pseudonym_key` (logged as a warning: production
/// should keep the two purposes' keys apart).
pub fn from_config(config: &crate::ProcessorConfig) -> Result<DlqSealer, ConfigError> {
    match config.dlq_key.as_deref() {
        Some(spec) if !spec.is_empty() => Ok(DlqSealer::new(
            &resolve_secret("dlq_key", spec)?,
            &config.dlq_key_id,
        )),
        _ => {
            let spec = config.pseudonym_key.as_deref().unwrap_or_default();
            let base = resolve_secret("pseudonym_key", spec)?;
            tracing::warn!(
                "dlq_key is not set: dead letters are sealed with a key derived from \
                 pseudonym_key; set dlq_key to keep the two purposes apart"
            );
            Ok(DlqSealer::new(
                &derive(&base, b"fleetpulse-dlq-from-pseudonym-key-v1"),
                &config.dlq_key_id,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_detects_tampering() {
        let s = DlqSealer::new(b"a dlq key of enough length", "dlq-v1");
        let plain = b"serial CANARY-SN-123 and mac 00:11:22:33:44:55";
        let sealed = s.seal(plain);
        assert_eq!(&sealed[..4], MAGIC);
        assert!(!sealed.windows(6).any(|w| w == b"CANARY"));
        assert_eq!(s.open(&sealed).unwrap(), plain);
        // Fresh nonce each time.
        assert_ne!(s.seal(plain), sealed);
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(s.open(&bad), Err(SealError::Tampered));
        let other = DlqSealer::new(b"another dlq key, same length", "dlq-v1");
        assert_eq!(other.open(&sealed), Err(SealError::Tampered));
        let renamed = DlqSealer::new(b"a dlq key of enough length", "dlq-v2");
        assert_eq!(renamed.open(&sealed), Err(SealError::Tampered));
        assert_eq!(s.open(b"FPS1short"), Err(SealError::NotSealed));
    }

    #[test]
    fn message_keys_are_stable_pseudonyms() {
        let s = DlqSealer::new(b"a dlq key of enough length", "dlq-v1");
        let k = s.message_key(b"CANARY-SN-123");
        assert_eq!(k, s.message_key(b"CANARY-SN-123"));
        assert_ne!(k, s.message_key(b"CANARY-SN-124"));
        assert_eq!(k.len(), 32);
        assert!(!String::from_utf8_lossy(&k).contains("CANARY"));
    }
}
