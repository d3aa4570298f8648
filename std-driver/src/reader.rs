//! The socket reader thread: blocking reads from a TCP stream, handed as owned chunks to the
//! thread that drives the sans-IO state, through that thread's one wake-up channel.
//!
//! Why a reader thread instead of read timeouts: the driving thread must wake for three
//! things, socket input, the core's timer ([`poll_timeout`](dmsg_core::link::Connection::poll_timeout))
//! and commands from other threads. A blocking `read` cannot be woken by a command, so a single
//! thread would have to poll with short read timeouts (latency or busy wake-ups). With a reader
//! thread all three arrive on one channel: the driver blocks in `recv_timeout` until the next
//! core deadline, and every wake-up has a cause. A multi-link runtime uses one reader per socket
//! and one channel for all of them (the `wrap` function tags the chunks).
//!
//! Bounds and backpressure: chunks are at most [`READ_CHUNK`] bytes; the channel is bounded, so
//! a reader whose driver is busy blocks, stops reading and the peer's TCP window closes. A
//! [`Gate`] also stops the reader while the application has more than a set number of events
//! unread, so a flood from the peer cannot grow memory without bound.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

/// Largest chunk one read hands over, in bytes.
pub const READ_CHUNK: usize = 64 * 1024;

/// What one read produced.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Bytes received (never empty).
    Data(Vec<u8>),
    /// The peer closed its side (read returned 0).
    Eof,
    /// The read failed (reset, aborted...). The reader stops after it.
    Error(io::Error),
}

#[derive(Debug, Default)]
struct GateState {
    backlog: usize,
    detached: bool,
    stopped: bool,
}

/// Counts events handed to the application and not yet taken, and holds the reader while
/// there are more than `high` of them. Also carries the reader's stop flag.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
    high: usize,
}

impl Gate {
    /// A gate that holds the reader while `high` or more events wait (at least 1).
    pub fn new(high: usize) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(GateState::default()),
            cv: Condvar::new(),
            high: high.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more event is waiting for the application.
    pub fn produced(&self) {
        let mut s = self.lock();
        if !s.detached {
            s.backlog += 1;
        }
    }

    /// The application took one event.
    pub fn consumed(&self) {
        let mut s = self.lock();
        s.backlog = s.backlog.saturating_sub(1);
        if s.backlog + 1 == self.high {
            self.cv.notify_all();
        }
    }

    /// Nobody reads events any more: stop counting (and never hold the reader for them).
    pub fn detach(&self) {
        let mut s = self.lock();
        s.detached = true;
        s.backlog = 0;
        self.cv.notify_all();
    }

    /// Tells the reader to stop at its next chance (the socket must also be shut down to
    /// wake a blocked read).
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.cv.notify_all();
    }

    /// Events waiting now.
    pub fn backlog(&self) -> usize {
        self.lock().backlog
    }

    /// Waits until reading may go on; false when the reader must stop.
    fn wait_open(&self) -> bool {
        let mut s = self.lock();
        while !s.stopped && s.backlog >= self.high {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        !s.stopped
    }
}

/// Starts a reader thread named `name` on `stream` (a clone of the driver's socket). Every
/// outcome goes through `wrap` into `tx`. The thread ends after EOF or an error, when
/// `gate.stop()` was called, or when `tx`'s receiver is gone. To end it while it is blocked in
/// `read`, shut the socket down ([`TcpStream::shutdown`]) and call `gate.stop()`.
pub fn spawn_reader<M, F>(
    name: String,
    mut stream: TcpStream,
    tx: SyncSender<M>,
    gate: Arc<Gate>,
    wrap: F,
) -> io::Result<JoinHandle<()>>
where
    M: Send + 'static,
    F: Fn(ReadOutcome) -> M + Send + 'static,
{
    // Counted from before the spawn, so the count never lags behind the thread's existence.
    let count = crate::link::ThreadCount::enter();
    thread::Builder::new().name(name).spawn(move || {
        let _count = count;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if !gate.wait_open() {
                return;
            }
            let outcome = match stream.read(&mut buf) {
                Ok(0) => ReadOutcome::Eof,
                Ok(n) => ReadOutcome::Data(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => ReadOutcome::Error(e),
            };
            let last = !matches!(outcome, ReadOutcome::Data(_));
            if tx.send(wrap(outcome)).is_err() || last {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn reads_chunks_then_eof_and_the_gate_holds_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let gate = Gate::new(1);
        gate.produced(); // one unread event: the reader must wait
        let (tx, rx) = sync_channel(4);
        let h = spawn_reader("t".into(), s, tx, gate.clone(), |o| o).unwrap();
        c.write_all(b"abc").unwrap();
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        gate.consumed();
        match rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap() {
            ReadOutcome::Data(d) => assert_eq!(d, b"abc"),
            o => panic!("{o:?}"),
        }
        drop(c);
        assert!(matches!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
            ReadOutcome::Eof
        ));
        h.join().unwrap();
    }
}
