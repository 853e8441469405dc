//! IPP polling: Get-Printer-Attributes (RFC 8011 §4.2.5) over HTTP, mapped
//! to the same [`DeviceSnapshot`] (and so the same records) as SNMP.
//!
//! Why IPP next to SNMP: many current printers (IPP Everywhere, AirPrint)
//! ship with SNMP off but always answer IPP, and PWG 5100.13 `printer-supply`
//! carries the Printer-MIB supply columns verbatim (`level`, `maxcapacity`,
//! `type`, `unit`, with the same -1/-2/-3 special values). So a supply level
//! read over IPP is the same number as over SNMP, and the percentage is
//! computed by the same function ([`crate::mapping::percent_of`]).
//!
//! Like the SNMP client, this treats the printer as a hostile peer: one
//! request per poll, the whole exchange (connect, send, read) bounded by
//! `timeout`, the response capped at `max_response_bytes`, and the IPP
//! decoder ([`codec`]) bounds-checked with caps on attributes, values and
//! collection depth. Every failure is a typed [`IppError`].
//!
//! `ipps://` (IPP over TLS) is not supported yet: it would bring a TLS stack
//! into the edge for a first version; such URLs are rejected with a clear
//! error at configuration time.
//!
//! Device id: the serial from `printer-device-id` (IEEE 1284 `SN:`, `SERN:`
//! or `SERIALNUMBER:`), else `printer-uuid` (`urn:uuid:…`, stable per
//! printer), else `addr:<ip>` like SNMP.

pub mod codec;
pub(crate) mod http;
pub mod map;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::device::DeviceSnapshot;
use codec::{tag, Attribute, Group, Message, Value};

/// Default IPP port.
pub const DEFAULT_PORT: u16 = 631;

/// The printer attributes asked for in Get-Printer-Attributes.
pub const REQUESTED_ATTRIBUTES: &[&str] = &[
    "printer-state",
    "printer-state-reasons",
    "printer-state-message",
    "printer-supply",
    "printer-supply-description",
    "marker-names",
    "marker-levels",
    "marker-high-levels",
    "marker-low-levels",
    "marker-types",
    "marker-colors",
    "printer-alert",
    "printer-alert-description",
    "printer-make-and-model",
    "printer-device-id",
    "printer-uuid",
    "printer-firmware-string-version",
    "printer-info",
    "printer-location",
    "printer-up-time",
];

/// Where a printer's IPP service is: an `ipp://host[:port]/path` URL
/// (`http://` is accepted as a synonym; port 631 when omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IppTarget {
    /// The URL as given (also sent as `printer-uri`).
    pub url: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Resource path, starting with `/`.
    pub path: String,
}

impl IppTarget {
    /// Parse an `ipp://` URL; `ipps://` and other schemes are refused.
    pub fn parse(url: &str) -> Result<Self, IppError> {
        let bad = |reason: &str| IppError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected ipp://host[:port]/path"))?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "ipp" => DEFAULT_PORT,
            "http" => 80,
            "ipps" | "https" => {
                return Err(bad(
                    "IPP over TLS (ipps://) is not supported yet; use ipp://",
                ))
            }
            _ => return Err(bad("scheme must be ipp://")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('/') {
            path.split('#').next().unwrap_or("/").to_string()
        } else {
            format!("/{}", path.split('#').next().unwrap_or_default())
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ]")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse::<u16>().map_err(|_| bad("bad port"))?,
                ),
                None => (authority.to_string(), default_port),
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
        Ok(IppTarget {
            url: url.to_string(),
            host,
            port,
            path,
        })
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for IppTarget {
    type Err = IppError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IppTarget::parse(s)
    }
}

/// IPP timeouts and limits (`[ipp]` in the edge configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IppOptions {
    /// Bound on one whole poll: resolve, connect, send, read the response.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest HTTP response body accepted.
    pub max_response_bytes: usize,
}

impl Default for IppOptions {
    fn default() -> Self {
        IppOptions {
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// Why an IPP poll failed.
#[derive(Debug, thiserror::Error)]
pub enum IppError {
    /// The URL is not a usable `ipp://` URL.
    #[error("bad IPP URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
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
    /// The whole exchange took longer than `ipp.timeout`.
    #[error("no complete IPP response within {after:?}")]
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
    /// The server answered with an HTTP status other than 200.
    #[error("HTTP status {status} {reason}")]
    HttpStatus {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// The response exceeds `ipp.max_response_bytes`.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body is not a valid IPP message (or breaks a decoder limit).
    #[error("undecodable IPP response: {0}")]
    Decode(#[from] codec::DecodeError),
    /// The printer answered with an IPP error status.
    #[error("IPP status {code:#06x} {name}")]
    Status {
        /// status-code.
        code: u16,
        /// Its RFC 8011 name.
        name: &'static str,
    },
}

impl IppError {
    /// Whether polling again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            IppError::Url { .. }
            | IppError::Http(_)
            | IppError::TooLarge { .. }
            | IppError::Decode(_) => false,
            IppError::Resolve { .. }
            | IppError::Connect { .. }
            | IppError::Timeout { .. }
            | IppError::Io(_) => true,
            IppError::HttpStatus { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            // server-error-* except version-not-supported / operation-not-supported.
            IppError::Status { code, .. } => {
                (0x0500..0x0600).contains(code) && *code != 0x0501 && *code != 0x0503
            }
        }
    }

    /// A short, stable class for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            IppError::Url { .. } => "ipp_url",
            IppError::Resolve { .. } => "resolve",
            IppError::Connect { .. } => "ipp_connect",
            IppError::Timeout { .. } => "ipp_timeout",
            IppError::Io(_) => "ipp_io",
            IppError::Http(_) => "ipp_http",
            IppError::HttpStatus { .. } => "ipp_http_status",
            IppError::TooLarge { .. } => "ipp_too_large",
            IppError::Decode(_) => "ipp_decode",
            IppError::Status { .. } => "ipp_status",
        }
    }

    /// Whether the printer did not answer at all (as opposed to answering badly).
    pub fn is_silence(&self) -> bool {
        matches!(self, IppError::Connect { .. } | IppError::Timeout { .. })
    }
}

impl From<http::HttpError> for IppError {
    fn from(e: http::HttpError) -> Self {
        match e {
            http::HttpError::Io(e) => IppError::Io(e),
            http::HttpError::Protocol(r) => IppError::Http(r),
            http::HttpError::Status { status, reason } => IppError::HttpStatus { status, reason },
            http::HttpError::TooLarge { limit } => IppError::TooLarge { limit },
        }
    }
}

/// The Get-Printer-Attributes request for `target`.
pub fn request(target: &IppTarget, request_id: i32) -> Message {
    let s = |t: u8, v: &str| Value::Str(t, v.to_string());
    Message {
        version: (1, 1),
        code: codec::OP_GET_PRINTER_ATTRIBUTES,
        request_id,
        groups: vec![Group {
            tag: tag::OPERATION,
            attributes: vec![
                Attribute::new("attributes-charset", vec![s(tag::CHARSET, "utf-8")]),
                Attribute::new(
                    "attributes-natural-language",
                    vec![s(tag::NATURAL_LANGUAGE, "en")],
                ),
                Attribute::new("printer-uri", vec![s(tag::URI, &target.url)]),
                Attribute::new("requesting-user-name", vec![s(tag::NAME, "fleetpulse")]),
                Attribute::new(
                    "requested-attributes",
                    REQUESTED_ATTRIBUTES
                        .iter()
                        .map(|a| s(tag::KEYWORD, a))
                        .collect(),
                ),
            ],
        }],
    }
}

/// Ask the printer for its attributes; returns the decoded response and the peer.
pub async fn get_printer_attributes(
    target: &IppTarget,
    opts: &IppOptions,
) -> Result<(Message, SocketAddr), IppError> {
    match tokio::time::timeout(opts.timeout, exchange(target, opts)).await {
        Ok(r) => r,
        Err(_) => Err(IppError::Timeout {
            after: opts.timeout,
        }),
    }
}

async fn exchange(
    target: &IppTarget,
    opts: &IppOptions,
) -> Result<(Message, SocketAddr), IppError> {
    let resolve_err = |reason: String| IppError::Resolve {
        host: target.host.clone(),
        reason,
    };
    let peer = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| resolve_err(e.to_string()))?
        .next()
        .ok_or_else(|| resolve_err("no addresses".into()))?;
    let stream = TcpStream::connect(peer)
        .await
        .map_err(|source| IppError::Connect { addr: peer, source })?;
    let _ = stream.set_nodelay(true);
    let request_id = 1;
    let body = codec::encode(&request(target, request_id)).map_err(|e| IppError::Url {
        url: target.url.clone(),
        reason: e.to_string(),
    })?;
    let wire = http::request(&target.host_header(), &target.path, &body);
    let response = http::exchange(stream, &wire, opts.max_response_bytes).await?;
    let msg = codec::decode(&response, codec::Limits::default())?;
    if msg.request_id != request_id {
        return Err(IppError::Decode(codec::DecodeError::Malformed {
            offset: 4,
            reason: format!("request-id {} does not match {request_id}", msg.request_id),
        }));
    }
    if msg.code >= 0x0100 {
        return Err(IppError::Status {
            code: msg.code,
            name: codec::status_name(msg.code),
        });
    }
    Ok((msg, peer))
}

/// Poll one printer over IPP into the same snapshot an SNMP poll gives.
///
/// Bounded by `opts.timeout` overall, whatever the printer does.
pub async fn poll_ipp(target: &IppTarget, opts: &IppOptions) -> Result<DeviceSnapshot, IppError> {
    let polled_at = fleetpulse_core::now_millis();
    let started = Instant::now();
    let (msg, peer) = get_printer_attributes(target, opts).await?;
    let response_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    Ok(map::snapshot(
        &target.url,
        &peer.ip().to_string(),
        polled_at,
        response_ms,
        &msg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = IppTarget::parse("ipp://127.0.0.1:8631/ipp/print").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8631, "/ipp/print")
        );
        let t = IppTarget::parse("ipp://printer.local").unwrap();
        assert_eq!((t.port, t.path.as_str()), (631, "/"));
        let t = IppTarget::parse("ipp://[fe80::1]:6310/ipp").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fe80::1", 6310));
        assert_eq!(t.host_header(), "[fe80::1]:6310");
        let t = IppTarget::parse("http://p:80/ipp/print").unwrap();
        assert_eq!(t.port, 80);
        for bad in [
            "ipps://p/ipp",
            "snmp://p",
            "p:631",
            "ipp://:631/x",
            "ipp://p:99999/x",
            "ipp://u:pw@p/x",
            "ipp://p/a b",
            "ipp://[::1/x",
        ] {
            let e = IppTarget::parse(bad).unwrap_err();
            assert!(matches!(e, IppError::Url { .. }), "{bad}: {e}");
            assert!(!e.is_retriable());
        }
        let e = IppTarget::parse("ipps://p/ipp").unwrap_err().to_string();
        assert!(e.contains("TLS"), "{e}");
    }

    #[test]
    fn request_round_trips() {
        let t = IppTarget::parse("ipp://h/ipp/print").unwrap();
        let m = request(&t, 7);
        let bytes = codec::encode(&m).unwrap();
        assert_eq!(&bytes[..8], &[1, 1, 0, 0x0B, 0, 0, 0, 7]);
        let back = codec::decode(&bytes, codec::Limits::default()).unwrap();
        assert_eq!(back, m);
        let ra = back
            .attribute(tag::OPERATION, "requested-attributes")
            .unwrap();
        assert_eq!(ra.values.len(), REQUESTED_ATTRIBUTES.len());
    }

    #[test]
    fn records_carry_ipp_and_alerts_diff_like_snmp() {
        use crate::alerts::AlertTracker;
        use crate::poller::{records_of, Origin};
        use fleetpulse_core::records::{AlertTransition, PollProtocol};
        let reply = |alerts: &[&str]| Message {
            version: (2, 0),
            code: 0,
            request_id: 1,
            groups: vec![Group {
                tag: tag::PRINTER,
                attributes: vec![
                    Attribute::new(
                        "printer-supply",
                        vec![Value::OctetString(
                            b"index=1;type=toner;unit=percent;maxcapacity=100;level=9;".to_vec(),
                        )],
                    ),
                    Attribute::new(
                        "printer-alert",
                        alerts
                            .iter()
                            .map(|a| Value::OctetString(a.as_bytes().to_vec()))
                            .collect(),
                    ),
                ],
            }],
        };
        let origin = Origin {
            tenant_id: "t".into(),
            connector_id: "c".into(),
        };
        let mut tracker = AlertTracker::new();
        let jam = "index=1;severity=critical;group=mediaPath;code=jam";
        let low = "index=2;severity=warning;group=markerSupplies;code=markerTonerAlmostEmpty";
        let snap = map::snapshot("ipp://p/", "10.0.0.1", 5, 1, &reply(&[jam, low]));
        let r = records_of(&origin, &snap, &mut tracker);
        assert_eq!(r.heartbeat.protocol, PollProtocol::Ipp);
        assert_eq!(r.status.supplies[0].percent, Some(9.0));
        assert_eq!(r.alerts.len(), 2);
        assert!(r
            .alerts
            .iter()
            .all(|a| a.transition == AlertTransition::Opened));
        // Second poll: the jam is gone, the toner alert stays.
        let snap = map::snapshot("ipp://p/", "10.0.0.1", 6, 1, &reply(&[low]));
        let r = records_of(&origin, &snap, &mut tracker);
        assert_eq!(r.alerts.len(), 1);
        assert_eq!(r.alerts[0].transition, AlertTransition::Cleared);
        assert_eq!(
            (r.alerts[0].code.as_str(), r.alerts[0].code_raw),
            ("jam", 8)
        );
    }
}
