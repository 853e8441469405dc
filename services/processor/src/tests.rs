//! End-to-end tests of the processor against an in-process Kafka
//! (`MockCluster`) and a temporary lake directory. Records are signed exactly
//! like a connector signs them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use fleetpulse_core::kafka::{dlq_headers, KafkaConfig};
use fleetpulse_core::pseudonym::Pseudonymizer;
use fleetpulse_core::records::Record;
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::signing::*;
use fleetpulse_core::{codec, samples, Shutdown};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::Stats;
use crate::lake::LakeWriter;
use crate::privacy::Transformer;
use crate::{run_with_stats, ProcessorConfig};

mod derived;
mod signing;

const CONNECTOR: &str = "conn-1";
const SECRET: &str = "connector-secret-for-tests-0001";
const PSEUDONYM_KEY: &str = "pseudonym-key-for-tests-000001";
const DEADLINE: Duration = Duration::from_secs(60);

/// (topic, key, payload, headers; `None` = unsigned).
type ToSend = (String, Vec<u8>, Vec<u8>, Option<OwnedHeaders>);
/// (headers by name, key, payload).
type DlqMessage = (BTreeMap<String, String>, Vec<u8>, Vec<u8>);

struct Harness {
    cluster: MockCluster<'static, DefaultProducerContext>,
    kafka: KafkaConfig,
    producer: FutureProducer,
    lake: tempfile::TempDir,
    /// Next sequence number: like a connector's, never reused.
    seq: AtomicU64,
}

/// A sent message: where it landed and what it carried.
#[derive(Debug, Clone)]
struct Sent {
    topic: String,
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
}

impl Harness {
    fn new(partitions: i32) -> Harness {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let kafka = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            topic_prefix: "fp".into(),
            properties: BTreeMap::new(),
            ..Default::default()
        };
        for t in kafka.all_topics() {
            cluster.create_topic(&t, partitions, 1).expect("topic");
        }
        let producer: FutureProducer = kafka
            .client_config()
            .set("linger.ms", "1")
            .create()
            .expect("producer");
        Harness {
            cluster,
            kafka,
            producer,
            lake: tempfile::tempdir().expect("tempdir"),
            seq: AtomicU64::new(1),
        }
    }

    fn config(&self) -> ProcessorConfig {
        let mut kafka = self.kafka.clone();
        // A killed consumer is noticed after the session timeout; keep it short.
        kafka
            .properties
            .insert("session.timeout.ms".into(), "3000".into());
        kafka
            .properties
            .insert("heartbeat.interval.ms".into(), "300".into());
        ProcessorConfig {
            kafka,
            lake_dir: self.lake.path().to_path_buf(),
            roll_idle: Duration::from_millis(300),
            roll_age: Duration::from_secs(5),
            pseudonym_key: Some(PSEUDONYM_KEY.into()),
            pseudonym_key_id: "v1".into(),
            connector_secrets: [(CONNECTOR.to_string(), SECRET.to_string())].into(),
            ..ProcessorConfig::default()
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Produce messages concurrently; `None` headers means unsigned.
    async fn produce(&self, msgs: Vec<ToSend>) -> Vec<Sent> {
        let futs = msgs.into_iter().map(|(topic, key, payload, headers)| {
            let producer = self.producer.clone();
            async move {
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
                    .key(key.as_slice())
                    .payload(payload.as_slice());
                if let Some(h) = headers {
                    rec = rec.headers(h);
                }
                let d = producer
                    .send(rec, Timeout::After(Duration::from_secs(10)))
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivery");
                Sent {
                    topic: topic.clone(),
                    partition: d.partition,
                    offset: d.offset,
                    key,
                    payload,
                }
            }
        });
        futures::future::join_all(futs).await
    }

    /// Produce signed records; returns event id -> sent.
    async fn produce_records(
        &self,
        records: Vec<(RecordType, String, Vec<u8>)>,
    ) -> Vec<(String, Sent)> {
        let mut ids = Vec::new();
        let mut msgs = Vec::new();
        for (i, (t, event_id, payload)) in records.into_iter().enumerate() {
            let topic = self.kafka.topic(t);
            let key = format!("key-{i}").into_bytes();
            let h = sign(&topic, &key, &payload, self.next_seq());
            ids.push(event_id);
            msgs.push((topic, key, payload, Some(h)));
        }
        let sent = self.produce(msgs).await;
        ids.into_iter().zip(sent).collect()
    }
}

fn sign(topic: &str, key: &[u8], payload: &[u8], seq: u64) -> OwnedHeaders {
    let ts = fleetpulse_core::now_millis();
    sign_with(SECRET, topic, key, payload, seq, ts)
}

/// Sign like connector `CONNECTOR` holding `secret`, at signing time `ts`.
fn sign_with(
    secret: &str,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    seq: u64,
    ts: i64,
) -> OwnedHeaders {
    let k = SigningKey::derive(secret.as_bytes(), CONNECTOR);
    let sig = k.sign(topic, key, seq, ts, payload).to_bytes();
    OwnedHeaders::new().insert(Header {
        key: HDR_SIG,
        value: Some(&sig[..]),
    })
}

fn encoded<R: Record>(r: &R) -> (RecordType, String, Vec<u8>) {
    (
        R::TYPE,
        r.event_id().to_string(),
        codec::encode(r).expect("encode"),
    )
}

fn serial(i: usize) -> String {
    format!("RAWSERIAL-{i:04}-QX")
}

/// Run the processor in the background.
fn start(
    config: ProcessorConfig,
) -> (
    Shutdown,
    Arc<Stats>,
    tokio::task::JoinHandle<Result<(), crate::ProcessorError>>,
) {
    let shutdown = Shutdown::new();
    let stats = Arc::new(Stats::default());
    let handle = tokio::spawn(run_with_stats(config, shutdown.clone(), stats.clone()));
    (shutdown, stats, handle)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).expect("open parquet");
    ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet reader")
        .build()
        .expect("build")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

fn strings(col: &ArrayRef) -> Vec<Option<String>> {
    let a = col.as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

/// Every string in an array, however deeply nested.
fn all_strings(a: &ArrayRef, out: &mut Vec<String>) {
    match a.data_type() {
        DataType::Utf8 => out.extend(strings(a).into_iter().flatten()),
        DataType::List(_) => all_strings(a.as_list::<i32>().values(), out),
        DataType::Struct(_) => {
            for c in a.as_struct().columns() {
                all_strings(c, out);
            }
        }
        _ => {}
    }
}

/// All rows of a table: event_id -> (partition, offset), plus every string seen.
fn lake_rows(dir: &Path, table: &str) -> (Vec<(String, i32, i64)>, Vec<String>) {
    let mut rows = Vec::new();
    let mut texts = Vec::new();
    for f in parquet_files(&dir.join(format!("table={table}"))) {
        for b in read_batches(&f) {
            let ids = strings(b.column_by_name("event_id").expect("event_id"));
            let parts = b
                .column_by_name("_kafka_partition")
                .expect("_kafka_partition")
                .as_primitive::<Int32Type>()
                .clone();
            let offs = b
                .column_by_name("_kafka_offset")
                .expect("_kafka_offset")
                .as_primitive::<Int64Type>()
                .clone();
            for (i, id) in ids.into_iter().enumerate() {
                rows.push((
                    id.expect("event_id not null"),
                    parts.value(i),
                    offs.value(i),
                ));
            }
            for c in b.columns() {
                all_strings(c, &mut texts);
            }
        }
    }
    (rows, texts)
}

/// Publish `rows` (offset, transformed heartbeat) of partition 0 as a
/// processor that crashed before committing would have.
pub(crate) async fn publish_crashed(
    lake_dir: &Path,
    transformer: &Transformer,
    topic: &str,
    rows: Vec<(i64, serde_json::Map<String, serde_json::Value>)>,
) -> crate::lake::Published {
    let lake = LakeWriter::local(lake_dir);
    let schema = transformer
        .arrow_schema(RecordType::DeviceHeartbeat)
        .unwrap();
    let dir = lake
        .partition_dir(RecordType::DeviceHeartbeat, 1_763_700_000_000)
        .unwrap();
    let mut seg = lake
        .open(
            RecordType::DeviceHeartbeat,
            schema,
            topic,
            0,
            dir,
            rows[0].0,
        )
        .await
        .unwrap();
    for (o, r) in rows {
        assert_eq!(seg.admit(o), crate::lake::Admit::Row);
        seg.push(o, r).unwrap();
    }
    lake.publish(seg).await.unwrap()
}

/// Whether `f` (under `dir`) is a file of a derived table.
fn is_derived(dir: &Path, f: &Path) -> bool {
    let derived = [
        crate::derived::TABLE_KPI,
        crate::derived::TABLE_LATE,
        crate::derived::TABLE_BENCHMARK,
        crate::derived::TABLE_LEDGER,
    ];
    f.strip_prefix(dir)
        .ok()
        .and_then(|r| r.components().next())
        .is_some_and(|c| {
            derived
                .iter()
                .any(|t| c.as_os_str().to_string_lossy() == format!("table={t}"))
        })
}

/// Rows of the raw tables under `dir` (the derived tables are not counted).
fn count_rows(dir: &Path) -> usize {
    parquet_files(dir)
        .iter()
        .filter(|f| !is_derived(dir, f))
        .map(|f| {
            read_batches(f)
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_writes_anonymised_parquet() {
    let h = Harness::new(2);
    let per_type = 15;
    let mut records = Vec::new();
    for i in 0..per_type {
        records.push(encoded(&samples::device_status(&serial(i))));
        let mut hb = samples::device_heartbeat(&serial(i));
        hb.ip_address = Some(format!("10.20.{i}.77"));
        records.push(encoded(&hb));
        records.push(encoded(&samples::usage_counters(&serial(i))));
    }
    let n = records.len();
    let sent = h.produce_records(records).await;
    let expected: HashMap<String, Sent> = sent.into_iter().collect();
    assert_eq!(expected.len(), n);

    let (shutdown, stats, handle) = start(h.config());
    wait_for("all rows written", || {
        stats.rows_written.load(Ordering::Relaxed) >= n as u64
    })
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("processor run");
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), n as u64);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);

    let lake = h.lake.path();
    let pseudo = Pseudonymizer::new(PSEUDONYM_KEY.as_bytes(), "v1");
    let mut all_ids = BTreeSet::new();
    let mut total = 0;
    for table in ["device_status", "device_heartbeat", "usage_counters"] {
        let (rows, texts) = lake_rows(lake, table);
        assert_eq!(rows.len(), per_type, "{table}");
        total += rows.len();
        for (id, partition, offset) in &rows {
            let s = &expected[id];
            assert_eq!(
                s.topic,
                h.kafka.topic(RecordType::from_name(table).unwrap())
            );
            assert_eq!(
                (s.partition, s.offset),
                (*partition, *offset),
                "lineage of {id}"
            );
            assert!(all_ids.insert(id.clone()), "duplicate {id}");
        }
        for t in &texts {
            assert!(!t.contains("RAWSERIAL"), "raw serial in {table}: {t}");
            assert!(
                !t.contains("Jane Admin") && !t.contains("printer-floor2"),
                "{t}"
            );
            assert!(!t.contains("00:11:22:33:44:55"), "{t}");
        }
    }
    assert_eq!(total, n);
    assert_eq!(all_ids, expected.keys().cloned().collect());

    // Layout, names, footer metadata (of the raw tables).
    for f in parquet_files(lake)
        .into_iter()
        .filter(|f| !is_derived(lake, f))
    {
        let rel = f.strip_prefix(lake).unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        let table = parts[0].strip_prefix("table=").expect("table=<t>");
        assert_eq!(parts[1], "date=2025-11-21", "{rel}");
        if ["device_status", "device_heartbeat"].contains(&table) {
            assert_eq!(parts.len(), 4, "{rel}");
            assert_eq!(parts[2], "hour=04", "{rel}");
        } else {
            assert_eq!(parts.len(), 3, "{rel}");
        }
        let name = parts[parts.len() - 1];
        let (rest, first) = name
            .strip_prefix("part-")
            .and_then(|s| s.strip_suffix(".parquet"))
            .and_then(|s| s.rsplit_once('-'))
            .expect("part-<topic>-<p>-<offset>.parquet");
        let (topic, p) = rest.rsplit_once('-').expect("<topic>-<p>");
        assert_eq!(topic, format!("fp.raw.{table}"), "{name}");
        assert_eq!(first.len(), 20, "{name}");
        let meta: BTreeMap<String, String> = crate::lake::read_metadata(&f)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(meta["fleetpulse.partition"], p);
        assert_eq!(
            meta["fleetpulse.first_offset"].parse::<i64>().unwrap(),
            first.parse::<i64>().unwrap()
        );
        assert!(meta["fleetpulse.topic"].starts_with("fp.raw."));
        let batches = read_batches(&f);
        let offs: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("_kafka_offset")
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(offs.first().copied(), Some(first.parse().unwrap()));
        assert_eq!(
            offs.last().map(|o| o.to_string()),
            Some(meta["fleetpulse.last_offset"].clone())
        );
        // The raw serial is nowhere in the file's bytes.
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(9).any(|w| w == b"RAWSERIAL"), "{rel}");
    }

    // Column shapes of device_status.
    let status = parquet_files(&lake.join("table=device_status"));
    let b = &read_batches(&status[0])[0];
    let schema = b.schema();
    assert_eq!(
        schema.field_with_name("observed_at").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    match schema.field_with_name("supplies").unwrap().data_type() {
        DataType::List(item) => {
            assert!(matches!(item.data_type(), DataType::Struct(_)), "{item:?}")
        }
        other => panic!("supplies is {other:?}"),
    }
    for absent in ["sys_name", "sys_contact", "mac_address"] {
        assert!(schema.field_with_name(absent).is_err(), "{absent} present");
    }
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let di = names.iter().position(|n| *n == "device_id").unwrap();
    assert_eq!(names[di + 1], "device_id_key_id");
    let devs = strings(b.column_by_name("device_id").unwrap());
    let valid: BTreeSet<String> = (0..per_type)
        .map(|i| pseudo.pseudonymize("device_id", &serial(i)))
        .collect();
    for d in devs.iter().flatten() {
        assert_eq!(d.len(), 32);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()), "{d}");
        assert!(valid.contains(d), "{d} is not a pseudonym of a sent serial");
    }
    assert!(strings(b.column_by_name("device_id_key_id").unwrap())
        .iter()
        .all(|k| k.as_deref() == Some("v1")));
    for ip in strings(b.column_by_name("ip_address").unwrap())
        .iter()
        .flatten()
    {
        assert_eq!(ip, "192.0.2.0/24");
    }
    assert!(strings(b.column_by_name("sys_location").unwrap())
        .iter()
        .all(|c| c.as_deref() == Some("DE")));
    let ts = b.column_by_name("observed_at").unwrap();
    let ts = ts.as_primitive::<arrow_array::types::TimestampMillisecondType>();
    assert_eq!(ts.value(0), 1_763_700_000_000);
    // Nested list of struct came through with values.
    let supplies = b.column_by_name("supplies").unwrap().as_list::<i32>();
    assert_eq!(supplies.value(0).len(), 2);
    let first = supplies.value(0);
    let desc = first
        .as_struct()
        .column_by_name("description")
        .unwrap()
        .clone();
    assert_eq!(
        strings(&desc)[0].as_deref(),
        Some("Black Cartridge HP CF410A")
    );
    let hb = parquet_files(&lake.join("table=device_heartbeat"));
    for f in hb {
        for b in read_batches(&f) {
            for ip in strings(b.column_by_name("ip_address").unwrap())
                .iter()
                .flatten()
            {
                assert!(ip.starts_with("10.20.") && ip.ends_with(".0/24"), "{ip}");
            }
        }
    }
    drop(h.cluster);
}

/// Read every DLQ message: (headers by name, key, payload).
fn read_dlq(kafka: &KafkaConfig, expected: usize) -> Vec<DlqMessage> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("dlq consumer");
    consumer
        .subscribe(&[&kafka.dlq_topic()])
        .expect("subscribe");
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < expected && start.elapsed() < DEADLINE {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut h = BTreeMap::new();
            if let Some(hs) = m.headers() {
                for x in hs.iter() {
                    h.insert(
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push((
                h,
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    // Nothing more arrives.
    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
        panic!("unexpected extra DLQ message at offset {}", m.offset());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_goes_to_the_dead_letter_topic() {
    let h = Harness::new(1);
    let status_topic = h.kafka.topic(RecordType::DeviceStatus);
    let good1 = samples::device_status(&serial(1));
    let good2 = samples::device_status(&serial(2));
    let good1_bytes = codec::encode(&good1).unwrap();
    let hb = codec::encode(&samples::device_heartbeat(&serial(3))).unwrap();

    let key = b"k".to_vec();
    let mut bad_sig = good1_bytes.clone();
    // Same headers as a valid record, payload changed after signing.
    let bad_sig_headers = sign(&status_topic, &key, &bad_sig, 2);
    if let Some(b) = bad_sig.last_mut() {
        *b ^= 0x01;
    }
    let random: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    // Sequential sends keep the offsets in this order.
    let plan: Vec<(&str, Vec<u8>, Option<OwnedHeaders>)> = vec![
        (
            "good",
            good1_bytes.clone(),
            Some(sign(&status_topic, &key, &good1_bytes, 1)),
        ),
        ("bad_signature", bad_sig.clone(), Some(bad_sig_headers)),
        ("missing_signature", good1_bytes.clone(), None),
        (
            "wrong_schema",
            hb.clone(),
            Some(sign(&status_topic, &key, &hb, 4)),
        ),
        (
            "not_avro",
            random.clone(),
            Some(sign(&status_topic, &key, &random, 5)),
        ),
        (
            "good",
            codec::encode(&good2).unwrap(),
            Some(sign(
                &status_topic,
                &key,
                &codec::encode(&good2).unwrap(),
                6,
            )),
        ),
    ];
    let mut sent = Vec::new();
    for (class, payload, headers) in plan {
        let s = h
            .produce(vec![(status_topic.clone(), key.clone(), payload, headers)])
            .await;
        sent.push((class, s.into_iter().next().unwrap()));
    }

    let (shutdown, stats, handle) = start(h.config());
    wait_for("rows and dead letters", || {
        stats.rows_written.load(Ordering::Relaxed) >= 2
            && stats.dead_lettered.load(Ordering::Relaxed) >= 4
    })
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("processor run");
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), 2);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 4);

    let dlq = read_dlq(&h.kafka, 4);
    assert_eq!(dlq.len(), 4);
    for (class, s) in sent.iter().filter(|(c, _)| *c != "good") {
        let (hdr, k, payload) = dlq
            .iter()
            .find(|(hd, _, _)| hd.get(dlq_headers::ORIGINAL_OFFSET) == Some(&s.offset.to_string()))
            .unwrap_or_else(|| panic!("{class} not in the DLQ"));
        assert_eq!(hdr[dlq_headers::ERROR_CLASS], *class);
        assert_eq!(hdr[dlq_headers::ORIGINAL_TOPIC], status_topic);
        assert_eq!(
            hdr[dlq_headers::ORIGINAL_PARTITION],
            s.partition.to_string()
        );
        assert_eq!(hdr[dlq_headers::STAGE], "processor");
        assert!(!hdr[dlq_headers::REASON].is_empty());
        // Sealed: the key is a pseudonym, the payload opens with the DLQ key.
        let sealer = crate::seal::from_config(&h.config()).expect("sealer");
        assert_eq!(hdr[dlq_headers::SEALED], sealer.key_id());
        assert_eq!(k, &sealer.message_key(&s.key));
        assert_ne!(payload, &s.payload, "{class}: payload is sealed");
        assert_eq!(
            sealer.open(payload).expect("opens"),
            s.payload,
            "{class}: original payload kept inside the seal"
        );
    }

    // Only the two good records landed.
    let (rows, _) = lake_rows(h.lake.path(), "device_status");
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(ids, [good1.event_id.clone(), good2.event_id.clone()].into());
    assert_eq!(count_rows(h.lake.path()), 2);

    // The commit point moved past the dead-lettered messages too.
    let c: BaseConsumer = h
        .kafka
        .client_config()
        .set("group.id", "fleetpulse-processor")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&status_topic, 0);
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert_eq!(
        committed.find_partition(&status_topic, 0).unwrap().offset(),
        Offset::Offset(6)
    );
    drop(h.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_neither_lose_nor_duplicate_rows() {
    let h = Harness::new(1);
    let topic = h.kafka.topic(RecordType::DeviceHeartbeat);
    let batch = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| encoded(&samples::device_heartbeat(&serial(i))))
            .collect::<Vec<_>>()
    };
    let mut all: Vec<(String, Sent)> = Vec::new();
    let small_roll = |cfg: ProcessorConfig, bytes: u64| ProcessorConfig {
        roll_bytes: bytes,
        ..cfg
    };

    // Run 1: 40 records in many small files, clean shutdown.
    all.extend(h.produce_records(batch(0, 40)).await);
    let (shutdown, stats, handle) = start(small_roll(h.config(), 500));
    wait_for("run 1", || stats.rows_written.load(Ordering::Relaxed) >= 40).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    assert!(
        stats.files_written.load(Ordering::Relaxed) >= 4,
        "small roll writes several files"
    );
    assert_eq!(count_rows(h.lake.path()), 40);

    // 40 more; a "crashed" processor published offsets 40..=57 but never committed.
    let b2 = h.produce_records(batch(40, 40)).await;
    assert_eq!(b2[0].1.offset, 40);
    let transformer = Transformer::new(Pseudonymizer::new(PSEUDONYM_KEY.as_bytes(), "v1")).unwrap();
    let rows = b2
        .iter()
        .filter(|(_, s)| s.offset <= 57)
        .map(|(_, s)| {
            let (t, v) = codec::decode_value(&s.payload).unwrap();
            (s.offset, transformer.transform(t, &v).unwrap())
        })
        .collect();
    let crashed = publish_crashed(h.lake.path(), &transformer, &topic, rows).await;
    assert_eq!(crashed.rows_written, 18);
    // And a half-written temporary file of a crash mid-write.
    let tmp = PathBuf::from(&crashed.files[0]).with_file_name(format!(
        ".part-{topic}-0-00000000000000000058.parquet.1-1.tmp"
    ));
    std::fs::write(&tmp, b"PAR1 half written").unwrap();
    all.extend(b2);

    // Run 2: smaller rolls than the crashed run (its first file meets the
    // crashed one and must skip through 57), then killed without draining.
    let (_shutdown, stats, handle) = start(small_roll(h.config(), 300));
    wait_for("run 2 progress", || {
        stats.rows_written.load(Ordering::Relaxed) >= 6
    })
    .await;
    handle.abort();
    let _ = handle.await;
    assert_eq!(
        stats.files_skipped.load(Ordering::Relaxed),
        1,
        "met the crashed file once"
    );

    // Run 3 after more data, with a large roll: finishes everything.
    all.extend(h.produce_records(batch(80, 20)).await);
    let (shutdown, _stats, handle) = start(small_roll(h.config(), 64 << 20));
    let dir = h.lake.path().to_path_buf();
    wait_for("run 3 catches up", || count_rows(&dir) >= 100).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();

    let (rows, _) = lake_rows(h.lake.path(), "device_heartbeat");
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), 100, "rows in the lake");
    assert_eq!(unique.len(), 100, "no duplicate event_id");
    assert_eq!(unique, all.iter().map(|(id, _)| id.clone()).collect());
    // Every offset exactly once, each row at its own offset.
    let offsets: BTreeSet<i64> = rows.iter().map(|r| r.2).collect();
    assert_eq!(offsets, (0..100).collect());
    let by_id: HashMap<&String, i64> = all.iter().map(|(id, s)| (id, s.offset)).collect();
    for (id, _, off) in &rows {
        assert_eq!(by_id[id], *off);
    }
    drop(h.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_between_two_processors_keeps_rows_exactly_once() {
    let h = Harness::new(4);
    let batch = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| encoded(&samples::device_heartbeat(&serial(i))))
            .collect::<Vec<_>>()
    };
    let mut cfg = ProcessorConfig {
        roll_bytes: 1_500,
        ..h.config()
    };
    // Derived tables need a single instance per group (README).
    cfg.derived.enabled = false;
    let mut all = h.produce_records(batch(0, 60)).await;
    let (stop_a, stats_a, a) = start(cfg.clone());
    wait_for("first processor progress", || {
        stats_a.rows_written.load(Ordering::Relaxed) >= 5
    })
    .await;
    // A second member joins: partitions move while rows are buffered.
    let (stop_b, stats_b, b) = start(cfg);
    wait_for("second processor assigned", || {
        stats_b.assigned.load(Ordering::Relaxed) > 0
    })
    .await;
    all.extend(h.produce_records(batch(60, 60)).await);
    let dir = h.lake.path().to_path_buf();
    wait_for("both processors catch up", || count_rows(&dir) >= 120).await;
    let a_assigned = stats_a.assigned.load(Ordering::Relaxed);
    let b_assigned = stats_b.assigned.load(Ordering::Relaxed);
    stop_a.cancel();
    stop_b.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();

    let (rows, _) = lake_rows(h.lake.path(), "device_heartbeat");
    let unique: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(rows.len(), 120, "no duplicates");
    assert!(
        stats_b.rows_written.load(Ordering::Relaxed) > 0,
        "B took part"
    );
    // 6 raw topics x 4 partitions, split between the two members.
    assert!(
        a_assigned > 0 && b_assigned > 0,
        "{a_assigned} / {b_assigned}"
    );
    assert_eq!(a_assigned + b_assigned, 24);
    assert_eq!(unique, all.iter().map(|(id, _)| id.clone()).collect());
    drop(h.cluster);
}

/// `include_alerts = true`: the alerter's records carry no connector
/// signature (it holds no connector key) and still land in the lake,
/// anonymised; the connectors' topics still require signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn included_alerts_land_in_the_lake_without_the_raw_serial() {
    let h = Harness::new(1);
    let alerts_topic = h.kafka.topic(RecordType::MaintenanceAlert);
    let status_topic = h.kafka.topic(RecordType::DeviceStatus);
    let mut msgs = Vec::new();
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        let s = serial(i);
        let mut a = samples::maintenance_alert(&s);
        // Like the alerter: the alert key starts with the serial; a message
        // naming the device must not reach the lake either.
        a.message = format!("{s}: Black Cartridge runs out in 2.5 days");
        ids.insert(a.event_id.clone());
        msgs.push((
            alerts_topic.clone(),
            s.into_bytes(),
            codec::encode(&a).unwrap(),
            None,
        ));
    }
    // Garbage on the alerts topic is still dead-lettered...
    msgs.push((
        alerts_topic.clone(),
        b"k".to_vec(),
        b"not avro".to_vec(),
        None,
    ));
    // ...and an unsigned record on a connector topic still is too.
    let status = codec::encode(&samples::device_status(&serial(9))).unwrap();
    msgs.push((status_topic.clone(), b"k".to_vec(), status, None));
    h.produce(msgs).await;

    let config = ProcessorConfig {
        include_alerts: true,
        ..h.config()
    };
    let (shutdown, stats, handle) = start(config);
    wait_for("alert rows and dead letters", || {
        stats.rows_written.load(Ordering::Relaxed) >= 5
            && stats.dead_lettered.load(Ordering::Relaxed) >= 2
    })
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("processor run");
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), 5);

    let dlq = read_dlq(&h.kafka, 2);
    let classes: BTreeMap<String, String> = dlq
        .iter()
        .map(|(hd, _, _)| {
            (
                hd[dlq_headers::ORIGINAL_TOPIC].clone(),
                hd[dlq_headers::ERROR_CLASS].clone(),
            )
        })
        .collect();
    assert_eq!(classes[&alerts_topic], "not_avro");
    assert_eq!(classes[&status_topic], "missing_signature");

    let table = RecordType::MaintenanceAlert.name();
    let (rows, texts) = lake_rows(h.lake.path(), table);
    let got: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(got, ids);
    for t in &texts {
        assert!(!t.contains("RAWSERIAL"), "raw serial in the lake: {t}");
    }
    let files = parquet_files(&h.lake.path().join(format!("table={table}")));
    let batch = &read_batches(&files[0])[0];
    let schema = batch.schema();
    assert!(schema.column_with_name("message").is_none());
    assert!(schema.column_with_name("alert_key_key_id").is_some());
    let keys = strings(batch.column_by_name("alert_key").unwrap());
    assert!(keys.iter().flatten().all(|k| k.len() == 32), "{keys:?}");
    // The raw bytes of the files do not hold it either (metadata, stats).
    for f in files {
        let raw = std::fs::read(f).unwrap();
        assert!(!raw.windows(9).any(|w| w == b"RAWSERIAL"));
    }
    drop(h.cluster);
}

/// Many open files (16 partitions x 3 tables) under a 1 MiB budget with no
/// roll by size or time: the memory of all open files together never goes
/// past the budget by more than one row, files are published early, and
/// every row is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_files_stay_within_the_memory_budget() {
    let h = Harness::new(16);
    let n = 3000;
    let mut records = Vec::new();
    for i in 0..n / 3 {
        records.push(encoded(&samples::device_status(&serial(i))));
        records.push(encoded(&samples::device_heartbeat(&serial(i))));
        records.push(encoded(&samples::usage_counters(&serial(i))));
    }
    h.produce_records(records).await;
    let budget: u64 = 1024 * 1024;
    let mut cfg = ProcessorConfig {
        roll_age: Duration::from_secs(600),
        roll_idle: Duration::from_secs(600),
        ..h.config()
    };
    cfg.lake.buffer_budget_bytes = budget;
    let (shutdown, stats, handle) = start(cfg);
    wait_for("every row buffered", || {
        stats.rows_buffered.load(Ordering::Relaxed) >= n as u64
    })
    .await;
    let peak = stats.peak_buffered_bytes.load(Ordering::Relaxed);
    let early = stats.budget_flushes.load(Ordering::Relaxed);
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    eprintln!("peak {peak} bytes, {early} files published early");
    // One row's memory is a few KiB at most.
    assert!(
        peak <= budget + 16 * 1024,
        "peak {peak} over budget {budget}"
    );
    assert!(peak > budget / 2, "the budget was actually reached: {peak}");
    assert!(early >= 2, "files published early: {early}");
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), n as u64);
    assert_eq!(count_rows(h.lake.path()), n);
}

/// `process --replay --from --to`: a lost day comes back with the same rows,
/// other days are left alone, and a second run writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_restores_a_lost_day_idempotently() {
    let h = Harness::new(2);
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).expect("date");
    let at = |d: u32, i: u32| {
        day(d)
            .and_hms_opt(1 + i % 20, 0, 0)
            .expect("time")
            .and_utc()
            .timestamp_millis()
    };
    let mut records = Vec::new();
    for d in [10u32, 11, 12] {
        for i in 0..8u32 {
            let mut st = samples::device_status(&serial(i as usize));
            st.observed_at = at(d, i);
            records.push(encoded(&st));
            let mut uc = samples::usage_counters(&serial(i as usize));
            uc.observed_at = at(d, i);
            records.push(encoded(&uc));
        }
    }
    let n = records.len() as u64;
    h.produce_records(records).await;
    let (shutdown, stats, handle) = start(h.config());
    wait_for("all rows written", || {
        stats.rows_written.load(Ordering::Relaxed) >= n
    })
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("processor run");

    let lake = h.lake.path();
    let ids_of = |table: &str| -> BTreeSet<String> {
        lake_rows(lake, table).0.into_iter().map(|r| r.0).collect()
    };
    let before_status = ids_of("device_status");
    let before_counters = ids_of("usage_counters");
    assert_eq!(before_status.len() + before_counters.len(), n as usize);
    let files_before: BTreeSet<PathBuf> = parquet_files(lake).into_iter().collect();

    // Lose 2026-11-11 in every table.
    let mut lost = 0;
    for table in ["device_status", "usage_counters"] {
        let d = lake.join(format!("table={table}")).join("date=2026-11-11");
        assert!(d.is_dir(), "{d:?}");
        lost += count_rows(&d);
        std::fs::remove_dir_all(&d).expect("remove day");
    }
    assert_eq!(lost, 16);
    assert_eq!(count_rows(lake), n as usize - 16);

    let r = crate::backfill(h.config(), day(11), day(11), Shutdown::new())
        .await
        .expect("backfill");
    assert_eq!(r.rows_written, 16, "{r:?}");
    assert_eq!(r.rejected, 0, "{r:?}");
    assert_eq!(r.outside_range, n - 16, "{r:?}");
    assert_eq!(ids_of("device_status"), before_status);
    assert_eq!(ids_of("usage_counters"), before_counters);
    assert_eq!(count_rows(lake), n as usize, "no duplicates");

    // A second, wider run finds everything present.
    let files_after: BTreeSet<PathBuf> = parquet_files(lake).into_iter().collect();
    let r2 = crate::backfill(h.config(), day(10), day(12), Shutdown::new())
        .await
        .expect("second backfill");
    assert_eq!(r2.rows_written, 0, "{r2:?}");
    assert!(r2.files_present > 0, "{r2:?}");
    assert_eq!(
        parquet_files(lake).into_iter().collect::<BTreeSet<_>>(),
        files_after
    );
    // Untouched days keep their very files.
    for f in files_before
        .iter()
        .filter(|f| !f.to_string_lossy().contains("2026-11-11"))
    {
        assert!(files_after.contains(f), "{f:?} changed");
    }
    let err = crate::backfill(h.config(), day(12), day(10), Shutdown::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("after"), "{err}");
}
