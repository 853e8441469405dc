//! One SNMP agent per printer: UDP in, BER-decoded PDU, MIB lookup, BER out.
//!
//! Encoding and decoding is done by `rasn-snmp`; this module only decides
//! what to answer. SNMPv2c is the main protocol (exceptions as varbind
//! values, GETBULK); SNMPv1 GET/GETNEXT are answered with v1 semantics
//! (`noSuchName` errors). Anything that does not decode, carries the wrong
//! community, or arrives while the printer is silent gets no answer — like a
//! real device — and is counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_smi::v1::{Counter, Gauge, TimeTicks};
use rasn_smi::v2::{ApplicationSyntax, SimpleSyntax};
use rasn_snmp::{v1, v2, v2c};
use tokio::net::UdpSocket;

use fleetpulse_core::Shutdown;

use crate::mib::{self, Lookup, Mib, Value};
use crate::model::{Printer, TICKS_PER_STEP};

/// What arrives: a community message with a v2 PDU (v1 GET/GETNEXT decode the same way).
type Request = v2c::Message<v2::Pdus>;

/// RFC 3416 error-status values used here.
const TOO_BIG: u32 = 1;
const NO_SUCH_NAME: u32 = 2;
const NOT_WRITABLE: u32 = 17;

/// Room left for length octets growing from short to long form (three
/// nested lengths — message, PDU, varbind list — each by up to 2 octets).
const LENGTH_SLACK: usize = 6;

/// Maps wall time to sim time: `sim = wall elapsed × acceleration`.
#[derive(Debug)]
pub(crate) struct SimClock {
    start: Instant,
    acceleration: f64,
}

impl SimClock {
    pub(crate) fn new(acceleration: f64) -> Self {
        SimClock {
            start: Instant::now(),
            acceleration,
        }
    }

    /// Sim time since start, in TimeTicks (hundredths of a second).
    pub(crate) fn sim_ticks(&self) -> u64 {
        let t = self.start.elapsed().as_secs_f64() * self.acceleration * 100.0;
        // `as` saturates; a negative or NaN product cannot happen with acceleration > 0.
        t as u64
    }
}

/// Settings shared by all agents of a fleet.
#[derive(Debug)]
pub(crate) struct AgentSettings {
    pub(crate) community: Vec<u8>,
    pub(crate) max_response_bytes: usize,
    pub(crate) malformed_log_interval: Duration,
}

/// What became of one datagram.
#[derive(Debug)]
pub(crate) enum Handled {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Wrong community: no answer.
    BadCommunity,
    /// The printer is silent at this sim step: no answer.
    Silent,
    /// Not an SNMP message we can read: no answer.
    Malformed(String),
    /// A well-formed PDU an agent does not answer (Response, Trap, v1 GetBulk…).
    Unsupported(&'static str),
}

/// Per-printer log throttle for noisy input.
#[derive(Debug)]
struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since last time)` when a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Result of resolving one varbind.
#[derive(Debug, Clone)]
enum Cell {
    Value(Value),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

/// The SNMP agent of one printer.
pub(crate) struct Agent {
    index: usize,
    printer: Printer,
    settings: Arc<AgentSettings>,
    cache: Option<(u64, Mib)>,
    malformed_log: Throttle,
}

impl Agent {
    pub(crate) fn new(index: usize, printer: Printer, settings: Arc<AgentSettings>) -> Self {
        let malformed_log = Throttle {
            interval: settings.malformed_log_interval,
            last: None,
            suppressed: 0,
        };
        Agent {
            index,
            printer,
            settings,
            cache: None,
            malformed_log,
        }
    }

    /// Answer datagrams on `socket` until shutdown.
    pub(crate) async fn serve(
        mut self,
        socket: UdpSocket,
        clock: Arc<SimClock>,
        shutdown: Shutdown,
    ) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = socket.recv_from(&mut buf) => r,
            };
            let (n, peer) = match received {
                Ok(r) => r,
                Err(e) => {
                    self.on_recv_error(&e);
                    continue;
                }
            };
            match self.handle(&buf[..n], clock.sim_ticks()) {
                Handled::Reply(bytes) => {
                    if let Err(e) = socket.send_to(&bytes, peer).await {
                        self.on_send_error(peer, &e);
                    }
                }
                Handled::BadCommunity => self.on_bad_community(peer),
                Handled::Silent => self.on_silent_drop(peer),
                Handled::Malformed(reason) => self.on_malformed(peer, &reason),
                Handled::Unsupported(what) => self.on_unsupported(peer, what),
            }
        }
    }

    /// Advance the printer to `sim_ticks`; `true` when it is silent then.
    fn advance(&mut self, sim_ticks: u64) -> bool {
        let was_silent = self.printer.state.is_silent();
        self.printer.advance_to(sim_ticks / TICKS_PER_STEP);
        let silent = self.printer.state.is_silent();
        if silent != was_silent {
            self.on_silence_change(silent);
        }
        silent
    }

    /// Decide the answer to one datagram at sim time `sim_ticks`.
    pub(crate) fn handle(&mut self, datagram: &[u8], sim_ticks: u64) -> Handled {
        if self.advance(sim_ticks) {
            return Handled::Silent;
        }
        // The decoder is fuzzed (fuzz/, target snmp_agent_request); catching
        // a panic here is a second line of defence so that no datagram can
        // take an agent down.
        let decoded = std::panic::catch_unwind(|| rasn::ber::decode::<Request>(datagram));
        match decoded {
            Ok(Ok(msg)) => self.answer(msg, sim_ticks),
            Ok(Err(e)) => Handled::Malformed(format!("BER decode: {e}")),
            Err(_) => Handled::Malformed("BER decoder panicked".into()),
        }
    }

    /// [`Agent::handle`] without the panic guard around the BER decoder, so
    /// that a fuzzer sees a decoder panic as a crash.
    pub(crate) fn handle_unguarded(&mut self, datagram: &[u8], sim_ticks: u64) -> Handled {
        if self.advance(sim_ticks) {
            return Handled::Silent;
        }
        match rasn::ber::decode::<Request>(datagram) {
            Ok(msg) => self.answer(msg, sim_ticks),
            Err(e) => Handled::Malformed(format!("BER decode: {e}")),
        }
    }

    /// The answer to a decoded message.
    fn answer(&mut self, msg: Request, sim_ticks: u64) -> Handled {
        let v1 = match i64::try_from(&msg.version) {
            Ok(0) => true,
            Ok(1) => false,
            _ => return Handled::Malformed(format!("unsupported SNMP version {}", msg.version)),
        };
        if msg.community.as_ref() != self.settings.community.as_slice() {
            return Handled::BadCommunity;
        }

        let mib = cached_mib(&mut self.cache, &self.printer, sim_ticks);
        let cap = self.settings.max_response_bytes;
        let community = msg.community;
        let reply = match msg.data {
            v2::Pdus::GetRequest(v2::GetRequest(pdu)) => {
                count_request("get");
                let cells = pdu
                    .variable_bindings
                    .iter()
                    .map(|vb| (vb.name.clone(), get(mib, vb.name.as_ref())))
                    .collect();
                respond(v1, &community, &pdu, cells, cap)
            }
            v2::Pdus::GetNextRequest(v2::GetNextRequest(pdu)) => {
                count_request("getnext");
                let cells = pdu
                    .variable_bindings
                    .iter()
                    .map(|vb| next(mib, vb.name.as_ref(), &vb.name))
                    .collect();
                respond(v1, &community, &pdu, cells, cap)
            }
            v2::Pdus::GetBulkRequest(v2::GetBulkRequest(pdu)) => {
                if v1 {
                    return Handled::Unsupported("GetBulkRequest in SNMPv1");
                }
                count_request("getbulk");
                bulk(mib, &community, &pdu, cap)
            }
            v2::Pdus::SetRequest(v2::SetRequest(pdu)) => {
                count_request("set");
                // Everything here is read-only.
                let index = u32::from(!pdu.variable_bindings.is_empty());
                if v1 {
                    encode_v1(&community, &pdu, NO_SUCH_NAME, index, echo_v1(&pdu))
                } else {
                    encode_v2(
                        &community,
                        pdu.request_id,
                        NOT_WRITABLE,
                        index,
                        pdu.variable_bindings.clone(),
                    )
                }
            }
            v2::Pdus::Response(_) => return Handled::Unsupported("Response"),
            v2::Pdus::InformRequest(_) => return Handled::Unsupported("InformRequest"),
            v2::Pdus::Trap(_) => return Handled::Unsupported("SNMPv2-Trap"),
            v2::Pdus::Report(_) => return Handled::Unsupported("Report"),
        };
        match reply {
            Some(bytes) => Handled::Reply(bytes),
            None => Handled::Unsupported("response cannot be encoded within max_response_bytes"),
        }
    }

    fn on_malformed(&mut self, peer: SocketAddr, reason: &str) {
        metrics::counter!("sim_snmp_malformed_total").increment(1);
        if let Some(suppressed) = self.malformed_log.allow() {
            tracing::warn!(
                printer = self.index,
                %peer,
                reason,
                suppressed,
                "malformed SNMP datagram dropped"
            );
        }
    }

    fn on_bad_community(&self, peer: SocketAddr) {
        metrics::counter!("sim_snmp_bad_community_total").increment(1);
        tracing::debug!(printer = self.index, %peer, "wrong community, request ignored");
    }

    fn on_silent_drop(&self, peer: SocketAddr) {
        metrics::counter!("sim_snmp_silent_drops_total").increment(1);
        tracing::trace!(printer = self.index, %peer, "printer is silent, request ignored");
    }

    fn on_unsupported(&self, peer: SocketAddr, what: &str) {
        metrics::counter!("sim_snmp_unsupported_total").increment(1);
        tracing::debug!(printer = self.index, %peer, what, "request not answered");
    }

    fn on_silence_change(&self, silent: bool) {
        if silent {
            metrics::counter!("sim_printer_silences_total").increment(1);
            tracing::info!(printer = self.index, serial = %self.printer.profile.serial, "printer went silent");
        } else {
            tracing::info!(printer = self.index, serial = %self.printer.profile.serial, "printer answers again");
        }
    }

    fn on_send_error(&self, peer: SocketAddr, e: &std::io::Error) {
        metrics::counter!("sim_snmp_send_errors_total").increment(1);
        tracing::debug!(printer = self.index, %peer, error = %e, "sending response failed");
    }

    fn on_recv_error(&self, e: &std::io::Error) {
        metrics::counter!("sim_snmp_recv_errors_total").increment(1);
        tracing::debug!(printer = self.index, error = %e, "receiving datagram failed");
    }
}

fn count_request(pdu: &'static str) {
    metrics::counter!("sim_snmp_requests_total", "pdu" => pdu).increment(1);
}

/// The MIB at the printer's current step, with sysUpTime at `sim_ticks`.
fn cached_mib<'a>(cache: &'a mut Option<(u64, Mib)>, printer: &Printer, sim_ticks: u64) -> &'a Mib {
    let step = printer.state.step;
    let uptime = printer.state.uptime_ticks(sim_ticks);
    if cache.as_ref().is_none_or(|(s, _)| *s != step) {
        *cache = Some((step, mib::build(printer, uptime)));
    }
    let (_, mib) = cache.get_or_insert_with(|| (step, mib::build(printer, uptime)));
    mib.set_uptime(uptime);
    mib
}

fn get(mib: &Mib, name: &[u32]) -> Cell {
    match mib.get(name) {
        Lookup::Found(v) => Cell::Value(v.clone()),
        Lookup::NoSuchObject => Cell::NoSuchObject,
        Lookup::NoSuchInstance => Cell::NoSuchInstance,
    }
}

fn next(mib: &Mib, name: &[u32], original: &ObjectIdentifier) -> (ObjectIdentifier, Cell) {
    match mib.next(name) {
        Some((oid, v)) => (to_rasn_oid(oid.arcs()), Cell::Value(v.clone())),
        None => (original.clone(), Cell::EndOfMibView),
    }
}

fn to_rasn_oid(arcs: &[u32]) -> ObjectIdentifier {
    ObjectIdentifier::new_unchecked(arcs.to_vec().into())
}

fn v2_value(v: &Value) -> v2::ObjectSyntax {
    match v {
        Value::Integer(i) => SimpleSyntax::Integer(Integer::from(*i)).into(),
        Value::OctetString(b) => SimpleSyntax::String(OctetString::from(b.clone())).into(),
        Value::ObjectId(o) => SimpleSyntax::ObjectId(to_rasn_oid(o.arcs())).into(),
        Value::Counter32(c) => ApplicationSyntax::Counter(Counter(*c)).into(),
        Value::Gauge32(g) => ApplicationSyntax::Unsigned(Gauge(*g)).into(),
        Value::TimeTicks(t) => ApplicationSyntax::Ticks(TimeTicks(*t)).into(),
    }
}

fn v1_value(v: &Value) -> rasn_smi::v1::ObjectSyntax {
    use rasn_smi::v1::{ApplicationSyntax as A, SimpleSyntax as S};
    match v {
        Value::Integer(i) => S::Number(Integer::from(*i)).into(),
        Value::OctetString(b) => S::String(OctetString::from(b.clone())).into(),
        Value::ObjectId(o) => S::Object(to_rasn_oid(o.arcs())).into(),
        Value::Counter32(c) => A::Counter(Counter(*c)).into(),
        Value::Gauge32(g) => A::Gauge(Gauge(*g)).into(),
        Value::TimeTicks(t) => A::Ticks(TimeTicks(*t)).into(),
    }
}

fn v2_varbind(name: ObjectIdentifier, cell: &Cell) -> v2::VarBind {
    let value = match cell {
        Cell::Value(v) => v2::VarBindValue::Value(v2_value(v)),
        Cell::NoSuchObject => v2::VarBindValue::NoSuchObject,
        Cell::NoSuchInstance => v2::VarBindValue::NoSuchInstance,
        Cell::EndOfMibView => v2::VarBindValue::EndOfMibView,
    };
    v2::VarBind { name, value }
}

/// The request's names with NULL values (v1 error responses).
fn echo_v1(pdu: &v2::Pdu) -> Vec<v1::VarBind> {
    pdu.variable_bindings
        .iter()
        .map(|vb| v1::VarBind {
            name: vb.name.clone(),
            value: rasn_smi::v1::SimpleSyntax::Empty.into(),
        })
        .collect()
}

fn encode_v2(
    community: &OctetString,
    request_id: i32,
    error_status: u32,
    error_index: u32,
    variable_bindings: Vec<v2::VarBind>,
) -> Option<Vec<u8>> {
    let msg = v2c::Message {
        version: Integer::from(1),
        community: community.clone(),
        data: v2::Response(v2::Pdu {
            request_id,
            error_status,
            error_index,
            variable_bindings,
        }),
    };
    rasn::ber::encode(&msg).ok()
}

fn encode_v1(
    community: &OctetString,
    request: &v2::Pdu,
    error_status: u32,
    error_index: u32,
    variable_bindings: Vec<v1::VarBind>,
) -> Option<Vec<u8>> {
    let msg = v1::Message {
        version: Integer::from(0),
        community: community.clone(),
        data: v1::GetResponse(v1::Pdu {
            request_id: Integer::from(request.request_id),
            error_status: Integer::from(error_status),
            error_index: Integer::from(error_index),
            variable_bindings,
        }),
    };
    rasn::ber::encode(&msg).ok()
}

/// Answer a GET or GETNEXT whose varbinds resolved to `cells`.
fn respond(
    v1: bool,
    community: &OctetString,
    pdu: &v2::Pdu,
    cells: Vec<(ObjectIdentifier, Cell)>,
    cap: usize,
) -> Option<Vec<u8>> {
    if v1 {
        // v1 has no exceptions: the first missing name fails the request.
        if let Some(pos) = cells.iter().position(|(_, c)| !matches!(c, Cell::Value(_))) {
            return encode_v1(community, pdu, NO_SUCH_NAME, pos as u32 + 1, echo_v1(pdu));
        }
        let vbs = cells
            .iter()
            .filter_map(|(name, c)| match c {
                Cell::Value(v) => Some(v1::VarBind {
                    name: name.clone(),
                    value: v1_value(v),
                }),
                _ => None,
            })
            .collect();
        let bytes = encode_v1(community, pdu, 0, 0, vbs)?;
        if bytes.len() <= cap {
            return Some(bytes);
        }
        on_too_big(bytes.len(), cap);
        return encode_v1(community, pdu, TOO_BIG, 0, echo_v1(pdu));
    }
    let vbs = cells
        .into_iter()
        .map(|(name, c)| v2_varbind(name, &c))
        .collect();
    let bytes = encode_v2(community, pdu.request_id, 0, 0, vbs)?;
    if bytes.len() <= cap {
        return Some(bytes);
    }
    on_too_big(bytes.len(), cap);
    encode_v2(community, pdu.request_id, TOO_BIG, 0, Vec::new())
}

fn on_too_big(len: usize, cap: usize) {
    metrics::counter!("sim_snmp_too_big_total").increment(1);
    tracing::debug!(
        len,
        cap,
        "response exceeds max_response_bytes, answering tooBig"
    );
}

fn on_bulk_trimmed(repetitions: usize, requested: u32) {
    metrics::counter!("sim_snmp_bulk_trimmed_total").increment(1);
    tracing::debug!(
        repetitions,
        requested,
        "GETBULK response trimmed to fit max_response_bytes"
    );
}

fn encoded_len(vb: &v2::VarBind) -> usize {
    // Encoding a varbind of our own values cannot fail; count an impossible
    // failure as "does not fit".
    rasn::ber::encode(vb)
        .map(|b| b.len())
        .unwrap_or(usize::MAX / 4)
}

/// GETBULK per RFC 3416 §4.2.3, trimmed to whole repetitions that fit `cap`.
fn bulk(mib: &Mib, community: &OctetString, pdu: &v2::BulkPdu, cap: usize) -> Option<Vec<u8>> {
    let base = encode_v2(community, pdu.request_id, 0, 0, Vec::new())?.len();
    let budget = cap.checked_sub(base + LENGTH_SLACK)?;
    let names = &pdu.variable_bindings;
    let n = (pdu.non_repeaters as usize).min(names.len());

    let mut out: Vec<v2::VarBind> = Vec::new();
    let mut used = 0usize;
    for vb in &names[..n] {
        let (name, cell) = next(mib, vb.name.as_ref(), &vb.name);
        let bound = v2_varbind(name, &cell);
        used += encoded_len(&bound);
        out.push(bound);
    }
    if used > budget {
        on_too_big(base + used, cap);
        return encode_v2(community, pdu.request_id, TOO_BIG, 0, Vec::new());
    }

    let repeaters = &names[n..];
    let mut cursors: Vec<ObjectIdentifier> = repeaters.iter().map(|vb| vb.name.clone()).collect();
    let mut rows = 0usize;
    let mut trimmed = false;
    if !repeaters.is_empty() {
        for _ in 0..pdu.max_repetitions {
            let mut row = Vec::with_capacity(cursors.len());
            let mut row_len = 0usize;
            let mut all_ended = true;
            for cursor in &mut cursors {
                let (name, cell) = next(mib, cursor.as_ref(), cursor);
                if !matches!(cell, Cell::EndOfMibView) {
                    all_ended = false;
                }
                *cursor = name.clone();
                let bound = v2_varbind(name, &cell);
                row_len += encoded_len(&bound);
                row.push(bound);
            }
            if used + row_len > budget {
                trimmed = true;
                break;
            }
            used += row_len;
            out.extend(row);
            rows += 1;
            if all_ended {
                break;
            }
        }
    }
    if trimmed {
        on_bulk_trimmed(rows, pdu.max_repetitions);
    }

    // The estimate is conservative; still verify and drop whole rows if needed.
    loop {
        let bytes = encode_v2(community, pdu.request_id, 0, 0, out.clone())?;
        if bytes.len() <= cap {
            return Some(bytes);
        }
        if rows == 0 {
            on_too_big(bytes.len(), cap);
            return encode_v2(community, pdu.request_id, TOO_BIG, 0, Vec::new());
        }
        out.truncate(out.len() - repeaters.len());
        rows -= 1;
    }
}
