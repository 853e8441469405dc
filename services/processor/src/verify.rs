//! Trust and decode one Kafka message, or say precisely why not.
//!
//! Order matters: the signature is checked before the payload is parsed, so
//! unauthenticated bytes never reach the Avro decoder; the signing time is
//! judged only once the signature proved the connector wrote it; the record type is
//! checked against the topic, because a correctly signed record moved to
//! another topic would otherwise land in the wrong table. Every failure has a
//! short stable class (the DLQ header and metric label) and a reason that
//! never quotes field values.
//!
//! # The time window
//!
//! A signed record carries its signing time (`ts` in the `fps` header). It is compared with
//! the record's **Kafka timestamp** (CreateTime, set by the connector's
//! producer when it sends, or LogAppendTime, set by the broker), not with the
//! processor's clock: a processor that is behind (a backlog after an outage,
//! a restart, a backfill from the earliest offset) reads records that were
//! fresh when they were written and must not reject them for its own delay.
//! What the window catches is a record whose signature is much older (or
//! newer) than the moment it entered Kafka: a captured record published again
//! later, or a connector whose clock is wrong. The processor's clock is used
//! only for a message without a timestamp, and as a cap: a Kafka timestamp
//! later than the processor's clock is taken as "now", because no record can
//! have entered Kafka in the future (this also keeps a bogus far-future
//! timestamp from flushing the replay memory, see [`crate::replay`]).
//!
//! The edge signs at send time (also when it re-sends records it buffered
//! during an outage), so the signing time and CreateTime differ by milliseconds; with
//! LogAppendTime they differ by the time a record waited in the producer's
//! queue, which the connector bounds with `message.timeout.ms` (5 min).
//!
//! CreateTime is chosen by whoever produces, so against a party that can
//! write to the raw topics the window is only as strong as the broker's
//! bound on CreateTime: set the topics to `message.timestamp.type=LogAppendTime`,
//! or bound CreateTime with `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` (Kafka ≥ 3.6; older:
//! `message.timestamp.difference.max.ms`) to about the window.

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::types::Value;
use fleetpulse_core::codec;
use fleetpulse_core::schema::RecordType;
use fleetpulse_core::signing::{SignatureError, SignatureFields, SigningKey};

/// Why a message cannot go to the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable class: `missing_signature` (no `fps` header, or not a
    /// signature of a known format), `unknown_connector` (no configured
    /// connector secret derives the key id: a connector not configured, or
    /// a rotated-out secret), `bad_signature`, `stale_signature` / `clock_skew` (signing time
    /// before / after the window around the Kafka timestamp),
    /// `replayed_sequence` (see [`crate::replay`]), `connector_mismatch`,
    /// `not_avro`, `unknown_schema`, `wrong_schema`, `bad_datum`,
    /// `unknown_topic`, `malformed` (input that made a reader fail unexpectedly).
    pub class: &'static str,
    /// Human-readable reason (no field values).
    pub reason: String,
}

impl Rejection {
    pub(crate) fn new(class: &'static str, reason: impl Into<String>) -> Rejection {
        Rejection {
            class,
            reason: reason.into(),
        }
    }
}

/// Where the time a signing time is compared with comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// The producer's CreateTime.
    CreateTime,
    /// The broker's LogAppendTime.
    LogAppendTime,
    /// The LastModified time of the S3 object Firehose delivered the record
    /// in (the window is widened by `firehose.delivery_allowance`).
    ObjectStore,
    /// The processor's clock (the message had no timestamp, or one later
    /// than the processor's clock).
    ProcessorClock,
}

/// The time a record's signing time is compared with (ms since epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceTime {
    /// Milliseconds since the epoch.
    pub ms: i64,
    /// Where it comes from.
    pub source: TimeSource,
}

impl ReferenceTime {
    /// The reference time of a message with Kafka timestamp `ts`, read when
    /// the processor's clock says `now_ms`: the Kafka timestamp, capped at
    /// `now_ms`; `now_ms` when the message has none.
    pub fn of(ts: rdkafka::Timestamp, now_ms: i64) -> ReferenceTime {
        let (ms, source) = match ts {
            rdkafka::Timestamp::CreateTime(t) if t > 0 => (t, TimeSource::CreateTime),
            rdkafka::Timestamp::LogAppendTime(t) if t > 0 => (t, TimeSource::LogAppendTime),
            _ => (now_ms, TimeSource::ProcessorClock),
        };
        if ms > now_ms {
            return ReferenceTime {
                ms: now_ms,
                source: TimeSource::ProcessorClock,
            };
        }
        ReferenceTime { ms, source }
    }

    fn name(&self) -> &'static str {
        match self.source {
            TimeSource::CreateTime => "Kafka CreateTime",
            TimeSource::LogAppendTime => "Kafka LogAppendTime",
            TimeSource::ProcessorClock => "processor clock",
            TimeSource::ObjectStore => "S3 object LastModified",
        }
    }
}

/// A record that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Its type (the one the topic carries).
    pub record_type: RecordType,
    /// The decoded datum.
    pub value: Value,
    /// Its signature (key id, seq, ts, MAC).
    pub signature: SignatureFields,
    /// The connector whose key signed it.
    pub connector_id: String,
}

/// Default of [`Verifier::with_window`] and of `signature_window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// Verifies signatures with the configured connectors' keys and decodes.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// Key id → (connector id, key): the key id alone names the connector.
    keys: BTreeMap<[u8; 8], (String, SigningKey)>,
    window_ms: i64,
}

impl Verifier {
    /// A verifier for connectors with these secrets (connector id -> secret),
    /// accepting signing times within [`DEFAULT_WINDOW`] of the reference time.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Verifier {
        Verifier {
            keys: secrets
                .into_iter()
                .map(|(id, secret)| {
                    let k = SigningKey::derive(secret, id);
                    (k.key_id_bytes(), (id.to_string(), k))
                })
                .collect(),
            window_ms: DEFAULT_WINDOW.as_millis() as i64,
        }
    }

    /// The configured connector whose key has this signature's key id.
    pub fn connector_of(&self, f: &SignatureFields) -> Option<&str> {
        self.keys.get(&f.key_id).map(|(c, _)| c.as_str())
    }

    /// Accept signing times within `window` of the reference time.
    pub fn with_window(mut self, window: Duration) -> Verifier {
        self.window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Check the signature headers of a message read from `topic`, its
    /// signing time against `reference`, decode its payload and check it is
    /// a record of `expected` type.
    pub fn check<'h>(
        &self,
        topic: &str,
        expected: RecordType,
        key: &[u8],
        payload: &[u8],
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
        reference: ReferenceTime,
    ) -> Result<Verified, Rejection> {
        let (fields, connector_id) = self.authenticate(topic, key, payload, headers, reference)?;
        self.datum(expected, payload)?;
        let (found, value) =
            codec::decode_value(payload).map_err(|e| Rejection::new(e.class(), e.to_string()))?;
        // A connector may only speak for itself: its key must not vouch for
        // records that claim to come from another connector.
        connector_matches(&connector_id, record_connector(&value))?;
        Ok(Verified {
            record_type: found,
            value,
            signature: fields,
            connector_id,
        })
    }

    /// The first half of [`Verifier::check`]: the signature headers, the
    /// signature over topic, key, headers and payload, and the signing time.
    /// The payload is not parsed.
    pub fn authenticate<'h>(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
        reference: ReferenceTime,
    ) -> Result<(SignatureFields, String), Rejection> {
        let fields = SignatureFields::from_headers(headers)
            .map_err(|e| Rejection::new("missing_signature", e.to_string()))?;
        let (connector_id, signing) = self.keys.get(&fields.key_id).ok_or_else(|| {
            Rejection::new(
                "unknown_connector",
                SignatureError::UnknownConnector(fields.key_id_hex()).to_string(),
            )
        })?;
        signing
            .verify(topic, key, &fields, payload)
            .map_err(|e| Rejection::new("bad_signature", e.to_string()))?;
        self.check_time(&fields, reference)?;
        Ok((fields, connector_id.clone()))
    }

    /// The Avro datum of a single-object encoded `payload` that must be a
    /// record of `expected` type (the bytes after the 10-byte header).
    pub fn datum<'p>(
        &self,
        expected: RecordType,
        payload: &'p [u8],
    ) -> Result<&'p [u8], Rejection> {
        let found =
            codec::peek_type(payload).map_err(|e| Rejection::new(e.class(), e.to_string()))?;
        if found != expected {
            let e = codec::CodecError::WrongType { expected, found };
            return Err(Rejection::new(e.class(), e.to_string()));
        }
        Ok(&payload[10..])
    }

    /// Decode a record of a topic the platform itself produces (the
    /// alerter's maintenance alerts): no connector signs it, so there is no
    /// signature to check; the payload must still be a record of `expected`
    /// type. Never call this for a topic site connectors write to.
    pub fn check_internal(&self, expected: RecordType, payload: &[u8]) -> Result<Value, Rejection> {
        let (found, value) =
            codec::decode_value(payload).map_err(|e| Rejection::new(e.class(), e.to_string()))?;
        if found != expected {
            let e = codec::CodecError::WrongType { expected, found };
            return Err(Rejection::new(e.class(), e.to_string()));
        }
        Ok(value)
    }

    /// The signing time must be within the window around the reference time.
    fn check_time(&self, f: &SignatureFields, reference: ReferenceTime) -> Result<(), Rejection> {
        let diff = i128::from(f.ts) - i128::from(reference.ms);
        if diff.abs() <= i128::from(self.window_ms) {
            return Ok(());
        }
        let (class, relation) = if diff < 0 {
            ("stale_signature", "before")
        } else {
            ("clock_skew", "after")
        };
        Err(Rejection::new(
            class,
            format!(
                "signed at {} (ts {}), {} {relation} its {} {} ({} ms); the window is {}",
                fmt_ms(f.ts),
                f.ts,
                humantime::format_duration(Duration::from_millis(diff.unsigned_abs() as u64)),
                reference.name(),
                fmt_ms(reference.ms),
                reference.ms,
                humantime::format_duration(Duration::from_millis(self.window_ms as u64)),
            ),
        ))
    }
}

/// RFC 3339 text of a ms timestamp (the number itself when out of range).
pub(crate) fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A connector may only speak for itself: its key must not vouch for
/// records that claim to come from another connector (`record_connector` is
/// the record's `connector_id`).
pub(crate) fn connector_matches(
    signing_connector: &str,
    record_connector: Option<&str>,
) -> Result<(), Rejection> {
    if record_connector == Some(signing_connector) {
        return Ok(());
    }
    Err(Rejection::new(
        "connector_mismatch",
        format!("record's connector_id differs from the signing connector {signing_connector}"),
    ))
}

pub(crate) fn record_connector(value: &Value) -> Option<&str> {
    let Value::Record(fields) = value else {
        return None;
    };
    fields.iter().find_map(|(n, v)| match (n.as_str(), v) {
        ("connector_id", Value::String(s)) => Some(s.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_core::signing::*;
    use fleetpulse_core::{codec, samples};

    const SECRET: &[u8] = b"a-connector-secret-0001";

    /// Signing time of the records below, and the Kafka timestamp they get.
    const TS: i64 = 1_763_700_000_000;

    fn signed(
        topic: &str,
        payload: &[u8],
        connector: &str,
        secret: &[u8],
    ) -> Vec<(&'static str, Vec<u8>)> {
        signed_at(topic, payload, connector, secret, TS)
    }

    fn signed_at(
        topic: &str,
        payload: &[u8],
        connector: &str,
        secret: &[u8],
        ts: i64,
    ) -> Vec<(&'static str, Vec<u8>)> {
        let k = SigningKey::derive(secret, connector);
        let sig = k.sign(topic, b"dev-1", 5, ts, payload);
        vec![(HDR_SIG, sig.to_bytes().to_vec())]
    }

    fn check_at(
        v: &Verifier,
        topic: &str,
        t: RecordType,
        payload: &[u8],
        h: &[(&'static str, Vec<u8>)],
        reference: ReferenceTime,
    ) -> Result<RecordType, Rejection> {
        v.check(
            topic,
            t,
            b"dev-1",
            payload,
            h.iter().map(|(n, v)| (*n, Some(v.as_slice()))),
            reference,
        )
        .map(|v| v.record_type)
    }

    fn check(
        v: &Verifier,
        topic: &str,
        t: RecordType,
        payload: &[u8],
        h: &[(&'static str, Vec<u8>)],
    ) -> Result<RecordType, &'static str> {
        let reference = ReferenceTime::of(rdkafka::Timestamp::CreateTime(TS), TS + 3_600_000);
        check_at(v, topic, t, payload, h, reference).map_err(|r| r.class)
    }

    #[test]
    fn the_window_is_around_the_kafka_timestamp() {
        let v = Verifier::new([("conn-1", SECRET)]).with_window(Duration::from_secs(300));
        let st = RecordType::DeviceStatus;
        let status = codec::encode(&samples::device_status("S1")).unwrap();
        let at = |fp_ts: i64, kafka: rdkafka::Timestamp, now: i64| {
            let h = signed_at("t.status", &status, "conn-1", SECRET, fp_ts);
            check_at(
                &v,
                "t.status",
                st,
                &status,
                &h,
                ReferenceTime::of(kafka, now),
            )
        };
        let create = rdkafka::Timestamp::CreateTime;
        let day = 86_400_000;
        // A processor a day behind still accepts a record that was fresh in Kafka.
        assert_eq!(at(TS, create(TS + 1_000), TS + day), Ok(st));
        assert_eq!(at(TS, create(TS - 300_000), TS + day), Ok(st));
        assert_eq!(
            at(
                TS,
                rdkafka::Timestamp::LogAppendTime(TS + 299_999),
                TS + day
            ),
            Ok(st)
        );
        // 10 minutes older than its Kafka timestamp: stale; both times in the reason.
        let r = at(TS - 600_000, create(TS), TS + day).unwrap_err();
        assert_eq!(r.class, "stale_signature");
        assert!(
            r.reason.contains("10m before its Kafka CreateTime"),
            "{}",
            r.reason
        );
        assert!(
            r.reason.contains("2025-11-21T04:30:00.000Z"),
            "{}",
            r.reason
        );
        assert!(
            r.reason.contains("2025-11-21T04:40:00.000Z"),
            "{}",
            r.reason
        );
        assert!(
            r.reason.contains(&(TS - 600_000).to_string()),
            "{}",
            r.reason
        );
        // 10 minutes newer: the connector's clock is ahead.
        let r = at(TS + 600_000, create(TS), TS + day).unwrap_err();
        assert_eq!(r.class, "clock_skew");
        assert!(r.reason.contains("10m after"), "{}", r.reason);
        // No Kafka timestamp: the processor's clock decides.
        let none = rdkafka::Timestamp::NotAvailable;
        assert_eq!(at(TS, none, TS + 60_000), Ok(st));
        let r = at(TS, none, TS + day).unwrap_err();
        assert!(r.reason.contains("processor clock"), "{}", r.reason);
        assert_eq!(r.class, "stale_signature");
        // A Kafka timestamp from the future is capped at the processor's clock.
        let r = at(TS + day, create(TS + day), TS).unwrap_err();
        assert_eq!(r.class, "clock_skew");
        // A forged record is a bad signature, whatever its time.
        let mut h = signed_at("t.status", &status, "conn-1", SECRET, TS);
        h[0].1[17..25].copy_from_slice(&(TS - 600_000).to_be_bytes());
        let r = check_at(
            &v,
            "t.status",
            st,
            &status,
            &h,
            ReferenceTime::of(create(TS), TS),
        );
        assert_eq!(r.unwrap_err().class, "bad_signature");
    }

    #[test]
    fn classifies_every_failure() {
        let v = Verifier::new([("conn-1", SECRET), ("conn-2", SECRET)]);
        let st = RecordType::DeviceStatus;
        let status = codec::encode(&samples::device_status("S1")).unwrap();
        let hb = codec::encode(&samples::device_heartbeat("S1")).unwrap();

        let ok = signed("t.status", &status, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, &status, &ok), Ok(st));
        // Moved to another topic: the signature covers the topic.
        assert_eq!(check(&v, "t.other", st, &status, &ok), Err("bad_signature"));
        // A rotated-out secret: its key id is no configured connector's.
        let wrong_secret = signed("t.status", &status, "conn-1", b"another-secret-xxxxx");
        assert_eq!(
            check(&v, "t.status", st, &status, &wrong_secret),
            Err("unknown_connector")
        );
        // A forged MAC under a known key id.
        let mut forged = signed("t.status", &status, "conn-1", SECRET);
        forged[0].1[40] ^= 1;
        assert_eq!(
            check(&v, "t.status", st, &status, &forged),
            Err("bad_signature")
        );
        assert_eq!(
            check(&v, "t.status", st, &status, &[]),
            Err("missing_signature")
        );
        let unknown = signed("t.status", &status, "conn-9", SECRET);
        assert_eq!(
            check(&v, "t.status", st, &status, &unknown),
            Err("unknown_connector")
        );
        let wrong = signed("t.status", &hb, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, &hb, &wrong), Err("wrong_schema"));
        let junk = b"\x00\x01random bytes here";
        let h = signed("t.status", junk, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, junk, &h), Err("not_avro"));
        let mut unknown_fp = status.clone();
        unknown_fp[2] ^= 0xff;
        let h = signed("t.status", &unknown_fp, "conn-1", SECRET);
        assert_eq!(
            check(&v, "t.status", st, &unknown_fp, &h),
            Err("unknown_schema")
        );
        let truncated = &status[..status.len() - 3];
        let h = signed("t.status", truncated, "conn-1", SECRET);
        assert_eq!(check(&v, "t.status", st, truncated, &h), Err("bad_datum"));
        // conn-2 signs a record that claims to be from conn-1.
        let h = signed("t.status", &status, "conn-2", SECRET);
        assert_eq!(
            check(&v, "t.status", st, &status, &h),
            Err("connector_mismatch")
        );
    }
}
