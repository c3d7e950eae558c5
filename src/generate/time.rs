//! Time units and how a shop's activity spreads over a period: growth, weekdays, peak days, hours.

use crate::datetime::{civil_from_days, format_micros, NANOS_PER_DAY};

pub(super) fn micros(nanos: i128) -> i64 {
    (nanos / 1000) as i64
}

pub(super) fn iso(nanos: i128) -> String {
    let s = format_micros(nanos);
    format!("{}T{}Z", &s[..10], &s[11..19])
}

/// Nanoseconds per microsecond, second, minute and hour.
pub(super) const MICRO: i128 = 1_000;
pub(super) const SECOND: i128 = 1_000_000_000;
pub(super) const MINUTE: i128 = 60 * SECOND;
const HOUR: i128 = 3_600 * SECOND;
/// The largest `f64` below 1 that locating a quantile returns.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON;
/// Growth over a period: its last day is this much busier than its first (+50%).
const GROWTH: f64 = 0.5;
/// Weights of Monday to Sunday: weekends are the busiest days.
const WEEKDAY: [f64; 7] = [1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.25];
/// Weights of the hours of the day (UTC): quiet nights (under 3% of the day between 01:00 and
/// 06:00), a lunchtime peak and a larger evening one.
const HOURLY: [f64; 24] = [
    1.2, 0.6, 0.35, 0.25, 0.25, 0.4, 0.9, 1.6, 2.4, 3.0, 3.4, 3.9, 4.5, 4.2, 3.6, 3.4, 3.5, 3.9,
    4.4, 5.0, 5.4, 4.8, 3.4, 2.0,
];
/// Salts of the stable draws that place keys in time: orders, the first version of other
/// entities, customers' sign-ups, order lines' and payments' delays after their order.
pub(super) const T_ORDER: u64 = 0x7101;
pub(super) const T_FIRST: u64 = 0x7102;
pub(super) const T_SIGNUP: u64 = 0x7103;
pub(super) const T_AFTER: u64 = 0x7104;

/// The weekday of a day since 1970-01-01 (a Thursday), Monday being 0.
fn weekday_of(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// The weight of a peak day, replacing its weekday's: Black Friday (the day after the fourth
/// Thursday of November) ×4, the weekend after it, Cyber Monday ×3.5, the last week of
/// Christmas shopping (15 to 22 December) ×3, 23 and 24 December ×2, a quiet Christmas Day.
fn peak(month: u32, date: u32, weekday: usize) -> Option<f64> {
    // The fourth Thursday of November is the 22nd to the 28th, so Black Friday is the Friday
    // 0 to 6 days after 23 November, and the days after it follow in the same way.
    let since_23_nov = match month {
        11 => i64::from(date) - 23,
        12 => i64::from(date) + 7,
        _ => -1,
    };
    let after_friday = (weekday as i64 + 3) % 7; // Friday 0, Saturday 1, Sunday 2, Monday 3
    if (after_friday..=after_friday + 6).contains(&since_23_nov) {
        match after_friday {
            0 => return Some(4.0),
            1 => return Some(2.5),
            2 => return Some(2.2),
            3 => return Some(3.5),
            _ => {}
        }
    }
    match (month, date) {
        (12, 15..=22) => Some(3.0),
        (12, 23 | 24) => Some(2.0),
        (12, 25) => Some(0.6),
        _ => None,
    }
}

/// The relative activity of `day` (days since 1970-01-01), `i` days into a period of `n`:
/// linear growth by [`GROWTH`] over the period times the weekday's or the peak day's weight.
fn day_weight(day: i64, i: u32, n: u32) -> f64 {
    let growth = 1.0 + GROWTH * f64::from(i) / f64::from(n.saturating_sub(1).max(1));
    let (_, month, date) = civil_from_days(day);
    let weekday = weekday_of(day);
    growth * peak(month, date, weekday).unwrap_or(WEEKDAY[weekday])
}

/// The inverse of a cumulative distribution over buckets of positive weights, with a guide
/// table (Chen and Asau) so that a lookup takes one or two steps.
struct Cdf {
    /// `cum[i]`: the share of buckets `0..=i`; the last is 1.
    cum: Vec<f64>,
    /// `guide[j]`: the first bucket whose `cum` exceeds `j / guide.len()`.
    guide: Vec<u32>,
}

impl Cdf {
    /// `weights` must be non-empty and positive.
    fn new(weights: &[f64]) -> Cdf {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cum: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w;
                acc / total
            })
            .collect();
        if let Some(last) = cum.last_mut() {
            *last = 1.0;
        }
        let n = cum.len();
        let mut guide = Vec::with_capacity(n);
        let mut i = 0;
        for j in 0..n {
            while i + 1 < n && cum[i] <= j as f64 / n as f64 {
                i += 1;
            }
            guide.push(i as u32);
        }
        Cdf { cum, guide }
    }

    /// The bucket holding quantile `q` (in `[0, 1)`) and where in the bucket `q` falls, in
    /// `[0, 1)`: monotonic in `q`.
    fn locate(&self, q: f64) -> (usize, f64) {
        let n = self.cum.len();
        let mut i = self.guide[((q * n as f64) as usize).min(n - 1)] as usize;
        while i + 1 < n && self.cum[i] <= q {
            i += 1;
        }
        let lo = if i == 0 { 0.0 } else { self.cum[i - 1] };
        let within = (q - lo) / (self.cum[i] - lo);
        (i, within.clamp(0.0, BELOW_ONE))
    }
}

/// A period of whole UTC days and how a shop's activity spreads over it: per-day weights
/// ([`day_weight`]: growth, weekday, peak days), then per-hour weights within a day
/// ([`HOURLY`]), then uniform within the hour.
pub(super) struct Calendar {
    first_day: i64,
    days: Cdf,
    hours: Cdf,
}

impl Calendar {
    /// The `days` days (at least one) from `first_day` (days since 1970-01-01).
    pub(super) fn new(first_day: i64, days: u32) -> Calendar {
        let weights: Vec<f64> = (0..days.max(1))
            .map(|i| day_weight(first_day + i64::from(i), i, days))
            .collect();
        Calendar {
            first_day,
            days: Cdf::new(&weights),
            hours: Cdf::new(&HOURLY),
        }
    }

    /// The instant (nanoseconds since the epoch, whole microseconds) at quantile `q` (in
    /// `[0, 1)`) of the period's activity. Monotonic in `q`, so keys spread in key order are
    /// in time order.
    pub(super) fn at(&self, q: f64) -> i128 {
        let (day, q) = self.days.locate(q);
        let (hour, q) = self.hours.locate(q);
        let micros = (q * 3_600_000_000.0) as i128;
        (i128::from(self.first_day) + day as i128) * NANOS_PER_DAY
            + hour as i128 * HOUR
            + micros * MICRO
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datetime::days_from_civil;
    use crate::generate::DEFAULT_END_DAY;

    #[test]
    fn peak_days_fall_on_their_dates() {
        let weight = |y, m, d| {
            let day = days_from_civil(y, m, d);
            peak(m, d, weekday_of(day))
        };
        // Black Friday, then its weekend and Cyber Monday, in three years.
        for (y, m, d) in [(2023, 11, 24), (2024, 11, 29), (2025, 11, 28)] {
            assert_eq!(weight(y, m, d), Some(4.0), "{y}-{m}-{d}");
        }
        assert_eq!(weight(2024, 11, 30), Some(2.5));
        assert_eq!(weight(2024, 12, 1), Some(2.2));
        for (y, m, d) in [(2023, 11, 27), (2024, 12, 2), (2025, 12, 1)] {
            assert_eq!(weight(y, m, d), Some(3.5), "{y}-{m}-{d}");
        }
        // The Friday a week earlier and the Thursday (Thanksgiving) are ordinary days.
        assert_eq!(weight(2024, 11, 22), None);
        assert_eq!(weight(2024, 11, 28), None);
        assert_eq!(weight(2024, 12, 9), None);
        assert_eq!(weight(2024, 12, 18), Some(3.0));
        assert_eq!(weight(2024, 12, 25), Some(0.6));
        assert_eq!(weight(2024, 7, 5), None);
        // 2025-01-16 was a Thursday.
        assert_eq!(weekday_of(DEFAULT_END_DAY), 3);
    }

    #[test]
    fn inverse_cdf_is_monotonic_and_exact_at_bucket_edges() {
        let cdf = Cdf::new(&[1.0, 3.0, 0.5, 0.5]);
        assert_eq!(cdf.locate(0.0), (0, 0.0));
        assert_eq!(cdf.locate(0.2), (1, 0.0));
        assert_eq!(cdf.locate(0.8), (2, 0.0));
        assert_eq!(cdf.locate(0.95).0, 3);
        assert!(cdf.locate(BELOW_ONE).1 < 1.0);
        let cal = Calendar::new(DEFAULT_END_DAY - 364, 365);
        let mut last = i128::MIN;
        for i in 0..10_000 {
            let t = cal.at(f64::from(i) / 10_000.0);
            assert!(t >= last);
            last = t;
        }
        assert!(last < i128::from(DEFAULT_END_DAY + 1) * NANOS_PER_DAY);
    }
}
