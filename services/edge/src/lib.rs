//! The fleetpulse edge connector: polls printers over SNMP, publishes signed records to Kafka.
//!
//! Why it looks the way it does:
//!
//! - **Printers are untrusted peers.** Their SNMP agents answer late, twice,
//!   truncated, or walk in circles. The [`snmp`] client bounds every exchange
//!   (timeouts, retries, size caps, walk caps, loop detection) and returns
//!   typed errors; each device is polled in its own task with a deadline, so
//!   one broken printer never stalls the thousands beside it.
//! - **Absence is normal.** Most printers implement a subset of the
//!   Printer-MIB. [`mapping`] turns missing tables into empty lists and keeps
//!   the MIB's special values (-1/-2/-3) apart from real numbers, so
//!   "some toner remains" is never reported as 50 %.
//! - **Events from state.** Printers keep alerts as table rows; [`alerts`]
//!   diffs them between polls into opened/cleared events.
//! - **Provenance.** Every record is Avro single-object encoded and signed
//!   with a key derived from the connector's secret ([`publish`]); the
//!   processor rejects what it cannot verify. Garbled device responses go to
//!   the dead-letter topic as evidence instead of being silently dropped.
//! - **Silence is a signal.** A device that does not answer produces no
//!   records; the alerter notices the missing heartbeats.
//!
//! - **IPP too.** Printers with SNMP off still answer IPP; [`ipp`] reads
//!   Get-Printer-Attributes into the same snapshot, so both protocols give
//!   the same records (`protocol = "ipp"` on a device).
//!
//! - **3D printers over HTTPS.** [`http3d`] polls industrial 3D printers'
//!   JSON API (`protocol = "https3d"`) with the certificate pinned or
//!   verified against a CA — never unverified — into `DeviceStatus`
//!   (printheads, build unit) and one `JobRecord` per finished job, without
//!   job or part names.
//!
//! Entry points: [`run`] for the service, [`poll_device`] / [`poll_ipp`] +
//! [`render_text`] for `fleetpulse poll`.

pub mod alerts;
pub mod config;
pub mod device;
pub mod http3d;
pub mod ipp;
pub mod mapping;
mod poller;
pub mod publish;
pub mod report;
pub mod snmp;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use fleetpulse_core::Shutdown;

pub use config::{DeviceConfig, EdgeConfig};
pub use device::{poll_configured, poll_device, DeviceSnapshot, PollError};
pub use http3d::{poll_3d, Https3dClient, Https3dError, Https3dOptions, Snapshot3d, TlsTrust};
pub use ipp::{poll_ipp, IppError, IppOptions, IppTarget};
pub use publish::{PublishError, Publisher};
pub use report::render_text;
pub use snmp::{DeviceTarget, SnmpError, SnmpOptions, SnmpVersion};

/// How long the producer may take to deliver what is queued at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the edge could not run.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The configuration is invalid or the secret cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka producer could not be created.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint: {0}")]
    Metrics(#[source] std::io::Error),
}

impl EdgeError {
    /// Whether restarting with the same configuration may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            EdgeError::Config(_) => false,
            EdgeError::Publish(e) => e.is_retriable(),
            EdgeError::Metrics(_) => true,
        }
    }
}

/// Run the edge connector until `shutdown` is cancelled.
///
/// Polls every configured device each `poll_interval`, publishes the
/// resulting records, and a connector heartbeat each `heartbeat_interval`.
/// On shutdown, in-flight polls get `shutdown_grace` to finish, then the
/// producer is flushed (at most 10 s) and the function returns.
pub async fn run(config: EdgeConfig, shutdown: Shutdown) -> Result<(), EdgeError> {
    use fleetpulse_core::config::Validate;
    config.validate()?;
    let secret =
        fleetpulse_core::config::resolve_secret("connector_secret", &config.connector_secret)?;
    if let Some(addr) = config.metrics_addr {
        fleetpulse_core::telemetry::serve(addr, shutdown.clone())
            .await
            .map_err(EdgeError::Metrics)?;
    }
    let (publisher, ack) = Publisher::new(&config.kafka, &secret, &config.connector_id)?;
    tracing::info!(
        devices = config.devices.len(),
        poll_interval = ?config.poll_interval,
        connector_id = %config.connector_id,
        compression = publisher.compression(),
        "edge connector started"
    );
    let shared = Arc::new(poller::Shared {
        origin: poller::Origin {
            tenant_id: config.tenant_id.clone(),
            connector_id: config.connector_id.clone(),
        },
        publisher: publisher.clone(),
        semaphore: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_polls)),
        snmp: config.snmp.clone(),
        ipp: config.ipp.clone(),
        https3d: http3d::Runtime::new(&config.https3d),
        poll_interval: config.poll_interval,
        shutdown_grace: config.shutdown_grace,
        reachable: config
            .devices
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect(),
    });
    poller::run_tasks(&config, shared, shutdown).await;
    tracing::info!("edge connector stopping: flushing Kafka producer");
    let p = publisher.clone();
    let _ = tokio::task::spawn_blocking(move || p.flush(FLUSH_TIMEOUT)).await;
    drop(publisher);
    ack.join().await;
    tracing::info!("edge connector stopped");
    Ok(())
}
