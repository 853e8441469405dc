//! The connector opens no listening socket but its optional loopback
//! metrics/health port. Runs the service in this process (alone in its test
//! binary) and reads the kernel's socket tables for this process:
//! `/proc/self/net/tcp{,6}` rows in LISTEN state whose inode is one of
//! `/proc/self/fd`'s sockets.

use std::collections::HashSet;
use std::time::Duration;

use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::Shutdown;
use fleetpulse_edge::buffer::BufferConfig;
use fleetpulse_edge::{DeviceConfig, EdgeConfig};

/// (local address as "ip:port", inode) of this process's listening TCP sockets.
fn listening() -> Vec<(String, u64)> {
    let mine: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().to_string();
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut out = Vec::new();
    for (file, v6) in [("/proc/self/net/tcp", false), ("/proc/self/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // not LISTEN
            }
            let inode: u64 = f[9].parse().unwrap_or(0);
            if !mine.contains(&inode) {
                continue;
            }
            let (ip, port) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            let ip = if v6 {
                format!("[v6 {ip}]")
            } else {
                let n = u32::from_str_radix(ip, 16).unwrap();
                std::net::Ipv4Addr::from(n.to_le_bytes()).to_string()
            };
            out.push((format!("{ip}:{port}"), inode));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_loopback_metrics_port_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(listening().is_empty(), "{:?}", listening());
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("FP_EDGE_LISTEN_SECRET", "listen-test-secret-0123456789");
    let config = EdgeConfig {
        tenant_id: "t".into(),
        connector_id: "c".into(),
        connector_secret: "env:FP_EDGE_LISTEN_SECRET".into(),
        // Nothing answers there: the pollers and the producer still run.
        devices: vec![DeviceConfig::new("127.0.0.1:1", "public")],
        poll_interval: Duration::from_secs(1),
        kafka: KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..Default::default()
        },
        buffer: BufferConfig {
            dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        metrics_addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ..EdgeConfig::default()
    };
    let shutdown = Shutdown::new();
    let edge = tokio::spawn(fleetpulse_edge::run(config, shutdown.clone()));
    // Let it start its pollers, producer and forwarder.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!edge.is_finished(), "the connector is running");
    let l = listening();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert_eq!(
        l.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        [format!("127.0.0.1:{port}")],
        "listening sockets of the connector: {l:?}"
    );
}
