//! Keyed pseudonyms for identifying fields.
//!
//! `HMAC-SHA256(key, purpose | value)`, hex-encoded, truncated to 32 hex
//! characters (128 bits: collision-free for any fleet, and short in Parquet).
//! The same value and key always give the same pseudonym, so joins across
//! tables still work; without the key, the value cannot be recovered or
//! guessed by hashing candidate serial numbers. The key id is written beside
//! each pseudonym so keys can be rotated and old rows still be interpreted.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A pseudonymisation key with its public id.
#[derive(Clone)]
pub struct Pseudonymizer {
    /// HMAC state after absorbing the key (ipad/opad), cloned per value so
    /// the key schedule is computed once, not per pseudonym.
    mac: Hmac<Sha256>,
    key_id: String,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// A pseudonymiser with `key`, identified as `key_id`. An empty `key_id`
    /// is replaced by a fingerprint of the key.
    pub fn new(key: &[u8], key_id: &str) -> Pseudonymizer {
        let key_id = if key_id.is_empty() {
            format!("k-{}", hex::encode(&Sha256::digest(key)[..4]))
        } else {
            key_id.to_string()
        };
        Pseudonymizer {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length"),
            key_id,
        }
    }

    /// The key id stored beside every pseudonym.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Pseudonym of `value` for the field `purpose` (e.g. `device_id`).
    pub fn pseudonymize(&self, purpose: &str, value: &str) -> String {
        let mut buf = [0u8; 32];
        self.pseudonymize_into(purpose, value, &mut buf).to_string()
    }

    /// [`Pseudonymizer::pseudonymize`] without allocating: the 32 hex
    /// characters are written into `buf`.
    pub fn pseudonymize_into<'b>(
        &self,
        purpose: &str,
        value: &str,
        buf: &'b mut [u8; 32],
    ) -> &'b str {
        let mut mac = self.mac.clone();
        mac.update(purpose.as_bytes());
        mac.update(b"|");
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in out[..16].iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        // Only ASCII hex digits were written.
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keyed_and_not_the_input() {
        let p = Pseudonymizer::new(b"key-one", "v1");
        let a = p.pseudonymize("device_id", "SN123");
        assert_eq!(a, p.pseudonymize("device_id", "SN123"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("SN123"));
        assert_ne!(
            a,
            Pseudonymizer::new(b"key-two", "v2").pseudonymize("device_id", "SN123")
        );
        assert_ne!(a, p.pseudonymize("job_id", "SN123"));
        // The same as HMAC-SHA256 computed from scratch.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key-one").unwrap();
        mac.update(b"device_id|SN123");
        assert_eq!(a, hex::encode(&mac.finalize().into_bytes()[..16]));
    }
}
