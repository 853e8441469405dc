//! The checks behind each fuzz target, one function per target.
//!
//! This file is the single source of truth: the cargo-fuzz binaries in
//! `fuzz_targets/` call it, and `services/edge/tests/fuzz_corpus.rs`
//! includes it with `#[path]` to replay every committed corpus and artifact
//! file through exactly the same code on stable Rust in `cargo test`.
//!
//! Every function panics (a crash for libFuzzer, a failure for the test)
//! when a decoder panics or when one of the stated invariants breaks; a
//! decode *error* is a normal outcome for hostile bytes.

use fleetpulse_edge::ipp::codec::{self, Limits};
use fleetpulse_edge::mapping::{self, MibData};
use fleetpulse_edge::snmp::{decode_response_unguarded, SnmpVersion};

/// Bytes → SNMP response decode (rasn BER + our version/PDU checks and
/// varbind flattening, v2c and v1) → the Printer-MIB mapping.
///
/// Invariants: no panic; a decoded response maps to identity, status,
/// supplies, trays, counters and alerts without panicking; the absent
/// values (NULL, noSuchObject, noSuchInstance, endOfMibView) never reach
/// the mapping.
pub fn snmp_response(data: &[u8]) {
    for version in [SnmpVersion::V2c, SnmpVersion::V1] {
        let Ok(response) = decode_response_unguarded(version, data) else {
            continue;
        };
        let present = response
            .varbinds
            .iter()
            .filter(|(_, v)| !v.is_absent())
            .map(|(o, _)| o.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let mut mib = MibData::default();
        mib.extend(response.varbinds);
        assert_eq!(
            mib.len(),
            present,
            "MibData keeps exactly the present values"
        );
        let identity = mapping::identity(&mib, "192.0.2.1");
        let _ = mapping::status(&mib, identity.printer_device_index);
        let _ = mapping::supplies(&mib);
        let _ = mapping::trays(&mib);
        let _ = mapping::counters(&mib);
        let _ = mapping::alerts(&mib);
    }
}

/// Bytes → the simulator's SNMP agent (rasn BER decode of a v1/v2c request,
/// GET/GETNEXT/GETBULK/SET handling against a real simulated MIB, BER
/// encode of the answer).
///
/// Invariants: no panic; every reply the agent sends decodes with the edge's
/// response decoder under the request's version and carries the request's
/// request-id.
pub fn snmp_agent_request(data: &[u8]) {
    let Ok(reply) = fleetpulse_sim::agent_handle_unguarded(data) else {
        return;
    };
    // The agent answered, so the request decodes (it used the same type).
    let request: rasn_snmp::v2c::Message<rasn_snmp::v2::Pdus> =
        rasn::ber::decode(data).expect("the agent answered a request that does not decode");
    let version = if request.version == rasn::types::Integer::from(0) {
        SnmpVersion::V1
    } else {
        SnmpVersion::V2c
    };
    let request_id = match &request.data {
        rasn_snmp::v2::Pdus::GetRequest(p) => p.0.request_id,
        rasn_snmp::v2::Pdus::GetNextRequest(p) => p.0.request_id,
        rasn_snmp::v2::Pdus::SetRequest(p) => p.0.request_id,
        rasn_snmp::v2::Pdus::GetBulkRequest(p) => p.0.request_id,
        other => panic!("the agent answered a PDU it must ignore: {other:?}"),
    };
    let response = decode_response_unguarded(version, &reply).unwrap_or_else(|e| {
        panic!(
            "the agent's reply does not decode as a {version:?} response: {e}\nreply: {reply:02x?}"
        )
    });
    assert_eq!(response.request_id, i64::from(request_id));
}

/// Bytes → IPP decode → mapping to a [`fleetpulse_edge::DeviceSnapshot`] →
/// the text report and JSON rendering.
///
/// Invariants: no panic; a decoded message re-encodes (unless lossy UTF-8
/// repair made a string longer than 65 535 octets) and decodes back to the
/// same message.
pub fn ipp_response(data: &[u8]) {
    let limits = Limits::default();
    let Ok(msg) = codec::decode(data, limits) else {
        return;
    };
    let snapshot =
        fleetpulse_edge::ipp::map::snapshot("ipp://fuzz/ipp/print", "192.0.2.1", 0, 0, &msg);
    let _ = fleetpulse_edge::render_text(&snapshot);
    serde_json::to_string(&snapshot).expect("a snapshot serialises");
    if let Ok(bytes) = codec::encode(&msg) {
        let back = codec::decode(&bytes, limits).expect("a re-encoded message decodes");
        assert_eq!(back, msg, "decode(encode(m)) == m");
    }
}
