//! Scheduling: one long-lived task per device, a semaphore bounding
//! concurrent polls, a heartbeat task, and the records each poll produces.
//!
//! Each device task sleeps a deterministic offset inside the first interval
//! (a hash of its address) before its first poll, so 10 000 devices spread
//! over the interval instead of bursting at start. A device's polls never
//! overlap (its task awaits one before the next), and a slow device
//! cannot delay others beyond its semaphore permit, which is bounded by the
//! poll deadline.
//!
//! Per-device backoff: each task keeps an [`SnmpSession`] (adaptive GETBULK
//! size, SNMPv3 engine). After an SNMP poll that got no answer the next one
//! waits `poll_interval × 2^n` (n silent polls in a row, at most 8×); after a
//! slow poll (over half of `snmp.poll_deadline`) it waits `2 × poll_interval`.
//! IPP devices (`protocol = "ipp"`) are polled every `poll_interval`; 3D
//! printers (`protocol = "https3d"`) too, in their own loop
//! ([`crate::http3d`]), which also stores each finished job once.
//!
//! Every poll's records (and a dead letter for an undecodable SNMP
//! response), and the connector heartbeat, are appended to the
//! [`crate::buffer`] ([`store`]); the forwarder in [`crate::publish`] sends
//! them. Nothing here talks to Kafka.
//!
//! Discovered devices (see [`crate::discovery`]) are SNMP devices with their own tasks, polled
//! at once; a discovered serial that moves to a new address keeps its task
//! (and alert state), which switches address at its next poll. A device is
//! polled once even when configured and discovered: discovery skips
//! configured addresses and serials, and a discovered task stops when a
//! configured device turns out to have the same serial.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::records::{
    AlertEvent, AlertTransition, ConnectorHeartbeat, DeviceHeartbeat, DeviceLiveness, DeviceStatus,
    UsageCounters, SCHEMA_VERSION,
};
use fleetpulse_core::{new_event_id, Shutdown};
use tokio::sync::{watch, Semaphore};

use crate::alerts::{AlertRow, AlertTracker};
use crate::buffer::{AppendOutcome, Buffer, BufferError, Rejected, StoredRecord};
use crate::counters::CounterStore;
use crate::device::{poll_configured, DeviceSnapshot, PollError};
use crate::discovery::Discovered;
use crate::privacy::{self, Policy};
use crate::publish::{self, PublishError};
use crate::schedule::DevicePlan;
use crate::snmp::{split_host_port, SnmpOptions, SnmpSession};
use crate::watchdog::Progress;

/// Envelope values shared by every record of one connector.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) tenant_id: String,
    pub(crate) connector_id: String,
}

/// The records of one successful poll.
#[derive(Debug, Clone)]
pub(crate) struct PollRecords {
    pub(crate) heartbeat: DeviceHeartbeat,
    pub(crate) status: DeviceStatus,
    pub(crate) counters: Option<UsageCounters>,
    pub(crate) alerts: Vec<AlertEvent>,
}

macro_rules! envelope {
    ($origin:expr, $device_id:expr, $at:expr, $t:ident { $($f:ident : $v:expr),* $(,)? }) => {
        $t {
            event_id: new_event_id(),
            tenant_id: $origin.tenant_id.clone(),
            connector_id: $origin.connector_id.clone(),
            device_id: $device_id.to_string(),
            observed_at: $at,
            schema_version: SCHEMA_VERSION,
            $($f: $v),*
        }
    };
}

fn alert_event(o: &Origin, s: &DeviceSnapshot, row: &AlertRow, t: AlertTransition) -> AlertEvent {
    envelope!(
        o,
        s.identity.device_id,
        s.polled_at,
        AlertEvent {
            transition: t,
            alert_index: row.alert_index,
            severity: row.severity,
            group: row.group.clone(),
            group_index: row.group_index,
            location: row.location,
            code: row.code.clone(),
            code_raw: row.code_raw,
            description: row.description.clone(),
            alert_time_ticks: row.time_ticks,
        }
    )
}

/// Turn a snapshot (and the alert diff against the previous poll) into records.
pub(crate) fn records_of(
    o: &Origin,
    s: &DeviceSnapshot,
    tracker: &mut AlertTracker,
) -> PollRecords {
    let id = &s.identity;
    let device_id = &id.device_id;
    let heartbeat = envelope!(
        o,
        device_id,
        s.polled_at,
        DeviceHeartbeat {
            protocol: s.protocol,
            ip_address: Some(s.ip_address.clone()),
            response_ms: i32::try_from(s.response_ms).unwrap_or(i32::MAX),
            sys_uptime_ticks: id.sys_uptime_ticks,
        }
    );
    let status = envelope!(
        o,
        device_id,
        s.polled_at,
        DeviceStatus {
            vendor: id.vendor.clone(),
            model: id.model.clone(),
            sys_descr: id.sys_descr.clone(),
            sys_object_id: id.sys_object_id.clone(),
            sys_name: id.sys_name.clone(),
            sys_contact: id.sys_contact.clone(),
            sys_location: id.sys_location.clone(),
            ip_address: Some(s.ip_address.clone()),
            mac_address: id.mac_address.clone(),
            hr_device_status: s.status.hr_device_status,
            hr_printer_status: s.status.hr_printer_status,
            detected_errors: s.status.detected_errors.clone(),
            detected_error_state_hex: s.status.detected_error_state_hex.clone(),
            supplies: s.supplies.clone(),
            input_trays: s.trays.clone(),
            printheads: Vec::new(),
            build_unit: None,
        }
    );
    let counters = (!s.counters.is_empty()).then(|| {
        envelope!(
            o,
            device_id,
            s.polled_at,
            UsageCounters {
                markers: s.counters.clone(),
            }
        )
    });
    let diff = tracker.update(&s.alerts);
    let alerts = diff
        .opened
        .iter()
        .map(|r| alert_event(o, s, r, AlertTransition::Opened))
        .chain(
            diff.cleared
                .iter()
                .map(|r| alert_event(o, s, r, AlertTransition::Cleared)),
        )
        .collect();
    PollRecords {
        heartbeat,
        status,
        counters,
        alerts,
    }
}

/// Encode what the schedule sends of one poll's records under one batch id
/// (privacy applied).
fn encode_records(
    kafka: &KafkaConfig,
    policy: &Policy,
    r: &PollRecords,
    d: &crate::schedule::Decision,
) -> Result<Vec<StoredRecord>, PublishError> {
    let batch = uuid::Uuid::now_v7().to_string();
    let mut out = Vec::new();
    if d.heartbeat {
        out.push(privacy::stored(kafka, policy, &r.heartbeat, &batch)?);
    }
    if d.status {
        out.push(privacy::stored(kafka, policy, &r.status, &batch)?);
    }
    if let Some(c) = r.counters.as_ref().filter(|_| d.counters) {
        out.push(privacy::stored(kafka, policy, c, &batch)?);
    }
    for a in &r.alerts {
        out.push(privacy::stored(kafka, policy, a, &batch)?);
    }
    Ok(out)
}

/// Why records did not reach the buffer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Encode(#[from] PublishError),
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

/// Append records to the buffer; log what it rejected. Returns what the
/// buffer did with them (how many were stored, what was rejected).
pub(crate) async fn store(
    buffer: &Arc<Buffer>,
    records: Vec<StoredRecord>,
) -> Result<AppendOutcome, StoreError> {
    let b = buffer.clone();
    let outcome = tokio::task::spawn_blocking(move || b.append(records))
        .await
        .map_err(|e| BufferError::Io {
            op: "append",
            dir: buffer.config().dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
    for r in &outcome.rejected {
        record_rejected(r);
    }
    Ok(outcome)
}

/// A never-evicted record did not fit: data loss, said loudly.
fn record_rejected(r: &Rejected) {
    tracing::error!(class = r.class().name(), "{r}");
    metrics::counter!("fleetpulse_edge_buffer_rejected_total", "class" => r.class().name())
        .increment(1);
}

fn device_polled(address: &str, device_id: &str, records: usize, elapsed: Duration) {
    tracing::debug!(address, device_id, records, ?elapsed, "device polled");
    metrics::counter!("fleetpulse_edge_polls_total", "outcome" => "ok").increment(1);
    metrics::histogram!("fleetpulse_edge_poll_seconds").record(elapsed.as_secs_f64());
}

fn device_unreachable(address: &str, e: &PollError) {
    tracing::warn!(address, error = %e, class = e.class(), "device did not answer; no records this round");
    metrics::counter!("fleetpulse_edge_polls_total", "outcome" => "unreachable").increment(1);
}

fn device_failed(address: &str, e: &PollError) {
    tracing::warn!(address, error = %e, class = e.class(), retriable = e.is_retriable(), "device poll failed");
    metrics::counter!("fleetpulse_edge_polls_total", "outcome" => e.class()).increment(1);
}

fn device_garbled(address: &str, e: &PollError, bytes: usize) {
    tracing::warn!(
        address,
        error = %e,
        bytes,
        "device sent an undecodable SNMP response; raw bytes sent to the dead-letter topic"
    );
    metrics::counter!("fleetpulse_edge_polls_total", "outcome" => "snmp_decode").increment(1);
}

fn records_not_stored(address: &str, e: &StoreError) {
    tracing::error!(address, error = %e, "records of a poll could not be stored in the buffer; they are lost");
    metrics::counter!("fleetpulse_edge_buffer_errors_total").increment(1);
}

/// Deterministic start offset of a device inside the first interval.
pub(crate) fn start_offset(address: &str, interval: Duration) -> Duration {
    let mut h = DefaultHasher::new();
    address.hash(&mut h);
    let millis = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(h.finish() % millis)
}

/// Everything a device task shares with the others.
pub(crate) struct Shared {
    pub(crate) origin: Origin,
    pub(crate) kafka: KafkaConfig,
    pub(crate) buffer: Arc<Buffer>,
    pub(crate) semaphore: Arc<Semaphore>,
    pub(crate) snmp: SnmpOptions,
    pub(crate) ipp: crate::ipp::IppOptions,
    /// `[https3d]` options and job cursors (3D printers).
    pub(crate) https3d: Arc<crate::http3d::Runtime>,
    /// `[privacy]`, applied to every record before it is encoded.
    pub(crate) privacy: Policy,
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    /// One flag per device task (configured and discovered).
    pub(crate) reachable: Mutex<Vec<Arc<AtomicBool>>>,
    /// Who polls which serial (dedupe of configured and discovered devices).
    pub(crate) registry: Mutex<Registry>,
    /// What is sent when.
    pub(crate) schedule: crate::config::ScheduleConfig,
    /// Interval due times are aligned on this (the connector's start).
    pub(crate) anchor: tokio::time::Instant,
    /// Last counter readings per device (saved across restarts; kept across reloads).
    pub(crate) counters: Arc<Mutex<CounterStore>>,
    /// Liveness by serial, carried in the connector heartbeat (kept across reloads).
    pub(crate) liveness: Arc<Mutex<BTreeMap<String, DeviceLiveness>>>,
}

impl Shared {
    /// Record whether `device_id` answered a poll at `at`.
    pub(crate) fn set_liveness(&self, device_id: &str, reachable: bool, at: i64) {
        let mut l = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        let e = l
            .entry(device_id.to_string())
            .or_insert_with(|| DeviceLiveness {
                device_id: device_id.to_string(),
                reachable,
                last_seen_at: None,
            });
        e.reachable = reachable;
        if reachable {
            e.last_seen_at = Some(at);
        }
    }

    /// A fresh schedule state: aligned on the connector's start; the first
    /// records wait for the end of the first round of polls.
    pub(crate) fn new_plan(&self) -> DevicePlan {
        DevicePlan::new(self.anchor).starting_at(self.anchor + self.poll_interval)
    }

    /// A device no longer polled here leaves the liveness list.
    pub(crate) fn forget_liveness(&self, device_id: &str) {
        self.liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device_id);
    }

    /// (devices, devices reachable at their last poll).
    fn reachable_counts(&self) -> (usize, usize) {
        let r = self.reachable.lock().unwrap_or_else(|p| p.into_inner());
        let up = r.iter().filter(|f| f.load(Ordering::Relaxed)).count();
        (r.len(), up)
    }
}

/// Which device task polls what.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Configured addresses, normalised `host:port`.
    configured_addresses: HashSet<String>,
    /// Serials polled by configured device tasks (known after their first poll).
    configured_serials: HashSet<String>,
    /// Discovered device tasks by serial: where to send a new address.
    discovered: HashMap<String, watch::Sender<crate::DeviceTarget>>,
}

fn normalised(address: &str) -> String {
    match split_host_port(address) {
        Ok((h, p)) => format!("{}:{p}", h.to_ascii_lowercase()),
        Err(_) => address.to_string(),
    }
}

/// One device task's inputs (kept by the supervisor to restart the task).
#[derive(Clone)]
pub(crate) struct Slot {
    /// Current target (discovery may change the address).
    target: watch::Receiver<crate::DeviceTarget>,
    /// This task's reachability flag.
    reachable: Arc<AtomicBool>,
    /// The serial a discovered device was found with (None: configured).
    discovered_serial: Option<String>,
    /// Busy mark read by the watchdog.
    pub(crate) progress: Progress,
    /// What the schedule sent last: kept across task restarts (watchdog,
    /// reload), so a restarted task does not send everything again.
    pub(crate) plan: Arc<Mutex<PlanState>>,
}

/// A device task's schedule state and the device it belongs to.
#[derive(Debug)]
pub(crate) struct PlanState {
    /// Serial of the device last answering at the slot's address.
    pub(crate) device_id: Option<String>,
    pub(crate) plan: DevicePlan,
}

/// Poll one device until shutdown (or, for a discovered device, until a
/// configured device claims its serial).
pub(crate) async fn device_task(mut slot: Slot, shared: Arc<Shared>, shutdown: Shutdown) {
    // 3D printers have their own loop (they also store finished jobs).
    let device = slot.target.borrow().clone();
    if device.protocol == crate::config::Protocol::Https3d {
        return crate::http3d::device_task(
            device,
            slot.reachable,
            slot.progress,
            slot.plan,
            shared,
            shutdown,
        )
        .await;
    }
    // Discovered devices are polled at once (they were either just found or
    // loaded from the state file on restart); configured ones are spread.
    let offset = match slot.discovered_serial {
        Some(_) => Duration::ZERO,
        None => start_offset(&device.address, shared.poll_interval),
    };
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(offset) => {}
    }
    let session = SnmpSession::new();
    let mut tracker = AlertTracker::new();
    // Regular polls keep this device's phase (its start offset); a poll at a
    // periodic due time is extra and does not move it.
    let mut next_regular = tokio::time::Instant::now();
    loop {
        let device = slot.target.borrow_and_update().clone();
        if let Some(serial) = &slot.discovered_serial {
            let reg = shared.registry.lock().unwrap_or_else(|p| p.into_inner());
            if reg.configured_serials.contains(serial) {
                tracing::info!(serial, address = %device.address, "discovered device is also configured; the configured entry polls it");
                slot.reachable.store(false, Ordering::Relaxed);
                return;
            }
        }
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = shared.semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        // Watchdog: busy from here until the records are stored.
        let busy = slot.progress.enter();
        crate::watchdog::stall_point(&device.address).await;
        let started = Instant::now();
        let polled_at = tokio::time::Instant::now();
        let regular = polled_at >= next_regular;
        // An in-flight poll may finish within the grace period after shutdown.
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(shared.shutdown_grace).await;
        };
        let result = tokio::select! {
            r = poll_configured(&device, &shared.snmp, &shared.ipp, &session) => r,
            _ = grace => return,
        };
        drop(permit);
        let reachable = &slot.reachable;
        match result {
            Ok(snapshot) => {
                reachable.store(true, Ordering::Relaxed);
                if slot.discovered_serial.is_none() {
                    shared
                        .registry
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .configured_serials
                        .insert(snapshot.identity.device_id.clone());
                }
                let mut records = records_of(&shared.origin, &snapshot, &mut tracker);
                let device_id = &snapshot.identity.device_id;
                shared.set_liveness(device_id, true, snapshot.polled_at);
                let decision = {
                    let mut ps = slot.plan.lock().unwrap_or_else(|p| p.into_inner());
                    if ps.device_id.as_deref() != Some(device_id.as_str()) {
                        // Another device answers at this address: a fresh plan.
                        if let Some(old) = ps.device_id.take() {
                            shared.forget_liveness(&old);
                        }
                        ps.plan = shared.new_plan();
                        ps.device_id = Some(device_id.clone());
                    }
                    let mut store = shared.counters.lock().unwrap_or_else(|p| p.into_inner());
                    let counters = store.device(device_id);
                    let observed = counters.observe(
                        &device.address,
                        snapshot
                            .identity
                            .sys_uptime_ticks
                            .and_then(|t| u64::try_from(t).ok()),
                        &snapshot.counters,
                        0,
                    );
                    let d = ps.plan.on_poll(
                        &shared.schedule,
                        tokio::time::Instant::now(),
                        &mut records,
                        observed,
                    );
                    if let Some(c) = records.counters.as_mut().filter(|_| d.counters) {
                        counters.mark_sent(&mut c.markers);
                    }
                    d
                };
                scheduled(&device.address, &decision);
                let stored =
                    match encode_records(&shared.kafka, &shared.privacy, &records, &decision) {
                        Ok(batch) => store(&shared.buffer, batch).await,
                        Err(e) => Err(e.into()),
                    };
                match stored {
                    Ok(outcome) => device_polled(
                        &device.address,
                        &snapshot.identity.device_id,
                        outcome.stored,
                        started.elapsed(),
                    ),
                    Err(e) => records_not_stored(&device.address, &e),
                }
            }
            Err(e) => {
                reachable.store(false, Ordering::Relaxed);
                {
                    let mut ps = slot.plan.lock().unwrap_or_else(|p| p.into_inner());
                    ps.plan.unanswered();
                    if let Some(id) = &ps.device_id {
                        shared.set_liveness(id, false, 0);
                    }
                }
                if let Some(raw) = e.raw_response() {
                    device_garbled(&device.address, &e, raw.len());
                    let batch = uuid::Uuid::now_v7().to_string();
                    let dl = publish::dead_letter(
                        &shared.kafka,
                        &device.address,
                        &e.to_string(),
                        raw,
                        &batch,
                    );
                    if let Err(se) = store(&shared.buffer, vec![dl]).await {
                        records_not_stored(&device.address, &se);
                    }
                } else if e.is_silence() {
                    device_unreachable(&device.address, &e);
                } else {
                    device_failed(&device.address, &e);
                }
            }
        }
        drop(busy);
        if regular {
            let delay = session.next_poll_delay(shared.poll_interval);
            if delay > shared.poll_interval {
                poll_backed_off(&device.address, delay);
            }
            next_regular = polled_at + delay;
        }
        // Status and counters fall due at the same aligned instant for every
        // device: poll then, so their records share producer batches.
        let next_due = slot
            .plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan
            .next_due();
        let wake = match next_due {
            Some(due) if due > polled_at && due < next_regular => due,
            _ => next_regular,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

fn scheduled(address: &str, d: &crate::schedule::Decision) {
    if let Some(reason) = d.status_reason {
        tracing::debug!(address, reason, "status record due");
        metrics::counter!("fleetpulse_edge_status_sent_total", "reason" => reason).increment(1);
    }
    if let Some(reason) = d.counters_reason {
        tracing::debug!(address, reason, "usage counters due");
        metrics::counter!("fleetpulse_edge_counters_sent_total", "reason" => reason).increment(1);
    }
}

fn poll_backed_off(address: &str, delay: Duration) {
    tracing::debug!(address, ?delay, "agent slow or silent: next poll delayed");
    metrics::counter!("fleetpulse_edge_poll_backoffs_total").increment(1);
}

/// Store a connector heartbeat every `interval` until shutdown.
///
/// The first one goes at the end of the first round of polls (start +
/// `poll_interval`, so it lists every device), the next ones on the slots
/// start + k × `interval`, where the devices' held records go too (one
/// request per slot; see [`crate::schedule`]). Reloads keep the start.
pub(crate) async fn heartbeat_task(shared: Arc<Shared>, interval: Duration, shutdown: Shutdown) {
    let first = shared.anchor + shared.poll_interval;
    let mut next = if tokio::time::Instant::now() <= first {
        first
    } else {
        crate::schedule::next_due(shared.anchor, interval, tokio::time::Instant::now())
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = crate::schedule::next_due(
            shared.anchor,
            interval,
            next.max(tokio::time::Instant::now()),
        );
        let o = &shared.origin;
        let (device_count, reachable) = shared.reachable_counts();
        let stats = shared.buffer.stats();
        let now = fleetpulse_core::now_millis();
        let hb = envelope!(
            o,
            o.connector_id,
            now,
            ConnectorHeartbeat {
                version: fleetpulse_core::VERSION.to_string(),
                device_count: i32::try_from(device_count).unwrap_or(i32::MAX),
                devices_reachable: i32::try_from(reachable).unwrap_or(i32::MAX),
                buffer_depth: i64::try_from(stats.records).unwrap_or(i64::MAX),
                oldest_buffered_age_ms: stats.oldest_enqueued_at.map(|t| (now - t).max(0)),
                last_upload_at: shared.buffer.last_upload_at(),
                uptime_s: i64::try_from(shared.anchor.elapsed().as_secs()).unwrap_or(i64::MAX),
                devices: shared
                    .liveness
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect(),
            }
        );
        let batch = uuid::Uuid::now_v7().to_string();
        let stored = match privacy::stored(&shared.kafka, &shared.privacy, &hb, &batch) {
            Ok(r) => store(&shared.buffer, vec![r]).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = stored {
            records_not_stored("connector", &e);
        }
        metrics::gauge!("fleetpulse_edge_devices_reachable").set(reachable as f64);
    }
}

/// Save the counter readings every `every` and once more after shutdown
/// (after `grace`, so in-flight polls record their readings first).
pub(crate) async fn counters_saver(
    counters: Arc<Mutex<CounterStore>>,
    every: Duration,
    grace: Duration,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => save_counters(&counters).await,
        }
    }
    tokio::time::sleep(grace).await;
    save_counters(&counters).await;
}

/// Save the counter readings (if changed) off the async threads.
async fn save_counters(counters: &Arc<Mutex<CounterStore>>) {
    let c = counters.clone();
    let _ = tokio::task::spawn_blocking(move || c.lock().unwrap_or_else(|p| p.into_inner()).save())
        .await;
}

// --- supervisor hooks (the tasks themselves are run by crate::supervisor) ---

/// A configured device's slot; its address is registered as configured.
pub(crate) fn configured_slot(shared: &Shared, d: &crate::DeviceTarget) -> Slot {
    shared
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .configured_addresses
        .insert(normalised(&d.address));
    let (_tx, rx) = watch::channel(d.clone());
    new_slot(shared, rx, None)
}

/// A configured device was removed: forget its address and its flag.
pub(crate) fn forget_configured(shared: &Shared, d: &crate::DeviceTarget, slot: &Slot) {
    shared
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .configured_addresses
        .remove(&normalised(&d.address));
    shared
        .reachable
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|f| !Arc::ptr_eq(f, &slot.reachable));
    let device_id = slot
        .plan
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .device_id
        .take();
    if let Some(id) = device_id {
        shared.forget_liveness(&id);
    }
}

/// The address a slot polls now (for logs).
pub(crate) fn slot_address(slot: &Slot) -> String {
    slot.target.borrow().address.clone()
}

// --- end of supervisor hooks ---

fn new_slot(
    shared: &Shared,
    target: watch::Receiver<crate::DeviceTarget>,
    discovered_serial: Option<String>,
) -> Slot {
    let reachable = Arc::new(AtomicBool::new(false));
    shared
        .reachable
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(reachable.clone());
    Slot {
        target,
        reachable,
        discovered_serial,
        progress: Progress::default(),
        plan: Arc::new(Mutex::new(PlanState {
            device_id: None,
            plan: shared.new_plan(),
        })),
    }
}

/// A discovered device: a new task (returned), a new address for an existing
/// one, or nothing when a configured entry already polls it.
pub(crate) fn adopt(shared: &Shared, d: Discovered) -> Option<Slot> {
    let mut reg = shared.registry.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = reg.discovered.get(&d.serial) {
        tx.send_if_modified(|t| {
            if *t == d.target {
                return false;
            }
            tracing::info!(serial = %d.serial, old = %t.address, new = %d.target.address, "polling a discovered printer at its new address");
            *t = d.target.clone();
            true
        });
        return None;
    }
    if reg.configured_serials.contains(&d.serial)
        || reg
            .configured_addresses
            .contains(&normalised(&d.target.address))
    {
        tracing::debug!(serial = %d.serial, address = %d.target.address, "discovered printer is configured already");
        return None;
    }
    let (tx, rx) = watch::channel(d.target.clone());
    reg.discovered.insert(d.serial.clone(), tx);
    drop(reg);
    tracing::info!(serial = %d.serial, address = %d.target.address, "polling a discovered printer");
    Some(new_slot(shared, rx, Some(d.serial)))
}
