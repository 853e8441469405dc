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

/// A TCP port free on every address given (for IPP on several hosts).
fn common_tcp_port(lasts: &[u8]) -> u16 {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind("127.0.0.6:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let free = lasts.iter().all(|last| {
            std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, *last], port))).is_ok()
        });
        if port != 0 && free {
            return port;
        }
    }
    panic!("no common free TCP port");
}

/// A simulated printer with SNMP switched off and IPP on (127.0.0.6), one
/// with both (127.0.0.7), nothing on 127.0.0.5: the first is found over IPP,
/// stored as an IPP device, polled over IPP and brought back after a
/// restart; the second is found over SNMP only (SNMP preferred).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_ipp_only_printers_and_prefers_snmp() {
    use crate::config::Protocol;
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let port = common_port();
    let ipp_port = common_tcp_port(&[5, 6, 7]);
    let start = |last: u8, snmp: bool, seed: u64| async move {
        let shutdown = Shutdown::new();
        let fleet = fleetpulse_sim::start(
            fleetpulse_sim::SimConfig {
                printers: 1,
                bind: IpAddr::V4(ip(last)),
                base_port: port,
                ipp_base_port: Some(ipp_port),
                snmp,
                seed,
                silence_probability: 0.0,
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("sim on 127.0.0.{last}: {e}"));
        (shutdown, fleet)
    };
    let (stop_ipp, fleet_ipp) = start(6, false, 21).await;
    let (stop_both, fleet_both) = start(7, true, 22).await;
    let ipp_serial = fleet_ipp.printers()[0].serial.clone();
    let both_serial = fleet_both.printers()[0].serial.clone();

    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("edge-devices.json");
    let config = DiscoveryConfig {
        targets: vec!["127.0.0.5-127.0.0.7".into()],
        port,
        ipp_port,
        probes_per_second: 200,
        max_concurrency: 4,
        state_file: state_file.clone(),
        ..DiscoveryConfig::default()
    };
    let shutdown = Shutdown::new();
    let mut discovery = Discovery::new(&config, &snmp()).expect("discovery");
    let report = discovery.sweep(&shutdown).await;
    assert_eq!(report.probed, 3);
    assert_eq!(report.silent, 1, "127.0.0.5 answers neither: {report:?}");
    assert_eq!(report.printers.len(), 2, "{report:?}");
    let by_serial = |s: &str| {
        report
            .printers
            .iter()
            .find(|d| d.serial == s)
            .unwrap_or_else(|| panic!("{s} not found: {report:?}"))
            .target
            .clone()
    };
    let ipp_target = by_serial(&ipp_serial);
    let ipp_url = format!("ipp://127.0.0.6:{ipp_port}/ipp/print");
    assert_eq!(ipp_target.protocol, Protocol::Ipp);
    assert_eq!(ipp_target.ipp_url.as_deref(), Some(ipp_url.as_str()));
    assert_eq!(ipp_target.address, format!("127.0.0.6:{ipp_port}"));
    let both = by_serial(&both_serial);
    assert_eq!(both.protocol, Protocol::Snmp, "SNMP preferred over IPP");
    assert_eq!(both.address, format!("127.0.0.7:{port}"));

    // Polled over IPP like a configured IPP device; the record key is the serial.
    let snap = crate::device::poll_configured(
        &ipp_target,
        &snmp(),
        &crate::ipp::IppOptions::default(),
        &crate::SnmpSession::new(),
    )
    .await
    .expect("IPP poll of the discovered printer");
    assert_eq!(snap.identity.device_id, ipp_serial);
    assert_eq!(snap.protocol, fleetpulse_core::records::PollProtocol::Ipp);
    assert!(!snap.supplies.is_empty(), "supplies over IPP");

    // Persisted as an IPP device, and brought back as one after a restart.
    let on_disk = super::DeviceStore::load(&state_file);
    let stored = on_disk.get(&ipp_serial).expect("IPP printer stored");
    assert_eq!(stored.protocol, Protocol::Ipp);
    assert_eq!(stored.ipp_url.as_deref(), Some(ipp_url.as_str()));
    assert_eq!(stored.credentials, super::IPP_CREDENTIALS);
    assert_eq!(
        on_disk.get(&both_serial).map(|d| d.protocol),
        Some(Protocol::Snmp)
    );
    drop(discovery);
    let restarted = Discovery::new(&config, &snmp()).expect("restart");
    let known = restarted.known();
    let back = known
        .iter()
        .find(|d| d.serial == ipp_serial)
        .expect("IPP printer known after restart");
    assert_eq!(back.target, ipp_target);

    // ipp_port = 0: IPP probing off, the SNMP-less printer stays unseen.
    let mut no_ipp = Discovery::new(
        &DiscoveryConfig {
            ipp_port: 0,
            state_file: dir.path().join("other.json"),
            ..config.clone()
        },
        &snmp(),
    )
    .expect("discovery");
    let report = no_ipp.sweep(&shutdown).await;
    assert_eq!(report.printers.len(), 1, "{report:?}");
    assert_eq!(report.silent, 2);

    stop_ipp.cancel();
    stop_both.cancel();
    fleet_ipp.join().await;
    fleet_both.join().await;
}

/// CUPS's `ippeveprinter` (IPP Everywhere reference printer, no SNMP):
/// `FLEETPULSE_IPP_URL` when set (CI starts one), else one started here.
/// Found over IPP with its `printer-uuid` as identity, and polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_ippeveprinter() {
    use crate::config::Protocol;
    let mut _child = None;
    let (host, ipp_port) = match std::env::var("FLEETPULSE_IPP_URL") {
        Ok(url) => {
            let t = crate::ipp::IppTarget::parse(&url).expect("FLEETPULSE_IPP_URL parses");
            (t.host, t.port)
        }
        Err(_) => {
            let on_path = std::process::Command::new("sh")
                .args(["-c", "command -v ippeveprinter"])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !on_path {
                println!("skipped: no FLEETPULSE_IPP_URL and no ippeveprinter");
                return;
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let child = std::process::Command::new("ippeveprinter")
                .args([
                    "-p",
                    &port.to_string(),
                    "-M",
                    "Maker",
                    "-m",
                    "Model",
                    "Name",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("ippeveprinter starts");
            _child = Some(KillOnDrop(child));
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "ippeveprinter did not listen on {port}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ("127.0.0.1".to_string(), port)
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The SNMP port: one nothing listens on at that host.
    let snmp_port = std::net::UdpSocket::bind((host.as_str(), 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port");
    let config = DiscoveryConfig {
        targets: vec![host.clone()],
        port: snmp_port,
        ipp_port,
        state_file: dir.path().join("edge-devices.json"),
        ..DiscoveryConfig::default()
    };
    let mut discovery = Discovery::new(&config, &snmp()).expect("discovery");
    let report = discovery.sweep(&Shutdown::new()).await;
    assert_eq!(report.printers.len(), 1, "{report:?}");
    let found = &report.printers[0];
    assert_eq!(found.target.protocol, Protocol::Ipp);
    assert!(
        !found.serial.starts_with("addr:"),
        "identity from printer-device-id / printer-uuid: {}",
        found.serial
    );
    let snap = crate::device::poll_configured(
        &found.target,
        &snmp(),
        &crate::ipp::IppOptions::default(),
        &crate::SnmpSession::new(),
    )
    .await
    .expect("IPP poll of ippeveprinter");
    assert_eq!(snap.identity.device_id, found.serial);
    assert!(discovery.store().get(&found.serial).is_some());
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP server on 127.0.0.1 answering Get-Printer-Attributes only at
/// `ok_path` (404 elsewhere); counts the requests it got.
async fn ipp_server(
    ok_path: Option<&'static str>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use crate::ipp::codec::{self, tag, Attribute, Group, Message, Value};
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Head, then Content-Length bytes of body.
            let body_len = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break Some((end + 4, len));
                }
            };
            let Some((head_end, len)) = body_len else {
                continue;
            };
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let path = String::from_utf8_lossy(&buf)
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            if Some(path.as_str()) != ok_path {
                let _ = s
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            }
            let request_id = buf
                .get(head_end + 4..head_end + 8)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(1);
            let reply = Message {
                version: (1, 1),
                code: 0,
                request_id,
                groups: vec![
                    Group {
                        tag: tag::OPERATION,
                        attributes: vec![Attribute::new(
                            "attributes-charset",
                            vec![Value::Str(tag::CHARSET, "utf-8".into())],
                        )],
                    },
                    Group {
                        tag: tag::PRINTER,
                        attributes: vec![
                            Attribute::new(
                                "printer-device-id",
                                vec![Value::Str(
                                    tag::TEXT,
                                    "MFG:Old;MDL:Laser 1;SN:OLDIPP42;".into(),
                                )],
                            ),
                            Attribute::new("printer-state", vec![Value::Enum(3)]),
                        ],
                    },
                ],
            };
            let body = codec::encode(&reply).unwrap();
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            let _ = s.write_all(&out).await;
        }
    });
    (port, count)
}

/// `/ipp/print` gives 404: the probe tries `/ipp` once, and no more.
#[tokio::test]
async fn ipp_probe_falls_back_to_slash_ipp_within_two_requests() {
    use std::sync::atomic::Ordering;
    let opts = crate::ipp::IppOptions::default();
    let ip = Ipv4Addr::LOCALHOST;
    let (port, count) = ipp_server(Some("/ipp")).await;
    match super::probe::probe_ipp(ip, port, &opts).await {
        super::ProbeOutcome::Printer {
            serial,
            address,
            credentials,
            ipp_url,
        } => {
            assert_eq!(serial, "OLDIPP42", "serial from printer-device-id SN:");
            assert_eq!(address, format!("127.0.0.1:{port}"));
            assert_eq!(credentials, super::IPP_CREDENTIALS);
            assert_eq!(ipp_url, Some(format!("ipp://127.0.0.1:{port}/ipp")));
        }
        other => panic!("expected a printer, got {other:?}"),
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // Nothing at either path: skipped after exactly two requests.
    let (port, count) = ipp_server(None).await;
    let outcome = super::probe::probe_ipp(ip, port, &opts).await;
    assert!(
        matches!(&outcome, super::ProbeOutcome::Skipped { reason } if reason.contains("no IPP printer")),
        "{outcome:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // A closed port is silent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    assert_eq!(
        super::probe::probe_ipp(ip, closed, &opts).await,
        super::ProbeOutcome::Silent
    );
}
