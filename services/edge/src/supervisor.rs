//! The supervisor: owns every device task and the heartbeat task; restarts
//! stuck ones (the [`crate::watchdog`]), adopts discovered printers, and
//! applies configuration reloads ([`crate::reload`]) while running.
//!
//! Each task's inputs (its [`Slot`]) are kept here, so a task can be
//! aborted and respawned with the same target, reachability flag and
//! discovered serial. A reload that only changes the device list, the
//! privacy policy or the watchdog is applied without touching other tasks;
//! one that changes shared poll settings (intervals, `[schedule]`, `[snmp]`,
//! `[ipp]`, `[https3d]`, `max_concurrent_polls`, `shutdown_grace`) rebuilds
//! the shared state and restarts every task (their alert state starts
//! afresh; what the schedule last sent, the counter readings, the liveness
//! list and the interval alignment carry over, so the new schedule applies
//! from the next poll without resending everything).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fleetpulse_core::Shutdown;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, Id, JoinSet};

use crate::config::EdgeConfig;
use crate::discovery::Discovered;
use crate::poller::{self, Shared, Slot};
use crate::reload::{self, Scope};
use crate::watchdog;
use crate::DeviceConfig;

/// One running device task.
struct Entry {
    slot: Slot,
    abort: AbortHandle,
    /// The configured entry it polls (None: discovered).
    configured: Option<DeviceConfig>,
}

pub(crate) struct Supervisor {
    config: EdgeConfig,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    entries: HashMap<Id, Entry>,
    heartbeat: Option<AbortHandle>,
    shutdown: Shutdown,
    forwarder_alive: Arc<AtomicBool>,
    healthy: bool,
}

/// A new [`Shared`] for `config`, carrying over what outlives a restart of
/// the tasks (registry, reachability flags, privacy policy, 3D cursors when
/// `[https3d]` is unchanged).
pub(crate) fn shared_for(
    config: &EdgeConfig,
    buffer: Arc<crate::Buffer>,
    previous: Option<(&Shared, &EdgeConfig)>,
) -> Shared {
    let (registry, reachable, privacy, https3d, anchor, counters, liveness) = match previous {
        Some((old, old_config)) => {
            old.privacy.set(config.privacy);
            let https3d = if old_config.https3d == config.https3d {
                old.https3d.clone()
            } else {
                Arc::new(crate::http3d::Runtime::new(&config.https3d))
            };
            (
                std::mem::take(&mut *old.registry.lock().unwrap_or_else(|p| p.into_inner())),
                std::mem::take(&mut *old.reachable.lock().unwrap_or_else(|p| p.into_inner())),
                old.privacy.clone(),
                https3d,
                // Due times stay aligned; counter readings and liveness carry over.
                old.anchor,
                old.counters.clone(),
                old.liveness.clone(),
            )
        }
        None => (
            Default::default(),
            Default::default(),
            crate::privacy::Policy::new(config.privacy),
            Arc::new(crate::http3d::Runtime::new(&config.https3d)),
            tokio::time::Instant::now(),
            Arc::new(std::sync::Mutex::new(crate::counters::CounterStore::load(
                Some(counters_state_file(config)),
            ))),
            Default::default(),
        ),
    };
    Shared {
        origin: poller::Origin {
            tenant_id: config.tenant_id.clone(),
            connector_id: config.connector_id.clone(),
        },
        kafka: config.kafka.clone(),
        buffer,
        semaphore: Arc::new(Semaphore::new(config.max_concurrent_polls)),
        snmp: config.snmp.clone(),
        ipp: config.ipp.clone(),
        https3d,
        privacy,
        poll_interval: config.poll_interval,
        shutdown_grace: config.shutdown_grace,
        reachable: std::sync::Mutex::new(reachable),
        registry: std::sync::Mutex::new(registry),
        schedule: config.schedule.clone(),
        anchor,
        counters,
        liveness,
    }
}

/// Where the last counter readings are kept (`schedule.counters_state_file`,
/// default `counters.json` next to the buffer).
pub(crate) fn counters_state_file(config: &EdgeConfig) -> std::path::PathBuf {
    config
        .schedule
        .counters_state_file
        .clone()
        .unwrap_or_else(|| config.buffer.dir.join(crate::buffer::COUNTERS_FILE))
}

impl Supervisor {
    pub(crate) fn new(
        config: EdgeConfig,
        shared: Arc<Shared>,
        shutdown: Shutdown,
        forwarder_alive: Arc<AtomicBool>,
    ) -> Self {
        Supervisor {
            config,
            shared,
            tasks: JoinSet::new(),
            entries: HashMap::new(),
            heartbeat: None,
            shutdown,
            forwarder_alive,
            healthy: true,
        }
    }

    fn spawn(&mut self, slot: Slot, configured: Option<DeviceConfig>) {
        let abort = self.tasks.spawn(poller::device_task(
            slot.clone(),
            self.shared.clone(),
            self.shutdown.clone(),
        ));
        self.entries.insert(
            abort.id(),
            Entry {
                slot,
                abort,
                configured,
            },
        );
    }

    fn spawn_heartbeat(&mut self) {
        self.heartbeat = Some(self.tasks.spawn(poller::heartbeat_task(
            self.shared.clone(),
            self.config.heartbeat_interval,
            self.shutdown.clone(),
        )));
    }

    fn spawn_configured(&mut self, d: &DeviceConfig) {
        let slot = poller::configured_slot(&self.shared, d);
        self.spawn(slot, Some(d.clone()));
    }

    /// Run until shutdown and every task has ended.
    pub(crate) async fn run(
        mut self,
        mut discovered: Option<mpsc::Receiver<Discovered>>,
        mut updates: Option<watch::Receiver<EdgeConfig>>,
    ) {
        for d in self.config.devices.clone() {
            self.spawn_configured(&d);
        }
        self.spawn_heartbeat();
        let mut tick = tokio::time::interval(self.config.watchdog.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_found = async {
                match discovered.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let next_update = async {
                match updates.as_mut() {
                    Some(rx) if !self.shutdown.is_cancelled() => match rx.changed().await {
                        Ok(()) => Some(rx.borrow_and_update().clone()),
                        Err(_) => None,
                    },
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                d = next_found => match d {
                    Some(d) => {
                        if let Some(slot) = poller::adopt(&self.shared, d) {
                            self.spawn(slot, None);
                        }
                    }
                    None => discovered = None,
                },
                u = next_update => match u {
                    Some(new) => self.reload(new),
                    None => updates = None,
                },
                _ = tick.tick(), if !self.shutdown.is_cancelled() => self.check(),
                r = self.tasks.join_next_with_id() => match r {
                    None => break,
                    Some(Ok((id, ()))) => {
                        self.entries.remove(&id);
                    }
                    Some(Err(e)) if e.is_cancelled() => {}
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "an edge task ended abnormally");
                        // A panicked device task is restarted like a stuck one.
                        if let Some(entry) = self.entries.remove(&e.id()) {
                            if !self.shutdown.is_cancelled() {
                                watchdog::poller_restarted(&poller::slot_address(&entry.slot), Default::default());
                                self.spawn(entry.slot, entry.configured);
                            }
                        }
                    }
                },
            }
        }
    }

    /// The watchdog's round: restart stuck device tasks, update health.
    fn check(&mut self) {
        let stall_after = self.config.watchdog.stall_after_for(&self.config);
        let stuck: Vec<Id> = self
            .entries
            .iter()
            .filter(|(_, e)| e.slot.progress.busy_for().is_some_and(|b| b > stall_after))
            .map(|(id, _)| *id)
            .collect();
        let tasks = self.entries.len();
        for id in &stuck {
            if let Some(entry) = self.entries.remove(id) {
                let busy = entry.slot.progress.busy_for().unwrap_or_default();
                entry.abort.abort();
                watchdog::poller_restarted(&poller::slot_address(&entry.slot), busy);
                // A fresh busy mark: the aborted task's guard clears it only when dropped.
                let mut slot = entry.slot;
                slot.progress = Default::default();
                self.spawn(slot, entry.configured);
            }
        }
        let (healthy, reason) = watchdog::assess(
            self.forwarder_alive.load(Ordering::Relaxed),
            stuck.len(),
            tasks,
            self.config.watchdog.unhealthy_fraction,
        );
        if healthy != self.healthy {
            self.healthy = healthy;
            watchdog::health_changed(healthy, reason);
        }
    }

    /// Apply a new configuration, or reject it and keep the current one.
    fn reload(&mut self, new: EdgeConfig) {
        let scope = match reload::plan(&self.config, &new) {
            Ok(s) => s,
            Err(rejected) => return reload::rejected(&rejected),
        };
        let old = std::mem::replace(&mut self.config, new);
        match scope {
            Scope::Unchanged => reload::unchanged(),
            Scope::Live => {
                self.shared.privacy.set(self.config.privacy);
                let (added, removed) = self.apply_devices(&old);
                reload::applied("live", added, removed);
            }
            Scope::RestartAll => {
                let shared = shared_for(
                    &self.config,
                    self.shared.buffer.clone(),
                    Some((&self.shared, &old)),
                );
                self.shared = Arc::new(shared);
                // Removed devices first (their flags and addresses go), then all others restart.
                let (added, removed) = self.apply_devices(&old);
                let entries: Vec<Entry> = self.entries.drain().map(|(_, e)| e).collect();
                for e in entries {
                    e.abort.abort();
                    let mut slot = e.slot;
                    slot.progress = Default::default();
                    self.spawn(slot, e.configured);
                }
                if let Some(h) = self.heartbeat.take() {
                    h.abort();
                }
                self.spawn_heartbeat();
                reload::applied("restarted all pollers", added, removed);
            }
        }
    }

    /// Stop the tasks of removed devices, start those of added ones.
    fn apply_devices(&mut self, old: &EdgeConfig) -> (usize, usize) {
        let removed: Vec<Id> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.configured
                    .as_ref()
                    .is_some_and(|d| !self.config.devices.contains(d))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &removed {
            if let Some(e) = self.entries.remove(id) {
                e.abort.abort();
                if let Some(d) = &e.configured {
                    poller::forget_configured(&self.shared, d, &e.slot);
                }
            }
        }
        let added: Vec<DeviceConfig> = self
            .config
            .devices
            .iter()
            .filter(|d| !old.devices.contains(d))
            .cloned()
            .collect();
        for d in &added {
            self.spawn_configured(d);
        }
        (added.len(), removed.len())
    }
}
