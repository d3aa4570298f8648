//! Reconnect delays: exponential, bounded, with "equal jitter" from a caller-provided seed.
//!
//! Plain values and functions (no clock, no embassy), so the policy is tested on the host.
//!
//! Retry `n` (counting from 0) waits a random time in `[c/2, c]`, where the ceiling
//! `c = min(max, initial * 2^n)`. Half of the delay is fixed, so a device never hammers the
//! hub; the other half is random, so devices that lost the hub at the same moment do not all
//! come back in the same instant. The generator is a xorshift32 seeded by the caller: two
//! devices with the same seed retry in lock step, so derive it from something per-device (a
//! hardware RNG, the MAC address, a serial number).
//!
//! ```
//! use dmsg_core::time::Duration;
//! use dmsg_embassy::backoff::{Backoff, BackoffConfig};
//!
//! let mut b = Backoff::new(BackoffConfig {
//!     initial: Duration::from_millis(100),
//!     max: Duration::from_secs(2),
//!     seed: 7,
//! });
//! let d0 = b.next_delay();
//! assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
//! for _ in 0..10 {
//!     assert!(b.next_delay() <= Duration::from_secs(2)); // bounded
//! }
//! b.reset(); // after a link that came up: start again from `initial`
//! assert!(b.next_delay() <= Duration::from_millis(100));
//! ```

use dmsg_core::time::Duration;

/// Settings of the reconnect backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BackoffConfig {
    /// Ceiling of the first retry's delay (default 500 ms).
    pub initial: Duration,
    /// Largest ceiling (default 30 s).
    pub max: Duration,
    /// Seed of the jitter; any value (0 is replaced by a fixed non-zero constant). Should
    /// differ between devices.
    pub seed: u32,
}

impl BackoffConfig {
    /// 500 ms doubling up to 30 s, with jitter from `seed`.
    pub const fn new(seed: u32) -> Self {
        BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            seed,
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig::new(0)
    }
}

/// The substitute for a zero seed (xorshift never leaves 0).
const ZERO_SEED: u32 = 0x9E37_79B9;

/// Backoff state: the number of failed attempts since the last reset, and the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: u32,
}

impl Backoff {
    /// Fresh state: the next delay is the first retry's.
    pub const fn new(config: BackoffConfig) -> Self {
        let rng = if config.seed == 0 {
            ZERO_SEED
        } else {
            config.seed
        };
        Backoff {
            config,
            attempt: 0,
            rng,
        }
    }

    /// Retries since the last [`reset`](Self::reset).
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Ceiling of retry `attempt`: `min(max, initial * 2^attempt)`, saturating.
    pub const fn ceiling(config: &BackoffConfig, attempt: u32) -> Duration {
        let initial = config.initial.as_micros();
        let max = config.max.as_micros();
        let c = if attempt >= 64 {
            u64::MAX
        } else {
            match initial.checked_mul(1u64 << attempt) {
                Some(v) => v,
                None => u64::MAX,
            }
        };
        Duration::from_micros(if c < max { c } else { max })
    }

    /// The delay before the next connection attempt, in `[c/2, c]` for this attempt's ceiling
    /// `c`; advances the attempt counter and the generator.
    pub fn next_delay(&mut self) -> Duration {
        let c = Self::ceiling(&self.config, self.attempt).as_micros();
        self.attempt = self.attempt.saturating_add(1);
        let half = c / 2;
        let span = c - half; // the random part, 0..=span
        let r = (u64::from(self.next_u32()) << 32) | u64::from(self.next_u32());
        let jitter = match span.checked_add(1) {
            Some(m) => r % m,
            None => r,
        };
        Duration::from_micros(half + jitter)
    }

    /// Starts again from the first retry's delay (call once a link came up). The generator
    /// keeps running, so devices stay spread out.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_u32(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(initial_ms: u64, max_ms: u64, seed: u32) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            seed,
        }
    }

    #[test]
    fn delays_stay_within_half_and_full_ceiling() {
        for seed in [0, 1, 42, 0xdead_beef, u32::MAX] {
            let c = cfg(100, 5_000, seed);
            let mut b = Backoff::new(c);
            for n in 0..40 {
                let ceiling = Backoff::ceiling(&c, n);
                let d = b.next_delay();
                assert!(d <= ceiling, "seed {seed} attempt {n}: {d} > {ceiling}");
                assert!(
                    d.as_micros() >= ceiling.as_micros() / 2,
                    "seed {seed} attempt {n}: {d} < half of {ceiling}"
                );
            }
        }
    }

    #[test]
    fn ceiling_doubles_then_saturates_at_max() {
        let c = cfg(100, 1_000, 1);
        let ms: Vec<u64> = (0..8)
            .map(|n| Backoff::ceiling(&c, n).as_millis())
            .collect();
        assert_eq!(ms, [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000]);
        // Far attempts and huge values neither overflow nor panic.
        assert_eq!(Backoff::ceiling(&c, 63).as_millis(), 1_000);
        assert_eq!(Backoff::ceiling(&c, u32::MAX).as_millis(), 1_000);
        let huge = BackoffConfig {
            initial: Duration::from_micros(u64::MAX / 2),
            max: Duration::from_micros(u64::MAX),
            seed: 3,
        };
        assert_eq!(Backoff::ceiling(&huge, 5).as_micros(), u64::MAX);
        let mut b = Backoff::new(huge);
        for _ in 0..5 {
            let _ = b.next_delay();
        }
    }

    #[test]
    fn same_seed_same_sequence_different_seed_differs() {
        let run = |seed| {
            let mut b = Backoff::new(cfg(1_000, 60_000, seed));
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn jitter_actually_spreads() {
        // At a fixed ceiling the delays of many devices cover the range, not one point.
        let c = cfg(10_000, 10_000, 0);
        let mut lo = u64::MAX;
        let mut hi = 0;
        for seed in 1..200u32 {
            let d = Backoff::new(BackoffConfig { seed, ..c })
                .next_delay()
                .as_millis();
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(lo < 5_500 && hi > 9_500, "range {lo}..{hi}");
    }

    #[test]
    fn reset_starts_over_and_counts() {
        let c = cfg(100, 10_000, 9);
        let mut b = Backoff::new(c);
        for _ in 0..6 {
            let _ = b.next_delay();
        }
        assert_eq!(b.attempt(), 6);
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn zero_initial_means_immediate_retry() {
        let mut b = Backoff::new(cfg(0, 0, 1));
        assert_eq!(b.next_delay(), Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
