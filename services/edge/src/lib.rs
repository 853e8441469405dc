//! The fleetpulse edge connector: polls printers over SNMP, IPP or HTTPS (3D), publishes signed records to Kafka.
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
//! - **Uplinks fail.** Every record goes through the bounded on-disk
//!   [`buffer`] first and leaves it only when Kafka acknowledged it, so an
//!   outage or a crash costs no usage counters or alerts; the buffer evicts
//!   heartbeats and status samples first when it fills, and replays at a
//!   capped bandwidth when the broker returns.
//! - **Silence is a signal.** A device that does not answer produces no
//!   records; the alerter notices the missing heartbeats. Slow or silent
//!   agents are polled less often (per-device backoff) so an overloaded
//!   printer is not hammered.
//! - **Credentials are per device.** v1/v2c communities or SNMPv3 USM users
//!   (SHA-2 auth, AES privacy), per device or per discovery range; wrong
//!   credentials are reported as such, not as silence.
//! - **Fleets change.** [`discovery`] sweeps configured ranges politely,
//!   keeps only printers, and follows a printer by serial across address
//!   changes and restarts (discovered devices are polled over SNMP).
//! - **IPP too.** Printers with SNMP off still answer IPP; [`ipp`] reads
//!   Get-Printer-Attributes into the same snapshot, so both protocols give
//!   the same records (`protocol = "ipp"` on a device).
//! - **3D printers over HTTPS.** [`http3d`] polls industrial 3D printers'
//!   JSON API (`protocol = "https3d"`) with the certificate pinned or
//!   verified against a CA — never unverified — into `DeviceStatus`
//!   (printheads, build unit) and one `JobRecord` per finished job, without
//!   job or part names; like every record, they go through the [`buffer`].
//!
//! - **Two uplinks, one contract.** [`uplink`]: Kafka (TLS with server
//!   verification by default, SASL/SCRAM, mTLS) or AWS Firehose (signed
//!   envelope lines, only failed entries re-sent); the connector listens on
//!   nothing but its optional loopback metrics port.
//!
//! - **Privacy at source.** [`privacy`] removes or coarsens identifying
//!   device data (sysName, sysContact, sysLocation, IP, MAC) per
//!   `[privacy]` right before any record is encoded; job and user names
//!   are never sent.
//! - **Self-healing.** A [`watchdog`] restarts device tasks stuck in a poll
//!   and turns `/healthz` to 503 when the connector cannot recover alone;
//!   configuration reloads (SIGHUP via [`run_with_reload`], signed objects
//!   on the [`control`] topic) apply without a restart where possible and
//!   are rejected, naming the key, where not ([`reload`]).
//!
//! Entry points: [`run`] (or [`run_with_reload`], [`run_with_buffer`]) for the service, [`poll_device`] / [`poll_ipp`] +
//! [`render_text`] for `fleetpulse poll`; [`poll_configured`] polls a
//! configured device over its protocol.

pub mod alerts;
pub mod buffer;
pub mod config;
pub mod control;
pub mod counters;
pub mod device;
pub mod discovery;
pub mod http3d;
pub mod ipp;
pub mod mapping;
mod poller;
pub mod privacy;
pub mod publish;
pub mod reload;
pub mod report;
mod schedule;
pub mod snmp;
mod supervisor;
pub mod uplink;
pub mod watchdog;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use fleetpulse_core::Shutdown;

pub use buffer::{Buffer, BufferConfig, BufferError};
pub use config::{DeviceConfig, DeviceHeartbeats, EdgeConfig, ScheduleConfig};
pub use device::{poll_configured, poll_device, poll_device_with, DeviceSnapshot, PollError};
pub use http3d::{poll_3d, Https3dClient, Https3dError, Https3dOptions, Snapshot3d, TlsTrust};
pub use ipp::{poll_ipp, IppError, IppOptions, IppTarget};
pub use publish::{PublishError, Publisher, Signer, Uplink};
pub use report::render_text;
pub use snmp::{
    AuthProtocol, DeviceTarget, PrivProtocol, SecurityLevel, SnmpCredentials, SnmpError,
    SnmpOptions, SnmpSession, SnmpVersion,
};

/// How long a discovery sweep may take to stop after shutdown.
const DISCOVERY_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the edge could not run.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The configuration is invalid or the secret cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka producer could not be created.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The store-and-forward buffer could not be opened.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint: {0}")]
    Metrics(#[source] std::io::Error),
    /// The control-topic consumer could not start.
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

impl EdgeError {
    /// Whether restarting with the same configuration may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            EdgeError::Config(_) => false,
            EdgeError::Publish(e) => e.is_retriable(),
            EdgeError::Buffer(e) => e.is_retriable(),
            EdgeError::Metrics(_) => true,
            EdgeError::Control(e) => e.is_retriable(),
        }
    }
}

/// Run the edge connector until `shutdown` is cancelled.
///
/// Opens the buffer (`config.buffer`), then runs as [`run_with_buffer`].
pub async fn run(config: EdgeConfig, shutdown: Shutdown) -> Result<(), EdgeError> {
    run_with_reload(config, None, shutdown).await
}

/// Run the edge connector until `shutdown` is cancelled, applying every
/// configuration sent on `updates` (the CLI sends the re-read file on
/// SIGHUP) as a reload: what can change live is applied, the rest is
/// rejected with a log naming the key (see [`reload`]).
pub async fn run_with_reload(
    config: EdgeConfig,
    updates: Option<tokio::sync::watch::Receiver<EdgeConfig>>,
    shutdown: Shutdown,
) -> Result<(), EdgeError> {
    use fleetpulse_core::config::Validate;
    config.validate()?;
    let bc = config.buffer.clone();
    let buffer = tokio::task::spawn_blocking(move || Buffer::open(bc))
        .await
        .map_err(|e| {
            EdgeError::Buffer(BufferError::Io {
                op: "open",
                dir: config.buffer.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })??;
    run_inner(config, buffer, updates, shutdown).await
}

/// Run the edge connector on an opened buffer until `shutdown` is cancelled
/// (tests keep a handle on the buffer to watch it).
///
/// Polls every configured (and discovered) device each `poll_interval` over
/// its protocol and appends the resulting records (and dead letters for
/// undecodable SNMP responses) to the buffer, a connector heartbeat each
/// `heartbeat_interval`; a forwarder sends the buffer to Kafka. On shutdown,
/// in-flight polls get `shutdown_grace` to finish, then in-flight sends get
/// at most 10 s; what was not acknowledged stays in the buffer for the next start.
pub async fn run_with_buffer(
    config: EdgeConfig,
    buffer: Arc<Buffer>,
    shutdown: Shutdown,
) -> Result<(), EdgeError> {
    run_inner(config, buffer, None, shutdown).await
}

async fn run_inner(
    config: EdgeConfig,
    buffer: Arc<Buffer>,
    updates: Option<tokio::sync::watch::Receiver<EdgeConfig>>,
    shutdown: Shutdown,
) -> Result<(), EdgeError> {
    use fleetpulse_core::config::Validate;
    config.validate()?;
    let secret =
        fleetpulse_core::config::resolve_secret("connector_secret", &config.connector_secret)?;
    if let Some(addr) = config.metrics_addr {
        fleetpulse_core::telemetry::serve(addr, shutdown.clone())
            .await
            .map_err(EdgeError::Metrics)?;
    }
    // Read every SNMPv3 secret now: a missing env var fails at start, naming the key.
    for (i, d) in config.devices.iter().enumerate() {
        if d.protocol != config::Protocol::Snmp {
            continue;
        }
        d.credentials()
            .resolve(&format!("devices[{i}]"), config.snmp.version)?;
    }
    let discovery = if config.discovery.enabled() {
        Some(discovery::Discovery::new(&config.discovery, &config.snmp)?)
    } else {
        None
    };
    let uplink = open_uplink(&config, &secret).await?;
    tracing::info!(
        devices = config.devices.len(),
        discovery = config.discovery.enabled(),
        poll_interval = ?config.poll_interval,
        connector_id = %config.connector_id,
        uplink = uplink.name(),
        buffer_dir = %config.buffer.dir.display(),
        "edge connector started"
    );
    // The forwarder outlives the pollers, so their last records get a chance to go out.
    let forward_stop = Shutdown::new();
    let forwarder_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let alive = watchdog::AliveFlag(forwarder_alive.clone());
    let forwarder = tokio::spawn(publish::forward(
        buffer.clone(),
        uplink,
        forward_stop.clone(),
    ));
    // The watchdog learns when the forwarder ends (returns or panics) before shutdown.
    let forwarder = tokio::spawn(async move {
        let _alive = alive;
        let _ = forwarder.await;
    });
    let syncer = (config.buffer.fsync == buffer::FsyncPolicy::Interval).then(|| {
        tokio::spawn(sync_task(
            buffer.clone(),
            config.buffer.fsync_interval,
            forward_stop.clone(),
        ))
    });
    let shared = Arc::new(supervisor::shared_for(&config, buffer.clone(), None));
    // SIGHUP updates and verified control-topic objects go through one channel.
    let (reload_tx, reload_rx) = tokio::sync::watch::channel(config.clone());
    let control_task = if config.control.enabled {
        Some(control::spawn_consumer(
            &config,
            &secret,
            reload_tx.clone(),
            shutdown.clone(),
        )?)
    } else {
        None
    };
    let relay = updates.map(|mut rx| {
        let tx = reload_tx.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = rx.changed() => match changed {
                        Ok(()) => {
                            let c = rx.borrow_and_update().clone();
                            if tx.send(c).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                }
            }
        })
    });
    drop(reload_tx);
    let (found, discovery_task) = match discovery {
        Some(d) => {
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            let task = tokio::spawn(discovery::run(d, tx, shutdown.clone()));
            (Some(rx), Some(task))
        }
        None => (None, None),
    };
    // Counter readings are saved periodically and once more after the last poll.
    let saver = tokio::spawn(poller::counters_saver(
        shared.counters.clone(),
        config.poll_interval.max(Duration::from_secs(10)),
        config.shutdown_grace,
        shutdown.clone(),
    ));
    supervisor::Supervisor::new(config, shared, shutdown, forwarder_alive)
        .run(found, Some(reload_rx))
        .await;
    let _ = saver.await;
    for t in [control_task, relay].into_iter().flatten() {
        let _ = t.await;
    }
    if let Some(task) = discovery_task {
        // A sweep stops starting probes at shutdown; in-flight ones end within their timeouts.
        let _ = tokio::time::timeout(DISCOVERY_STOP_TIMEOUT, task).await;
    }
    tracing::info!("edge connector stopping: delivering in-flight records");
    forward_stop.cancel();
    let _ = forwarder.await;
    if let Some(s) = syncer {
        let _ = s.await;
    }
    let b = buffer.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.sync()).await {
        tracing::error!(error = %e, "buffer: final fsync failed");
    }
    tracing::info!(
        left_in_buffer = buffer.stats().records,
        "edge connector stopped"
    );
    Ok(())
}

/// The configured uplink (`uplink.kind`), signing with the connector's key.
async fn open_uplink(config: &EdgeConfig, secret: &[u8]) -> Result<Uplink, EdgeError> {
    let signer = Signer::new(secret, &config.connector_id);
    let proxies = uplink::proxy_env();
    match config.uplink.kind {
        uplink::UplinkKind::Kafka => {
            if !proxies.is_empty() {
                tracing::warn!(
                    variables = ?proxies,
                    "proxy variables are set, but the Kafka uplink cannot use an HTTP(S) proxy: librdkafka connects to the brokers over TCP directly; give the connector a TCP egress path to kafka.brokers, or use uplink.kind = \"firehose\""
                );
            }
            let p = Publisher::with_signer(&config.kafka, signer)?;
            tracing::info!(
                compression = p.compression(),
                security_protocol = config
                    .kafka
                    .security_protocol(fleetpulse_core::kafka::TlsDefault::OnUnlessLoopback),
                "Kafka uplink"
            );
            Ok(Uplink::Kafka(p))
        }
        uplink::UplinkKind::Firehose => {
            let f = uplink::FirehoseUplink::new(&config.uplink.firehose, signer).await?;
            tracing::info!(stream = f.stream(), proxy_variables = ?proxies, "Firehose uplink");
            Ok(Uplink::Firehose(Arc::new(f)))
        }
    }
}

/// `fsync = "interval"`: make appends durable every `every`.
async fn sync_task(buffer: Arc<Buffer>, every: Duration, stop: Shutdown) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let b = buffer.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.sync()).await {
            tracing::error!(error = %e, "buffer: periodic fsync failed");
            metrics::counter!("fleetpulse_edge_buffer_errors_total").increment(1);
        }
    }
}
