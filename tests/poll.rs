//! `fleetpulse poll` against a simulated printer, cross-checked with net-snmp.

use std::process::Command;
use std::time::{Duration, Instant};

use fleetpulse::{fleetpulse_bin, Proc};

fn snmpget(port: u16, oid: &str) -> Option<String> {
    let out = Command::new("snmpget")
        .args([
            "-v2c",
            "-c",
            "public",
            "-Oqv",
            "-t",
            "1",
            "-r",
            "2",
            &format!("127.0.0.1:{port}"),
            oid,
        ])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_matches('"')
            .to_string()
    })
}

#[test]
fn poll_prints_what_net_snmp_reads() {
    if Command::new("snmpget").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have net-snmp (apt-get install snmp)"
        );
        eprintln!("skipped: net-snmp's snmpget is not installed (apt-get install snmp)");
        return;
    }
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let port = 41000 + (std::process::id() % 1000) as u16 * 2;
    let _sim = Proc::spawn(
        &bin,
        "sim",
        &[
            "sim",
            "--printers",
            "2",
            "--base-port",
            &port.to_string(),
            "--seed",
            "3",
        ],
        &[],
        dir.path(),
    );
    let serial_oid = "1.3.6.1.2.1.43.5.1.1.17.1";
    let start = Instant::now();
    let serial = loop {
        if let Some(s) = snmpget(port + 1, serial_oid) {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "simulator did not answer net-snmp"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = Command::new(&bin)
        .args([
            "poll",
            &format!("127.0.0.1:{}", port + 1),
            "--community",
            "public",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("poll --json prints JSON");
    let text = v.to_string();
    assert!(
        text.contains(&serial),
        "poll --json does not show serial {serial}: {text}"
    );
    // The black supply level that net-snmp reads is the one we print (it may move between reads, so compare shapes).
    let level = snmpget(port + 1, "1.3.6.1.2.1.43.11.1.1.9.1.1").expect("supply level");
    assert!(level.parse::<i64>().is_ok(), "net-snmp level {level}");
    assert!(text.contains("supplies"), "{text}");

    let human = Command::new(&bin)
        .args([
            "poll",
            &format!("127.0.0.1:{}", port + 1),
            "--community",
            "public",
        ])
        .output()
        .unwrap();
    assert!(human.status.success());
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains(&serial), "{human}");

    // A wrong community: a clear error, no panic.
    let bad = Command::new(&bin)
        .args([
            "poll",
            &format!("127.0.0.1:{}", port + 1),
            "--community",
            "wrong",
            "--timeout",
            "300ms",
            "--retries",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.to_lowercase().contains("timed out") || err.to_lowercase().contains("timeout"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
