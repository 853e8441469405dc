//! Polling one device into a [`DeviceSnapshot`].

use std::net::SocketAddr;
use std::time::Instant;

use fleetpulse_core::records::{InputTray, MarkerCounter, PollProtocol, Supply};
use serde::Serialize;

use crate::alerts::AlertRow;
use crate::mapping::{self, oids, Identity, MibData, Status};
use crate::snmp::{
    oid, split_host_port, DeviceTarget, SnmpClient, SnmpError, SnmpOptions, SnmpSession,
};

/// The normalised view of one poll: what `fleetpulse poll` prints and what
/// the edge turns into records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceSnapshot {
    /// Address as configured (`host[:port]`).
    pub address: String,
    /// IP address polled.
    pub ip_address: String,
    /// Poll start, ms since the epoch.
    pub polled_at: i64,
    /// Wall time of the whole poll (all requests), ms.
    pub response_ms: u32,
    /// Protocol the device answered on.
    pub protocol: PollProtocol,
    /// Who the device is.
    pub identity: Identity,
    /// Device and printer state.
    pub status: Status,
    /// prtMarkerSuppliesTable (raw level and capacity, special values, percent).
    pub supplies: Vec<Supply>,
    /// prtInputTable.
    pub trays: Vec<InputTray>,
    /// prtMarkerTable counters.
    pub counters: Vec<MarkerCounter>,
    /// Open prtAlertTable rows.
    pub alerts: Vec<AlertRow>,
}

/// Why a device poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The address is not `host[:port]` or does not resolve.
    #[error("cannot resolve {address}: {reason}")]
    Resolve {
        /// Address as configured.
        address: String,
        /// Why.
        reason: String,
    },
    /// An SNMP exchange failed.
    #[error("{address}: {source}")]
    Snmp {
        /// Address as configured.
        address: String,
        /// The SNMP failure.
        #[source]
        source: SnmpError,
    },
    /// An IPP poll failed.
    #[error("{address}: {source}")]
    Ipp {
        /// Address as configured.
        address: String,
        /// The IPP failure.
        #[source]
        source: crate::ipp::IppError,
    },
    /// The device's credentials cannot be used (secret unreadable, bad combination).
    #[error("{address}: {source}")]
    Credentials {
        /// Address as configured.
        address: String,
        /// What is wrong, naming the key.
        #[source]
        source: fleetpulse_core::config::ConfigError,
    },
    /// A 3D printer (HTTPS) poll failed.
    #[error("{address}: {source}")]
    Https3d {
        /// Address as configured.
        address: String,
        /// The failure.
        #[source]
        source: crate::http3d::Https3dError,
    },
    /// The whole poll took longer than `snmp.poll_deadline`.
    #[error("{address}: poll exceeded its deadline of {deadline:?}")]
    Deadline {
        /// Address as configured.
        address: String,
        /// The deadline.
        deadline: std::time::Duration,
    },
}

impl PollError {
    /// Whether polling again later may succeed (timeouts, DNS, socket errors).
    pub fn is_retriable(&self) -> bool {
        match self {
            PollError::Resolve { .. } | PollError::Deadline { .. } => true,
            PollError::Credentials { .. } => false,
            PollError::Snmp { source, .. } => source.is_retriable(),
            PollError::Ipp { source, .. } => source.is_retriable(),
            PollError::Https3d { source, .. } => source.is_retriable(),
        }
    }

    /// A short, stable class for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            PollError::Resolve { .. } => "resolve",
            PollError::Deadline { .. } => "deadline",
            PollError::Credentials { .. } => "credentials",
            PollError::Snmp { source, .. } => source.class(),
            PollError::Ipp { source, .. } => source.class(),
            PollError::Https3d { source, .. } => source.class(),
        }
    }

    /// The undecodable datagram, when the device sent one.
    pub fn raw_response(&self) -> Option<&[u8]> {
        match self {
            PollError::Snmp {
                source: SnmpError::Decode { raw, .. },
                ..
            } => Some(raw),
            _ => None,
        }
    }

    /// Whether the device did not answer at all (as opposed to answering badly).
    pub fn is_silence(&self) -> bool {
        if let PollError::Ipp { source, .. } = self {
            return source.is_silence();
        }
        if let PollError::Https3d { source, .. } = self {
            return source.is_silence();
        }
        matches!(
            self,
            PollError::Deadline { .. }
                | PollError::Snmp {
                    source: SnmpError::Timeout { .. },
                    ..
                }
        )
    }
}

/// Resolve `host[:port]` (port 161 by default) to a socket address.
pub async fn resolve(address: &str) -> Result<SocketAddr, PollError> {
    let bad = |reason: String| PollError::Resolve {
        address: address.to_string(),
        reason,
    };
    let (host, port) = split_host_port(address).map_err(bad)?;
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| bad(e.to_string()))?;
    addrs.next().ok_or_else(|| bad("no addresses".into()))
}

/// Poll one device: identity, status, supplies, trays, counters and alerts.
///
/// Bounded by `opts.poll_deadline` overall, whatever the agent does. Each
/// call starts from scratch (SNMPv3 engine discovery, full GETBULK size);
/// the service keeps that state per device with [`poll_device_with`].
pub async fn poll_device(
    target: &DeviceTarget,
    opts: &SnmpOptions,
) -> Result<DeviceSnapshot, PollError> {
    poll_device_with(target, opts, &SnmpSession::new()).await
}

/// [`poll_device`] with per-target state kept across polls: adaptive
/// GETBULK max-repetitions, the SNMPv3 engine and clock, derived keys, and
/// the slowness/silence record behind [`SnmpSession::next_poll_delay`].
pub async fn poll_device_with(
    target: &DeviceTarget,
    opts: &SnmpOptions,
    session: &SnmpSession,
) -> Result<DeviceSnapshot, PollError> {
    let result =
        match tokio::time::timeout(opts.poll_deadline, poll_inner(target, opts, session)).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Deadline {
                address: target.address.clone(),
                deadline: opts.poll_deadline,
            }),
        };
    let silent = matches!(&result, Err(e) if e.is_silence());
    let slow =
        matches!(&result, Ok(s) if u128::from(s.response_ms) * 2 > opts.poll_deadline.as_millis());
    session.record_poll(silent, slow);
    result
}

async fn poll_inner(
    target: &DeviceTarget,
    opts: &SnmpOptions,
    session: &SnmpSession,
) -> Result<DeviceSnapshot, PollError> {
    let creds = target.credentials();
    let security = session
        .security(&creds, || creds.resolve("device", opts.version))
        .map_err(|source| PollError::Credentials {
            address: target.address.clone(),
            source,
        })?;
    let peer = resolve(&target.address).await?;
    let polled_at = fleetpulse_core::now_millis();
    let started = Instant::now();
    let snmp_err = |source: SnmpError| PollError::Snmp {
        address: target.address.clone(),
        source,
    };
    let mut client = SnmpClient::connect_with(peer, security, opts, session.clone())
        .await
        .map_err(snmp_err)?;
    let mut data = MibData::default();
    let scalars: Vec<_> = oids::SCALARS.iter().map(|a| oid(a)).collect();
    data.extend(client.get(&scalars).await.map_err(snmp_err)?);
    for table in oids::TABLES {
        data.extend(client.walk(&oid(table)).await.map_err(snmp_err)?);
    }
    let response_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    Ok(snapshot_from(
        target,
        &peer.ip().to_string(),
        polled_at,
        response_ms,
        &data,
    ))
}

/// Build a snapshot from what a poll read.
pub(crate) fn snapshot_from(
    target: &DeviceTarget,
    ip: &str,
    polled_at: i64,
    response_ms: u32,
    data: &MibData,
) -> DeviceSnapshot {
    let identity = mapping::identity(data, ip);
    let status = mapping::status(data, identity.printer_device_index);
    DeviceSnapshot {
        address: target.address.clone(),
        ip_address: ip.to_string(),
        polled_at,
        response_ms,
        protocol: PollProtocol::Snmp,
        status,
        supplies: mapping::supplies(data),
        trays: mapping::trays(data),
        counters: mapping::counters(data),
        alerts: mapping::alerts(data),
        identity,
    }
}

// --- IPP (protocol = "ipp" devices) ---------------------------------------

/// Poll a configured device over its protocol: SNMP (v1/v2c/v3) with `snmp`
/// and the device's per-device `session` (adaptive GETBULK, SNMPv3 engine,
/// backoff record; see [`poll_device_with`]), or IPP Get-Printer-Attributes
/// with `ipp`, or a 3D printer's HTTPS API with default `[https3d]` options
/// (see [`crate::config::Protocol`]). IPP and 3D polls do not touch
/// `session`, so those devices keep the plain poll interval.
pub async fn poll_configured(
    device: &crate::config::DeviceConfig,
    snmp: &SnmpOptions,
    ipp: &crate::ipp::IppOptions,
    session: &SnmpSession,
) -> Result<DeviceSnapshot, PollError> {
    match device.protocol {
        crate::config::Protocol::Snmp => poll_device_with(device, snmp, session).await,
        crate::config::Protocol::Ipp => {
            let ipp_err = |source| PollError::Ipp {
                address: device.address.clone(),
                source,
            };
            let target =
                crate::ipp::IppTarget::parse(&device.ipp_url_or_default()).map_err(ipp_err)?;
            crate::ipp::poll_ipp(&target, ipp).await.map_err(ipp_err)
        }
        // Default [https3d] options: the service polls 3D printers in its own loop.
        crate::config::Protocol::Https3d => {
            crate::http3d::poll_as_snapshot(device, &Default::default())
                .await
                .map_err(|source| PollError::Https3d {
                    address: device.address.clone(),
                    source,
                })
        }
    }
}
