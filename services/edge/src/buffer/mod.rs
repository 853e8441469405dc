//! Store-and-forward: a bounded, crash-safe, on-disk record buffer.
//!
//! Why it is built this way:
//!
//! - **Write-ahead, always.** Every record the connector produces is appended
//!   here first; a forwarder ([`crate::publish::forward`]) reads the buffer
//!   oldest first and sends to Kafka. There is one path whether the uplink
//!   is up or down, so the outage path is the path that runs every day, and
//!   a crash at any moment leaves each record either in the buffer or
//!   acknowledged by the broker. A record leaves the buffer only after the
//!   broker acknowledged it ([`Buffer::ack`]).
//! - **Append-only segments with checksums** ([`segment`] documents the
//!   frame). Appends never rewrite bytes that were reported stored, so a
//!   power loss can only damage the frame being written: the tail of the
//!   last segment (a segment is fsynced before the next is created). On
//!   [`Buffer::open`] every frame is verified. In the last segment the
//!   first bad frame and everything after it is the torn tail, which is cut
//!   (truncated) and reported (`fleetpulse_edge_buffer_torn_tails_total`).
//!   A bad frame in a sealed segment is bit rot: it is skipped, the scan
//!   resumes at the next valid frame, the file is left as it is, and the
//!   loss is reported (`fleetpulse_edge_buffer_corrupt_skipped_total`).
//!   Garbage files never panic the connector: a crash loop on a damaged
//!   disk would lose more than the damaged bytes.
//! - **What "stored" means** depends on [`FsyncPolicy`]. With `batch` (the
//!   default) [`Buffer::append`] returns after `fdatasync` of the batch
//!   (group commit: concurrent appends share one fsync), so a stored record
//!   survives a power loss. With `interval` it survives a process crash at
//!   once and a power loss after the next periodic fsync.
//! - **Durable acknowledgement cursor.** Acknowledgements are kept in
//!   memory per record; the lowest unacknowledged sequence number (the
//!   cursor) is written to `ack.cursor` atomically (temp file, fsync,
//!   rename, fsync of the directory) at most every 100 ms by the forwarder
//!   and at shutdown. After a restart, records below the cursor are never
//!   sent again; records above it are sent again. So a crash duplicates
//!   only records that were in flight or acknowledged less than ~100 ms
//!   before it (at-least-once; consumers dedup by `event_id`).
//! - **Bounded.** The segment files never exceed `max_bytes`. One segment
//!   (plus 4 KiB for the cursor file) is kept free so compaction can write
//!   its temporary file within the bound. When an append would not fit, the
//!   buffer evicts, oldest first: heartbeats except the newest per device,
//!   then status samples and dead letters; evicted records become dead
//!   bytes, and segments are rewritten without their dead records (or
//!   deleted when nothing in them is alive). Usage counters, alerts and job
//!   records are never evicted: when they do not fit, the append reports
//!   them as [`Rejected`] and the caller logs it at error level.
//! - **Order.** Sequence numbers are assigned in append order; the forwarder
//!   sends in that order over one idempotent producer, so per-device (per
//!   Kafka key) order survives any outage. Only a delivery *failure*
//!   (librdkafka gave up on a record) can reorder: that record is sent again
//!   after later ones.
//! - **Memory.** The index keeps ~48 bytes per buffered record (about
//!   200 MB for a full 1 GiB buffer of small records); payloads stay on disk.
//! - **One connector per directory.** Two processes on one directory would
//!   corrupt each other's segments (and one would cut the other's frame in
//!   progress as a "torn tail"), so [`Buffer::open`] takes an exclusive
//!   lock on `LOCK` in the directory ([`std::fs::File::try_lock`], an
//!   advisory `flock` released by the kernel when the process dies, even by
//!   SIGKILL) before touching any file, and holds it as long as the buffer
//!   lives. A second connector on the same `buffer.dir` fails at start with
//!   [`BufferError::Locked`] instead of waiting or sharing.

mod config;
pub mod segment;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fleetpulse_core::now_millis;
use fleetpulse_core::schema::RecordType;

pub use config::{BufferConfig, FsyncPolicy};
pub use segment::StoredRecord;

use segment::{decode_frame, Frame};

/// Name of the acknowledgement checkpoint file.
pub const CURSOR_FILE: &str = "ack.cursor";
/// Name of the lock file that keeps a directory to one connector.
pub const LOCK_FILE: &str = "LOCK";
/// The poller's last counter readings (default `schedule.counters_state_file`):
/// kept in the buffer directory, which is locked to one connector.
pub const COUNTERS_FILE: &str = "counters.json";
const CURSOR_MAGIC: &[u8; 8] = b"FPCURS01";
/// Room kept for the cursor file and its temporary copy.
const CURSOR_RESERVE: u64 = 4096;
/// A record sent this long after it was stored counts as replayed.
pub const REPLAY_AGE: Duration = Duration::from_secs(5);

/// What kind of record; decides what is evicted when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Class {
    /// Device heartbeat: evicted first, newest per device kept.
    Heartbeat = 1,
    /// Connector heartbeat: evicted first, newest kept.
    ConnectorHeartbeat = 2,
    /// Device status sample: evicted second, oldest first.
    Status = 3,
    /// Dead-letter evidence: evicted second, oldest first.
    DeadLetter = 4,
    /// Usage counters: never evicted.
    Counters = 5,
    /// Alert events: never evicted.
    Alert = 6,
    /// Job records: never evicted.
    Job = 7,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 7] = [
        Class::Heartbeat,
        Class::ConnectorHeartbeat,
        Class::Status,
        Class::DeadLetter,
        Class::Counters,
        Class::Alert,
        Class::Job,
    ];

    /// Metric label.
    pub fn name(self) -> &'static str {
        match self {
            Class::Heartbeat => "heartbeat",
            Class::ConnectorHeartbeat => "connector_heartbeat",
            Class::Status => "status",
            Class::DeadLetter => "dead_letter",
            Class::Counters => "counters",
            Class::Alert => "alert",
            Class::Job => "job",
        }
    }

    /// Words for log lines ("usage counters for device X …").
    pub fn describe(self) -> &'static str {
        match self {
            Class::Heartbeat => "heartbeat",
            Class::ConnectorHeartbeat => "connector heartbeat",
            Class::Status => "status sample",
            Class::DeadLetter => "dead letter",
            Class::Counters => "usage counters",
            Class::Alert => "alert",
            Class::Job => "job record",
        }
    }

    /// The class of a record type's records.
    pub fn of(t: RecordType) -> Class {
        match t {
            RecordType::DeviceHeartbeat => Class::Heartbeat,
            RecordType::ConnectorHeartbeat => Class::ConnectorHeartbeat,
            RecordType::DeviceStatus => Class::Status,
            RecordType::UsageCounters => Class::Counters,
            RecordType::AlertEvent | RecordType::MaintenanceAlert => Class::Alert,
            RecordType::JobRecord => Class::Job,
        }
    }

    /// Eviction tier: 0 goes first, 1 next, `None` never.
    fn tier(self) -> Option<u8> {
        match self {
            Class::Heartbeat | Class::ConnectorHeartbeat => Some(0),
            Class::Status | Class::DeadLetter => Some(1),
            Class::Counters | Class::Alert | Class::Job => None,
        }
    }

    /// Whether the buffer may evict records of this class.
    pub fn evictable(self) -> bool {
        self.tier().is_some()
    }

    fn keeps_newest(self) -> bool {
        self.tier() == Some(0)
    }

    pub(crate) fn from_u8(v: u8) -> Option<Class> {
        Class::ALL.into_iter().find(|c| *c as u8 == v)
    }

    fn idx(self) -> usize {
        self as usize - 1
    }
}

/// Why the buffer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A file operation failed (disk full, permissions, I/O error).
    #[error("buffer {op} in {dir}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The buffer directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another buffer in this one) holds the directory's lock.
    #[error(
        "buffer.dir {} is in use by another connector (its {LOCK_FILE} file is locked); \
         each connector needs its own buffer.dir",
        dir.display()
    )]
    Locked {
        /// The buffer directory.
        dir: PathBuf,
    },
}

impl BufferError {
    /// Whether trying again may succeed: a disk may get space again, and a
    /// lock is released when its holder (say, the previous instance of this
    /// connector, still stopping) exits.
    pub fn is_retriable(&self) -> bool {
        match self {
            BufferError::Io { .. } | BufferError::Locked { .. } => true,
        }
    }
}

/// A record the buffer did not store. Only never-evicted classes are
/// rejected; this is data loss and must be logged loudly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Nothing evictable is left and the record does not fit.
    #[error("buffer full: {} for device {device} could not be stored", class.describe())]
    Full {
        /// Its class.
        class: Class,
        /// Its Kafka key.
        device: String,
    },
    /// The record can never be stored (larger than a frame or a segment).
    #[error("{} for device {device} could not be stored: {reason}", class.describe())]
    Unstorable {
        /// Its class.
        class: Class,
        /// Its Kafka key.
        device: String,
        /// Why.
        reason: &'static str,
    },
}

impl Rejected {
    /// The rejected record's class.
    pub fn class(&self) -> Class {
        match self {
            Rejected::Full { class, .. } | Rejected::Unstorable { class, .. } => *class,
        }
    }
}

/// What [`Buffer::append`] did with a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Records stored (durably, under `fsync = "batch"`).
    pub stored: usize,
    /// Incoming evictable records dropped because nothing else could make room.
    pub dropped: usize,
    /// Records of never-evicted classes that could not be stored.
    pub rejected: Vec<Rejected>,
}

/// A snapshot of the buffer's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Records waiting for an acknowledgement (pending or in flight).
    pub records: u64,
    /// Bytes of those records' frames.
    pub live_bytes: u64,
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// Largest `disk_bytes` since open.
    pub peak_disk_bytes: u64,
    /// Append time of the oldest waiting record, ms since epoch.
    pub oldest_enqueued_at: Option<i64>,
    /// Records stored since open, by class (index: `Class as usize - 1`).
    pub appended: [u64; 7],
    /// Records evicted (or dropped on arrival) since open, by class.
    pub dropped: [u64; 7],
    /// Records rejected since open, by class.
    pub rejected: [u64; 7],
    /// Records acknowledged by the broker since open.
    pub acked: u64,
    /// Of those, records that waited at least [`REPLAY_AGE`].
    pub replayed: u64,
    /// Torn or corrupt tails cut at open.
    pub torn_tails_cut: u64,
    /// Damaged frames skipped (not cut) in sealed segments at open.
    pub corrupt_frames_skipped: u64,
    /// The acknowledgement cursor (every record below it is acknowledged or evicted).
    pub cursor: u64,
}

impl BufferStats {
    /// A per-class figure.
    pub fn of(counts: &[u64; 7], class: Class) -> u64 {
        counts[class.idx()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    InFlight,
    Acked,
    Dropped,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    seg: u64,
    offset: u64,
    enqueued_at: i64,
    device: u32,
    len: u32,
    class: Class,
    state: State,
}

impl Entry {
    fn alive(&self) -> bool {
        matches!(self.state, State::Pending | State::InFlight)
    }
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    size: u64,
    /// Entries still pending or in flight.
    live: u64,
    /// Bytes of acknowledged or evicted frames.
    dead_bytes: u64,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    active: Option<u64>,
    entries: VecDeque<Entry>,
    /// No pending entry has a smaller sequence number.
    send_from: u64,
    next_seq: u64,
    cursor: u64,
    persisted_cursor: u64,
    disk_bytes: u64,
    live_bytes: u64,
    live_records: u64,
    devices: HashMap<Vec<u8>, u32>,
    newest: HashMap<(u32, Class), u64>,
    written_gen: u64,
    /// Directory fsyncs done (segment created, renamed or deleted).
    dir_syncs: u64,
    stats: BufferStats,
}

/// The store-and-forward buffer. Methods block on disk I/O: call them from
/// `spawn_blocking` in async code.
pub struct Buffer {
    config: BufferConfig,
    /// The open, exclusively locked `LOCK` file; closing it (drop) unlocks.
    _lock: File,
    inner: Mutex<Inner>,
    synced_gen: Mutex<u64>,
    notify: tokio::sync::Notify,
    last_checkpoint: Mutex<Instant>,
    last_upload_at: AtomicI64,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("dir", &self.config.dir)
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(op: &'static str, dir: &'a Path) -> impl FnOnce(io::Error) -> BufferError + 'a {
    move |source| BufferError::Io {
        op,
        dir: dir.to_path_buf(),
        source,
    }
}

/// Create `dir` and take its exclusive lock (see the module docs).
fn lock_dir(dir: &Path) -> Result<File, BufferError> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io_err("open lock file", dir))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(BufferError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io_err("lock", dir)(e)),
    }
}

/// Delete every buffered record in `dir` (segments, cursor, temporary
/// files), under the directory's lock; returns how many records were
/// pending. For a buffer whose records can never be delivered (e.g. they
/// were meant for an ephemeral broker that is gone). Fails with
/// [`BufferError::Locked`] while a connector uses the directory. A missing
/// directory holds nothing.
pub fn discard(dir: &Path) -> Result<usize, BufferError> {
    if !dir.exists() {
        return Ok(0);
    }
    let _lock = lock_dir(dir)?;
    let pending = inspect(dir).map_or(0, |i| i.records.len());
    for item in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
        let item = item.map_err(io_err("list directory", dir))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if segment::parse_name(&name).is_some() || name == CURSOR_FILE || name.ends_with(".tmp") {
            fs::remove_file(item.path()).map_err(io_err("remove file", dir))?;
        }
    }
    sync_dir(dir).map_err(io_err("sync directory", dir))?;
    Ok(pending)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Read the checkpoint; `None` when absent or unreadable.
fn read_cursor(dir: &Path) -> Option<u64> {
    let bytes = fs::read(dir.join(CURSOR_FILE)).ok()?;
    if bytes.len() != 20 || &bytes[..8] != CURSOR_MAGIC {
        return None;
    }
    let value = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    (crc32fast::hash(&bytes[..16]) == crc).then_some(value)
}

fn write_cursor(dir: &Path, cursor: u64) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(CURSOR_MAGIC);
    bytes.extend_from_slice(&cursor.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    sync_dir(dir)
}

fn torn_tail_cut(path: &Path, at: u64, cut: u64, reason: &str) {
    tracing::warn!(
        segment = %path.display(),
        at,
        cut_bytes = cut,
        reason,
        "buffer: torn tail cut (a write was interrupted, e.g. by a crash or power loss)"
    );
    metrics::counter!("fleetpulse_edge_buffer_torn_tails_total").increment(1);
}

fn corrupt_skipped(path: &Path, region: &segment::Skipped) {
    tracing::error!(
        segment = %path.display(),
        at = region.offset,
        skipped_bytes = region.len,
        skipped_frames = region.frames,
        reason = region.reason,
        "buffer: damaged frames in a sealed segment skipped (disk corruption); the records after them are kept"
    );
    metrics::counter!("fleetpulse_edge_buffer_corrupt_skipped_total", "unit" => "bytes")
        .increment(region.len);
    metrics::counter!("fleetpulse_edge_buffer_corrupt_skipped_total", "unit" => "frames")
        .increment(region.frames);
}

fn stray_file(path: &Path) {
    tracing::warn!(file = %path.display(), "buffer: ignoring a file that is not a segment");
    metrics::counter!("fleetpulse_edge_buffer_stray_files_total").increment(1);
}

fn records_evicted(class: Class, n: u64, reason: &'static str) {
    tracing::warn!(
        class = class.name(),
        records = n,
        reason,
        "buffer full: evicted records"
    );
    metrics::counter!("fleetpulse_edge_buffer_dropped_total", "class" => class.name()).increment(n);
}

fn record_unreadable(seq: u64, why: &str) {
    tracing::error!(
        seq,
        reason = why,
        "buffer: a stored record no longer reads back (disk corruption); it is dropped"
    );
    metrics::counter!("fleetpulse_edge_buffer_unreadable_total").increment(1);
}

fn buffer_opened(dir: &Path, s: &BufferStats) {
    tracing::info!(
        dir = %dir.display(),
        records = s.records,
        bytes = s.disk_bytes,
        cursor = s.cursor,
        torn_tails_cut = s.torn_tails_cut,
        corrupt_frames_skipped = s.corrupt_frames_skipped,
        "buffer opened"
    );
    metrics::counter!("fleetpulse_edge_buffer_opens_total").increment(1);
}

impl Buffer {
    /// Open (or create) the buffer in `config.dir`: scan every segment,
    /// verify every frame, cut torn tails, and load the acknowledgement cursor.
    pub fn open(config: BufferConfig) -> Result<Arc<Buffer>, BufferError> {
        let dir = config.dir.clone();
        // Before any file is read or changed: another connector may be writing here.
        let lock = lock_dir(&dir)?;
        let cursor = read_cursor(&dir);
        if cursor.is_none() && dir.join(CURSOR_FILE).exists() {
            tracing::warn!(dir = %dir.display(), "buffer: unreadable ack cursor; every buffered record will be sent again");
        }
        let cursor = cursor.unwrap_or(0);
        let mut ids = Vec::new();
        for item in fs::read_dir(&dir).map_err(io_err("list directory", &dir))? {
            let item = item.map_err(io_err("list directory", &dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            let path = item.path();
            if name.ends_with(".tmp") {
                // An interrupted compaction or checkpoint: the original is intact.
                let _ = fs::remove_file(&path);
            } else if let Some(id) = segment::parse_name(&name) {
                ids.push(id);
            } else if name != CURSOR_FILE && name != LOCK_FILE && name != COUNTERS_FILE {
                stray_file(&path);
            }
        }
        ids.sort_unstable();
        let mut inner = Inner {
            segments: BTreeMap::new(),
            active: None,
            entries: VecDeque::new(),
            send_from: 0,
            next_seq: cursor,
            cursor,
            persisted_cursor: cursor,
            disk_bytes: 0,
            live_bytes: 0,
            live_records: 0,
            devices: HashMap::new(),
            newest: HashMap::new(),
            written_gen: 0,
            dir_syncs: 0,
            stats: BufferStats::default(),
        };
        let mut last_seq: Option<u64> = None;
        let last_id = ids.last().copied();
        for id in ids {
            let path = dir.join(segment::file_name(id));
            let sealed = Some(id) != last_id;
            let scan =
                segment::scan(&path, id, last_seq, sealed).map_err(io_err("read segment", &dir))?;
            let mut skipped_bytes = 0;
            for region in &scan.skipped {
                corrupt_skipped(&path, region);
                inner.stats.corrupt_frames_skipped += region.frames;
                skipped_bytes += region.len;
            }
            if let Some(reason) = scan.tail {
                let cut = scan.file_len - scan.valid_len;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open segment", &dir))?;
                f.set_len(scan.valid_len)
                    .and_then(|()| f.sync_all())
                    .map_err(io_err("cut torn tail", &dir))?;
                torn_tail_cut(&path, scan.valid_len, cut, reason);
                inner.stats.torn_tails_cut += 1;
            }
            let alive = scan.frames.iter().any(|f| f.record.seq >= cursor);
            if !alive {
                fs::remove_file(&path).map_err(io_err("remove segment", &dir))?;
                if let Some(f) = scan.frames.last() {
                    last_seq = Some(f.record.seq);
                }
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open segment", &dir))?;
            let mut seg = Segment {
                file: Arc::new(file),
                size: scan.valid_len,
                live: 0,
                // Damaged bytes are reclaimed like dead frames (compaction).
                dead_bytes: skipped_bytes,
            };
            for f in scan.frames {
                last_seq = Some(f.record.seq);
                if f.record.seq < cursor {
                    seg.dead_bytes += u64::from(f.len);
                    continue;
                }
                seg.live += 1;
                inner.index(id, f.offset, f.len, &f.record, State::Pending);
            }
            inner.disk_bytes += seg.size;
            inner.segments.insert(id, seg);
        }
        if let Some(l) = last_seq {
            inner.next_seq = inner.next_seq.max(l + 1);
        }
        inner.send_from = inner.entries.front().map_or(inner.next_seq, |e| e.seq);
        // Keep appending to the last segment when it has room.
        inner.active = inner
            .segments
            .iter()
            .next_back()
            .filter(|(_, s)| s.size < config.segment_bytes)
            .map(|(id, _)| *id);
        inner.stats.peak_disk_bytes = inner.disk_bytes;
        let buffer = Buffer {
            config,
            _lock: lock,
            inner: Mutex::new(inner),
            synced_gen: Mutex::new(0),
            notify: tokio::sync::Notify::new(),
            last_checkpoint: Mutex::new(Instant::now()),
            last_upload_at: AtomicI64::new(0),
        };
        let stats = buffer.stats();
        buffer_opened(&buffer.config.dir, &stats);
        buffer.publish_gauges(&stats);
        Ok(Arc::new(buffer))
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &BufferConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for
        // a connector that is shutting down anyway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes that may hold records at rest.
    fn capacity(&self) -> u64 {
        self.config
            .max_bytes
            .saturating_sub(self.config.segment_bytes + CURSOR_RESERVE)
    }

    /// Store a batch of records (`seq` and `enqueued_at` are assigned here).
    /// Returns once they are stored in the sense of the [`FsyncPolicy`].
    /// Evicts when full; never-evicted classes that still do not fit come
    /// back in [`AppendOutcome::rejected`].
    pub fn append(&self, records: Vec<StoredRecord>) -> Result<AppendOutcome, BufferError> {
        let dir = &self.config.dir;
        let mut out = AppendOutcome::default();
        let gen = {
            let mut inner = self.lock();
            let mut w = Writer::default();
            let now = now_millis();
            for mut r in records {
                r.seq = inner.next_seq;
                r.enqueued_at = now;
                let len = r.frame_len() as u64;
                let device = String::from_utf8_lossy(&r.key).into_owned();
                if len > self.config.segment_bytes || len > segment::MAX_BODY as u64 {
                    let rej = Rejected::Unstorable {
                        class: r.class,
                        device,
                        reason: "record larger than a buffer segment",
                    };
                    inner.reject(&mut out, rej);
                    continue;
                }
                if inner.disk_bytes + w.bytes.len() as u64 + len > self.capacity() {
                    w.flush(&mut inner).map_err(io_err("write segment", dir))?;
                    let room = inner
                        .make_room(len, self.capacity(), &self.config)
                        .map_err(io_err("compact segments", dir))?;
                    if !room {
                        if r.class.evictable() {
                            inner.stats.dropped[r.class.idx()] += 1;
                            records_evicted(r.class, 1, "arrived while the buffer was full");
                            out.dropped += 1;
                        } else {
                            inner.reject(
                                &mut out,
                                Rejected::Full {
                                    class: r.class,
                                    device,
                                },
                            );
                        }
                        continue;
                    }
                }
                let full = inner.active.is_none_or(|a| {
                    inner.segments.get(&a).is_none_or(|s| {
                        s.size + w.bytes.len() as u64 + len > self.config.segment_bytes
                    })
                });
                if full {
                    w.flush(&mut inner).map_err(io_err("write segment", dir))?;
                    inner
                        .roll(r.seq, &self.config)
                        .map_err(io_err("create segment", dir))?;
                }
                w.stage(&inner, r).map_err(|reason| BufferError::Io {
                    op: "encode record",
                    dir: dir.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, reason),
                })?;
                inner.next_seq += 1;
                out.stored += 1;
            }
            w.flush(&mut inner).map_err(io_err("write segment", dir))?;
            inner.written_gen += 1;
            inner.stats.peak_disk_bytes = inner.stats.peak_disk_bytes.max(inner.disk_bytes);
            let gen = inner.written_gen;
            let stats = inner.snapshot();
            drop(inner);
            self.publish_gauges(&stats);
            gen
        };
        if out.stored > 0 {
            if self.config.fsync == FsyncPolicy::Batch {
                self.sync_upto(gen)?;
            }
            self.notify.notify_one();
        }
        Ok(out)
    }

    /// Make every append up to write generation `gen` durable, sharing one
    /// fsync among concurrent callers (group commit).
    fn sync_upto(&self, gen: u64) -> Result<(), BufferError> {
        let mut synced = self.synced_gen.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= gen {
            return Ok(());
        }
        let (now_gen, file) = {
            let inner = self.lock();
            let file = inner
                .active
                .and_then(|a| inner.segments.get(&a))
                .map(|s| s.file.clone());
            (inner.written_gen, file)
        };
        if let Some(f) = file {
            f.sync_data()
                .map_err(io_err("fsync segment", &self.config.dir))?;
        }
        *synced = now_gen;
        Ok(())
    }

    /// Fsync everything appended so far (the `interval` policy's tick).
    pub fn sync(&self) -> Result<(), BufferError> {
        let gen = self.lock().written_gen;
        self.sync_upto(gen)
    }

    /// Take up to `max_records` pending records (at most `max_bytes` of
    /// frames, but at least one), oldest first, and mark them in flight.
    pub fn claim(&self, max_records: usize, max_bytes: u64) -> Vec<StoredRecord> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let start = inner.entries.partition_point(|e| e.seq < inner.send_from);
        let mut next_from = inner.next_seq;
        let mut unreadable = Vec::new();
        for i in start..inner.entries.len() {
            let e = &inner.entries[i];
            if e.state != State::Pending {
                continue;
            }
            if out.len() >= max_records || (!out.is_empty() && bytes + u64::from(e.len) > max_bytes)
            {
                next_from = e.seq;
                break;
            }
            let read = inner
                .segments
                .get(&e.seg)
                .ok_or("segment missing")
                .and_then(|s| {
                    let mut buf = vec![0u8; e.len as usize];
                    s.file
                        .read_exact_at(&mut buf, e.offset)
                        .map_err(|_| "read failed")?;
                    match decode_frame(&buf) {
                        Frame::Ok(r, _) if r.seq == e.seq => Ok(r),
                        Frame::Ok(..) => Err("sequence number mismatch"),
                        Frame::Truncated => Err("frame cut short"),
                        Frame::Corrupt(why) => Err(why),
                    }
                });
            match read {
                Ok(r) => {
                    bytes += u64::from(e.len);
                    inner.entries[i].state = State::InFlight;
                    out.push(r);
                }
                Err(why) => unreadable.push((i, why)),
            }
        }
        for (i, why) in unreadable {
            record_unreadable(inner.entries[i].seq, why);
            inner.retire(i, State::Dropped);
        }
        inner.send_from = next_from;
        inner.advance_cursor();
        out
    }

    /// The broker acknowledged these records: they leave the buffer.
    pub fn ack(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let now = now_millis();
        let stats = {
            let mut inner = self.lock();
            for &seq in seqs {
                if let Some(i) = inner.find(seq) {
                    if inner.entries[i].alive() {
                        let waited = now - inner.entries[i].enqueued_at;
                        inner.stats.acked += 1;
                        if waited >= REPLAY_AGE.as_millis() as i64 {
                            inner.stats.replayed += 1;
                            metrics::counter!("fleetpulse_edge_buffer_replayed_total").increment(1);
                        }
                        inner.retire(i, State::Acked);
                    }
                }
            }
            inner.release_segments(&self.config.dir);
            inner.advance_cursor();
            inner.snapshot()
        };
        self.last_upload_at.store(now, Ordering::Relaxed);
        self.publish_gauges(&stats);
    }

    /// Delivery failed: these records are pending again and will be resent.
    pub fn nack(&self, seqs: &[u64]) {
        let mut inner = self.lock();
        for &seq in seqs {
            if let Some(i) = inner.find(seq) {
                if inner.entries[i].state == State::InFlight {
                    inner.entries[i].state = State::Pending;
                    inner.send_from = inner.send_from.min(seq);
                }
            }
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Write the acknowledgement cursor if it moved. `force` ignores the
    /// 100 ms rate limit (shutdown).
    pub fn checkpoint(&self, force: bool) -> Result<(), BufferError> {
        {
            let mut last = self
                .last_checkpoint
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !force && last.elapsed() < Duration::from_millis(100) {
                return Ok(());
            }
            *last = Instant::now();
        }
        let cursor = {
            let inner = self.lock();
            if inner.cursor == inner.persisted_cursor {
                return Ok(());
            }
            inner.cursor
        };
        write_cursor(&self.config.dir, cursor)
            .map_err(io_err("write ack cursor", &self.config.dir))?;
        let mut inner = self.lock();
        inner.persisted_cursor = inner.persisted_cursor.max(cursor);
        Ok(())
    }

    /// Current figures.
    pub fn stats(&self) -> BufferStats {
        self.lock().snapshot()
    }

    /// Directory fsyncs done since open (tests).
    #[cfg(test)]
    fn dir_syncs(&self) -> u64 {
        self.lock().dir_syncs
    }

    /// Last time the broker acknowledged a record from this buffer.
    pub fn last_upload_at(&self) -> Option<i64> {
        Some(self.last_upload_at.load(Ordering::Relaxed)).filter(|v| *v > 0)
    }

    /// Wait until something was appended or put back since the last wait.
    pub async fn wait_for_records(&self) {
        self.notify.notified().await;
    }

    /// Wake a task blocked in [`Buffer::wait_for_records`].
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    fn publish_gauges(&self, s: &BufferStats) {
        metrics::gauge!("fleetpulse_edge_buffer_records").set(s.records as f64);
        metrics::gauge!("fleetpulse_edge_buffer_bytes").set(s.disk_bytes as f64);
        let age = s
            .oldest_enqueued_at
            .map_or(0.0, |t| (now_millis() - t).max(0) as f64 / 1000.0);
        metrics::gauge!("fleetpulse_edge_buffer_oldest_age_seconds").set(age);
    }
}

/// Frames staged for one write to the active segment.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
    staged: Vec<(u64, u32, StoredRecord)>,
}

impl Writer {
    fn stage(&mut self, inner: &Inner, r: StoredRecord) -> Result<(), &'static str> {
        let base = inner
            .active
            .and_then(|a| inner.segments.get(&a))
            .map_or(0, |s| s.size);
        let offset = base + self.bytes.len() as u64;
        let before = self.bytes.len();
        if let Err(e) = r.encode_into(&mut self.bytes) {
            self.bytes.truncate(before);
            return Err(e);
        }
        let len = (self.bytes.len() - before) as u32;
        self.staged.push((offset, len, r));
        Ok(())
    }

    /// Write the staged frames in one call; index them only once written.
    fn flush(&mut self, inner: &mut Inner) -> io::Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let Some(id) = inner.active else {
            return Err(io::Error::other("no active segment"));
        };
        let Some(seg) = inner.segments.get_mut(&id) else {
            return Err(io::Error::other("active segment missing"));
        };
        if let Err(e) = seg.file.write_all_at(&self.bytes, seg.size) {
            // Leave no partial frame behind; the records were not stored.
            let _ = seg.file.set_len(seg.size);
            self.bytes.clear();
            self.staged.clear();
            return Err(e);
        }
        seg.size += self.bytes.len() as u64;
        seg.live += self.staged.len() as u64;
        inner.disk_bytes += self.bytes.len() as u64;
        for (offset, len, r) in self.staged.drain(..) {
            inner.stats.appended[r.class.idx()] += 1;
            inner.index(id, offset, len, &r, State::Pending);
        }
        self.bytes.clear();
        Ok(())
    }
}

impl Inner {
    fn index(&mut self, seg: u64, offset: u64, len: u32, r: &StoredRecord, state: State) {
        let next = self.devices.len() as u32;
        let device = *self.devices.entry(r.key.clone()).or_insert(next);
        if r.class.keeps_newest() {
            self.newest.insert((device, r.class), r.seq);
        }
        self.live_bytes += u64::from(len);
        self.live_records += 1;
        self.entries.push_back(Entry {
            seq: r.seq,
            seg,
            offset,
            enqueued_at: r.enqueued_at,
            device,
            len,
            class: r.class,
            state,
        });
    }

    fn find(&self, seq: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    /// An alive entry becomes acknowledged or dropped.
    fn retire(&mut self, i: usize, state: State) {
        let e = &mut self.entries[i];
        if !e.alive() {
            return;
        }
        e.state = state;
        let (seg, len, class) = (e.seg, u64::from(e.len), e.class);
        self.live_bytes -= len;
        self.live_records -= 1;
        if state == State::Dropped {
            self.stats.dropped[class.idx()] += 1;
        }
        if let Some(s) = self.segments.get_mut(&seg) {
            s.live = s.live.saturating_sub(1);
            s.dead_bytes += len;
        }
    }

    /// Fsync the buffer directory, so that segment files created, renamed
    /// or deleted stay so after a power loss (whatever the [`FsyncPolicy`]:
    /// fsyncing a file's data does not make its directory entry durable).
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)?;
        self.dir_syncs += 1;
        Ok(())
    }

    /// Delete sealed segments that hold nothing alive.
    fn release_segments(&mut self, dir: &Path) {
        let empty: Vec<u64> = self
            .segments
            .iter()
            .filter(|(id, s)| s.live == 0 && Some(**id) != self.active)
            .map(|(id, _)| *id)
            .collect();
        let mut deleted = false;
        for id in empty {
            let path = dir.join(segment::file_name(id));
            match fs::remove_file(&path) {
                Ok(()) => {
                    deleted = true;
                    if let Some(s) = self.segments.remove(&id) {
                        self.disk_bytes -= s.size;
                    }
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "buffer: cannot delete a finished segment");
                }
            }
        }
        if deleted {
            // Best effort: the next cursor checkpoint fsyncs the directory
            // again before the cursor moves past these records on disk.
            if let Err(e) = self.sync_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "buffer: cannot fsync the directory after deleting segments");
            }
        }
    }

    fn advance_cursor(&mut self) {
        while self.entries.front().is_some_and(|e| !e.alive()) {
            self.entries.pop_front();
        }
        self.cursor = self.entries.front().map_or(self.next_seq, |e| e.seq);
    }

    fn reject(&mut self, out: &mut AppendOutcome, r: Rejected) {
        self.stats.rejected[r.class().idx()] += 1;
        out.rejected.push(r);
    }

    /// Seal the active segment and start a new one whose first record is `seq`.
    fn roll(&mut self, seq: u64, config: &BufferConfig) -> io::Result<()> {
        if let Some(old) = self.active.take() {
            if let Some(s) = self.segments.get(&old) {
                s.file.sync_data()?;
            }
            self.release_segments(&config.dir);
        }
        let path = config.dir.join(segment::file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // Always, not only under `batch`: under `interval` the periodic
        // fsync syncs the segment's data, never its directory entry, so
        // without this a power loss could lose the whole new file.
        self.sync_dir(&config.dir)?;
        self.segments.insert(
            seq,
            Segment {
                file: Arc::new(file),
                size: 0,
                live: 0,
                dead_bytes: 0,
            },
        );
        self.active = Some(seq);
        Ok(())
    }

    /// Evict and compact until `len` more bytes fit under `capacity`.
    /// Frees some slack beyond that, so eviction runs in rounds, not per record.
    fn make_room(&mut self, len: u64, capacity: u64, config: &BufferConfig) -> io::Result<bool> {
        let slack = (capacity / 16).min(config.segment_bytes);
        let want = (self.disk_bytes + len + slack).saturating_sub(capacity);
        if want == 0 {
            return Ok(true);
        }
        let mut dead: u64 = self.segments.values().map(|s| s.dead_bytes).sum();
        for tier in [0u8, 1] {
            if dead >= want {
                break;
            }
            let mut evicted = [0u64; 7];
            for i in 0..self.entries.len() {
                if dead >= want {
                    break;
                }
                let e = &self.entries[i];
                let (class, seq, device, len) = (e.class, e.seq, e.device, e.len);
                if e.state != State::Pending || class.tier() != Some(tier) {
                    continue;
                }
                if class.keeps_newest() && self.newest.get(&(device, class)) == Some(&seq) {
                    continue;
                }
                dead += u64::from(len);
                evicted[class.idx()] += 1;
                self.retire(i, State::Dropped);
            }
            for c in Class::ALL {
                if evicted[c.idx()] > 0 {
                    records_evicted(c, evicted[c.idx()], "making room, oldest first");
                }
            }
        }
        self.advance_cursor();
        // Compact: most dead bytes first. The active segment is sealed first.
        let mut order: Vec<(u64, u64)> = self
            .segments
            .iter()
            .filter(|(_, s)| s.dead_bytes > 0)
            .map(|(id, s)| (*id, s.dead_bytes))
            .collect();
        order.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        for (id, _) in order {
            if self.disk_bytes + len <= capacity.saturating_sub(slack) {
                break;
            }
            if self.active == Some(id) {
                if let Some(s) = self.segments.get(&id) {
                    s.file.sync_data()?;
                }
                self.active = None;
            }
            self.compact(id, &config.dir)?;
        }
        Ok(self.disk_bytes + len <= capacity)
    }

    /// Rewrite sealed segment `id` without its dead frames (or delete it).
    fn compact(&mut self, id: u64, dir: &Path) -> io::Result<()> {
        let Some(seg) = self.segments.get(&id) else {
            return Ok(());
        };
        let path = dir.join(segment::file_name(id));
        if seg.live == 0 {
            fs::remove_file(&path)?;
            let size = seg.size;
            self.segments.remove(&id);
            self.disk_bytes -= size;
            return self.sync_dir(dir);
        }
        let end = self
            .segments
            .range(id + 1..)
            .next()
            .map_or(u64::MAX, |(k, _)| *k);
        let lo = self.entries.partition_point(|e| e.seq < id);
        let hi = self.entries.partition_point(|e| e.seq < end);
        let mut data = Vec::new();
        let mut moves = Vec::new();
        for i in lo..hi {
            let e = &self.entries[i];
            if e.seg != id || !e.alive() {
                continue;
            }
            let mut buf = vec![0u8; e.len as usize];
            seg.file.read_exact_at(&mut buf, e.offset)?;
            moves.push((i, data.len() as u64));
            data.extend_from_slice(&buf);
        }
        let tmp = dir.join(format!("{}.tmp", segment::file_name(id)));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_data()?;
        }
        fs::rename(&tmp, &path)?;
        self.sync_dir(dir)?;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        for (i, offset) in moves {
            self.entries[i].offset = offset;
        }
        let new_size = data.len() as u64;
        if let Some(s) = self.segments.get_mut(&id) {
            self.disk_bytes = self.disk_bytes - s.size + new_size;
            s.size = new_size;
            s.dead_bytes = 0;
            s.file = Arc::new(file);
        }
        metrics::counter!("fleetpulse_edge_buffer_compactions_total").increment(1);
        Ok(())
    }

    fn snapshot(&self) -> BufferStats {
        let mut s = self.stats.clone();
        s.records = self.live_records;
        s.live_bytes = self.live_bytes;
        s.disk_bytes = self.disk_bytes;
        s.oldest_enqueued_at = self
            .entries
            .iter()
            .find(|e| e.alive())
            .map(|e| e.enqueued_at);
        s.cursor = self.cursor;
        s
    }
}

/// What [`inspect`] found in a buffer directory.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// The acknowledgement cursor on disk (0 when absent).
    pub cursor: u64,
    /// Valid records at or above the cursor, in order.
    pub records: Vec<StoredRecord>,
    /// Segment files that end in a torn or corrupt tail.
    pub torn_tails: usize,
    /// Bytes of all segment files.
    pub disk_bytes: u64,
}

/// Read a buffer directory without changing it (tests, diagnostics). Safe
/// while a connector writes it: a frame being written reads as a torn tail.
pub fn inspect(dir: &Path) -> io::Result<Inspection> {
    let mut out = Inspection {
        cursor: read_cursor(dir).unwrap_or(0),
        ..Inspection::default()
    };
    let mut ids: Vec<u64> = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        if let Some(id) = segment::parse_name(&item.file_name().to_string_lossy()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut last = None;
    let last_id = ids.last().copied();
    for id in ids {
        let path = dir.join(segment::file_name(id));
        let scan = match segment::scan(&path, id, last, Some(id) != last_id) {
            Ok(s) => s,
            // Deleted between listing and reading: it was fully acknowledged.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.disk_bytes += scan.file_len;
        if scan.tail.is_some() {
            out.torn_tails += 1;
        }
        for f in scan.frames {
            last = Some(f.record.seq);
            if f.record.seq >= out.cursor {
                out.records.push(f.record);
            }
        }
    }
    Ok(out)
}
