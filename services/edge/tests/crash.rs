//! Crash test: the connector is killed with SIGKILL 20 times at random
//! moments while it writes its buffer (the broker is unreachable, so every
//! record stays buffered), and restarted each time.
//!
//! The connector is the real `fleetpulse edge --config FILE` process (the
//! test builds the CLI binary with cargo first, as the root package's tests
//! do), so the signal handling, logging and config loading under test are
//! the ones operators run. While it runs, a second connector on the same
//! buffer directory must be refused, naming `buffer.dir`.
//!
//! "Stored" is checked from the outside: after each kill the test reads the
//! buffer files read-only ([`fleetpulse_edge::buffer::inspect`]); every
//! record that was complete and checksummed on disk after one kill must
//! still be there after the next restart and kill, so recovery never loses
//! a stored record. Every fifth kill the test also appends half a frame of
//! garbage, as a power loss would, and the restarted connector must log
//! that it cut the torn tail and keep running. Finally a reachable broker
//! (an in-process MockCluster, reachable from the child) receives the
//! whole buffer.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetpulse_core::Shutdown;
use fleetpulse_edge::buffer::{inspect, Buffer, BufferConfig, BufferError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const KILLS: usize = 20;

/// The `fleetpulse` binary, built (or brought up to date) first. This crate
/// cannot depend on the CLI package, so it asks cargo, like
/// `fleetpulse::fleetpulse_bin()` in the root package.
fn fleetpulse_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "fleetpulse-cli", "--bin", "fleetpulse"])
        .current_dir(&root)
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build of the fleetpulse binary failed"
    );
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug")
        .join("fleetpulse")
}

fn spawn_child(bin: &Path, config: &Path, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(bin)
        .arg("edge")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("FLEETPULSE_LOG")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .spawn()
        .expect("spawning the connector")
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

fn write_config(path: &Path, brokers: &str, dir: &Path, devices: &[(String, String)]) {
    let mut s = format!(
        "tenant_id = \"t-crash\"\nconnector_id = \"c-crash\"\nconnector_secret = \"crash-test-secret-0123456789\"\n\
         poll_interval = \"1s\"\nheartbeat_interval = \"1s\"\nshutdown_grace = \"200ms\"\n\
         [schedule]\nmin_interval = \"1s\"\nstatus_interval = \"1s\"\ncounters_interval = \"1s\"\ndevice_heartbeats = \"every_poll\"\n[snmp]\ntimeout = \"1s\"\nretries = 1\npoll_deadline = \"4s\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopic_prefix = \"crash\"\n\
         [buffer]\ndir = \"{}\"\nmax_bytes = 268435456\nsegment_bytes = 262144\nfsync = \"batch\"\n",
        dir.display()
    );
    for (address, community) in devices {
        s.push_str(&format!(
            "[[devices]]\naddress = \"{address}\"\ncommunity = \"{community}\"\n"
        ));
    }
    std::fs::write(path, s).expect("config file");
}

fn durable_ids(dir: &Path) -> (HashSet<String>, usize) {
    let found = inspect(dir).expect("inspect buffer");
    let ids = found
        .records
        .iter()
        .map(|r| r.event_id.clone())
        .filter(|e| !e.is_empty())
        .collect();
    (ids, found.torn_tails)
}

/// The last segment file, where a torn tail would be.
fn last_segment(dir: &Path) -> Option<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_buffer_writes_loses_no_stored_record() {
    let bin = fleetpulse_bin();
    let sim_stop = Shutdown::new();
    let fleet = fleetpulse_sim::start(
        fleetpulse_sim::SimConfig {
            printers: 40,
            base_port: 0,
            acceleration: 600.0,
            silence_probability: 0.0,
            jam_probability: 0.5,
            ..Default::default()
        },
        sim_stop.clone(),
    )
    .await
    .expect("sim fleet");
    let devices: Vec<(String, String)> = fleet
        .printers()
        .iter()
        .map(|p| (p.addr.to_string(), p.community.clone()))
        .collect();
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("buffer");
    let config = work.path().join("edge.toml");
    let log = work.path().join("edge.log");
    write_config(&config, "127.0.0.1:1", &dir, &devices);

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    println!("random seed {seed}");
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };

    let mut stored: HashSet<String> = HashSet::new();
    let mut injected = 0;
    let mut torn_seen = 0;
    for kill in 0..KILLS {
        let opened_before = count(&log, "buffer opened");
        let cuts_before = count(&log, "torn tail cut");
        let mut child = spawn_child(&bin, &config, &log);
        let started = Instant::now();
        while count(&log, "buffer opened") <= opened_before {
            assert!(
                matches!(child.try_wait(), Ok(None)),
                "restart {kill}: the connector exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "restart {kill}: buffer never opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expect_cut = kill > 0 && torn_seen > 0;
        if expect_cut {
            assert!(
                count(&log, "torn tail cut") > cuts_before,
                "restart {kill}: a torn tail was on disk but the connector did not report cutting it"
            );
        }
        if kill == 0 {
            assert_second_connector_refused(&bin, &config, &dir);
        }
        // Let it write for a random while, then kill it mid-stride.
        let pause = Duration::from_millis(400 + rand() % 1600);
        tokio::time::sleep(pause).await;
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "restart {kill}: the connector died on its own (crash loop?)"
        );
        child.kill().expect("SIGKILL");
        let _ = child.wait();

        let (now, torn) = durable_ids(&dir);
        let lost: Vec<&String> = stored.difference(&now).collect();
        assert!(
            lost.is_empty(),
            "kill {kill}: {} stored records vanished after a restart, e.g. {:?}",
            lost.len(),
            lost.iter().take(3).collect::<Vec<_>>()
        );
        println!(
            "kill {kill:2} after {pause:?}: {} records stored (+{}), torn tail on disk: {}",
            now.len(),
            now.len() - stored.len(),
            torn > 0
        );
        stored = now;
        torn_seen = torn;
        // Every fifth kill, simulate a power loss in the middle of a write.
        if kill % 5 == 4 {
            if let Some(seg) = last_segment(&dir) {
                let garbage: Vec<u8> = b"FPB1\x40\x00\x00\x00"
                    .iter()
                    .copied()
                    .chain((0..40).map(|_| rand() as u8))
                    .collect();
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&seg)
                    .and_then(|mut f| f.write_all(&garbage))
                    .expect("inject torn tail");
                injected += 1;
                torn_seen += 1;
            }
        }
    }
    assert!(
        stored.len() > 1000,
        "the connector stored only {} records",
        stored.len()
    );

    // The uplink returns: everything stored arrives.
    let cluster = MockCluster::new(1).expect("mock cluster");
    let kafka = fleetpulse_core::kafka::KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic_prefix: "crash".into(),
        properties: Default::default(),
        ..Default::default()
    };
    for t in kafka.all_topics() {
        cluster.create_topic(&t, 1, 1).expect("topic");
    }
    write_config(&config, &cluster.bootstrap_servers(), &dir, &devices);
    let mut child = spawn_child(&bin, &config, &log);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "crash-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in kafka.all_topics() {
        tpl.add_partition_offset(&t, 0, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut missing = stored.clone();
    let started = Instant::now();
    let mut received = 0usize;
    while !missing.is_empty() && started.elapsed() < Duration::from_secs(120) {
        let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        if let Some(Ok(m)) = polled {
            received += 1;
            let topic = m.topic().to_string();
            let payload = m.payload().unwrap_or_default();
            if let Some(id) = event_id_of(&kafka, &topic, payload) {
                missing.remove(&id);
            }
        }
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "the connector exited while draining"
        );
    }
    println!(
        "drained to the broker in {:?}: {received} messages, {} of {} stored records missing",
        started.elapsed(),
        missing.len(),
        stored.len()
    );
    assert!(
        missing.is_empty(),
        "{} stored records never arrived",
        missing.len()
    );
    let cuts = count(&log, "torn tail cut");
    println!(
        "{KILLS} kills, {injected} torn tails injected, {cuts} torn tails cut by the connector"
    );
    assert!(cuts >= injected, "every injected torn tail was cut");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop on SIGTERM: {status:?}"
    );
    // Acknowledged records are behind the durable cursor: none is pending any more.
    let (left, _) = durable_ids(&dir);
    let still: Vec<_> = stored.intersection(&left).collect();
    assert!(
        still.is_empty(),
        "{} delivered records are still pending in the buffer",
        still.len()
    );
    sim_stop.cancel();
    fleet.join().await;
}

/// While a connector runs on `dir`, neither a second `fleetpulse edge` with
/// the same config nor an in-process [`Buffer::open`] may use it.
fn assert_second_connector_refused(bin: &Path, config: &Path, dir: &Path) {
    let out = Command::new(bin)
        .arg("edge")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("FLEETPULSE_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("second connector");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second connector ran on a locked buffer dir: {stderr}"
    );
    assert!(
        stderr.contains("buffer.dir") && stderr.contains(&dir.display().to_string()),
        "the refusal names buffer.dir and the directory: {stderr}"
    );
    let err = Buffer::open(BufferConfig {
        dir: dir.to_path_buf(),
        ..BufferConfig::default()
    })
    .expect_err("the buffer dir is locked by the running connector");
    assert!(matches!(err, BufferError::Locked { .. }), "{err:?}");
}

fn event_id_of(
    kafka: &fleetpulse_core::kafka::KafkaConfig,
    topic: &str,
    payload: &[u8],
) -> Option<String> {
    use fleetpulse_core::codec::decode;
    use fleetpulse_core::records::*;
    use fleetpulse_core::schema::RecordType as T;
    Some(match kafka.record_type_of(topic)? {
        T::DeviceHeartbeat => decode::<DeviceHeartbeat>(payload).ok()?.event_id,
        T::DeviceStatus => decode::<DeviceStatus>(payload).ok()?.event_id,
        T::UsageCounters => decode::<UsageCounters>(payload).ok()?.event_id,
        T::AlertEvent => decode::<AlertEvent>(payload).ok()?.event_id,
        T::ConnectorHeartbeat => decode::<ConnectorHeartbeat>(payload).ok()?.event_id,
        T::JobRecord => decode::<JobRecord>(payload).ok()?.event_id,
        T::MaintenanceAlert => decode::<MaintenanceAlert>(payload).ok()?.event_id,
    })
}
