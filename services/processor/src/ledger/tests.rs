use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000;

fn reading(t: i64, id: &str, value: i64) -> CounterReading {
    CounterReading {
        tenant_id: "t1".into(),
        device_id: "d1".into(),
        serial: Some("S1".into()),
        counter: "marker1.impressions".into(),
        unit: "impressions".into(),
        observed_at: t,
        event_id: id.into(),
        value,
        mark: None,
    }
}

/// Feed readings; return the latest row per entry id.
fn run(ledger: &mut UsageLedger, input: Vec<CounterReading>) -> BTreeMap<String, LedgerRow> {
    let mut latest: BTreeMap<String, LedgerRow> = BTreeMap::new();
    for r in input {
        for row in ledger.on_reading(r).unwrap_or_default() {
            if let Some(old) = latest.get(&row.entry_id) {
                assert!(row.version > old.version, "{row:?} after {old:?}");
            }
            latest.insert(row.entry_id.clone(), row);
        }
    }
    latest
}

fn per_period(rows: &BTreeMap<String, LedgerRow>) -> BTreeMap<NaiveDate, i64> {
    let mut out = BTreeMap::new();
    for r in rows.values() {
        *out.entry(r.period_start).or_insert(0) += r.quantity;
    }
    out.retain(|_, q| *q != 0);
    out
}

fn jan(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, day).unwrap()
}

#[test]
fn wraps_at_each_counter_width_and_counts_across() {
    for m in [1u64 << 32, 1_000_000, 1 << 24] {
        let m = m as i64;
        let mut l = UsageLedger::new(LedgerConfig::default());
        let rows = run(
            &mut l,
            vec![
                reading(T0, "a", m - 10),
                reading(T0 + 1000, "b", 5),
                reading(T0 + 2000, "c", 25),
            ],
        );
        let row = rows.values().next().unwrap();
        assert_eq!((row.quantity, row.wraps, row.resets), (35, 1, 0), "m={m}");
    }
}

#[test]
fn a_drop_far_from_a_wrap_point_is_a_reset_counted_from_zero() {
    let mut l = UsageLedger::new(LedgerConfig::default());
    let rows = run(
        &mut l,
        vec![
            reading(T0, "a", 500_000),
            reading(T0 + 1000, "b", 500_100),
            reading(T0 + 2000, "c", 40),
        ],
    );
    let row = rows.values().next().unwrap();
    assert_eq!((row.quantity, row.wraps, row.resets), (140, 0, 1));
}

#[test]
fn edge_marks_decide_ambiguous_drops() {
    // 999,990 -> 5: a wrap by the numbers (15), but the edge says reset (5).
    let mut l = UsageLedger::new(LedgerConfig::default());
    let mut b = reading(T0 + 1000, "b", 5);
    b.mark = Some(CounterMark::Reset);
    let rows = run(&mut l, vec![reading(T0, "a", 999_990), b]);
    assert_eq!(rows.values().next().unwrap().quantity, 5);
    // 100 -> 50 marked wrapped: smallest wrap point above 100 is 10^6.
    let mut l = UsageLedger::new(LedgerConfig::default());
    let mut b = reading(T0 + 1000, "b", 50);
    b.mark = Some(CounterMark::Wrapped);
    let rows = run(&mut l, vec![reading(T0, "a", 100), b]);
    assert_eq!(rows.values().next().unwrap().quantity, 1_000_000 - 100 + 50);
}

#[test]
fn a_new_serial_is_a_new_baseline_even_when_its_counter_is_higher() {
    let mut l = UsageLedger::new(LedgerConfig::default());
    let mut c = reading(T0 + 2000, "c", 90_000);
    c.serial = Some("S2".into());
    let mut d = reading(T0 + 3000, "d", 90_007);
    d.serial = Some("S2".into());
    let rows = run(
        &mut l,
        vec![reading(T0, "a", 100), reading(T0 + 1000, "b", 130), c, d],
    );
    let row = rows.values().next().unwrap();
    assert_eq!((row.quantity, row.swaps), (37, 1));
}

#[test]
fn usage_across_a_gap_goes_to_the_period_of_the_later_reading() {
    let mut l = UsageLedger::new(LedgerConfig::default());
    let rows = run(
        &mut l,
        vec![
            reading(T0 + 10 * DAY, "a", 100),
            reading(T0 + 20 * DAY, "b", 150),
            // 40 days later: March 1st.
            reading(T0 + 59 * DAY, "c", 1150),
        ],
    );
    let p = per_period(&rows);
    assert_eq!(p.get(&jan(1)), Some(&50));
    assert_eq!(
        p.get(&NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()),
        Some(&1000)
    );
    assert_eq!(p.len(), 2, "no figure for February, which had no reading");
}

#[test]
fn late_readings_restate_with_a_higher_version_and_replays_change_nothing() {
    let mut l = UsageLedger::new(LedgerConfig::default());
    let a = reading(T0 + DAY, "a", 100);
    let c = reading(T0 + 40 * DAY, "c", 400);
    let b = reading(T0 + 20 * DAY, "b", 250);
    let first = l.on_reading(a.clone()).unwrap();
    assert_eq!(first[0].quantity, 0);
    let feb = l.on_reading(c.clone()).unwrap();
    assert_eq!((feb[0].quantity, feb[0].version), (300, 2));
    // The late January reading moves 150 into January and restates February.
    let restated = l.on_reading(b.clone()).unwrap();
    let by_period: BTreeMap<_, _> = restated
        .iter()
        .map(|r| (r.period_start, (r.quantity, r.version)))
        .collect();
    assert_eq!(by_period[&jan(1)], (150, 3));
    assert_eq!(
        by_period[&NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()],
        (150, 3)
    );
    assert_eq!(
        restated[0].entry_id,
        entry_id("t1", "d1", "marker1.impressions", restated[0].period_start)
    );
    for r in [a, b, c] {
        assert_eq!(l.on_reading(r), Err(Refused::Duplicate));
    }
}

#[test]
fn closing_periods_keeps_an_anchor_refuses_older_readings_and_keeps_totals() {
    let mut l = UsageLedger::new(LedgerConfig::default());
    let mut all = BTreeMap::new();
    for (i, d) in [1, 5, 9, 20, 30].iter().enumerate() {
        all.extend(run(
            &mut l,
            vec![reading(
                T0 + d * DAY,
                &format!("e{i}"),
                100 * (i as i64 + 1),
            )],
        ));
    }
    assert_eq!(l.readings_held(), 5);
    l.close_before(T0 + 33 * DAY); // closes January
    assert_eq!(l.readings_held(), 1, "only the anchor remains");
    assert_eq!(
        l.on_reading(reading(T0 + 31 * DAY - 1, "late", 480)),
        Err(Refused::Late)
    );
    all.extend(run(&mut l, vec![reading(T0 + 40 * DAY, "f", 900)]));
    let p = per_period(&all);
    assert_eq!(p[&jan(1)], 400);
    assert_eq!(p[&NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()], 400);
}

#[test]
fn invalid_input_is_refused_not_a_panic() {
    let mut l = UsageLedger::new(LedgerConfig::default());
    assert_eq!(l.on_reading(reading(T0, "a", -1)), Err(Refused::Invalid));
    assert_eq!(
        l.on_reading(reading(i64::MAX, "b", 1)),
        Err(Refused::Invalid)
    );
    l.on_reading(reading(T0, "c", i64::MAX)).unwrap();
    let rows = l.on_reading(reading(T0 + 1, "d", 0)).unwrap();
    assert_eq!(rows[0].resets, 1);
}

#[test]
fn config_validation_names_the_key() {
    let mut c = LedgerConfig::default();
    c.validate("ledger.").unwrap();
    c.max_delta = 0;
    assert!(c
        .validate("ledger.")
        .unwrap_err()
        .to_string()
        .contains("ledger.max_delta"));
    c.max_delta = 2_000_000;
    assert!(c
        .validate("ledger.")
        .unwrap_err()
        .to_string()
        .contains("ledger.wrap_moduli"));
    assert_eq!(
        ContractPeriod::Quarterly.start_of(T0 + 100 * DAY),
        NaiveDate::from_ymd_opt(2026, 4, 1)
    );
}

// ---------------------------------------------------------------------------
// Property test: billed == true usage over generated counter sequences.

const MODULI: [u64; 3] = [1 << 32, 1_000_000, 1 << 24];
const MAX_DELTA: u64 = 100_000;

#[derive(Debug, Clone)]
enum Op {
    /// Print this many units.
    Use(u64),
    /// Reset the counter, then print `x % value` units (so the drop shows).
    Reset(u64),
    /// Another device (counter at `x % modulus`) replaces this one.
    Swap(u64),
}

#[derive(Debug, Clone)]
struct Case {
    modulus: u64,
    start: u64,
    ops: Vec<(Op, i64, bool)>,
    /// Per reading: 0 = once, 1 = twice (same id), 2 = resent with a new id.
    dups: Vec<u8>,
    order: Vec<u32>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..=MAX_DELTA).prop_map(Op::Use),
        1 => any::<u64>().prop_map(Op::Reset),
        1 => any::<u64>().prop_map(Op::Swap),
    ]
}

fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => 1..3_600_000i64,
        1 => DAY..70 * DAY,
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(MODULI.to_vec()),
        any::<bool>(),
        0..300_000u64,
        prop::collection::vec((op(), gap(), any::<bool>()), 0..16),
        prop::collection::vec(0..4u8, 17),
        prop::collection::vec(any::<u32>(), 34),
    )
        .prop_map(|(modulus, near_top, off, ops, dups, order)| Case {
            modulus,
            start: if near_top {
                modulus - 1 - off.min(modulus - 1)
            } else {
                (off * 7919) % modulus
            },
            ops,
            dups,
            order,
        })
}

/// Build the readings (in true order) and the true usage per period.
fn simulate(c: &Case, period: ContractPeriod) -> (Vec<CounterReading>, BTreeMap<NaiveDate, i64>) {
    let mut truth: BTreeMap<NaiveDate, i64> = BTreeMap::new();
    let mut t = T0 + (c.start % 1000) as i64 * 3_600_000;
    let mut v = c.start;
    let mut serial = 0u32;
    let mk = |t: i64, i: usize, v: u64, serial: u32, mark| CounterReading {
        serial: Some(format!("S{serial}")),
        mark,
        ..reading(t, &format!("e{i:03}"), v as i64)
    };
    let mut out = vec![mk(t, 0, v, serial, None)];
    for (i, (op, gap, flag)) in c.ops.iter().enumerate() {
        t += gap;
        let (next, used, mark) = match *op {
            Op::Use(n) => {
                let raw = v + n;
                if raw >= c.modulus {
                    (raw - c.modulus, n, flag.then_some(CounterMark::Wrapped))
                } else {
                    (raw, n, None)
                }
            }
            Op::Reset(_) if v == 0 => (0, 0, None),
            Op::Reset(x) => {
                let u = x % v;
                // Indistinguishable from a wrap by the numbers: the edge
                // must say so (otherwise nobody can know).
                let ambiguous = MODULI
                    .iter()
                    .any(|m| *m > v && u < *m && m - v + u <= MAX_DELTA);
                let mark = (ambiguous || *flag).then_some(CounterMark::Reset);
                (u, u, mark)
            }
            Op::Swap(x) => {
                serial += 1;
                (x % c.modulus, 0, None)
            }
        };
        v = next;
        *truth.entry(period.start_of(t).unwrap()).or_insert(0) += used as i64;
        out.push(mk(t, i + 1, v, serial, mark));
    }
    truth.retain(|_, q| *q != 0);
    (out, truth)
}

/// Duplicate and shuffle the readings as a real transport would.
fn deliver(c: &Case, readings: &[CounterReading]) -> Vec<CounterReading> {
    let mut out = Vec::new();
    for (i, r) in readings.iter().enumerate() {
        out.push(r.clone());
        match c.dups[i % c.dups.len()] {
            1 => out.push(r.clone()),
            2 => out.push(CounterReading {
                event_id: format!("{}-resent", r.event_id),
                ..r.clone()
            }),
            _ => {}
        }
    }
    let mut keyed: Vec<(u32, CounterReading)> = out
        .into_iter()
        .enumerate()
        .map(|(i, r)| (c.order[i % c.order.len()], r))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, r)| r).collect()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn billed_equals_true_usage(c in case()) {
        let cfg = LedgerConfig::default();
        let (readings, truth) = simulate(&c, cfg.period);
        let delivered = deliver(&c, &readings);

        let mut ledger = UsageLedger::new(cfg.clone());
        let mut emitted = Vec::new();
        for r in delivered.clone() {
            emitted.extend(ledger.on_reading(r).unwrap_or_default());
        }
        let mut latest: BTreeMap<String, LedgerRow> = BTreeMap::new();
        for row in &emitted {
            if let Some(old) = latest.get(&row.entry_id) {
                prop_assert!(row.version > old.version);
            }
            latest.insert(row.entry_id.clone(), row.clone());
        }
        let billed = per_period(&latest);
        prop_assert_eq!(&billed, &truth);
        prop_assert_eq!(billed.values().sum::<i64>(), truth.values().sum::<i64>());

        // A replay into a fresh ledger yields identical rows ...
        let mut again = UsageLedger::new(cfg);
        let mut replayed = Vec::new();
        for r in delivered.clone() {
            replayed.extend(again.on_reading(r).unwrap_or_default());
        }
        prop_assert_eq!(&replayed, &emitted);
        // ... and a replay into the same ledger adds nothing.
        for r in delivered {
            prop_assert_eq!(ledger.on_reading(r), Err(Refused::Duplicate));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases() / 10,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Compaction: close the periods before the first part's last reading,
    /// then deliver the rest; totals per period still hold and memory holds
    /// no reading of a closed period but the anchor.
    #[test]
    fn billed_equals_true_usage_across_compaction(c in case(), split in any::<prop::sample::Index>()) {
        let cfg = LedgerConfig::default();
        let (readings, truth) = simulate(&c, cfg.period);
        let k = split.index(readings.len()) + 1;
        let (first, rest) = readings.split_at(k);
        let mut ledger = UsageLedger::new(cfg);
        let mut latest: BTreeMap<String, LedgerRow> = BTreeMap::new();
        let mut feed = |ledger: &mut UsageLedger, part: Vec<CounterReading>| {
            for r in part {
                for row in ledger.on_reading(r).unwrap_or_default() {
                    latest.insert(row.entry_id.clone(), row);
                }
            }
        };
        let delivered = deliver(&c, first);
        feed(&mut ledger, delivered.clone());
        let horizon = first[k - 1].observed_at;
        ledger.close_before(horizon);
        let open_start = ContractPeriod::Monthly.start_of(horizon).unwrap();
        let open: std::collections::BTreeSet<&str> = delivered
            .iter()
            .filter(|r| ContractPeriod::Monthly.start_of(r.observed_at).unwrap() >= open_start)
            .map(|r| r.event_id.as_str())
            .collect();
        prop_assert!(ledger.readings_held() <= open.len() + 1);
        feed(&mut ledger, deliver(&c, rest));
        prop_assert_eq!(per_period(&latest), truth);
    }
}
