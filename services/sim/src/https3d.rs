//! Simulated industrial 3D printers (`printers_3d`): a JSON device API over
//! HTTPS with a self-signed certificate, the way HP Jet Fusion-class
//! printers expose their state.
//!
//! Why HTTPS with a self-signed certificate: that is what such devices ship
//! with, and it is exactly what the edge must handle without ever switching
//! verification off — it pins the certificate or trusts it as a CA. So the
//! simulator makes one self-signed certificate at start (SANs `localhost`,
//! `127.0.0.1`, `::1` and the bind address; ECDSA P-256; `serverAuth`), or
//! serves a configured cert/key pair (`tls_cert_file`, `tls_key_file`), and
//! writes the certificate PEM to `tls_cert_out` for the edge to pin or
//! trust. All 3D printers of a fleet serve the same certificate.
//!
//! # API (HTTP/1.1 over TLS, one request per connection, `Connection: close`)
//!
//! `GET /api/v1/device` →
//! ```json
//! { "identity": { "serial": "SG…", "vendor": "HP", "model": "HP Jet Fusion 5200",
//!                 "firmware": "JF5200_2403B", "hostname": "JF-…", "location": "…",
//!                 "mac": "10:1f:74:…" },
//!   "status": { "state": "idle|warming_up|printing|error", "errors": ["agent_low:F", …],
//!               "uptime_s": 123456, "current_job_id": "1042" | null },
//!   "build_unit": { "id": "BU-…", "material_type": "HP 3D HR PA 12",
//!                   "recycled_material_pct": 80.0, "material_quantity_kg": 41.3,
//!                   "non_genuine_material": false, "expired_material": false },
//!   "agents": [ { "code": "F", "name": "HP 3D600 Fusing Agent", "capacity_ml": 3000.0,
//!                 "remaining_ml": 1234.5, "level_pct": 41.15, "status": "ok|low|empty" } ],
//!   "printheads": [ { "slot": 1, "serial": "PH…", "type": "HP 3D600 Printhead",
//!                     "status": "ok|warning|error", "agent_used_ml": 9876.5,
//!                     "installed_at": "2025-…Z", "usage_time_s": 720000,
//!                     "last_error": null | "0x2A1F: nozzle health below threshold" } ] }
//! ```
//! Error codes: `agent_low:<code>`, `agent_empty:<code>`,
//! `printhead_error:<slot>`, `non_genuine_material`, `expired_material`.
//!
//! `GET /api/v1/jobs[?since=<job id>][&limit=<n>]` → jobs with an id greater
//! than `since`, oldest first, at most `limit` (default 20, at most 100):
//! ```json
//! { "jobs": [ { "id": "1042", "name": "PRIVATE-order-…", "status": "running|completed|failed|canceled",
//!               "created_at": "…Z", "started_at": "…Z", "ended_at": "…Z" | null,
//!               "bounding_box_mm": {"x": 300.5, "y": 200.1, "z": 120.0},
//!               "volume_cm3": 812.3, "surface_cm2": 2345.6, "packing_density_pct": 11.2,
//!               "layer_count": 1500, "layers_done": 1500, "layer_thickness_um": 80.0,
//!               "layer_times_s": [9.12, 9.3, …],
//!               "material_type": "HP 3D HR PA 12", "recyclable_material_pct": 80.0,
//!               "recycled_material_pct": 78.5, "print_mode": "balanced", "build_unit_id": "BU-…",
//!               "parts": [ { "id": "1042-1", "name": "PRIVATE-part-…",
//!                            "bounding_box_mm": {…}, "volume_cm3": 40.1, "material_used_g": 40.5 } ] } ],
//!   "more": false }
//! ```
//! `layer_times_s` lists the layers printed so far. Job and part `name`s are
//! customer file names and are there on purpose: the edge must drop them.
//! They all start with `PRIVATE-` so tests can prove none leaves the edge.
//!
//! Anything else: `404` (unknown path), `405` (not GET), `400` (garbage).
//! Dates are RFC 3339 UTC: sim seconds after the fleet's start time (so an
//! accelerated clock runs ahead of the wall clock).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetpulse_core::Shutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::agent::SimClock;
use crate::config::SimConfig;
use crate::model::TICKS_PER_STEP;
use crate::model3d::{Job, Printer3d, LOW_AGENT_PCT, STEP_S};

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take for the TLS handshake plus its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Jobs per response by default, and at most.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// The certificate the 3D printers serve.
#[derive(Clone)]
pub(crate) struct SimTls {
    /// PEM of the leaf certificate (what `tls_cert_out` receives).
    pub(crate) cert_pem: String,
    /// DER of the leaf certificate.
    pub(crate) cert_der: Vec<u8>,
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for SimTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTls").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load the configured pair, or make a self-signed certificate; write the
/// PEM to `tls_cert_out` when set.
pub(crate) fn tls(config: &SimConfig) -> Result<SimTls, String> {
    let (chain, key, cert_pem) = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => load_pair(cert, key)?,
        _ => self_signed(config.bind)?,
    };
    let cert_der = chain.first().map(|c| c.to_vec()).unwrap_or_default();
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate/key: {e}"))?;
    if let Some(out) = &config.tls_cert_out {
        std::fs::write(out, &cert_pem)
            .map_err(|e| format!("cannot write tls_cert_out {}: {e}", out.display()))?;
    }
    Ok(SimTls {
        cert_pem,
        cert_der,
        acceptor: TlsAcceptor::from(Arc::new(server)),
    })
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String);

fn load_pair(cert: &Path, key: &Path) -> Result<Pair, String> {
    let pem = std::fs::read_to_string(cert)
        .map_err(|e| format!("cannot read tls_cert_file {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_cert_file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert_file {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls_key_file {}: {e}", key.display()))?;
    // The PEM handed out is the leaf only: that is what a pin refers to.
    let leaf_pem = pem_of(&chain[0]);
    Ok((chain, key, leaf_pem))
}

fn pem_of(der: &[u8]) -> String {
    // Base64 in 64-column lines, as RFC 7468 asks.
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(char::from(B64[((v >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn self_signed(bind: IpAddr) -> Result<Pair, String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !bind.is_unspecified() && !bind.is_loopback() {
        names.push(bind.to_string());
    }
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| format!("certificate: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fleetpulse simulated 3D printer");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("certificate: {e}"))?;
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Ok((vec![cert.der().clone()], key_der, cert.pem()))
}

// --- JSON rendering ----------------------------------------------------------

/// RFC 3339 UTC of sim second `s` for a fleet started at `origin_ms`.
fn date(origin_ms: i64, s: i64) -> Value {
    let ms = origin_ms.saturating_add(s.saturating_mul(1000));
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|d| Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn bbox(b: [f64; 3]) -> Value {
    json!({"x": b[0], "y": b[1], "z": b[2]})
}

/// `GET /api/v1/device`.
pub(crate) fn device_json(p: &Printer3d, origin_ms: i64, now_s: i64) -> Value {
    let pr = &p.profile;
    let st = &p.state;
    let mac = pr
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let agents: Vec<Value> = st
        .agents
        .iter()
        .map(|a| {
            let pct = (a.remaining_ml / a.capacity_ml * 10_000.0).round() / 100.0;
            let status = if a.remaining_ml <= 0.0 {
                "empty"
            } else if pct <= LOW_AGENT_PCT {
                "low"
            } else {
                "ok"
            };
            json!({"code": a.code, "name": a.name, "capacity_ml": a.capacity_ml,
                   "remaining_ml": a.remaining_ml, "level_pct": pct, "status": status})
        })
        .collect();
    let printheads: Vec<Value> = st
        .printheads
        .iter()
        .map(|h| {
            json!({"slot": h.slot, "serial": h.serial, "type": h.kind, "status": h.status,
                   "agent_used_ml": h.agent_used_ml, "installed_at": date(origin_ms, h.installed_s),
                   "usage_time_s": h.usage_time_s, "last_error": h.last_error})
        })
        .collect();
    let b = &st.build_unit;
    json!({
        "identity": {"serial": pr.serial, "vendor": "HP", "model": pr.model.name,
                     "firmware": pr.firmware, "hostname": pr.hostname,
                     "location": pr.location, "mac": mac},
        "status": {"state": st.activity(now_s).as_str(), "errors": st.errors(),
                   "uptime_s": st.uptime_s(now_s),
                   "current_job_id": st.current.as_ref().map(|j| j.id.to_string())},
        "build_unit": {"id": b.id, "material_type": pr.material.0,
                       "recycled_material_pct": b.recycled_material_pct,
                       "material_quantity_kg": b.material_quantity_kg,
                       "non_genuine_material": b.non_genuine_material,
                       "expired_material": b.expired_material},
        "agents": agents,
        "printheads": printheads,
    })
}

fn job_json(j: &Job, origin_ms: i64, now_s: i64) -> Value {
    let done = j.layers_done(now_s);
    let parts: Vec<Value> = j
        .parts
        .iter()
        .map(|p| {
            json!({"id": p.id, "name": p.name, "bounding_box_mm": bbox(p.bbox_mm),
                   "volume_cm3": p.volume_cm3, "material_used_g": p.material_used_g})
        })
        .collect();
    json!({
        "id": j.id.to_string(), "name": j.name, "status": j.status.as_str(),
        "created_at": date(origin_ms, j.created_s),
        "started_at": if now_s >= j.started_s { date(origin_ms, j.started_s) } else { Value::Null },
        "ended_at": j.ended_s.map(|s| date(origin_ms, s)),
        "bounding_box_mm": bbox(j.bbox_mm), "volume_cm3": j.volume_cm3,
        "surface_cm2": j.surface_cm2, "packing_density_pct": j.packing_density_pct,
        "layer_count": j.layer_times_s.len(), "layers_done": done,
        "layer_thickness_um": j.layer_thickness_um,
        "layer_times_s": &j.layer_times_s[..done.min(j.layer_times_s.len())],
        "material_type": j.material_type, "recyclable_material_pct": j.recyclable_material_pct,
        "recycled_material_pct": j.recycled_material_pct, "print_mode": j.print_mode,
        "build_unit_id": j.build_unit_id, "parts": parts,
    })
}

/// `GET /api/v1/jobs?since=&limit=`.
pub(crate) fn jobs_json(
    p: &Printer3d,
    origin_ms: i64,
    now_s: i64,
    since: Option<u64>,
    limit: usize,
) -> Value {
    let mut jobs = p.jobs().filter(|j| since.is_none_or(|s| j.id > s));
    let page: Vec<Value> = jobs
        .by_ref()
        .take(limit)
        .map(|j| job_json(j, origin_ms, now_s))
        .collect();
    json!({"jobs": page, "more": jobs.next().is_some()})
}

// --- HTTP --------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read a request head; returns (method, target).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<(String, String), &'static str> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if find(&buf, b"\r\n\r\n").is_some() {
            break;
        }
        if buf.len() > MAX_REQUEST {
            return Err("request head too large");
        }
        let n = s.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("closed before the head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = std::str::from_utf8(&buf).map_err(|_| "head is not UTF-8")?;
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => Ok((m.into(), t.into())),
        _ => Err("not an HTTP/1.x request line"),
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Status and JSON body for one request.
pub(crate) fn route(
    printer: &Mutex<Printer3d>,
    clock: &SimClock,
    origin_ms: i64,
    method: &str,
    target: &str,
) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" {
        return (405, json!({"error": "method not allowed"}));
    }
    let mut p = printer.lock().unwrap_or_else(|e| e.into_inner());
    let ticks = clock.sim_ticks();
    p.advance_to(ticks / TICKS_PER_STEP);
    let now_s = i64::try_from(ticks / 100)
        .unwrap_or(i64::MAX)
        .max(p.state.step * STEP_S);
    match path {
        "/api/v1/device" => (200, device_json(&p, origin_ms, now_s)),
        "/api/v1/jobs" => {
            let since = match query_param(query, "since") {
                None | Some("") => None,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => return (400, json!({"error": "since must be a job id"})),
                },
            };
            let limit = query_param(query, "limit")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(DEFAULT_LIMIT)
                .clamp(1, MAX_LIMIT);
            (200, jobs_json(&p, origin_ms, now_s, since, limit))
        }
        _ => (404, json!({"error": "not found"})),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, status: u16, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    // close_notify, so the client sees a clean end of stream.
    let _ = s.shutdown().await;
}

/// Shared by every connection of one printer.
struct Served {
    printer: Mutex<Printer3d>,
    clock: Arc<SimClock>,
    origin_ms: i64,
    acceptor: TlsAcceptor,
    index: usize,
}

async fn connection(stream: TcpStream, srv: Arc<Served>) {
    let index = srv.index;
    let handled = tokio::time::timeout(READ_TIMEOUT, async {
        let mut tls = match srv.acceptor.accept(stream).await {
            Ok(t) => t,
            Err(e) => {
                // A client that does not trust us hangs up here: expected in tests.
                tracing::debug!(index, error = %e, "simulated 3D printer: TLS handshake failed");
                metrics::counter!("sim_https_requests_total", "outcome" => "tls_failed")
                    .increment(1);
                return None;
            }
        };
        match read_head(&mut tls).await {
            Ok((method, target)) => Some((tls, Ok((method, target)))),
            Err(reason) => Some((tls, Err(reason))),
        }
    })
    .await;
    let Ok(Some((mut tls, request))) = handled else {
        return;
    };
    let (status, body) = match request {
        Ok((method, target)) => route(&srv.printer, &srv.clock, srv.origin_ms, &method, &target),
        Err(reason) => {
            tracing::debug!(index, reason, "simulated 3D printer: bad request");
            (400, json!({"error": reason}))
        }
    };
    let outcome = if status == 200 { "ok" } else { "error" };
    metrics::counter!("sim_https_requests_total", "outcome" => outcome).increment(1);
    respond(&mut tls, status, &body).await;
}

/// Serve one 3D printer's API until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    printer: Printer3d,
    clock: Arc<SimClock>,
    origin_ms: i64,
    acceptor: TlsAcceptor,
    index: usize,
    shutdown: Shutdown,
) {
    let srv = Arc::new(Served {
        printer: Mutex::new(printer),
        clock,
        origin_ms,
        acceptor,
        index,
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, srv.clone()));
            }
            Err(e) => {
                tracing::warn!(index, error = %e, "simulated 3D printer: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where 3D printer `index` listens, given `https_base_port`.
pub(crate) fn addr(bind: IpAddr, base: u16, index: usize) -> SocketAddr {
    let port = if base == 0 {
        0
    } else {
        base.saturating_add(u16::try_from(index).unwrap_or(u16::MAX))
    };
    SocketAddr::new(bind, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::config::Validate;
    use tokio_rustls::TlsConnector;

    /// GET over TLS trusting `cert_pem`; (status, body).
    async fn get(addr: SocketAddr, cert_pem: &str, raw_request: &str) -> (u16, Vec<u8>) {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("the sim's certificate verifies for 127.0.0.1");
        tls.write_all(raw_request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let head_end = find(&out, b"\r\n\r\n").unwrap() + 4;
        let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
        (status, out[head_end..].to_vec())
    }

    fn req(target: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    #[tokio::test]
    async fn serves_the_device_api_over_https() {
        let dir = tempfile_dir();
        let cert_out = dir.join("sim-cert.pem");
        let shutdown = Shutdown::new();
        let cfg = SimConfig {
            printers: 0,
            printers_3d: 2,
            https_base_port: 0,
            tls_cert_out: Some(cert_out.clone()),
            acceleration: 600.0,
            ..SimConfig::default()
        };
        let fleet = crate::start(cfg, shutdown.clone()).await.unwrap();
        assert!(fleet.printers().is_empty());
        let pem = std::fs::read_to_string(&cert_out).unwrap();
        assert_eq!(Some(pem.as_str()), fleet.tls_cert_pem());
        assert_eq!(fleet.tls_cert_sha256().map(str::len), Some(64));
        let p = &fleet.printers_3d()[1];
        assert_eq!(p.serial, crate::serial_3d_for(1, 1));
        assert_eq!(p.url, format!("https://{}/", p.addr));

        let (status, body) = get(p.addr, &pem, &req("/api/v1/device")).await;
        assert_eq!(status, 200);
        let d: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(d["identity"]["serial"], p.serial.as_str());
        assert!(d["identity"]["model"]
            .as_str()
            .unwrap()
            .starts_with("HP Jet Fusion"));
        assert!(!d["printheads"].as_array().unwrap().is_empty());
        assert!(d["agents"].as_array().unwrap().len() >= 2);
        assert!(d["build_unit"]["material_quantity_kg"].is_f64());
        assert!(d["status"]["state"].is_string());

        let (status, body) = get(p.addr, &pem, &req("/api/v1/jobs")).await;
        assert_eq!(status, 200);
        let j: Value = serde_json::from_slice(&body).unwrap();
        let jobs = j["jobs"].as_array().unwrap();
        assert!(!jobs.is_empty(), "three sim days of history");
        let first = &jobs[0];
        assert!(first["name"].as_str().unwrap().starts_with("PRIVATE-"));
        assert!(first["parts"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("PRIVATE-"));
        assert_eq!(
            first["layer_times_s"].as_array().unwrap().len() as u64,
            first["layers_done"].as_u64().unwrap()
        );
        assert!(first["ended_at"].as_str().unwrap().ends_with('Z'));
        let first_id: u64 = first["id"].as_str().unwrap().parse().unwrap();
        let (_, body) = get(
            p.addr,
            &pem,
            &req(&format!("/api/v1/jobs?since={first_id}&limit=1")),
        )
        .await;
        let j: Value = serde_json::from_slice(&body).unwrap();
        let after = j["jobs"].as_array().unwrap();
        assert!(after.len() <= 1);
        if let Some(next) = after.first() {
            assert!(next["id"].as_str().unwrap().parse::<u64>().unwrap() > first_id);
        }

        assert_eq!(get(p.addr, &pem, &req("/nope")).await.0, 404);
        assert_eq!(get(p.addr, &pem, &req("/api/v1/jobs?since=x")).await.0, 400);
        let post = "POST /api/v1/device HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(get(p.addr, &pem, post).await.0, 405);
        assert_eq!(get(p.addr, &pem, "garbage\r\n\r\n").await.0, 400);
        shutdown.cancel();
        fleet.join().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fleetpulse-sim-3d-{}-{}",
            std::process::id(),
            fleetpulse_core::now_millis()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn config_checks() {
        let bad = |c: SimConfig, key: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        bad(
            SimConfig {
                printers_3d: 10,
                https_base_port: 65_530,
                ..SimConfig::default()
            },
            "https_base_port",
        );
        bad(
            SimConfig {
                tls_cert_file: Some("/x.pem".into()),
                ..SimConfig::default()
            },
            "tls_key_file",
        );
        bad(
            SimConfig {
                printers: 0,
                ..SimConfig::default()
            },
            "printers",
        );
        let only_3d = SimConfig {
            printers: 0,
            printers_3d: 1,
            ..SimConfig::default()
        };
        assert!(only_3d.validate().is_ok());
    }

    #[test]
    fn pem_encoding_round_trips() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = pem_of(&der);
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
        assert!(pem.lines().all(|l| l.len() <= 64));
    }
}
