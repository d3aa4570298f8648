//! CPU time of the calling thread, so a round can say what each side cost regardless of how
//! many other processes share the machine.

use std::time::Duration;

/// Time the calling thread has spent on a CPU (user and kernel), from the scheduler's
/// nanosecond accounting (`/proc/thread-self/schedstat`); `None` where that is unavailable
/// (not Linux, or a kernel without scheduler statistics). The kernel brings the figure up to
/// date at scheduler ticks and switches, so it may lag by a few milliseconds: measure rounds
/// of a few hundred milliseconds.
pub fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU time spent since `start` (a [`thread_cpu_time`] reading on the same thread).
pub fn since(start: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu_time()?.saturating_sub(start?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_accumulates_cpu_time_where_the_kernel_counts_it() {
        let Some(start) = thread_cpu_time() else {
            return; // not available here: nothing to check
        };
        let t = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the (tick-granular) figure moves; two seconds is far more than a tick.
        let used = loop {
            x = std::hint::black_box(x.wrapping_add(1));
            let used = since(Some(start)).unwrap();
            if used > Duration::ZERO || t.elapsed() > Duration::from_secs(2) {
                break used;
            }
        };
        assert!(
            used > Duration::ZERO,
            "no CPU time counted in {:?}",
            t.elapsed()
        );
        assert!(used <= t.elapsed() + Duration::from_millis(20));
    }
}
