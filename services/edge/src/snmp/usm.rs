//! SNMPv3 User-based Security Model: key localisation (RFC 3414 A.2),
//! HMAC authentication (RFC 3414 MD5/SHA-1, RFC 7860 SHA-2) and AES-128-CFB
//! privacy (RFC 3826).
//!
//! Only the non-authoritative (manager) side is implemented: we discover an
//! agent's engine, keep its clock, sign and encrypt requests, and verify and
//! decrypt what comes back.

use std::time::Instant;

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::KeyInit;
use hmac::{Mac, SimpleHmac};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::Oid;

/// USM authentication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    /// usmHMACMD5AuthProtocol (RFC 3414), 96-bit MAC. Old devices only.
    Md5,
    /// usmHMACSHAAuthProtocol (RFC 3414), 96-bit MAC. Old devices only.
    #[serde(alias = "sha")]
    Sha1,
    /// usmHMAC128SHA224AuthProtocol (RFC 7860).
    Sha224,
    /// usmHMAC192SHA256AuthProtocol (RFC 7860).
    Sha256,
    /// usmHMAC256SHA384AuthProtocol (RFC 7860).
    Sha384,
    /// usmHMAC384SHA512AuthProtocol (RFC 7860).
    Sha512,
}

impl AuthProtocol {
    /// Length of msgAuthenticationParameters (the truncated MAC).
    pub fn mac_len(self) -> usize {
        match self {
            AuthProtocol::Md5 | AuthProtocol::Sha1 => 12,
            AuthProtocol::Sha224 => 16,
            AuthProtocol::Sha256 => 24,
            AuthProtocol::Sha384 => 32,
            AuthProtocol::Sha512 => 48,
        }
    }

    /// RFC 3414 A.2 password-to-key (1 MiB of the repeated password hashed), Ku.
    pub fn password_to_key(self, password: &[u8]) -> Vec<u8> {
        match self {
            AuthProtocol::Md5 => p2k::<md5::Md5>(password),
            AuthProtocol::Sha1 => p2k::<sha1::Sha1>(password),
            AuthProtocol::Sha224 => p2k::<sha2::Sha224>(password),
            AuthProtocol::Sha256 => p2k::<sha2::Sha256>(password),
            AuthProtocol::Sha384 => p2k::<sha2::Sha384>(password),
            AuthProtocol::Sha512 => p2k::<sha2::Sha512>(password),
        }
    }

    /// Localise Ku for one engine: Kul = H(Ku ‖ engineID ‖ Ku).
    pub fn localize(self, ku: &[u8], engine_id: &[u8]) -> Vec<u8> {
        match self {
            AuthProtocol::Md5 => loc::<md5::Md5>(ku, engine_id),
            AuthProtocol::Sha1 => loc::<sha1::Sha1>(ku, engine_id),
            AuthProtocol::Sha224 => loc::<sha2::Sha224>(ku, engine_id),
            AuthProtocol::Sha256 => loc::<sha2::Sha256>(ku, engine_id),
            AuthProtocol::Sha384 => loc::<sha2::Sha384>(ku, engine_id),
            AuthProtocol::Sha512 => loc::<sha2::Sha512>(ku, engine_id),
        }
    }

    /// The truncated HMAC of `data` under the localised key.
    pub fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut full = match self {
            AuthProtocol::Md5 => hmac_of::<md5::Md5>(key, data),
            AuthProtocol::Sha1 => hmac_of::<sha1::Sha1>(key, data),
            AuthProtocol::Sha224 => hmac_of::<sha2::Sha224>(key, data),
            AuthProtocol::Sha256 => hmac_of::<sha2::Sha256>(key, data),
            AuthProtocol::Sha384 => hmac_of::<sha2::Sha384>(key, data),
            AuthProtocol::Sha512 => hmac_of::<sha2::Sha512>(key, data),
        };
        full.truncate(self.mac_len());
        full
    }
}

/// USM privacy protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivProtocol {
    /// usmAesCfb128Protocol (RFC 3826).
    #[serde(alias = "aes")]
    Aes128,
}

/// USM security level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SecurityLevel {
    /// No authentication, no privacy.
    NoAuthNoPriv,
    /// HMAC-authenticated, cleartext PDUs.
    AuthNoPriv,
    /// HMAC-authenticated and AES-encrypted PDUs.
    AuthPriv,
}

impl SecurityLevel {
    /// msgFlags bits (auth = 1, priv = 2) without the reportable bit.
    pub(crate) fn flags(self) -> u8 {
        match self {
            SecurityLevel::NoAuthNoPriv => 0,
            SecurityLevel::AuthNoPriv => 1,
            SecurityLevel::AuthPriv => 3,
        }
    }
}

fn hmac_of<D: Digest + BlockSizeUser>(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <SimpleHmac<D> as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            Mac::update(&mut m, data);
            m.finalize().into_bytes().to_vec()
        }
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => Vec::new(),
    }
}

fn p2k<D: Digest>(password: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return D::digest(b"").to_vec();
    }
    let mut h = D::new();
    let mut block = [0u8; 64];
    let mut index = 0usize;
    for _ in 0..(1_048_576 / 64) {
        for b in block.iter_mut() {
            *b = password[index % password.len()];
            index += 1;
        }
        h.update(block);
    }
    h.finalize().to_vec()
}

fn loc<D: Digest>(ku: &[u8], engine_id: &[u8]) -> Vec<u8> {
    let mut h = D::new();
    h.update(ku);
    h.update(engine_id);
    h.update(ku);
    h.finalize().to_vec()
}

/// AES-128-CFB (RFC 3826): IV = engineBoots ‖ engineTime ‖ salt (64 bits).
/// `key` is the localised privacy key; its first 16 bytes are used.
pub(crate) fn aes_cfb(
    encrypt: bool,
    key: &[u8],
    boots: u32,
    time: u32,
    salt: &[u8],
    data: &mut [u8],
) -> Result<(), String> {
    if key.len() < 16 {
        return Err(format!("privacy key of {} bytes, need 16", key.len()));
    }
    if salt.len() != 8 {
        return Err(format!(
            "msgPrivacyParameters of {} bytes, expected 8",
            salt.len()
        ));
    }
    let mut iv = [0u8; 16];
    iv[..4].copy_from_slice(&boots.to_be_bytes());
    iv[4..8].copy_from_slice(&time.to_be_bytes());
    iv[8..].copy_from_slice(salt);
    if encrypt {
        cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&key[..16], &iv)
            .map_err(|e| e.to_string())?
            .encrypt(data);
    } else {
        cfb_mode::Decryptor::<aes::Aes128>::new_from_slices(&key[..16], &iv)
            .map_err(|e| e.to_string())?
            .decrypt(data);
    }
    Ok(())
}

/// A USM user with its password-derived (not yet localised) keys.
#[derive(Clone, PartialEq, Eq)]
pub struct UsmUser {
    /// msgUserName.
    pub name: String,
    /// Security level requested.
    pub level: SecurityLevel,
    /// Authentication protocol and Ku (from the auth password).
    pub auth: Option<(AuthProtocol, Vec<u8>)>,
    /// Privacy protocol and Ku (from the priv password, hashed with the auth protocol).
    pub privacy: Option<(PrivProtocol, Vec<u8>)>,
}

impl std::fmt::Debug for UsmUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: never print them.
        f.debug_struct("UsmUser")
            .field("name", &self.name)
            .field("level", &self.level)
            .field("auth", &self.auth.as_ref().map(|a| a.0))
            .field("privacy", &self.privacy.as_ref().map(|p| p.0))
            .finish()
    }
}

impl UsmUser {
    /// Derive Ku from passwords (the expensive 1 MiB hash, done once per user).
    pub fn new(
        name: &str,
        level: SecurityLevel,
        auth: Option<(AuthProtocol, &[u8])>,
        privacy: Option<(PrivProtocol, &[u8])>,
    ) -> UsmUser {
        let auth_ku = auth.map(|(p, pw)| (p, p.password_to_key(pw)));
        let priv_ku = match (auth, privacy) {
            (Some((ap, _)), Some((pp, pw))) => Some((pp, ap.password_to_key(pw))),
            _ => None,
        };
        UsmUser {
            name: name.to_string(),
            level,
            auth: auth_ku,
            privacy: priv_ku,
        }
    }

    /// Keys localised to one engine.
    pub(crate) fn localize(&self, engine_id: &[u8]) -> LocalKeys {
        let auth = self
            .auth
            .as_ref()
            .map(|(p, ku)| (*p, p.localize(ku, engine_id)));
        let privacy = match (&self.auth, &self.privacy) {
            (Some((ap, _)), Some((pp, ku))) => Some((*pp, ap.localize(ku, engine_id))),
            _ => None,
        };
        LocalKeys {
            engine_id: engine_id.to_vec(),
            auth,
            privacy,
        }
    }
}

/// Keys localised to one authoritative engine.
#[derive(Clone)]
pub(crate) struct LocalKeys {
    pub(crate) engine_id: Vec<u8>,
    pub(crate) auth: Option<(AuthProtocol, Vec<u8>)>,
    pub(crate) privacy: Option<(PrivProtocol, Vec<u8>)>,
}

/// What we know about an agent's (authoritative) engine.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub(crate) id: Vec<u8>,
    pub(crate) boots: u32,
    /// snmpEngineTime when `synced_at` was taken.
    pub(crate) time: u32,
    pub(crate) synced_at: Instant,
}

impl Engine {
    /// The agent's engine time now, estimated from the last synchronisation.
    pub(crate) fn time_now(&self) -> u32 {
        let elapsed = u32::try_from(self.synced_at.elapsed().as_secs()).unwrap_or(u32::MAX);
        self.time.saturating_add(elapsed)
    }
}

/// usmStats report OIDs (RFC 3414 §5), `1.3.6.1.6.3.15.1.1.N.0`.
pub(crate) mod report {
    pub(crate) const PREFIX: &[u32] = &[1, 3, 6, 1, 6, 3, 15, 1, 1];
    pub(crate) const UNSUPPORTED_SEC_LEVELS: u32 = 1;
    pub(crate) const NOT_IN_TIME_WINDOWS: u32 = 2;
    pub(crate) const UNKNOWN_USER_NAMES: u32 = 3;
    pub(crate) const UNKNOWN_ENGINE_IDS: u32 = 4;
    pub(crate) const WRONG_DIGESTS: u32 = 5;
    pub(crate) const DECRYPTION_ERRORS: u32 = 6;
}

/// The usmStats counter a Report names, when it is one.
pub(crate) fn usm_report_kind(oid: &Oid) -> Option<u32> {
    oid.suffix(&Oid(report::PREFIX.to_vec()))
        .and_then(|s| s.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 3414 A.3.1 / A.3.2 test vectors (password "maplesyrup").
    #[test]
    fn rfc3414_key_localisation() {
        let engine = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let md5 = AuthProtocol::Md5;
        let ku = md5.password_to_key(b"maplesyrup");
        assert_eq!(hex(&ku), "9faf3283884e92834ebc9847d8edd963");
        assert_eq!(
            hex(&md5.localize(&ku, &engine)),
            "526f5eed9fcce26f8964c2930787d82b"
        );
        let sha = AuthProtocol::Sha1;
        let ku = sha.password_to_key(b"maplesyrup");
        assert_eq!(hex(&ku), "9fb5cc0381497b3793528939ff788d5d79145211");
        assert_eq!(
            hex(&sha.localize(&ku, &engine)),
            "6695febc9288e36282235fc7151f128497b38f3f"
        );
    }

    #[test]
    fn mac_lengths_follow_rfc7860() {
        for (p, n) in [
            (AuthProtocol::Sha224, 16),
            (AuthProtocol::Sha256, 24),
            (AuthProtocol::Sha384, 32),
            (AuthProtocol::Sha512, 48),
        ] {
            assert_eq!(p.mac(b"key", b"data").len(), n);
        }
    }

    #[test]
    fn aes_cfb_round_trip_and_iv() {
        let key = [7u8; 32];
        let mut data = b"scoped pdu bytes, not block aligned".to_vec();
        aes_cfb(true, &key, 3, 1000, &[1; 8], &mut data).unwrap();
        assert_ne!(&data[..], b"scoped pdu bytes, not block aligned");
        let mut wrong = data.clone();
        aes_cfb(false, &key, 3, 1001, &[1; 8], &mut wrong).unwrap();
        assert_ne!(&wrong[..], b"scoped pdu bytes, not block aligned");
        aes_cfb(false, &key, 3, 1000, &[1; 8], &mut data).unwrap();
        assert_eq!(&data[..], b"scoped pdu bytes, not block aligned");
        assert!(aes_cfb(false, &key, 3, 1000, &[1; 7], &mut data).is_err());
    }
}
