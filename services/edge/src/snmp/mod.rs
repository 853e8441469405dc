//! A small, defensive SNMP manager: v2c and v3 (GET, GETNEXT, GETBULK) and v1 (GET, GETNEXT).
//!
//! SNMPv3 uses the User-based Security Model ([`usm`]): engine discovery,
//! clock synchronisation, HMAC-SHA-2 authentication and AES-128 privacy.
//! Wrong credentials surface as typed errors ([`SnmpError::AuthFailed`],
//! [`SnmpError::UnknownUser`]) from the agent's Report PDUs, never as timeouts.
//!
//! PDUs are encoded and decoded with `rasn-snmp`; nothing here writes BER by
//! hand. The client exists because printers are hostile peers in practice:
//! firmware answers late, twice, truncated, or walks in circles. Every such
//! case ends in a typed [`SnmpError`] within a bounded time, never a panic or
//! a stall, so one broken device cannot hold up the thousands polled beside it.

mod client;
mod credentials;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
pub(crate) mod netsnmp_tests;
mod session;
pub mod usm;
mod walk;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::SnmpClient;
pub use credentials::{Security, SnmpCredentials};
pub use session::SnmpSession;
pub use usm::{AuthProtocol, PrivProtocol, SecurityLevel, UsmUser};

#[doc(hidden)]
pub use client::Response as DecodedResponse;

/// Decode one response datagram exactly as [`SnmpClient`] does (rasn BER
/// decode, version and PDU checks, varbind flattening), but without the
/// `catch_unwind` guard the client wraps around it, so that a fuzzer or a
/// corpus replay test sees a decoder panic as a failure.
///
/// Not a stable API: it exists for `fuzz/` and `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub fn decode_response_unguarded(
    version: SnmpVersion,
    raw: &[u8],
) -> Result<DecodedResponse, String> {
    client::decode_response_inner(version, raw)
}

/// What [`decode_v3_unguarded`] made of an SNMPv3 datagram.
///
/// Not a stable API: it exists for `fuzz/` and `tests/fuzz_corpus.rs`.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub enum DecodedV3 {
    /// A Response PDU (authenticated and decrypted when the flags say so).
    Response(DecodedResponse),
    /// A Report PDU: the usmStats OID it names, the authoritative engine of
    /// its USM header, and whether it carried a MAC that verified.
    Report {
        /// First varbind's OID (the usmStats counter), if any.
        oid: Option<Oid>,
        /// msgAuthoritativeEngineID.
        engine_id: Vec<u8>,
        /// msgAuthoritativeEngineBoots, clamped to 0..=2^31-1.
        boots: u32,
        /// msgAuthoritativeEngineTime, clamped to 0..=2^31-1.
        time: u32,
        /// Whether the message was authenticated (and its MAC verified).
        authenticated: bool,
    },
}

/// Decode one SNMPv3 datagram exactly as [`SnmpClient`] does: BER decode of
/// the message and of the USM security parameters, msgFlags checks, HMAC
/// verification with `user`'s keys localised to `engine_id`, AES-CFB
/// decryption, scoped-PDU decode and varbind flattening; without the
/// `catch_unwind` guard the client wraps around it, so that a fuzzer or a
/// corpus replay test sees a decoder panic as a failure. Returns msgID and
/// what the datagram carried.
///
/// Not a stable API: it exists for `fuzz/` and `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub fn decode_v3_unguarded(
    raw: &[u8],
    user: Option<&UsmUser>,
    engine_id: &[u8],
) -> Result<(i64, DecodedV3), SnmpError> {
    let keys = user.map(|u| u.localize(engine_id));
    client::decode_v3_inner(raw, keys.as_ref())
        .map(|(msg_id, _level, reply)| (msg_id, reply.into()))
}

/// Default UDP port of an SNMP agent.
pub const DEFAULT_PORT: u16 = 161;

/// Largest UDP payload over IPv4; also the default cap on a response.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// An object identifier, as a list of arcs.
///
/// Ordered lexicographically by arc, which is SNMP's walk order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// The arcs.
    pub fn arcs(&self) -> &[u32] {
        &self.0
    }

    /// Whether `self` lies inside the subtree rooted at `root` (or is `root`).
    pub fn starts_with(&self, root: &Oid) -> bool {
        self.0.starts_with(&root.0)
    }

    /// The arcs after `root`, when `self` is inside that subtree.
    pub fn suffix(&self, root: &Oid) -> Option<&[u32]> {
        self.0.strip_prefix(root.0.as_slice())
    }

    /// `self` with more arcs appended.
    pub fn child(&self, arcs: &[u32]) -> Oid {
        let mut v = self.0.clone();
        v.extend_from_slice(arcs);
        Oid(v)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl FromStr for Oid {
    type Err = String;

    /// Parse `1.3.6.1…` (a leading dot is accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.strip_prefix('.').unwrap_or(s);
        let arcs = s
            .split('.')
            .map(|a| {
                a.parse::<u32>()
                    .map_err(|_| format!("bad OID arc {a:?} in {s:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if arcs.len() < 2 {
            return Err(format!("OID {s:?} needs at least two arcs"));
        }
        Ok(Oid(arcs))
    }
}

/// Build an [`Oid`] from a constant slice.
pub(crate) fn oid(arcs: &[u32]) -> Oid {
    Oid(arcs.to_vec())
}

/// A value in a variable binding, flattened over SNMP versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnmpValue {
    /// INTEGER / Integer32.
    Integer(i64),
    /// OCTET STRING (raw bytes; text decoding is the mapper's job).
    OctetString(Vec<u8>),
    /// OBJECT IDENTIFIER.
    ObjectId(Oid),
    /// IpAddress.
    IpAddress([u8; 4]),
    /// Counter32.
    Counter32(u32),
    /// Gauge32 / Unsigned32.
    Gauge32(u32),
    /// TimeTicks, hundredths of a second.
    TimeTicks(u32),
    /// Counter64.
    Counter64(u64),
    /// Opaque.
    Opaque(Vec<u8>),
    /// NULL (v1 or an unspecified value).
    Null,
    /// v2 exception: no such object.
    NoSuchObject,
    /// v2 exception: no such instance.
    NoSuchInstance,
    /// v2 exception: end of the MIB view.
    EndOfMibView,
}

impl SnmpValue {
    /// Whether this is one of the v2 "absent" exceptions (or NULL).
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            SnmpValue::Null
                | SnmpValue::NoSuchObject
                | SnmpValue::NoSuchInstance
                | SnmpValue::EndOfMibView
        )
    }

    /// The value as a signed integer, for any integer-like syntax.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SnmpValue::Integer(v) => Some(*v),
            SnmpValue::Counter32(v) | SnmpValue::Gauge32(v) | SnmpValue::TimeTicks(v) => {
                Some(i64::from(*v))
            }
            SnmpValue::Counter64(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// The raw bytes of an OCTET STRING or Opaque.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            SnmpValue::OctetString(b) | SnmpValue::Opaque(b) => Some(b),
            _ => None,
        }
    }

    /// The OID of an OBJECT IDENTIFIER value.
    pub fn as_oid(&self) -> Option<&Oid> {
        match self {
            SnmpValue::ObjectId(o) => Some(o),
            _ => None,
        }
    }
}

/// One variable binding of a response.
pub type VarBind = (Oid, SnmpValue);

/// SNMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnmpVersion {
    /// SNMPv1: GET and GETNEXT only (walks use GETNEXT).
    V1,
    /// SNMPv2c: walks use GETBULK.
    #[default]
    V2c,
    /// SNMPv3 with the User-based Security Model: walks use GETBULK.
    V3,
}

/// How the edge talks to agents. All limits exist to bound what a broken or
/// hostile agent can cost us.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnmpOptions {
    /// Wait for the first answer to one request; doubles on each retry.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Resends of one request after a timeout (0 = a single attempt).
    pub retries: u32,
    /// GETBULK max-repetitions to start with. Adaptive per device: halved on
    /// tooBig, oversize responses and timeouts, grown back by a quarter after
    /// every 4 successful GETBULKs, never above this value.
    pub max_repetitions: u32,
    /// Responses larger than this many bytes are rejected.
    pub max_response_bytes: usize,
    /// Cap on variable bindings collected by one walk.
    pub max_walk_varbinds: usize,
    /// Cap on requests issued by one walk.
    pub max_walk_iterations: usize,
    /// Overall deadline for polling one device (all requests together).
    #[serde(with = "humantime_serde")]
    pub poll_deadline: Duration,
    /// Protocol version for devices that do not set their own `version`.
    pub version: SnmpVersion,
}

impl Default for SnmpOptions {
    fn default() -> Self {
        SnmpOptions {
            timeout: Duration::from_secs(2),
            retries: 2,
            max_repetitions: 20,
            max_response_bytes: MAX_UDP_PAYLOAD,
            max_walk_varbinds: 10_000,
            max_walk_iterations: 1_000,
            poll_deadline: Duration::from_secs(25),
            version: SnmpVersion::V2c,
        }
    }
}

/// Why an SNMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    /// No matching answer within the timeout, after every retry.
    #[error("no response after {attempts} attempt(s) (last timeout {last_timeout:?})")]
    Timeout {
        /// Requests sent.
        attempts: u32,
        /// Timeout of the last attempt.
        last_timeout: Duration,
    },
    /// The agent's datagram is not a valid SNMP response (truncated, garbled,
    /// wrong PDU). Retrying rarely helps: an agent that sends malformed BER
    /// does so deterministically, so the poll fails fast and the bytes go to the DLQ.
    #[error("undecodable response: {reason}")]
    Decode {
        /// What was wrong.
        reason: String,
        /// The datagram as received (for the dead-letter topic).
        raw: Vec<u8>,
    },
    /// The response exceeds `max_response_bytes`.
    #[error("response of {size} bytes exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// Datagram size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The agent answered with a non-zero error-status.
    #[error("agent error-status {status} ({}) at varbind {index}", error_status_name(*status))]
    Agent {
        /// error-status.
        status: i64,
        /// error-index.
        index: i64,
    },
    /// A walk returned more variable bindings than allowed.
    #[error("walk of {subtree} exceeded {limit} varbinds")]
    TooManyVarbinds {
        /// Subtree walked.
        subtree: Oid,
        /// The cap.
        limit: usize,
    },
    /// A walk needed more requests than allowed.
    #[error("walk of {subtree} exceeded {limit} requests")]
    TooManyIterations {
        /// Subtree walked.
        subtree: Oid,
        /// The cap.
        limit: usize,
    },
    /// The agent returned an OID that does not follow the previous one (an agent loop).
    #[error("agent loop: {received} does not follow {previous}")]
    NonIncreasingOid {
        /// Last OID accepted.
        previous: Oid,
        /// OID received.
        received: Oid,
    },
    /// The request could not be encoded (an OID we built is invalid).
    #[error("cannot encode request: {0}")]
    Encode(String),
    /// Socket error (bind, send, receive).
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// SNMPv3: the agent rejected our digest or could not decrypt our PDU
    /// (wrong password or protocol), or its answer failed our verification.
    #[error("SNMPv3 authentication failed: {reason}")]
    AuthFailed {
        /// What the agent (or our check) reported.
        reason: String,
    },
    /// SNMPv3: the agent does not know this user.
    #[error("SNMPv3 user {user:?} unknown to the agent")]
    UnknownUser {
        /// msgUserName sent.
        user: String,
    },
    /// SNMPv3: the agent does not allow this user at the requested security level.
    #[error("SNMPv3 security level not supported for this user by the agent")]
    UnsupportedSecurityLevel,
    /// SNMPv3 protocol failure: engine discovery or time synchronisation did
    /// not converge, or an unexpected Report arrived.
    #[error("SNMPv3: {reason}")]
    Usm {
        /// What went wrong.
        reason: String,
    },
}

impl SnmpError {
    /// Whether trying again later may succeed.
    ///
    /// Timeouts and socket errors are transient. Decode errors, oversize
    /// responses, agent loops and limits come from the agent's firmware and
    /// repeat on every poll.
    pub fn is_retriable(&self) -> bool {
        matches!(self, SnmpError::Timeout { .. } | SnmpError::Io(_))
    }

    /// A short, stable class for metrics and DLQ headers.
    pub fn class(&self) -> &'static str {
        match self {
            SnmpError::Timeout { .. } => "snmp_timeout",
            SnmpError::Decode { .. } => "snmp_decode",
            SnmpError::ResponseTooLarge { .. } => "snmp_too_large",
            SnmpError::Agent { .. } => "snmp_agent_error",
            SnmpError::TooManyVarbinds { .. } => "snmp_too_many_varbinds",
            SnmpError::TooManyIterations { .. } => "snmp_too_many_iterations",
            SnmpError::NonIncreasingOid { .. } => "snmp_agent_loop",
            SnmpError::Encode(_) => "snmp_encode",
            SnmpError::Io(_) => "snmp_io",
            SnmpError::AuthFailed { .. } => "snmp_auth_failed",
            SnmpError::UnknownUser { .. } => "snmp_unknown_user",
            SnmpError::UnsupportedSecurityLevel => "snmp_unsupported_sec_level",
            SnmpError::Usm { .. } => "snmp_usm",
        }
    }
}

/// RFC 3416 name of an error-status.
fn error_status_name(status: i64) -> &'static str {
    match status {
        0 => "noError",
        1 => "tooBig",
        2 => "noSuchName",
        3 => "badValue",
        4 => "readOnly",
        5 => "genErr",
        6 => "noAccess",
        7 => "wrongType",
        8 => "wrongLength",
        9 => "wrongEncoding",
        10 => "wrongValue",
        11 => "noCreation",
        12 => "inconsistentValue",
        13 => "resourceUnavailable",
        14 => "commitFailed",
        15 => "undoFailed",
        16 => "authorizationError",
        17 => "notWritable",
        18 => "inconsistentName",
        _ => "unknown",
    }
}

/// A device to poll: `host[:port]` and its SNMP credentials (or its IPP URL).
///
/// v1/v2c use `community`. v3 uses `user`, and optionally `auth_password`
/// / `priv_password` (secret specs: `env:NAME`, `file:/path`, or inline),
/// `auth_protocol` (default `sha256`), `priv_protocol` (default `aes128`)
/// and `security_level` (default: the highest the passwords allow).
/// `version` defaults to `v3` when `user` is set, else to `snmp.version`.
///
/// With `protocol = "ipp"` the device is polled over IPP at `ipp_url`
/// instead and the SNMP settings must be left unset (see
/// [`crate::config::EdgeConfig`]'s validation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceTarget {
    /// `host[:port]`, port 161 when omitted; IPv6 as `[addr]:port`.
    pub address: String,
    /// SNMP community for v1/v2c (default `public`).
    #[serde(default = "default_community")]
    pub community: String,
    /// Protocol version (`v1`, `v2c`, `v3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SnmpVersion>,
    /// SNMPv3 user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SNMPv3 security level (`noAuthNoPriv`, `authNoPriv`, `authPriv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_level: Option<SecurityLevel>,
    /// SNMPv3 authentication protocol (`md5`, `sha1`, `sha224`, `sha256`, `sha384`, `sha512`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_protocol: Option<AuthProtocol>,
    /// SNMPv3 authentication password, as a secret spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<String>,
    /// SNMPv3 privacy protocol (`aes128`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_protocol: Option<PrivProtocol>,
    /// SNMPv3 privacy password, as a secret spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_password: Option<String>,
    // --- IPP (see crate::ipp) ---
    /// `snmp` (default) or `ipp`.
    #[serde(default)]
    pub protocol: crate::config::Protocol,
    /// With `protocol = "ipp"`: the printer's `ipp://host[:port]/path`;
    /// default `ipp://<address host>:631/ipp/print`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipp_url: Option<String>,
    // --- 3D printers over HTTPS (see crate::http3d) ---
    /// With `protocol = "https3d"`: the API's base URL,
    /// default `https://<address>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `protocol = "https3d"` (required there): how the device's
    /// certificate is trusted, `{ ca_file = "…" }` or `{ pin_sha256 = "…" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::http3d::TlsTrust>,
}

fn default_community() -> String {
    "public".into()
}

impl Default for DeviceTarget {
    fn default() -> Self {
        DeviceTarget::new("", default_community())
    }
}

impl DeviceTarget {
    /// A v1/v2c target with the given address and community.
    pub fn new(address: impl Into<String>, community: impl Into<String>) -> Self {
        DeviceTarget {
            address: address.into(),
            community: community.into(),
            version: None,
            user: None,
            security_level: None,
            auth_protocol: None,
            auth_password: None,
            priv_protocol: None,
            priv_password: None,
            protocol: crate::config::Protocol::Snmp,
            ipp_url: None,
            url: None,
            tls: None,
        }
    }

    /// The credential part of this target.
    pub fn credentials(&self) -> SnmpCredentials {
        SnmpCredentials {
            version: self.version,
            community: self.community.clone(),
            user: self.user.clone(),
            security_level: self.security_level,
            auth_protocol: self.auth_protocol,
            auth_password: self.auth_password.clone(),
            priv_protocol: self.priv_protocol,
            priv_password: self.priv_password.clone(),
        }
    }

    /// An SNMP target at `address` with the given credentials.
    pub fn with_credentials(address: impl Into<String>, c: &SnmpCredentials) -> Self {
        DeviceTarget {
            address: address.into(),
            community: c.community.clone(),
            version: c.version,
            user: c.user.clone(),
            security_level: c.security_level,
            auth_protocol: c.auth_protocol,
            auth_password: c.auth_password.clone(),
            priv_protocol: c.priv_protocol,
            priv_password: c.priv_password.clone(),
            protocol: crate::config::Protocol::Snmp,
            ipp_url: None,
            url: None,
            tls: None,
        }
    }

    /// The IPP URL of an IPP device: `ipp_url`, else
    /// `ipp://<address host>:631/ipp/print`.
    pub fn ipp_url_or_default(&self) -> String {
        if let Some(u) = &self.ipp_url {
            return u.clone();
        }
        match split_host_port(&self.address) {
            Ok((host, _)) if host.contains(':') => format!("ipp://[{host}]:631/ipp/print"),
            Ok((host, _)) => format!("ipp://{host}:631/ipp/print"),
            Err(_) => format!("ipp://{}/ipp/print", self.address),
        }
    }
}

/// Split `host[:port]` into host and port (default 161).
pub(crate) fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let address = address.trim();
    if address.is_empty() {
        return Err("address is empty".into());
    }
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    if let Some(inner) = address.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return Ok((inner.to_string(), DEFAULT_PORT));
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("bad port {port:?} in {address:?}"))?;
            if host.is_empty() {
                return Err(format!("no host in {address:?}"));
            }
            Ok((host.to_string(), port))
        }
        Some(_) => Err(format!("cannot parse {address:?} as host[:port]")),
        None => Ok((address.to_string(), DEFAULT_PORT)),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn oid_parse_display_order() {
        let a: Oid = ".1.3.6.1.2.1.43.11.1.1.9.1.10".parse().unwrap();
        let b: Oid = "1.3.6.1.2.1.43.11.1.1.9.1.2".parse().unwrap();
        assert!(b < a, "numeric arc order, not string order");
        assert_eq!(a.to_string(), "1.3.6.1.2.1.43.11.1.1.9.1.10");
        assert!(a.starts_with(&oid(&[1, 3, 6, 1, 2, 1, 43, 11])));
        assert_eq!(
            a.suffix(&oid(&[1, 3, 6, 1, 2, 1, 43, 11, 1, 1, 9])),
            Some(&[1, 10][..])
        );
        assert!("1.x".parse::<Oid>().is_err());
    }

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 161)
        );
        assert_eq!(
            split_host_port("printer.local:1161").unwrap(),
            ("printer.local".into(), 1161)
        );
        assert_eq!(split_host_port("[::1]:162").unwrap(), ("::1".into(), 162));
        assert_eq!(split_host_port("::1").unwrap(), ("::1".into(), 161));
        assert!(split_host_port("host:notaport").is_err());
        assert!(split_host_port("").is_err());
    }
}
