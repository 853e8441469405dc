//! Printers polled per minute on one core, and the edge's memory.
//!
//! The simulated fleet runs in a child process (`fleetpulse sim`), so this
//! process's RSS is the edge's alone. The polls run on a current-thread tokio
//! runtime in one dedicated thread, with `poll_device` (the edge's own SNMP
//! client and mapping) at bounded concurrency; that thread's CPU time gives
//! "per core": polls ÷ edge CPU-seconds × 60. Wall-clock rate is reported too.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetpulse_edge::{DeviceTarget, SnmpOptions};
use futures::stream::StreamExt;

use super::procfs;

/// File descriptors the edge side may need beside the fleet's sockets.
const FD_HEADROOM: u64 = 1024;

/// Result of one fleet size.
#[derive(Debug, Clone)]
pub(crate) struct ThroughputResult {
    pub(crate) printers: usize,
    pub(crate) ok: usize,
    /// Failed polls by class.
    pub(crate) failed: BTreeMap<&'static str, usize>,
    pub(crate) wall: Duration,
    /// CPU time of the polling thread.
    pub(crate) edge_cpu: Option<Duration>,
    /// Peak RSS of this (edge) process during the run.
    pub(crate) edge_peak_rss: Option<u64>,
    /// Peak RSS of the simulator child.
    pub(crate) sim_peak_rss: Option<u64>,
    /// CPU time of the simulator child over the whole run.
    pub(crate) sim_cpu: Option<Duration>,
}

impl ThroughputResult {
    /// Successful polls per minute per CPU-second of the edge thread.
    pub(crate) fn per_min_per_core(&self) -> Option<f64> {
        let cpu = self.edge_cpu?.as_secs_f64();
        (cpu > 0.0).then(|| self.ok as f64 / cpu * 60.0)
    }

    /// Successful polls per wall-clock minute.
    pub(crate) fn per_min_wall(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9) * 60.0
    }

    pub(crate) fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }
}

/// The simulator child; killed when dropped.
struct SimChild {
    child: Child,
    log: PathBuf,
}

impl SimChild {
    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Check the open-files limit against what `printers` sockets need.
pub(crate) fn check_fd_limit(printers: usize) -> anyhow::Result<()> {
    let need = printers as u64 + FD_HEADROOM;
    match procfs::open_files_limit() {
        Some((Some(soft), hard)) if soft < need => anyhow::bail!(
            "{printers} simulated printers need about {need} open files, but the soft limit is {soft} \
             (hard {}); run `ulimit -n 65536` (within the hard limit) before the benchmark",
            hard.map_or("unlimited".to_string(), |h| h.to_string())
        ),
        _ => Ok(()),
    }
}

/// The first `base >= from` such that UDP ports `base..base + n` are all free.
pub(crate) fn free_port_range(from: u16, n: usize) -> anyhow::Result<u16> {
    let mut base = usize::from(from);
    while base + n <= 65_535 {
        let busy = (base..base + n).find(|port| {
            UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, *port as u16))).is_err()
        });
        match busy {
            Some(port) => base = port + 1,
            None => return Ok(base as u16),
        }
    }
    anyhow::bail!("no {n} consecutive free UDP ports at or above {from}")
}

fn spawn_sim(printers: usize, base_port: u16) -> anyhow::Result<SimChild> {
    let exe = std::env::current_exe().context("locating the fleetpulse binary")?;
    let log = std::env::temp_dir().join(format!(
        "fleetpulse-bench-sim-{}-{base_port}.log",
        std::process::id()
    ));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .args([
            "sim",
            "--printers",
            &printers.to_string(),
            "--base-port",
            &base_port.to_string(),
            "--seed",
            "7",
        ])
        // Every printer answers: the benchmark measures polling, not timeouts.
        .env("FLEETPULSE__SILENCE_PROBABILITY", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .context("starting `fleetpulse sim`")?;
    Ok(SimChild { child, log })
}

/// Wait until the last printer of the child fleet answers.
async fn wait_ready(sim: &mut SimChild, last: SocketAddr) -> anyhow::Result<()> {
    let opts = SnmpOptions {
        timeout: Duration::from_millis(200),
        retries: 0,
        poll_deadline: Duration::from_secs(2),
        ..Default::default()
    };
    let target = DeviceTarget::new(last.to_string(), "public");
    let started = Instant::now();
    loop {
        if fleetpulse_edge::poll_device(&target, &opts).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = sim.child.try_wait() {
            anyhow::bail!("`fleetpulse sim` exited with {status}:\n{}", sim.log_tail());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the simulated fleet did not answer within 60 s:\n{}",
            sim.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the polling thread measured.
struct EdgeRun {
    ok: usize,
    failed: BTreeMap<&'static str, usize>,
    wall: Duration,
    cpu: Option<Duration>,
}

/// Poll every target once on a current-thread runtime in this thread.
fn poll_all_on_one_thread(
    targets: Vec<DeviceTarget>,
    opts: SnmpOptions,
    concurrency: usize,
) -> anyhow::Result<EdgeRun> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the edge's current-thread runtime")?;
    Ok(rt.block_on(async move {
        let cpu0 = procfs::thread_cpu_time();
        let started = Instant::now();
        let mut results = futures::stream::iter(targets.iter())
            .map(|t| fleetpulse_edge::poll_device(t, &opts))
            .buffer_unordered(concurrency);
        let mut ok = 0;
        let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
        while let Some(r) = results.next().await {
            match r {
                Ok(snap) => {
                    std::hint::black_box(&snap);
                    ok += 1;
                }
                Err(e) => *failed.entry(e.class()).or_default() += 1,
            }
        }
        let wall = started.elapsed();
        let cpu = match (cpu0, procfs::thread_cpu_time()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        EdgeRun {
            ok,
            failed,
            wall,
            cpu,
        }
    }))
}

/// Start a fleet of `printers` in a child process and poll each printer once.
pub(crate) async fn measure(
    printers: usize,
    base_port_from: u16,
    concurrency: usize,
    opts: &SnmpOptions,
) -> anyhow::Result<ThroughputResult> {
    check_fd_limit(printers)?;
    let base = free_port_range(base_port_from, printers)?;
    let mut sim = spawn_sim(printers, base)?;
    let addr = |i: usize| SocketAddr::from((Ipv4Addr::LOCALHOST, base + i as u16));
    wait_ready(&mut sim, addr(printers - 1)).await?;
    let sim_pid = sim.child.id();
    let sim_cpu0 = procfs::process_cpu_time(sim_pid);
    let targets: Vec<DeviceTarget> = (0..printers)
        .map(|i| DeviceTarget::new(addr(i).to_string(), "public"))
        .collect();
    procfs::reset_peak_rss();
    let opts = opts.clone();
    let run = tokio::task::spawn_blocking(move || {
        std::thread::Builder::new()
            .name("edge-bench".into())
            .spawn(move || poll_all_on_one_thread(targets, opts, concurrency))
            .map_err(anyhow::Error::from)?
            .join()
            .map_err(|_| anyhow::anyhow!("the polling thread panicked"))?
    })
    .await??;
    let edge_peak_rss = procfs::rss("self").map(|(peak, _)| peak);
    let sim_peak_rss = procfs::rss(&sim_pid.to_string()).map(|(peak, _)| peak);
    let sim_cpu = match (sim_cpu0, procfs::process_cpu_time(sim_pid)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    drop(sim);
    Ok(ThroughputResult {
        printers,
        ok: run.ok,
        failed: run.failed,
        wall: run.wall,
        edge_cpu: run.cpu,
        edge_peak_rss,
        sim_peak_rss,
        sim_cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_free_range_past_a_busy_port() {
        let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let base = free_port_range(port - 2, 4).unwrap();
        assert!(base > port, "{base} must skip busy port {port}");
        assert!(free_port_range(65_534, 10).is_err());
    }

    #[test]
    fn rates() {
        let r = ThroughputResult {
            printers: 100,
            ok: 90,
            failed: BTreeMap::from([("snmp_timeout", 10)]),
            wall: Duration::from_secs(30),
            edge_cpu: Some(Duration::from_secs(3)),
            edge_peak_rss: None,
            sim_peak_rss: None,
            sim_cpu: None,
        };
        assert_eq!(r.per_min_per_core(), Some(1800.0));
        assert_eq!(r.per_min_wall(), 180.0);
        assert_eq!(r.failed_total(), 10);
    }
}
