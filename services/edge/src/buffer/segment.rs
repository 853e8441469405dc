//! Segment files: framing, checksums, and scanning with torn-tail detection.
//!
//! A segment is a plain concatenation of frames, named after the sequence
//! number of its first record (`00000000000000000042.seg`), so the lexical
//! order of the names is the order of the records. A frame is
//!
//! ```text
//! magic u32 "FPB1" | body_len u32 | crc32(body) u32 | body
//! body = seq u64 | class u8 | enqueued_at i64
//!      | topic (u16 len) | key (u32 len) | batch (u16 len) | event_id (u16 len)
//!      | header count u16, each (name u16 len, value u32 len) | payload (u32 len)
//! ```
//!
//! all little-endian. The length comes before the checksum so a reader knows
//! how much to checksum; the magic catches a length field that is itself
//! garbage. A power loss can leave a frame half written (or written with
//! zeros, on some file systems), but only in the segment being appended to
//! (the last one): a segment is fsynced before the next one is created. So
//! the scan of the last segment stops at the first frame whose magic,
//! length, checksum, body or sequence number is wrong, and everything from
//! there on is the torn tail. A bad frame in a sealed (older) segment is bit
//! rot, not a torn write: the scan skips to the next offset where a frame
//! with valid magic, length and checksum starts and goes on, so one damaged
//! frame costs that frame, not the rest of the file. Nothing in a file is
//! trusted: every length is bounds-checked, so a garbage file yields an
//! error value, not a panic.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::Class;

/// Frame magic, "FPB1".
const MAGIC: u32 = u32::from_le_bytes(*b"FPB1");
/// Magic + length + checksum.
pub(crate) const FRAME_HEADER: usize = 12;
/// Largest body a frame may declare; anything bigger is garbage.
pub(crate) const MAX_BODY: usize = 8 << 20;
/// Segment file suffix.
pub(crate) const SUFFIX: &str = ".seg";

/// One record as stored in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Position in the buffer: strictly increasing in append order.
    pub seq: u64,
    /// What kind of record it is (decides eviction).
    pub class: Class,
    /// When it was appended, ms since epoch.
    pub enqueued_at: i64,
    /// Kafka topic.
    pub topic: String,
    /// Kafka key (the device id, or the address for dead letters).
    pub key: Vec<u8>,
    /// Batch id (one poll's records share it); part of the signature.
    pub batch: String,
    /// The record's event id (empty for dead letters).
    pub event_id: String,
    /// Extra Kafka headers (dead-letter evidence); signature headers are added at send time.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Avro single-object encoded record (or raw evidence for dead letters).
    pub payload: Vec<u8>,
}

impl StoredRecord {
    /// Size of this record's frame on disk.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER
            + 8
            + 1
            + 8
            + 2
            + self.topic.len()
            + 4
            + self.key.len()
            + 2
            + self.batch.len()
            + 2
            + self.event_id.len()
            + 2
            + self
                .headers
                .iter()
                .map(|(k, v)| 2 + k.len() + 4 + v.len())
                .sum::<usize>()
            + 4
            + self.payload.len()
    }

    /// Append this record's frame to `out`. Fails when a field exceeds its
    /// length prefix or the frame exceeds [`MAX_BODY`].
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let body_len = self.frame_len() - FRAME_HEADER;
        if body_len > MAX_BODY {
            return Err("record larger than the largest frame");
        }
        let start = out.len();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let body = out.len();
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(self.class as u8);
        out.extend_from_slice(&self.enqueued_at.to_le_bytes());
        put16(out, self.topic.as_bytes())?;
        put32(out, &self.key)?;
        put16(out, self.batch.as_bytes())?;
        put16(out, self.event_id.as_bytes())?;
        let n = u16::try_from(self.headers.len()).map_err(|_| "too many headers")?;
        out.extend_from_slice(&n.to_le_bytes());
        for (k, v) in &self.headers {
            put16(out, k.as_bytes())?;
            put32(out, v)?;
        }
        put32(out, &self.payload)?;
        let crc = crc32fast::hash(&out[body..]);
        out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }
}

fn put16(out: &mut Vec<u8>, v: &[u8]) -> Result<(), &'static str> {
    let n = u16::try_from(v.len()).map_err(|_| "field longer than 65535 bytes")?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(v);
    Ok(())
}

fn put32(out: &mut Vec<u8>, v: &[u8]) -> Result<(), &'static str> {
    let n = u32::try_from(v.len()).map_err(|_| "field longer than 4 GiB")?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(v);
    Ok(())
}

/// Bounds-checked reader over a frame body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn bytes16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
    fn string16(&mut self) -> Option<String> {
        String::from_utf8(self.bytes16()?.to_vec()).ok()
    }
}

/// Decode a checksummed body; `None` when it is malformed.
fn decode_body(body: &[u8]) -> Option<StoredRecord> {
    let mut c = Cursor(body);
    let seq = c.u64()?;
    let class = Class::from_u8(c.u8()?)?;
    let enqueued_at = i64::from_le_bytes(c.take(8)?.try_into().ok()?);
    let topic = c.string16()?;
    let key = c.bytes32()?.to_vec();
    let batch = c.string16()?;
    let event_id = c.string16()?;
    let n = c.u16()?;
    let mut headers = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let k = c.string16()?;
        let v = c.bytes32()?.to_vec();
        headers.push((k, v));
    }
    let payload = c.bytes32()?.to_vec();
    if !c.0.is_empty() {
        return None;
    }
    Some(StoredRecord {
        seq,
        class,
        enqueued_at,
        topic,
        key,
        batch,
        event_id,
        headers,
        payload,
    })
}

/// Outcome of decoding one frame at the start of `buf`.
pub(crate) enum Frame {
    /// A valid frame of this many bytes.
    Ok(StoredRecord, usize),
    /// The buffer ends inside the frame.
    Truncated,
    /// The frame is not valid.
    Corrupt(&'static str),
}

/// Decode the frame at the start of `buf`.
pub(crate) fn decode_frame(buf: &[u8]) -> Frame {
    if buf.len() < FRAME_HEADER {
        return Frame::Truncated;
    }
    let word = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if word(0) != MAGIC {
        return Frame::Corrupt("bad frame magic");
    }
    let Ok(len) = usize::try_from(word(4)) else {
        return Frame::Corrupt("bad frame length");
    };
    if len > MAX_BODY {
        return Frame::Corrupt("frame length out of range");
    }
    let Some(body) = buf.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Frame::Truncated;
    };
    if crc32fast::hash(body) != word(8) {
        return Frame::Corrupt("checksum mismatch");
    }
    match decode_body(body) {
        Some(r) => Frame::Ok(r, FRAME_HEADER + len),
        None => Frame::Corrupt("malformed frame body"),
    }
}

/// One valid frame found by a scan.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) record: StoredRecord,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// A damaged region a scan of a sealed segment skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Where it starts in the file.
    pub(crate) offset: u64,
    /// Its length in bytes.
    pub(crate) len: u64,
    /// Frame starts (magic) in it: the records lost, as far as can be told (at least 1).
    pub(crate) frames: u64,
    /// What was wrong with its first frame.
    pub(crate) reason: &'static str,
}

/// What a scan of one segment file found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Valid frames, in file order (sequence numbers strictly increasing).
    pub(crate) frames: Vec<Scanned>,
    /// Last segment: bytes covered by valid frames, where the torn tail, if
    /// any, starts. Sealed segment: the file's length (nothing is cut).
    pub(crate) valid_len: u64,
    /// The file's length.
    pub(crate) file_len: u64,
    /// Last segment: why the scan stopped before the end of the file.
    /// Always `None` for a sealed segment (see `skipped`).
    pub(crate) tail: Option<&'static str>,
    /// Sealed segment: damaged regions skipped over, in file order.
    pub(crate) skipped: Vec<Skipped>,
}

/// Read a segment and validate every frame. `first_seq` is the sequence
/// number in the file name; `after` the last sequence number of the
/// previous segment. Frames must carry increasing numbers at or above both.
/// `sealed`: the segment is not the last one, so a bad frame is skipped
/// (resynchronising on the next valid frame) instead of ending the scan.
pub(crate) fn scan(
    path: &Path,
    first_seq: u64,
    after: Option<u64>,
    sealed: bool,
) -> std::io::Result<Scan> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(scan_bytes(&buf, first_seq, after, sealed))
}

fn scan_bytes(buf: &[u8], first_seq: u64, after: Option<u64>, sealed: bool) -> Scan {
    let file_len = buf.len() as u64;
    let mut frames = Vec::new();
    let mut skipped = Vec::new();
    let mut pos = 0usize;
    let mut valid_len = 0usize;
    let mut last = after;
    let mut tail = None;
    // Start and reason of the damaged region being skipped (sealed only).
    let mut bad: Option<(usize, &'static str)> = None;
    while pos < buf.len() {
        let why = match decode_frame(&buf[pos..]) {
            Frame::Ok(record, len)
                if record.seq >= first_seq && last.is_none_or(|l| record.seq > l) =>
            {
                if let Some((start, reason)) = bad.take() {
                    skipped.push(skipped_region(buf, start, pos, reason));
                }
                last = Some(record.seq);
                frames.push(Scanned {
                    record,
                    offset: pos as u64,
                    len: len as u32,
                });
                pos += len;
                valid_len = pos;
                continue;
            }
            Frame::Ok(..) => "sequence number out of order",
            Frame::Truncated => "frame cut short",
            Frame::Corrupt(why) => why,
        };
        if !sealed {
            tail = Some(why);
            break;
        }
        bad.get_or_insert((pos, why));
        // Resynchronise: the next candidate frame start.
        match find_magic(&buf[pos + 1..]) {
            Some(i) => pos += 1 + i,
            None => {
                pos = buf.len();
            }
        }
    }
    if let Some((start, reason)) = bad.take() {
        skipped.push(skipped_region(buf, start, buf.len(), reason));
    }
    Scan {
        frames,
        valid_len: if sealed { file_len } else { valid_len as u64 },
        file_len,
        tail,
        skipped,
    }
}

fn find_magic(buf: &[u8]) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    buf.windows(magic.len()).position(|w| w == magic)
}

fn skipped_region(buf: &[u8], start: usize, end: usize, reason: &'static str) -> Skipped {
    let region = buf.get(start..end).unwrap_or_default();
    let magic = MAGIC.to_le_bytes();
    let frames = region.windows(magic.len()).filter(|w| *w == magic).count() as u64;
    Skipped {
        offset: start as u64,
        len: (end - start) as u64,
        frames: frames.max(1),
        reason,
    }
}

/// File name of the segment starting at `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

/// The first sequence number encoded in a segment file name.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
