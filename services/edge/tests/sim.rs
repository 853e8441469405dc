//! The edge against the simulated fleet (`fleetpulse-sim`): every printer
//! answers, its serial becomes the device id, and supplies are sane.

use std::time::Duration;

use fleetpulse_core::Shutdown;
use fleetpulse_edge::mapping::DeviceIdSource;
use fleetpulse_edge::{poll_device, DeviceTarget, SnmpOptions, SnmpVersion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_simulated_printers() {
    let shutdown = Shutdown::new();
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: 3,
            base_port: 0,
            silence_probability: 0.0,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("sim fleet starts");
    let opts = SnmpOptions {
        timeout: Duration::from_millis(500),
        retries: 2,
        poll_deadline: Duration::from_secs(10),
        ..SnmpOptions::default()
    };
    assert_eq!(fleet.printers().len(), 3);
    for p in fleet.printers() {
        let target = DeviceTarget::new(p.addr.to_string(), p.community.clone());
        let snap = poll_device(&target, &opts)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", p.addr));
        assert_eq!(snap.identity.device_id, p.serial);
        assert_eq!(snap.identity.device_id_source, DeviceIdSource::PrinterMib);
        assert_eq!(snap.identity.model.as_deref(), Some(p.model.as_str()));
        assert!(!snap.supplies.is_empty(), "{}: no supplies", p.serial);
        for s in &snap.supplies {
            if let Some(pct) = s.percent {
                assert!((0.0..=100.0).contains(&pct), "{}: {s:?}", p.serial);
            }
        }
        assert!(
            snap.supplies.iter().any(|s| s.percent.is_some()),
            "{}: no supply has a percentage",
            p.serial
        );
        println!("{}", fleetpulse_edge::render_text(&snap));

        // SNMPv1 (GET + GETNEXT walks) reads the same device the same way.
        let v1 = SnmpOptions {
            version: SnmpVersion::V1,
            ..opts.clone()
        };
        let snap1 = poll_device(&target, &v1)
            .await
            .unwrap_or_else(|e| panic!("{} over v1: {e}", p.addr));
        assert_eq!(snap1.identity.device_id, snap.identity.device_id);
        let descr = |s: &fleetpulse_edge::DeviceSnapshot| {
            s.supplies
                .iter()
                .map(|x| x.description.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(descr(&snap1), descr(&snap));
        assert_eq!(snap1.trays.len(), snap.trays.len());
    }
    shutdown.cancel();
    fleet.join().await;
}
