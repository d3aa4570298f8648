//! Round-trip samples and their percentiles, and throughput rounds.

use std::time::Duration;

/// Round-trip times of one kind of link, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    ns: Vec<u64>,
    sorted: bool,
}

impl Samples {
    /// No samples.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Adds one round trip.
    pub fn push(&mut self, d: Duration) {
        self.ns
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Samples taken.
    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// True when no sample was taken.
    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// The `p`-th percentile (0..=100, nearest rank) in microseconds; `None` without samples.
    pub fn percentile_us(&mut self, p: f64) -> Option<f64> {
        if self.ns.is_empty() {
            return None;
        }
        if !self.sorted {
            self.ns.sort_unstable();
            self.sorted = true;
        }
        let rank = ((p / 100.0) * self.ns.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.ns.len()) - 1;
        Some(self.ns[i] as f64 / 1_000.0)
    }

    /// The mean in microseconds; `None` without samples.
    pub fn mean_us(&self) -> Option<f64> {
        if self.ns.is_empty() {
            return None;
        }
        let sum: u128 = self.ns.iter().map(|&n| u128::from(n)).sum();
        Some(sum as f64 / self.ns.len() as f64 / 1_000.0)
    }
}

/// The rounds of one throughput measurement (one kind of link, one payload size).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rounds {
    /// Messages per second of each round.
    pub rates: Vec<f64>,
}

impl Rounds {
    /// Adds a round of `messages` in `elapsed`.
    pub fn push(&mut self, messages: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        self.rates.push(messages as f64 / secs);
    }

    /// The best round's rate (other processes on the machine only ever slow a round down).
    pub fn best(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    /// The median round's rate.
    pub fn median(&self) -> f64 {
        if self.rates.is_empty() {
            return 0.0;
        }
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut s = Samples::new();
        assert_eq!(s.percentile_us(50.0), None);
        for us in (1..=100).rev() {
            s.push(Duration::from_micros(us));
        }
        assert_eq!(s.percentile_us(50.0), Some(50.0));
        assert_eq!(s.percentile_us(99.0), Some(99.0));
        assert_eq!(s.percentile_us(100.0), Some(100.0));
        assert_eq!(s.percentile_us(0.0), Some(1.0));
        assert_eq!(s.mean_us(), Some(50.5));
    }

    #[test]
    fn rounds_report_best_and_median() {
        let mut r = Rounds::default();
        for ms in [100, 50, 200] {
            r.push(1000, Duration::from_millis(ms));
        }
        assert_eq!(r.best(), 20_000.0);
        assert_eq!(r.median(), 10_000.0);
    }
}
