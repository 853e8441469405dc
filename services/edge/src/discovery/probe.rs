//! Probing one address: is there an SNMP agent (else an IPP service), and is it a printer?

use std::net::{Ipv4Addr, SocketAddr};

use crate::ipp::codec::tag;
use crate::ipp::{IppError, IppOptions, IppTarget};
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
        /// Which credentials answered (IPP: [`IPP_CREDENTIALS`]).
        credentials: String,
        /// Found over IPP: the `ipp://` URL that answered (None: SNMP).
        ipp_url: Option<String>,
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
        ipp_url: None,
    })
}

/// The `credentials` of a printer found over IPP (it needs none).
pub const IPP_CREDENTIALS: &str = "ipp";

/// Resource paths tried, in order: IPP Everywhere's `/ipp/print`, then
/// `/ipp` (older HP, Brother, Canon firmware) only when the first gives a
/// client error (HTTP 4xx or IPP `client-error-*`). At most two requests
/// per host.
pub(crate) const IPP_PATHS: &[&str] = &["/ipp/print", "/ipp"];

/// Whether a failed Get-Printer-Attributes says "wrong resource" (try the next path).
fn client_error(e: &IppError) -> bool {
    match e {
        IppError::HttpStatus { status, .. } => (400..500).contains(status),
        IppError::Status { code, .. } => (0x0400..0x0500).contains(code),
        _ => false,
    }
}

/// Probe `ip:port` over IPP: Get-Printer-Attributes on [`IPP_PATHS`].
///
/// Called for addresses where SNMP was [`ProbeOutcome::Silent`]. A host
/// that answers with printer attributes is a printer, identified like the
/// IPP driver does (`printer-device-id` serial, else `printer-uuid`, else
/// `addr:<ip>`, see [`crate::ipp::map`]); a refused or silent port is
/// Silent; any other answer is Skipped with its reason.
pub(crate) async fn probe_ipp(ip: Ipv4Addr, port: u16, opts: &IppOptions) -> ProbeOutcome {
    let mut last = String::new();
    for path in IPP_PATHS {
        let url = format!("ipp://{ip}:{port}{path}");
        let Ok(target) = IppTarget::parse(&url) else {
            return ProbeOutcome::Silent;
        };
        match crate::ipp::get_printer_attributes(&target, opts).await {
            Ok((msg, _peer)) => {
                let printer_attributes = msg
                    .groups
                    .iter()
                    .any(|g| g.tag == tag::PRINTER && !g.attributes.is_empty());
                if !printer_attributes {
                    return ProbeOutcome::Skipped {
                        reason: "IPP answer without printer attributes".into(),
                    };
                }
                let snapshot = crate::ipp::map::snapshot(&url, &ip.to_string(), 0, 0, &msg);
                return ProbeOutcome::Printer {
                    serial: snapshot.identity.device_id,
                    address: SocketAddr::from((ip, port)).to_string(),
                    credentials: IPP_CREDENTIALS.into(),
                    ipp_url: Some(url),
                };
            }
            Err(e) if e.is_silence() => return ProbeOutcome::Silent,
            Err(e) if client_error(&e) => last = e.class().to_string(),
            Err(e) => {
                return ProbeOutcome::Skipped {
                    reason: format!("IPP peer misbehaves ({})", e.class()),
                }
            }
        }
    }
    ProbeOutcome::Skipped {
        reason: format!("no IPP printer at {} ({last})", IPP_PATHS.join(" or ")),
    }
}
