//! Logs, metrics and the `/healthz` + `/metrics` endpoint.
//!
//! Every service logs through `tracing` and counts through `metrics`; the
//! Prometheus recorder renders them on `/metrics`. Pipeline totals that
//! `fleetpulse up` prints in its summary are also kept in [`COUNTERS`], so an
//! internal event bumps its metric and the total in one call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Shutdown;

/// Totals of the pipeline, for progress bars and summaries.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records the edge published and the broker acknowledged.
    pub events_sent: AtomicU64,
    /// Rows the processor wrote to durable Parquet files.
    pub rows_written: AtomicU64,
    /// Maintenance alerts raised.
    pub alerts_raised: AtomicU64,
    /// Records sent to the dead-letter topic (by the edge and the processor).
    pub dead_lettered: AtomicU64,
    /// The processor's share of `dead_lettered`: records the edge published
    /// that the processor rejected. `rows_written + processor_dead_lettered`
    /// catching up with `events_sent` means the processor has handled every
    /// record the edge sent; the edge's own dead letters never reach it.
    pub processor_dead_lettered: AtomicU64,
}

/// The process-wide counters.
pub static COUNTERS: Counters = Counters {
    events_sent: AtomicU64::new(0),
    rows_written: AtomicU64::new(0),
    alerts_raised: AtomicU64::new(0),
    dead_lettered: AtomicU64::new(0),
    processor_dead_lettered: AtomicU64::new(0),
};

static HEALTHY: AtomicBool = AtomicBool::new(true);
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Mark the process healthy or not; `/healthz` answers 503 when not.
pub fn set_healthy(ok: bool) {
    HEALTHY.store(ok, Ordering::Relaxed);
}

/// Add to a total and its metric.
pub fn add(counter: &AtomicU64, metric: &'static str, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(metric).increment(n);
}

/// Install the log subscriber: `FLEETPULSE_LOG` or `RUST_LOG` if set, else `default`
/// (e.g. `"info,rdkafka=warn"`).
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("FLEETPULSE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(true)
        .try_init();
}

/// Install the Prometheus recorder once per process.
pub fn init_metrics() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("a metrics recorder is installed only here, once")
    })
}

/// Connections the metrics endpoint serves at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Time a client gets to send its request, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

fn metrics_accept_failed(error: &std::io::Error) {
    tracing::warn!(%error, "metrics endpoint: accept failed; pausing");
    metrics::counter!("fleetpulse_metrics_accept_errors_total").increment(1);
}

fn metrics_connection_refused() {
    tracing::debug!(
        max = MAX_CONNECTIONS,
        "metrics endpoint: too many connections, closing one"
    );
    metrics::counter!("fleetpulse_metrics_connections_refused_total").increment(1);
}

/// Serve `/healthz` and `/metrics` on `addr` until shutdown.
///
/// A deliberately tiny HTTP/1.1 responder: two GET routes, no keep-alive,
/// requests capped at 8 KiB, 5 s to send the request and 5 s to take the
/// response, at most 64 connections at once (more are closed unanswered).
/// Probes and Prometheus need nothing more, and it keeps an HTTP framework
/// out of the edge binary.
pub async fn serve(addr: SocketAddr, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let handle = init_metrics();
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "health and metrics endpoint listening");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let mut sock = match accepted {
                Ok((sock, _)) => sock,
                Err(e) => {
                    metrics_accept_failed(&e);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics_connection_refused();
                drop(sock);
                continue;
            };
            tokio::spawn(async move {
                let _permit = permit;
                let mut buf = vec![0u8; 8192];
                // A request may arrive in several segments: read until the
                // end of its head (or 8 KiB), so a slow client is neither
                // misread nor reset while it still writes.
                let n = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut sock, &mut buf)).await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/healthz" if HEALTHY.load(Ordering::Relaxed) => {
                        ("200 OK", "text/plain", "ok\n".to_string())
                    }
                    "/healthz" => (
                        "503 Service Unavailable",
                        "text/plain",
                        "unhealthy\n".to_string(),
                    ),
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(IO_TIMEOUT, sock.write_all(resp.as_bytes())).await;
            });
        }
    });
    Ok(local)
}

/// Read into `buf` until it holds `\r\n\r\n`, is full or the peer stops
/// sending; returns the bytes read.
async fn read_head(sock: &mut tokio::net::TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = sock.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    async fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_request_in_pieces_is_read_whole() {
        let shutdown = Shutdown::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), shutdown.clone())
            .await
            .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"/healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200 OK"), "{out:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_unanswered() {
        let shutdown = Shutdown::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), shutdown.clone())
            .await
            .unwrap();
        assert!(get(addr).await.starts_with("HTTP/1.1 200 OK"));
        // Fill every slot with a client that sends nothing.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(addr).await, "", "the 65th connection is refused");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            get(addr).await.starts_with("HTTP/1.1 200 OK"),
            "slots freed"
        );
        shutdown.cancel();
    }
}
