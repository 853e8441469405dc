//! Scheduling: one long-lived task per device, a semaphore bounding
//! concurrent polls, a heartbeat task, and the records each poll produces.
//!
//! Each device task sleeps a deterministic offset inside the first interval
//! (a hash of its address) before its first poll, so 10 000 devices spread
//! over the interval instead of bursting at start. A device's polls never
//! overlap (its task awaits one before the next tick), and a slow device
//! cannot delay others beyond its semaphore permit, which is bounded by the
//! poll deadline.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetpulse_core::records::{
    AlertEvent, AlertTransition, ConnectorHeartbeat, DeviceHeartbeat, DeviceStatus, UsageCounters,
    SCHEMA_VERSION,
};
use fleetpulse_core::{new_event_id, Shutdown};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::alerts::{AlertRow, AlertTracker};
use crate::config::{DeviceConfig, EdgeConfig};
use crate::device::{poll_configured, DeviceSnapshot, PollError};
use crate::publish::{PublishError, Publisher};
use crate::snmp::SnmpOptions;

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

/// Publish one poll's records under one batch id.
async fn publish_records(p: &Publisher, r: &PollRecords) -> Result<usize, PublishError> {
    let batch = uuid::Uuid::now_v7().to_string();
    p.publish(&r.heartbeat, &batch).await?;
    p.publish(&r.status, &batch).await?;
    let mut n = 2;
    if let Some(c) = &r.counters {
        p.publish(c, &batch).await?;
        n += 1;
    }
    for a in &r.alerts {
        p.publish(a, &batch).await?;
        n += 1;
    }
    Ok(n)
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

fn records_not_published(address: &str, e: &PublishError) {
    tracing::error!(address, error = %e, "records of a poll could not be queued for Kafka");
    metrics::counter!("fleetpulse_edge_publish_failures_total").increment(1);
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
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) semaphore: Arc<Semaphore>,
    pub(crate) snmp: SnmpOptions,
    pub(crate) ipp: crate::ipp::IppOptions,
    /// `[https3d]` options and job cursors (3D printers).
    pub(crate) https3d: crate::http3d::Runtime,
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) reachable: Vec<AtomicBool>,
}

/// Poll one device forever (until shutdown).
pub(crate) async fn device_task(
    i: usize,
    device: DeviceConfig,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    // 3D printers have their own loop (they also publish jobs).
    if device.protocol == crate::config::Protocol::Https3d {
        return crate::http3d::device_task(i, device, shared, shutdown).await;
    }
    let offset = start_offset(&device.address, shared.poll_interval);
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(offset) => {}
    }
    let mut ticker = tokio::time::interval(shared.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = AlertTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = shared.semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let started = Instant::now();
        // An in-flight poll may finish within the grace period after shutdown.
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(shared.shutdown_grace).await;
        };
        let result = tokio::select! {
            r = poll_configured(&device, &shared.snmp, &shared.ipp) => r,
            _ = grace => return,
        };
        drop(permit);
        let reachable = &shared.reachable[i];
        match result {
            Ok(snapshot) => {
                reachable.store(true, Ordering::Relaxed);
                let records = records_of(&shared.origin, &snapshot, &mut tracker);
                match publish_records(&shared.publisher, &records).await {
                    Ok(n) => device_polled(
                        &device.address,
                        &snapshot.identity.device_id,
                        n,
                        started.elapsed(),
                    ),
                    Err(e) => records_not_published(&device.address, &e),
                }
            }
            Err(e) => {
                reachable.store(false, Ordering::Relaxed);
                if let Some(raw) = e.raw_response() {
                    device_garbled(&device.address, &e, raw.len());
                    let batch = uuid::Uuid::now_v7().to_string();
                    if let Err(pe) = shared
                        .publisher
                        .dead_letter_snmp(&device.address, &e.to_string(), raw, &batch)
                        .await
                    {
                        records_not_published(&device.address, &pe);
                    }
                } else if e.is_silence() {
                    device_unreachable(&device.address, &e);
                } else {
                    device_failed(&device.address, &e);
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// Publish a connector heartbeat every `interval` until shutdown.
pub(crate) async fn heartbeat_task(shared: Arc<Shared>, interval: Duration, shutdown: Shutdown) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let o = &shared.origin;
        let reachable = shared
            .reachable
            .iter()
            .filter(|r| r.load(Ordering::Relaxed))
            .count();
        let hb = envelope!(
            o,
            o.connector_id,
            fleetpulse_core::now_millis(),
            ConnectorHeartbeat {
                version: fleetpulse_core::VERSION.to_string(),
                device_count: i32::try_from(shared.reachable.len()).unwrap_or(i32::MAX),
                devices_reachable: i32::try_from(reachable).unwrap_or(i32::MAX),
                buffer_depth: 0,
                oldest_buffered_age_ms: None,
                last_upload_at: shared.publisher.last_upload_at(),
                uptime_s: i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX),
            }
        );
        let batch = uuid::Uuid::now_v7().to_string();
        if let Err(e) = shared.publisher.publish(&hb, &batch).await {
            records_not_published("connector", &e);
        }
        metrics::gauge!("fleetpulse_edge_devices_reachable").set(reachable as f64);
    }
}

/// Spawn every device task and the heartbeat task; wait for all after shutdown.
pub(crate) async fn run_tasks(config: &EdgeConfig, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tasks = JoinSet::new();
    for (i, d) in config.devices.iter().enumerate() {
        tasks.spawn(device_task(i, d.clone(), shared.clone(), shutdown.clone()));
    }
    tasks.spawn(heartbeat_task(
        shared.clone(),
        config.heartbeat_interval,
        shutdown.clone(),
    ));
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "an edge task ended abnormally");
        }
    }
}
