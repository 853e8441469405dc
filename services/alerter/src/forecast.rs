//! Depletion forecast of one consumable: pure arithmetic, no I/O, no clock.
//!
//! Everything is expressed as *remaining* capacity in percent so that
//! consumables (toner drains towards 0) and waste receptacles (fill towards
//! 100) share one code path: for waste, remaining = 100 − level. A
//! replacement is then always a jump *up* of the remaining capacity (new
//! cartridge, emptied waste box), and the forecast is always "days until
//! remaining reaches 0".

use std::collections::VecDeque;

const MILLIS_PER_DAY: f64 = 86_400_000.0;

/// Hard cap on readings per consumable, whatever the window: a device polled
/// every second for a day must not grow the alerter without bound.
const MAX_POINTS: usize = 10_000;

/// The parameters of the forecast, taken from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ForecastParams {
    /// Event-time span kept, milliseconds.
    pub(crate) window_ms: i64,
    /// Fewest readings for a forecast (and fewest kept when trimming).
    pub(crate) min_points: usize,
    /// Shortest event-time span of the kept readings for a forecast, milliseconds.
    pub(crate) min_span_ms: i64,
    /// A rise of the remaining level by more than this is a replacement.
    pub(crate) replacement_jump_pct: f64,
}

/// One reading: event time and remaining capacity in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    t_ms: i64,
    remaining: f64,
}

/// What a new reading did to the history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Observed {
    /// Added to the history.
    Recorded,
    /// The remaining level jumped up: the history was reset to this reading.
    Replaced,
    /// Not newer than the last reading (duplicate or out of order): ignored,
    /// because a least-squares line over reordered points would mix two
    /// cartridges when a replacement happened in between.
    Stale,
}

/// The outcome of a forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Forecast {
    /// Too few readings, or they span too short a time.
    NotEnoughData,
    /// The remaining level is flat or rising.
    NotDepleting,
    /// At the fitted rate, remaining reaches 0 in `days`.
    Depleting {
        /// Days until empty (or full, for waste).
        days: f64,
        /// Fitted slope, remaining percentage points per day (negative).
        slope_per_day: f64,
    },
}

/// Readings of one consumable (one supply index of one device).
#[derive(Debug, Clone)]
pub(crate) struct SupplyHistory {
    waste: bool,
    points: VecDeque<Point>,
}

impl SupplyHistory {
    /// An empty history; `waste` when the receptacle fills instead of drains.
    pub(crate) fn new(waste: bool) -> Self {
        SupplyHistory {
            waste,
            points: VecDeque::new(),
        }
    }

    /// Whether this is a waste receptacle.
    pub(crate) fn is_waste(&self) -> bool {
        self.waste
    }

    /// Number of readings kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// Remaining capacity of a reported level.
    fn remaining_of(&self, level_pct: f64) -> f64 {
        if self.waste {
            100.0 - level_pct
        } else {
            level_pct
        }
    }

    /// Add a reading of `level_pct` (the device's own level: fill level for
    /// waste) observed at `t_ms` (event time).
    pub(crate) fn observe(&mut self, t_ms: i64, level_pct: f64, p: &ForecastParams) -> Observed {
        let remaining = self.remaining_of(level_pct);
        let point = Point { t_ms, remaining };
        let Some(last) = self.points.back().copied() else {
            self.points.push_back(point);
            return Observed::Recorded;
        };
        if t_ms <= last.t_ms {
            return Observed::Stale;
        }
        if remaining - last.remaining > p.replacement_jump_pct {
            self.points.clear();
            self.points.push_back(point);
            return Observed::Replaced;
        }
        self.points.push_back(point);
        // Trim to the window, but never below min_points: a device polled
        // rarely still gets a forecast from its last few readings.
        let oldest_kept = t_ms.saturating_sub(p.window_ms);
        while self.points.len() > p.min_points
            && self.points.front().is_some_and(|f| f.t_ms < oldest_kept)
        {
            self.points.pop_front();
        }
        while self.points.len() > MAX_POINTS {
            self.points.pop_front();
        }
        Observed::Recorded
    }

    /// Forecast from the kept readings by ordinary least squares.
    pub(crate) fn forecast(&self, p: &ForecastParams) -> Forecast {
        let (Some(first), Some(last)) = (self.points.front(), self.points.back()) else {
            return Forecast::NotEnoughData;
        };
        if self.points.len() < p.min_points.max(2) || last.t_ms - first.t_ms < p.min_span_ms {
            return Forecast::NotEnoughData;
        }
        // x in days since the first reading keeps the sums well conditioned.
        let xy: Vec<(f64, f64)> = self
            .points
            .iter()
            .map(|q| ((q.t_ms - first.t_ms) as f64 / MILLIS_PER_DAY, q.remaining))
            .collect();
        let Some(slope) = ols_slope(&xy) else {
            return Forecast::NotEnoughData;
        };
        if slope >= 0.0 {
            return Forecast::NotDepleting;
        }
        Forecast::Depleting {
            days: last.remaining.max(0.0) / -slope,
            slope_per_day: slope,
        }
    }
}

/// Ordinary least-squares slope of `y` over `x`; `None` when all `x` are equal
/// or the data is not finite.
pub(crate) fn ols_slope(xy: &[(f64, f64)]) -> Option<f64> {
    if xy.len() < 2 {
        return None;
    }
    let n = xy.len() as f64;
    let mean_x = xy.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = xy.iter().map(|(_, y)| y).sum::<f64>() / n;
    let (sxy, sxx) = xy.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        let dx = x - mean_x;
        (sxy + dx * (y - mean_y), sxx + dx * dx)
    });
    let slope = sxy / sxx;
    (sxx > 0.0 && slope.is_finite()).then_some(slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn params() -> ForecastParams {
        ForecastParams {
            window_ms: 24 * H,
            min_points: 4,
            min_span_ms: H,
            replacement_jump_pct: 20.0,
        }
    }

    fn feed(h: &mut SupplyHistory, pts: &[(i64, f64)]) -> Vec<Observed> {
        pts.iter()
            .map(|(t, l)| h.observe(*t, *l, &params()))
            .collect()
    }

    #[test]
    fn least_squares_recovers_an_exact_line() {
        assert_eq!(ols_slope(&[(0.0, 3.0), (1.0, 5.0), (2.0, 7.0)]), Some(2.0));
        assert_eq!(
            ols_slope(&[(0.0, 80.0), (0.25, 77.5), (0.5, 75.0), (0.75, 72.5)]),
            Some(-10.0)
        );
        assert_eq!(
            ols_slope(&[(1.0, 3.0), (1.0, 5.0)]),
            None,
            "vertical data has no slope"
        );
    }

    #[test]
    fn least_squares_averages_noise() {
        // Noisy readings around y = 50 - 4x: Sxy = -22, Sxx = 5.
        let slope = ols_slope(&[(0.0, 51.0), (1.0, 45.0), (2.0, 43.0), (3.0, 37.0)]).unwrap();
        assert!((slope - (-4.4)).abs() < 1e-12, "{slope}");
    }

    #[test]
    fn draining_toner_days_to_empty() {
        let mut h = SupplyHistory::new(false);
        // Loses 10 points per day: 80 → 72.5 over 18 hours.
        feed(
            &mut h,
            &[(0, 80.0), (6 * H, 77.5), (12 * H, 75.0), (18 * H, 72.5)],
        );
        match h.forecast(&params()) {
            Forecast::Depleting {
                days,
                slope_per_day,
            } => {
                assert!((slope_per_day + 10.0).abs() < 1e-9, "{slope_per_day}");
                assert!((days - 7.25).abs() < 1e-9, "{days}");
            }
            other => panic!("expected a forecast, got {other:?}"),
        }
    }

    #[test]
    fn flat_level_is_not_depleting() {
        let mut h = SupplyHistory::new(false);
        feed(
            &mut h,
            &[(0, 40.0), (H, 40.0), (2 * H, 40.0), (3 * H, 40.0)],
        );
        assert_eq!(h.forecast(&params()), Forecast::NotDepleting);
    }

    #[test]
    fn needs_min_points_and_min_span() {
        let mut h = SupplyHistory::new(false);
        feed(&mut h, &[(0, 50.0), (H, 40.0), (2 * H, 30.0)]);
        assert_eq!(
            h.forecast(&params()),
            Forecast::NotEnoughData,
            "3 < min_points"
        );
        feed(&mut h, &[(3 * H, 20.0)]);
        assert!(matches!(h.forecast(&params()), Forecast::Depleting { .. }));

        // Four readings a minute apart: the span is too short to trust.
        let mut quick = SupplyHistory::new(false);
        feed(
            &mut quick,
            &[(0, 50.0), (60_000, 49.0), (120_000, 49.0), (180_000, 48.0)],
        );
        assert_eq!(quick.forecast(&params()), Forecast::NotEnoughData);
    }

    #[test]
    fn replacement_resets_history() {
        let mut h = SupplyHistory::new(false);
        let seen = feed(
            &mut h,
            &[
                (0, 30.0),
                (H, 20.0),
                (2 * H, 10.0),
                (3 * H, 5.0),
                (4 * H, 100.0),
            ],
        );
        assert_eq!(seen.last(), Some(&Observed::Replaced));
        assert_eq!(h.len(), 1);
        assert_eq!(h.forecast(&params()), Forecast::NotEnoughData);
        // A rise below the jump threshold is noise, not a replacement.
        let mut n = SupplyHistory::new(false);
        let seen = feed(&mut n, &[(0, 30.0), (H, 45.0)]);
        assert_eq!(seen, vec![Observed::Recorded, Observed::Recorded]);
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn waste_receptacle_forecasts_days_until_full() {
        let mut h = SupplyHistory::new(true);
        assert!(h.is_waste());
        // Fills 20 points per day; at 65% it has 35 points left → 1.75 days.
        feed(
            &mut h,
            &[(0, 50.0), (6 * H, 55.0), (12 * H, 60.0), (18 * H, 65.0)],
        );
        match h.forecast(&params()) {
            Forecast::Depleting { days, .. } => assert!((days - 1.75).abs() < 1e-9, "{days}"),
            other => panic!("expected a forecast, got {other:?}"),
        }
        // Emptying the waste box (level drops) is its replacement.
        assert_eq!(h.observe(19 * H, 3.0, &params()), Observed::Replaced);
    }

    #[test]
    fn window_trims_old_points_but_keeps_min_points() {
        let mut h = SupplyHistory::new(false);
        // 10 readings 6h apart: 54h. A 24h window keeps t >= 30h: 30,36,42,48,54.
        let pts: Vec<(i64, f64)> = (0..10).map(|i| (i * 6 * H, 90.0 - i as f64)).collect();
        feed(&mut h, &pts);
        assert_eq!(h.len(), 5);

        // Sparse readings (2 days apart) keep min_points even outside the window.
        let mut sparse = SupplyHistory::new(false);
        let pts: Vec<(i64, f64)> = (0..6)
            .map(|i| (i * 48 * H, 90.0 - 5.0 * i as f64))
            .collect();
        feed(&mut sparse, &pts);
        assert_eq!(sparse.len(), 4);
        assert!(matches!(
            sparse.forecast(&params()),
            Forecast::Depleting { .. }
        ));
    }

    #[test]
    fn stale_readings_are_ignored() {
        let mut h = SupplyHistory::new(false);
        feed(&mut h, &[(0, 50.0), (2 * H, 40.0)]);
        assert_eq!(h.observe(H, 45.0, &params()), Observed::Stale);
        assert_eq!(h.observe(2 * H, 40.0, &params()), Observed::Stale);
        assert_eq!(h.len(), 2);
    }
}
