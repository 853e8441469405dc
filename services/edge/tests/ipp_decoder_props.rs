//! Property tests of the IPP decoder: arbitrary and mutated bytes never
//! panic and always end in `Ok` or a typed error; well-formed messages
//! round-trip through encode/decode. 10 000 cases per property.

use fleetpulse_edge::ipp::codec::{decode, encode, tag, Attribute, Group, Limits, Message, Value};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// 10 000 cases; failures are saved next to this file (commit them).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/ipp_decoder_props.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(Value::Integer),
        any::<i32>().prop_map(Value::Enum),
        any::<bool>().prop_map(Value::Boolean),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::OctetString),
        any::<[u8; 11]>().prop_map(Value::DateTime),
        (any::<i32>(), any::<i32>(), any::<u8>()).prop_map(|(a, b, u)| Value::Resolution(a, b, u)),
        (any::<i32>(), any::<i32>()).prop_map(|(a, b)| Value::Range(a, b)),
        ("[a-z]{0,5}", "\\PC{0,20}").prop_map(|(l, t)| Value::WithLanguage(
            tag::TEXT_WITH_LANGUAGE,
            l,
            t
        )),
        (
            prop_oneof![
                Just(tag::TEXT),
                Just(tag::NAME),
                Just(tag::KEYWORD),
                Just(tag::URI)
            ],
            "\\PC{0,30}"
        )
            .prop_map(|(t, s)| Value::Str(t, s)),
        prop_oneof![
            Just(tag::UNSUPPORTED),
            Just(tag::UNKNOWN),
            Just(tag::NO_VALUE)
        ]
        .prop_map(Value::OutOfBand),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        proptest::collection::vec(
            ("[a-z-]{1,12}", proptest::collection::vec(inner, 1..3)),
            0..4,
        )
        .prop_map(|ms| {
            Value::Collection(ms.into_iter().map(|(n, v)| Attribute::new(n, v)).collect())
        })
    })
}

fn message() -> impl Strategy<Value = Message> {
    let attr = ("[a-z-]{1,20}", proptest::collection::vec(value(), 1..4))
        .prop_map(|(n, v)| Attribute::new(n, v));
    let group = (
        prop_oneof![Just(tag::OPERATION), Just(tag::PRINTER), Just(tag::JOB)],
        proptest::collection::vec(attr, 0..6),
    )
        .prop_map(|(t, a)| Group {
            tag: t,
            attributes: a,
        });
    (
        1u8..=2,
        0u8..=1,
        any::<u16>(),
        any::<i32>(),
        proptest::collection::vec(group, 0..4),
    )
        .prop_map(|(maj, min, code, request_id, groups)| Message {
            version: (maj, min),
            code,
            request_id,
            groups,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, Limits::default());
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let mut bytes = vec![2, 0, 0, 0, 0, 0, 0, 1, tag::PRINTER];
        bytes.extend_from_slice(&body);
        let _ = decode(&bytes, Limits { max_groups: 4, max_attributes: 16, max_values: 4, max_depth: 3 });
    }

    #[test]
    fn well_formed_messages_round_trip(m in message()) {
        let bytes = encode(&m).unwrap();
        prop_assert_eq!(decode(&bytes, Limits::default()).unwrap(), m);
    }

    #[test]
    fn mutated_messages_never_panic(
        m in message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&m).unwrap();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        if let Ok(back) = decode(&bytes, Limits::default()) {
            // Whatever decodes re-encodes without error.
            prop_assert!(encode(&back).is_ok());
        }
    }
}
