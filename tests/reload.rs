//! The real `fleetpulse edge` binary picks up configuration changes: a
//! rewritten file on SIGHUP, a signed object from `fleetpulse config
//! publish`; an invalid file and a wrongly signed object are rejected and
//! the edge keeps running on its configuration.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fleetpulse::{fleetpulse_bin, kafka_or_skip, Proc};

const SECRET: &str = "reload-connector-secret-0123456789";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Devices the edge has polled and stored records of, from its debug log
/// ("device polled" lines); delivery to Kafka is covered by the in-crate
/// MockCluster tests (a consumer here would never see the topics go idle).
fn devices_polled(log: &str, base_port: u16) -> usize {
    (0..8u16)
        .filter(|i| {
            let addr = format!("127.0.0.1:{}", base_port + i);
            log.lines()
                .any(|l| l.contains("device polled") && l.contains(&addr))
        })
        .count()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn edge_reloads_on_sighup_and_from_signed_control_objects() {
    let Some(kafka) = kafka_or_skip("edge_reloads_on_sighup_and_from_signed_control_objects")
    else {
        return;
    };
    let bin = fleetpulse_bin();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = format!("reload{}", std::process::id());
    let base_port = 40000 + (std::process::id() % 1000) as u16 * 5;
    let ok = Command::new(&bin)
        .args([
            "topics",
            "create",
            "--kafka",
            &kafka,
            "--topic-prefix",
            &prefix,
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    write(
        &d.join("sim.toml"),
        &format!("printers = 3\nbase_port = {base_port}\nseed = 11\nsilence_probability = 0.0\n"),
    );
    let edge_toml = |devices: usize, extra: &str| {
        let mut s = format!(
            "tenant_id = \"t\"\nconnector_id = \"conn-reload\"\nconnector_secret = \"env:FLEETPULSE_CONNECTOR_SECRET\"\n\
             poll_interval = \"1s\"\nheartbeat_interval = \"2s\"\n{extra}\n[buffer]\ndir = \"{}\"\n\
             [control]\nenabled = true\n[kafka]\nbrokers = \"{kafka}\"\ntopic_prefix = \"{prefix}\"\n",
            d.join("edge-buffer").display()
        );
        for i in 0..devices {
            s += &format!(
                "[[devices]]\naddress = \"127.0.0.1:{}\"\n",
                base_port + i as u16
            );
        }
        s
    };
    let edge_path = d.join("edge.toml");
    write(&edge_path, &edge_toml(1, ""));
    let env = [
        ("FLEETPULSE_CONNECTOR_SECRET", SECRET),
        ("FLEETPULSE_LOG", "info,fleetpulse_edge=debug,rdkafka=warn"),
        ("NO_COLOR", "1"),
    ];
    let sim_cfg = d.join("sim.toml").display().to_string();
    let mut sim = Proc::spawn(&bin, "sim", &["sim", "--config", &sim_cfg], &env, d);
    let edge_cfg = edge_path.display().to_string();
    let mut edge = Proc::spawn(&bin, "edge", &["edge", "--config", &edge_cfg], &env, d);
    let hup = |p: &Proc| {
        Command::new("kill")
            .args(["-HUP", &p.pid().to_string()])
            .status()
            .unwrap();
    };
    wait_for("the first device", Duration::from_secs(60), || {
        devices_polled(&edge.log(), base_port) == 1
    });

    // An invalid file is rejected; the edge keeps running.
    write(&edge_path, "tenant_id = \n");
    hup(&edge);
    wait_for("the rejection", Duration::from_secs(20), || {
        edge.log().contains("reload rejected")
    });
    assert!(edge.is_running());

    // A file changing the uplink is rejected, naming the key.
    write(&edge_path, &edge_toml(2, "").replace(&prefix, "elsewhere"));
    hup(&edge);
    wait_for("the fixed-key rejection", Duration::from_secs(20), || {
        edge.log().contains("key `kafka` cannot change")
    });

    // A valid file with a second device is applied.
    write(&edge_path, &edge_toml(2, ""));
    hup(&edge);
    wait_for(
        "the second device after SIGHUP",
        Duration::from_secs(60),
        || devices_polled(&edge.log(), base_port) == 2,
    );

    // A wrongly signed object is rejected; a signed one adds a third device.
    let doc = d.join("new.toml");
    write(&doc, &edge_toml(3, ""));
    let doc_s = doc.display().to_string();
    let publish = |secret: &str, version: &str| {
        Command::new(&bin)
            .args([
                "config",
                "publish",
                "--config",
                &doc_s,
                "--connector-id",
                "conn-reload",
                "--secret",
                secret,
                "--kafka",
                &kafka,
                "--topic-prefix",
                &prefix,
                "--version",
                version,
            ])
            .status()
            .unwrap()
            .success()
    };
    assert!(publish("not-the-connector-secret-at-all", "5"));
    wait_for("the wrong-key rejection", Duration::from_secs(60), || {
        edge.log().contains("configuration object rejected")
    });
    assert_eq!(devices_polled(&edge.log(), base_port), 2);
    assert!(publish(SECRET, "6"));
    wait_for(
        "the third device from the control topic",
        Duration::from_secs(60),
        || devices_polled(&edge.log(), base_port) == 3,
    );
    assert!(edge.sigterm(Duration::from_secs(20)), "edge stops cleanly");
    sim.sigterm(Duration::from_secs(10));
}
