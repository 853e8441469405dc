//! Tests of the 3D printer driver: against the simulator over real TLS,
//! against hostile servers, the JSON mapping with canary names, and an
//! end-to-end `run()` into a mock Kafka cluster.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetpulse_core::records::{
    DeviceHeartbeat, DeviceStatus, HrDeviceStatus, HrPrinterStatus, JobCompletion, JobKind,
    JobRecord, PollProtocol, PrinterErrorFlag, SupplyType,
};
use fleetpulse_core::{codec, Shutdown};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::poller::Origin;

fn opts() -> Https3dOptions {
    Https3dOptions {
        timeout: Duration::from_secs(3),
        ..Https3dOptions::default()
    }
}

fn pin(p: &str) -> TlsTrust {
    TlsTrust {
        ca_file: None,
        pin_sha256: Some(p.to_string()),
    }
}

fn ca(path: &Path) -> TlsTrust {
    TlsTrust {
        ca_file: Some(path.to_path_buf()),
        pin_sha256: None,
    }
}

async fn sim_3d(shutdown: &Shutdown, extra: fleetpulse_sim::SimConfig) -> fleetpulse_sim::Fleet {
    fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: 0,
            printers_3d: 1,
            https_base_port: 0,
            acceleration: 60.0,
            ..extra
        },
        shutdown.clone(),
    )
    .await
    .expect("sim with a 3D printer")
}

/// A self-signed certificate for `names`: (cert PEM, cert DER, key DER).
fn cert_for(names: &[&str]) -> (String, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec(), key.serialize_der())
}

#[tokio::test]
async fn pinned_certificate_polls_the_simulator() {
    let shutdown = Shutdown::new();
    let fleet = sim_3d(&shutdown, Default::default()).await;
    let p = &fleet.printers_3d()[0];
    let client = Https3dClient::new(&p.url, &pin(fleet.tls_cert_sha256().unwrap())).unwrap();
    let snap = poll_3d(&client, &opts(), |_| None).await.expect("poll");
    let d = &snap.device;
    assert_eq!(d.device_id, p.serial);
    assert_eq!(d.model.as_deref(), Some(p.model.as_str()));
    assert_eq!(d.vendor.as_deref(), Some("HP"));
    assert!(d.firmware.is_some() && d.hostname.is_some());
    assert!(!d.printheads.is_empty());
    assert!(d
        .printheads
        .iter()
        .all(|h| h.installed_at.is_some() && h.usage_time_s.is_some()));
    let bu = d.build_unit.as_ref().expect("build unit");
    assert!(bu.build_unit_id.starts_with("BU-"));
    assert!(bu.material_quantity_kg.is_some() && bu.recycled_material_pct.is_some());
    assert!(d.supplies.len() >= 2);
    assert!(d
        .supplies
        .iter()
        .all(|s| s.supply_type == SupplyType::Ink && s.percent.is_some()));
    assert!(d.hr_device_status.is_some() && d.hr_printer_status.is_some());
    assert!(!snap.jobs.is_empty(), "the sim starts with a job history");
    let finished: Vec<_> = snap.jobs.iter().filter(|j| j.is_finished()).collect();
    assert!(!finished.is_empty());
    for j in &finished {
        assert!(j.created_at.is_some() && j.started_at.is_some() && j.ended_at.is_some());
        assert!(j.layers.is_some() && j.layer_time_total_s.is_some());
        assert!(!j.parts.is_empty());
        assert!(j.material_type.is_some() && j.build_unit_id.is_some());
    }
    let json = serde_json::to_string(&snap).unwrap();
    assert!(!json.contains("PRIVATE-"), "no job/part name in a snapshot");

    // The cursor: asking after the first job returns only later ones.
    let first = snap.jobs[0].job_id.clone();
    let again = poll_3d(&client, &opts(), |id| {
        assert_eq!(id, p.serial);
        Some(first.clone())
    })
    .await
    .unwrap();
    assert!(again.jobs.iter().all(|j| j.job_id != first));
    assert_eq!(
        again.jobs.first().map(|j| &j.job_id),
        snap.jobs.get(1).map(|j| &j.job_id)
    );

    // A wrong pin: a typed TLS error (refused, not timed out).
    let wrong = Https3dClient::new(&p.url, &pin(&"00".repeat(32))).unwrap();
    let e = poll_3d(&wrong, &opts(), |_| None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Https3dError::Tls {
                kind: TlsFailure::PinMismatch,
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.is_retriable() && !e.is_silence());
    assert_eq!(e.class(), "https3d_tls_pin_mismatch");
    shutdown.cancel();
    fleet.join().await;
}

#[tokio::test]
async fn ca_verification_with_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let cert_out = dir.path().join("sim.pem");
    let fleet = sim_3d(
        &shutdown,
        fleetpulse_sim::SimConfig {
            tls_cert_out: Some(cert_out.clone()),
            ..Default::default()
        },
    )
    .await;
    let p = &fleet.printers_3d()[0];
    // The sim's own certificate as the CA: SAN 127.0.0.1 matches.
    let client = Https3dClient::new(&p.url, &ca(&cert_out)).unwrap();
    let snap = poll_3d(&client, &opts(), |_| None)
        .await
        .expect("CA-verified poll");
    assert_eq!(snap.device.device_id, p.serial);

    // Another certificate as the CA: untrusted.
    let (other_pem, _, _) = cert_for(&["127.0.0.1"]);
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_pem).unwrap();
    let client = Https3dClient::new(&p.url, &ca(&other)).unwrap();
    let e = poll_3d(&client, &opts(), |_| None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Https3dError::Tls {
                kind: TlsFailure::Untrusted,
                ..
            }
        ),
        "{e}"
    );
    shutdown.cancel();
    fleet.join().await;

    // A sim serving a configured certificate for another name: trusted CA,
    // wrong host → name mismatch. Pinning the same certificate works.
    let (pem, der, key) = cert_for(&["printer.example.com"]);
    let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_file, &pem).unwrap();
    std::fs::write(
        &key_file,
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64(&key)
        ),
    )
    .unwrap();
    let shutdown = Shutdown::new();
    let fleet = sim_3d(
        &shutdown,
        fleetpulse_sim::SimConfig {
            tls_cert_file: Some(cert_file.clone()),
            tls_key_file: Some(key_file),
            ..Default::default()
        },
    )
    .await;
    let p = &fleet.printers_3d()[0];
    assert_eq!(
        fleet.tls_cert_sha256(),
        Some(tls::cert_sha256_hex(&der).as_str())
    );
    let client = Https3dClient::new(&p.url, &ca(&cert_file)).unwrap();
    let e = poll_3d(&client, &opts(), |_| None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Https3dError::Tls {
                kind: TlsFailure::NameMismatch,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.class(), "https3d_tls_name_mismatch");
    let client = Https3dClient::new(&p.url, &pin(&tls::cert_sha256_hex(&der))).unwrap();
    assert!(poll_3d(&client, &opts(), |_| None).await.is_ok());
    shutdown.cancel();
    fleet.join().await;
}

fn base64(bytes: &[u8]) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 16 == 0 {
            out.push('\n');
        }
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(B64[((v >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// --- hostile servers -------------------------------------------------------

#[derive(Clone, Copy)]
enum Hostile {
    /// 200 with this body.
    Body(&'static [u8]),
    /// 200 announcing a huge body, then streaming it.
    Huge,
    /// Handshake, then never answer.
    Slow,
    /// 503.
    Unavailable,
}

/// A TLS server with its own certificate (for 127.0.0.1); returns (addr, pin).
async fn hostile(mode: Hostile) -> (SocketAddr, String) {
    let (_, der, key) = cert_for(&["127.0.0.1"]);
    let pin = tls::cert_sha256_hex(&der);
    let cfg = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(der)],
            PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match mode {
                    Hostile::Body(b) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            b.len()
                        );
                        let _ = s.write_all(head.as_bytes()).await;
                        let _ = s.write_all(b).await;
                        let _ = s.shutdown().await;
                    }
                    Hostile::Huge => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n")
                            .await;
                        let chunk = vec![b'['; 64 * 1024];
                        while s.write_all(&chunk).await.is_ok() {}
                    }
                    Hostile::Slow => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Hostile::Unavailable => {
                        let _ = s
                            .write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        let _ = s.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, pin)
}

async fn poll_hostile(mode: Hostile, o: &Https3dOptions) -> Https3dError {
    let (addr, pin_hex) = hostile(mode).await;
    let client = Https3dClient::new(&format!("https://{addr}/"), &pin(&pin_hex)).unwrap();
    poll_3d(&client, o, |_| None)
        .await
        .expect_err("hostile server")
}

#[tokio::test]
async fn hostile_servers_give_typed_errors() {
    let e = poll_hostile(Hostile::Body(b"{\"identity\": [garbage"), &opts()).await;
    assert!(
        matches!(
            e,
            Https3dError::Json {
                endpoint: "device",
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.is_retriable());
    let e = poll_hostile(Hostile::Body(b"{\"identity\": {\"serial\": 42}}"), &opts()).await;
    assert!(matches!(e, Https3dError::Json { .. }), "{e}");
    // A name smuggled into a typed field is not echoed by the error.
    let e = poll_hostile(
        Hostile::Body(b"{\"jobs\": [{\"id\": \"1\", \"layer_count\": \"CANARY-JOBNAME-123\"}]}"),
        &opts(),
    )
    .await;
    assert!(
        matches!(
            e,
            Https3dError::Json {
                endpoint: "jobs",
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.to_string().contains("CANARY"), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");
    let e = poll_hostile(Hostile::Body(b"\xff\xfe\x00binary"), &opts()).await;
    assert!(matches!(e, Https3dError::Json { .. }), "{e}");

    let small = Https3dOptions {
        max_response_bytes: 64 * 1024,
        ..opts()
    };
    let e = poll_hostile(Hostile::Huge, &small).await;
    assert!(
        matches!(e, Https3dError::TooLarge { limit } if limit == 64 * 1024),
        "{e}"
    );

    let quick = Https3dOptions {
        timeout: Duration::from_millis(500),
        ..opts()
    };
    // The typed Timeout proves the client's timeout fired; the outer guard
    // only catches a hang.
    let e = tokio::time::timeout(Duration::from_secs(30), poll_hostile(Hostile::Slow, &quick))
        .await
        .expect("bounded by the timeout, no hang");
    assert!(matches!(e, Https3dError::Timeout { .. }), "{e}");
    assert!(e.is_silence() && e.is_retriable());

    let e = poll_hostile(Hostile::Unavailable, &opts()).await;
    assert!(
        matches!(e, Https3dError::HttpStatus { status: 503, .. }),
        "{e}"
    );
    assert!(e.is_retriable());

    // Not TLS at all: a handshake error, not a hang.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = plain.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let client = Https3dClient::new(&format!("https://{addr}/"), &pin(&"11".repeat(32))).unwrap();
    let e = poll_3d(&client, &opts(), |_| None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Https3dError::Tls {
                kind: TlsFailure::Handshake,
                ..
            }
        ),
        "{e}"
    );

    // Nothing listening: connect error (silence).
    let client = Https3dClient::new("https://127.0.0.1:1/", &pin(&"11".repeat(32))).unwrap();
    let e = poll_3d(&client, &opts(), |_| None).await.unwrap_err();
    assert!(e.is_silence(), "{e}");
}

// --- mapping -----------------------------------------------------------------

const DEVICE_JSON: &str = r#"{
  "identity": {"serial": "SGCAN0001", "vendor": "HP", "model": "HP Jet Fusion 5200",
               "firmware": "JF5200_2403B", "hostname": "JF-0A0B0C", "location": "Lab / Bay 2",
               "mac": "10:1F:74:0A:0B:0C", "owner_note": "ignored"},
  "status": {"state": "printing", "errors": ["agent_low:F", "printhead_error:3", "agent_low:D"],
             "uptime_s": 3600, "current_job_id": 8},
  "build_unit": {"id": "BU-7", "material_type": "HP 3D HR PA 12", "recycled_material_pct": 80.5,
                 "material_quantity_kg": 41.25, "non_genuine_material": true, "expired_material": false},
  "agents": [{"code": "F", "name": "HP 3D600 Fusing Agent", "capacity_ml": 3000.0,
              "remaining_ml": 250.5, "level_pct": 8.35, "status": "low"},
             {"code": "D", "capacity_ml": 3000.0, "remaining_ml": 1500.0}],
  "printheads": [{"slot": 3, "serial": "PH0000042", "type": "HP 3D600 Printhead", "status": "error",
                  "agent_used_ml": 1234.5, "installed_at": "2025-03-01T10:00:00Z",
                  "usage_time_s": 7200, "last_error": "0x2A1F: nozzle health below threshold"},
                 {"slot": 4}]
}"#;

const JOBS_JSON: &str = r#"{"jobs": [
  {"id": "7", "name": "CANARY-JOBNAME-123", "status": "completed",
   "created_at": "2025-03-01T08:00:00Z", "started_at": "2025-03-01T08:15:00+00:00",
   "ended_at": "2025-03-01T12:00:00Z", "bounding_box_mm": {"x": 300.5, "y": 200.25, "z": 120.0},
   "volume_cm3": 812.5, "surface_cm2": 2345.5, "packing_density_pct": 11.25,
   "layer_count": 3, "layers_done": 3, "layer_thickness_um": 80.0, "layer_times_s": [9.5, 10.0, 10.5],
   "material_type": "HP 3D HR PA 12", "recyclable_material_pct": 80.0, "recycled_material_pct": 78.5,
   "print_mode": "balanced", "build_unit_id": "BU-7", "user": "CANARY-USER-789",
   "parts": [{"id": "7-1", "name": "CANARY-PARTNAME-456", "bounding_box_mm": {"x": 10.0, "y": 20.0, "z": 30.0},
              "volume_cm3": 400.0, "material_used_g": 404.0},
             {"id": 72, "name": "CANARY-PARTNAME-456-b", "volume_cm3": 412.5}]},
  {"id": "8", "name": "CANARY-JOBNAME-123-running", "status": "running",
   "created_at": "2025-03-01T12:30:00Z", "layer_times_s": [9.0],
   "parts": [{"id": "8-1", "name": "CANARY-PARTNAME-456-c"}]},
  {"id": "9", "name": "CANARY-JOBNAME-123-later", "status": "failed", "ended_at": "2025-03-01T13:00:00Z",
   "parts": []}
], "more": true}"#;

fn canary_snapshot() -> Snapshot3d {
    let device = map::device(serde_json::from_str(DEVICE_JSON).unwrap(), "10.0.0.9");
    let jobs: wire::Jobs = serde_json::from_str(JOBS_JSON).unwrap();
    Snapshot3d {
        url: "https://10.0.0.9/".into(),
        ip_address: "10.0.0.9".into(),
        polled_at: 1_740_000_000_000,
        response_ms: 12,
        device,
        more_jobs: jobs.more,
        jobs: jobs.jobs.into_iter().map(map::job).collect(),
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn json_maps_to_records_without_names() {
    let s = canary_snapshot();
    let o = Origin {
        tenant_id: "t".into(),
        connector_id: "c".into(),
    };
    let d = &s.device;
    assert_eq!(d.device_id, "SGCAN0001");
    assert_eq!(d.mac_address.as_deref(), Some("10:1f:74:0a:0b:0c"));
    assert_eq!(d.hr_device_status, Some(HrDeviceStatus::Warning));
    assert_eq!(d.hr_printer_status, Some(HrPrinterStatus::Printing));
    assert_eq!(
        d.detected_errors,
        vec![
            PrinterErrorFlag::LowToner,
            PrinterErrorFlag::ServiceRequested
        ]
    );
    assert_eq!(d.supplies[0].level, Some(2505));
    assert_eq!(d.supplies[0].max_capacity, Some(30_000));
    assert_eq!(d.supplies[0].percent, Some(8.35));
    assert_eq!(
        d.supplies[1].percent,
        Some(50.0),
        "computed when not reported"
    );
    assert_eq!(d.supplies[1].description, "Agent D");
    let ph = &d.printheads[0];
    assert_eq!(ph.printhead_id, "PH0000042");
    assert_eq!(ph.installed_at, Some(1_740_823_200_000));
    assert_eq!(ph.usage_time_s, Some(7200));
    assert_eq!(ph.agent_used_ml, Some(1234.5));
    assert!(ph.last_error.as_deref().unwrap().contains("nozzle"));
    assert_eq!(d.printheads[1].printhead_id, "slot-4");

    let status = map::status(&o, &s);
    let bu = status.build_unit.as_ref().unwrap();
    assert_eq!(
        (
            bu.build_unit_id.as_str(),
            bu.recycled_material_pct,
            bu.material_quantity_kg
        ),
        ("BU-7", Some(80.5), Some(41.25))
    );
    assert!(bu.non_genuine_material && !bu.expired_material);
    assert_eq!(
        status.sys_descr.as_deref(),
        Some("HP Jet Fusion 5200; firmware JF5200_2403B")
    );
    let hb = map::heartbeat(&o, &s);
    assert_eq!(hb.protocol, PollProtocol::Http);
    assert_eq!(hb.sys_uptime_ticks, Some(360_000));

    // Only job 7 is due: 8 is running, and 9 waits behind it.
    let due = jobs_to_emit(&s.jobs, None);
    assert_eq!(
        due.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(),
        ["7"]
    );
    assert!(jobs_to_emit(&s.jobs, Some("7")).is_empty());
    assert!(jobs_to_emit(&s.jobs, Some("8"))
        .iter()
        .map(|j| &j.job_id)
        .eq(["9"].iter()));
    let r = map::job_record(&o, &d.device_id, s.polled_at, due[0]);
    assert_eq!(r.kind, JobKind::Print3d);
    assert_eq!(r.completion_status, JobCompletion::Completed);
    assert_eq!(r.user_name, None);
    assert_eq!(r.created_at, Some(1_740_816_000_000));
    assert_eq!(r.started_at, Some(1_740_816_900_000));
    assert_eq!(r.ended_at, Some(1_740_830_400_000));
    let b = r.bounding_box.as_ref().unwrap();
    assert_eq!((b.x_mm, b.y_mm, b.z_mm), (300.5, 200.25, 120.0));
    assert_eq!(
        (r.volume_cm3, r.surface_cm2, r.packing_density_pct),
        (Some(812.5), Some(2345.5), Some(11.25))
    );
    assert_eq!((r.layers, r.layer_thickness_um), (Some(3), Some(80.0)));
    assert_eq!(r.material_type.as_deref(), Some("HP 3D HR PA 12"));
    assert_eq!(
        (r.recyclable_material_pct, r.recycled_material_pct),
        (Some(80.0), Some(78.5))
    );
    assert_eq!(r.print_mode.as_deref(), Some("balanced"));
    assert_eq!(r.build_unit_id.as_deref(), Some("BU-7"));
    assert_eq!(r.parts.len(), 2);
    assert_eq!(r.parts[0].part_id, "7-1");
    assert_eq!(r.parts[0].material_used_g, Some(404.0));
    assert_eq!(r.parts[1].part_id, "72");
    assert_eq!(s.jobs[0].layer_time_total_s, Some(30.0));
    assert_eq!(s.jobs[1].layers, Some(1), "from the timings when no count");

    // The canaries are nowhere: not in the snapshot, not in any Avro record.
    let mut blobs = vec![
        serde_json::to_vec(&s).unwrap(),
        codec::encode(&status).unwrap(),
        codec::encode(&hb).unwrap(),
    ];
    for j in &s.jobs {
        blobs.push(codec::encode(&map::job_record(&o, &d.device_id, s.polled_at, j)).unwrap());
    }
    blobs.push(render_text(&s).into_bytes());
    for b in &blobs {
        for canary in [
            "CANARY-JOBNAME-123",
            "CANARY-PARTNAME-456",
            "CANARY-USER-789",
            "CANARY",
        ] {
            assert!(!contains(b, canary), "{canary} leaked");
        }
    }
    let back: JobRecord = codec::decode(&blobs[3]).unwrap();
    assert_eq!(back, r_with_id(&r, &back.event_id));
}

fn r_with_id(r: &JobRecord, event_id: &str) -> JobRecord {
    JobRecord {
        event_id: event_id.to_string(),
        ..r.clone()
    }
}

#[test]
fn urls_and_config() {
    let t = Https3dTarget::parse("https://127.0.0.1:8443").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.base.as_str()),
        ("127.0.0.1", 8443, "/")
    );
    let t = Https3dTarget::parse("HTTPS://[::1]/printer/api").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.base.as_str()),
        ("::1", 443, "/printer/api/")
    );
    for bad in [
        "http://p/",
        "p:443",
        "https://u:pw@p/",
        "https://p:0/",
        "https:///x",
        "https://p/?a=b",
    ] {
        assert!(
            matches!(Https3dTarget::parse(bad), Err(Https3dError::Url { .. })),
            "{bad}"
        );
    }

    use crate::config::EdgeConfig;
    use fleetpulse_core::config::from_toml;
    let base = "tenant_id = \"t\"\nconnector_id = \"c\"\nconnector_secret = \"x\"\n";
    let pin = "ab".repeat(32);
    let ok = format!(
        "{base}[[devices]]\naddress = \"10.0.0.5\"\nprotocol = \"https3d\"\ntls = {{ pin_sha256 = \"{pin}\" }}\n\
         [[devices]]\naddress = \"10.0.0.5\"\n\
         [https3d]\ntimeout = \"4s\"\nstate_file = \"/tmp/x.json\"\n"
    );
    let c: EdgeConfig = from_toml(&ok).unwrap();
    assert_eq!(c.devices[0].protocol, crate::config::Protocol::Https3d);
    assert_eq!(url_of(&c.devices[0]), "https://10.0.0.5/");
    assert_eq!(c.https3d.timeout, Duration::from_secs(4));
    assert_eq!(c.https3d.max_jobs_per_poll, 20);
    let err = |toml: String| from_toml::<EdgeConfig>(&toml).unwrap_err().to_string();
    let dev = |extra: &str| {
        format!("{base}[[devices]]\naddress = \"h\"\nprotocol = \"https3d\"\n{extra}")
    };
    let e = err(dev(""));
    assert!(
        e.contains("devices[0].tls") && e.contains("cannot be turned off"),
        "{e}"
    );
    let e = err(dev("tls = { insecure = true }\n"));
    assert!(e.contains("insecure"), "no way to skip verification: {e}");
    let e = err(dev("tls = { pin_sha256 = \"abc\" }\n"));
    assert!(e.contains("devices[0].tls.pin_sha256"), "{e}");
    let e = err(dev("tls = { ca_file = \"/nonexistent.pem\" }\n"));
    assert!(e.contains("devices[0].tls.ca_file"), "{e}");
    let e = err(dev(&format!(
        "url = \"http://h/\"\ntls = {{ pin_sha256 = \"{pin}\" }}\n"
    )));
    assert!(e.contains("devices[0].url"), "{e}");
    let e = err(format!(
        "{base}[[devices]]\naddress = \"h\"\ntls = {{ pin_sha256 = \"{pin}\" }}\n"
    ));
    assert!(e.contains("devices[0].tls") && e.contains("https3d"), "{e}");
    let e = err(format!(
        "{}[https3d]\nmax_jobs_per_poll = 0\n",
        dev(&format!("tls = {{ pin_sha256 = \"{pin}\" }}\n"))
    ));
    assert!(e.contains("https3d.max_jobs_per_poll"), "{e}");
}

#[tokio::test]
async fn cursors_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("edge-https3d.json");
    let o = Https3dOptions {
        state_file: Some(path.clone()),
        ..Https3dOptions::default()
    };
    let rt = Runtime::new(&o);
    assert_eq!(rt.last_published("SG1").await, None);
    rt.advance("SG1", "41").await;
    rt.advance("SG2", "7").await;
    let again = Runtime::new(&o);
    assert_eq!(again.last_published("SG1").await.as_deref(), Some("41"));
    assert_eq!(again.last_published("SG2").await.as_deref(), Some("7"));
    // A corrupt file: start empty, do not fail.
    std::fs::write(&path, "{not json").unwrap();
    assert_eq!(Runtime::new(&o).last_published("SG1").await, None);
}

// --- end to end ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_publishes_3d_jobs_and_status_once() {
    use fleetpulse_core::kafka::KafkaConfig;
    use fleetpulse_core::schema::RecordType;
    use fleetpulse_core::signing::{SignatureFields, SigningKey};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::ClientConfig;

    const SECRET: &str = "a-3d-edge-test-secret-of-some-length";
    let cluster = MockCluster::new(1).expect("mock cluster");
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic_prefix: "e3d".into(),
        properties: Default::default(),
        ..Default::default()
    };
    for t in kafka.all_topics() {
        cluster.create_topic(&t, 1, 1).expect("create topic");
    }
    let shutdown = Shutdown::new();
    let fleet = sim_3d(&shutdown, Default::default()).await;
    let p = fleet.printers_3d()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("edge-https3d.json");
    let mut device = crate::config::DeviceConfig::new(p.addr.to_string(), "public");
    device.protocol = crate::config::Protocol::Https3d;
    device.url = Some(p.url.clone());
    device.tls = Some(pin(fleet.tls_cert_sha256().unwrap()));
    std::env::set_var("FP_EDGE_3D_SECRET", SECRET);
    let config = crate::config::EdgeConfig {
        tenant_id: "tenant-3d".into(),
        connector_id: "conn-3d".into(),
        connector_secret: "env:FP_EDGE_3D_SECRET".into(),
        devices: vec![device],
        poll_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(60),
        schedule: crate::ScheduleConfig::every_poll(),
        https3d: Https3dOptions {
            state_file: Some(state_file.clone()),
            ..opts()
        },
        kafka: kafka.clone(),
        buffer: crate::BufferConfig {
            dir: dir.path().join("buffer"),
            ..Default::default()
        },
        ..Default::default()
    };
    let edge = tokio::spawn(crate::run(config, shutdown.clone()));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "e3d-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let topics = kafka.all_topics();
    consumer
        .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .expect("subscribe");
    /// (topic, key, payload, headers).
    type Got = (String, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);
    let mut got: Vec<Got> = Vec::new();
    let count = |got: &[Got], t: RecordType| got.iter().filter(|g| g.0 == kafka.topic(t)).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    // At least three polls' worth of statuses, and some jobs.
    while Instant::now() < deadline
        && !(count(&got, RecordType::DeviceStatus) >= 3 && count(&got, RecordType::JobRecord) >= 1)
    {
        let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        if let Some(Ok(m)) = polled {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                x.value.map(<[u8]>::to_vec).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.push((
                m.topic().to_string(),
                m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers,
            ));
        }
    }
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "run() returns: {stopped:?}"
    );
    assert!(
        count(&got, RecordType::DeviceStatus) >= 3,
        "statuses: {}",
        count(&got, RecordType::DeviceStatus)
    );
    assert!(count(&got, RecordType::JobRecord) >= 1, "no job records");

    let key = SigningKey::derive(SECRET.as_bytes(), "conn-3d");
    let mut job_ids = Vec::new();
    for (topic, k, payload, headers) in &got {
        let fields = SignatureFields::from_headers(
            headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
        )
        .expect("signature headers present");
        key.verify(topic, k, &fields, payload)
            .expect("signature verifies");
        assert!(
            !contains(payload, "PRIVATE-"),
            "a job/part name left the edge on {topic}"
        );
        let kind = kafka.record_type_of(topic).expect("our topic");
        if kind != RecordType::ConnectorHeartbeat {
            assert_eq!(k, p.serial.as_bytes());
        }
        match kind {
            RecordType::JobRecord => {
                let r: JobRecord = codec::decode(payload).expect("decodes");
                assert_eq!(r.kind, JobKind::Print3d);
                assert_eq!(r.tenant_id, "tenant-3d");
                assert_ne!(r.completion_status, JobCompletion::Running);
                assert!(r.user_name.is_none());
                assert!(r.bounding_box.is_some() && r.layers.is_some() && !r.parts.is_empty());
                assert!(r.ended_at.is_some() && r.material_type.is_some());
                job_ids.push(r.job_id);
            }
            RecordType::DeviceStatus => {
                let r: DeviceStatus = codec::decode(payload).expect("decodes");
                assert_eq!(r.device_id, p.serial);
                assert!(!r.printheads.is_empty() && r.build_unit.is_some());
                assert!(!r.supplies.is_empty());
                assert_eq!(r.model.as_deref(), Some(p.model.as_str()));
            }
            RecordType::DeviceHeartbeat => {
                let r: DeviceHeartbeat = codec::decode(payload).expect("decodes");
                assert_eq!(r.protocol, PollProtocol::Http);
            }
            RecordType::ConnectorHeartbeat => {}
            other => panic!("unexpected record type {other:?}"),
        }
    }
    let mut unique = job_ids.clone();
    unique.sort_by_key(|id| id.parse::<u64>().unwrap_or(0));
    unique.dedup();
    assert_eq!(
        unique.len(),
        job_ids.len(),
        "each job published once: {job_ids:?}"
    );
    // The cursor file names the last job published.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(
        state["last_published_job"][p.serial.as_str()].as_str(),
        unique.last().map(String::as_str)
    );
    fleet.join().await;
}

/// With the broker down, a 3D printer's heartbeats, statuses and finished
/// jobs are stored in the buffer like every other record (nothing is lost,
/// nothing bypasses it), each job once across polls, and the job cursor
/// follows what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_keeps_3d_records_in_the_buffer() {
    use crate::buffer::Class;
    use fleetpulse_core::kafka::KafkaConfig;

    let shutdown = Shutdown::new();
    let fleet = sim_3d(&shutdown, Default::default()).await;
    let p = fleet.printers_3d()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("edge-https3d.json");
    let buffer_dir = dir.path().join("buffer");
    let mut device = crate::config::DeviceConfig::new(p.addr.to_string(), "public");
    device.protocol = crate::config::Protocol::Https3d;
    device.url = Some(p.url.clone());
    device.tls = Some(pin(fleet.tls_cert_sha256().unwrap()));
    let config = crate::config::EdgeConfig {
        tenant_id: "tenant-3d".into(),
        connector_id: "conn-3d-down".into(),
        connector_secret: "a-3d-edge-test-secret-inline".into(),
        devices: vec![device],
        poll_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(60),
        schedule: crate::ScheduleConfig::every_poll(),
        https3d: Https3dOptions {
            state_file: Some(state_file.clone()),
            // Few jobs per poll: the backlog takes several polls, so the
            // cursor must carry over from one poll to the next.
            max_jobs_per_poll: 3,
            ..opts()
        },
        kafka: KafkaConfig {
            // Nothing listens there: every record must wait in the buffer.
            brokers: "127.0.0.1:1".into(),
            topic_prefix: "e3d-down".into(),
            properties: Default::default(),
            ..Default::default()
        },
        buffer: crate::BufferConfig {
            dir: buffer_dir.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let kafka = config.kafka.clone();
    let edge = tokio::spawn(crate::run(config, shutdown.clone()));
    let of_class = |records: &[crate::buffer::StoredRecord], c: Class| {
        records.iter().filter(|r| r.class == c).count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = crate::buffer::Inspection::default();
    while Instant::now() < deadline {
        if let Ok(i) = crate::buffer::inspect(&buffer_dir) {
            seen = i;
            if of_class(&seen.records, Class::Status) >= 3
                && of_class(&seen.records, Class::Job) >= 4
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), edge).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "run() returns: {stopped:?}"
    );
    let after = crate::buffer::inspect(&buffer_dir).expect("buffer readable");
    assert!(
        after.records.len() >= seen.records.len(),
        "records left the buffer without a broker"
    );
    assert!(of_class(&after.records, Class::Status) >= 3, "statuses");
    assert!(
        of_class(&after.records, Class::Heartbeat) >= 3,
        "heartbeats"
    );
    let jobs: Vec<JobRecord> = after
        .records
        .iter()
        .filter(|r| r.class == Class::Job)
        .map(|r| {
            assert_eq!(
                r.topic,
                kafka.topic(fleetpulse_core::schema::RecordType::JobRecord)
            );
            assert_eq!(r.key, p.serial.as_bytes());
            codec::decode(&r.payload).expect("job record decodes")
        })
        .collect();
    assert!(jobs.len() >= 4, "job records in the buffer: {}", jobs.len());
    let ids: Vec<u64> = jobs.iter().map(|j| j.job_id.parse().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "each job stored once, in order: {ids:?}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(
        state["last_published_job"][p.serial.as_str()].as_str(),
        jobs.last().map(|j| j.job_id.as_str()),
        "the cursor names the last job stored"
    );
    fleet.join().await;
}

/// A 3D printer follows `[schedule]` (3 h intervals, floor lowered for the
/// test): its status goes at the first poll and then only after
/// `counters_after_jobs` finished jobs (the status carries its cumulative
/// usage, the counters-equivalent); job records go as jobs finish; no
/// device heartbeat while it answers: its liveness is in the connector
/// heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_the_schedule_for_3d_printers() {
    use fleetpulse_core::kafka::KafkaConfig;
    use fleetpulse_core::records::ConnectorHeartbeat;
    use fleetpulse_core::schema::RecordType;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::mocking::MockCluster;
    use rdkafka::ClientConfig;

    // The simulated history holds 6 finished jobs.
    const AFTER_JOBS: usize = 2;
    let cluster = MockCluster::new(1).expect("mock cluster");
    let kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic_prefix: "e3s".into(),
        properties: Default::default(),
        ..Default::default()
    };
    for t in kafka.all_topics() {
        cluster.create_topic(&t, 1, 1).expect("create topic");
    }
    let shutdown = Shutdown::new();
    // Real-time sim: its state does not change during the test, so only
    // finished jobs can send a status after the first one.
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: 0,
            printers_3d: 1,
            https_base_port: 0,
            acceleration: 1.0,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .expect("sim with a 3D printer");
    let p = fleet.printers_3d()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut device = crate::config::DeviceConfig::new(p.addr.to_string(), "public");
    device.protocol = crate::config::Protocol::Https3d;
    device.url = Some(p.url.clone());
    device.tls = Some(pin(fleet.tls_cert_sha256().unwrap()));
    let config = crate::config::EdgeConfig {
        tenant_id: "tenant-3d".into(),
        connector_id: "conn-3d-sched".into(),
        connector_secret: "a-3d-edge-test-secret-inline".into(),
        devices: vec![device],
        poll_interval: Duration::from_secs(1),
        heartbeat_interval: Duration::from_secs(1),
        schedule: crate::ScheduleConfig {
            min_interval: Duration::from_secs(1),
            counters_after_jobs: AFTER_JOBS as u64,
            ..Default::default()
        },
        https3d: Https3dOptions {
            // The history comes one job per poll: jobs "finish" poll by poll.
            max_jobs_per_poll: 1,
            ..opts()
        },
        kafka: kafka.clone(),
        buffer: crate::BufferConfig {
            dir: dir.path().join("buffer"),
            ..Default::default()
        },
        ..Default::default()
    };
    let edge = tokio::spawn(crate::run(config, shutdown.clone()));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "e3s-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let topics = kafka.all_topics();
    consumer
        .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .expect("subscribe");
    type Got = (String, Vec<u8>);
    let mut got: Vec<Got> = Vec::new();
    let count = |got: &[Got], t: RecordType| got.iter().filter(|g| g.0 == kafka.topic(t)).count();
    let read = |got: &mut Vec<Got>, until: Instant, stop: &dyn Fn(&[Got]) -> bool| {
        while Instant::now() < until && !stop(got) {
            let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
            if let Some(Ok(m)) = polled {
                got.push((
                    m.topic().to_string(),
                    m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                ));
            }
        }
    };
    let want_jobs = 2 * AFTER_JOBS + 1;
    read(&mut got, Instant::now() + Duration::from_secs(45), &|g| {
        count(g, RecordType::JobRecord) >= want_jobs
    });
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), edge).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    // Whatever the last polls stored is delivered by now: read it too.
    read(&mut got, Instant::now() + Duration::from_secs(3), &|_| {
        false
    });
    fleet.join().await;

    let jobs = count(&got, RecordType::JobRecord);
    let statuses = count(&got, RecordType::DeviceStatus);
    assert!(
        jobs >= want_jobs,
        "job records: {jobs} (the history is that long)"
    );
    // One job per poll: the first poll's status, then one after every
    // AFTER_JOBS jobs, at the next slot (a poll later at most, when one more
    // job came in).
    let (fewest, most) = (
        1 + (jobs - 1) / (AFTER_JOBS + 1),
        1 + (jobs - 1) / AFTER_JOBS,
    );
    assert!(
        (fewest..=most).contains(&statuses) && statuses >= 2,
        "{statuses} statuses after {jobs} finished jobs (expected {fewest}..={most})"
    );
    for (topic, payload) in &got {
        if *topic == kafka.topic(RecordType::DeviceStatus) {
            let s: DeviceStatus = codec::decode(payload).expect("status decodes");
            assert!(
                !s.printheads.is_empty(),
                "the status carries the printhead usage"
            );
        }
    }
    assert_eq!(
        count(&got, RecordType::DeviceHeartbeat),
        0,
        "no device heartbeat while the printer answers"
    );
    let listed = got
        .iter()
        .filter(|g| g.0 == kafka.topic(RecordType::ConnectorHeartbeat))
        .filter_map(|g| codec::decode::<ConnectorHeartbeat>(&g.1).ok())
        .any(|h| {
            h.devices
                .iter()
                .any(|d| d.device_id == p.serial && d.reachable)
        });
    assert!(listed, "the connector heartbeat lists the 3D printer alive");
}
