//! One UDP socket per device poll, request-id matching, timeouts and retries.

use std::net::SocketAddr;
use std::time::Duration;

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::{v1, v2, v2c};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::{Oid, SnmpError, SnmpOptions, SnmpValue, SnmpVersion, VarBind};

/// Receive buffer: the largest UDP datagram there is.
const READ_BUFFER: usize = 65_535;

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

/// An SNMP session with one agent over one connected UDP socket.
///
/// The socket is connected, so the kernel drops datagrams from other peers;
/// datagrams from the agent that carry another request id (late answers to
/// an earlier attempt, duplicates) are ignored.
#[derive(Debug)]
pub struct SnmpClient {
    socket: UdpSocket,
    peer: SocketAddr,
    community: Vec<u8>,
    opts: SnmpOptions,
    next_request_id: i32,
    buf: Vec<u8>,
}

impl SnmpClient {
    /// Bind an ephemeral UDP socket and connect it to `peer`.
    pub async fn connect(
        peer: SocketAddr,
        community: &str,
        opts: &SnmpOptions,
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
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let local_port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let start = (seed ^ (u32::from(local_port) << 15)) & 0x3fff_ffff;
        Ok(SnmpClient {
            socket,
            peer,
            community: community.as_bytes().to_vec(),
            opts: opts.clone(),
            next_request_id: i32::try_from(start).unwrap_or(1).max(1),
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

    /// GET. Missing objects come back as `NoSuchObject`/`NoSuchInstance`
    /// (v2c) or are reported as `NoSuchObject` after the v1 agent's
    /// `noSuchName` error (the request is repeated without that varbind).
    pub async fn get(&mut self, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        match self.opts.version {
            SnmpVersion::V2c => self.request(Request::Get, oids).await,
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

    /// GETBULK (v2c only; on v1 this is a GETNEXT).
    pub async fn get_bulk(
        &mut self,
        oids: &[Oid],
        non_repeaters: u32,
        max_repetitions: u32,
    ) -> Result<Vec<VarBind>, SnmpError> {
        match self.opts.version {
            SnmpVersion::V2c => {
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

    /// Send one request and wait for its response, with retries and backoff.
    async fn request(&mut self, kind: Request, oids: &[Oid]) -> Result<Vec<VarBind>, SnmpError> {
        let request_id = self.take_request_id();
        let datagram = encode_request(self.opts.version, &self.community, request_id, kind, oids)?;
        let mut timeout = self.opts.timeout;
        let attempts = self.opts.retries.saturating_add(1);
        for attempt in 0..attempts {
            if attempt > 0 {
                // Exponential backoff: each retry waits twice as long as the last.
                timeout = timeout.saturating_mul(2);
            }
            self.socket.send(&datagram).await?;
            let deadline = Instant::now() + timeout;
            if let Some(response) = self.receive(request_id, deadline).await? {
                if response.error_status != 0 {
                    return Err(SnmpError::Agent {
                        status: response.error_status,
                        index: response.error_index,
                    });
                }
                return Ok(response.varbinds);
            }
        }
        Err(SnmpError::Timeout {
            attempts,
            last_timeout: timeout,
        })
    }

    /// Read datagrams until the one answering `request_id` arrives or `deadline` passes.
    async fn receive(
        &mut self,
        request_id: i32,
        deadline: Instant,
    ) -> Result<Option<Response>, SnmpError> {
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
            let response =
                decode_response(self.opts.version, raw).map_err(|reason| SnmpError::Decode {
                    reason,
                    raw: raw.to_vec(),
                })?;
            if response.request_id != i64::from(request_id) {
                tracing::debug!(
                    peer = %self.peer,
                    expected = request_id,
                    got = response.request_id,
                    "ignoring SNMP response with another request id"
                );
                continue;
            }
            return Ok(Some(response));
        }
    }
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
