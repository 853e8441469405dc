//! The wire format is readable by an independent Avro implementation:
//! Python fastavro decodes our single-object messages from `schemas/*.avsc`
//! alone (fingerprint lookup, no registry) and sees the same values.

use std::process::Command;

use fleetpulse_core::{codec, samples};

fn python_available() -> bool {
    Command::new("python3")
        .args(["-c", "import fastavro, confluent_kafka"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn fastavro_decodes_every_record_type() {
    if !python_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with fastavro (see .ci/run)"
        );
        eprintln!("skipped: python3 with fastavro and confluent-kafka is not installed (pip install -r tests/requirements.txt)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = samples::device_status("SN-INTEROP");
    let alert = samples::maintenance_alert("SN-INTEROP");
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "device_heartbeat",
            codec::encode(&samples::device_heartbeat("SN-INTEROP")).unwrap(),
        ),
        ("device_status", codec::encode(&status).unwrap()),
        (
            "usage_counters",
            codec::encode(&samples::usage_counters("SN-INTEROP")).unwrap(),
        ),
        (
            "alert_event",
            codec::encode(&samples::alert_event("SN-INTEROP")).unwrap(),
        ),
        (
            "job_record",
            codec::encode(&samples::job_record("SN-INTEROP")).unwrap(),
        ),
        (
            "connector_heartbeat",
            codec::encode(&samples::connector_heartbeat("conn-1")).unwrap(),
        ),
        ("maintenance_alert", codec::encode(&alert).unwrap()),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(format!("{name}.avro1")), bytes).unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py/fpcheck.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("decode-files")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fastavro failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (name, _) in &files {
        let got = &v[format!("{name}.avro1")];
        assert_eq!(
            got["type"], *name,
            "fastavro picked another schema for {name}"
        );
    }
    let s = &v["device_status.avro1"]["record"];
    assert_eq!(s["event_id"], status.event_id);
    assert_eq!(s["device_id"], "SN-INTEROP");
    assert_eq!(s["supplies"][0]["description"], "Black Cartridge HP CF410A");
    assert_eq!(s["supplies"][1]["level_special"], "someRemaining");
    assert_eq!(
        s["detected_errors"],
        serde_json::json!(["lowToner", "inputTrayEmpty"])
    );
    let a = &v["maintenance_alert.avro1"]["record"];
    assert_eq!(a["kind"], "consumable_depletion");
    assert_eq!(a["days_to_empty"], 2.5);
}
