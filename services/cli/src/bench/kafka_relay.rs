//! A byte-counting TCP relay in front of a one-broker Kafka cluster.
//!
//! The edge's producer is pointed at the relay. Kafka clients learn broker
//! addresses from Metadata responses and then connect there directly, which
//! would bypass the relay; so the relay rewrites the broker's port in
//! Metadata (and FindCoordinator) responses to its own. The rewrite swaps
//! four bytes for four, so frame lengths never change. Every frame is counted
//! by API key and direction: what leaves the site (requests) and what comes
//! back (responses), Kafka protocol bytes exactly as on the wire (plaintext;
//! TCP/IP headers and TLS not included).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use fleetpulse_core::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Largest frame relayed (a produce request is far smaller).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Kafka API keys whose responses carry broker addresses.
const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;

/// Bytes of one API key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ApiBytes {
    pub(crate) requests: u64,
    /// Client → broker (leaves the site), length prefix included.
    pub(crate) up: u64,
    /// Broker → client.
    pub(crate) down: u64,
}

#[derive(Debug, Default)]
struct Counters {
    by_api: BTreeMap<i16, ApiBytes>,
    connections: u64,
    metadata_responses: u64,
    rewrites: u64,
}

/// A running relay.
#[derive(Debug, Clone)]
pub(crate) struct KafkaRelay {
    addr: SocketAddr,
    counters: Arc<Mutex<Counters>>,
}

/// A snapshot of what crossed the relay.
#[derive(Debug, Clone, Default)]
pub(crate) struct RelayTotals {
    pub(crate) by_api: BTreeMap<i16, ApiBytes>,
    pub(crate) connections: u64,
    pub(crate) metadata_responses: u64,
    pub(crate) rewrites: u64,
}

impl RelayTotals {
    pub(crate) fn up(&self) -> u64 {
        self.by_api.values().map(|a| a.up).sum()
    }
    pub(crate) fn down(&self) -> u64 {
        self.by_api.values().map(|a| a.down).sum()
    }
}

/// Name of a Kafka API key.
pub(crate) fn api_name(key: i16) -> String {
    match key {
        0 => "Produce".into(),
        3 => "Metadata".into(),
        10 => "FindCoordinator".into(),
        18 => "ApiVersions".into(),
        22 => "InitProducerId".into(),
        71 => "GetTelemetrySubscriptions".into(),
        72 => "PushTelemetry".into(),
        k => format!("api {k}"),
    }
}

impl KafkaRelay {
    /// Listen on 127.0.0.1 and relay every connection to `broker` (`host:port`).
    pub(crate) async fn start(broker: &str, shutdown: Shutdown) -> anyhow::Result<KafkaRelay> {
        let (host, port) = broker
            .rsplit_once(':')
            .with_context(|| format!("broker address {broker:?} has no port"))?;
        let port: u16 = port.parse().context("broker port")?;
        let upstream: SocketAddr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .with_context(|| format!("cannot resolve {broker}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // The broker's advertised host followed by its port, as in a Metadata response.
        let mut pattern = host.as_bytes().to_vec();
        pattern.extend_from_slice(&i32::from(port).to_be_bytes());
        let rewrite = Arc::new(Rewrite {
            pattern,
            port_len: 4,
            replacement: i32::from(addr.port()).to_be_bytes(),
        });
        let counters = Arc::new(Mutex::new(Counters::default()));
        let c = counters.clone();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => match a {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                if let Ok(mut c) = c.lock() {
                    c.connections += 1;
                }
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let inflight = Arc::new(Mutex::new(HashMap::new()));
                tokio::spawn(pump_requests(
                    cr,
                    sw,
                    inflight.clone(),
                    c.clone(),
                    shutdown.clone(),
                ));
                tokio::spawn(pump_responses(
                    sr,
                    cw,
                    inflight,
                    c.clone(),
                    rewrite.clone(),
                    shutdown.clone(),
                ));
            }
        });
        Ok(KafkaRelay { addr, counters })
    }

    /// The relay's `host:port`, to use as bootstrap servers.
    pub(crate) fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn totals(&self) -> RelayTotals {
        self.counters
            .lock()
            .map(|c| RelayTotals {
                by_api: c.by_api.clone(),
                connections: c.connections,
                metadata_responses: c.metadata_responses,
                rewrites: c.rewrites,
            })
            .unwrap_or_default()
    }
}

struct Rewrite {
    pattern: Vec<u8>,
    port_len: usize,
    replacement: [u8; 4],
}

impl Rewrite {
    /// Replace the port after every occurrence of host+port; returns how many.
    fn apply(&self, frame: &mut [u8]) -> u64 {
        let n = self.pattern.len();
        let mut count = 0;
        let mut i = 0;
        while i + n <= frame.len() {
            if frame[i..i + n] == self.pattern[..] {
                let at = i + n - self.port_len;
                frame[at..at + 4].copy_from_slice(&self.replacement);
                count += 1;
                i += n;
            } else {
                i += 1;
            }
        }
        count
    }
}

/// Read one length-prefixed frame (None at a clean end of stream).
async fn read_frame(r: &mut OwnedReadHalf) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = usize::try_from(i32::from_be_bytes(len).max(0)).unwrap_or(0);
    if n > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {n} bytes")));
    }
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&len);
    r.read_exact(&mut frame[4..]).await?;
    Ok(Some(frame))
}

type Inflight = Arc<Mutex<HashMap<i32, i16>>>;

async fn pump_requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    inflight: Inflight,
    counters: Arc<Mutex<Counters>>,
    shutdown: Shutdown,
) {
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = read_frame(&mut from) => match f {
                Ok(Some(f)) => f,
                _ => return,
            },
        };
        // Request header: api_key i16, api_version i16, correlation_id i32.
        if frame.len() >= 12 {
            let api = i16::from_be_bytes([frame[4], frame[5]]);
            let corr = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
            if let Ok(mut m) = inflight.lock() {
                m.insert(corr, api);
            }
            if let Ok(mut c) = counters.lock() {
                let a = c.by_api.entry(api).or_default();
                a.requests += 1;
                a.up += frame.len() as u64;
            }
        }
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
}

async fn pump_responses(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    inflight: Inflight,
    counters: Arc<Mutex<Counters>>,
    rewrite: Arc<Rewrite>,
    shutdown: Shutdown,
) {
    loop {
        let mut frame = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = read_frame(&mut from) => match f {
                Ok(Some(f)) => f,
                _ => return,
            },
        };
        if frame.len() >= 8 {
            let corr = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let api = inflight
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&corr))
                .unwrap_or(-1);
            let rewrites = if api == METADATA || api == FIND_COORDINATOR {
                rewrite.apply(&mut frame[8..])
            } else {
                0
            };
            if let Ok(mut c) = counters.lock() {
                c.by_api.entry(api).or_default().down += frame.len() as u64;
                if api == METADATA {
                    c.metadata_responses += 1;
                }
                c.rewrites += rewrites;
            }
        }
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_swaps_only_the_port() {
        let mut pattern = b"127.0.0.1".to_vec();
        pattern.extend_from_slice(&40_000i32.to_be_bytes());
        let r = Rewrite {
            pattern: pattern.clone(),
            port_len: 4,
            replacement: 50_000i32.to_be_bytes(),
        };
        let mut frame = vec![0, 1, 0, 9];
        frame.extend_from_slice(&pattern);
        frame.extend_from_slice(&[7, 7]);
        let len = frame.len();
        assert_eq!(r.apply(&mut frame), 1);
        assert_eq!(frame.len(), len);
        assert_eq!(&frame[4..13], b"127.0.0.1");
        assert_eq!(&frame[13..17], &50_000i32.to_be_bytes());
        assert_eq!(r.apply(&mut frame), 0);
    }
}
