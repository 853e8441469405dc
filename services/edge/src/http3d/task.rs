//! The polling loop of one `https3d` device, and the job cursor store.
//!
//! Same scheduling as the SNMP/IPP devices (deterministic start offset,
//! shared semaphore, polls never overlap, grace period at shutdown) and the
//! same `[schedule]` ([`crate::schedule`]): the status goes at the first
//! poll, every `status_interval` and on a significant change, and — since
//! it carries the printer's cumulative usage (agent used and hours per
//! printhead) — also on the counter schedule: every `counters_interval` or
//! after `counters_after_jobs` finished jobs; a device heartbeat goes when
//! the printer answers again after silence (`on_change`), and its liveness
//! travels in the connector heartbeat. Jobs go as they finish: after each
//! poll the finished jobs after the cursor are appended to the
//! store-and-forward [`crate::buffer`] with whatever the schedule sends (the
//! forwarder signs and sends them like every other record), and only once
//! all of those jobs are stored does the cursor move (and get written to
//! `state_file`). A crash between storing and writing repeats those jobs on
//! restart rather than losing them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_core::Shutdown;
use serde::{Deserialize, Serialize};

use super::{map, poll_3d, url_of, Https3dClient, Https3dError, Https3dOptions, Snapshot3d};
use crate::buffer::Class;
use crate::config::DeviceConfig;
use crate::poller::{PlanState, PollRecords, Shared, StoreError};
use crate::privacy;
use crate::schedule::Decision;

/// What `state_file` holds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct CursorFile {
    version: u32,
    /// device id → last published job id.
    last_published_job: BTreeMap<String, String>,
}

/// `[https3d]` options and the job cursors, shared by all 3D device tasks.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) options: Https3dOptions,
    cursors: tokio::sync::Mutex<BTreeMap<String, String>>,
}

impl Runtime {
    /// Load the cursors from `options.state_file` (a missing file is an
    /// empty store; an unreadable one is logged and ignored: jobs may then
    /// be published again, never lost).
    pub(crate) fn new(options: &Https3dOptions) -> Self {
        let cursors = match &options.state_file {
            Some(path) => load(path),
            None => BTreeMap::new(),
        };
        Runtime {
            options: options.clone(),
            cursors: tokio::sync::Mutex::new(cursors),
        }
    }

    pub(crate) async fn last_published(&self, device_id: &str) -> Option<String> {
        self.cursors.lock().await.get(device_id).cloned()
    }

    /// Move a device's cursor and persist all cursors.
    pub(crate) async fn advance(&self, device_id: &str, job_id: &str) {
        let mut cursors = self.cursors.lock().await;
        cursors.insert(device_id.to_string(), job_id.to_string());
        if let Some(path) = &self.options.state_file {
            let file = CursorFile {
                version: 1,
                last_published_job: cursors.clone(),
            };
            if let Err(e) = save(path, &file).await {
                state_not_saved(path, &e);
            }
        }
    }
}

fn load(path: &Path) -> BTreeMap<String, String> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<CursorFile>(&bytes) {
            Ok(f) => f.last_published_job,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "3D job cursor file unreadable; starting without it (finished jobs may be published again)");
                metrics::counter!("fleetpulse_edge_https3d_state_errors_total").increment(1);
                BTreeMap::new()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "3D job cursor file unreadable; starting without it (finished jobs may be published again)");
            metrics::counter!("fleetpulse_edge_https3d_state_errors_total").increment(1);
            BTreeMap::new()
        }
    }
}

async fn save(path: &Path, file: &CursorFile) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

/// Replace `path` with `bytes` so that after a crash or a power loss it
/// holds the old or the new content, never a torn or empty file, and the
/// new content stays once this returns: temp file, fsync, rename, fsync of
/// the directory (which makes the rename durable).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    synced("file");
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    synced("directory");
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// The fsyncs [`write_atomic`] did on this thread, in order (tests).
    static SYNCS: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
fn synced(what: &'static str) {
    SYNCS.with(|s| s.borrow_mut().push(what));
}

#[cfg(not(test))]
fn synced(_: &'static str) {}

fn state_not_saved(path: &Path, e: &std::io::Error) {
    tracing::warn!(path = %path.display(), error = %e, "3D job cursor not saved; a restart may publish some jobs again");
    metrics::counter!("fleetpulse_edge_https3d_state_errors_total").increment(1);
}

fn polled(address: &str, device_id: &str, records: usize, jobs: usize, elapsed: Duration) {
    tracing::debug!(
        address,
        device_id,
        records,
        jobs,
        ?elapsed,
        "3D printer polled"
    );
    metrics::counter!("fleetpulse_edge_polls_total", "outcome" => "ok").increment(1);
    metrics::histogram!("fleetpulse_edge_poll_seconds").record(elapsed.as_secs_f64());
    metrics::counter!("fleetpulse_edge_https3d_jobs_published_total").increment(jobs as u64);
}

fn poll_failed(address: &str, e: &Https3dError) {
    if e.is_silence() {
        tracing::warn!(address, error = %e, class = e.class(), "3D printer did not answer; no records this round");
        metrics::counter!("fleetpulse_edge_polls_total", "outcome" => "unreachable").increment(1);
    } else {
        tracing::warn!(address, error = %e, class = e.class(), retriable = e.is_retriable(), "3D printer poll failed");
        metrics::counter!("fleetpulse_edge_polls_total", "outcome" => e.class()).increment(1);
    }
}

fn not_stored(address: &str, e: &StoreError) {
    tracing::error!(address, error = %e, "records of a 3D printer poll could not be stored in the buffer; they are lost (jobs are offered again next poll)");
    metrics::counter!("fleetpulse_edge_buffer_errors_total").increment(1);
}

fn client_unusable(address: &str, e: &Https3dError) {
    tracing::error!(address, error = %e, class = e.class(), "3D printer cannot be polled with this configuration; not polling it");
    metrics::counter!("fleetpulse_edge_polls_total", "outcome" => e.class()).increment(1);
}

/// What storing one poll's records achieved.
struct Stored {
    records: usize,
    jobs: usize,
    /// Last job id stored (the new cursor), if the cursor may move.
    last_job: Option<String>,
}

/// Encode what the schedule sends of a poll (heartbeat, status) and every
/// finished job due, under one batch id, and append them to the buffer in
/// one go (one fsync). The cursor may move only when every job was stored:
/// were one rejected (a buffer full of never-evicted records), all of this
/// poll's jobs are offered again next poll — some may then be sent twice,
/// none is lost.
async fn store_poll(
    shared: &Shared,
    s: &Snapshot3d,
    records: &PollRecords,
    decision: &Decision,
    due: &[&super::Job3d],
) -> Result<Stored, StoreError> {
    let o = &shared.origin;
    let kafka = &shared.kafka;
    let policy = &shared.privacy;
    let batch = uuid::Uuid::now_v7().to_string();
    let mut out = Vec::new();
    if decision.heartbeat {
        out.push(privacy::stored(kafka, policy, &records.heartbeat, &batch)?);
    }
    if decision.status {
        out.push(privacy::stored(kafka, policy, &records.status, &batch)?);
    }
    for j in due {
        let record = map::job_record(o, &s.device.device_id, s.polled_at, j);
        out.push(privacy::stored(kafka, policy, &record, &batch)?);
    }
    if out.is_empty() {
        return Ok(Stored {
            records: 0,
            jobs: 0,
            last_job: None,
        });
    }
    let outcome = crate::poller::store(&shared.buffer, out).await?;
    let jobs_rejected = outcome
        .rejected
        .iter()
        .filter(|r| r.class() == Class::Job)
        .count();
    Ok(Stored {
        records: outcome.stored,
        jobs: due.len() - jobs_rejected.min(due.len()),
        last_job: (jobs_rejected == 0)
            .then(|| due.last().map(|j| j.job_id.clone()))
            .flatten(),
    })
}

/// What the schedule sends of one answered poll ([`DevicePlan::on_poll_3d`]):
/// `due` finished jobs count towards `schedule.counters_after_jobs`.
fn decide(
    shared: &Shared,
    plan: &Mutex<PlanState>,
    address: &str,
    s: &Snapshot3d,
    due: usize,
) -> (PollRecords, Decision) {
    let o = &shared.origin;
    let id = &s.device.device_id;
    let mut records = PollRecords {
        heartbeat: map::heartbeat(o, s),
        status: map::status(o, s),
        counters: None,
        alerts: Vec::new(),
    };
    let mut ps = plan.lock().unwrap_or_else(|p| p.into_inner());
    if ps.device_id.as_deref() != Some(id.as_str()) {
        // Another device answers at this address: a fresh plan.
        if let Some(old) = ps.device_id.take() {
            shared.forget_liveness(&old);
        }
        ps.plan = shared.new_plan();
        ps.device_id = Some(id.clone());
    }
    let mut store = shared.counters.lock().unwrap_or_else(|p| p.into_inner());
    let counters = store.device(id);
    let observed = counters.observe(address, None, &[], u64::try_from(due).unwrap_or(u64::MAX));
    let d = ps.plan.on_poll_3d(
        &shared.schedule,
        tokio::time::Instant::now(),
        &mut records,
        observed,
    );
    if d.counters {
        // The status about to be stored reports the usage: count jobs anew.
        counters.mark_sent(&mut []);
    }
    (records, d)
}

fn scheduled(address: &str, d: &Decision) {
    if let Some(reason) = d.status_reason {
        tracing::debug!(address, reason, "3D printer status due");
        metrics::counter!("fleetpulse_edge_status_sent_total", "reason" => reason).increment(1);
    }
}

/// Poll one `https3d` device forever (until shutdown).
pub(crate) async fn device_task(
    device: DeviceConfig,
    reachable: Arc<AtomicBool>,
    progress: crate::watchdog::Progress,
    plan: Arc<Mutex<PlanState>>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let rt = &shared.https3d;
    let client = match Https3dClient::new(&url_of(&device), &device.tls.clone().unwrap_or_default())
    {
        Ok(c) => c,
        Err(e) => {
            client_unusable(&device.address, &e);
            return;
        }
    };
    let offset = crate::poller::start_offset(&device.address, shared.poll_interval);
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(offset) => {}
    }
    let mut ticker = tokio::time::interval(shared.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        // Watchdog: busy from here until the records are stored.
        let busy = progress.enter();
        crate::watchdog::stall_point(&device.address).await;
        let started = Instant::now();
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(shared.shutdown_grace).await;
        };
        // The cursor is looked up once the device id is known.
        let cursors = rt.cursors.lock().await.clone();
        let result = tokio::select! {
            r = poll_3d(&client, &rt.options, |id| cursors.get(id).cloned()) => r,
            _ = grace => return,
        };
        drop(permit);
        match result {
            Ok(snap) => {
                reachable.store(true, Ordering::Relaxed);
                let id = &snap.device.device_id;
                shared.set_liveness(id, true, snap.polled_at);
                let last = rt.last_published(id).await;
                let due = map::jobs_to_emit(&snap.jobs, last.as_deref());
                let (records, decision) = decide(&shared, &plan, &device.address, &snap, due.len());
                scheduled(&device.address, &decision);
                match store_poll(&shared, &snap, &records, &decision, &due).await {
                    Ok(out) => {
                        if let Some(job) = &out.last_job {
                            rt.advance(id, job).await;
                        }
                        polled(
                            &device.address,
                            id,
                            out.records,
                            out.jobs,
                            started.elapsed(),
                        );
                    }
                    Err(e) => not_stored(&device.address, &e),
                }
            }
            Err(e) => {
                reachable.store(false, Ordering::Relaxed);
                {
                    let mut ps = plan.lock().unwrap_or_else(|p| p.into_inner());
                    ps.plan.unanswered();
                    if let Some(id) = &ps.device_id {
                        shared.set_liveness(id, false, 0);
                    }
                }
                poll_failed(&device.address, &e);
            }
        }
        drop(busy);
        if shutdown.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod cursor_file_tests {
    use super::*;

    /// The cursor file is fsynced before the rename and its directory after,
    /// and reads back.
    #[test]
    fn cursor_file_is_written_durably() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state").join("jobs.json");
        let file = CursorFile {
            version: 1,
            last_published_job: BTreeMap::from([("dev".to_string(), "job-7".to_string())]),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("json");
        SYNCS.with(|s| s.borrow_mut().clear());
        write_atomic(&path, &bytes).expect("write");
        assert_eq!(SYNCS.with(|s| s.borrow().clone()), ["file", "directory"]);
        assert_eq!(load(&path), file.last_published_job);
        assert!(
            !path.with_extension("json.tmp").exists(),
            "temp file renamed"
        );
    }
}
