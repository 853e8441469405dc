use super::*;
use crate::privacy::keys::BenchmarkKey;

const JAN: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400_000;

fn key() -> BenchmarkKey {
    BenchmarkKey::new(b"bench-key-0123456789", "b1", KeyRotation::Monthly)
}

/// `per_tenant[i]` devices for tenant i in cell (model, region), values 1..
fn cohort(model: &str, region: &str, per_tenant: &[u32]) -> Vec<DeviceMonth> {
    let k = key();
    let mut out = Vec::new();
    let mut v = 0.0;
    for (t, n) in per_tenant.iter().enumerate() {
        for d in 0..*n {
            v += 1.0;
            out.push(DeviceMonth {
                identity: k.identify(
                    JAN + DAY,
                    &format!("tenant{t}"),
                    &format!("{model}-{region}-{t}-{d}"),
                ),
                model: model.into(),
                region: region.into(),
                month: month_of(JAN).unwrap(),
                metric: "pages".into(),
                value: v,
            });
        }
    }
    out
}

fn published(rows: &[BenchmarkRow], model: &str, region: &str) -> Option<BenchmarkRow> {
    rows.iter()
        .find(|r| r.model == model && r.region == region)
        .cloned()
}

fn no_margins() -> BenchmarkConfig {
    BenchmarkConfig {
        publish_margins: false,
        ..BenchmarkConfig::default()
    }
}

#[test]
fn k_minus_one_tenants_is_hidden_k_is_published() {
    let cfg = no_margins();
    let (rows, hidden) = cells(&cfg, &cohort("M1", "DE", &[1, 1, 1, 1]), 1);
    assert!(rows.is_empty());
    assert_eq!(hidden.values().next(), Some(&Suppression::Primary));

    let (rows, _) = cells(&cfg, &cohort("M1", "DE", &[1, 1, 1, 1, 1]), 1);
    let r = published(&rows, "M1", "DE").expect("5 tenants are enough");
    assert_eq!((r.n_devices, r.n_tenants), (5, 5));
    assert_eq!((r.p25, r.p50, r.p75), (2.0, 3.0, 4.0));
    assert_eq!(r.key_version, "b1@2026-01");
}

#[test]
fn exactly_sixty_percent_is_published_just_above_is_hidden() {
    let cfg = no_margins();
    // 60 of 100 devices: exactly 60 %.
    let (rows, _) = cells(&cfg, &cohort("M1", "DE", &[60, 10, 10, 10, 10]), 1);
    assert_eq!(published(&rows, "M1", "DE").map(|r| r.n_devices), Some(100));
    // 61 of 101 devices: 60.4 %.
    let (rows, hidden) = cells(&cfg, &cohort("M1", "DE", &[61, 10, 10, 10, 10]), 1);
    assert!(rows.is_empty());
    assert_eq!(hidden.len(), 1);
    // 3 of 5 (60 %) with 5 tenants is impossible, but 6 of 10 is.
    let (rows, _) = cells(&cfg, &cohort("M1", "DE", &[6, 1, 1, 1, 1]), 1);
    assert_eq!(rows.len(), 1);
    let (rows, _) = cells(&cfg, &cohort("M1", "DE", &[7, 1, 1, 1, 1]), 1);
    assert!(rows.is_empty(), "7 of 11 = 63.6 %");
}

/// The attack: a published margin minus the published cells of its line
/// gives the devices of the hidden cells of that line; with exactly one
/// hidden cell that is the hidden cell's own count.
fn recover(rows: &[BenchmarkRow], target: (&str, &str)) -> Vec<u32> {
    let mut found = Vec::new();
    for by_model in [true, false] {
        let line = if by_model { target.0 } else { target.1 };
        let margin = if by_model {
            published(rows, line, ALL)
        } else {
            published(rows, ALL, line)
        };
        let Some(margin) = margin else { continue };
        let members: u32 = rows
            .iter()
            .filter(|r| r.model != ALL && r.region != ALL)
            .filter(|r| {
                if by_model {
                    r.model == line
                } else {
                    r.region == line
                }
            })
            .map(|r| r.n_devices)
            .sum();
        found.push(margin.n_devices - members);
    }
    found
}

#[test]
fn a_hidden_cell_cannot_be_recovered_from_the_margins() {
    let cfg = BenchmarkConfig::default();
    let mut input = Vec::new();
    // M1 × DE has 4 tenants (hidden); every other cell is publishable.
    input.extend(cohort("M1", "DE", &[2, 1, 1, 1]));
    input.extend(cohort("M1", "FR", &[1, 1, 1, 1, 1]));
    input.extend(cohort("M1", "IT", &[2, 2, 1, 1, 1, 1]));
    input.extend(cohort("M2", "DE", &[1, 1, 1, 1, 1, 1]));
    input.extend(cohort("M2", "FR", &[3, 1, 1, 1, 1]));
    input.extend(cohort("M2", "IT", &[1, 1, 1, 1, 1, 2]));
    let truth = 5;

    // Without secondary suppression the attack works on both lines ...
    let (naive, _) = cells_with(&cfg, &input, 1, false);
    assert!(published(&naive, "M1", "DE").is_none());
    assert_eq!(recover(&naive, ("M1", "DE")), vec![truth, truth]);

    // ... with it, no line gives the hidden cell's count away.
    let (rows, hidden) = cells(&cfg, &input, 1);
    assert!(published(&rows, "M1", "DE").is_none());
    assert_eq!(hidden[&("M1".into(), "DE".into())], Suppression::Primary);
    let attempts = recover(&rows, ("M1", "DE"));
    assert!(
        !attempts.contains(&truth),
        "recovered from {attempts:?}: {rows:#?}"
    );
    assert!(hidden.values().any(|s| *s == Suppression::Secondary));
    // Every published margin line has 0 or >= 2 hidden interior cells.
    for (m, r) in hidden.keys().filter(|(m, r)| m != ALL && r != ALL) {
        for margin in [(m.as_str(), ALL), (ALL, r.as_str())] {
            if published(&rows, margin.0, margin.1).is_some() {
                let line_hidden = hidden
                    .keys()
                    .filter(|(hm, hr)| hm != ALL && hr != ALL)
                    .filter(|(hm, hr)| if margin.1 == ALL { hm == m } else { hr == r })
                    .count();
                assert!(line_hidden >= 2, "{margin:?} exposes a single hidden cell");
            }
        }
    }
    // The margins themselves are published and hold every device.
    assert_eq!(published(&rows, "M1", ALL).map(|r| r.n_devices), Some(18));
}

#[test]
fn a_single_cell_line_hides_its_margin_too() {
    let cfg = BenchmarkConfig::default();
    let mut input = cohort("M9", "DE", &[1, 1, 1, 1]);
    input.extend(cohort("M1", "DE", &[1, 1, 1, 1, 1]));
    let (rows, _) = cells(&cfg, &input, 1);
    assert!(published(&rows, "M9", "DE").is_none());
    assert!(published(&rows, "M9", ALL).is_none());
    // Region DE line: M9 hidden, M1 published, margin (*, DE) published
    // would expose M9 -> M1 × DE (or the margin) is hidden as well.
    let attempts = recover(&rows, ("M9", "DE"));
    assert!(!attempts.contains(&4), "{attempts:?}");
}

#[test]
fn months_publish_after_lateness_and_restate_with_a_higher_version() {
    let mut op = BenchmarkOperator::new(BenchmarkConfig::default(), DAY);
    for d in cohort("M1", "DE", &[1, 1, 1, 1, 1]) {
        op.add(d);
    }
    let feb = JAN + 31 * DAY;
    assert!(op.on_watermark(feb).is_empty(), "lateness not yet over");
    let v1 = op.on_watermark(feb + DAY);
    assert!(v1.iter().all(|r| r.version == 1) && !v1.is_empty());
    assert!(op.on_watermark(feb + 2 * DAY).is_empty(), "nothing new");
    let mut late = cohort("M1", "DE", &[0, 0, 0, 0, 0, 1]);
    late[0].value = 100.0;
    op.add(late.remove(0));
    let v2 = op.on_watermark(feb + 3 * DAY);
    let r = published(&v2, "M1", "DE").unwrap();
    assert_eq!((r.version, r.n_devices, r.n_tenants), (2, 6, 6));
}

#[test]
fn percentiles_interpolate_and_config_is_validated() {
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
    assert_eq!(percentile(&[10.0], 0.75), 10.0);
    assert!(percentile(&[], 0.5).is_nan());
    let mut c = BenchmarkConfig::default();
    c.validate().unwrap();
    c.pseudonym_rotation = KeyRotation::Never;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("benchmark.pseudonym_rotation"));
    c = BenchmarkConfig {
        max_tenant_share_pct: 0,
        ..BenchmarkConfig::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("benchmark.max_tenant_share_pct"));
}

mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 3000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Over random fleets: every published cell passes both primary
        /// rules, and no published margin leaves exactly one hidden cell in
        /// its line.
        #[test]
        fn published_cells_are_safe(
            devices in prop::collection::vec((0..8u8, 0..3u8, 0..3u8, 0.0..100.0f64), 0..60),
        ) {
            let k = key();
            let cfg = BenchmarkConfig::default();
            let input: Vec<DeviceMonth> = devices
                .iter()
                .enumerate()
                .map(|(i, (t, m, r, v))| DeviceMonth {
                    identity: k.identify(JAN, &format!("t{t}"), &format!("d{i}")),
                    model: format!("M{m}"),
                    region: format!("R{r}"),
                    month: month_of(JAN).unwrap(),
                    metric: "pages".into(),
                    value: *v,
                })
                .collect();
            let (rows, hidden) = cells(&cfg, &input, 1);
            let in_cell = |row_m: &str, row_r: &str, m: &str, r: &str| {
                (row_m == ALL || row_m == m) && (row_r == ALL || row_r == r)
            };
            for row in &rows {
                let mut per_tenant: BTreeMap<u8, u32> = BTreeMap::new();
                for (t, m, r, _) in &devices {
                    if in_cell(&row.model, &row.region, &format!("M{m}"), &format!("R{r}")) {
                        *per_tenant.entry(*t).or_insert(0) += 1;
                    }
                }
                let n: u32 = per_tenant.values().sum();
                prop_assert_eq!(row.n_devices, n);
                prop_assert!(per_tenant.len() >= 5);
                prop_assert!(per_tenant.values().max().unwrap() * 100 <= 60 * n);
                prop_assert!(row.p25 <= row.p50 && row.p50 <= row.p75);
            }
            let interior: BTreeSet<(String, String)> = devices
                .iter()
                .map(|(_, m, r, _)| (format!("M{m}"), format!("R{r}")))
                .collect();
            for row in rows.iter().filter(|r| r.model == ALL || r.region == ALL) {
                let line_hidden = interior
                    .iter()
                    .filter(|(m, r)| in_cell(&row.model, &row.region, m, r))
                    .filter(|c| hidden.contains_key(*c))
                    .count();
                prop_assert!(line_hidden != 1, "{:?} exposes one hidden cell", (&row.model, &row.region));
            }
        }
    }
}
