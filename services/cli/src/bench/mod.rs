//! `fleetpulse bench edge`: how fast, how small and how quiet the edge is;
//! `fleetpulse bench process`: how fast the processor turns records into
//! Parquet ([`process`]), and whether the real `fleetpulse process` stays
//! within its stated memory bound with many partitions ([`memory`]).
//!
//! Three measurements, each against the simulated fleet and each counted
//! outside the code under test:
//!
//! - **Throughput and memory** ([`throughput`]): printers polled per minute
//!   on one core (CPU time of the one thread that polls) and the edge
//!   process's peak RSS, for 1 k and 10 k printers, with the simulator in a
//!   child process so its memory is not counted as the edge's.
//! - **LAN bytes per poll** ([`lan`]): a UDP relay counts the payload of
//!   every request and response of one edge poll, and of net-snmp reading the
//!   same objects (`snmpget` of the same scalars, `snmpbulkwalk` of the same
//!   subtrees).
//! - **WAN bytes** ([`wan`]): the real edge, default schedule compressed in
//!   time, publishing for 13 printers over one 3-hour cycle through a Kafka
//!   relay that counts protocol bytes, next to a vendor collector's
//!   111,530 bytes for the same network.
//!
//! The output ends with one `RESULT …` line for scripts and CI.

mod kafka_relay;
mod lan;
mod memory;
mod process;
mod procfs;
mod throughput;
mod wan;

use std::fmt::Write as _;
use std::time::Duration;

use fleetpulse_edge::{EdgeConfig, SnmpOptions};

/// A vendor's collector: bytes to scan a network of 13 printers (3-hour cycle).
pub(crate) const VENDOR_13_PRINTERS: u64 = 111_530;
/// The same collector: bytes to scan one printer.
pub(crate) const VENDOR_1_PRINTER: u64 = 7_260;
/// Throughput target: printers a minute …
const TARGET_PER_MIN: f64 = 10_000.0;
/// … in less than this much memory (MB).
const TARGET_RSS_MB: f64 = 200.0;
/// Wall time of the WAN sample in quick mode.
const QUICK_WAN_WALL: Duration = Duration::from_secs(20);

#[derive(clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Benchmark the edge connector: throughput, RSS, LAN and WAN bytes.
    Edge(EdgeArgs),
    /// Benchmark the processor: events/s per core through verify, decode,
    /// anonymise, Arrow and zstd Parquet, against a Python baseline.
    Process(process::ProcessArgs),
}

#[derive(clap::Args)]
pub(crate) struct EdgeArgs {
    /// CI mode: 200 printers, 3 printers for LAN bytes, a 20 s sample of the
    /// compressed WAN cycle (extrapolated to 3 h).
    #[arg(long)]
    quick: bool,
    /// Fleet sizes for the throughput runs, comma-separated
    /// [default: 1000,10000; quick: 200].
    #[arg(long, value_delimiter = ',')]
    printers: Option<Vec<usize>>,
    /// Polls in flight at once [default: the edge's max_concurrent_polls].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Lowest UDP port for the simulated fleet (needs N consecutive free
    /// ports; the next free range at or above it is used).
    #[arg(long, default_value_t = 20_000)]
    base_port: u16,
    /// Printers polled for the LAN byte counts [default: 5; quick: 3].
    #[arg(long)]
    lan_printers: Option<usize>,
    /// How many times faster than real time the 3-hour WAN cycle runs
    /// (schedule durations divided by it, never below 1 s).
    #[arg(long, default_value_t = 30.0)]
    wan_speedup: f64,
    /// Share of the compressed cycle to run; below 1 the bytes are
    /// extrapolated to the whole cycle [default: 1; quick: 20 s worth].
    #[arg(long)]
    wan_fraction: Option<f64>,
    /// A librdkafka property for the WAN run's edges, `KEY=VALUE`, as in
    /// `kafka.properties` (repeatable); to measure a setting before
    /// deploying it.
    #[arg(long = "wan-kafka-property", value_parser = parse_property)]
    wan_kafka_properties: Vec<(String, String)>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Run `fleetpulse bench …`.
pub(crate) async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Edge(args) => edge(args).await,
        BenchCommand::Process(args) => tokio::task::spawn_blocking(move || {
            process::run(&args, &mut std::io::stdout().lock()).map(|_| ())
        })
        .await
        .map_err(|e| anyhow::anyhow!("the benchmark thread failed: {e}"))?,
    }
}

fn num(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or("NA".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn opt_mb(b: Option<u64>) -> String {
    b.map_or("NA".into(), |b| format!("{:.1}", procfs::mib(b)))
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

async fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    let defaults = EdgeConfig::default();
    let sizes = args.printers.clone().unwrap_or_else(|| {
        if args.quick {
            vec![200]
        } else {
            vec![1_000, 10_000]
        }
    });
    anyhow::ensure!(
        !sizes.is_empty() && sizes.iter().all(|n| *n > 0),
        "--printers needs positive sizes"
    );
    let concurrency = args
        .concurrency
        .unwrap_or(defaults.max_concurrent_polls)
        .max(1);
    let lan_printers = args
        .lan_printers
        .unwrap_or(if args.quick { 3 } else { 5 })
        .max(1);
    let cycle_wall = wan::CYCLE.div_f64(args.wan_speedup.max(1.0));
    let wan_fraction = args.wan_fraction.unwrap_or(if args.quick {
        (QUICK_WAN_WALL.as_secs_f64() / cycle_wall.as_secs_f64()).min(1.0)
    } else {
        1.0
    });
    let opts = SnmpOptions::default();

    println!(
        "fleetpulse {} bench edge{} ({}, {} CPUs)",
        env!("CARGO_PKG_VERSION"),
        if args.quick { " --quick" } else { "" },
        if cfg!(debug_assertions) {
            "debug build: timings not representative"
        } else {
            "release build"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // --- throughput and RSS -------------------------------------------------
    println!();
    println!(
        "== Throughput: edge poll_device on ONE thread (current-thread tokio runtime), \
         {concurrency} polls in flight, SNMP v2c max-repetitions {}; simulator in a child process",
        opts.max_repetitions
    );
    println!(
        "{:>8} {:>8} {:>7} {:>8} {:>14} {:>10} {:>16} {:>13} {:>12} {:>9}",
        "printers",
        "polled",
        "failed",
        "wall s",
        "per min (wall)",
        "edge CPU s",
        "per min per core",
        "edge RSS MB",
        "sim RSS MB",
        "sim CPU s"
    );
    let mut runs = Vec::new();
    for n in &sizes {
        let r = throughput::measure(*n, args.base_port, concurrency, &opts).await?;
        println!(
            "{:>8} {:>8} {:>7} {:>8.2} {:>14} {:>10} {:>16} {:>13} {:>12} {:>9}",
            r.printers,
            r.ok,
            r.failed_total(),
            r.wall.as_secs_f64(),
            num(r.per_min_wall()),
            opt_secs(r.edge_cpu),
            r.per_min_per_core().map_or("NA".into(), num),
            opt_mb(r.edge_peak_rss),
            opt_mb(r.sim_peak_rss),
            opt_secs(r.sim_cpu),
        );
        if !r.failed.is_empty() {
            println!("{:>8} failures by class: {:?}", "", r.failed);
        }
        runs.push(r);
    }
    println!(
        "RSS = peak resident set (VmHWM) of this process during the run (reset before it); \
         the simulator's is separate."
    );
    let Some(largest) = runs.iter().max_by_key(|r| r.printers).cloned() else {
        anyhow::bail!("no throughput run");
    };
    if let Some(r) = runs.iter().find(|r| r.printers >= 10_000) {
        let rss = r.edge_peak_rss.map_or(f64::NAN, procfs::mib);
        println!(
            "target: 10 k printers a minute in < 200 MB: {} printers in {:.1} s wall ({} per minute), \
             edge RSS {rss:.1} MB -> {}",
            r.printers,
            r.wall.as_secs_f64(),
            num(r.per_min_wall()),
            pass(r.per_min_wall() >= TARGET_PER_MIN && r.failed_total() == 0 && rss < TARGET_RSS_MB)
        );
    }

    // --- LAN bytes ----------------------------------------------------------
    let lan = lan::measure(lan_printers, &opts).await?;
    println!();
    println!(
        "== LAN bytes per printer poll: UDP payload, request + response, through a counting relay; \
         mean of {} simulated printers; GETBULK max-repetitions {}",
        lan.polls, lan.max_repetitions
    );
    println!(
        "{:<26} {:>9} {:>11} {:>10} | {:>13} {:>15} {:>15}",
        "subtree",
        "edge reqs",
        "edge bytes",
        "values",
        "net-snmp reqs",
        "net-snmp bytes",
        "net-snmp values"
    );
    let per = |v: u64| v as f64 / lan.polls as f64;
    let (mut et, mut nt) = (lan::Tally::default(), lan::Tally::default());
    for (key, e, n) in &lan.rows {
        let (nr, nb, nv) = match n {
            Some(n) => (
                format!("{:.1}", per(n.requests)),
                num(per(n.bytes())),
                format!("{:.1}", per(n.values)),
            ),
            None => ("NA".into(), "NA".into(), "NA".into()),
        };
        println!(
            "{:<26} {:>9.1} {:>11} {:>10.1} | {:>13} {:>15} {:>15}",
            lan::name_of(key),
            per(e.requests),
            num(per(e.bytes())),
            per(e.values),
            nr,
            nb,
            nv
        );
        for (t, s) in [(&mut et, Some(e)), (&mut nt, n.as_ref())] {
            if let Some(s) = s {
                t.requests += s.requests;
                t.request_bytes += s.request_bytes;
                t.response_bytes += s.response_bytes;
                t.values += s.values;
            }
        }
    }
    let net_total = match lan.netsnmp_per_poll() {
        Some(v) => (
            format!("{:.1}", per(nt.requests)),
            num(v),
            format!("{:.1}", per(nt.values)),
        ),
        None => ("NA".into(), "NA".into(), "NA".into()),
    };
    println!(
        "{:<26} {:>9.1} {:>11} {:>10.1} | {:>13} {:>15} {:>15}",
        "total per poll",
        per(et.requests),
        num(lan.edge_per_poll()),
        per(et.values),
        net_total.0,
        net_total.1,
        net_total.2
    );
    match &lan.netsnmp_missing {
        None => println!(
            "net-snmp: `snmpget -v2c` of the same scalars, then `snmpbulkwalk -v2c -Cr{}` of each subtree, \
             through the same relay",
            lan.max_repetitions
        ),
        Some(why) => println!("net-snmp not measured: {why}"),
    }

    // --- WAN bytes ----------------------------------------------------------
    let wan = wan::measure(args.wan_speedup, wan_fraction, &args.wan_kafka_properties).await?;
    println!();
    println!(
        "== WAN bytes: {} printers, one 3 h cycle, edge default schedule compressed {}x \
         ({:.1} s wall{}), simulator at {}x",
        wan::PRINTERS,
        wan.speedup,
        wan.wall.as_secs_f64(),
        if wan.fraction < 1.0 {
            format!(
                ", {:.1} % of the cycle measured and extrapolated to 3 h",
                wan.fraction * 100.0
            )
        } else {
            String::new()
        },
        wan.speedup
    );
    let mut assumptions = String::new();
    for s in &wan.scaled {
        let _ = write!(
            assumptions,
            "{}{} = {} (-> {}{})",
            if assumptions.is_empty() { "" } else { ", " },
            s.key,
            humantime::format_duration(s.from),
            humantime::format_duration(s.to),
            if s.clamped {
                ", raised to the 1 s minimum"
            } else {
                ""
            }
        );
    }
    println!("schedule (EdgeConfig defaults, compressed): {assumptions}");
    let ms = |v: i64| {
        if v < 0 {
            "disabled".to_string()
        } else {
            format!("{v} ms")
        }
    };
    if !args.wan_kafka_properties.is_empty() {
        let set: Vec<String> = args
            .wan_kafka_properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("kafka.properties set for this run: {}", set.join(", "));
    }
    println!(
        "librdkafka (edge producer defaults): linger.ms = 1000 (not scaled), \
         topic.metadata.refresh.interval.ms = {}, metadata.max.age.ms (compressed) = {}; \
         4 partitions per topic; one mock broker; {} + {} connections through the relays; \
         bytes are Kafka protocol bytes as on the wire (plaintext: no TLS, no TCP/IP headers), \
         startup (ApiVersions, first Metadata, InitProducerId) included",
        ms(wan.metadata_refresh_ms),
        ms(wan.metadata_max_age_ms),
        wan.compressed.connections,
        wan.uncompressed.connections
    );
    let pages_total: u64 = wan.pages.iter().sum();
    let (pmin, pmax) = (
        wan.pages.iter().min().copied().unwrap_or(0),
        wan.pages.iter().max().copied().unwrap_or(0),
    );
    let per_printer_3h = wan.per_cycle(pages_total) as f64 / wan::PRINTERS as f64;
    println!(
        "print volume (assumption): an office — simulator activity {} (about 170 pages an hour, \
         around the clock at 1); the {} printers print \
         {} pages in 3 h, {:.0} per printer (from {} to {} in the part run), about {:.0} pages an hour each, \
         i.e. ~{} pages a month in 8-hour working days (21 a month); the 100-page counter rule fires \
         for the busier ones",
        wan.activity,
        wan::PRINTERS,
        num(wan.per_cycle(pages_total) as f64),
        per_printer_3h,
        pmin,
        pmax,
        per_printer_3h / 3.0,
        num(per_printer_3h / 3.0 * 8.0 * 21.0)
    );
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>11} {:>16}",
        "record type", "records", "key B", "value B", "headers B", "uncompressed B"
    );
    let mut all = wan::TypeBytes::default();
    for (name, t) in &wan.records {
        println!(
            "{:<22} {:>9} {:>9} {:>10} {:>11} {:>16}",
            name,
            num(wan.per_cycle(t.records) as f64),
            num(wan.per_cycle(t.key) as f64),
            num(wan.per_cycle(t.value) as f64),
            num(wan.per_cycle(t.headers) as f64),
            num(wan.per_cycle(t.total()) as f64)
        );
        all.records += t.records;
        all.key += t.key;
        all.value += t.value;
        all.headers += t.headers;
    }
    println!(
        "{:<22} {:>9} {:>9} {:>10} {:>11} {:>16}",
        "all records",
        num(wan.per_cycle(all.records) as f64),
        num(wan.per_cycle(all.key) as f64),
        num(wan.per_cycle(all.value) as f64),
        num(wan.per_cycle(all.headers) as f64),
        num(wan.per_cycle(all.total()) as f64)
    );
    println!(
        "{:<22} {:>9} {:>14} {:>14} {:>16} {:>16}",
        "Kafka API (per 3 h)",
        "requests",
        "compressed up",
        "compressed down",
        "uncompressed up",
        "uncompressed down"
    );
    let mut apis: Vec<i16> = wan.compressed.by_api.keys().copied().collect();
    apis.extend(wan.uncompressed.by_api.keys().copied());
    apis.sort_unstable();
    apis.dedup();
    for api in apis {
        let z = wan.compressed.by_api.get(&api).copied().unwrap_or_default();
        let n = wan
            .uncompressed
            .by_api
            .get(&api)
            .copied()
            .unwrap_or_default();
        println!(
            "{:<22} {:>9} {:>14} {:>14} {:>16} {:>16}",
            kafka_relay::api_name(api),
            num(wan.per_cycle(z.requests) as f64),
            num(wan.per_cycle(z.up) as f64),
            num(wan.per_cycle(z.down) as f64),
            num(wan.per_cycle(n.up) as f64),
            num(wan.per_cycle(n.down) as f64)
        );
    }
    let z_total = wan.wan_bytes();
    let n_total = wan.per_cycle(wan.uncompressed.up() + wan.uncompressed.down());
    println!(
        "{:<22} {:>9} {:>14} {:>14} {:>16} {:>16}",
        "total",
        num(wan
            .compressed
            .by_api
            .values()
            .map(|a| wan.per_cycle(a.requests))
            .sum::<u64>() as f64),
        num(wan.per_cycle(wan.compressed.up()) as f64),
        num(wan.per_cycle(wan.compressed.down()) as f64),
        num(wan.per_cycle(wan.uncompressed.up()) as f64),
        num(wan.per_cycle(wan.uncompressed.down()) as f64)
    );
    // Every printer is read every poll_interval on the LAN.
    let polls = (wan::CYCLE.as_secs_f64() / EdgeConfig::default().poll_interval.as_secs_f64()
        * wan::PRINTERS as f64)
        .round() as u64;
    println!(
        "WAN bytes, 13 printers, 3 h (both directions): {} compressed, {} uncompressed \
         (records read back from the measured part: {} compressed, {} uncompressed); vendor collector: {} -> ratio {:.2}; target <= 1/10 ({}) -> {}",
        num(z_total as f64),
        num(n_total as f64),
        num(all.records as f64),
        num(wan.records_uncompressed as f64),
        num(VENDOR_13_PRINTERS as f64),
        z_total as f64 / VENDOR_13_PRINTERS as f64,
        num(VENDOR_13_PRINTERS as f64 / 10.0),
        pass(z_total * 10 <= VENDOR_13_PRINTERS)
    );
    if polls > 0 {
        println!(
            "per printer poll: {} LAN polls in 3 h, {} WAN bytes each (vendor: {} bytes per printer scan)",
            num(polls as f64),
            num(z_total as f64 / polls as f64),
            num(VENDOR_1_PRINTER as f64)
        );
    }

    // --- RESULT ----------------------------------------------------------------
    println!();
    let per_core = largest
        .per_min_per_core()
        .unwrap_or_else(|| largest.per_min_wall());
    let rss_mb = largest.edge_peak_rss.map_or(0.0, procfs::mib);
    println!(
        "RESULT printers_per_min_per_core={} rss_mb={:.1} lan_bytes_per_poll={} netsnmp_bytes_per_poll={} wan_bytes_13_printers_3h={}",
        per_core.round() as u64,
        rss_mb,
        lan.edge_per_poll().round() as u64,
        lan.netsnmp_per_poll()
            .map_or("NA".to_string(), |v| (v.round() as u64).to_string()),
        z_total
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(999.4), "999");
        assert_eq!(num(111_530.0), "111,530");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(-1_000.0), "-1,000");
    }
}
