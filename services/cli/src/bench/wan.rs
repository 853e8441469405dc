//! WAN bytes for 13 printers over one 3-hour cycle.
//!
//! The real edge (`fleetpulse_edge::run`, its default configuration) polls
//! 13 simulated printers and publishes to an in-process mock Kafka cluster
//! through a byte-counting relay ([`super::kafka_relay`]). The 3-hour cycle
//! is compressed: every schedule duration of the edge's default config is
//! divided by the speed-up, the simulator runs that much faster, and so does
//! librdkafka's metadata refresh. Which durations are scaled is decided from
//! the serialized default config (every duration outside `snmp`, `ipp`,
//! `kafka` and `shutdown_grace`), so schedule keys added later are scaled
//! too; each one is printed. Two edges run side by side on the same fleet:
//! one as configured (compressed batches), one with `compression.type=none`.
//! Afterwards the topics are read back to count records per type and their
//! uncompressed size.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetpulse_core::kafka::KafkaConfig;
use fleetpulse_core::Shutdown;
use fleetpulse_edge::{DeviceConfig, EdgeConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::kafka_relay::{KafkaRelay, RelayTotals};

/// Printers in the vendor's figure.
pub(crate) const PRINTERS: usize = 13;
/// The cycle of the vendor's figure.
pub(crate) const CYCLE: Duration = Duration::from_secs(3 * 3600);
/// Partitions per topic, as `fleetpulse topics create` makes them.
const PARTITIONS: i32 = 4;
/// librdkafka's default `topic.metadata.refresh.interval.ms` (used when
/// neither `kafka.properties` nor the edge's producer defaults set it).
const METADATA_REFRESH_MS: f64 = 300_000.0;
/// The librdkafka property scaled with the schedule.
const METADATA_REFRESH_KEY: &str = "topic.metadata.refresh.interval.ms";
/// The metadata cache's age limit, scaled too.
const METADATA_MAX_AGE_KEY: &str = "metadata.max.age.ms";
/// librdkafka's default `metadata.max.age.ms`.
const METADATA_MAX_AGE_MS: f64 = 900_000.0;
/// Simulator `activity` of the WAN run: an office volume. At 1 (the
/// simulator's lively demo default) a printer prints about 170 pages an
/// hour around the clock; at this value about 30 pages an hour, i.e. some
/// 5,000 pages a month in an office's working hours, a typical office MFP
/// volume. The pages the run's printers print are computed and printed.
pub(crate) const OFFICE_ACTIVITY: f64 = 0.12;
/// Top-level keys whose durations are not part of the schedule.
const NOT_SCHEDULE: &[&str] = &[
    "snmp",
    "ipp",
    "https3d",
    "kafka",
    "shutdown_grace",
    "devices",
    "buffer",
    "discovery",
];

/// A schedule duration and what it became in the compressed run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scaled {
    pub(crate) key: String,
    pub(crate) from: Duration,
    pub(crate) to: Duration,
    /// The scaled value was raised to the 1 s minimum.
    pub(crate) clamped: bool,
}

/// Divide every schedule duration of `config` by `speedup` (at least 1 s
/// when it was at least 1 s), through its serialized form.
pub(crate) fn scale_schedule(
    config: &EdgeConfig,
    speedup: f64,
) -> anyhow::Result<(EdgeConfig, Vec<Scaled>)> {
    fn walk(v: &mut serde_json::Value, prefix: &str, speedup: f64, out: &mut Vec<Scaled>) {
        let Some(map) = v.as_object_mut() else { return };
        for (k, v) in map.iter_mut() {
            if prefix.is_empty() && NOT_SCHEDULE.contains(&k.as_str()) {
                continue;
            }
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_object() {
                walk(v, &key, speedup, out);
                continue;
            }
            let Some(from) = v.as_str().and_then(|s| humantime::parse_duration(s).ok()) else {
                continue;
            };
            if from.is_zero() {
                continue;
            }
            let exact =
                Duration::from_millis((from.as_secs_f64() * 1000.0 / speedup).round() as u64);
            let floor = Duration::from_secs(1).min(from);
            let to = exact.max(floor);
            *v = serde_json::Value::String(humantime::format_duration(to).to_string());
            out.push(Scaled {
                key,
                from,
                to,
                clamped: to > exact,
            });
        }
    }
    let mut v = serde_json::to_value(config).context("serializing the edge config")?;
    let mut scaled = Vec::new();
    walk(&mut v, "", speedup, &mut scaled);
    let config = serde_json::from_value(v).context("deserializing the scaled edge config")?;
    Ok((config, scaled))
}

/// Records of one type read back from the topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TypeBytes {
    pub(crate) records: u64,
    pub(crate) key: u64,
    pub(crate) value: u64,
    pub(crate) headers: u64,
}

impl TypeBytes {
    pub(crate) fn total(&self) -> u64 {
        self.key + self.value + self.headers
    }
}

/// Result of the WAN measurement (all figures for the part of the cycle run).
#[derive(Debug)]
pub(crate) struct WanResult {
    pub(crate) speedup: f64,
    /// Share of the 3-hour cycle that ran (1 = all; less is extrapolated).
    pub(crate) fraction: f64,
    pub(crate) wall: Duration,
    pub(crate) scaled: Vec<Scaled>,
    /// `topic.metadata.refresh.interval.ms` and `metadata.max.age.ms` as run
    /// (compressed; a negative refresh is disabled and not scaled).
    pub(crate) metadata_refresh_ms: i64,
    pub(crate) metadata_max_age_ms: i64,
    /// Simulator activity and the pages each printer printed in the part run.
    pub(crate) activity: f64,
    pub(crate) pages: Vec<u64>,
    /// Edge as configured (compressed batches).
    pub(crate) compressed: RelayTotals,
    /// Same edge with `compression.type=none`.
    pub(crate) uncompressed: RelayTotals,
    /// Records read back from the compressed edge's topics, by record type.
    pub(crate) records: BTreeMap<String, TypeBytes>,
    /// Records of the uncompressed edge (must match in count, roughly).
    pub(crate) records_uncompressed: u64,
}

impl WanResult {
    /// Extrapolate a measured figure to the whole cycle.
    pub(crate) fn per_cycle(&self, v: u64) -> u64 {
        (v as f64 / self.fraction).round() as u64
    }

    /// The headline: both directions of the compressed edge, whole cycle.
    pub(crate) fn wan_bytes(&self) -> u64 {
        self.per_cycle(self.compressed.up() + self.compressed.down())
    }
}

fn edge_config(
    base: &EdgeConfig,
    devices: &[DeviceConfig],
    relay: &KafkaRelay,
    prefix: &str,
    connector: &str,
    metadata: &[(&str, i64)],
    extra: &[(&str, &str)],
) -> EdgeConfig {
    let mut cfg = base.clone();
    cfg.tenant_id = "bench".into();
    cfg.connector_id = connector.into();
    cfg.connector_secret = "bench-connector-secret-not-for-production".into();
    cfg.devices = devices.to_vec();
    cfg.metrics_addr = None;
    // Each edge needs its own buffer directory (it is locked), fresh per run.
    cfg.buffer.dir = bench_dir(connector);
    // The edge's producer defaults apply; only the metadata timers are compressed.
    let mut properties: BTreeMap<String, String> = base.kafka.properties.clone();
    for (k, v) in metadata {
        properties.insert(k.to_string(), v.to_string());
    }
    for (k, v) in extra {
        properties.insert(k.to_string(), v.to_string());
    }
    cfg.kafka = KafkaConfig {
        brokers: relay.bootstrap(),
        topic_prefix: prefix.into(),
        properties: properties.into_iter().collect(),
        ..Default::default()
    };
    cfg
}

/// A fresh scratch directory for one edge's buffer.
fn bench_dir(connector: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fleetpulse-bench-{}-{connector}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Read every record of `kafka`'s topics from the cluster, by record type.
fn read_back(bootstrap: &str, kafka: &KafkaConfig) -> anyhow::Result<BTreeMap<String, TypeBytes>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "fleetpulse-bench-readback")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the read-back consumer")?;
    let mut tpl = TopicPartitionList::new();
    for t in kafka.all_topics() {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&t, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out: BTreeMap<String, TypeBytes> = BTreeMap::new();
    let started = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) && started.elapsed() < Duration::from_secs(120) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                let name = kafka
                    .record_type_of(m.topic())
                    .map(|t| t.name().to_string())
                    .unwrap_or_else(|| m.topic().to_string());
                let e = out.entry(name).or_default();
                e.records += 1;
                e.key += m.key().map_or(0, |k| k.len()) as u64;
                e.value += m.payload().map_or(0, |v| v.len()) as u64;
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        e.headers += (hd.key.len() + hd.value.map_or(0, |v| v.len())) as u64;
                    }
                }
            }
            Some(Err(e)) => anyhow::bail!("reading back the topics: {e}"),
            None => {}
        }
    }
    Ok(out)
}

/// Run the compressed cycle: `fraction` of 3 h / `speedup` of wall time.
/// `properties` are set in the edge's `kafka.properties` first, as an
/// operator would (the metadata timers among them are compressed too).
pub(crate) async fn measure(
    speedup: f64,
    fraction: f64,
    properties: &[(String, String)],
) -> anyhow::Result<WanResult> {
    anyhow::ensure!(speedup >= 1.0, "the WAN speed-up must be at least 1");
    anyhow::ensure!(
        fraction > 0.0 && fraction <= 1.0,
        "the WAN fraction must be within (0, 1]"
    );
    let mut defaults = EdgeConfig::default();
    for (k, v) in properties {
        defaults.kafka.properties.insert(k.clone(), v.clone());
    }
    let (base, scaled) = scale_schedule(&defaults, speedup)?;
    // The edge's value of a librdkafka timer (its properties, else its
    // producer defaults, else librdkafka's), compressed like the schedule;
    // a negative value (disabled) stays as it is.
    let timer = |key: &str, librdkafka: f64| -> i64 {
        let v = base
            .kafka
            .properties
            .get(key)
            .map(String::as_str)
            .or_else(|| {
                fleetpulse_edge::publish::WAN_DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| *v)
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(librdkafka);
        if v < 0.0 {
            v as i64
        } else {
            (v / speedup).round().max(1000.0) as i64
        }
    };
    let refresh_ms = timer(METADATA_REFRESH_KEY, METADATA_REFRESH_MS);
    let max_age_ms = timer(METADATA_MAX_AGE_KEY, METADATA_MAX_AGE_MS);
    let metadata = [
        (METADATA_REFRESH_KEY, refresh_ms),
        (METADATA_MAX_AGE_KEY, max_age_ms),
    ];

    let shutdown = Shutdown::new();
    let _stop = shutdown.clone().drop_guard();
    let cluster = MockCluster::new(1).context("starting the mock Kafka cluster")?;
    let bootstrap = cluster.bootstrap_servers();
    let sim = fleetpulse_sim::SimConfig {
        printers: PRINTERS,
        base_port: 0,
        seed: 13,
        // Sim time runs as fast as the compressed schedule.
        acceleration: speedup,
        activity: OFFICE_ACTIVITY,
        ..Default::default()
    };
    // What the printers print during the run (computed from the same
    // seeds and knobs, without the network).
    let steps =
        (CYCLE.as_secs_f64() * fraction / fleetpulse_sim::SIM_STEP.as_secs_f64()).round() as u64;
    let pages: Vec<u64> = (0..PRINTERS)
        .map(|i| fleetpulse_sim::pages_printed(&sim, i, 0, steps))
        .collect();
    let fleet = fleetpulse_sim::start(sim, shutdown.clone())
        .await
        .context("starting the 13 simulated printers")?;
    let devices: Vec<DeviceConfig> = fleet
        .printers()
        .iter()
        .map(|p| DeviceConfig::new(p.addr.to_string(), p.community.clone()))
        .collect();

    let relay_z = KafkaRelay::start(&bootstrap, shutdown.clone()).await?;
    let relay_n = KafkaRelay::start(&bootstrap, shutdown.clone()).await?;
    let cfg_z = edge_config(
        &base,
        &devices,
        &relay_z,
        "benchz",
        "bench-edge-z",
        &metadata,
        &[],
    );
    let cfg_n = edge_config(
        &base,
        &devices,
        &relay_n,
        "benchn",
        "bench-edge-n",
        &metadata,
        &[("compression.type", "none")],
    );
    for k in [&cfg_z.kafka, &cfg_n.kafka] {
        for t in k.all_topics() {
            cluster
                .create_topic(&t, PARTITIONS, 1)
                .with_context(|| format!("creating topic {t}"))?;
        }
    }
    let (kz, kn) = (cfg_z.kafka.clone(), cfg_n.kafka.clone());
    let dirs = [cfg_z.buffer.dir.clone(), cfg_n.buffer.dir.clone()];
    let edges = Shutdown::new();
    let wall = CYCLE.div_f64(speedup).mul_f64(fraction);
    let started = Instant::now();
    let ez = tokio::spawn(fleetpulse_edge::run(cfg_z, edges.clone()));
    let en = tokio::spawn(fleetpulse_edge::run(cfg_n, edges.clone()));
    tokio::time::sleep(wall).await;
    edges.cancel();
    ez.await
        .context("edge task")?
        .context("edge (compressed)")?;
    en.await
        .context("edge task")?
        .context("edge (uncompressed)")?;
    let elapsed = started.elapsed();
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let compressed = relay_z.totals();
    let uncompressed = relay_n.totals();
    for (name, t) in [("compressed", &compressed), ("uncompressed", &uncompressed)] {
        anyhow::ensure!(
            t.metadata_responses > 0 && t.rewrites >= t.metadata_responses,
            "the {name} relay saw {} Metadata responses but rewrote the broker address {} times: \
             the producer may have bypassed it",
            t.metadata_responses,
            t.rewrites
        );
    }
    let (b, kz2) = (bootstrap.clone(), kz.clone());
    let records = tokio::task::spawn_blocking(move || read_back(&b, &kz2)).await??;
    let b = bootstrap.clone();
    let records_uncompressed = tokio::task::spawn_blocking(move || read_back(&b, &kn))
        .await??
        .values()
        .map(|t| t.records)
        .sum();
    drop(cluster);
    Ok(WanResult {
        speedup,
        fraction,
        wall: elapsed,
        scaled,
        metadata_refresh_ms: refresh_ms,
        metadata_max_age_ms: max_age_ms,
        activity: OFFICE_ACTIVITY,
        pages,
        compressed,
        uncompressed,
        records,
        records_uncompressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_schedule_durations_only() {
        let base = EdgeConfig::default();
        let (cfg, scaled) = scale_schedule(&base, 30.0).unwrap();
        assert_eq!(cfg.poll_interval, base.poll_interval / 30);
        assert_eq!(cfg.heartbeat_interval, base.heartbeat_interval / 30);
        // Timeouts and the shutdown grace are not part of the schedule.
        assert_eq!(cfg.snmp, base.snmp);
        assert_eq!(cfg.ipp, base.ipp);
        assert_eq!(cfg.shutdown_grace, base.shutdown_grace);
        let keys: Vec<&str> = scaled.iter().map(|s| s.key.as_str()).collect();
        assert!(keys.contains(&"poll_interval"), "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("snmp")), "{keys:?}");
        // Never below 1 s: the edge's own minimum.
        let (cfg, scaled) = scale_schedule(&base, 1000.0).unwrap();
        assert_eq!(cfg.poll_interval, Duration::from_secs(1));
        for s in &scaled {
            let exact = s.from.as_secs_f64() / 1000.0;
            assert_eq!(s.clamped, exact < 1.0, "{s:?}");
        }
        // The schedule keys are scaled, the floor with them (so the scaled
        // default config stays valid).
        let (cfg, _) = scale_schedule(&base, 30.0).unwrap();
        assert_eq!(cfg.schedule.status_interval, Duration::from_secs(360));
        assert_eq!(cfg.schedule.min_interval, Duration::from_secs(60));
        fleetpulse_core::config::Validate::validate(&EdgeConfig {
            tenant_id: "t".into(),
            connector_id: "c".into(),
            connector_secret: "s".into(),
            devices: vec![DeviceConfig::new("127.0.0.1:1161", "public")],
            ..cfg
        })
        .unwrap();
    }
}
