//! `fleetpulse bench process`: events per second per core through the
//! processor's decode, verify, anonymise, Arrow and zstd Parquet, next to a
//! Python baseline doing the same on the same input.
//!
//! The input is built once, in memory, as the edge would publish it: records
//! of a realistic mix of types (mostly heartbeats, usage counters and
//! statuses) from a fleet of devices, each Avro single-object encoded and
//! signed with the connector's key, with the `fps` signature header and a
//! Kafka timestamp. No broker is in the loop on either side.
//!
//! A "partition" is one independent pipeline instance
//! ([`fleetpulse_processor::batch::PartitionWriter`]) on its own thread,
//! reading its own copy of the input, as a processor does for each Kafka
//! partition it owns. Per core means per CPU-second actually consumed: the
//! events all partitions processed divided by the sum of their threads' CPU
//! time (`/proc/thread-self/schedstat`), so idle or oversubscribed cores
//! neither inflate nor deflate it. The wall-clock rate is printed beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::pseudonym::Pseudonymizer;
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::signing::{SigningKey, HDR_SIG};
use fleetpulse_core::{codec, samples};
use fleetpulse_processor::batch::{
    Encoder, Message, PartitionStats, PartitionWriter, Plans, Sink, Stages,
};
use fleetpulse_processor::{Transformer, Verifier};

use super::procfs;

/// Connector of the generated records (the samples' `connector_id`).
pub(super) const CONNECTOR: &str = "conn-1";
/// Its signing secret (benchmark only).
pub(super) const SECRET: &[u8] = b"bench-connector-secret-0001";
/// Pseudonym key (benchmark only) and its id.
pub(super) const PSEUDONYM_KEY: &[u8] = b"bench-pseudonym-key-0123456789";
pub(super) const PSEUDONYM_KEY_ID: &str = "bench-v1";
/// Devices in the simulated fleet.
const DEVICES: usize = 5_000;
/// Record mix per 100 records, as the edge publishes them: a heartbeat per
/// poll, counters and status most polls, alerts, jobs and the connector's
/// own heartbeat rarely.
const MIX: [(RecordType, u32); 6] = [
    (RecordType::DeviceHeartbeat, 40),
    (RecordType::UsageCounters, 27),
    (RecordType::DeviceStatus, 27),
    (RecordType::AlertEvent, 3),
    (RecordType::JobRecord, 2),
    (RecordType::ConnectorHeartbeat, 1),
];
/// Target: events per second per core.
const TARGET_PER_CORE: f64 = 1_000_000.0;
/// Target: times the Python baseline.
const TARGET_RATIO: f64 = 10.0;
/// The Python baseline, shipped in the binary so the bench runs anywhere.
const BASELINE_PY: &str = include_str!("../../bench/process_baseline.py");

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ProcessArgs {
    /// CI mode: 20,000 messages.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Messages in the pre-encoded input; every partition processes all of
    /// them [default: 300,000; quick: 20,000].
    #[arg(long)]
    pub(crate) events: Option<usize>,
    /// Partition counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4])]
    pub(crate) partitions: Vec<usize>,
    /// Rows per Parquet file (per table and partition).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) rows_per_file: usize,
    /// Encoders to run: columnar (the processor's), generic (value tree ->
    /// JSON -> arrow-json, for comparison) or both.
    #[arg(long, default_value = "both", value_parser = ["columnar", "generic", "both"])]
    pub(crate) encoder: String,
    /// Also write the Parquet files of each encoder's first run here
    /// (`<dir>/<encoder>/<table>/part-<partition>-<first_offset>.parquet`);
    /// by default files are written to memory and dropped.
    #[arg(long)]
    pub(crate) out_dir: Option<PathBuf>,
    /// Python interpreter of the baseline.
    #[arg(long, default_value = "python3")]
    pub(crate) python: String,
    /// Skip the Python baseline.
    #[arg(long)]
    pub(crate) no_python: bool,
    /// Partition counts of the memory-bound runs (the real `fleetpulse
    /// process` as a child process) [default: 16,512; quick: 64].
    #[arg(long, value_delimiter = ',')]
    pub(crate) memory_partitions: Option<Vec<i32>>,
    /// `lake.buffer_budget_bytes` of the memory-bound runs, in MiB
    /// [default: 32,128; quick: 4].
    #[arg(long, value_delimiter = ',')]
    pub(crate) memory_budgets_mib: Option<Vec<u64>>,
    /// Skip the memory-bound runs.
    #[arg(long)]
    pub(crate) no_memory: bool,
}

impl ProcessArgs {
    fn events(&self) -> usize {
        self.events
            .unwrap_or(if self.quick { 20_000 } else { 300_000 })
            .max(1)
    }

    /// The encoders to run, the one the RESULT line reports first (so
    /// its peak RSS is not inflated by memory the other one left in the
    /// allocator).
    fn encoders(&self) -> Vec<Encoder> {
        match self.encoder.as_str() {
            "generic" => vec![Encoder::Generic],
            "columnar" => vec![Encoder::Columnar],
            _ => vec![Encoder::Columnar, Encoder::Generic],
        }
    }
}

/// One pre-encoded message.
pub(super) struct Input {
    pub(super) topic: String,
    pub(super) key: Vec<u8>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Vec<(String, Vec<u8>)>,
    pub(super) timestamp_ms: i64,
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pick_type(rng: &mut Rng) -> RecordType {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for (t, w) in MIX {
        if x < w {
            return t;
        }
        x -= w;
    }
    RecordType::DeviceHeartbeat
}

/// One record of type `t` for device `dev`, with values varied by `rng`.
fn encode_record(t: RecordType, dev: usize, rng: &mut Rng) -> anyhow::Result<(Vec<u8>, String)> {
    let serial = format!("SN{dev:08}");
    let ip = format!(
        "10.{}.{}.{}",
        dev / 65_536 % 256,
        dev / 256 % 256,
        dev % 256
    );
    let payload = match t {
        RecordType::DeviceHeartbeat => {
            let mut r = samples::device_heartbeat(&serial);
            r.ip_address = Some(ip.clone());
            r.response_ms = rng.below(200) as i32;
            codec::encode(&r)?
        }
        RecordType::UsageCounters => {
            let mut r = samples::usage_counters(&serial);
            let mut m2 = r.markers[0].clone();
            r.markers[0].life_count = (rng.below(2_000_000)) as i64;
            m2.marker_index = 2;
            m2.life_count = (rng.below(500_000)) as i64;
            if dev.is_multiple_of(2) {
                r.markers.push(m2);
            }
            codec::encode(&r)?
        }
        RecordType::DeviceStatus => {
            let mut r = samples::device_status(&serial);
            r.ip_address = Some(ip.clone());
            r.sys_location = Some(
                [
                    "Berlin, DE, 2nd floor",
                    "Lyon, France",
                    "Austin, TX, USA",
                    "Room 101",
                ][dev % 4]
                    .to_string(),
            );
            r.sys_name = Some(format!("printer-{dev}.example"));
            let level = rng.below(101) as i32;
            r.supplies[0].level = Some(level);
            r.supplies[0].percent = Some(f64::from(level));
            if !dev.is_multiple_of(3) {
                // 2D printers: no printheads, no build unit.
                r.printheads.clear();
                r.build_unit = None;
            }
            codec::encode(&r)?
        }
        RecordType::AlertEvent => {
            let mut r = samples::alert_event(&serial);
            r.alert_index = rng.below(20) as i32;
            codec::encode(&r)?
        }
        RecordType::JobRecord => {
            let mut r = samples::job_record(&serial);
            r.job_id = format!("job-{}", rng.below(1_000_000));
            r.user_name = Some(format!("user{}", dev % 300));
            codec::encode(&r)?
        }
        RecordType::ConnectorHeartbeat => codec::encode(&samples::connector_heartbeat(CONNECTOR))?,
        RecordType::MaintenanceAlert => codec::encode(&samples::maintenance_alert(&serial))?,
    };
    // The edge keys every record by its device id (the connector's own
    // heartbeat by the connector id).
    let key = match t {
        RecordType::ConnectorHeartbeat => CONNECTOR.to_string(),
        _ => serial,
    };
    Ok((payload, key))
}

/// Build `n` signed messages, as the edge publishes them.
fn build_input(n: usize, kafka: &KafkaConfig) -> anyhow::Result<Vec<Input>> {
    let key = SigningKey::derive(SECRET, CONNECTOR);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ts = fleetpulse_core::now_millis();
    let mut seq = u64::try_from(ts).unwrap_or(0) * 1000;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = pick_type(&mut rng);
        let dev = rng.below(DEVICES as u64) as usize;
        let (payload, msg_key) = encode_record(t, dev, &mut rng)?;
        let topic = kafka.topic(t);
        seq += 1;
        let sig = key.sign(&topic, msg_key.as_bytes(), seq, ts, &payload);
        out.push(Input {
            headers: vec![(HDR_SIG.into(), sig.to_bytes().to_vec())],
            topic,
            key: msg_key.into_bytes(),
            payload,
            timestamp_ms: ts,
        });
    }
    Ok(out)
}

/// The input as a file for the Python baseline: `FPBENCH1`, u32 count, then
/// per message (big-endian lengths) u16 topic, u16 key, u32 payload, i64
/// timestamp, u8 header count and per header u8 name, u16 value.
fn write_input_file(path: &Path, input: &[Input]) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(input.iter().map(|m| m.payload.len() + 300).sum());
    buf.extend_from_slice(b"FPBENCH1");
    buf.extend_from_slice(&(input.len() as u32).to_be_bytes());
    for m in input {
        buf.extend_from_slice(&(m.topic.len() as u16).to_be_bytes());
        buf.extend_from_slice(m.topic.as_bytes());
        buf.extend_from_slice(&(m.key.len() as u16).to_be_bytes());
        buf.extend_from_slice(&m.key);
        buf.extend_from_slice(&(m.payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&m.payload);
        buf.extend_from_slice(&m.timestamp_ms.to_be_bytes());
        buf.push(m.headers.len() as u8);
        for (k, v) in &m.headers {
            buf.push(k.len() as u8);
            buf.extend_from_slice(k.as_bytes());
            buf.extend_from_slice(&(v.len() as u16).to_be_bytes());
            buf.extend_from_slice(v);
        }
    }
    std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
}

/// What the Python baseline needs besides the messages.
fn write_baseline_config(
    path: &Path,
    kafka: &KafkaConfig,
    rows_per_file: usize,
) -> anyhow::Result<()> {
    let schemas: serde_json::Map<String, serde_json::Value> = RecordType::ALL
        .into_iter()
        .map(|t| {
            let avsc: serde_json::Value =
                serde_json::from_str(t.source()).unwrap_or(serde_json::Value::Null);
            (
                hex::encode(t.compiled().fingerprint),
                serde_json::json!({"table": t.name(), "topic": kafka.topic(t), "avsc": avsc}),
            )
        })
        .collect();
    let config = serde_json::json!({
        "connectors": {CONNECTOR: hex::encode(SECRET)},
        "pseudonym_key": hex::encode(PSEUDONYM_KEY),
        "pseudonym_key_id": PSEUDONYM_KEY_ID,
        "signature_window_ms": 300_000,
        "rows_per_file": rows_per_file,
        "zstd_level": 3,
        "schemas": schemas,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// One run: `partitions` pipelines in parallel.
#[derive(Debug, Clone)]
struct Run {
    encoder: Encoder,
    partitions: usize,
    events: u64,
    payload_bytes: u64,
    rows: u64,
    files: u64,
    parquet_bytes: u64,
    rejected: u64,
    wall: Duration,
    cpu: Option<Duration>,
    peak_rss: Option<u64>,
}

impl Run {
    /// Events per CPU-second (None without /proc).
    fn per_core(&self) -> Option<f64> {
        let cpu = self.cpu?.as_secs_f64();
        (cpu > 0.0).then(|| self.events as f64 / cpu)
    }

    fn mb_per_core(&self) -> Option<f64> {
        let cpu = self.cpu?.as_secs_f64();
        (cpu > 0.0).then(|| self.payload_bytes as f64 / 1e6 / cpu)
    }

    fn wall_rate(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cores_used(&self) -> Option<f64> {
        Some(self.cpu?.as_secs_f64() / self.wall.as_secs_f64().max(1e-9))
    }
}

struct Shared {
    kafka: KafkaConfig,
    verifier: Verifier,
    transformer: Arc<Transformer>,
    plans: Plans,
    rows_per_file: usize,
}

impl Shared {
    fn writer(&self, encoder: Encoder, partition: i32, sink: Sink) -> PartitionWriter {
        PartitionWriter::new(
            self.kafka.clone(),
            self.verifier.clone(),
            self.transformer.clone(),
            self.plans.clone(),
            encoder,
            partition,
            self.rows_per_file,
            sink,
        )
    }
}

fn feed(w: &mut PartitionWriter, input: &[Input]) -> anyhow::Result<()> {
    let now = fleetpulse_core::now_millis();
    for (offset, m) in input.iter().enumerate() {
        w.process(
            &Message {
                topic: &m.topic,
                offset: offset as i64,
                key: &m.key,
                payload: &m.payload,
                headers: &m.headers,
                timestamp_ms: m.timestamp_ms,
            },
            now,
        )?;
    }
    w.finish()?;
    Ok(())
}

fn run_partitions(
    shared: &Shared,
    input: &[Input],
    encoder: Encoder,
    partitions: usize,
    out_dir: Option<&Path>,
) -> anyhow::Result<Run> {
    procfs::reset_peak_rss();
    let started = Instant::now();
    let results: Vec<anyhow::Result<(PartitionStats, Option<Duration>)>> =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..partitions)
                .map(|p| {
                    let sink = match out_dir {
                        Some(d) => Sink::Dir(d.join(encoder.name())),
                        None => Sink::Memory,
                    };
                    let mut w = shared.writer(encoder, p as i32, sink);
                    s.spawn(move || {
                        let cpu0 = procfs::thread_cpu_time();
                        feed(&mut w, input)?;
                        let cpu = match (cpu0, procfs::thread_cpu_time()) {
                            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                            _ => None,
                        };
                        Ok((w.stats().clone(), cpu))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a partition thread panicked")))
                })
                .collect()
        });
    let wall = started.elapsed();
    let mut run = Run {
        encoder,
        partitions,
        events: 0,
        payload_bytes: 0,
        rows: 0,
        files: 0,
        parquet_bytes: 0,
        rejected: 0,
        wall,
        cpu: Some(Duration::ZERO),
        peak_rss: procfs::rss("self").map(|(peak, _)| peak),
    };
    for r in results {
        let (st, cpu) = r?;
        run.events += st.accepted + st.rejected.values().sum::<u64>();
        run.payload_bytes += st.payload_bytes;
        run.rows += st.rows_written;
        run.files += st.files;
        run.parquet_bytes += st.parquet_bytes;
        run.rejected += st.rejected.values().sum::<u64>();
        run.cpu = match (run.cpu, cpu) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    Ok(run)
}

/// Stage profile of one partition with stage timing on.
fn profile(shared: &Shared, input: &[Input], encoder: Encoder) -> anyhow::Result<Stages> {
    let mut w = shared
        .writer(encoder, 0, Sink::Memory)
        .with_stage_timing(true);
    feed(&mut w, input)?;
    Ok(w.stats().stages)
}

/// What the Python baseline reported.
#[derive(Debug, Clone, Default)]
struct Baseline {
    events: u64,
    accepted: u64,
    rows: u64,
    cpu_s: f64,
    wall_s: f64,
    parquet_bytes: u64,
    stages: Vec<(String, f64)>,
}

impl Baseline {
    fn per_core(&self) -> f64 {
        self.events as f64 / self.cpu_s.max(1e-9)
    }
}

fn run_python(python: &str, dir: &Path) -> Result<Baseline, String> {
    let script = dir.join("process_baseline.py");
    std::fs::write(&script, BASELINE_PY)
        .map_err(|e| format!("writing the baseline script: {e}"))?;
    let out = Command::new(python)
        .arg(&script)
        .arg("--input")
        .arg(dir.join("input.bin"))
        .arg("--config")
        .arg(dir.join("config.json"))
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!(
            "{python} exited with {}: {}",
            out.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("the baseline printed no JSON result")?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("baseline result: {e}"))?;
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    Ok(Baseline {
        events: num("events") as u64,
        accepted: num("accepted") as u64,
        rows: num("rows") as u64,
        cpu_s: num("cpu_s"),
        wall_s: num("wall_s"),
        parquet_bytes: num("parquet_bytes") as u64,
        stages: v
            .get("stages")
            .and_then(serde_json::Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn num(v: f64) -> String {
    super::num(v)
}

fn stage_line(out: &mut String, name: &str, stages: &Stages, events: u64) {
    let total = stages.total().as_secs_f64().max(1e-12);
    let _ = write!(out, "{name:<9}");
    for (label, d) in [
        ("authenticate", stages.authenticate),
        ("decode", stages.decode),
        ("anonymise", stages.anonymise),
        ("arrow", stages.arrow),
        ("parquet", stages.parquet),
    ] {
        let _ = write!(
            out,
            " {label} {:.0} ns ({:.0} %);",
            d.as_secs_f64() * 1e9 / events.max(1) as f64,
            d.as_secs_f64() / total * 100.0
        );
    }
    let _ = writeln!(
        out,
        " total {:.0} ns/event",
        total * 1e9 / events.max(1) as f64
    );
}

/// Final figures of a benchmark run (read by the tests).
#[derive(Debug, Clone)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Summary {
    pub(crate) events_per_sec_per_core: f64,
    pub(crate) python_ratio: f64,
    pub(crate) rows_first_run: u64,
}

/// Run the benchmark, printing to `out` (the last line is `RESULT …`).
pub(crate) fn run(args: &ProcessArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        !args.partitions.is_empty() && args.partitions.iter().all(|p| *p > 0),
        "--partitions needs positive counts"
    );
    let n = args.events();
    let kafka = KafkaConfig::default();
    let transformer = Arc::new(Transformer::new(Pseudonymizer::new(
        PSEUDONYM_KEY,
        PSEUDONYM_KEY_ID,
    ))?);
    let shared = Shared {
        plans: Plans::new(&transformer)?,
        verifier: Verifier::new([(CONNECTOR, SECRET)]),
        kafka: kafka.clone(),
        transformer,
        rows_per_file: args.rows_per_file,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(
        out,
        "fleetpulse {} bench process{} ({}, {cpus} CPUs)",
        env!("CARGO_PKG_VERSION"),
        if args.quick { " --quick" } else { "" },
        if cfg!(debug_assertions) {
            "debug build: timings not representative"
        } else {
            "release build"
        },
    )?;
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        writeln!(
            out,
            "load average before the run: {} (other processes share the CPUs; per-core figures count only this benchmark's CPU time)",
            load.join(" ")
        )?;
    }
    let t0 = Instant::now();
    let input = build_input(n, &kafka)?;
    let payload: u64 = input.iter().map(|m| m.payload.len() as u64).sum();
    let mut counts = std::collections::BTreeMap::new();
    for m in &input {
        if let Some(t) = kafka.record_type_of(&m.topic) {
            *counts.entry(t.name()).or_insert(0u64) += 1;
        }
    }
    writeln!(
        out,
        "input: {} signed messages ({} Avro payload bytes, mean {} B; {} devices), built in {:.1} s; mix: {}",
        num(n as f64),
        num(payload as f64),
        payload / n as u64,
        num(DEVICES as f64),
        t0.elapsed().as_secs_f64(),
        counts
            .iter()
            .map(|(t, c)| format!("{t} {:.0} %", *c as f64 * 100.0 / n as f64))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "per message: record type from the topic, signature headers, HMAC-SHA256 over topic|key|batch|seq|ts|payload, \
         signing-time window, schema fingerprint, Avro decode, connector check, date, anonymise \
         (pseudonymise, drop, generalise), Arrow columns; per {} rows of a table: zstd(3) Parquet with page statistics, to memory",
        num(args.rows_per_file as f64)
    )?;

    // Python input first, so the baseline reads exactly these bytes.
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    write_input_file(&tmp.path().join("input.bin"), &input)?;
    write_baseline_config(&tmp.path().join("config.json"), &kafka, args.rows_per_file)?;

    writeln!(out)?;
    writeln!(
        out,
        "== Throughput: each partition is an independent pipeline on its own thread, reading all {} messages; \
         per core = events / CPU-seconds of the partition threads",
        num(n as f64)
    )?;
    writeln!(
        out,
        "{:<9} {:>10} {:>11} {:>8} {:>9} {:>10} {:>15} {:>12} {:>12} {:>9} {:>10} {:>8}",
        "encoder",
        "partitions",
        "events",
        "wall s",
        "CPU s",
        "cores used",
        "events/s/core",
        "MB/s/core",
        "events/s",
        "files",
        "Parquet MB",
        "RSS MB"
    )?;
    let mut runs: Vec<Run> = Vec::new();
    let mut first_rows = 0;
    for encoder in args.encoders() {
        for (i, p) in args.partitions.iter().enumerate() {
            let dir = if i == 0 {
                args.out_dir.as_deref()
            } else {
                None
            };
            let r = run_partitions(&shared, &input, encoder, *p, dir)?;
            if i == 0 && encoder == args.encoders()[0] {
                first_rows = r.rows;
            }
            writeln!(
                out,
                "{:<9} {:>10} {:>11} {:>8.2} {:>9} {:>10} {:>15} {:>12} {:>12} {:>9} {:>10.1} {:>8}",
                encoder.name(),
                p,
                num(r.events as f64),
                r.wall.as_secs_f64(),
                r.cpu.map_or("NA".into(), |c| format!("{:.2}", c.as_secs_f64())),
                r.cores_used().map_or("NA".into(), |c| format!("{c:.2}")),
                r.per_core().map_or("NA".into(), num),
                r.mb_per_core().map_or("NA".into(), |v| format!("{v:.1}")),
                num(r.wall_rate()),
                r.files,
                r.parquet_bytes as f64 / 1e6,
                r.peak_rss.map_or("NA".into(), |b| format!("{:.1}", procfs::mib(b))),
            )?;
            if r.rejected > 0 {
                writeln!(
                    out,
                    "          {} records rejected (expected none)",
                    r.rejected
                )?;
            }
            runs.push(r);
        }
    }
    writeln!(
        out,
        "RSS = peak resident set (VmHWM, reset before each run) of this process, the {} MB input included.",
        num((input.iter().map(|m| m.payload.len() + m.key.len() + m.topic.len() + 200).sum::<usize>()) as f64 / 1e6)
    )?;

    // --- stage profile ----------------------------------------------------
    writeln!(out)?;
    writeln!(
        out,
        "== Stage profile: one partition, clock read between stages (adds ~5 % overhead), ns per event"
    )?;
    let mut profile_text = String::new();
    for encoder in args.encoders() {
        let stages = profile(&shared, &input, encoder)?;
        stage_line(&mut profile_text, encoder.name(), &stages, n as u64);
    }
    write!(out, "{profile_text}")?;

    // --- Python baseline --------------------------------------------------
    writeln!(out)?;
    let main = args.encoders()[0];
    let main_runs: Vec<&Run> = runs.iter().filter(|r| r.encoder == main).collect();
    let one = main_runs
        .iter()
        .find(|r| r.partitions == 1)
        .or(main_runs.first())
        .copied();
    let baseline = if args.no_python {
        Err("skipped (--no-python)".to_string())
    } else {
        run_python(&args.python, tmp.path())
    };
    let ratio = match (&baseline, one.and_then(Run::per_core)) {
        (Ok(b), Some(rust)) if b.events > 0 => rust / b.per_core(),
        _ => f64::NAN,
    };
    match &baseline {
        Ok(b) => {
            writeln!(
                out,
                "== Python baseline ({}; fastavro schemaless_reader, hmac, the same anonymisation, \
                 pyarrow Parquet zstd(3); one process, same input, same {} rows per file)",
                args.python,
                num(args.rows_per_file as f64)
            )?;
            writeln!(
                out,
                "python: {} events ({} accepted, {} rows) in {:.2} s CPU ({:.2} s wall): {} events/s/core, \
                 {:.1} MB/s/core, {:.1} MB Parquet",
                num(b.events as f64),
                num(b.accepted as f64),
                num(b.rows as f64),
                b.cpu_s,
                b.wall_s,
                num(b.per_core()),
                payload as f64 / 1e6 / b.cpu_s.max(1e-9),
                b.parquet_bytes as f64 / 1e6,
            )?;
            if !b.stages.is_empty() {
                let total: f64 = b.stages.iter().map(|(_, v)| v).sum();
                let parts: Vec<String> = b
                    .stages
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k} {:.0} ns ({:.0} %)",
                            v * 1e9 / b.events.max(1) as f64,
                            v / total.max(1e-12) * 100.0
                        )
                    })
                    .collect();
                writeln!(out, "python stages: {}", parts.join("; "))?;
            }
            if let Some(r) = one {
                writeln!(
                    out,
                    "ratio: {} {} events/s/core (1 partition) / python {} = {ratio:.1}x",
                    main.name(),
                    r.per_core().map_or("NA".into(), num),
                    num(b.per_core())
                )?;
            }
        }
        Err(why) => writeln!(out, "== Python baseline not run: {why}; python_ratio=nan")?,
    }

    // --- memory bound -----------------------------------------------------
    let memory = if args.no_memory {
        writeln!(out)?;
        writeln!(out, "== Memory bound not run (--no-memory)")?;
        Vec::new()
    } else {
        let partitions = args.memory_partitions.clone().unwrap_or(if args.quick {
            vec![64]
        } else {
            vec![16, 512]
        });
        let budgets = args.memory_budgets_mib.clone().unwrap_or(if args.quick {
            vec![4]
        } else {
            vec![32, 128]
        });
        anyhow::ensure!(
            partitions.iter().all(|p| *p > 0) && budgets.iter().all(|b| *b > 0),
            "--memory-partitions and --memory-budgets-mib need positive values"
        );
        let budgets: Vec<u64> = budgets.iter().map(|b| b << 20).collect();
        super::memory::run(&input, &partitions, &budgets, out)?
    };

    // --- verdict and RESULT -----------------------------------------------
    let per_core = main_runs
        .iter()
        .filter_map(|r| r.per_core())
        .fold(f64::INFINITY, f64::min);
    let per_core = if per_core.is_finite() { per_core } else { 0.0 };
    let mb = main_runs
        .iter()
        .filter_map(|r| r.mb_per_core())
        .fold(f64::INFINITY, f64::min);
    let mb = if mb.is_finite() { mb } else { 0.0 };
    let rss = main_runs
        .iter()
        .filter_map(|r| r.peak_rss)
        .max()
        .map_or(0.0, procfs::mib);
    writeln!(out)?;
    writeln!(
        out,
        "RESULT figures: {} encoder, the lowest events/s/core and MB/s/core of its {} runs, and the highest peak RSS of them",
        main.name(),
        main_runs.len()
    )?;
    writeln!(
        out,
        "target: >= {} events/s/core -> {}; >= {TARGET_RATIO}x Python -> {}",
        num(TARGET_PER_CORE),
        super::pass(per_core >= TARGET_PER_CORE),
        if ratio.is_nan() {
            "NA"
        } else {
            super::pass(ratio >= TARGET_RATIO)
        }
    )?;
    if !memory.is_empty() {
        writeln!(
            out,
            "target: peak RSS of the lake writer within the stated memory bound whatever the partition count -> {}",
            super::pass(
                memory
                    .iter()
                    .filter(|r| !r.derived)
                    .all(super::memory::MemoryRun::within)
            )
        )?;
    }
    writeln!(
        out,
        "RESULT events_per_sec_per_core={} mb_per_sec_per_core={:.1} python_ratio={} peak_rss_mb={:.1}",
        per_core.round() as u64,
        mb,
        if ratio.is_nan() {
            "nan".to_string()
        } else {
            format!("{ratio:.1}")
        },
        rss
    )?;
    out.flush()?;
    Ok(Summary {
        events_per_sec_per_core: per_core,
        python_ratio: ratio,
        rows_first_run: first_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench end to end on a small input: RESULT line, Parquet files
    /// readable by pyarrow with every row, the baseline agreeing on counts.
    #[test]
    fn quick_bench_prints_result_and_writes_readable_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let args = ProcessArgs {
            quick: true,
            events: Some(400),
            partitions: vec![1, 2],
            rows_per_file: 150,
            encoder: "both".into(),
            out_dir: Some(dir.path().to_path_buf()),
            python: "python3".into(),
            no_python: false,
            // The memory runs start this binary as `fleetpulse process`;
            // under `cargo test` it is the test harness.
            memory_partitions: None,
            memory_budgets_mib: None,
            no_memory: true,
        };
        let mut out = Vec::new();
        let summary = run(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let last = text.lines().last().unwrap();
        let fields: Vec<&str> = last.split(' ').collect();
        assert_eq!(fields[0], "RESULT", "{text}");
        let keys = [
            "events_per_sec_per_core",
            "mb_per_sec_per_core",
            "python_ratio",
            "peak_rss_mb",
        ];
        assert_eq!(fields.len(), 1 + keys.len(), "{last}");
        for (f, k) in fields[1..].iter().zip(keys) {
            let (key, value) = f.split_once('=').unwrap();
            assert_eq!(key, k, "{last}");
            assert!(value == "nan" || value.parse::<f64>().is_ok(), "{last}");
        }
        assert!(summary.events_per_sec_per_core > 0.0);
        assert!(!text.contains("rejected"), "{text}");
        assert_eq!(summary.rows_first_run, 400);

        // pyarrow reads what each encoder wrote: every input row, once.
        let script = r#"
import sys, glob, pyarrow.parquet as pq, collections
root = sys.argv[1]
for enc in ("generic", "columnar"):
    rows, offsets = 0, collections.Counter()
    for f in glob.glob(f"{root}/{enc}/*/*.parquet"):
        t = pq.read_table(f)
        rows += t.num_rows
        offsets.update(t.column("_kafka_offset").to_pylist())
    assert len(offsets) == rows, (enc, "duplicate offsets")
    print(enc, rows)
"#;
        let got = Command::new("python3")
            .args(["-c", script])
            .arg(dir.path())
            .output()
            .expect("python3");
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        let printed = String::from_utf8_lossy(&got.stdout);
        assert_eq!(printed.trim(), "generic 400\ncolumnar 400", "{printed}");
        // The baseline ran on the same input and accepted every message.
        assert!(
            text.contains("python: 400 events (400 accepted, 400 rows)"),
            "{text}"
        );
        assert!(summary.python_ratio.is_finite(), "{text}");
    }
}
