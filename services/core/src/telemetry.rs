//! Logs, metrics and the `/healthz` + `/metrics` endpoint.
//!
//! Every service logs through `tracing` and counts through `metrics`; the
//! Prometheus recorder renders them on `/metrics`. Pipeline totals that
//! `fleetpulse up` prints in its summary are also kept in [`COUNTERS`], so an
//! internal event bumps its metric and the total in one call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

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
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
}

/// The process-wide counters.
pub static COUNTERS: Counters = Counters {
    events_sent: AtomicU64::new(0),
    rows_written: AtomicU64::new(0),
    alerts_raised: AtomicU64::new(0),
    dead_lettered: AtomicU64::new(0),
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

/// Serve `/healthz` and `/metrics` on `addr` until shutdown.
///
/// A deliberately tiny HTTP/1.1 responder: two GET routes, no keep-alive,
/// requests capped at 8 KiB. Probes and Prometheus need nothing more, and it
/// keeps an HTTP framework out of the edge binary.
pub async fn serve(addr: SocketAddr, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let handle = init_metrics();
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "health and metrics endpoint listening");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((mut sock, _)) = accepted else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf),
                )
                .await
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
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(local)
}
