//! The clock the runtimes feed the core with, and an interruptible sleep.
//!
//! The core counts time as plain microseconds ([`dmsg_core::time::Instant`]); a [`Clock`] maps
//! [`std::time::Instant`] (monotonic) onto it from an epoch taken when the clock is made.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dmsg_core::time::{Duration as CoreDuration, Instant as CoreInstant};

/// A monotonic clock for the core: microseconds since the clock was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: std::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    /// The current time for the core.
    pub fn now(&self) -> CoreInstant {
        CoreInstant::from_micros(
            u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX),
        )
    }

    /// How long from `now` until `deadline` (zero if it passed).
    pub fn until(now: CoreInstant, deadline: CoreInstant) -> Duration {
        Duration::from_micros(deadline.saturating_since(now).as_micros())
    }
}

/// A core duration as a std one.
pub fn to_std(d: CoreDuration) -> Duration {
    Duration::from_micros(d.as_micros())
}

/// A std duration as a core one (saturating).
pub fn to_core(d: Duration) -> CoreDuration {
    CoreDuration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A flag that can be raised once, and a sleep that wakes as soon as it is raised. Clones
/// share the flag. Used to stop reconnect loops and other waits promptly.
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl StopSignal {
    /// A signal not raised yet.
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Raises the flag and wakes every sleeper.
    pub fn stop(&self) {
        let (m, cv) = &*self.inner;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// True once raised.
    pub fn is_stopped(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d` or until the flag is raised; returns true if it was raised.
    pub fn sleep(&self, d: Duration) -> bool {
        let (m, cv) = &*self.inner;
        let deadline = std::time::Instant::now() + d;
        let mut stopped = m.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: each wait ends at the deadline at the latest.
        while !*stopped {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            stopped = cv
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_converts() {
        let c = Clock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(2));
        let b = c.now();
        assert!(b.saturating_since(a).as_micros() >= 2_000);
        assert_eq!(Clock::until(b, a), Duration::ZERO);
        assert_eq!(
            to_std(to_core(Duration::from_millis(7))),
            Duration::from_millis(7)
        );
    }

    #[test]
    fn stop_wakes_a_sleeper() {
        let s = StopSignal::new();
        assert!(!s.sleep(Duration::from_millis(1)));
        let s2 = s.clone();
        let t0 = std::time::Instant::now();
        let h = std::thread::spawn(move || s2.sleep(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        s.stop();
        assert!(h.join().unwrap());
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(s.is_stopped());
    }
}
