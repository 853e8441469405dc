//! Replay detection: a connector's sequence number is used once.
//!
//! Every record a connector signs carries the next number of its monotonic
//! sequence (`fp-seq`, covered by the signature), so a signed record that
//! shows up again — re-published by someone who captured it, or copied
//! between partitions — has a sequence number already seen. The memory is
//! keyed by position: the same (connector, seq) at a **different** (topic,
//! partition, offset) is a replay (`replayed_sequence`); at the **same**
//! position it is Kafka delivering a message again (after a rebalance, or a
//! restart that re-reads uncommitted offsets) and is not.
//!
//! # Bounded memory
//!
//! A record whose signing time is more than `signature_window` (W) away from
//! its Kafka timestamp is rejected before it gets here ([`crate::verify`]),
//! and a replay carries the original's signing time (it is signed). So a
//! sequence number only needs to be remembered while a record carrying it
//! could still pass the window: the memory of a connector keeps the
//! sequence numbers signed no earlier than `newest - 2W`, where `newest` is
//! the latest reference time seen for that connector (Kafka timestamps,
//! capped at the processor's clock). One W is the window itself; the second
//! is margin for partitions read at different speeds (a replay read from a
//! partition that lags more than W behind the newest one seen may go
//! unnoticed). Entries are at most W newer than `newest`, so a connector holds
//! at most the sequence numbers it signed within **3 W** (15 minutes by
//! default): about `3 W x its record rate` entries of ~100 bytes, e.g. 200
//! records/s -> 180 000 entries, ~18 MB. A hard cap of
//! [`MAX_SEQS_PER_CONNECTOR`] entries per connector forgets the oldest first
//! (logged and counted) so a misbehaving connector cannot exhaust memory.
//!
//! Order alone is never a reason to reject: a connector's records are spread
//! over topics and partitions that are read in parallel and at different
//! speeds, so a sequence number lower than the highest one seen is normal
//! (it is counted, not rejected). Only reuse is.
//!
//! # Restarts and several processors
//!
//! The memory is written to `<lake_dir>/_state/seq-<connector>.json` with
//! the offset commits of the periodic tick (at most every [`SAVE_INTERVAL`],
//! and at shutdown; merged with what is on disk so processors sharing a lake
//! keep each other's entries) and read at start. It may name positions not
//! yet committed: re-reading them after a crash finds them at the same
//! position, which is not a replay. Residual risks, by design:
//!
//! - entries not yet saved when a processor crashes are lost: a replay of one
//!   of those records, within the window, read after the restart from
//!   another position than the original, is not detected (the original,
//!   if re-read, is at its own position and is fine);
//! - with several processors in a group, partitions are split between them:
//!   a replay landing on a partition another instance owns is detected only
//!   if it reads the saved state of the other one, which it does at start
//!   only. Complete detection would need a shared keyed store, or
//!   co-partitioning by connector (all topics keyed by connector id), which
//!   the topic layout (keyed by device) does not give.
//!
//! A replay never reaches the lake twice in either case only if it is also a
//! duplicate by `event_id`, which this module does not check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most sequence numbers remembered per connector.
pub const MAX_SEQS_PER_CONNECTOR: usize = 500_000;
/// Saved state is rewritten at most this often (plus once at shutdown).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// Directory of the saved state, under the lake directory.
pub const STATE_DIR: &str = "_state";

/// Where a message was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// What [`SeqWindow::observe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: remembered.
    New,
    /// First time, but below the highest sequence number seen of this
    /// connector (normal across partitions; counted, never rejected).
    OutOfOrder {
        /// The highest sequence number seen.
        max: u64,
    },
    /// Seen before at this very position: a re-delivery, not a replay.
    Again,
    /// Seen before at another position: a replay.
    Replay {
        /// Where it was seen first.
        first: Position,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    ts: i64,
    pos: Position,
}

#[derive(Debug, Default)]
struct Connector {
    by_seq: BTreeMap<u64, Entry>,
    /// (signing time, seq), to forget the oldest first.
    by_ts: BTreeSet<(i64, u64)>,
    /// Latest reference time seen.
    newest: i64,
    max_seq: Option<u64>,
    /// Changed since the last save.
    dirty: bool,
}

impl Connector {
    fn insert(&mut self, seq: u64, ts: i64, pos: Position) {
        if let Some(old) = self.by_seq.insert(seq, Entry { ts, pos }) {
            self.by_ts.remove(&(old.ts, seq));
        }
        self.by_ts.insert((ts, seq));
        self.max_seq = self.max_seq.max(Some(seq));
        self.dirty = true;
    }

    /// Forget entries signed before `horizon` and beyond the cap; returns
    /// how many were dropped because of the cap.
    fn prune(&mut self, horizon: i64) -> usize {
        let mut capped = 0;
        while let Some(&(ts, seq)) = self.by_ts.first() {
            let over = self.by_ts.len() > MAX_SEQS_PER_CONNECTOR;
            if ts >= horizon && !over {
                break;
            }
            capped += usize::from(ts >= horizon);
            self.by_ts.pop_first();
            self.by_seq.remove(&seq);
            self.dirty = true;
        }
        capped
    }
}

/// The recently used sequence numbers of every connector.
#[derive(Debug)]
pub struct SeqWindow {
    /// How far below the newest reference time entries are kept (2 W).
    retention_ms: i64,
    connectors: HashMap<String, Connector>,
    topics: BTreeSet<Arc<str>>,
    /// Length and modification time of each state file as this process
    /// last wrote it: while a file still has both, no other processor has
    /// written it since, and [`SeqWindow::save`] need not read it back.
    written: HashMap<PathBuf, FileStamp>,
}

/// A state file's length and modification time.
type FileStamp = (u64, std::time::SystemTime);

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// [`Saved`] written straight from the memory, without a copy of it.
#[derive(Serialize)]
struct SavedRef<'a> {
    connector: &'a str,
    newest: i64,
    entries: EntriesRef<'a>,
}

struct EntriesRef<'a>(&'a BTreeMap<u64, Entry>);

impl Serialize for EntriesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|(seq, e)| (*seq, e.ts, &*e.pos.topic, e.pos.partition, e.pos.offset)),
        )
    }
}

/// Saved form of one connector's memory.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    connector: String,
    newest: i64,
    /// (seq, signing time, topic, partition, offset)
    entries: Vec<(u64, i64, String, i32, i64)>,
}

/// Why the saved state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct StateError {
    op: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl SeqWindow {
    /// An empty memory for a signature window `window`.
    pub fn new(window: Duration) -> SeqWindow {
        let w = i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 4);
        SeqWindow {
            retention_ms: w.saturating_mul(2),
            connectors: HashMap::new(),
            topics: BTreeSet::new(),
            written: HashMap::new(),
        }
    }

    fn position(&mut self, topic: &str, partition: i32, offset: i64) -> Position {
        let topic = match self.topics.get(topic) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(topic);
                self.topics.insert(t.clone());
                t
            }
        };
        Position {
            topic,
            partition,
            offset,
        }
    }

    /// Record that `connector` used `seq` (signed at `ts`) for the message at
    /// (`topic`, `partition`, `offset`), whose reference time is `reference`;
    /// say whether it was seen before and where.
    pub fn observe(
        &mut self,
        connector: &str,
        seq: u64,
        ts: i64,
        reference: i64,
        (topic, partition, offset): (&str, i32, i64),
    ) -> Seen {
        let pos = self.position(topic, partition, offset);
        let retention = self.retention_ms;
        let c = self.connectors.entry(connector.to_string()).or_default();
        let verdict = match c.by_seq.get(&seq) {
            Some(e) if e.pos == pos => return Seen::Again,
            Some(e) => {
                return Seen::Replay {
                    first: e.pos.clone(),
                }
            }
            None => match c.max_seq {
                Some(max) if seq < max => Seen::OutOfOrder { max },
                _ => Seen::New,
            },
        };
        c.newest = c.newest.max(reference);
        c.insert(seq, ts, pos);
        let capped = c.prune(c.newest.saturating_sub(retention));
        if capped > 0 {
            memory_capped(connector, capped);
        }
        verdict
    }

    /// Remember a use of `seq` without judging it (records skipped because
    /// the lake already holds them); an existing entry is kept.
    pub fn remember(
        &mut self,
        connector: &str,
        seq: u64,
        ts: i64,
        (topic, partition, offset): (&str, i32, i64),
    ) {
        let pos = self.position(topic, partition, offset);
        let retention = self.retention_ms;
        let c = self.connectors.entry(connector.to_string()).or_default();
        if !c.by_seq.contains_key(&seq) && ts >= c.newest.saturating_sub(retention) {
            c.insert(seq, ts, pos);
        }
    }

    /// Entries held over all connectors.
    pub fn len(&self) -> usize {
        self.connectors.values().map(|c| c.by_seq.len()).sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether anything changed since the last [`SeqWindow::save`].
    pub fn is_dirty(&self) -> bool {
        self.connectors.values().any(|c| c.dirty)
    }

    /// Read every `seq-*.json` under `<lake_dir>/_state`. A missing directory
    /// is an empty memory; an unreadable or corrupt file is skipped and
    /// reported (losing it only weakens detection).
    pub fn load(&mut self, lake_dir: &Path) -> Vec<StateError> {
        let dir = lake_dir.join(STATE_DIR);
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return errors;
        };
        for f in entries.flatten() {
            let path = f.path();
            let name = f.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("seq-") && name.ends_with(".json")) {
                continue;
            }
            match read_saved(&path) {
                Ok(saved) => self.merge(saved),
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    fn merge(&mut self, saved: Saved) {
        let retention = self.retention_ms;
        let newest = saved.newest;
        for (seq, ts, topic, partition, offset) in saved.entries {
            let pos = self.position(&topic, partition, offset);
            let c = self.connectors.entry(saved.connector.clone()).or_default();
            c.by_seq.entry(seq).or_insert_with(|| Entry {
                ts,
                pos: pos.clone(),
            });
            c.by_ts.insert((c.by_seq[&seq].ts, seq));
            c.max_seq = c.max_seq.max(Some(seq));
        }
        let c = self.connectors.entry(saved.connector).or_default();
        c.newest = c.newest.max(newest);
        c.prune(c.newest.saturating_sub(retention));
    }

    /// Write the memory of every changed connector to
    /// `<lake_dir>/_state/seq-<connector>.json` (temporary file + rename),
    /// merged with the file's present contents.
    pub fn save(&mut self, lake_dir: &Path) -> Result<usize, StateError> {
        let dir = lake_dir.join(STATE_DIR);
        let mut written = 0;
        let dirty: Vec<String> = self
            .connectors
            .iter()
            .filter(|(_, c)| c.dirty)
            .map(|(id, _)| id.clone())
            .collect();
        if dirty.is_empty() {
            return Ok(0);
        }
        std::fs::create_dir_all(&dir).map_err(|source| StateError {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        for id in dirty {
            let path = dir.join(format!("seq-{}.json", file_part(&id)));
            // Another processor of the group may have saved its partitions'
            // entries in the same file: keep them (unless the file is still
            // the one this process wrote last: then it holds nothing new).
            let ours = self
                .written
                .get(&path)
                .is_some_and(|w| stamp(&path).as_ref() == Some(w));
            if !ours {
                if let Ok(on_disk) = read_saved(&path) {
                    if on_disk.connector == id {
                        self.merge(on_disk);
                    }
                }
            }
            let Some(c) = self.connectors.get_mut(&id) else {
                continue;
            };
            let saved = SavedRef {
                connector: &id,
                newest: c.newest,
                entries: EntriesRef(&c.by_seq),
            };
            static TMP_SEQ: AtomicU64 = AtomicU64::new(0);
            let tmp = path.with_extension(format!(
                "json.{}-{}.tmp",
                std::process::id(),
                TMP_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            // Data on disk before the rename, the rename on disk after it: a
            // crash leaves the old file or the new one, never an empty one.
            write_json_synced(&tmp, &saved)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .and_then(|()| sync_parent(&path))
                .map_err(|source| {
                    let _ = std::fs::remove_file(&tmp);
                    StateError {
                        op: "write",
                        path: path.clone(),
                        source,
                    }
                })?;
            if let Some(st) = stamp(&path) {
                self.written.insert(path.clone(), st);
            }
            c.dirty = false;
            written += 1;
        }
        Ok(written)
    }
}

fn read_saved(path: &Path) -> Result<Saved, StateError> {
    let err = |op, source| StateError {
        op,
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|e| err("read", e))?;
    serde_json::from_slice(&bytes).map_err(|e| err("parse", io::Error::other(e)))
}

/// A connector id as a file-name part: kept when it is plain, hex otherwise.
fn file_part(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        id.to_string()
    } else {
        let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{}", &hex[..hex.len().min(200)])
    }
}

fn memory_capped(connector: &str, dropped: usize) {
    tracing::warn!(
        connector,
        dropped,
        cap = MAX_SEQS_PER_CONNECTOR,
        "sequence memory full: forgetting the oldest sequence numbers (replays of them go unnoticed)"
    );
    metrics::counter!("fleetpulse_processor_seq_memory_evictions_total").increment(dropped as u64);
}

/// Write `value` as JSON to a new file at `path` (streamed, no copy in
/// memory) and fsync it.
fn write_json_synced<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut w = io::BufWriter::with_capacity(1 << 16, file);
    serde_json::to_writer(&mut w, value).map_err(io::Error::other)?;
    let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// fsync the directory holding `path`, so a rename into it is durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 300_000;
    const T: i64 = 1_763_700_000_000;

    fn window() -> SeqWindow {
        SeqWindow::new(Duration::from_millis(W as u64))
    }

    #[test]
    fn reuse_at_another_position_is_a_replay_and_the_same_position_is_not() {
        let mut w = window();
        assert_eq!(w.observe("c", 10, T, T, ("t", 0, 5)), Seen::New);
        assert_eq!(w.observe("c", 10, T, T, ("t", 0, 5)), Seen::Again);
        match w.observe("c", 10, T, T + 1, ("t", 1, 5)) {
            Seen::Replay { first } => assert_eq!(first.to_string(), "t partition 0 offset 5"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            w.observe("c", 10, T, T, ("u", 0, 5)),
            Seen::Replay { .. }
        ));
        // Lower sequence numbers are fine; another connector has its own numbers.
        assert_eq!(
            w.observe("c", 3, T, T, ("t", 1, 6)),
            Seen::OutOfOrder { max: 10 }
        );
        assert_eq!(w.observe("d", 10, T, T, ("t", 1, 7)), Seen::New);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let mut w = window();
        // One record a second for an hour: only the last 2 W of signing time stays.
        for i in 0..3600i64 {
            let ts = T + i * 1000;
            assert_eq!(w.observe("c", i as u64, ts, ts, ("t", 0, i)), Seen::New);
        }
        assert_eq!(w.len(), (2 * W / 1000 + 1) as usize);
        // A replay of a forgotten number cannot pass the window anyway; one
        // still inside is caught.
        let recent = 3600 - 2 * W / 1000;
        assert!(matches!(
            w.observe(
                "c",
                recent as u64,
                T + recent * 1000,
                T + 3_600_000,
                ("t", 0, 9999)
            ),
            Seen::Replay { .. }
        ));
    }

    #[test]
    fn saved_state_survives_a_restart_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = window();
        a.observe("conn/1", 1, T, T, ("t", 0, 1));
        a.observe("conn/1", 2, T, T, ("t", 0, 2));
        assert!(a.is_dirty());
        assert_eq!(a.save(dir.path()).unwrap(), 1);
        assert!(!a.is_dirty());
        assert_eq!(a.save(dir.path()).unwrap(), 0);
        // Another processor sharing the lake saves its partition's entries.
        let mut b = window();
        b.observe("conn/1", 3, T, T, ("t", 1, 1));
        assert_eq!(b.save(dir.path()).unwrap(), 1);
        // The first processor saves again: the file is no longer the one it
        // wrote, so it reads it back and keeps the other's entry.
        a.observe("conn/1", 4, T, T, ("t", 0, 3));
        assert_eq!(a.save(dir.path()).unwrap(), 1);
        // And once more with nobody else writing: nothing lost either.
        a.observe("conn/1", 5, T, T, ("t", 0, 4));
        assert_eq!(a.save(dir.path()).unwrap(), 1);

        let mut c = window();
        assert!(c.load(dir.path()).is_empty());
        assert_eq!(c.len(), 5);
        assert_eq!(c.observe("conn/1", 1, T, T, ("t", 0, 1)), Seen::Again);
        assert!(matches!(
            c.observe("conn/1", 2, T, T, ("t", 1, 9)),
            Seen::Replay { .. }
        ));
        assert!(matches!(
            c.observe("conn/1", 3, T, T, ("t", 0, 9)),
            Seen::Replay { .. }
        ));
        // A corrupt file is reported and skipped.
        std::fs::write(dir.path().join(STATE_DIR).join("seq-bad.json"), b"{").unwrap();
        let mut d = window();
        assert_eq!(d.load(dir.path()).len(), 1);
        assert_eq!(d.len(), 5);
        let names: Vec<String> = std::fs::read_dir(dir.path().join(STATE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&"seq-x636f6e6e2f31.json".to_string()),
            "{names:?}"
        );
    }
}
