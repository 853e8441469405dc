//! Probing one address: is there an SNMP agent, and is it a printer?

use std::net::{Ipv4Addr, SocketAddr};

use crate::mapping::{self, oids, DeviceIdSource, MibData};
use crate::snmp::{oid, Security, SnmpClient, SnmpError, SnmpOptions, SnmpSession};

/// prtGeneralTable and prtMarkerSuppliesTable (RFC 3805): their presence
/// makes an agent a printer.
const PRT_GENERAL: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 5];
const PRT_SUPPLIES: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 11];
const SYS_OBJECT_ID: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 2, 0];

/// Result of probing one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A printer: its identity and the credentials that worked.
    Printer {
        /// Device id (serial number when the device has one).
        serial: String,
        /// `ip:port` it answered at.
        address: String,
        /// Which credentials answered.
        credentials: String,
    },
    /// Something answered but it is not a printer we can poll.
    Skipped {
        /// Why (stable text, e.g. "no Printer-MIB").
        reason: String,
    },
    /// Nothing answered.
    Silent,
}

/// A credential candidate for an address: its config reference and resolved form.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) reference: String,
    pub(crate) security: Security,
}

/// Probe `ip:port` over SNMP with each candidate in turn (first that answers wins).
pub(crate) async fn probe_snmp(
    ip: Ipv4Addr,
    port: u16,
    candidates: &[Candidate],
    opts: &SnmpOptions,
) -> ProbeOutcome {
    let peer = SocketAddr::from((ip, port));
    let mut rejected = None;
    for c in candidates {
        match probe_one(peer, c, opts).await {
            Ok(outcome) => return outcome,
            Err(e @ (SnmpError::AuthFailed { .. } | SnmpError::UnknownUser { .. })) => {
                rejected = Some(format!("SNMP credentials rejected ({})", e.class()));
            }
            Err(e) if e.is_retriable() => {}
            Err(e) => {
                return ProbeOutcome::Skipped {
                    reason: format!("SNMP agent misbehaves ({})", e.class()),
                }
            }
        }
    }
    match rejected {
        Some(reason) => ProbeOutcome::Skipped { reason },
        None => ProbeOutcome::Silent,
    }
}

async fn probe_one(
    peer: SocketAddr,
    c: &Candidate,
    opts: &SnmpOptions,
) -> Result<ProbeOutcome, SnmpError> {
    let mut client =
        SnmpClient::connect_with(peer, c.security.clone(), opts, SnmpSession::new()).await?;
    // One cheap question first: is anyone there?
    let first = client.get(&[oid(SYS_OBJECT_ID)]).await?;
    let mut data = MibData::default();
    data.extend(first);
    let scalars: Vec<_> = oids::SCALARS.iter().map(|a| oid(a)).collect();
    data.extend(client.get(&scalars).await?);
    let mut printer_mib = data
        .get(oids::PRT_GENERAL_SERIAL)
        .is_some_and(|v| !v.is_absent());
    for table in [PRT_GENERAL, PRT_SUPPLIES] {
        if printer_mib {
            break;
        }
        let next = match client.get_next(&[oid(table)]).await {
            Ok(v) => v,
            // v1 agents end their MIB with noSuchName.
            Err(SnmpError::Agent { status: 2, .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        printer_mib = next
            .iter()
            .any(|(o, v)| o.starts_with(&oid(table)) && !v.is_absent());
    }
    if !printer_mib {
        return Ok(ProbeOutcome::Skipped {
            reason: "no Printer-MIB".into(),
        });
    }
    let identity = mapping::identity(&data, &peer.ip().to_string());
    if identity.device_id_source == DeviceIdSource::Address {
        tracing::debug!(%peer, "printer without a serial number: identified by address");
    }
    Ok(ProbeOutcome::Printer {
        serial: identity.device_id,
        address: peer.to_string(),
        credentials: c.reference.clone(),
    })
}

/// Hook for IPP discovery (`ipp://host:631/ipp/print`, Get-Printer-Attributes).
///
/// Not implemented here: the IPP client lives in its own module (built
/// separately). When it lands, call it from [`super::Discovery::probe`] for
/// addresses where SNMP is [`ProbeOutcome::Silent`], and map
/// `printer-device-id`/`printer-uuid` to the identity.
pub(crate) async fn probe_ipp(_ip: Ipv4Addr) -> ProbeOutcome {
    ProbeOutcome::Silent
}
