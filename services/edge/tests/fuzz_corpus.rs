//! Replays every committed fuzz input — `fuzz/corpus/<target>/*` and any
//! crash reproducer in `fuzz/artifacts/<target>/*` — through the same checks
//! the cargo-fuzz targets run (`fuzz/src/lib.rs`, included below), on stable
//! Rust in plain `cargo test`. A decoder regression on any input that once
//! passed (or once crashed and was fixed) fails here.

#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// A fuzz target's checks.
type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("snmp_response", harness::snmp_response),
    ("snmp_agent_request", harness::snmp_agent_request),
    ("ipp_response", harness::ipp_response),
    ("snmp_v3_message", harness::snmp_v3_message),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Files directly inside `dir` (none when it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(target: &str, check: Check, kind: &str) -> usize {
    let dir = fuzz_dir().join(kind).join(target);
    let inputs = files(&dir);
    for path in &inputs {
        let bytes = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails the fuzz checks",
            path.display()
        );
    }
    inputs.len()
}

#[test]
fn every_committed_corpus_file_passes_the_fuzz_checks() {
    for (target, check) in TARGETS {
        let n = replay(target, *check, "corpus");
        // The corpus is committed: an empty directory means it went missing.
        assert!(n >= 10, "{target}: only {n} corpus files");
    }
}

#[test]
fn every_committed_artifact_passes_the_fuzz_checks() {
    for (target, check) in TARGETS {
        replay(target, *check, "artifacts");
    }
}

/// The corpus is real traffic, not noise that fails at the first byte:
/// enough files get through each decoder to the mapping behind it.
#[test]
fn the_corpus_reaches_past_the_decoders() {
    use fleetpulse_edge::ipp::codec::{decode, Limits};
    use fleetpulse_edge::snmp::{decode_response_unguarded, SnmpVersion};

    let corpus = |t: &str| files(&fuzz_dir().join("corpus").join(t));
    let snmp_decoded = corpus("snmp_response")
        .iter()
        .filter(|p| {
            let b = std::fs::read(p).unwrap();
            [SnmpVersion::V2c, SnmpVersion::V1]
                .into_iter()
                .any(|v| decode_response_unguarded(v, &b).is_ok_and(|r| !r.varbinds.is_empty()))
        })
        .count();
    assert!(snmp_decoded >= 5, "{snmp_decoded} SNMP responses decode");

    let answered = corpus("snmp_agent_request")
        .iter()
        .filter(|p| fleetpulse_sim::agent_handle_unguarded(&std::fs::read(p).unwrap()).is_ok())
        .count();
    assert!(answered >= 5, "the agent answers {answered} requests");

    let with_supplies = corpus("ipp_response")
        .iter()
        .filter_map(|p| decode(&std::fs::read(p).unwrap(), Limits::default()).ok())
        .filter(|m| {
            !fleetpulse_edge::ipp::map::snapshot("u", "192.0.2.1", 0, 0, m)
                .supplies
                .is_empty()
        })
        .count();
    assert!(
        with_supplies >= 1,
        "{with_supplies} IPP responses map supplies"
    );

    // SNMPv3: recorded net-snmp responses authenticate with the fixed user
    // (HMAC verified), decrypt (AES) and carry varbinds; reports decode too.
    use fleetpulse_edge::snmp::{decode_v3_unguarded, DecodedV3};
    let user = &harness::v3_users()[0];
    let (mut responses, mut reports) = (0, 0);
    for p in corpus("snmp_v3_message") {
        let b = std::fs::read(p).unwrap();
        let engine = harness::v3_engine_id(&b).unwrap_or_default();
        match decode_v3_unguarded(&b, Some(user), &engine) {
            Ok((_, DecodedV3::Response(r))) if !r.varbinds.is_empty() => responses += 1,
            Ok((_, DecodedV3::Report { .. })) => reports += 1,
            _ => {}
        }
    }
    assert!(
        responses >= 5 && reports >= 1,
        "{responses} v3 responses verify, decrypt and decode; {reports} reports"
    );
}
