//! LAN bytes of one printer poll, next to net-snmp's `snmpbulkwalk`.
//!
//! Measured at the socket layer: a UDP relay sits between the client and a
//! simulated printer and counts every request and response payload byte, so
//! neither the edge nor net-snmp is changed or trusted to report its own
//! traffic. The relay reads each request's first OID to attribute the bytes
//! to a subtree. The subtrees and scalars are learned from the edge's own
//! poll (a walk starts with a GETBULK on its subtree root), so net-snmp is
//! asked for exactly what the edge reads, even after the edge's list changes.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use fleetpulse_core::Shutdown;
use fleetpulse_edge::{DeviceTarget, SnmpOptions};
use rasn_snmp::{v2, v2c};
use tokio::net::UdpSocket;

/// Names of the subtrees the edge is known to walk (others print as OIDs).
const NAMES: &[(&str, &str)] = &[
    ("1.3.6.1.2.1.25.3.2.1", "hrDeviceEntry"),
    ("1.3.6.1.2.1.25.3.5.1", "hrPrinterEntry"),
    ("1.3.6.1.2.1.2.2.1.6", "ifPhysAddress"),
    ("1.3.6.1.2.1.43.8.2.1", "prtInputEntry"),
    ("1.3.6.1.2.1.43.10.2.1", "prtMarkerEntry"),
    ("1.3.6.1.2.1.43.11.1.1", "prtMarkerSuppliesEntry"),
    ("1.3.6.1.2.1.43.18.1.1", "prtAlertEntry"),
];

/// Key of the request that GETs the scalars (sys*, prtGeneralSerialNumber…).
const SCALARS: &str = "scalars (one GET)";

/// Traffic of one subtree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Requests sent (retries included).
    pub(crate) requests: u64,
    /// UDP payload bytes of the requests.
    pub(crate) request_bytes: u64,
    /// UDP payload bytes of the responses.
    pub(crate) response_bytes: u64,
    /// Values returned inside the subtree (exceptions and end-of-view excluded).
    pub(crate) values: u64,
}

impl Tally {
    pub(crate) fn bytes(&self) -> u64 {
        self.request_bytes + self.response_bytes
    }

    fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.request_bytes += o.request_bytes;
        self.response_bytes += o.response_bytes;
        self.values += o.values;
    }
}

/// What the relay learned and counted.
#[derive(Debug, Default)]
struct RelayState {
    /// Learn walk roots and scalars from GET/GETBULK requests (edge polls only).
    learning: bool,
    roots: Vec<Vec<u32>>,
    scalars: Vec<Vec<u32>>,
    /// Per key (SCALARS, a root as dotted OID, or "other"), in first-seen order.
    tallies: Vec<(String, Tally)>,
    /// Key and root of the last request, for its response.
    current: Option<(String, Option<Vec<u32>>)>,
    /// The last client address (responses go back there).
    client: Option<SocketAddr>,
}

impl RelayState {
    fn tally(&mut self, key: &str) -> &mut Tally {
        if let Some(i) = self.tallies.iter().position(|(k, _)| k == key) {
            return &mut self.tallies[i].1;
        }
        self.tallies.push((key.to_string(), Tally::default()));
        let last = self.tallies.len() - 1;
        &mut self.tallies[last].1
    }

    fn on_request(&mut self, raw: &[u8]) {
        let (key, root) = match decode_request(raw) {
            Some((kind, oids)) => {
                let first = oids.first().cloned().unwrap_or_default();
                let known = self
                    .roots
                    .iter()
                    .filter(|r| first.starts_with(r))
                    .max_by_key(|r| r.len())
                    .cloned();
                match (known, kind) {
                    (Some(r), _) => (dotted(&r), Some(r)),
                    (None, Kind::Get) => {
                        if self.learning && self.scalars.is_empty() {
                            self.scalars = oids;
                        }
                        (SCALARS.to_string(), None)
                    }
                    (None, Kind::Walk) if self.learning && !first.is_empty() => {
                        self.roots.push(first.clone());
                        (dotted(&first), Some(first))
                    }
                    (None, _) => ("other".to_string(), None),
                }
            }
            None => ("other".to_string(), None),
        };
        let t = self.tally(&key);
        t.requests += 1;
        t.request_bytes += raw.len() as u64;
        self.current = Some((key, root));
    }

    fn on_response(&mut self, raw: &[u8]) {
        let (key, root) = self
            .current
            .clone()
            .unwrap_or_else(|| ("other".to_string(), None));
        let values = decode_response_oids(raw)
            .map(|oids| {
                oids.iter()
                    .filter(|o| root.as_ref().is_none_or(|r| o.starts_with(r)))
                    .count() as u64
            })
            .unwrap_or(0);
        let t = self.tally(&key);
        t.response_bytes += raw.len() as u64;
        t.values += values;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Walk,
    Other,
}

fn dotted(arcs: &[u32]) -> String {
    arcs.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// Display name of a tally key.
pub(crate) fn name_of(key: &str) -> String {
    NAMES
        .iter()
        .find(|(oid, _)| *oid == key)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| key.to_string())
}

/// Kind and OIDs of an SNMPv2c request (None when it does not decode).
fn decode_request(raw: &[u8]) -> Option<(Kind, Vec<Vec<u32>>)> {
    let msg = std::panic::catch_unwind(|| rasn::ber::decode::<v2c::Message<v2::Pdus>>(raw).ok())
        .ok()
        .flatten()?;
    let names = |vbs: Vec<v2::VarBind>| -> Vec<Vec<u32>> {
        vbs.into_iter()
            .map(|vb| vb.name.as_ref().to_vec())
            .collect()
    };
    Some(match msg.data {
        v2::Pdus::GetRequest(r) => (Kind::Get, names(r.0.variable_bindings)),
        v2::Pdus::GetNextRequest(r) => (Kind::Walk, names(r.0.variable_bindings)),
        v2::Pdus::GetBulkRequest(r) => (Kind::Walk, names(r.0.variable_bindings)),
        _ => (Kind::Other, Vec::new()),
    })
}

/// OIDs of the real values (not exceptions) of an SNMPv2c response.
fn decode_response_oids(raw: &[u8]) -> Option<Vec<Vec<u32>>> {
    let msg = std::panic::catch_unwind(|| rasn::ber::decode::<v2c::Message<v2::Pdus>>(raw).ok())
        .ok()
        .flatten()?;
    match msg.data {
        v2::Pdus::Response(v2::Response(pdu)) => Some(
            pdu.variable_bindings
                .into_iter()
                .filter(|vb| matches!(vb.value, v2::VarBindValue::Value(_)))
                .map(|vb| vb.name.as_ref().to_vec())
                .collect(),
        ),
        _ => None,
    }
}

/// A counting UDP relay in front of one agent.
struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<RelayState>>,
}

impl Relay {
    async fn start(agent: SocketAddr, shutdown: Shutdown) -> anyhow::Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(agent).await?;
        let addr = front.local_addr()?;
        let state = Arc::new(Mutex::new(RelayState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            let mut a = vec![0u8; 65_535];
            let mut b = vec![0u8; 65_535];
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { continue };
                        if let Ok(mut s) = st.lock() {
                            s.client = Some(from);
                            s.on_request(&a[..n]);
                        }
                        let _ = back.send(&a[..n]).await;
                    }
                    r = back.recv(&mut b) => {
                        let Ok(n) = r else { continue };
                        let client = match st.lock() {
                            Ok(mut s) => {
                                s.on_response(&b[..n]);
                                s.client
                            }
                            Err(_) => None,
                        };
                        if let Some(c) = client {
                            let _ = front.send_to(&b[..n], c).await;
                        }
                    }
                }
            }
        });
        Ok(Relay { addr, state })
    }

    fn set_learning(&self, on: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.learning = on;
        }
    }

    /// What was counted since the last call; the learned roots stay.
    fn take(&self) -> Vec<(String, Tally)> {
        self.state
            .lock()
            .map(|mut s| std::mem::take(&mut s.tallies))
            .unwrap_or_default()
    }

    fn learned(&self) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        self.state
            .lock()
            .map(|s| (s.roots.clone(), s.scalars.clone()))
            .unwrap_or_default()
    }

    fn seed(&self, roots: &[Vec<u32>]) {
        if let Ok(mut s) = self.state.lock() {
            s.roots = roots.to_vec();
        }
    }
}

/// Result of the LAN measurement, averaged per poll.
#[derive(Debug)]
pub(crate) struct LanResult {
    /// Printers measured (one poll each per client).
    pub(crate) polls: usize,
    /// GETBULK max-repetitions used by both clients.
    pub(crate) max_repetitions: u32,
    /// Per key: edge totals and net-snmp totals over all polls.
    pub(crate) rows: Vec<(String, Tally, Option<Tally>)>,
    /// Why net-snmp was not measured.
    pub(crate) netsnmp_missing: Option<String>,
}

impl LanResult {
    pub(crate) fn edge_per_poll(&self) -> f64 {
        self.rows.iter().map(|(_, e, _)| e.bytes()).sum::<u64>() as f64 / self.polls.max(1) as f64
    }

    pub(crate) fn netsnmp_per_poll(&self) -> Option<f64> {
        if self.netsnmp_missing.is_some() {
            return None;
        }
        Some(
            self.rows
                .iter()
                .filter_map(|(_, _, n)| n.map(|n| n.bytes()))
                .sum::<u64>() as f64
                / self.polls.max(1) as f64,
        )
    }
}

fn merge(
    into: &mut Vec<(String, Tally, Option<Tally>)>,
    edge: &[(String, Tally)],
    net: &[(String, Tally)],
) {
    for (k, t) in edge {
        match into.iter_mut().find(|(key, _, _)| key == k) {
            Some((_, e, _)) => e.add(t),
            None => into.push((k.clone(), *t, None)),
        }
    }
    for (k, t) in net {
        match into.iter_mut().find(|(key, _, _)| key == k) {
            Some((_, _, n)) => n.get_or_insert_with(Tally::default).add(t),
            None => into.push((k.clone(), Tally::default(), Some(*t))),
        }
    }
}

/// Whether net-snmp's tools can run here; the reason when not.
fn netsnmp_available() -> Result<(), String> {
    for tool in ["snmpbulkwalk", "snmpget"] {
        match Command::new(tool).arg("-V").output() {
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "{tool} cannot run ({e}); install net-snmp (apt-get install snmp)"
                ))
            }
        }
    }
    Ok(())
}

fn run_tool(tool: &str, args: &[String]) -> anyhow::Result<usize> {
    let out = Command::new(tool)
        .args(args)
        .env("MIBS", "")
        .output()
        .with_context(|| format!("running {tool}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Poll `printers` simulated printers once with the edge and once with
/// net-snmp, each through its own counting relay.
pub(crate) async fn measure(printers: usize, opts: &SnmpOptions) -> anyhow::Result<LanResult> {
    let shutdown = Shutdown::new();
    let _stop = shutdown.clone().drop_guard();
    // A slow clock so a printer's tables do not change between the two clients.
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers,
            base_port: 0,
            seed: 11,
            acceleration: 1.0,
            silence_probability: 0.0,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting the simulated printers for the LAN measurement")?;
    let netsnmp = netsnmp_available();
    let mut rows = Vec::new();
    let mut roots: Vec<Vec<u32>> = Vec::new();
    for p in fleet.printers() {
        let relay = Relay::start(p.addr, shutdown.clone()).await?;
        relay.seed(&roots);
        relay.set_learning(true);
        let target = DeviceTarget::new(relay.addr.to_string(), p.community.clone());
        let snap = fleetpulse_edge::poll_device(&target, opts)
            .await
            .with_context(|| format!("edge poll of simulated printer {}", p.addr))?;
        anyhow::ensure!(
            !snap.supplies.is_empty(),
            "edge poll of {} returned no supplies",
            p.addr
        );
        relay.set_learning(false);
        let edge = relay.take();
        let (learned_roots, scalars) = relay.learned();
        roots = learned_roots;
        let mut net = Vec::new();
        if netsnmp.is_ok() {
            let agent = relay.addr.to_string();
            let common = |tool_args: &[&str]| -> Vec<String> {
                let mut v: Vec<String> = ["-v2c", "-c", &p.community, "-t", "2", "-r", "1", "-On"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                v.extend(tool_args.iter().map(|s| s.to_string()));
                v.push(agent.clone());
                v
            };
            let mut get = common(&[]);
            get.extend(scalars.iter().map(|o| dotted(o)));
            run_tool("snmpget", &get)?;
            let cr = format!("-Cr{}", opts.max_repetitions);
            for r in &roots {
                let mut walk = common(&[&cr]);
                walk.push(dotted(r));
                run_tool("snmpbulkwalk", &walk)?;
            }
            net = relay.take();
        }
        merge(&mut rows, &edge, &net);
    }
    Ok(LanResult {
        polls: fleet.printers().len(),
        max_repetitions: opts.max_repetitions,
        rows,
        netsnmp_missing: netsnmp.err(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relay_counts_and_attributes_an_edge_poll() {
        let shutdown = Shutdown::new();
        let _stop = shutdown.clone().drop_guard();
        let fleet = fleetpulse_sim::start(
            fleetpulse_sim::SimConfig {
                printers: 1,
                base_port: 0,
                acceleration: 1.0,
                silence_probability: 0.0,
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        let p = &fleet.printers()[0];
        let relay = Relay::start(p.addr, shutdown.clone()).await.unwrap();
        relay.set_learning(true);
        let target = DeviceTarget::new(relay.addr.to_string(), p.community.clone());
        let snap = fleetpulse_edge::poll_device(&target, &SnmpOptions::default())
            .await
            .unwrap();
        assert_eq!(snap.identity.serial.as_deref(), Some(p.serial.as_str()));
        let tallies = relay.take();
        let (roots, scalars) = relay.learned();
        // The edge GETs scalars once and walks the Printer-MIB tables it maps.
        assert_eq!(tallies[0].0, SCALARS);
        assert_eq!(tallies[0].1.requests, 1);
        assert!(scalars.len() >= 6, "{scalars:?}");
        for name in ["prtMarkerSuppliesEntry", "prtInputEntry", "hrDeviceEntry"] {
            let (oid, _) = NAMES.iter().find(|(_, n)| *n == name).unwrap();
            let t = tallies
                .iter()
                .find(|(k, _)| k == oid)
                .unwrap_or_else(|| panic!("{name} not walked: {tallies:?}"))
                .1;
            assert!(
                t.requests >= 1 && t.response_bytes > t.request_bytes,
                "{name}: {t:?}"
            );
        }
        assert!(!tallies.iter().any(|(k, _)| k == "other"), "{tallies:?}");
        assert_eq!(roots.len(), tallies.len() - 1);
        let supplies = tallies
            .iter()
            .find(|(k, _)| k == "1.3.6.1.2.1.43.11.1.1")
            .unwrap()
            .1;
        // Every supply row has several columns, all counted as values.
        assert!(
            supplies.values as usize >= snap.supplies.len() * 5,
            "{supplies:?}"
        );
        // A second take starts from zero.
        assert!(relay.take().is_empty());
    }
}
