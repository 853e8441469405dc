use std::fs;
use std::io::Write;
use std::path::Path;

use super::*;

fn cfg(dir: &Path, max_bytes: u64, segment_bytes: u64) -> BufferConfig {
    BufferConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
        ..BufferConfig::default()
    }
}

fn rec(class: Class, device: &str, n: usize, payload: usize) -> StoredRecord {
    StoredRecord {
        seq: 0,
        class,
        enqueued_at: 0,
        topic: format!("t.{}", class.name()),
        key: device.as_bytes().to_vec(),
        batch: "b".into(),
        event_id: format!("{device}-{}-{n}", class.name()),
        headers: vec![("h".into(), b"v".to_vec())],
        payload: vec![(n % 251) as u8; payload],
    }
}

/// Bytes of the segment files, measured on disk.
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn all_files_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn acked_records_are_not_resent_after_reopen_and_unacked_are_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Buffer::open(cfg(tmp.path(), 4 << 20, 256 << 10)).unwrap();
    let recs: Vec<_> = (0..100)
        .map(|i| rec(Class::Counters, "d1", i, 100))
        .collect();
    let out = b.append(recs).unwrap();
    assert_eq!(out.stored, 100);
    let first = b.claim(40, u64::MAX);
    assert_eq!(first.len(), 40);
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(first[0].event_id, "d1-counters-0");
    let seqs: Vec<u64> = first.iter().map(|r| r.seq).collect();
    // Ack out of order: 0..30 and 35..40; 30..35 stay in flight.
    b.ack(&seqs[..30]);
    b.ack(&seqs[35..]);
    b.checkpoint(true).unwrap();
    assert_eq!(b.stats().cursor, seqs[30]);
    drop(b);
    let b = Buffer::open(cfg(tmp.path(), 4 << 20, 256 << 10)).unwrap();
    let again = b.claim(1000, u64::MAX);
    let ids: Vec<&str> = again.iter().map(|r| r.event_id.as_str()).collect();
    // 30..35 were in flight (sent again), 35..40 were acked above the cursor
    // (sent again: at-least-once), 40.. were never sent.
    assert_eq!(ids.len(), 70);
    assert_eq!(ids[0], "d1-counters-30");
    assert_eq!(ids[69], "d1-counters-99");
    assert!(again.windows(2).all(|w| w[0].seq < w[1].seq));
    // New appends continue the sequence.
    b.append(vec![rec(Class::Alert, "d1", 0, 10)]).unwrap();
    let next = b.claim(10, u64::MAX);
    assert_eq!(next.len(), 1);
    assert!(next[0].seq > again[69].seq);
}

#[test]
fn nacked_records_are_claimed_again_first() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Buffer::open(cfg(tmp.path(), 4 << 20, 256 << 10)).unwrap();
    b.append((0..10).map(|i| rec(Class::Status, "d", i, 50)).collect())
        .unwrap();
    let a = b.claim(5, u64::MAX);
    b.nack(&[a[2].seq]);
    let c = b.claim(3, u64::MAX);
    assert_eq!(c[0].seq, a[2].seq);
    assert_eq!(c[1].seq, a[4].seq + 1);
}

#[test]
fn fully_acked_segments_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Buffer::open(cfg(tmp.path(), 4 << 20, 256 << 10)).unwrap();
    for i in 0..50 {
        b.append(vec![rec(Class::Counters, "d", i, 20_000)])
            .unwrap();
    }
    assert!(b.stats().disk_bytes > 256 << 10);
    loop {
        let c = b.claim(7, u64::MAX);
        if c.is_empty() {
            break;
        }
        b.ack(&c.iter().map(|r| r.seq).collect::<Vec<_>>());
    }
    let s = b.stats();
    assert_eq!(s.records, 0);
    assert!(
        dir_bytes(tmp.path()) <= 256 << 10,
        "only the active segment remains: {}",
        dir_bytes(tmp.path())
    );
    assert_eq!(s.acked, 50);
}

#[test]
fn torn_tail_is_cut_and_earlier_records_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), 4 << 20, 256 << 10);
    let b = Buffer::open(c.clone()).unwrap();
    b.append((0..10).map(|i| rec(Class::Alert, "d", i, 300)).collect())
        .unwrap();
    drop(b);
    let seg = tmp.path().join(segment::file_name(0));
    let valid = fs::metadata(&seg).unwrap().len();
    // Half of a valid frame, as a crash in the middle of a write leaves it.
    let mut frame = Vec::new();
    let mut r = rec(Class::Alert, "d", 10, 300);
    r.seq = 10;
    r.encode_into(&mut frame).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&frame[..frame.len() / 2])
        .unwrap();
    assert_eq!(inspect(tmp.path()).unwrap().torn_tails, 1);
    let b = Buffer::open(c.clone()).unwrap();
    let s = b.stats();
    assert_eq!(s.torn_tails_cut, 1);
    assert_eq!(s.records, 10);
    assert_eq!(fs::metadata(&seg).unwrap().len(), valid);
    b.append(vec![rec(Class::Alert, "d", 11, 300)]).unwrap();
    drop(b);
    let b = Buffer::open(c).unwrap();
    assert_eq!(b.stats().torn_tails_cut, 0);
    let all = b.claim(100, u64::MAX);
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].event_id, "d-alert-11");
}

#[test]
fn corrupt_byte_cuts_from_the_damaged_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), 4 << 20, 256 << 10);
    let b = Buffer::open(c.clone()).unwrap();
    for i in 0..10 {
        b.append(vec![rec(Class::Counters, "d", i, 100)]).unwrap();
    }
    let len = b.claim(1, u64::MAX)[0].frame_len() as u64;
    drop(b);
    let seg = tmp.path().join(segment::file_name(0));
    let mut bytes = fs::read(&seg).unwrap();
    bytes[(len * 6 + 40) as usize] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let b = Buffer::open(c).unwrap();
    assert_eq!(b.stats().torn_tails_cut, 1);
    assert_eq!(b.stats().records, 6);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len * 6);
}

#[test]
fn garbage_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), 4 << 20, 256 << 10);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // A valid prefix followed by garbage, pure garbage, an empty file,
    // a stray file, a leftover temp file and a garbage cursor.
    let b = Buffer::open(c.clone()).unwrap();
    b.append((0..5).map(|i| rec(Class::Alert, "d", i, 64)).collect())
        .unwrap();
    drop(b);
    for round in 0..50u64 {
        let name = segment::file_name(1_000 + round * 10);
        let n = (rand() % 4096) as usize;
        let mut bytes: Vec<u8> = (0..n).map(|_| rand() as u8).collect();
        if round % 3 == 0 && n > 12 {
            bytes[..4].copy_from_slice(b"FPB1");
        }
        fs::write(tmp.path().join(name), bytes).unwrap();
    }
    fs::write(tmp.path().join(segment::file_name(5_000)), b"").unwrap();
    fs::write(tmp.path().join("notes.txt"), b"hello").unwrap();
    fs::write(tmp.path().join("00000000000000000007.seg.tmp"), b"x").unwrap();
    fs::write(tmp.path().join(CURSOR_FILE), b"garbage").unwrap();
    let b = Buffer::open(c.clone()).unwrap();
    assert_eq!(b.stats().records, 5, "the valid records survive");
    assert!(!tmp.path().join("00000000000000000007.seg.tmp").exists());
    assert!(
        tmp.path().join("notes.txt").exists(),
        "stray files are left alone"
    );
    b.append(vec![rec(Class::Alert, "d", 9, 64)]).unwrap();
    drop(b);
    let b = Buffer::open(c).unwrap();
    assert_eq!(b.stats().records, 6);
    assert_eq!(b.stats().torn_tails_cut, 0, "cut tails stay cut");
}

#[test]
fn full_buffer_evicts_heartbeats_then_status_and_never_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 2 << 20;
    let b = Buffer::open(cfg(tmp.path(), max, 256 << 10)).unwrap();
    let devices = ["d0", "d1", "d2", "d3"];
    let mut round = 0;
    let mut first_status_drop_round = None;
    let mut heartbeats_dropped_before_status = 0;
    let rejected = loop {
        let mut batch = Vec::new();
        for d in devices {
            batch.push(rec(Class::Heartbeat, d, round, 200));
            batch.push(rec(Class::Status, d, round, 1500));
            batch.push(rec(Class::Counters, d, round, 300));
        }
        let out = b.append(batch).unwrap();
        let s = b.stats();
        assert!(
            all_files_bytes(tmp.path()) <= max,
            "round {round}: {} bytes on disk",
            all_files_bytes(tmp.path())
        );
        assert!(s.peak_disk_bytes <= max);
        let status_dropped = BufferStats::of(&s.dropped, Class::Status);
        if status_dropped > 0 && first_status_drop_round.is_none() {
            first_status_drop_round = Some(round);
            heartbeats_dropped_before_status = BufferStats::of(&s.dropped, Class::Heartbeat);
        }
        assert_eq!(BufferStats::of(&s.dropped, Class::Counters), 0);
        if !out.rejected.is_empty() {
            break out.rejected;
        }
        round += 1;
        assert!(round < 10_000, "never filled");
    };
    assert!(
        heartbeats_dropped_before_status > 0,
        "heartbeats go before status samples"
    );
    let msg = rejected[0].to_string();
    assert!(
        devices
            .iter()
            .any(|d| msg
                == format!("buffer full: usage counters for device {d} could not be stored")),
        "{msg}"
    );
    let s = b.stats();
    assert_eq!(
        BufferStats::of(&s.rejected, Class::Counters),
        rejected.len() as u64
    );
    // Every counters record appended is still there; the newest heartbeat
    // of each device is kept.
    let all = b.claim(usize::MAX, u64::MAX);
    let counters = all.iter().filter(|r| r.class == Class::Counters).count() as u64;
    assert_eq!(counters, BufferStats::of(&s.appended, Class::Counters));
    for d in devices {
        let newest = all
            .iter()
            .filter(|r| r.class == Class::Heartbeat && r.key == d.as_bytes())
            .map(|r| r.event_id.clone())
            .collect::<Vec<_>>();
        assert_eq!(newest.len(), 1, "{d}: {newest:?}");
        assert!(
            newest[0].ends_with(&format!("-{}", round - 1))
                || newest[0].ends_with(&format!("-{round}"))
        );
    }
    // Order is intact after compactions.
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    // The disk agrees with the index.
    let on_disk = inspect(tmp.path()).unwrap();
    assert!(on_disk.records.len() >= all.len());
}

#[test]
fn oversized_record_is_rejected_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Buffer::open(cfg(tmp.path(), 4 << 20, 256 << 10)).unwrap();
    let out = b
        .append(vec![
            rec(Class::Alert, "big", 0, 300 << 10),
            rec(Class::Alert, "small", 0, 10),
        ])
        .unwrap();
    assert_eq!(out.stored, 1);
    assert_eq!(out.rejected.len(), 1);
    assert!(out.rejected[0].to_string().contains("alert for device big"));
}

#[test]
fn interval_policy_stores_and_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let c = BufferConfig {
        fsync: FsyncPolicy::Interval,
        ..cfg(tmp.path(), 4 << 20, 256 << 10)
    };
    let b = Buffer::open(c.clone()).unwrap();
    b.append(vec![rec(Class::Job, "d", 0, 10)]).unwrap();
    b.sync().unwrap();
    drop(b);
    assert_eq!(inspect(tmp.path()).unwrap().records.len(), 1);
}

#[test]
fn a_directory_serves_one_buffer_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buf");
    let c = cfg(&dir, 4 << 20, 256 << 10);
    let b = Buffer::open(c.clone()).unwrap();
    b.append(vec![rec(Class::Alert, "d", 0, 64)]).unwrap();
    assert!(dir.join(LOCK_FILE).exists());

    // A second opener (flock conflicts between open files, in one process
    // as across processes) is refused with the key to fix, and changes nothing.
    let err = Buffer::open(c.clone()).unwrap_err();
    assert!(matches!(err, BufferError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("buffer.dir") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
    assert!(err.is_retriable());
    let err = discard(&dir).unwrap_err();
    assert!(matches!(err, BufferError::Locked { .. }), "{err:?}");
    b.append(vec![rec(Class::Alert, "d", 1, 64)]).unwrap();
    assert_eq!(b.stats().records, 2, "the holder keeps working");

    // Released with the buffer: the next opener gets everything.
    drop(b);
    let b = Buffer::open(c.clone()).unwrap();
    assert_eq!(b.stats().records, 2);
    assert_eq!(b.stats().torn_tails_cut, 0);
    drop(b);

    // The lock file is no stray and no segment.
    assert_eq!(inspect(&dir).unwrap().records.len(), 2);
    assert_eq!(discard(&dir).unwrap(), 2);
    let left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![LOCK_FILE.to_string()]);
    assert_eq!(Buffer::open(c).unwrap().stats().records, 0);
    assert_eq!(discard(&tmp.path().join("never-created")).unwrap(), 0);
}

/// Bit rot in a sealed segment costs the damaged frames only: the scan
/// resynchronises on the next valid frame and the file is not cut.
#[test]
fn corrupt_frames_in_a_sealed_segment_are_skipped_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), 4 << 20, 256 << 10);
    let b = Buffer::open(c.clone()).unwrap();
    for i in 0..40 {
        b.append(vec![rec(Class::Counters, "d", i, 20_000)])
            .unwrap();
    }
    let len = b.claim(1, u64::MAX)[0].frame_len() as u64;
    drop(b);
    let seg = tmp.path().join(segment::file_name(0));
    let mut bytes = fs::read(&seg).unwrap();
    let per_segment = bytes.len() as u64 / len;
    assert!(per_segment >= 10, "segment 0 holds {per_segment} frames");
    assert!(
        tmp.path().join(segment::file_name(per_segment)).exists(),
        "segment 0 is sealed"
    );
    // A flipped payload byte in frame 3 (checksum), a flipped magic in frame 7.
    bytes[(len * 3 + len / 2) as usize] ^= 0xff;
    bytes[(len * 7) as usize] ^= 0x01;
    let file_len = bytes.len() as u64;
    fs::write(&seg, &bytes).unwrap();
    let b = Buffer::open(c.clone()).unwrap();
    let s = b.stats();
    assert_eq!(s.torn_tails_cut, 0, "a sealed segment has no torn tail");
    assert_eq!(s.corrupt_frames_skipped, 2);
    assert_eq!(s.records, 38);
    assert_eq!(fs::metadata(&seg).unwrap().len(), file_len, "not truncated");
    let all = b.claim(usize::MAX, u64::MAX);
    let ids: Vec<String> = all.iter().map(|r| r.event_id.clone()).collect();
    let want: Vec<String> = (0..40)
        .filter(|i| *i != 3 && *i != 7)
        .map(|i| format!("d-counters-{i}"))
        .collect();
    assert_eq!(ids, want, "every other frame survives, in order");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(inspect(tmp.path()).unwrap().records.len(), 38);
    drop(b);
    // Still readable (and still skipped, not cut) on the next open.
    let b = Buffer::open(c).unwrap();
    assert_eq!(b.stats().records, 38);
    assert_eq!(b.stats().torn_tails_cut, 0);
}

/// Under `fsync = "interval"` a new segment's directory entry is made
/// durable when the segment is created, and deletions when they happen.
#[test]
fn interval_policy_syncs_the_directory_on_roll_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let c = BufferConfig {
        fsync: FsyncPolicy::Interval,
        ..cfg(tmp.path(), 4 << 20, 256 << 10)
    };
    let b = Buffer::open(c).unwrap();
    assert_eq!(b.dir_syncs(), 0);
    b.append(vec![rec(Class::Counters, "d", 0, 20_000)])
        .unwrap();
    assert_eq!(b.dir_syncs(), 1, "first segment created");
    for i in 1..20 {
        b.append(vec![rec(Class::Counters, "d", i, 20_000)])
            .unwrap();
    }
    let segments = fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count() as u64;
    assert!(segments >= 2, "rolled");
    assert_eq!(
        b.dir_syncs(),
        segments,
        "one directory fsync per segment created"
    );
    let all = b.claim(usize::MAX, u64::MAX);
    b.ack(&all.iter().map(|r| r.seq).collect::<Vec<_>>());
    assert!(
        b.dir_syncs() > segments,
        "deleting acknowledged segments syncs the directory"
    );
}
