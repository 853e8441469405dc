//! The dead-letter form of an SNMP datagram that did not decode.
//!
//! A v1/v2c datagram carries the community string in clear, and a response
//! carries whatever the edge asked for: sysName, sysContact, sysLocation,
//! serial numbers, supply descriptions. None of that may leave the site in
//! a dead letter, yet an operator debugging a broken agent needs to see
//! where and how its BER went wrong. So the DLQ payload is a JSON summary
//! ([`redact`]) built by a tolerant BER walk of its own (it must make sense
//! of exactly the datagrams the real decoder rejected):
//!
//! - kept: length, SNMP version, PDU type, request-id, error-status and
//!   error-index when they can be read, where the walk stopped and why,
//!   and a hex dump in which every tag and length byte is shown;
//! - value bytes shown only for types that cannot carry text: INTEGER,
//!   NULL, OBJECT IDENTIFIER, Counter32/64, Gauge32, TimeTicks and the
//!   v2 exceptions, each within a size bound;
//! - every other value is replaced by `<redacted N bytes>`: OCTET STRING
//!   (the community, every DisplayString, the SNMPv3 security parameters,
//!   an encrypted PDU), IpAddress, Opaque, unknown types, and whatever
//!   follows the point where the walk stopped (its bytes cannot be
//!   classified, so they are counted, not shown).
//!
//! No hash of redacted values is given: a community is short and guessable,
//! and an unsalted hash of `public` is as good as the word itself.

use serde::Serialize;

/// Datagram bytes shown in the dump; the rest is counted.
const DUMP_MAX: usize = 16 * 1024;
/// Deepest BER nesting walked (a hostile agent can nest without end).
const MAX_DEPTH: usize = 16;
/// Longest INTEGER-like value shown (Counter64 needs 9 bytes).
const MAX_INT_LEN: usize = 9;
/// Longest OBJECT IDENTIFIER shown.
const MAX_OID_LEN: usize = 128;
/// Longest reason text kept.
const REASON_MAX: usize = 512;

/// `format` field of the JSON payload.
pub const FORMAT: &str = "fleetpulse.snmp_redacted.v1";

/// The JSON document put on the DLQ instead of the datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedactedDatagram {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// Datagram length in bytes.
    pub length: usize,
    /// `v1`, `v2c`, `v3`, `unknown(n)` or absent.
    pub version: Option<String>,
    /// PDU type (`GetResponse`, `Report`…) and its tag, if reached.
    pub pdu: Option<String>,
    /// request-id, if readable.
    pub request_id: Option<i64>,
    /// error-status, if readable.
    pub error_status: Option<i64>,
    /// error-index, if readable.
    pub error_index: Option<i64>,
    /// Where the BER walk stopped (offset and why); absent when the BER
    /// structure is sound and the decoder objected to its content.
    pub stopped_at: Option<Stop>,
    /// Value bytes replaced by `<redacted …>` (community included).
    pub redacted_bytes: usize,
    /// Hex dump, redacted values inline.
    pub dump: String,
}

/// Where and why the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stop {
    /// Byte offset of the offending tag or length.
    pub offset: usize,
    /// What was wrong.
    pub what: String,
}

/// Summarise `raw` without any community or string value; see the module docs.
pub fn redact(raw: &[u8]) -> RedactedDatagram {
    let mut w = Walk {
        raw,
        dump: String::new(),
        shown: 0,
        redacted: 0,
        stop: None,
        version: None,
        pdu: None,
        pdu_ints: Vec::new(),
        spans: Vec::new(),
    };
    w.seq(0, raw.len(), 0, Ctx::Top);
    RedactedDatagram {
        format: FORMAT,
        length: raw.len(),
        version: w.version.map(|v| match v {
            0 => "v1".to_string(),
            1 => "v2c".to_string(),
            3 => "v3".to_string(),
            n => format!("unknown({n})"),
        }),
        pdu: w.pdu.map(|t| format!("{} ({t:#04x})", pdu_name(t))),
        request_id: w.pdu_ints.first().copied(),
        error_status: w.pdu_ints.get(1).copied(),
        error_index: w.pdu_ints.get(2).copied(),
        stopped_at: w.stop,
        redacted_bytes: w.redacted,
        dump: w.dump.trim_end().to_string(),
    }
}

/// The JSON payload for the DLQ.
pub fn redacted_payload(raw: &[u8]) -> Vec<u8> {
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_vec(&redact(raw)).unwrap_or_default()
}

/// The decoder's reason, cleaned for a header that leaves the site: quoted
/// text removed, any value of the datagram that is not shown in its
/// redacted form (strings, undecodable tails) replaced, length bounded.
pub fn redact_reason(reason: &str, raw: &[u8]) -> String {
    let mut w = Walk {
        raw,
        dump: String::new(),
        shown: 0,
        redacted: 0,
        stop: None,
        version: None,
        pdu: None,
        pdu_ints: Vec::new(),
        spans: Vec::new(),
    };
    w.seq(0, raw.len(), 0, Ctx::Top);
    let mut out = String::with_capacity(reason.len());
    let mut inside = false;
    for c in reason.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    for (a, b) in &w.spans {
        let hidden = String::from_utf8_lossy(&raw[*a..*b]);
        // Short values could only be matched by chance; every printable
        // run of three or more characters is replaced.
        for piece in hidden
            .split(|c: char| c.is_control() || c == '\u{fffd}')
            .filter(|p| p.trim().chars().count() >= 3)
        {
            out = out.replace(piece, "<redacted>");
        }
    }
    if out.chars().count() > REASON_MAX {
        out = out.chars().take(REASON_MAX).collect::<String>() + "…";
    }
    out
}

/// Where a TLV sits, for the fields worth reporting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// The datagram itself.
    Top,
    /// Inside the outer message SEQUENCE.
    Message,
    /// Inside an SNMPv3 scopedPDU.
    Scoped,
    /// Inside a PDU.
    Pdu,
    /// Anywhere else.
    Other,
}

struct Walk<'a> {
    raw: &'a [u8],
    dump: String,
    /// Datagram bytes represented in the dump so far.
    shown: usize,
    redacted: usize,
    stop: Option<Stop>,
    version: Option<i64>,
    pdu: Option<u8>,
    pdu_ints: Vec<i64>,
    /// Byte ranges not shown (redacted values, unwalked tails).
    spans: Vec<(usize, usize)>,
}

impl Walk<'_> {
    fn hex(&mut self, bytes: &[u8]) {
        for b in bytes {
            if self.shown >= DUMP_MAX {
                return;
            }
            self.dump.push_str(&format!("{b:02x} "));
            self.shown += 1;
        }
    }

    fn hide(&mut self, a: usize, b: usize, label: &str) {
        let n = b.saturating_sub(a);
        self.redacted += n;
        self.spans.push((a, b));
        if self.shown < DUMP_MAX {
            self.dump.push_str(&format!("<{label}{n} bytes> "));
        }
    }

    fn stopped(&mut self, at: usize, end: usize, what: String) {
        self.stop = Some(Stop { offset: at, what });
        if at < end {
            self.hide(at, end, "unparsed, redacted ");
        }
    }

    /// Walk the TLVs of `raw[start..end]`.
    fn seq(&mut self, start: usize, end: usize, depth: usize, ctx: Ctx) {
        let mut i = start;
        let mut index = 0usize;
        while i < end && self.stop.is_none() {
            let tag = self.raw[i];
            if tag & 0x1f == 0x1f {
                return self.stopped(i, end, format!("multi-byte tag {tag:#04x} at {i}"));
            }
            let Some((len, body)) = read_len(self.raw, i + 1, end) else {
                return self.stopped(i, end, format!("bad length after tag {tag:#04x} at {i}"));
            };
            self.hex(&self.raw[i..body]);
            // A value longer than what is left: walk what is there, then
            // report the truncation (unless something inside failed first).
            let truncated = body.checked_add(len).is_none_or(|e| e > end);
            let content_end = if truncated { end } else { body + len };
            let truncation = || Stop {
                offset: i,
                what: format!(
                    "tag {tag:#04x} at {i} claims {len} bytes, {} left",
                    end - body
                ),
            };
            if tag & 0x20 != 0 {
                if depth >= MAX_DEPTH {
                    return self.stopped(body, end, format!("nesting deeper than {MAX_DEPTH}"));
                }
                let inner = match (ctx, index, tag) {
                    (Ctx::Top, _, 0x30) => Ctx::Message,
                    // v3: msgData as a plaintext scopedPDU.
                    (Ctx::Message, 3, 0x30) => Ctx::Scoped,
                    (Ctx::Message | Ctx::Scoped, _, 0xa0..=0xa8) if self.pdu.is_none() => {
                        self.pdu = Some(tag);
                        Ctx::Pdu
                    }
                    _ => Ctx::Other,
                };
                self.seq(body, content_end, depth + 1, inner);
                if truncated && self.stop.is_none() {
                    self.stop = Some(truncation());
                }
            } else if truncated {
                self.stop = Some(truncation());
                return self.hide(body, end, "truncated value, redacted ");
            } else {
                let value = &self.raw[body..content_end];
                let safe = match tag {
                    0x02 | 0x41 | 0x42 | 0x43 | 0x46 => len <= MAX_INT_LEN,
                    0x06 => len <= MAX_OID_LEN,
                    0x05 | 0x80..=0x82 => len == 0,
                    _ => false,
                };
                if tag == 0x02 && len <= 8 {
                    let n = int(value);
                    match ctx {
                        Ctx::Message if index == 0 => self.version = Some(n),
                        Ctx::Pdu if index < 3 => self.pdu_ints.push(n),
                        _ => {}
                    }
                }
                if safe {
                    self.hex(value);
                } else if ctx == Ctx::Message && index == 1 && tag == 0x04 {
                    self.hide(body, content_end, "community redacted, ");
                } else {
                    self.hide(body, content_end, "redacted ");
                }
            }
            i = content_end;
            index += 1;
        }
    }
}

/// A BER length at `raw[i]`: (length, offset of the content).
fn read_len(raw: &[u8], i: usize, end: usize) -> Option<(usize, usize)> {
    let first = *raw.get(i).filter(|_| i < end)?;
    if first < 0x80 {
        return Some((usize::from(first), i + 1));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 || i + 1 + n > end {
        return None;
    }
    let len = raw[i + 1..i + 1 + n]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Some((len, i + 1 + n))
}

/// Two's-complement big-endian INTEGER (1..=8 bytes).
fn int(v: &[u8]) -> i64 {
    let mut n: i64 = if v.first().is_some_and(|b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for b in v {
        n = (n << 8) | i64::from(*b);
    }
    n
}

fn pdu_name(tag: u8) -> &'static str {
    match tag {
        0xa0 => "GetRequest",
        0xa1 => "GetNextRequest",
        0xa2 => "GetResponse",
        0xa3 => "SetRequest",
        0xa4 => "Trap-v1",
        0xa5 => "GetBulkRequest",
        0xa6 => "InformRequest",
        0xa7 => "SNMPv2-Trap",
        0xa8 => "Report",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BER TLV.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    const COMMUNITY: &[u8] = b"s3cr3t-Xq7Zw9kJ!";
    const SYSNAME: &[u8] = b"PRINTER-CANARY-42";

    /// A v2c GetResponse: sysName, sysUpTime, then a Counter32.
    fn response() -> Vec<u8> {
        let vb = |oid: &[u8], v: Vec<u8>| tlv(0x30, &cat(&[tlv(0x06, oid), v]));
        let varbinds = cat(&[
            vb(&[0x2b, 6, 1, 2, 1, 1, 5, 0], tlv(0x04, SYSNAME)),
            vb(&[0x2b, 6, 1, 2, 1, 1, 3, 0], tlv(0x43, &[0x01, 0x02, 0x03])),
            vb(
                &[0x2b, 6, 1, 2, 1, 43, 10, 2, 1, 4, 1, 1],
                tlv(0x41, &[0x00, 0x98, 0x96, 0x7f]),
            ),
        ]);
        let pdu = tlv(
            0xa2,
            &cat(&[
                tlv(0x02, &[0x12, 0x34]),
                tlv(0x02, &[0]),
                tlv(0x02, &[0]),
                tlv(0x30, &varbinds),
            ]),
        );
        tlv(0x30, &cat(&[tlv(0x02, &[1]), tlv(0x04, COMMUNITY), pdu]))
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn assert_clean(r: &RedactedDatagram) {
        let json = serde_json::to_vec(r).unwrap();
        for secret in [COMMUNITY, SYSNAME, &COMMUNITY[..6], &SYSNAME[..8]] {
            assert!(
                !contains(&json, secret),
                "{}",
                String::from_utf8_lossy(&json)
            );
            // Not as hex either.
            let hex = secret
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            assert!(!contains(&json, hex.as_bytes()), "{}", r.dump);
        }
    }

    #[test]
    fn well_formed_response_keeps_structure_not_strings() {
        let raw = response();
        let r = redact(&raw);
        assert_clean(&r);
        assert_eq!(r.length, raw.len());
        assert_eq!(r.version.as_deref(), Some("v2c"));
        assert_eq!(r.pdu.as_deref(), Some("GetResponse (0xa2)"));
        assert_eq!(r.request_id, Some(0x1234));
        assert_eq!((r.error_status, r.error_index), (Some(0), Some(0)));
        assert_eq!(r.stopped_at, None);
        assert_eq!(r.redacted_bytes, COMMUNITY.len() + SYSNAME.len());
        assert!(r.dump.starts_with("30 "), "{}", r.dump);
        assert!(
            r.dump.contains("<community redacted, 16 bytes>"),
            "{}",
            r.dump
        );
        assert!(r.dump.contains("<redacted 17 bytes>"), "{}", r.dump);
        // The OIDs and the counter value are shown.
        assert!(r.dump.contains("2b 06 01 02 01 01 05 00"), "{}", r.dump);
        assert!(r.dump.contains("41 04 00 98 96 7f"), "{}", r.dump);
    }

    #[test]
    fn truncation_anywhere_never_shows_a_string_byte() {
        let raw = response();
        for cut in 1..raw.len() {
            let r = redact(&raw[..cut]);
            assert_eq!(r.length, cut);
            let json = serde_json::to_vec(&r).unwrap();
            // No run of 3+ bytes of either string, in clear or in hex.
            for s in [COMMUNITY, SYSNAME] {
                for w in s.windows(3) {
                    assert!(!contains(&json, w), "cut {cut}: {}", r.dump);
                    let hex = format!("{:02x} {:02x} {:02x}", w[0], w[1], w[2]);
                    assert!(
                        !contains(r.dump.as_bytes(), hex.as_bytes()),
                        "cut {cut}: {}",
                        r.dump
                    );
                }
            }
            assert!(r.stopped_at.is_some(), "cut {cut} must be reported");
        }
        // Cut inside sysName: the tail is counted as truncated, not shown.
        let at = raw
            .windows(SYSNAME.len())
            .position(|w| w == SYSNAME)
            .unwrap()
            + 5;
        let r = redact(&raw[..at]);
        assert!(
            r.dump.contains("<truncated value, redacted 5 bytes>"),
            "{}",
            r.dump
        );
        assert_eq!(r.request_id, Some(0x1234));
    }

    #[test]
    fn garbage_and_hostile_nesting_are_summarised() {
        let r = redact(b"\x30\x80hello community");
        assert!(r.stopped_at.is_some());
        assert!(!r.dump.contains("hello"));
        assert_eq!(r.redacted_bytes, 17, "{r:?}");
        let mut deep = vec![0x04, 3, b'a', b'b', b'c'];
        for _ in 0..40 {
            deep = tlv(0x30, &deep);
        }
        let r = redact(&deep);
        assert!(r.stopped_at.as_ref().unwrap().what.contains("nesting"));
        assert!(!r.dump.contains("61 62 63"));
        assert_eq!(redact(b"").dump, "");
    }

    #[test]
    fn reason_loses_quoted_text_and_datagram_strings() {
        let raw = response();
        let r = redact_reason(
            "BER: bad value \"PRINTER-CANARY-42\" near PRINTER-CANARY-42 and s3cr3t-Xq7Zw9kJ!",
            &raw,
        );
        assert!(!r.contains("CANARY") && !r.contains("s3cr3t"), "{r}");
        assert!(r.starts_with("BER: bad value"), "{r}");
        let long = "x".repeat(2000);
        assert!(redact_reason(&long, b"").chars().count() <= REASON_MAX + 1);
    }
}
