//! Outbound connects with exponential backoff and jitter ([`Connector`]), and a supervisor
//! that keeps one link up by reconnecting after every loss ([`Reconnecting`]).
//!
//! Every wait is bounded ([`Backoff::max`]) and interruptible ([`StopSignal`]); the number of
//! attempts can be bounded too ([`Backoff::max_attempts`]).
//!
//! ```
//! use std::time::Duration;
//! use dmsg_std::connector::Backoff;
//! let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), jitter_percent: 0, ..Backoff::default() };
//! let delays: Vec<u128> = (1..=6).map(|n| b.delay(n, 0).as_millis()).collect();
//! assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
//! ```

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::clock::StopSignal;
use crate::link::{self, LinkEvent, LinkHandle, LinkOptions, ThreadCount};
use crate::net::{self, Addr, ConnectError};

/// Exponential backoff with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (default 200 ms).
    pub initial: Duration,
    /// Largest delay (default 30 s).
    pub max: Duration,
    /// Growth per retry (default 2).
    pub factor: u32,
    /// Up to this share of each delay (percent, 0..=100) is taken off at random, so many
    /// clients that lost the same hub do not come back in step (default 20).
    pub jitter_percent: u8,
    /// Give up after this many failed attempts in a row (`None`: never; default `None`).
    pub max_attempts: Option<u32>,
    /// A link that stayed up this long resets the backoff to `initial` (default 10 s).
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            factor: 2,
            jitter_percent: 20,
            max_attempts: None,
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1 = the first retry), with `random` choosing
    /// the jitter: `min(max, initial * factor^(attempt-1))`, less up to `jitter_percent` of it.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let mut d = self.initial.min(self.max);
        for _ in 1..attempt.min(64) {
            d = d.saturating_mul(self.factor.max(1)).min(self.max);
            if d == self.max {
                break;
            }
        }
        let pct = u64::from(self.jitter_percent.min(100));
        if pct == 0 {
            return d;
        }
        let span = d.as_micros() as u64 * pct / 100;
        let cut = if span == 0 { 0 } else { random % (span + 1) };
        d.saturating_sub(Duration::from_micros(cut))
    }
}

/// A small xorshift64* generator for jitter (not for anything secret).
#[derive(Clone, Debug)]
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        Jitter(u64::from(link::salt_seed()) << 1 | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// One failed attempt and the wait before the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Failures in a row so far.
    pub attempt: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
    /// What failed.
    pub reason: String,
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt {} failed: {}; retrying in {:.1} s",
            self.attempt,
            self.reason,
            self.delay.as_secs_f64()
        )
    }
}

/// Why [`Connector::connect`] returned without a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectFailed {
    /// The stop signal was raised.
    Stopped,
    /// [`Backoff::max_attempts`] failures in a row; the last one.
    GaveUp(ConnectError),
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailed::Stopped => f.write_str("stopped"),
            ConnectFailed::GaveUp(e) => write!(f, "{e} (gave up after repeated attempts)"),
        }
    }
}

impl std::error::Error for ConnectFailed {}

/// Connects to one address, retrying with [`Backoff`].
#[derive(Clone, Debug)]
pub struct Connector {
    addr: Addr,
    backoff: Backoff,
    connect_timeout: Duration,
    failures: u32,
    jitter: Jitter,
}

impl Connector {
    /// A connector for `addr` with the default backoff and a 5 s connect timeout.
    pub fn new(addr: Addr) -> Connector {
        Connector {
            addr,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            failures: 0,
            jitter: Jitter::new(),
        }
    }

    /// With this backoff.
    pub fn with_backoff(self, backoff: Backoff) -> Connector {
        Connector { backoff, ..self }
    }

    /// With this timeout for each connect attempt.
    pub fn with_connect_timeout(self, connect_timeout: Duration) -> Connector {
        Connector {
            connect_timeout,
            ..self
        }
    }

    /// The address.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The backoff.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// One attempt, no retry.
    pub fn connect_once(&self) -> Result<TcpStream, ConnectError> {
        net::connect(&self.addr, self.connect_timeout)
    }

    /// Counts a failure and returns the wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let r = self.jitter.next();
        self.backoff.delay(self.failures, r)
    }

    /// Forgets past failures (after a link that stayed up).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// True when `max_attempts` failures in a row happened.
    pub fn exhausted(&self) -> bool {
        self.backoff
            .max_attempts
            .is_some_and(|m| self.failures >= m)
    }

    /// Connects, retrying with backoff until it works, `max_attempts` is reached, or `stop` is
    /// raised. `progress` is told about each failure before the wait.
    pub fn connect(
        &mut self,
        stop: &StopSignal,
        progress: &mut dyn FnMut(&Retry),
    ) -> Result<TcpStream, ConnectFailed> {
        loop {
            if stop.is_stopped() {
                return Err(ConnectFailed::Stopped);
            }
            match self.connect_once() {
                Ok(s) => {
                    self.failures = 0;
                    return Ok(s);
                }
                Err(e) => {
                    let delay = self.next_delay();
                    if self.exhausted() {
                        return Err(ConnectFailed::GaveUp(e));
                    }
                    let retry = Retry {
                        attempt: self.failures,
                        delay,
                        reason: e.to_string(),
                    };
                    log::info!("{}: {retry}", self.addr);
                    progress(&retry);
                    if stop.sleep(delay) {
                        return Err(ConnectFailed::Stopped);
                    }
                }
            }
        }
    }
}

/// What a [`Reconnecting`] link reports.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// A new link is up; issue commands through `handle` (or [`Reconnecting::current`]).
    Up {
        /// The link.
        handle: LinkHandle,
        /// The peer's socket address.
        peer: SocketAddr,
        /// Links made so far (1 for the first).
        generation: u32,
    },
    /// An event of the current link (its `LinkClosed` ends that link).
    Link(Box<LinkEvent>),
    /// A connect attempt failed or the link was lost; the next attempt follows after the
    /// delay.
    Retrying(Retry),
    /// [`Backoff::max_attempts`] was reached; the supervisor stopped.
    GaveUp(ConnectError),
}

/// Keeps a link to one address up: connects (with backoff), runs the link, and after it
/// closes, waits and connects again, until dropped or [`Backoff::max_attempts`] failures in a
/// row. Dropping it shuts the current link down and joins every thread.
pub struct Reconnecting {
    stop: StopSignal,
    current: Arc<Mutex<Option<LinkHandle>>>,
    events: Option<Receiver<SupervisorEvent>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Reconnecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnecting").finish_non_exhaustive()
    }
}

/// Supervisor events that may wait unread before the supervisor (and so the link's reader)
/// waits.
const SUPERVISOR_BACKLOG: usize = 1024;

impl Reconnecting {
    /// Starts the supervisor thread.
    pub fn start(connector: Connector, opts: LinkOptions) -> std::io::Result<Reconnecting> {
        let stop = StopSignal::new();
        let current = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::sync_channel(SUPERVISOR_BACKLOG);
        let (s2, c2) = (stop.clone(), current.clone());
        let count = ThreadCount::enter();
        let thread = thread::Builder::new()
            .name(format!("dmsg-reconnect {}", connector.addr()))
            .spawn(move || {
                let _count = count;
                supervise(connector, opts, s2, c2, tx);
            })?;
        Ok(Reconnecting {
            stop,
            current,
            events: Some(rx),
            thread: Some(thread),
        })
    }

    /// The current link, if one is up.
    pub fn current(&self) -> Option<LinkHandle> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<SupervisorEvent, RecvTimeoutError> {
        match &self.events {
            Some(rx) => rx.recv_timeout(timeout),
            None => Err(RecvTimeoutError::Disconnected),
        }
    }
}

impl Drop for Reconnecting {
    fn drop(&mut self) {
        self.stop.stop();
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = current {
            h.shutdown();
        }
        // Unblocks a supervisor waiting to hand over an event.
        self.events = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn supervise(
    mut connector: Connector,
    opts: LinkOptions,
    stop: StopSignal,
    current: Arc<Mutex<Option<LinkHandle>>>,
    tx: SyncSender<SupervisorEvent>,
) {
    let mut generation = 0u32;
    loop {
        let stream = match connector.connect(&stop, &mut |r| {
            let _ = tx.send(SupervisorEvent::Retrying(r.clone()));
        }) {
            Ok(s) => s,
            Err(ConnectFailed::Stopped) => return,
            Err(ConnectFailed::GaveUp(e)) => {
                log::warn!("{}: giving up: {e}", connector.addr());
                let _ = tx.send(SupervisorEvent::GaveUp(e));
                return;
            }
        };
        let peer = stream.peer_addr().ok();
        let (handle, events) = match link::spawn(stream, opts.clone()) {
            Ok(x) => x,
            Err(e) => {
                log::warn!("{}: cannot start the link: {e}", connector.addr());
                if !wait_before_retry(&mut connector, &stop, &tx, e.to_string()) {
                    return;
                }
                continue;
            }
        };
        generation += 1;
        let up_at = std::time::Instant::now();
        {
            let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
            *cur = Some(handle.clone());
            if stop.is_stopped() {
                // Raised between the connect and now: the drop may have missed this link.
                drop(cur);
                handle.shutdown();
            }
        }
        let up = SupervisorEvent::Up {
            handle: handle.clone(),
            peer: peer.unwrap_or_else(|| handle.peer_addr()),
            generation,
        };
        let mut reason = String::from("the link closed");
        if tx.send(up).is_ok() {
            for ev in events {
                if let Some(d) = ev.close_description() {
                    reason = d;
                }
                if tx.send(SupervisorEvent::Link(Box::new(ev))).is_err() {
                    break;
                }
            }
        }
        current.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Our clone: joins the link's threads unless the application still holds one.
        handle.shutdown();
        drop(handle);
        if stop.is_stopped() {
            return;
        }
        if up_at.elapsed() >= connector.backoff().reset_after {
            connector.reset();
        }
        if !wait_before_retry(&mut connector, &stop, &tx, reason) {
            return;
        }
    }
}

/// Counts a failure, reports it and waits; false when the supervisor must end.
fn wait_before_retry(
    connector: &mut Connector,
    stop: &StopSignal,
    tx: &SyncSender<SupervisorEvent>,
    reason: String,
) -> bool {
    let delay = connector.next_delay();
    let retry = Retry {
        attempt: connector.failures(),
        delay,
        reason,
    };
    log::info!("{}: {retry}", connector.addr());
    if tx.send(SupervisorEvent::Retrying(retry)).is_err() {
        return false;
    }
    !stop.sleep(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            factor: 3,
            jitter_percent: 50,
            ..Backoff::default()
        };
        for attempt in 1..200 {
            let top = b.delay(attempt, 0);
            assert!(top <= b.max);
            for r in [1u64, 7, 12345, u64::MAX] {
                let d = b.delay(attempt, r);
                assert!(d <= top && d >= top / 2, "{attempt} {r} {d:?}");
            }
        }
        assert_eq!(b.delay(1, 0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0), Duration::from_millis(300));
        assert_eq!(b.delay(3, 0), Duration::from_millis(900));
        assert_eq!(b.delay(4, 0), Duration::from_millis(1000));
        assert_eq!(b.delay(u32::MAX, 0), Duration::from_millis(1000));
    }

    #[test]
    fn connector_gives_up_after_max_attempts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut c = Connector::new(Addr::new("127.0.0.1", port)).with_backoff(Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            max_attempts: Some(3),
            ..Backoff::default()
        });
        let mut seen = Vec::new();
        let r = c.connect(&StopSignal::new(), &mut |r| seen.push(r.attempt));
        assert!(matches!(r, Err(ConnectFailed::GaveUp(_))), "{r:?}");
        assert_eq!(seen, [1, 2]);
        let stop = StopSignal::new();
        stop.stop();
        assert_eq!(
            c.connect(&stop, &mut |_| {}).unwrap_err(),
            ConnectFailed::Stopped
        );
    }
}
