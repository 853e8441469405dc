//! `SimConfig`: how many printers, where they listen, and how lively they are.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use fleetpulse_core::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

/// Length of one simulation step in sim time. State changes happen on step
/// boundaries, so "the state at step n" is well defined and reproducible.
pub const SIM_STEP: Duration = Duration::from_secs(60);

/// Fastest allowed clock: one sim day per wall second. State advances one
/// sim minute at a time, so faster clocks would only burn CPU replaying steps.
pub const MAX_ACCELERATION: f64 = 86_400.0;

/// Largest UDP payload over IPv4 (65535 − 8 UDP − 20 IP header bytes).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Smallest message size every SNMP entity must accept (RFC 3417 §3.2).
pub const MIN_SNMP_MESSAGE: usize = 484;

/// Configuration of the simulated fleet.
///
/// Durations are humantime strings (`"20m"`, `"2h"`). Durations that describe
/// printer behaviour (`silence_min`, `silence_max`) are **sim time**; the
/// others are wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Number of simulated printers.
    pub printers: usize,
    /// Address every agent binds to.
    pub bind: IpAddr,
    /// Printer `i` listens on UDP `base_port + i`; `0` gives every printer an
    /// ephemeral port (tests, `fleetpulse up`).
    pub base_port: u16,
    /// SNMP community the agents answer to; requests with any other are dropped.
    pub community: String,
    /// Seed of the fleet: the same seed gives the same printers and the same
    /// history, step by step.
    pub seed: u64,
    /// Sim seconds per wall second (60: one wall second is one sim minute);
    /// must be > 0 and at most [`MAX_ACCELERATION`].
    pub acceleration: f64,
    /// Chance per printer and sim hour that a reachable printer goes silent
    /// (powered off / unplugged) and stops answering.
    pub silence_probability: f64,
    /// Shortest silent stretch, sim time.
    #[serde(with = "humantime_serde")]
    pub silence_min: Duration,
    /// Longest silent stretch, sim time.
    #[serde(with = "humantime_serde")]
    pub silence_max: Duration,
    /// Chance per sim hour of printing that the paper path jams.
    pub jam_probability: f64,
    /// How often printers start printing, relative to the default (each
    /// printer's busyness is drawn from its seed; its print runs keep their
    /// length). `1` is the default: about 170 pages per printer and sim hour,
    /// lively for demos. `0.12` is an office volume of about 30 pages an
    /// hour (the benchmark's assumption). Within (0, 4].
    pub activity: f64,
    /// Largest response datagram an agent sends; GETBULK answers are trimmed
    /// to whole repetitions to fit, other oversized answers become `tooBig`.
    /// 1472 keeps a response in one Ethernet frame.
    pub max_response_bytes: usize,
    /// At most one log line per printer per this wall interval for malformed
    /// datagrams (every one is still counted).
    #[serde(with = "humantime_serde")]
    pub malformed_log_interval: Duration,
    /// Also serve IPP Get-Printer-Attributes (from the same MIB): printer
    /// `i` on TCP `ipp_base_port + i`, `0` for ephemeral ports; off when unset.
    pub ipp_base_port: Option<u16>,
    /// Serve SNMP (default). `false` models printers with SNMP switched
    /// off (as many IPP Everywhere / AirPrint devices ship): no UDP port is
    /// bound, so only IPP answers; needs `ipp_base_port`.
    pub snmp: bool,
    // --- 3D printers over HTTPS (see crate::https3d) ---
    /// Number of simulated industrial 3D printers (JSON device API over
    /// HTTPS); none by default.
    pub printers_3d: usize,
    /// 3D printer `i` listens on TCP `https_base_port + i`; `0` gives every
    /// 3D printer an ephemeral port.
    pub https_base_port: u16,
    /// Where to write the PEM certificate the 3D printers serve, so the edge
    /// can pin it (`tls.pin_sha256`) or trust it (`tls.ca_file`); not
    /// written when unset.
    pub tls_cert_out: Option<PathBuf>,
    /// Serve this PEM certificate (chain) instead of a self-signed one made
    /// at start; needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            printers: 50,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 16100,
            community: "public".into(),
            seed: 1,
            acceleration: 60.0,
            silence_probability: 0.01,
            silence_min: Duration::from_secs(20 * 60),
            silence_max: Duration::from_secs(2 * 3600),
            jam_probability: 0.05,
            activity: 1.0,
            max_response_bytes: 1472,
            malformed_log_interval: Duration::from_secs(60),
            ipp_base_port: None,
            snmp: true,
            printers_3d: 0,
            https_base_port: 18443,
            tls_cert_out: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

fn contradiction(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Contradiction {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn probability(key: &str, p: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(contradiction(key, format!("must be within 0..=1, got {p}")))
    }
}

impl Validate for SimConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.printers < 1 && self.printers_3d < 1 {
            return Err(contradiction(
                "printers",
                "must be at least 1 (or printers_3d at least 1)",
            ));
        }
        if self.printers_3d > 0 && usize::from(self.https_base_port) + self.printers_3d > 65_535 {
            return Err(contradiction(
                "https_base_port",
                format!(
                    "https_base_port {} + printers_3d {} exceeds the TCP port range (65535)",
                    self.https_base_port, self.printers_3d
                ),
            ));
        }
        if !self.snmp && self.printers > 0 && self.ipp_base_port.is_none() {
            return Err(contradiction(
                "snmp",
                "printers without SNMP need ipp_base_port (else nothing answers)",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(contradiction(
                "tls_key_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
        if usize::from(self.base_port) + self.printers > 65_535 {
            return Err(contradiction(
                "printers",
                format!(
                    "base_port {} + printers {} exceeds the UDP port range (65535)",
                    self.base_port, self.printers
                ),
            ));
        }
        if let Some(ipp) = self.ipp_base_port {
            if usize::from(ipp) + self.printers > 65_535 {
                return Err(contradiction(
                    "ipp_base_port",
                    format!(
                        "ipp_base_port {ipp} + printers {} exceeds the TCP port range (65535)",
                        self.printers
                    ),
                ));
            }
        }
        if self.community.is_empty() {
            return Err(contradiction("community", "must not be empty"));
        }
        if !(self.acceleration > 0.0 && self.acceleration <= MAX_ACCELERATION) {
            return Err(contradiction(
                "acceleration",
                format!(
                    "must be > 0 and at most {MAX_ACCELERATION} (one sim day per wall second), got {}",
                    self.acceleration
                ),
            ));
        }
        probability("silence_probability", self.silence_probability)?;
        probability("jam_probability", self.jam_probability)?;
        if !(self.activity > 0.0 && self.activity <= 4.0) {
            return Err(contradiction(
                "activity",
                format!("must be within (0, 4], got {}", self.activity),
            ));
        }
        if self.silence_min < SIM_STEP {
            return Err(contradiction(
                "silence_min",
                format!("must be at least one sim step ({}s)", SIM_STEP.as_secs()),
            ));
        }
        if self.silence_max < self.silence_min {
            return Err(contradiction(
                "silence_max",
                "must not be shorter than silence_min",
            ));
        }
        if !(MIN_SNMP_MESSAGE..=MAX_UDP_PAYLOAD).contains(&self.max_response_bytes) {
            return Err(contradiction(
                "max_response_bytes",
                format!(
                    "must be within {MIN_SNMP_MESSAGE}..={MAX_UDP_PAYLOAD}, got {}",
                    self.max_response_bytes
                ),
            ));
        }
        Ok(())
    }
}
