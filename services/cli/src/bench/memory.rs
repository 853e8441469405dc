//! The processor's memory bound, measured on the real thing.
//!
//! The README states what `fleetpulse process` needs whatever the number of
//! partitions: `lake.buffer_budget_bytes` for all open files, plus one file
//! during its upload, plus librdkafka's fetch queue, plus a fixed part
//! (code, schemas, sequence-number memory). A unit test checks the
//! budget's own accounting; this checks the process: the benchmark's signed
//! messages are spread over many Kafka partitions of an in-process mock
//! cluster, and this binary's `fleetpulse process` runs as a **child
//! process** on them (its own RSS, nothing of the benchmark's), until its
//! consumer group has committed every offset (offsets are committed only
//! after the files are durable, so then every row is in the lake). The
//! kernel's peak RSS of the child (`VmHWM`) is compared with the stated
//! bound, for several partition counts and budgets: the peak must follow the
//! budget, not the partition count.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetpulse_core::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::process::{Input, CONNECTOR, PSEUDONYM_KEY, PSEUDONYM_KEY_ID, SECRET};
use super::procfs;

/// The processor's fetch queue: `queued.max.messages.kbytes` plus one
/// fetch response (`fetch.max.bytes`) it may be overshot by, counted twice
/// (librdkafka's per-message overhead about doubles the payload).
fn fetch_queue_bytes() -> u64 {
    let get = |key: &str, default: u64| {
        fleetpulse_processor::CONSUMER_DEFAULTS
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    (get("queued.max.messages.kbytes", 65_536) * 1024 + get("fetch.max.bytes", 52_428_800)) * 2
}
/// Sequence-number memory per remembered record at its peak: the index
/// (~90 B) and its periodic JSON snapshot (README, `replay.rs`); measured
/// here as the slope of the peak between 100,000 and 300,000 records
/// (0.28 KB, after the snapshot stopped copying the index).
const SEQ_ENTRY_BYTES: u64 = 300;
/// Consumer group of the measured processor.
const GROUP: &str = "fleetpulse-bench-memory";
/// How long a run may take before it is called stuck.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// How long the processor runs before the records are loaded.
const IDLE_WAIT: Duration = Duration::from_secs(4);

/// One measured configuration.
#[derive(Debug, Clone)]
pub(crate) struct MemoryRun {
    pub(crate) partitions: i32,
    pub(crate) budget: u64,
    /// Derived tables (KPIs, benchmarks, ledger) computed too.
    pub(crate) derived: bool,
    pub(crate) wall: Duration,
    pub(crate) peak_rss: Option<u64>,
    /// RSS of the processor after start, before any record.
    pub(crate) idle_rss: Option<u64>,
    pub(crate) files: u64,
    pub(crate) bound: u64,
}

impl MemoryRun {
    pub(crate) fn within(&self) -> bool {
        self.peak_rss.is_some_and(|p| p <= self.bound)
    }
}

/// The README's bound for `budget` over the process at rest (`idle`: code,
/// runtime, the Kafka client's per-partition state). No file is larger than
/// the budget when the budget closes files, so the upload term is the
/// smaller of the two.
fn stated_bound(idle: u64, budget: u64, roll_bytes: u64, events: u64) -> u64 {
    idle + budget + budget.min(roll_bytes) + fetch_queue_bytes() + events * SEQ_ENTRY_BYTES
}

fn write_config(
    path: &Path,
    lake: &Path,
    bootstrap: &str,
    budget: u64,
    derived: bool,
) -> anyhow::Result<()> {
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).context("benchmark secrets are UTF-8");
    let toml = format!(
        "group_id = {group:?}\n\
         lake_dir = {lake:?}\n\
         roll_idle = \"3s\"\n\
         pseudonym_key = {pk:?}\n\
         pseudonym_key_id = {pkid:?}\n\
         [connector_secrets]\n\
         {conn:?} = {secret:?}\n\
         [lake]\n\
         buffer_budget_bytes = {budget}\n\
         [derived]\n\
         enabled = {derived}\n\
         [kafka]\n\
         brokers = {bootstrap:?}\n\
         topic_prefix = {prefix:?}\n",
        group = GROUP,
        lake = lake.display().to_string(),
        pk = utf8(PSEUDONYM_KEY)?,
        pkid = PSEUDONYM_KEY_ID,
        conn = CONNECTOR,
        secret = utf8(SECRET)?,
        prefix = KafkaConfig::default().topic_prefix,
    );
    std::fs::write(path, toml).with_context(|| format!("writing {}", path.display()))
}

/// Produce `input` round-robin over `partitions` partitions of each topic;
/// returns the end offset of every partition.
fn load(bootstrap: &str, input: &[Input], partitions: i32) -> anyhow::Result<TopicPartitionList> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .context("creating the loading producer")?;
    let mut ends = std::collections::BTreeMap::<(&str, i32), i64>::new();
    for (i, m) in input.iter().enumerate() {
        let partition = (i % partitions as usize) as i32;
        *ends.entry((m.topic.as_str(), partition)).or_default() += 1;
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        let record = BaseRecord::to(&m.topic)
            .partition(partition)
            .key(&m.key)
            .payload(&m.payload)
            .timestamp(m.timestamp_ms)
            .headers(headers);
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    anyhow::ensure!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "loading the mock cluster: {e}"
                    );
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the loading producer")?;
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), end) in ends {
        tpl.add_partition_offset(topic, partition, Offset::Offset(end))?;
    }
    Ok(tpl)
}

/// True when `GROUP` has committed the end of every partition.
fn all_committed(consumer: &BaseConsumer, ends: &TopicPartitionList) -> bool {
    let Ok(committed) = consumer.committed_offsets(ends.clone(), Duration::from_secs(5)) else {
        return false;
    };
    ends.elements().iter().all(|e| {
        let want = e.offset();
        committed
            .find_partition(e.topic(), e.partition())
            .is_some_and(|c| match (c.offset(), want) {
                (Offset::Offset(c), Offset::Offset(w)) => c >= w,
                (_, Offset::Offset(0)) => true,
                _ => false,
            })
    })
}

fn count_files(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_files(&p)
            } else {
                u64::from(p.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One run: `partitions` partitions per topic, `budget` bytes of budget.
fn run_one(
    input: &[Input],
    partitions: i32,
    budget: u64,
    derived: bool,
) -> anyhow::Result<MemoryRun> {
    let kafka = KafkaConfig::default();
    let cluster = MockCluster::new(1).context("starting the mock Kafka cluster")?;
    let bootstrap = cluster.bootstrap_servers();
    for t in kafka.all_topics() {
        cluster
            .create_topic(&t, partitions, 1)
            .with_context(|| format!("creating topic {t}"))?;
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let lake = tmp.path().join("lake");
    let config = tmp.path().join("processor.toml");
    write_config(&config, &lake, &bootstrap, budget, derived)?;
    let log_path = tmp.path().join("processor.log");
    let log = std::fs::File::create(&log_path)?;
    let exe = std::env::current_exe().context("locating the fleetpulse binary")?;
    let started = Instant::now();
    let child = Command::new(exe)
        .args(["process", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting `fleetpulse process`")?;
    let mut child = Killed(child);
    let pid = child.0.id().to_string();
    // The processor at rest first (joined, nothing to read yet), then the load.
    std::thread::sleep(IDLE_WAIT);
    if let Some(status) = child.0.try_wait()? {
        anyhow::bail!("`fleetpulse process` exited at start ({status})");
    }
    let idle_rss = procfs::rss(&pid).map(|(_, now)| now);
    let ends = load(&bootstrap, input, partitions)?;
    let checker: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the offset checker")?;
    let log_tail = || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    loop {
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!(
                "`fleetpulse process` exited ({status}) before committing every offset:\n{}",
                log_tail()
            );
        }
        if all_committed(&checker, &ends) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < RUN_LIMIT,
            "`fleetpulse process` did not commit every offset within {RUN_LIMIT:?}; its log:\n{}",
            log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let wall = started.elapsed();
    let peak_rss = procfs::rss(&pid).map(|(peak, _)| peak);
    drop(child);
    let roll_bytes = fleetpulse_processor::ProcessorConfig::default().roll_bytes;
    Ok(MemoryRun {
        partitions,
        budget,
        derived,
        wall,
        peak_rss,
        idle_rss,
        files: count_files(&lake),
        bound: stated_bound(
            idle_rss.unwrap_or(0),
            budget,
            roll_bytes,
            input.len() as u64,
        ),
    })
}

/// Run every partition count with every budget (derived tables off), then
/// once with the derived tables on, and print the table.
pub(crate) fn run(
    input: &[Input],
    partitions: &[i32],
    budgets: &[u64],
    out: &mut dyn std::io::Write,
) -> anyhow::Result<Vec<MemoryRun>> {
    let topics = input
        .iter()
        .map(|m| m.topic.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    writeln!(out)?;
    writeln!(
        out,
        "== Memory bound: the real `fleetpulse process` (a child process) on {} messages spread round-robin over \
         N partitions of each of the {topics} raw topics (in-process mock cluster), until its group has committed every \
         offset; idle RSS = after start, before any record; peak RSS = the child's VmHWM; stated bound (README) = \
         idle RSS + buffer_budget_bytes + one file in upload (min(budget, roll_bytes)) + librdkafka fetch queue \
         (2 x (queued.max.messages.kbytes + fetch.max.bytes) = {} MiB) + {} B x remembered sequence numbers. The bound covers the lake writer; the derived tables' \
         state (last row, derived on) is not in it and grows with the events of the days still open",
        input.len(),
        fetch_queue_bytes() >> 20,
        SEQ_ENTRY_BYTES
    )?;
    writeln!(
        out,
        "{:>10} {:>16} {:>10} {:>8} {:>8} {:>8} {:>13} {:>13} {:>10} {:>6}",
        "partitions",
        "topic-partitions",
        "budget MiB",
        "derived",
        "wall s",
        "files",
        "idle RSS MiB",
        "peak RSS MiB",
        "bound MiB",
        "within"
    )?;
    let mut plan: Vec<(i32, u64, bool)> = Vec::new();
    for &p in partitions {
        for &b in budgets {
            plan.push((p, b, false));
        }
    }
    if let (Some(&p), Some(&b)) = (partitions.first(), budgets.last()) {
        plan.push((p, b, true));
    }
    let mut runs = Vec::new();
    for (p, b, derived) in plan {
        let r = run_one(input, p, b, derived)?;
        let mut line = String::new();
        write!(
            line,
            "{:>10} {:>16} {:>10.0} {:>8} {:>8.1} {:>8} {:>13} {:>13} {:>10.1} {:>6}",
            r.partitions,
            r.partitions as usize * topics,
            procfs::mib(r.budget),
            if r.derived { "on" } else { "off" },
            r.wall.as_secs_f64(),
            r.files,
            r.idle_rss
                .map_or("NA".into(), |b| format!("{:.1}", procfs::mib(b))),
            r.peak_rss
                .map_or("NA".into(), |b| format!("{:.1}", procfs::mib(b))),
            procfs::mib(r.bound),
            if r.derived {
                "-"
            } else {
                super::pass(r.within())
            },
        )?;
        writeln!(out, "{line}")?;
        runs.push(r);
    }
    Ok(runs)
}
