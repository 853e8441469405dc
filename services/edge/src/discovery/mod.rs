//! Network discovery: find printers in configured addresses, ranges and
//! CIDR blocks, and keep them across restarts.
//!
//! Why it looks the way it does:
//!
//! - **Polite.** Probes are spread at `probes_per_second` with at most
//!   `max_concurrency` in flight, each a single small GET first; a sweep
//!   repeats every `interval` (default 1 h). Target blocks are capped at a
//!   /16 so a typo cannot start a sweep of the Internet.
//! - **Printers only.** An agent without the Printer-MIB (prtGeneralTable /
//!   prtMarkerSuppliesTable) is skipped with its reason logged once per
//!   address; silent addresses are counted at debug level.
//! - **Identity is the serial.** Found devices are stored by serial number
//!   (`state_file`, replaced atomically). A serial showing up at a new
//!   address keeps its identity and history; the poller moves to the new
//!   address. On restart the stored devices are polled at once, before the
//!   first sweep finishes.
//! - **IPP too.** An address where SNMP is silent gets Get-Printer-Attributes
//!   on `ipp://<ip>:<ipp_port>/ipp/print` (then `/ipp` after a client
//!   error; at most two requests), under the same rate limit and
//!   concurrency. A host answering with printer attributes is an IPP device
//!   (`protocol = ipp`, its `ipp_url`), keyed like the IPP driver keys it
//!   (`printer-device-id` serial, else `printer-uuid`). SNMP is preferred:
//!   IPP is only asked when SNMP is silent, an IPP find never replaces a
//!   printer SNMP found in the same sweep, and a printer stored as IPP
//!   turns back into an SNMP device at the first sweep where its SNMP
//!   answers (SNMP gives counters, trays and alerts IPP does not).
//!   `ipp_port = 0` turns IPP probing off.

mod probe;
mod store;
mod targets;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_core::config::ConfigError;
use fleetpulse_core::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::snmp::{
    split_host_port, AuthProtocol, DeviceTarget, PrivProtocol, SecurityLevel, SnmpCredentials,
    SnmpOptions, SnmpVersion,
};

pub use probe::{ProbeOutcome, IPP_CREDENTIALS};
pub use store::{DeviceStore, KnownDevice, Upsert};
pub use targets::{TargetRange, MAX_TARGET_ADDRESSES};

use probe::Candidate;

/// Credentials reference of the built-in fallback (v2c, community `public`).
pub const DEFAULT_CREDENTIALS: &str = "default";

/// `[discovery]`: what to sweep and how politely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// IPv4 addresses (`10.0.0.5`), inclusive ranges (`10.0.0.10-10.0.0.40`)
    /// and CIDR blocks (`192.168.1.0/24`), each at most a /16. Empty: discovery off.
    pub targets: Vec<String>,
    /// Time between two sweeps.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Probes in flight at once, at most.
    pub max_concurrency: usize,
    /// Probes started per second, at most.
    pub probes_per_second: u32,
    /// Where found devices are kept across restarts.
    pub state_file: PathBuf,
    /// UDP port probed (and polled) on every target address.
    pub port: u16,
    /// TCP port of the IPP probe (`ipp://<ip>:<ipp_port>/ipp/print`) for
    /// addresses where SNMP is silent; `0` turns IPP probing off.
    pub ipp_port: u16,
    /// Credentials per range, tried in order for addresses inside `range`;
    /// addresses no entry covers are probed with v2c community `public`.
    pub credentials: Vec<CredentialRange>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            targets: Vec::new(),
            interval: Duration::from_secs(3600),
            max_concurrency: 32,
            probes_per_second: 50,
            state_file: PathBuf::from("./fleetpulse-data/edge-devices.json"),
            port: crate::snmp::DEFAULT_PORT,
            ipp_port: crate::ipp::DEFAULT_PORT,
            credentials: Vec::new(),
        }
    }
}

/// `[[discovery.credentials]]`: SNMP credentials for the addresses in `range`.
/// Same keys and defaults as a `[[devices]]` entry, minus `address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialRange {
    /// Address, range or CIDR block these credentials apply to.
    pub range: String,
    /// `v1`, `v2c` or `v3` (default: `v3` when `user` is set, else `snmp.version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SnmpVersion>,
    /// v1/v2c community.
    #[serde(default = "default_community")]
    pub community: String,
    /// v3 user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// v3 security level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_level: Option<SecurityLevel>,
    /// v3 authentication protocol (default `sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_protocol: Option<AuthProtocol>,
    /// v3 authentication password (secret spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<String>,
    /// v3 privacy protocol (default `aes128`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_protocol: Option<PrivProtocol>,
    /// v3 privacy password (secret spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_password: Option<String>,
}

fn default_community() -> String {
    "public".into()
}

impl CredentialRange {
    /// The credential part.
    pub fn credentials(&self) -> SnmpCredentials {
        SnmpCredentials {
            version: self.version,
            community: self.community.clone(),
            user: self.user.clone(),
            security_level: self.security_level,
            auth_protocol: self.auth_protocol,
            auth_password: self.auth_password.clone(),
            priv_protocol: self.priv_protocol,
            priv_password: self.priv_password.clone(),
        }
    }
}

fn bad(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key,
        reason: reason.into(),
    }
}

impl DiscoveryConfig {
    /// Whether discovery runs (some target is configured).
    pub fn enabled(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Check the section; errors name the dotted key (`discovery.…`).
    pub fn validate(&self, default_version: SnmpVersion) -> Result<(), ConfigError> {
        for (i, t) in self.targets.iter().enumerate() {
            TargetRange::parse(t).map_err(|r| bad(format!("discovery.targets[{i}]"), r))?;
        }
        if self.interval < Duration::from_secs(1) {
            return Err(bad("discovery.interval".into(), "must be at least 1s"));
        }
        if self.max_concurrency == 0 {
            return Err(bad(
                "discovery.max_concurrency".into(),
                "must be at least 1",
            ));
        }
        if self.probes_per_second == 0 {
            return Err(bad(
                "discovery.probes_per_second".into(),
                "must be at least 1",
            ));
        }
        if self.port == 0 {
            return Err(bad("discovery.port".into(), "must not be 0"));
        }
        if self.enabled() && self.state_file.as_os_str().is_empty() {
            return Err(bad("discovery.state_file".into(), "must not be empty"));
        }
        for (i, c) in self.credentials.iter().enumerate() {
            let prefix = format!("discovery.credentials[{i}]");
            TargetRange::parse(&c.range).map_err(|r| bad(format!("{prefix}.range"), r))?;
            c.credentials().validate(&prefix, default_version)?;
        }
        Ok(())
    }
}

/// A printer for the poller: its identity and how to reach it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Device id (serial).
    pub serial: String,
    /// Address and credentials to poll it with.
    pub target: DeviceTarget,
}

/// An address skipped by a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The address.
    pub ip: Ipv4Addr,
    /// Why.
    pub reason: String,
    /// Whether this sweep logged it (each address is logged once per process).
    pub logged: bool,
}

/// What one sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Addresses probed.
    pub probed: usize,
    /// Printers found (new, moved and already known), with their current target.
    pub printers: Vec<Discovered>,
    /// Serials seen for the first time.
    pub new: Vec<String>,
    /// Serials at a new address: (serial, old address, new address).
    pub moved: Vec<(String, String, String)>,
    /// Non-printers and refusals.
    pub skipped: Vec<Skipped>,
    /// Addresses that did not answer.
    pub silent: usize,
}

/// Discovery state: resolved credentials, the device store, and which
/// skipped addresses were already logged.
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    ranges: Vec<TargetRange>,
    /// (range, candidate), in configuration order.
    credentials: Vec<(TargetRange, Candidate)>,
    default_credentials: Candidate,
    opts: SnmpOptions,
    /// IPP probe options (timeout from the SNMP probe's, at least 2 s).
    ipp: crate::ipp::IppOptions,
    store: DeviceStore,
    logged_skips: HashSet<Ipv4Addr>,
}

impl Discovery {
    /// Validate, resolve the credentials (reads secrets, derives keys) and
    /// load the state file.
    pub fn new(config: &DiscoveryConfig, snmp: &SnmpOptions) -> Result<Discovery, ConfigError> {
        config.validate(snmp.version)?;
        let ranges = config
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                TargetRange::parse(t).map_err(|r| bad(format!("discovery.targets[{i}]"), r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut credentials = Vec::new();
        for (i, c) in config.credentials.iter().enumerate() {
            let reference = format!("discovery.credentials[{i}]");
            let range =
                TargetRange::parse(&c.range).map_err(|r| bad(format!("{reference}.range"), r))?;
            let security = c.credentials().resolve(&reference, snmp.version)?;
            credentials.push((
                range,
                Candidate {
                    reference,
                    security,
                },
            ));
        }
        let default_credentials = Candidate {
            reference: DEFAULT_CREDENTIALS.into(),
            security: crate::snmp::Security::Community {
                version: match snmp.version {
                    SnmpVersion::V1 => SnmpVersion::V1,
                    _ => SnmpVersion::V2c,
                },
                community: b"public".to_vec(),
            },
        };
        // Probes are small and polite: at most one retry.
        let opts = SnmpOptions {
            retries: snmp.retries.min(1),
            ..snmp.clone()
        };
        Ok(Discovery {
            store: DeviceStore::load(&config.state_file),
            config: config.clone(),
            ranges,
            credentials,
            default_credentials,
            ipp: crate::ipp::IppOptions {
                timeout: opts.timeout.max(Duration::from_secs(2)),
                ..crate::ipp::IppOptions::default()
            },
            opts,
            logged_skips: HashSet::new(),
        })
    }

    /// The device store (as loaded, plus what sweeps found).
    pub fn store(&self) -> &DeviceStore {
        &self.store
    }

    /// Known devices as poll targets (on start: poll them at once).
    pub fn known(&self) -> Vec<Discovered> {
        self.store
            .devices
            .iter()
            .filter_map(|d| {
                Some(Discovered {
                    serial: d.serial.clone(),
                    target: self.target_for(&d.address, &d.credentials, d.ipp_url.as_deref())?,
                })
            })
            .collect()
    }

    /// A poll target for `address` with the credentials named `reference`;
    /// falls back to the first entry covering the address when the
    /// reference no longer exists (configuration changed).
    fn target_for(
        &self,
        address: &str,
        reference: &str,
        ipp_url: Option<&str>,
    ) -> Option<DeviceTarget> {
        if let Some(url) = ipp_url {
            return Some(DeviceTarget {
                protocol: crate::config::Protocol::Ipp,
                ipp_url: Some(url.to_string()),
                ..DeviceTarget::new(address, "public")
            });
        }
        let creds = if reference == DEFAULT_CREDENTIALS {
            Some(SnmpCredentials {
                community: "public".into(),
                ..Default::default()
            })
        } else {
            let index = reference
                .strip_prefix("discovery.credentials[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<usize>().ok());
            index.and_then(|i| self.config.credentials.get(i).map(|c| c.credentials()))
        };
        let creds = creds.or_else(|| {
            let (host, _) = split_host_port(address).ok()?;
            let ip: Ipv4Addr = host.parse().ok()?;
            self.config
                .credentials
                .iter()
                .find(|c| TargetRange::parse(&c.range).is_ok_and(|r| r.contains(ip)))
                .map(|c| c.credentials())
        });
        match creds {
            Some(c) => Some(DeviceTarget::with_credentials(address, &c)),
            None => {
                tracing::warn!(
                    address,
                    reference,
                    "no credentials for a stored device any more; not polling it"
                );
                None
            }
        }
    }

    fn candidates(&self, ip: Ipv4Addr) -> Vec<Candidate> {
        let mut c: Vec<Candidate> = self
            .credentials
            .iter()
            .filter(|(r, _)| r.contains(ip))
            .map(|(_, c)| c.clone())
            .collect();
        if c.is_empty() {
            c.push(self.default_credentials.clone());
        }
        c
    }

    /// Probe every target address once (rate-limited, bounded concurrency),
    /// update and save the store. Stops early on shutdown.
    pub async fn sweep(&mut self, shutdown: &Shutdown) -> SweepReport {
        let addresses: BTreeSet<Ipv4Addr> =
            self.ranges.iter().flat_map(|r| r.addresses()).collect();
        let semaphore = Arc::new(Semaphore::new(self.config.max_concurrency));
        let mut pace =
            tokio::time::interval(Duration::from_secs(1) / self.config.probes_per_second.max(1));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = JoinSet::new();
        let mut report = SweepReport::default();
        for ip in addresses {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = pace.tick() => {}
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = semaphore.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let candidates = self.candidates(ip);
            let opts = self.opts.clone();
            let port = self.config.port;
            let ipp_port = self.config.ipp_port;
            let ipp = self.ipp.clone();
            probes.spawn(async move {
                let mut outcome = probe::probe_snmp(ip, port, &candidates, &opts).await;
                if outcome == ProbeOutcome::Silent && ipp_port != 0 {
                    outcome = probe::probe_ipp(ip, ipp_port, &ipp).await;
                }
                drop(permit);
                (ip, outcome)
            });
            report.probed += 1;
        }
        let now = fleetpulse_core::now_millis();
        let mut outcomes = Vec::new();
        while let Some(joined) = probes.join_next().await {
            let Ok(o) = joined else { continue };
            outcomes.push(o);
        }
        // SNMP finds first: an IPP find never replaces one (SNMP preferred).
        outcomes.sort_by_key(|(ip, o)| {
            (
                matches!(
                    o,
                    ProbeOutcome::Printer {
                        ipp_url: Some(_),
                        ..
                    }
                ),
                *ip,
            )
        });
        let mut found_over_snmp: HashSet<String> = HashSet::new();
        for (ip, outcome) in outcomes {
            match outcome {
                ProbeOutcome::Printer {
                    serial,
                    address,
                    credentials,
                    ipp_url,
                } => {
                    if ipp_url.is_none() {
                        found_over_snmp.insert(serial.clone());
                    } else if found_over_snmp.contains(&serial) {
                        tracing::debug!(serial, %ip, "IPP printer already found over SNMP");
                        continue;
                    }
                    match self.store.upsert(
                        &serial,
                        &address,
                        &credentials,
                        ipp_url.as_deref(),
                        now,
                    ) {
                        Upsert::New => {
                            printer_found(&serial, &address);
                            report.new.push(serial.clone());
                        }
                        Upsert::Moved(old) => {
                            printer_moved(&serial, &old, &address);
                            report.moved.push((serial.clone(), old, address.clone()));
                        }
                        Upsert::Seen => {}
                    }
                    if let Some(target) =
                        self.target_for(&address, &credentials, ipp_url.as_deref())
                    {
                        report.printers.push(Discovered { serial, target });
                    }
                }
                ProbeOutcome::Skipped { reason } => {
                    let logged = self.logged_skips.insert(ip);
                    host_skipped(ip, &reason, logged);
                    report.skipped.push(Skipped { ip, reason, logged });
                }
                ProbeOutcome::Silent => {
                    host_silent(ip);
                    report.silent += 1;
                }
            }
        }
        if let Err(e) = self.store.save(&self.config.state_file) {
            tracing::error!(path = %self.config.state_file.display(), error = %e, "cannot save the discovery state file");
            metrics::counter!("fleetpulse_edge_discovery_state_save_failures_total").increment(1);
        }
        report.printers.sort_by(|a, b| a.serial.cmp(&b.serial));
        report
    }
}

fn printer_found(serial: &str, address: &str) {
    tracing::info!(serial, address, "discovery: new printer");
    metrics::counter!("fleetpulse_edge_discovery_printers_found_total").increment(1);
}

fn printer_moved(serial: &str, old: &str, new: &str) {
    tracing::info!(
        serial,
        old_address = old,
        new_address = new,
        "discovery: printer changed address; identity kept"
    );
    metrics::counter!("fleetpulse_edge_discovery_printers_moved_total").increment(1);
}

fn host_skipped(ip: Ipv4Addr, reason: &str, log: bool) {
    if log {
        tracing::info!(%ip, reason, "discovery: skipping host (not a printer)");
    }
    metrics::counter!("fleetpulse_edge_discovery_skipped_total").increment(1);
}

fn host_silent(ip: Ipv4Addr) {
    tracing::debug!(%ip, "discovery: no answer");
    metrics::counter!("fleetpulse_edge_discovery_silent_total").increment(1);
}

/// Run discovery until shutdown: hand the stored devices to the poller at
/// once, then sweep every `interval`, sending printers that are new or moved.
pub(crate) async fn run(
    mut discovery: Discovery,
    found: mpsc::Sender<Discovered>,
    shutdown: Shutdown,
) {
    for d in discovery.known() {
        if found.send(d).await.is_err() {
            return;
        }
    }
    let interval = discovery.config.interval;
    loop {
        let started = tokio::time::Instant::now();
        let report = discovery.sweep(&shutdown).await;
        tracing::info!(
            probed = report.probed,
            printers = report.printers.len(),
            new = report.new.len(),
            moved = report.moved.len(),
            skipped = report.skipped.len(),
            silent = report.silent,
            "discovery sweep done"
        );
        for d in report.printers {
            if found.send(d).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(started + interval) => {}
        }
    }
}
