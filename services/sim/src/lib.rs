//! A simulated printer fleet: one real SNMP agent per printer.
//!
//! Why a simulator and not canned responses: the edge connector has to cope
//! with what real printers do on the wire — GETBULK walks that end in
//! `endOfMibView`, Printer-MIB special values (−2 unknown, −3 some remaining),
//! alert rows that appear and vanish, devices that stop answering, wrong
//! communities, garbage datagrams. So every simulated printer is a genuine
//! SNMPv2c agent (v1 GET/GETNEXT too) on its own UDP port, serving the
//! RFC 1213, RFC 2790 (Host Resources) and RFC 3805 (Printer-MIB) objects
//! that the edge reads, with BER handled by the maintained `rasn-snmp` crate.
//!
//! Why deterministic: a demo or a failing test must be reproducible. Each
//! printer's identity and history come from ChaCha streams keyed by
//! `(seed, index)`, and state advances in whole sim minutes, so the MIB at a
//! sim step is a pure function of `(seed, index, step)` ([`mib_at`]). Wall
//! time only selects the step: `sim time = wall elapsed × acceleration`
//! (default 60, one wall second per sim minute), which makes toner drain,
//! jams and empty trays visible within minutes of a demo.
//!
//! Optionally (`ipp_base_port`) each printer also answers IPP
//! Get-Printer-Attributes on a TCP port, derived from the same MIB at the
//! same step, so the edge can be checked to read the same supply levels over
//! both protocols.
//!
//! Optionally (`printers_3d`) the fleet also has industrial 3D printers
//! (HP Jet Fusion-like) serving a JSON device API over HTTPS with a
//! self-signed certificate: identity, status, build unit, agents,
//! printheads, and jobs with parts and per-layer timings, deterministic per
//! `(seed, index, step)` like the SNMP printers. See [`https3d`] for the API.
//!
//! Entry points: [`run`] for `fleetpulse sim` (serves until shutdown) and
//! [`start`] for embedding (`fleetpulse up`, tests), which returns the bound
//! addresses at once.

mod agent;
mod config;
pub mod https3d;
mod ipp;
mod mib;
mod model;
mod model3d;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use fleetpulse_core::config::{ConfigError, Validate};
use fleetpulse_core::Shutdown;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub use config::{SimConfig, MAX_ACCELERATION, MAX_UDP_PAYLOAD, MIN_SNMP_MESSAGE, SIM_STEP};
pub use mib::{
    Mib, Oid, OidParseError, Value, HR_DEVICE_STATUS, HR_PRINTER_ERROR_STATE, HR_PRINTER_STATUS,
    IF_PHYS_ADDRESS, PRT_ALERT_ENTRY, PRT_GENERAL_SERIAL, PRT_INPUT_ENTRY, PRT_MARKER_LIFE_COUNT,
    PRT_SUPPLIES_ENTRY, SYS_DESCR, SYS_NAME, SYS_OBJECT_ID, SYS_UPTIME,
};

use agent::{Agent, AgentSettings, SimClock};
use model::{Knobs, Printer, Profile};

/// Why the fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid; fix it, a retry will not help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A printer's UDP port (or TCP port, for IPP) could not be bound.
    #[error("printer {index}: cannot bind {addr}: {source}")]
    Bind {
        /// Printer index.
        index: usize,
        /// Address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The 3D printers' TLS certificate could not be made, read or written.
    #[error("3D printers' TLS: {0}")]
    Tls(String),
}

impl SimError {
    /// Whether trying again later may succeed (a port still held by a
    /// previous run is released eventually; a bad config or address is not).
    pub fn is_retriable(&self) -> bool {
        match self {
            SimError::Config(_) | SimError::Tls(_) => false,
            SimError::Bind { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
        }
    }
}

/// One running simulated printer, as a poller needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPrinter {
    /// Where its SNMP agent listens (with `snmp = false`: where it would;
    /// nothing answers there).
    pub addr: SocketAddr,
    /// Community it answers to.
    pub community: String,
    /// prtGeneralSerialNumber.
    pub serial: String,
    /// hrDeviceDescr, e.g. "HP LaserJet Pro M404dn".
    pub model: String,
    /// Where its IPP responder listens (`ipp_base_port` set), e.g. poll
    /// `ipp://{ipp_addr}/ipp/print`.
    pub ipp_addr: Option<SocketAddr>,
}

/// One running simulated 3D printer (`printers_3d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPrinter3d {
    /// Where its HTTPS API listens.
    pub addr: SocketAddr,
    /// Base URL to poll, `https://{addr}/`.
    pub url: String,
    /// Serial number (the edge's device id).
    pub serial: String,
    /// Model, e.g. "HP Jet Fusion 5200".
    pub model: String,
}

/// A started fleet. Agents stop when the shutdown token is cancelled
/// (dropping the `Fleet` does not stop them).
#[derive(Debug)]
pub struct Fleet {
    printers: Vec<SimPrinter>,
    printers_3d: Vec<SimPrinter3d>,
    tls_cert_pem: Option<String>,
    tls_cert_sha256: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// The printers, in index order (printer `i` is `printers()[i]`).
    pub fn printers(&self) -> &[SimPrinter] {
        &self.printers
    }

    /// The 3D printers, in index order.
    pub fn printers_3d(&self) -> &[SimPrinter3d] {
        &self.printers_3d
    }

    /// PEM of the certificate the 3D printers serve (when there are any):
    /// an edge can use it as `tls.ca_file`.
    pub fn tls_cert_pem(&self) -> Option<&str> {
        self.tls_cert_pem.as_deref()
    }

    /// Lower-case hex SHA-256 of that certificate's DER: an edge's
    /// `tls.pin_sha256` (same as `openssl x509 -noout -fingerprint -sha256`).
    pub fn tls_cert_sha256(&self) -> Option<&str> {
        self.tls_cert_sha256.as_deref()
    }

    /// Wait until every agent has stopped (after shutdown).
    pub async fn join(self) {
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "simulated printer task failed");
            }
        }
    }
}

/// Bind every printer's UDP port and spawn its agent; returns at once.
///
/// All ports are bound before any agent starts, so an error leaves nothing running.
pub async fn start(config: SimConfig, shutdown: Shutdown) -> Result<Fleet, SimError> {
    config.validate()?;
    let mut sockets = Vec::with_capacity(config.printers);
    for index in 0..config.printers {
        let port = if config.base_port == 0 {
            0
        } else {
            // Validation keeps base_port + printers within u16.
            config.base_port.saturating_add(index as u16)
        };
        let addr = SocketAddr::new(config.bind, port);
        let bind_err = |source| SimError::Bind {
            index,
            addr,
            source,
        };
        if !config.snmp {
            // SNMP off: nothing listens; `addr` is where it would.
            sockets.push((None, addr));
            continue;
        }
        let socket = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let local = socket.local_addr().map_err(bind_err)?;
        sockets.push((Some(socket), local));
    }
    // IPP responders (optional): bound before anything starts, like the UDP ports.
    let mut ipp_listeners = Vec::new();
    if let Some(base) = config.ipp_base_port {
        for index in 0..config.printers {
            let addr = ipp::addr(config.bind, base, index);
            let bind_err = |source| SimError::Bind {
                index,
                addr,
                source,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_err)?;
            let local = listener.local_addr().map_err(bind_err)?;
            ipp_listeners.push((listener, local));
        }
    }
    let mut ipp_listeners = ipp_listeners.into_iter();
    // 3D printers (optional): their certificate, then their TCP ports.
    let mut https_listeners = Vec::new();
    let tls = if config.printers_3d > 0 {
        Some(https3d::tls(&config).map_err(SimError::Tls)?)
    } else {
        None
    };
    for index in 0..config.printers_3d {
        let addr = https3d::addr(config.bind, config.https_base_port, index);
        let bind_err = |source| SimError::Bind {
            index,
            addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        https_listeners.push((listener, local));
    }

    let knobs = Knobs::from_config(&config);
    let settings = Arc::new(AgentSettings {
        community: config.community.as_bytes().to_vec(),
        max_response_bytes: config.max_response_bytes,
        malformed_log_interval: config.malformed_log_interval,
    });
    let clock = Arc::new(SimClock::new(config.acceleration));
    let mut printers = Vec::with_capacity(sockets.len());
    let mut tasks = Vec::with_capacity(sockets.len());
    for (index, (socket, addr)) in sockets.into_iter().enumerate() {
        let printer = Printer::new(config.seed, index, knobs.clone());
        let ipp_addr = match ipp_listeners.next() {
            Some((listener, local)) => {
                // Its own copy of the printer: the state is a pure function
                // of (seed, index, step), so both protocols agree per step.
                tasks.push(tokio::spawn(ipp::serve(
                    listener,
                    printer.clone(),
                    clock.clone(),
                    index,
                    shutdown.clone(),
                )));
                Some(local)
            }
            None => None,
        };
        printers.push(SimPrinter {
            addr,
            community: config.community.clone(),
            serial: printer.profile.serial.clone(),
            model: printer.profile.model.clone(),
            ipp_addr,
        });
        tracing::debug!(index, %addr, serial = %printer.profile.serial, "simulated printer bound");
        if let Some(socket) = socket {
            let agent = Agent::new(index, printer, settings.clone());
            tasks.push(tokio::spawn(agent.serve(
                socket,
                clock.clone(),
                shutdown.clone(),
            )));
        }
    }
    let mut printers_3d = Vec::with_capacity(https_listeners.len());
    if let Some(tls) = &tls {
        // Dates in the 3D API: sim seconds after the fleet start (whole minute).
        let origin_ms = fleetpulse_core::now_millis() / 60_000 * 60_000;
        for (index, (listener, addr)) in https_listeners.into_iter().enumerate() {
            let printer = model3d::Printer3d::new(config.seed, index);
            printers_3d.push(SimPrinter3d {
                addr,
                url: format!("https://{addr}/"),
                serial: printer.profile.serial.clone(),
                model: printer.profile.model.name.to_string(),
            });
            tasks.push(tokio::spawn(https3d::serve(
                listener,
                printer,
                clock.clone(),
                origin_ms,
                tls.acceptor.clone(),
                index,
                shutdown.clone(),
            )));
        }
    }
    metrics::gauge!("sim_printers").set(printers.len() as f64);
    metrics::gauge!("sim_printers_3d").set(printers_3d.len() as f64);
    let tls_cert_sha256 = tls.as_ref().map(|t| {
        use sha2::Digest;
        sha2::Sha256::digest(&t.cert_der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    Ok(Fleet {
        printers,
        printers_3d,
        tls_cert_pem: tls.map(|t| t.cert_pem),
        tls_cert_sha256,
        tasks,
    })
}

/// Run the fleet until `shutdown` is cancelled.
pub async fn run(config: SimConfig, shutdown: Shutdown) -> Result<(), SimError> {
    let (seed, acceleration) = (config.seed, config.acceleration);
    let fleet = start(config, shutdown.clone()).await?;
    for (index, p) in fleet.printers().iter().enumerate() {
        tracing::info!(index, addr = %p.addr, serial = %p.serial, model = %p.model, "simulated printer listening");
    }
    for (index, p) in fleet.printers_3d().iter().enumerate() {
        tracing::info!(index, url = %p.url, serial = %p.serial, model = %p.model, "simulated 3D printer listening");
    }
    if let Some(pin) = fleet.tls_cert_sha256() {
        tracing::info!(
            pin_sha256 = pin,
            "simulated 3D printers' certificate (pin it, or use tls_cert_out as the CA)"
        );
    }
    tracing::info!(
        printers = fleet.printers().len(),
        seed,
        acceleration,
        "simulated fleet running"
    );
    shutdown.cancelled().await;
    fleet.join().await;
    tracing::info!("simulated fleet stopped");
    Ok(())
}

/// prtGeneralSerialNumber of printer `index` in fleet `seed` (unique per index).
pub fn serial_for(seed: u64, index: usize) -> String {
    Profile::new(seed, index).serial
}

/// hrDeviceDescr (model name) of printer `index` in fleet `seed`.
pub fn model_for(seed: u64, index: usize) -> String {
    Profile::new(seed, index).model
}

/// The full MIB of printer `index` in fleet `seed` at sim step `step`
/// (one step = [`SIM_STEP`]), with default behaviour knobs and sysUpTime at
/// the start of the step. No network involved.
pub fn mib_at(seed: u64, index: usize, step: u64) -> BTreeMap<Oid, Value> {
    snapshot_at(seed, index, step).into_values()
}

/// Pages printer `index` of a fleet configured as `config` prints from sim
/// step `from` to sim step `to` (its `prtMarkerLifeCount` difference; one
/// step = [`SIM_STEP`]). No network involved.
pub fn pages_printed(config: &SimConfig, index: usize, from: u64, to: u64) -> u64 {
    let mut printer = Printer::new(config.seed, index, Knobs::from_config(config));
    printer.advance_to(from);
    let before = printer.state.life_count;
    printer.advance_to(to.max(from));
    u64::from(printer.state.life_count.wrapping_sub(before))
}

/// Serial number of 3D printer `index` in fleet `seed` (unique per index).
pub fn serial_3d_for(seed: u64, index: usize) -> String {
    model3d::Profile3d::new(seed, index).serial
}

/// Whether printer `index` of fleet `seed` is silent (does not answer) at
/// sim step `step`, with default behaviour knobs.
pub fn silent_at(seed: u64, index: usize, step: u64) -> bool {
    let mut printer = Printer::new(seed, index, Knobs::default());
    printer.advance_to(step);
    printer.state.is_silent()
}

fn snapshot_at(seed: u64, index: usize, step: u64) -> Mib {
    let mut printer = Printer::new(seed, index, Knobs::default());
    printer.advance_to(step);
    mib::build(&printer, printer.state.uptime_at_step())
}

/// What the simulated agent made of one datagram: the reply bytes, or why it
/// stays silent. Fuzzing support; not a stable API.
#[doc(hidden)]
pub fn agent_handle_unguarded(datagram: &[u8]) -> Result<Vec<u8>, String> {
    use std::cell::RefCell;
    thread_local! {
        // Printer 0 of the default fleet at sim time 0 (never silent at step
        // 0); the MIB is built once and reused, as the agent's cache does.
        static AGENT: RefCell<agent::Agent> = RefCell::new({
            let config = SimConfig::default();
            let settings = Arc::new(agent::AgentSettings {
                community: config.community.as_bytes().to_vec(),
                max_response_bytes: config.max_response_bytes,
                malformed_log_interval: config.malformed_log_interval,
            });
            let printer = model::Printer::new(config.seed, 0, model::Knobs::from_config(&config));
            agent::Agent::new(0, printer, settings)
        });
    }
    AGENT.with(|a| match a.borrow_mut().handle_unguarded(datagram, 0) {
        agent::Handled::Reply(bytes) => Ok(bytes),
        other => Err(format!("{other:?}")),
    })
}
