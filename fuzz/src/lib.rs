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
use fleetpulse_edge::snmp::usm::{AuthProtocol, PrivProtocol, SecurityLevel, UsmUser};
use fleetpulse_edge::snmp::{
    decode_response_unguarded, decode_v3_unguarded, DecodedV3, SnmpError, SnmpVersion,
};

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

/// The fixed USM users of the `snmp_v3_message` target: the users of the
/// net-snmp `snmpd` the seeds were recorded from (`fuzz/README.md`), so a
/// recorded response authenticates and decrypts. Ku is derived once.
pub fn v3_users() -> &'static [UsmUser] {
    static USERS: std::sync::OnceLock<Vec<UsmUser>> = std::sync::OnceLock::new();
    USERS.get_or_init(|| {
        vec![
            UsmUser::new(
                "fpuser",
                SecurityLevel::AuthPriv,
                Some((AuthProtocol::Sha256, b"authpass123")),
                Some((PrivProtocol::Aes128, b"privpass123")),
            ),
            UsmUser::new(
                "fpsha512",
                SecurityLevel::AuthNoPriv,
                Some((AuthProtocol::Sha512, b"authpass123")),
                None,
            ),
        ]
    })
}

/// Where msgAuthenticationParameters sit in `raw`, and the engine id, when
/// `raw` is a BER SNMPv3 message whose USM header decodes. Mirrors how the
/// edge locates the MAC (the USM octets inside the datagram, the MAC inside
/// those).
fn v3_mac_location(raw: &[u8]) -> Option<(Vec<u8>, usize, usize)> {
    let msg: rasn_snmp::v3::Message = rasn::ber::decode(raw).ok()?;
    let usm: rasn_snmp::v3::USMSecurityParameters =
        rasn::ber::decode(&msg.security_parameters).ok()?;
    let find = |hay: &[u8], needle: &[u8]| {
        if needle.is_empty() || needle.len() > hay.len() {
            return None;
        }
        hay.windows(needle.len()).position(|w| w == needle)
    };
    let mac = usm.authentication_parameters.as_ref();
    let usm_at = find(raw, &msg.security_parameters)?;
    let mac_at = usm_at + find(&msg.security_parameters, mac)?;
    Some((usm.authoritative_engine_id.to_vec(), mac_at, mac.len()))
}

/// Decode with each fixed user and with none; check what a success means.
/// The authoritative engine id a v3 message names (its USM header), if it has one.
pub fn v3_engine_id(raw: &[u8]) -> Option<Vec<u8>> {
    v3_mac_location(raw).map(|l| l.0)
}

fn v3_decode_all(data: &[u8], engine_id: &[u8]) -> Vec<Result<(i64, DecodedV3), SnmpError>> {
    let mut out = vec![decode_v3_unguarded(data, None, engine_id)];
    for user in v3_users() {
        out.push(decode_v3_unguarded(data, Some(user), engine_id));
    }
    out
}

fn v3_check(result: &Result<(i64, DecodedV3), SnmpError>) {
    if let Ok((_, DecodedV3::Response(r))) = result {
        let mut mib = MibData::default();
        mib.extend(r.varbinds.clone());
        let identity = mapping::identity(&mib, "192.0.2.1");
        let _ = mapping::status(&mib, identity.printer_device_index);
        let _ = mapping::supplies(&mib);
        let _ = mapping::counters(&mib);
    }
}

/// Bytes → the edge's SNMPv3 decode path ([`decode_v3_unguarded`]): BER
/// message and USM security parameters, msgFlags checks, HMAC verification
/// and AES-CFB decryption with the fixed users' keys localised to the
/// engine the message names, scoped-PDU decode, varbind flattening, then
/// the Printer-MIB mapping of a Response.
///
/// A mutated datagram almost never carries a valid MAC, which would stop
/// the fuzzer at the digest check; so a second pass *re-signs* the bytes
/// with each fixed user's key (as the agent would) and decodes again,
/// reaching the decryption and scoped-PDU paths with arbitrary content.
///
/// Invariants: no panic; a re-signed message whose MAC verifies no longer
/// verifies once one MAC bit is flipped (`AuthFailed`), i.e. the
/// authentication check cannot be skipped by any message shape.
pub fn snmp_v3_message(data: &[u8]) {
    let location = v3_mac_location(data);
    let engine_id = location.as_ref().map(|l| l.0.clone()).unwrap_or_default();
    for r in v3_decode_all(data, &engine_id) {
        v3_check(&r);
    }
    let Some((engine_id, mac_at, mac_len)) = location else {
        return;
    };
    for user in v3_users() {
        let Some((protocol, ku)) = &user.auth else {
            continue;
        };
        if mac_len != protocol.mac_len() || mac_at + mac_len > data.len() {
            continue;
        }
        let key = protocol.localize(ku, &engine_id);
        let mut signed = data.to_vec();
        signed[mac_at..mac_at + mac_len].fill(0);
        let mac = protocol.mac(&key, &signed);
        signed[mac_at..mac_at + mac_len].copy_from_slice(&mac);
        let result = decode_v3_unguarded(&signed, Some(user), &engine_id);
        v3_check(&result);
        let authenticated = match &result {
            Ok((_, DecodedV3::Report { authenticated, .. })) => *authenticated,
            Ok((_, DecodedV3::Response(_))) => rasn::ber::decode::<rasn_snmp::v3::Message>(&signed)
                .is_ok_and(|m| m.global_data.flags.first().is_some_and(|f| f & 1 != 0)),
            Err(_) => false,
        };
        if authenticated {
            let mut forged = signed.clone();
            forged[mac_at] ^= 1;
            match decode_v3_unguarded(&forged, Some(user), &engine_id) {
                Err(SnmpError::AuthFailed { .. }) => {}
                other => panic!("a message with a wrong MAC was accepted: {other:?}"),
            }
        }
    }
}
