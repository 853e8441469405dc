//! Industrial 3D printers over HTTPS (`protocol = "https3d"`): a JSON device
//! API (identity, status, build unit, agents, printheads; jobs with parts and
//! per-layer timings — the API the simulator serves, see
//! `fleetpulse_sim::https3d`) mapped to `DeviceStatus` (printheads,
//! build unit, agents as ink supplies), `DeviceHeartbeat` (protocol `http`)
//! and `JobRecord` (kind `print3d`).
//!
//! Why it looks the way it does:
//!
//! - **TLS is verified, always.** Such printers ship self-signed
//!   certificates, and the tempting fix — turn verification off — would let
//!   anyone on the plant network feed the fleet's data. So each device needs
//!   `tls.pin_sha256` (SHA-256 of the leaf certificate DER) or `tls.ca_file`
//!   (WebPKI verification with host name check); there is no third option
//!   ([`tls`]). A refused certificate is a typed [`Https3dError::Tls`]
//!   saying why (pin mismatch, name mismatch, untrusted), at once, not a
//!   timeout.
//! - **The printer is an untrusted peer.** Each request (connect, handshake,
//!   send, read) is bounded by `https3d.timeout`, the body by
//!   `https3d.max_response_bytes`, over the same small HTTP/1.1 client as
//!   IPP; bad JSON is a typed error; text is cut to 255 bytes and lists are
//!   capped.
//! - **Job and part names never leave the connector.** The JSON types do not
//!   even declare them, so they are skipped while parsing; they are never
//!   logged, never in a snapshot, never in a record; `user_name` is `None`.
//! - **Each job is published once, when it is over** (completed, failed,
//!   canceled, aborted). Running jobs are not published: a job record is a
//!   fact about a finished job, and re-publishing a running one every poll
//!   would multiply records with a changing status. The connector remembers
//!   the last published job id per device (in `https3d.state_file` when set,
//!   so a restart neither repeats nor loses jobs; in memory otherwise), asks
//!   the printer only for jobs after it (`?since=`), and stops at the first
//!   job still running so nothing after it is skipped.

mod map;
mod task;
pub mod tls;
mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetpulse_core::config::ConfigError;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::config::{DeviceConfig, Protocol};
use crate::ipp::http;

pub use map::{jobs_to_emit, render_text, Device3d, Job3d, Snapshot3d};
pub(crate) use task::{device_task, Runtime};
pub use tls::{TlsFailure, TlsTrust};

/// Path of the device endpoint, under the base URL.
pub const DEVICE_PATH: &str = "api/v1/device";
/// Path of the jobs endpoint, under the base URL.
pub const JOBS_PATH: &str = "api/v1/jobs";

/// `[https3d]`: timeouts, limits and the job cursor file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Https3dOptions {
    /// Bound on one request: resolve, connect, TLS handshake, send, read.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest response body accepted (a job list with per-layer timings
    /// runs to a few hundred KiB).
    pub max_response_bytes: usize,
    /// Jobs asked for per poll (`limit=`); the rest come on later polls.
    pub max_jobs_per_poll: usize,
    /// Where the last published job id per device is kept across restarts
    /// (a small JSON file, written atomically); in memory only when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
}

impl Default for Https3dOptions {
    fn default() -> Self {
        Https3dOptions {
            timeout: Duration::from_secs(10),
            max_response_bytes: 8 * 1024 * 1024,
            max_jobs_per_poll: 20,
            state_file: None,
        }
    }
}

/// Where a 3D printer's API is: `https://host[:port][/base/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Https3dTarget {
    /// The URL as given.
    pub url: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (443 when omitted).
    pub port: u16,
    /// Base path, starting and ending with `/`.
    pub base: String,
}

impl Https3dTarget {
    /// Parse an `https://` URL; anything else (including `http://`) is refused.
    pub fn parse(url: &str) -> Result<Self, Https3dError> {
        let bad = |reason: &str| Https3dError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = url.trim();
        let (scheme, rest) = trimmed
            .split_once("://")
            .ok_or_else(|| bad("expected https://host[:port]/"))?;
        if !scheme.eq_ignore_ascii_case("https") {
            return Err(bad("scheme must be https:// (plain HTTP is not supported)"));
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("no query or fragment: give the API's base URL"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => 443,
                None => return Err(bad("junk after ]")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse::<u16>().map_err(|_| bad("bad port"))?,
                ),
                None => (authority.to_string(), 443),
            }
        };
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(bad("missing or invalid host"));
        }
        if port == 0 {
            return Err(bad("port 0"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("whitespace in path"));
        }
        let base = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        Ok(Https3dTarget {
            url: trimmed.to_string(),
            host,
            port,
            base,
        })
    }

    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn server_name(&self) -> Result<ServerName<'static>, Https3dError> {
        ServerName::try_from(self.host.clone()).map_err(|_| Https3dError::Url {
            url: self.url.clone(),
            reason: "host is not a valid DNS name or IP address".into(),
        })
    }
}

/// Why a 3D printer poll failed.
#[derive(Debug, thiserror::Error)]
pub enum Https3dError {
    /// The URL is not a usable `https://` URL.
    #[error("bad 3D printer URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The TLS trust configuration is unusable (CA file unreadable, bad pin).
    #[error("TLS trust configuration: {0}")]
    TlsConfig(String),
    /// The host does not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// Host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The TCP connection failed (refused, unreachable).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The printer's certificate was refused (or the handshake failed).
    #[error("TLS handshake with {addr} failed ({kind:?}): {detail}")]
    Tls {
        /// Why, in short.
        kind: TlsFailure,
        /// Address.
        addr: SocketAddr,
        /// rustls' account.
        detail: String,
    },
    /// A request took longer than `https3d.timeout`.
    #[error("no complete response within {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// The connection failed midway.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// The answer is not well-formed HTTP/1.x.
    #[error("bad HTTP response: {0}")]
    Http(String),
    /// The printer answered with an HTTP status other than 200.
    #[error("HTTP status {status} {reason}")]
    HttpStatus {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// The body exceeds `https3d.max_response_bytes`.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body is not the JSON expected.
    #[error("bad JSON from {endpoint}: {reason}")]
    Json {
        /// `device` or `jobs`.
        endpoint: &'static str,
        /// serde's account (line, column, what was expected).
        reason: String,
    },
}

impl Https3dError {
    /// Whether polling again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Https3dError::Url { .. }
            | Https3dError::TlsConfig(_)
            | Https3dError::Http(_)
            | Https3dError::TooLarge { .. }
            | Https3dError::Json { .. } => false,
            Https3dError::Tls { kind, .. } => *kind == TlsFailure::Handshake,
            Https3dError::Resolve { .. }
            | Https3dError::Connect { .. }
            | Https3dError::Timeout { .. }
            | Https3dError::Io(_) => true,
            Https3dError::HttpStatus { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
        }
    }

    /// A short, stable class for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            Https3dError::Url { .. } => "https3d_url",
            Https3dError::TlsConfig(_) => "https3d_tls_config",
            Https3dError::Resolve { .. } => "resolve",
            Https3dError::Connect { .. } => "https3d_connect",
            Https3dError::Tls { kind, .. } => kind.class(),
            Https3dError::Timeout { .. } => "https3d_timeout",
            Https3dError::Io(_) => "https3d_io",
            Https3dError::Http(_) => "https3d_http",
            Https3dError::HttpStatus { .. } => "https3d_http_status",
            Https3dError::TooLarge { .. } => "https3d_too_large",
            Https3dError::Json { .. } => "https3d_json",
        }
    }

    /// Whether the printer did not answer at all (as opposed to answering badly).
    pub fn is_silence(&self) -> bool {
        matches!(
            self,
            Https3dError::Connect { .. } | Https3dError::Timeout { .. }
        )
    }
}

impl From<http::HttpError> for Https3dError {
    fn from(e: http::HttpError) -> Self {
        match e {
            http::HttpError::Io(e) => Https3dError::Io(e),
            http::HttpError::Protocol(r) => Https3dError::Http(r),
            http::HttpError::Status { status, reason } => {
                Https3dError::HttpStatus { status, reason }
            }
            http::HttpError::TooLarge { limit } => Https3dError::TooLarge { limit },
        }
    }
}

/// A 3D printer to poll: its URL and a TLS client that trusts it as configured.
#[derive(Clone)]
pub struct Https3dClient {
    target: Https3dTarget,
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    pinned: bool,
}

impl std::fmt::Debug for Https3dClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https3dClient")
            .field("target", &self.target)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl Https3dClient {
    /// A client for `url` trusting per `trust` (reads the CA file now).
    pub fn new(url: &str, trust: &TlsTrust) -> Result<Self, Https3dError> {
        let target = Https3dTarget::parse(url)?;
        let server_name = target.server_name()?;
        let (config, pinned) = tls::client_config(trust).map_err(Https3dError::TlsConfig)?;
        Ok(Https3dClient {
            target,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            pinned,
        })
    }

    /// The target.
    pub fn target(&self) -> &Https3dTarget {
        &self.target
    }

    /// GET `path` (relative to the base URL) and return the body of a `200`
    /// and the peer; bounded by `opts.timeout`.
    pub async fn get(
        &self,
        path: &str,
        opts: &Https3dOptions,
    ) -> Result<(Vec<u8>, SocketAddr), Https3dError> {
        match tokio::time::timeout(opts.timeout, self.get_inner(path, opts)).await {
            Ok(r) => r,
            Err(_) => Err(Https3dError::Timeout {
                after: opts.timeout,
            }),
        }
    }

    async fn get_inner(
        &self,
        path: &str,
        opts: &Https3dOptions,
    ) -> Result<(Vec<u8>, SocketAddr), Https3dError> {
        let t = &self.target;
        let resolve_err = |reason: String| Https3dError::Resolve {
            host: t.host.clone(),
            reason,
        };
        let peer = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| resolve_err(e.to_string()))?
            .next()
            .ok_or_else(|| resolve_err("no addresses".into()))?;
        let tcp = TcpStream::connect(peer)
            .await
            .map_err(|source| Https3dError::Connect { addr: peer, source })?;
        let _ = tcp.set_nodelay(true);
        let stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| Https3dError::Tls {
                kind: tls::classify(&e, self.pinned),
                addr: peer,
                detail: e.to_string(),
            })?;
        let wire = http::get_request(
            &t.host_header(),
            &format!("{}{path}", t.base),
            "application/json",
        );
        let body = http::exchange(stream, &wire, opts.max_response_bytes).await?;
        Ok((body, peer))
    }
}

fn json<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    body: &[u8],
) -> Result<T, Https3dError> {
    serde_json::from_slice(body).map_err(|e| Https3dError::Json {
        endpoint,
        reason: redact_quoted(&e.to_string()),
    })
}

/// serde quotes the offending value in its messages (`invalid type: string
/// "…"`); a device could put a job name there, so quoted text is dropped.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Percent-encode a query value (job ids are opaque device text).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Poll a 3D printer: the device, then its jobs after `since(device_id)`
/// (the last job published for it). Each request is bounded by `opts.timeout`.
pub async fn poll_3d(
    client: &Https3dClient,
    opts: &Https3dOptions,
    since: impl FnOnce(&str) -> Option<String>,
) -> Result<Snapshot3d, Https3dError> {
    let polled_at = fleetpulse_core::now_millis();
    let started = Instant::now();
    let (body, peer) = client.get(DEVICE_PATH, opts).await?;
    let ip = peer.ip().to_string();
    let device = map::device(json::<wire::Device>("device", &body)?, &ip);
    drop(body);
    let mut path = format!("{JOBS_PATH}?limit={}", opts.max_jobs_per_poll.max(1));
    if let Some(since) = since(&device.device_id) {
        path.push_str("&since=");
        path.push_str(&query_value(&since));
    }
    let (body, _) = client.get(&path, opts).await?;
    let jobs: wire::Jobs = json("jobs", &body)?;
    drop(body);
    let more_jobs = jobs.more || jobs.jobs.len() > opts.max_jobs_per_poll.max(1);
    let jobs = jobs
        .jobs
        .into_iter()
        .take(opts.max_jobs_per_poll.max(1))
        .map(map::job)
        .collect();
    Ok(Snapshot3d {
        url: client.target.url.clone(),
        ip_address: ip,
        polled_at,
        response_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        device,
        jobs,
        more_jobs,
    })
}

/// The base URL of an `https3d` device: `url`, else `https://<address>/`.
pub(crate) fn url_of(d: &DeviceConfig) -> String {
    match &d.url {
        Some(u) => u.clone(),
        None => format!("https://{}/", d.address.trim()),
    }
}

fn bad(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key,
        reason: reason.into(),
    }
}

/// Validate the 3D keys of `devices[i]`; for an `https3d` device, returns
/// its identity for the duplicate check (`https3d host:port/base`).
pub(crate) fn check_device(i: usize, d: &DeviceConfig) -> Result<Option<String>, ConfigError> {
    if d.protocol != Protocol::Https3d {
        if d.url.is_some() {
            return Err(bad(
                format!("devices[{i}].url"),
                "only used with protocol = \"https3d\"",
            ));
        }
        if d.tls.is_some() {
            return Err(bad(
                format!("devices[{i}].tls"),
                "only used with protocol = \"https3d\"",
            ));
        }
        return Ok(None);
    }
    if d.ipp_url.is_some() {
        return Err(bad(
            format!("devices[{i}].ipp_url"),
            "only used with protocol = \"ipp\"",
        ));
    }
    let t = Https3dTarget::parse(&url_of(d))
        .map_err(|e| bad(format!("devices[{i}].url"), e.to_string()))?;
    let trust = d.tls.clone().unwrap_or_default();
    tls::check(&trust).map_err(|(key, reason)| bad(format!("devices[{i}].{key}"), reason))?;
    Ok(Some(format!(
        "https3d {}:{}{}",
        t.host.to_ascii_lowercase(),
        t.port,
        t.base
    )))
}

/// Validate `[https3d]`.
pub(crate) fn check_options(o: &Https3dOptions) -> Result<(), ConfigError> {
    if o.timeout.is_zero() {
        return Err(bad("https3d.timeout".into(), "must be positive"));
    }
    if o.max_response_bytes < 4096 {
        return Err(bad(
            "https3d.max_response_bytes".into(),
            "must be at least 4096",
        ));
    }
    if !(1..=100).contains(&o.max_jobs_per_poll) {
        return Err(bad(
            "https3d.max_jobs_per_poll".into(),
            "must be within 1..=100",
        ));
    }
    Ok(())
}

/// Poll a configured `https3d` device into the generic snapshot
/// (identity, status, agents as supplies; printheads, build unit and jobs
/// are only in [`Snapshot3d`]).
pub(crate) async fn poll_as_snapshot(
    d: &DeviceConfig,
    opts: &Https3dOptions,
) -> Result<crate::device::DeviceSnapshot, Https3dError> {
    use crate::mapping::{DeviceIdSource, Identity, Status};
    let client = Https3dClient::new(&url_of(d), &d.tls.clone().unwrap_or_default())?;
    let s = poll_3d(&client, opts, |_| None).await?;
    let dev = s.device;
    Ok(crate::device::DeviceSnapshot {
        address: d.address.clone(),
        ip_address: s.ip_address,
        polled_at: s.polled_at,
        response_ms: s.response_ms,
        protocol: fleetpulse_core::records::PollProtocol::Http,
        identity: Identity {
            device_id_source: if dev.device_id.starts_with("addr:") {
                DeviceIdSource::Address
            } else {
                DeviceIdSource::Vendor
            },
            serial: (!dev.device_id.starts_with("addr:")).then(|| dev.device_id.clone()),
            device_id: dev.device_id,
            vendor: dev.vendor,
            enterprise: None,
            model: dev.model,
            sys_descr: dev.firmware,
            sys_object_id: None,
            sys_name: dev.hostname,
            sys_contact: None,
            sys_location: dev.location,
            sys_uptime_ticks: dev.uptime_s.map(|u| u.saturating_mul(100)),
            mac_address: dev.mac_address,
            printer_device_index: None,
        },
        status: Status {
            hr_device_status: dev.hr_device_status,
            hr_printer_status: dev.hr_printer_status,
            detected_errors: dev.detected_errors,
            detected_error_state_hex: None,
        },
        supplies: dev.supplies,
        trays: Vec::new(),
        counters: Vec::new(),
        alerts: Vec::new(),
    })
}
