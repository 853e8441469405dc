//! Discovery over 127.0.0.x: simulated printers (fleetpulse-sim) on
//! 127.0.0.2 and 127.0.0.3, net-snmp's snmpd (no Printer-MIB) on
//! 127.0.0.4, nothing on 127.0.0.5 — all on the same UDP port, as on a
//! real network. Linux routes all of 127.0.0.0/8 to the loopback interface.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use fleetpulse_core::Shutdown;

use super::{Discovery, DiscoveryConfig};
use crate::snmp::netsnmp_tests::{snmpd_available, Snmpd};
use crate::snmp::{SnmpOptions, SnmpVersion};

async fn sim(ip: Ipv4Addr, port: u16, seed: u64) -> (Shutdown, fleetpulse_sim::Fleet) {
    let shutdown = Shutdown::new();
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: 1,
            bind: IpAddr::V4(ip),
            base_port: port,
            seed,
            silence_probability: 0.0,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("sim on {ip}:{port}: {e}"));
    (shutdown, fleet)
}

/// A UDP port free on every address we use.
fn common_port() -> u16 {
    for _ in 0..50 {
        let port = std::net::UdpSocket::bind("127.0.0.2:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let free = [3u8, 4, 5, 9].iter().all(|last| {
            std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, *last], port))).is_ok()
        });
        if port != 0 && free {
            return port;
        }
    }
    panic!("no common free UDP port");
}

fn snmp() -> SnmpOptions {
    SnmpOptions {
        timeout: Duration::from_millis(300),
        retries: 0,
        version: SnmpVersion::V2c,
        ..SnmpOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_printers_skips_others_persists_and_follows_moves() {
    if !snmpd_available() {
        return;
    }
    let port = common_port();
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let (stop_a, fleet_a) = sim(ip(2), port, 11).await;
    let (stop_b, fleet_b) = sim(ip(3), port, 12).await;
    let serial_a = fleet_a.printers()[0].serial.clone();
    let serial_b = fleet_b.printers()[0].serial.clone();
    assert_ne!(serial_a, serial_b);
    let _snmpd = Snmpd::start_at(
        SocketAddr::from((ip(4), port)),
        "rocommunity public 127.0.0.0/8",
    )
    .await
    .expect("snmpd on 127.0.0.4");

    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("edge-devices.json");
    let config = DiscoveryConfig {
        targets: vec!["127.0.0.2-127.0.0.5".into()],
        port,
        probes_per_second: 200,
        max_concurrency: 4,
        state_file: state_file.clone(),
        ..DiscoveryConfig::default()
    };
    let shutdown = Shutdown::new();
    let mut discovery = Discovery::new(&config, &snmp()).expect("discovery");
    assert!(discovery.known().is_empty());

    let first = discovery.sweep(&shutdown).await;
    assert_eq!(first.probed, 4);
    let found: Vec<(String, String)> = first
        .printers
        .iter()
        .map(|d| (d.serial.clone(), d.target.address.clone()))
        .collect();
    let mut expected = vec![
        (serial_a.clone(), format!("127.0.0.2:{port}")),
        (serial_b.clone(), format!("127.0.0.3:{port}")),
    ];
    expected.sort();
    assert_eq!(found, expected, "{first:?}");
    assert_eq!(first.new.len(), 2);
    assert_eq!(first.skipped.len(), 1, "{first:?}");
    assert_eq!(first.skipped[0].ip, ip(4));
    assert_eq!(first.skipped[0].reason, "no Printer-MIB");
    assert!(first.skipped[0].logged);
    assert_eq!(first.silent, 1, "127.0.0.5 answers nothing");

    // The second sweep finds the same, and does not log the skip again.
    let second = discovery.sweep(&shutdown).await;
    assert_eq!(second.printers.len(), 2);
    assert!(second.new.is_empty() && second.moved.is_empty());
    assert_eq!(second.skipped.len(), 1);
    assert!(
        !second.skipped[0].logged,
        "skip reason logged once per address"
    );

    // Restart: the store brings both printers back before any sweep.
    let first_seen_b = discovery
        .store()
        .get(&serial_b)
        .expect("b stored")
        .first_seen;
    drop(discovery);
    let restarted = Discovery::new(&config, &snmp()).expect("discovery after restart");
    let mut known: Vec<(String, String)> = restarted
        .known()
        .into_iter()
        .map(|d| (d.serial, d.target.address))
        .collect();
    known.sort();
    assert_eq!(known, expected, "found devices persist across restarts");

    // Printer B moves from 127.0.0.3 to 127.0.0.9: same seed and index,
    // same serial, new address.
    stop_b.cancel();
    fleet_b.join().await;
    let (stop_b2, fleet_b2) = sim(ip(9), port, 12).await;
    assert_eq!(fleet_b2.printers()[0].serial, serial_b);
    let moved_config = DiscoveryConfig {
        targets: vec!["127.0.0.2-127.0.0.5".into(), "127.0.0.9".into()],
        ..config.clone()
    };
    let mut discovery = Discovery::new(&moved_config, &snmp()).expect("discovery");
    let third = discovery.sweep(&shutdown).await;
    assert_eq!(
        third.moved,
        vec![(
            serial_b.clone(),
            format!("127.0.0.3:{port}"),
            format!("127.0.0.9:{port}")
        )],
        "{third:?}"
    );
    assert!(third.new.is_empty(), "a moved printer is not a new one");
    let b = discovery.store().get(&serial_b).expect("b stored");
    assert_eq!(b.address, format!("127.0.0.9:{port}"));
    assert_eq!(b.first_seen, first_seen_b, "identity (and history) kept");
    assert_eq!(discovery.store().devices.len(), 2);
    let on_disk = super::DeviceStore::load(&state_file);
    assert_eq!(
        on_disk.get(&serial_b).map(|d| d.address.clone()),
        Some(format!("127.0.0.9:{port}"))
    );

    stop_a.cancel();
    stop_b2.cancel();
    fleet_a.join().await;
    fleet_b2.join().await;
}

#[tokio::test]
async fn v3_credentials_per_range_are_validated_with_their_key() {
    let config = DiscoveryConfig {
        targets: vec!["10.0.0.0/24".into()],
        credentials: vec![super::CredentialRange {
            range: "10.0.0.0/24".into(),
            version: Some(SnmpVersion::V3),
            community: "public".into(),
            user: Some("fpuser".into()),
            security_level: Some(crate::SecurityLevel::AuthPriv),
            auth_protocol: None,
            auth_password: Some("authpass123".into()),
            priv_protocol: None,
            priv_password: None,
        }],
        ..DiscoveryConfig::default()
    };
    let err = Discovery::new(&config, &snmp()).unwrap_err().to_string();
    assert!(
        err.contains("discovery.credentials[0].priv_password"),
        "{err}"
    );
}
