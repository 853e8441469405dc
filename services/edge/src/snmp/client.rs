//! One UDP socket per device poll, request-id matching, timeouts and retries;
//! SNMPv3 engine discovery, time synchronisation, signing and encryption.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::{v1, v2, v2c, v3};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::credentials::Security;
use super::session::SnmpSession;
use super::usm::{self, report, Engine, LocalKeys, SecurityLevel, UsmUser};
use super::{Oid, SnmpError, SnmpOptions, SnmpValue, SnmpVersion, VarBind};

/// Receive buffer: the largest UDP datagram there is.
const READ_BUFFER: usize = 65_535;

/// sysUpTime.0, the cheapest object to ask for.
const SYS_UPTIME: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];

/// msgFlags reportable bit.
const REPORTABLE: u8 = 4;

/// The request kinds this manager sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Get,
    GetNext,
    GetBulk {
        non_repeaters: u32,
        max_repetitions: u32,
    },
}

/// A decoded response PDU (exposed, doc-hidden, as
/// [`super::DecodedResponse`] for the fuzz targets; not a stable API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// request-id.
    pub request_id: i64,
    /// error-status.
    pub error_status: i64,
    /// error-index.
    pub error_index: i64,
    /// The variable bindings, flattened.
    pub varbinds: Vec<VarBind>,
}

/// Engine parameters carried by a v3 message's USM header.
#[derive(Debug, Clone, Default)]
pub(super) struct EngineParams {
    id: Vec<u8>,
    boots: u32,
    time: u32,
}

/// What a matching datagram carried.
pub(super) enum Reply {
    /// A Response PDU.
    Response(Response),
    /// A v3 Report PDU: the usmStats OID it names, the engine parameters of
    /// its USM header, and whether it was authenticated with our key.
    Report {
        oid: Option<Oid>,
        engine: EngineParams,
        authenticated: bool,
    },
}

impl From<Reply> for super::DecodedV3 {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Response(r) => super::DecodedV3::Response(r),
            Reply::Report {
                oid,
                engine,
                authenticated,
            } => super::DecodedV3::Report {
                oid,
                engine_id: engine.id,
                boots: engine.boots,
                time: engine.time,
                authenticated,
            },
        }
    }
}

/// How to recognise the answer to what we sent.
#[derive(Debug, Clone, Copy)]
struct Want {
    /// v3 msgID (None for v1/v2c).
    msg_id: Option<i32>,
    /// PDU request-id.
    request_id: i32,
    /// v3: the security level the request was sent at. RFC 3412 §7.2.10: a
    /// Response must come back at that level, or an on-path host could
    /// answer an authenticated (and encrypted) request in plaintext.
    level: SecurityLevel,
}

/// An SNMP session with one agent over one connected UDP socket.
///
/// The socket is connected, so the kernel drops datagrams from other peers;
/// datagrams from the agent that carry another request id (late answers to
/// an earlier attempt, duplicates) are ignored.
#[derive(Debug)]
pub struct SnmpClient {
    socket: UdpSocket,
    peer: SocketAddr,
    security: Security,
    session: SnmpSession,
    opts: SnmpOptions,
    next_request_id: i32,
    next_msg_id: i32,
    salt: u64,
    /// Whether this client got any well-formed matching answer (v3: the
    /// discovery report counts), i.e. the agent is alive.
    heard_from_agent: bool,
    buf: Vec<u8>,
}

impl SnmpClient {
    /// Bind an ephemeral UDP socket and connect it to `peer`, speaking
    /// `opts.version` (v1 or v2c) with `community`.
    pub async fn connect(
        peer: SocketAddr,
        community: &str,
        opts: &SnmpOptions,
    ) -> Result<SnmpClient, SnmpError> {
        let version = match opts.version {
            SnmpVersion::V3 => {
                return Err(SnmpError::Usm {
                    reason: "SNMPv3 needs a user: use SnmpClient::connect_with".into(),
                })
            }
            v => v,
        };
        let security = Security::Community {
            version,
            community: community.as_bytes().to_vec(),
        };
        SnmpClient::connect_with(peer, security, opts, SnmpSession::new()).await
    }

    /// Bind an ephemeral UDP socket and connect it to `peer` with resolved
    /// credentials; `session` carries what earlier polls learnt about the
    /// agent (adaptive GETBULK size, v3 engine and clock).
    pub async fn connect_with(
        peer: SocketAddr,
        security: Security,
        opts: &SnmpOptions,
        session: SnmpSession,
    ) -> Result<SnmpClient, SnmpError> {
        let bind: SocketAddr = if peer.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(peer).await?;
        // Start request ids somewhere unpredictable-ish, so two sessions to the
        // same agent (e.g. across a restart) do not accept each other's answers.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = now.subsec_nanos();
        let local_port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let start = (seed ^ (u32::from(local_port) << 15)) & 0x3fff_ffff;
        let start = i32::try_from(start).unwrap_or(1).max(1);
        Ok(SnmpClient {
            socket,
            peer,
            security,
            session,
            opts: opts.clone(),
            next_request_id: start,
            next_msg_id: start ^ 0x1555_5555,
            // RFC 3826 §3.1.1.1: a 64-bit salt, initialised pseudo-randomly,
            // incremented per message.
            salt: (now.as_nanos() as u64) ^ (u64::from(local_port) << 48),
            heard_from_agent: false,
            buf: vec![0u8; READ_BUFFER],
        })
    }

    /// The agent's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The options in force.
    pub fn options(&self) -> &SnmpOptions {
        &self.opts
    }

    /// The protocol version spoken.
    pub fn version(&self) -> SnmpVersion {
        self.security.version()
    }

    /// The per-target state this client reads and updates.
    pub fn session(&self) -> &SnmpSession {
        &self.session
    }

    /// GET. Missing objects come back as `NoSuchObject`/`NoSuchInstance`
    /// (v2c, v3) or are reported as `NoSuchObject` after the v1 agent's
    /// `noSuchName` error (the request is repeated without that varbind).
    pub async fn get(&mut self, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        match self.version() {
            SnmpVersion::V2c | SnmpVersion::V3 => self.request(Request::Get, oids).await,
            SnmpVersion::V1 => {
                let mut pending: Vec<Oid> = oids.to_vec();
                let mut missing: Vec<Oid> = Vec::new();
                // Each round removes one varbind, so this ends.
                loop {
                    if pending.is_empty() {
                        break;
                    }
                    match self.request(Request::Get, &pending).await {
                        Ok(mut vbs) => {
                            vbs.extend(missing.into_iter().map(|o| (o, SnmpValue::NoSuchObject)));
                            return Ok(vbs);
                        }
                        Err(SnmpError::Agent { status: 2, index }) => {
                            let i = usize::try_from(index - 1)
                                .ok()
                                .filter(|i| *i < pending.len());
                            let i = i.unwrap_or(0);
                            missing.push(pending.remove(i));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(missing
                    .into_iter()
                    .map(|o| (o, SnmpValue::NoSuchObject))
                    .collect())
            }
        }
    }

    /// GETNEXT.
    pub async fn get_next(&mut self, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        self.request(Request::GetNext, oids).await
    }

    /// GETBULK (v2c, v3; on v1 this is a GETNEXT).
    pub async fn get_bulk(
        &mut self,
        oids: &[Oid],
        non_repeaters: u32,
        max_repetitions: u32,
    ) -> Result<Vec<VarBind>, SnmpError> {
        match self.version() {
            SnmpVersion::V2c | SnmpVersion::V3 => {
                self.request(
                    Request::GetBulk {
                        non_repeaters,
                        max_repetitions,
                    },
                    oids,
                )
                .await
            }
            SnmpVersion::V1 => self.request(Request::GetNext, oids).await,
        }
    }

    fn take_request_id(&mut self) -> i32 {
        let id = self.next_request_id;
        self.next_request_id = if id >= i32::MAX - 1 { 1 } else { id + 1 };
        id
    }

    fn take_msg_id(&mut self) -> i32 {
        let id = self.next_msg_id.max(1);
        self.next_msg_id = if id >= i32::MAX - 1 { 1 } else { id + 1 };
        id
    }

    /// Send one request and wait for its response, with retries and backoff.
    async fn request(&mut self, kind: Request, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        let request_id = self.take_request_id();
        let response = match &self.security {
            Security::Community { version, community } => {
                let datagram = encode_request(*version, community, request_id, kind, oids)?;
                let want = Want {
                    msg_id: None,
                    request_id,
                    level: SecurityLevel::NoAuthNoPriv,
                };
                match self.transact(&datagram, want, None).await? {
                    Reply::Response(r) => r,
                    // v1/v2c decoding never yields a Report.
                    Reply::Report { .. } => {
                        return Err(SnmpError::Usm {
                            reason: "Report PDU outside SNMPv3".into(),
                        })
                    }
                }
            }
            Security::Usm(user) => {
                let user = user.clone();
                let pdus = pdus_of(request_id, kind, oids)?;
                self.request_v3(&user, request_id, pdus).await?
            }
        };
        if response.error_status != 0 {
            return Err(SnmpError::Agent {
                status: response.error_status,
                index: response.error_index,
            });
        }
        Ok(response.varbinds)
    }

    /// One v3 request: discover the engine if needed, then send; on a
    /// notInTimeWindow report resynchronise the clock once, on an
    /// unknownEngineID report rediscover once; other reports are typed errors.
    async fn request_v3(
        &mut self,
        user: &Arc<UsmUser>,
        request_id: i32,
        pdus: v2::Pdus,
    ) -> Result<Response, SnmpError> {
        let mut resynced = false;
        let mut rediscovered = false;
        loop {
            let (engine, keys) = match self.engine_and_keys(user) {
                Some(ek) => ek,
                None => {
                    self.discover(user).await?;
                    self.engine_and_keys(user).ok_or_else(|| SnmpError::Usm {
                        reason: "engine discovery did not yield an engine".into(),
                    })?
                }
            };
            let msg_id = self.take_msg_id();
            self.salt = self.salt.wrapping_add(1);
            let datagram = encode_v3(
                &user.name,
                user.level,
                Some(&engine),
                Some(&keys),
                self.salt,
                msg_id,
                self.max_message_size(),
                pdus.clone(),
            )?;
            let want = Want {
                msg_id: Some(msg_id),
                request_id,
                level: user.level,
            };
            let reply = match self.transact(&datagram, want, Some(&keys)).await {
                Err(SnmpError::Timeout { .. })
                    if user.level == SecurityLevel::AuthPriv
                        && self.heard_from_agent
                        && self.answers_without_privacy(user, &engine, &keys).await =>
                {
                    return Err(SnmpError::AuthFailed {
                        reason: "agent answers authNoPriv but drops our encrypted requests: \
                                 check priv_password and priv_protocol"
                            .into(),
                    });
                }
                r => r?,
            };
            match reply {
                Reply::Response(r) => return Ok(r),
                Reply::Report {
                    oid,
                    engine: reported,
                    authenticated,
                } => {
                    let kind = oid.as_ref().and_then(usm::usm_report_kind);
                    match kind {
                        Some(report::NOT_IN_TIME_WINDOWS) if !resynced => {
                            if !authenticated && user.level != SecurityLevel::NoAuthNoPriv {
                                return Err(SnmpError::AuthFailed {
                                    reason: "unauthenticated notInTimeWindow report".into(),
                                });
                            }
                            resynced = true;
                            usm_event("time_resync");
                            let mut s = self.session.lock();
                            if let Some(e) = s.engine.as_mut() {
                                e.boots = reported.boots;
                                e.time = reported.time;
                                e.synced_at = std::time::Instant::now();
                            }
                        }
                        Some(report::UNKNOWN_ENGINE_IDS) if !rediscovered => {
                            rediscovered = true;
                            usm_event("rediscover");
                            let mut s = self.session.lock();
                            s.engine = None;
                            s.keys = None;
                        }
                        Some(report::UNKNOWN_USER_NAMES) => {
                            return Err(SnmpError::UnknownUser {
                                user: user.name.clone(),
                            })
                        }
                        Some(report::WRONG_DIGESTS) => {
                            return Err(SnmpError::AuthFailed {
                                reason: "agent reports a wrong digest (usmStatsWrongDigests): \
                                         check auth_password and auth_protocol"
                                    .into(),
                            })
                        }
                        Some(report::DECRYPTION_ERRORS) => {
                            return Err(SnmpError::AuthFailed {
                                reason: "agent could not decrypt (usmStatsDecryptionErrors): \
                                         check priv_password and priv_protocol"
                                    .into(),
                            })
                        }
                        Some(report::UNSUPPORTED_SEC_LEVELS) => {
                            return Err(SnmpError::UnsupportedSecurityLevel)
                        }
                        _ => {
                            return Err(SnmpError::Usm {
                                reason: match oid {
                                    Some(o) => format!("agent sent Report {o}"),
                                    None => "agent sent an empty Report".into(),
                                },
                            })
                        }
                    }
                }
            }
        }
    }

    /// After an authPriv request went unanswered by an agent that is alive:
    /// does it answer the same user at authNoPriv? net-snmp (like many
    /// agents) silently drops a PDU that decrypts to garbage instead of
    /// reporting usmStatsDecryptionErrors, so a wrong privacy password would
    /// otherwise look like a timeout.
    async fn answers_without_privacy(
        &mut self,
        user: &UsmUser,
        engine: &Engine,
        keys: &LocalKeys,
    ) -> bool {
        let request_id = self.take_request_id();
        let msg_id = self.take_msg_id();
        let Ok(pdus) = pdus_of(request_id, Request::Get, &[Oid(SYS_UPTIME.to_vec())]) else {
            return false;
        };
        let Ok(datagram) = encode_v3(
            &user.name,
            SecurityLevel::AuthNoPriv,
            Some(engine),
            Some(keys),
            0,
            msg_id,
            self.max_message_size(),
            pdus,
        ) else {
            return false;
        };
        let want = Want {
            msg_id: Some(msg_id),
            request_id,
            level: SecurityLevel::AuthNoPriv,
        };
        self.transact(&datagram, want, Some(keys)).await.is_ok()
    }

    fn engine_and_keys(&self, user: &UsmUser) -> Option<(Engine, LocalKeys)> {
        let mut s = self.session.lock();
        let engine = s.engine.clone()?;
        let keys = match &s.keys {
            Some(k) if k.engine_id == engine.id => k.clone(),
            _ => {
                let k = user.localize(&engine.id);
                s.keys = Some(k.clone());
                k
            }
        };
        Some((engine, keys))
    }

    /// RFC 3414 §4: an unauthenticated, empty request makes the agent report
    /// its snmpEngineID, snmpEngineBoots and snmpEngineTime.
    async fn discover(&mut self, user: &UsmUser) -> Result<(), SnmpError> {
        let request_id = self.take_request_id();
        let msg_id = self.take_msg_id();
        let pdus = pdus_of(request_id, Request::Get, &[])?;
        let datagram = encode_v3(
            "",
            SecurityLevel::NoAuthNoPriv,
            None,
            None,
            0,
            msg_id,
            self.max_message_size(),
            pdus,
        )?;
        let want = Want {
            msg_id: Some(msg_id),
            request_id,
            level: SecurityLevel::NoAuthNoPriv,
        };
        let engine = match self.transact(&datagram, want, None).await? {
            Reply::Report { engine, .. } => engine,
            Reply::Response(_) => {
                return Err(SnmpError::Usm {
                    reason: "engine discovery answered with a Response, not a Report".into(),
                })
            }
        };
        if engine.id.is_empty() || engine.id.len() > 32 {
            return Err(SnmpError::Usm {
                reason: format!(
                    "engine discovery: agent reported an engine id of {} bytes",
                    engine.id.len()
                ),
            });
        }
        tracing::debug!(peer = %self.peer, user = %user.name, boots = engine.boots, time = engine.time, "SNMPv3 engine discovered");
        usm_event("discovered");
        let mut s = self.session.lock();
        s.keys = None;
        s.engine = Some(Engine {
            id: engine.id,
            boots: engine.boots,
            time: engine.time,
            synced_at: std::time::Instant::now(),
        });
        Ok(())
    }

    /// msgMaxSize we announce: what we accept, within RFC 3412's bounds.
    fn max_message_size(&self) -> i64 {
        i64::try_from(self.opts.max_response_bytes)
            .unwrap_or(65_507)
            .clamp(484, 65_507)
    }

    /// Send `datagram` and wait for the matching answer, with retries and
    /// exponential backoff (each retry waits twice as long as the last).
    async fn transact(
        &mut self,
        datagram: &[u8],
        want: Want,
        keys: Option<&LocalKeys>,
    ) -> Result<Reply, SnmpError> {
        let mut timeout = self.opts.timeout;
        let attempts = self.opts.retries.saturating_add(1);
        for attempt in 0..attempts {
            if attempt > 0 {
                timeout = timeout.saturating_mul(2);
            }
            self.socket.send(datagram).await?;
            let deadline = Instant::now() + timeout;
            if let Some(reply) = self.receive(want, keys, deadline).await? {
                return Ok(reply);
            }
        }
        Err(SnmpError::Timeout {
            attempts,
            last_timeout: timeout,
        })
    }

    /// Read datagrams until the one answering `want` arrives or `deadline` passes.
    async fn receive(
        &mut self,
        want: Want,
        keys: Option<&LocalKeys>,
        deadline: Instant,
    ) -> Result<Option<Reply>, SnmpError> {
        loop {
            let n = match tokio::time::timeout_at(deadline, self.socket.recv(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(n)) => n,
                // ICMP port unreachable surfaces as ECONNREFUSED on a connected
                // socket: the agent is not there (yet). Treat as silence.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep_until(
                        deadline.min(Instant::now() + Duration::from_millis(50)),
                    )
                    .await;
                    continue;
                }
                Ok(Err(e)) => return Err(SnmpError::Io(e)),
            };
            if n > self.opts.max_response_bytes {
                return Err(SnmpError::ResponseTooLarge {
                    size: n,
                    limit: self.opts.max_response_bytes,
                });
            }
            let raw = &self.buf[..n];
            let decode_err = |reason: String| SnmpError::Decode {
                reason,
                raw: raw.to_vec(),
            };
            let reply = match &self.security {
                Security::Community { version, .. } => {
                    let r = decode_response(*version, raw).map_err(decode_err)?;
                    if r.request_id != i64::from(want.request_id) {
                        self.ignore(want.request_id, r.request_id);
                        continue;
                    }
                    Reply::Response(r)
                }
                Security::Usm(_) => {
                    let (msg_id, level, reply) = decode_v3(raw, keys)?;
                    if Some(msg_id) != want.msg_id.map(i64::from) {
                        self.ignore(want.msg_id.unwrap_or_default(), msg_id);
                        continue;
                    }
                    if let Reply::Response(r) = &reply {
                        if r.request_id != i64::from(want.request_id) {
                            self.ignore(want.request_id, r.request_id);
                            continue;
                        }
                        // Reports may legitimately be less protected than the
                        // request (discovery, unknown engine, wrong digest);
                        // a Response never.
                        if level != want.level {
                            return Err(downgrade(self.peer, want.level, level));
                        }
                    }
                    reply
                }
            };
            self.heard_from_agent = true;
            return Ok(Some(reply));
        }
    }

    fn ignore(&self, expected: i32, got: i64) {
        tracing::debug!(
            peer = %self.peer,
            expected,
            got,
            "ignoring SNMP response with another request id"
        );
    }
}

fn usm_event(what: &'static str) {
    tracing::debug!(event = what, "SNMPv3 engine state");
    metrics::counter!("fleetpulse_edge_snmpv3_engine_events_total", "event" => what).increment(1);
}

/// The v2 PDU of a request (shared by v2c and v3).
fn pdus_of(request_id: i32, kind: Request, oids: &[Oid]) -> Result<v2::Pdus, SnmpError> {
    let variable_bindings = oids
        .iter()
        .map(|o| {
            Ok(v2::VarBind {
                name: to_rasn_oid(o)?,
                value: v2::VarBindValue::Unspecified,
            })
        })
        .collect::<Result<Vec<_>, SnmpError>>()?;
    let pdu = || v2::Pdu {
        request_id,
        error_status: 0,
        error_index: 0,
        variable_bindings: variable_bindings.clone(),
    };
    Ok(match kind {
        Request::Get => v2::Pdus::GetRequest(v2::GetRequest(pdu())),
        Request::GetNext => v2::Pdus::GetNextRequest(v2::GetNextRequest(pdu())),
        Request::GetBulk {
            non_repeaters,
            max_repetitions,
        } => v2::Pdus::GetBulkRequest(v2::GetBulkRequest(v2::BulkPdu {
            request_id,
            non_repeaters,
            max_repetitions,
            variable_bindings: variable_bindings.clone(),
        })),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn enc_err(e: impl std::fmt::Display) -> SnmpError {
    SnmpError::Encode(e.to_string())
}

/// BER-encode an SNMPv3 message; encrypt the scoped PDU (authPriv) and sign
/// the whole message (authNoPriv, authPriv).
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_v3(
    user: &str,
    level: SecurityLevel,
    engine: Option<&Engine>,
    keys: Option<&LocalKeys>,
    salt: u64,
    msg_id: i32,
    max_size: i64,
    pdus: v2::Pdus,
) -> Result<Vec<u8>, SnmpError> {
    let (engine_id, boots, time) = engine
        .map(|e| (e.id.clone(), e.boots, e.time_now()))
        .unwrap_or_default();
    let auth = match level {
        SecurityLevel::NoAuthNoPriv => None,
        _ => Some(
            keys.and_then(|k| k.auth.as_ref())
                .ok_or_else(|| enc_err("no authentication key"))?,
        ),
    };
    let scoped = v3::ScopedPdu {
        engine_id: OctetString::from(engine_id.clone()),
        name: OctetString::from(Vec::new()),
        data: pdus,
    };
    let (scoped_data, privacy_parameters) = if level == SecurityLevel::AuthPriv {
        let (_, key) = keys
            .and_then(|k| k.privacy.as_ref())
            .ok_or_else(|| enc_err("no privacy key"))?;
        let mut plain = rasn::ber::encode(&scoped).map_err(enc_err)?;
        let salt = salt.to_be_bytes();
        usm::aes_cfb(true, key, boots, time, &salt, &mut plain).map_err(SnmpError::Encode)?;
        (
            v3::ScopedPduData::EncryptedPdu(OctetString::from(plain)),
            salt.to_vec(),
        )
    } else {
        (v3::ScopedPduData::CleartextPdu(scoped), Vec::new())
    };
    let mac_len = auth.map(|(p, _)| p.mac_len()).unwrap_or(0);
    let usm_params = v3::USMSecurityParameters {
        authoritative_engine_id: OctetString::from(engine_id),
        authoritative_engine_boots: Integer::from(boots),
        authoritative_engine_time: Integer::from(time),
        user_name: OctetString::from(user.as_bytes().to_vec()),
        authentication_parameters: OctetString::from(vec![0u8; mac_len]),
        privacy_parameters: OctetString::from(privacy_parameters.clone()),
    };
    let usm_bytes = rasn::ber::encode(&usm_params).map_err(enc_err)?;
    let msg = v3::Message {
        version: Integer::from(3),
        global_data: v3::HeaderData {
            message_id: Integer::from(msg_id),
            max_size: Integer::from(max_size),
            flags: OctetString::from(vec![level.flags() | REPORTABLE]),
            security_model: Integer::from(3),
        },
        security_parameters: OctetString::from(usm_bytes.clone()),
        scoped_data,
    };
    let mut bytes = rasn::ber::encode(&msg).map_err(enc_err)?;
    if let Some((protocol, key)) = auth {
        // msgAuthenticationParameters is the second-to-last field of the USM
        // sequence; privacy parameters (short) follow it.
        let usm_at = find(&bytes, &usm_bytes).ok_or_else(|| enc_err("USM header not found"))?;
        let auth_at = (usm_at + usm_bytes.len())
            .checked_sub(2 + privacy_parameters.len() + mac_len)
            .ok_or_else(|| enc_err("USM header too short"))?;
        let placeholder = bytes
            .get(auth_at.saturating_sub(2)..auth_at + mac_len)
            .ok_or_else(|| enc_err("USM header too short"))?;
        if placeholder[0] != 0x04
            || usize::from(placeholder[1]) != mac_len
            || placeholder[2..].iter().any(|b| *b != 0)
        {
            return Err(enc_err("cannot locate msgAuthenticationParameters"));
        }
        let mac = protocol.mac(key, &bytes);
        bytes[auth_at..auth_at + mac_len].copy_from_slice(&mac);
    }
    Ok(bytes)
}

fn clamp_u32(i: &Integer) -> u32 {
    i64::try_from(i)
        .map(|v| u32::try_from(v.clamp(0, i64::from(i32::MAX))).unwrap_or(0))
        .unwrap_or(0)
}

/// A v3 Response at another security level than its request: typed error,
/// logged and counted.
fn downgrade(peer: SocketAddr, sent: SecurityLevel, got: SecurityLevel) -> SnmpError {
    tracing::warn!(%peer, ?sent, ?got, "SNMPv3 response at a lower security level than the request: rejected");
    metrics::counter!("fleetpulse_edge_snmpv3_downgrades_total").increment(1);
    SnmpError::AuthFailed {
        reason: format!("security downgrade: request sent {sent:?}, response came back {got:?}"),
    }
}

/// Decode (verify, decrypt) an SNMPv3 datagram, catching decoder panics.
/// Returns the msgID, the security level the message was verified at
/// (authenticated: digest checked; private: decrypted) and the PDU.
fn decode_v3(
    raw: &[u8],
    keys: Option<&LocalKeys>,
) -> Result<(i64, SecurityLevel, Reply), SnmpError> {
    match std::panic::catch_unwind(|| decode_v3_inner(raw, keys)) {
        Ok(r) => r,
        Err(_) => Err(SnmpError::Decode {
            reason: "BER decoder panicked on this datagram".into(),
            raw: raw.to_vec(),
        }),
    }
}

/// The v3 decoder itself, without the panic guard (the fuzz target calls
/// this through [`super::decode_v3_unguarded`] so a panic is a crash).
pub(super) fn decode_v3_inner(
    raw: &[u8],
    keys: Option<&LocalKeys>,
) -> Result<(i64, SecurityLevel, Reply), SnmpError> {
    let bad = |reason: String| SnmpError::Decode {
        reason,
        raw: raw.to_vec(),
    };
    let auth_failed = |reason: &str| SnmpError::AuthFailed {
        reason: reason.to_string(),
    };
    let msg: v3::Message = rasn::ber::decode(raw).map_err(|e| bad(format!("BER: {e}")))?;
    if int(&msg.version).map_err(bad)? != 3 {
        return Err(bad(format!(
            "SNMP version field {:?}, expected 3",
            msg.version
        )));
    }
    if int(&msg.global_data.security_model).map_err(bad)? != 3 {
        return Err(bad("security model is not USM (3)".into()));
    }
    let msg_id = int(&msg.global_data.message_id).map_err(bad)?;
    let flags = msg.global_data.flags.first().copied().unwrap_or(0);
    let usm_params: v3::USMSecurityParameters = rasn::ber::decode(&msg.security_parameters)
        .map_err(|e| bad(format!("USM security parameters: {e}")))?;
    let engine = EngineParams {
        id: usm_params.authoritative_engine_id.to_vec(),
        boots: clamp_u32(&usm_params.authoritative_engine_boots),
        time: clamp_u32(&usm_params.authoritative_engine_time),
    };
    let authenticated = flags & 1 != 0;
    if flags & 3 == 2 {
        return Err(bad("msgFlags privacy without authentication".into()));
    }
    if authenticated {
        let keys = keys
            .filter(|k| k.engine_id == engine.id)
            .ok_or_else(|| auth_failed("authenticated message from an unknown engine"))?;
        let (protocol, key) = keys
            .auth
            .as_ref()
            .ok_or_else(|| auth_failed("authenticated message but we use noAuthNoPriv"))?;
        let received = usm_params.authentication_parameters.as_ref();
        if received.len() != protocol.mac_len() {
            return Err(auth_failed(&format!(
                "msgAuthenticationParameters of {} bytes, expected {}",
                received.len(),
                protocol.mac_len()
            )));
        }
        let usm_at = find(raw, &msg.security_parameters)
            .ok_or_else(|| bad("USM header not found in datagram".into()))?;
        let auth_at = usm_at
            + find(&msg.security_parameters, received)
                .ok_or_else(|| bad("authentication parameters not found".into()))?;
        let mut zeroed = raw.to_vec();
        zeroed[auth_at..auth_at + received.len()].fill(0);
        let expected = protocol.mac(key, &zeroed);
        // Constant-time comparison.
        let diff = expected
            .iter()
            .zip(received)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(auth_failed("response digest does not verify"));
        }
    }
    let level = match (authenticated, flags & 2 != 0) {
        (false, _) => SecurityLevel::NoAuthNoPriv,
        (true, false) => SecurityLevel::AuthNoPriv,
        (true, true) => SecurityLevel::AuthPriv,
    };
    let scoped = match msg.scoped_data {
        v3::ScopedPduData::CleartextPdu(p) => {
            if flags & 2 != 0 {
                return Err(bad("msgFlags privacy but a cleartext scoped PDU".into()));
            }
            p
        }
        v3::ScopedPduData::EncryptedPdu(ct) => {
            if flags & 2 == 0 {
                return Err(bad("encrypted scoped PDU without the privacy flag".into()));
            }
            let (_, key) = keys
                .and_then(|k| k.privacy.as_ref())
                .ok_or_else(|| auth_failed("encrypted message but we use no privacy"))?;
            let mut plain = ct.to_vec();
            usm::aes_cfb(
                false,
                key,
                engine.boots,
                engine.time,
                &usm_params.privacy_parameters,
                &mut plain,
            )
            .map_err(bad)?;
            let (scoped, _padding) = rasn::ber::decode_with_remainder::<v3::ScopedPdu>(&plain)
                .map_err(|e| auth_failed(&format!("cannot decode decrypted PDU ({e})")))?;
            scoped
        }
    };
    let (is_report, pdu) = match scoped.data {
        v2::Pdus::Response(v2::Response(pdu)) => (false, pdu),
        v2::Pdus::Report(v2::Report(pdu)) => (true, pdu),
        other => return Err(bad(format!("unexpected PDU {}", pdu_name(&other)))),
    };
    let varbinds = pdu
        .variable_bindings
        .into_iter()
        .map(|vb| Ok((from_rasn_oid(&vb.name), value_v2(vb.value)?)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(bad)?;
    let reply = if is_report {
        Reply::Report {
            oid: varbinds.first().map(|(o, _)| o.clone()),
            engine,
            authenticated,
        }
    } else {
        Reply::Response(Response {
            request_id: i64::from(pdu.request_id),
            error_status: i64::from(pdu.error_status),
            error_index: i64::from(pdu.error_index),
            varbinds,
        })
    };
    Ok((msg_id, level, reply))
}

fn to_rasn_oid(oid: &Oid) -> Result<ObjectIdentifier, SnmpError> {
    ObjectIdentifier::new(oid.0.clone())
        .ok_or_else(|| SnmpError::Encode(format!("invalid OID {oid}")))
}

/// BER-encode a request with rasn.
fn encode_request(
    version: SnmpVersion,
    community: &[u8],
    request_id: i32,
    kind: Request,
    oids: &[Oid],
) -> Result<Vec<u8>, SnmpError> {
    let encoded = match version {
        SnmpVersion::V3 => return Err(SnmpError::Encode("SNMPv3 requests need a USM user".into())),
        SnmpVersion::V2c => {
            let variable_bindings = oids
                .iter()
                .map(|o| {
                    Ok(v2::VarBind {
                        name: to_rasn_oid(o)?,
                        value: v2::VarBindValue::Unspecified,
                    })
                })
                .collect::<Result<Vec<_>, SnmpError>>()?;
            let pdu = || v2::Pdu {
                request_id,
                error_status: 0,
                error_index: 0,
                variable_bindings: variable_bindings.clone(),
            };
            let data = match kind {
                Request::Get => v2::Pdus::GetRequest(v2::GetRequest(pdu())),
                Request::GetNext => v2::Pdus::GetNextRequest(v2::GetNextRequest(pdu())),
                Request::GetBulk {
                    non_repeaters,
                    max_repetitions,
                } => v2::Pdus::GetBulkRequest(v2::GetBulkRequest(v2::BulkPdu {
                    request_id,
                    non_repeaters,
                    max_repetitions,
                    variable_bindings: variable_bindings.clone(),
                })),
            };
            let msg = v2c::Message {
                version: Integer::from(1),
                community: OctetString::from(community.to_vec()),
                data,
            };
            rasn::ber::encode(&msg)
        }
        SnmpVersion::V1 => {
            let variable_bindings = oids
                .iter()
                .map(|o| {
                    Ok(v1::VarBind {
                        name: to_rasn_oid(o)?,
                        value: rasn_smi::v1::ObjectSyntax::Simple(
                            rasn_smi::v1::SimpleSyntax::Empty,
                        ),
                    })
                })
                .collect::<Result<Vec<_>, SnmpError>>()?;
            let pdu = v1::Pdu {
                request_id: Integer::from(request_id),
                error_status: Integer::from(0),
                error_index: Integer::from(0),
                variable_bindings,
            };
            let data = match kind {
                Request::Get => v1::Pdus::GetRequest(v1::GetRequest(pdu)),
                Request::GetNext | Request::GetBulk { .. } => {
                    v1::Pdus::GetNextRequest(v1::GetNextRequest(pdu))
                }
            };
            let msg = v1::Message {
                version: Integer::from(0),
                community: OctetString::from(community.to_vec()),
                data,
            };
            rasn::ber::encode(&msg)
        }
    };
    encoded.map_err(|e| SnmpError::Encode(e.to_string()))
}

fn int(i: &Integer) -> Result<i64, String> {
    i64::try_from(i).map_err(|_| format!("integer {i:?} out of range"))
}

fn from_rasn_oid(o: &ObjectIdentifier) -> Oid {
    Oid(o.as_ref().to_vec())
}

/// Decode a response datagram with rasn, catching any decoder panic so a
/// hostile datagram can never take the poller down.
fn decode_response(version: SnmpVersion, raw: &[u8]) -> Result<Response, String> {
    match std::panic::catch_unwind(|| decode_response_inner(version, raw)) {
        Ok(r) => r,
        Err(_) => Err("BER decoder panicked on this datagram".into()),
    }
}

/// The decoder itself, without the panic guard (the fuzz targets call this
/// through [`super::decode_response_unguarded`] so a panic is a crash).
pub(super) fn decode_response_inner(version: SnmpVersion, raw: &[u8]) -> Result<Response, String> {
    match version {
        SnmpVersion::V3 => Err("SNMPv3 messages are decoded by decode_v3".into()),
        SnmpVersion::V2c => {
            let msg: v2c::Message<v2::Pdus> =
                rasn::ber::decode(raw).map_err(|e| format!("BER: {e}"))?;
            if int(&msg.version)? != 1 {
                return Err(format!(
                    "SNMP version field {:?}, expected 1 (v2c)",
                    msg.version
                ));
            }
            let pdu = match msg.data {
                v2::Pdus::Response(v2::Response(pdu)) => pdu,
                v2::Pdus::Report(_) => return Err("agent sent a Report PDU".into()),
                other => return Err(format!("unexpected PDU {}", pdu_name(&other))),
            };
            let varbinds = pdu
                .variable_bindings
                .into_iter()
                .map(|vb| Ok((from_rasn_oid(&vb.name), value_v2(vb.value)?)))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Response {
                request_id: i64::from(pdu.request_id),
                error_status: i64::from(pdu.error_status),
                error_index: i64::from(pdu.error_index),
                varbinds,
            })
        }
        SnmpVersion::V1 => {
            let msg: v1::Message<v1::Pdus> =
                rasn::ber::decode(raw).map_err(|e| format!("BER: {e}"))?;
            if int(&msg.version)? != 0 {
                return Err(format!(
                    "SNMP version field {:?}, expected 0 (v1)",
                    msg.version
                ));
            }
            let pdu = match msg.data {
                v1::Pdus::GetResponse(v1::GetResponse(pdu)) => pdu,
                _ => return Err("unexpected PDU, expected GetResponse".into()),
            };
            let varbinds = pdu
                .variable_bindings
                .into_iter()
                .map(|vb| Ok((from_rasn_oid(&vb.name), value_v1(vb.value)?)))
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Response {
                request_id: int(&pdu.request_id)?,
                error_status: int(&pdu.error_status)?,
                error_index: int(&pdu.error_index)?,
                varbinds,
            })
        }
    }
}

fn pdu_name(p: &v2::Pdus) -> &'static str {
    match p {
        v2::Pdus::GetRequest(_) => "GetRequest",
        v2::Pdus::GetNextRequest(_) => "GetNextRequest",
        v2::Pdus::Response(_) => "Response",
        v2::Pdus::SetRequest(_) => "SetRequest",
        v2::Pdus::GetBulkRequest(_) => "GetBulkRequest",
        v2::Pdus::InformRequest(_) => "InformRequest",
        v2::Pdus::Trap(_) => "Trap",
        v2::Pdus::Report(_) => "Report",
    }
}

fn value_v2(v: v2::VarBindValue) -> Result<SnmpValue, String> {
    use rasn_smi::v2::{ApplicationSyntax as A, ObjectSyntax as O, SimpleSyntax as S};
    Ok(match v {
        v2::VarBindValue::Unspecified => SnmpValue::Null,
        v2::VarBindValue::NoSuchObject => SnmpValue::NoSuchObject,
        v2::VarBindValue::NoSuchInstance => SnmpValue::NoSuchInstance,
        v2::VarBindValue::EndOfMibView => SnmpValue::EndOfMibView,
        v2::VarBindValue::Value(O::Simple(S::Integer(i))) => SnmpValue::Integer(int(&i)?),
        v2::VarBindValue::Value(O::Simple(S::String(s))) => SnmpValue::OctetString(s.to_vec()),
        v2::VarBindValue::Value(O::Simple(S::ObjectId(o))) => {
            SnmpValue::ObjectId(from_rasn_oid(&o))
        }
        v2::VarBindValue::Value(O::ApplicationWide(a)) => match a {
            A::Address(ip) => SnmpValue::IpAddress(*ip.0),
            A::Counter(c) => SnmpValue::Counter32(c.0),
            A::Ticks(t) => SnmpValue::TimeTicks(t.0),
            A::Arbitrary(o) => SnmpValue::Opaque(o.as_ref().to_vec()),
            A::BigCounter(c) => SnmpValue::Counter64(c.0),
            A::Unsigned(g) => SnmpValue::Gauge32(g.0),
        },
    })
}

fn value_v1(v: rasn_smi::v1::ObjectSyntax) -> Result<SnmpValue, String> {
    use rasn_smi::v1::{
        ApplicationSyntax as A, NetworkAddress, ObjectSyntax as O, SimpleSyntax as S,
    };
    Ok(match v {
        O::Simple(S::Number(i)) => SnmpValue::Integer(int(&i)?),
        O::Simple(S::String(s)) => SnmpValue::OctetString(s.to_vec()),
        O::Simple(S::Object(o)) => SnmpValue::ObjectId(from_rasn_oid(&o)),
        O::Simple(S::Empty) => SnmpValue::Null,
        O::ApplicationWide(A::Address(NetworkAddress::Internet(ip))) => SnmpValue::IpAddress(*ip.0),
        O::ApplicationWide(A::Counter(c)) => SnmpValue::Counter32(c.0),
        O::ApplicationWide(A::Gauge(g)) => SnmpValue::Gauge32(g.0),
        O::ApplicationWide(A::Ticks(t)) => SnmpValue::TimeTicks(t.0),
        O::ApplicationWide(A::Arbitrary(o)) => SnmpValue::Opaque(o.as_ref().to_vec()),
    })
}
