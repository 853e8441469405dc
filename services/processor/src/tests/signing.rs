//! Replays, signing-time windows and rotated keys, end to end on MockCluster.
//! Kafka timestamps are set explicitly (`FutureRecord::timestamp`) to craft
//! records that were written long ago or carry old signatures.

use super::*;
use crate::replay::STATE_DIR;
use crate::verify::fmt_ms;
use fleetpulse_core::now_millis;

/// Produce one message, optionally to a given partition and with a given
/// Kafka timestamp (CreateTime).
async fn produce_at(
    h: &Harness,
    topic: &str,
    partition: Option<i32>,
    (key, payload): (&[u8], &[u8]),
    headers: OwnedHeaders,
    timestamp: Option<i64>,
) -> Sent {
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(headers);
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    if let Some(ts) = timestamp {
        rec = rec.timestamp(ts);
    }
    let d = h
        .producer
        .send(rec, Timeout::After(Duration::from_secs(10)))
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");
    Sent {
        topic: topic.to_string(),
        partition: d.partition,
        offset: d.offset,
        key: key.to_vec(),
        payload: payload.to_vec(),
    }
}

fn find_dlq<'a>(dlq: &'a [DlqMessage], s: &Sent) -> &'a DlqMessage {
    dlq.iter()
        .find(|(hd, _, _)| {
            hd.get(dlq_headers::ORIGINAL_PARTITION) == Some(&s.partition.to_string())
                && hd.get(dlq_headers::ORIGINAL_OFFSET) == Some(&s.offset.to_string())
        })
        .unwrap_or_else(|| panic!("{}:{} not in the DLQ: {dlq:?}", s.partition, s.offset))
}

fn committed(h: &Harness, topic: &str, partition: i32) -> Offset {
    let c: BaseConsumer = h
        .kafka
        .client_config()
        .set("group.id", "fleetpulse-processor")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.find_partition(topic, partition).unwrap().offset()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_sequence_number_is_dead_lettered_and_the_original_kept_once() {
    let h = Harness::new(2);
    let topic = h.kafka.topic(RecordType::DeviceStatus);
    let rec = samples::device_status(&serial(1));
    let payload = codec::encode(&rec).unwrap();
    let key = b"dev-replayed".to_vec();
    let headers = sign(&topic, &key, &payload, h.next_seq());
    let msg = (key.as_slice(), payload.as_slice());
    let original = produce_at(&h, &topic, Some(0), msg, headers.clone(), None).await;
    let others = (2..6)
        .map(|i| encoded(&samples::device_status(&serial(i))))
        .collect();
    let others = h.produce_records(others).await;

    let (shutdown, stats, handle) = start(h.config());
    wait_for("the original and the others in the lake", || {
        stats.rows_written.load(Ordering::Relaxed) >= 5
    })
    .await;
    // Someone who captured the record publishes it again, byte for byte:
    // at a new offset of its partition, and on the other partition.
    let again = produce_at(&h, &topic, Some(0), msg, headers.clone(), None).await;
    let moved = produce_at(&h, &topic, Some(1), msg, headers, None).await;
    assert_ne!(again.offset, original.offset);
    wait_for("two dead letters", || {
        stats.dead_lettered.load(Ordering::Relaxed) >= 2
    })
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("processor run");
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), 5);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 2);

    let dlq = read_dlq(&h.kafka, 2);
    assert_eq!(dlq.len(), 2);
    let first = format!(
        "{topic} partition {} offset {}",
        original.partition, original.offset
    );
    for s in [&again, &moved] {
        let (hdr, k, p) = find_dlq(&dlq, s);
        assert_eq!(hdr[dlq_headers::ERROR_CLASS], "replayed_sequence");
        let reason = &hdr[dlq_headers::REASON];
        assert!(reason.contains(&first), "{reason}");
        assert!(reason.contains(CONNECTOR), "{reason}");
        let sealer = crate::seal::from_config(&h.config()).expect("sealer");
        assert_eq!(k, &sealer.message_key(&key), "key pseudonymised");
        assert_eq!(
            sealer.open(p).expect("opens"),
            payload,
            "original bytes kept, sealed"
        );
        // The original headers travel along.
        assert!(hdr.contains_key(HDR_SIG));
    }

    // The original is in the lake once, at its own offset.
    let (rows, _) = lake_rows(h.lake.path(), "device_status");
    assert_eq!(rows.len(), 5);
    let copies: Vec<_> = rows.iter().filter(|r| r.0 == rec.event_id).collect();
    assert_eq!(
        copies,
        vec![&(rec.event_id.clone(), original.partition, original.offset)]
    );
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut want: BTreeSet<String> = others.into_iter().map(|(id, _)| id).collect();
    want.insert(rec.event_id.clone());
    assert_eq!(ids, want);
    // The memory was saved next to the lake.
    let state = h.lake.path().join(STATE_DIR).join("seq-conn-1.json");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state file")).unwrap();
    assert_eq!(saved["entries"].as_array().map(Vec::len), Some(5));
    drop(h.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_times_outside_the_window_and_rotated_keys_are_dead_lettered() {
    let h = Harness::new(1);
    let topic = h.kafka.topic(RecordType::DeviceStatus);
    // Records written to Kafka two hours ago: the processor reads a backlog,
    // which must not count against them.
    let t = now_millis() - 2 * 3_600_000;
    const OLD_SECRET: &str = "rotated-out-connector-secret-0000";
    let min = 60_000;
    // (expected class, signing time, Kafka timestamp, secret)
    let plan: Vec<(&str, i64, i64, &str)> = vec![
        ("ok", t, t + 1_000, SECRET),
        ("stale_signature", t - 10 * min, t, SECRET),
        ("clock_skew", t + 10 * min, t, SECRET),
        ("unknown_connector", t, t, OLD_SECRET),
        ("ok", t - 5 * min + 1_000, t, SECRET),
        ("ok", t + 5 * min - 1_000, t, SECRET),
    ];
    let key = b"dev-1".to_vec();
    let mut sent = Vec::new();
    for (i, (class, fp_ts, kafka_ts, secret)) in plan.into_iter().enumerate() {
        let rec = samples::device_status(&serial(i));
        let payload = codec::encode(&rec).unwrap();
        let headers = sign_with(secret, &topic, &key, &payload, h.next_seq(), fp_ts);
        let msg = (key.as_slice(), payload.as_slice());
        let s = produce_at(&h, &topic, None, msg, headers, Some(kafka_ts)).await;
        sent.push((class, fp_ts, kafka_ts, rec.event_id, s));
    }

    let (shutdown, stats, handle) = start(h.config());
    wait_for("rows and dead letters", || {
        stats.rows_written.load(Ordering::Relaxed) >= 3
            && stats.dead_lettered.load(Ordering::Relaxed) >= 3
    })
    .await;
    shutdown.cancel();
    handle.await.expect("join").expect("processor run");
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), 3);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 3);

    let dlq = read_dlq(&h.kafka, 3);
    for (class, fp_ts, kafka_ts, _, s) in sent.iter().filter(|x| x.0 != "ok") {
        let (hdr, _, payload) = find_dlq(&dlq, s);
        assert_eq!(hdr[dlq_headers::ERROR_CLASS], *class);
        let sealer = crate::seal::from_config(&h.config()).expect("sealer");
        assert_eq!(sealer.open(payload).expect("opens"), s.payload);
        let reason = &hdr[dlq_headers::REASON];
        match *class {
            "stale_signature" | "clock_skew" => {
                // Both times, and what the reference was.
                assert!(reason.contains(&fmt_ms(*fp_ts)), "{reason}");
                assert!(reason.contains(&fmt_ms(*kafka_ts)), "{reason}");
                assert!(reason.contains("Kafka CreateTime"), "{reason}");
                let word = if *class == "clock_skew" {
                    "10m after"
                } else {
                    "10m before"
                };
                assert!(reason.contains(word), "{reason}");
            }
            _ => {
                // The unknown (rotated-out) key id is named.
                let old = SigningKey::derive(OLD_SECRET.as_bytes(), CONNECTOR);
                assert!(reason.contains(&old.key_id()), "{reason}");
            }
        }
    }
    let (rows, _) = lake_rows(h.lake.path(), "device_status");
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let want: BTreeSet<String> = sent
        .iter()
        .filter(|x| x.0 == "ok")
        .map(|x| x.3.clone())
        .collect();
    assert_eq!(ids, want);
    assert_eq!(rows.len(), 3);
    drop(h.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_re_reading_uncommitted_offsets_is_not_a_replay() {
    let h = Harness::new(1);
    let topic = h.kafka.topic(RecordType::DeviceHeartbeat);
    let batch = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| encoded(&samples::device_heartbeat(&serial(i))))
            .collect::<Vec<_>>()
    };
    let state = h.lake.path().join(STATE_DIR).join("seq-conn-1.json");
    let saved_entries = || {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["entries"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let mut all: Vec<(String, Sent)> = Vec::new();

    // Run 1: 30 records, clean shutdown; the memory is saved.
    all.extend(h.produce_records(batch(0, 30)).await);
    let (shutdown, stats, handle) = start(h.config());
    wait_for("run 1", || stats.rows_written.load(Ordering::Relaxed) >= 30).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(saved_entries(), 30);

    // 30 more; a "crashed" processor published offsets 30..=44 without committing.
    let b2 = h.produce_records(batch(30, 30)).await;
    assert_eq!(b2[0].1.offset, 30);
    let transformer = Transformer::new(Pseudonymizer::new(PSEUDONYM_KEY.as_bytes(), "v1")).unwrap();
    let rows = b2
        .iter()
        .filter(|(_, s)| s.offset <= 44)
        .map(|(_, s)| {
            let (t, v) = codec::decode_value(&s.payload).unwrap();
            (s.offset, transformer.transform(t, &v).unwrap())
        })
        .collect();
    let crashed = super::publish_crashed(h.lake.path(), &transformer, &topic, rows).await;
    assert_eq!(crashed.rows_written, 15);
    all.extend(b2);

    // Run 2 buffers 30..=59 without ever rolling a file (so commits nothing),
    // saves its memory (which now names those uncommitted offsets), and is
    // killed without draining.
    let long = ProcessorConfig {
        roll_bytes: 64 << 20,
        roll_age: Duration::from_secs(600),
        roll_idle: Duration::from_secs(600),
        ..h.config()
    };
    let (_shutdown, _stats, handle) = start(long);
    wait_for("run 2 saved its memory", || saved_entries() >= 60).await;
    handle.abort();
    let _ = handle.await;
    // The crashed file's rows (30..=44) are settled: the commit point is
    // the first offset of the open file.
    assert_eq!(committed(&h, &topic, 0), Offset::Offset(45));

    // Run 3 loads that memory and re-reads 30..=59 at the same offsets.
    let (shutdown, stats, handle) = start(h.config());
    let dir = h.lake.path().to_path_buf();
    wait_for("run 3 catches up", || count_rows(&dir) >= 60).await;
    wait_for("run 3 commits", || {
        committed(&h, &topic, 0) == Offset::Offset(60)
    })
    .await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    assert!(read_dlq(&h.kafka, 0).is_empty(), "no replayed_sequence");

    let (rows, _) = lake_rows(h.lake.path(), "device_heartbeat");
    let offsets: Vec<i64> = {
        let mut o: Vec<i64> = rows.iter().map(|r| r.2).collect();
        o.sort_unstable();
        o
    };
    assert_eq!(offsets, (0..60).collect::<Vec<_>>(), "every offset once");
    let by_id: HashMap<&String, i64> = all.iter().map(|(id, s)| (id, s.offset)).collect();
    assert_eq!(by_id.len(), 60);
    for (id, _, off) in &rows {
        assert_eq!(by_id[id], *off);
    }
    assert_eq!(saved_entries(), 60);
    drop(h.cluster);
}
