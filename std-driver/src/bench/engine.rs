//! A core [`Connection`] driven directly on a blocking [`TcpStream`], with batched I/O.
//!
//! This is the shape of runtime the benchmark measures, and the one it suggests for the std
//! driver: one thread owns both the connection and the socket (no channels, no locks), and
//! every system call moves many frames:
//!
//! - **out**: a batch of frames is written with one `write` straight from the connection's
//!   output queue ([`transmit_ready`](Connection::transmit_ready), no copy;
//!   [`Endpoint::flush`]); answers produced while input is read are pulled with
//!   [`poll_transmit`](Connection::poll_transmit) into one buffer ([`Endpoint::collect`]) and
//!   written together;
//! - **in**: one `read` of up to [`READ_BUF`] bytes, then
//!   [`handle_input_lent`](Connection::handle_input_lent) and its events until the chunk is
//!   used up, payloads read where they arrived ([`Endpoint::pump`]);
//! - **timers**: the socket has a short read timeout ([`TICK`]), so a blocked read returns
//!   often enough for [`Endpoint::tick`] to run `handle_timeout` (the session's delayed acks,
//!   keepalives).
//!
//! The drive contract of `dmsg_core::link` is followed as written: after every input the
//! output is pulled (into the batch buffer) and every event is polled before more input.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dmsg_core::link::{
    Connection, Event, LinkConfig, NoSession, Outgoing, Reliable, SendError, SessionSlot, TxnId,
};
use dmsg_core::time::Instant;
use dmsg_core::wire::{Command, Flags};

use dmsg_core::secure::SecureChannel;

use super::secure_link;
use crate::clock::Clock;
use crate::crc::HwCrc32c;

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// When set, [`Endpoint::pump`] feeds input with [`handle_input`](Connection::handle_input)
/// (payloads copied into the connection) instead of lending it: `dmsg bench --copy-input`,
/// to measure what lending saves.
pub static COPY_INPUT: AtomicBool = AtomicBool::new(false);

/// Largest payload (aux bytes) the benchmark links accept.
pub const AUX_MAX: usize = 64 * 1024;

/// Output queue of a plain benchmark link: 256 KiB, so one batch holds about 2,000 small
/// frames or 60 of 4 KiB.
pub const TX_BYTES: usize = 256 * 1024;

/// Bytes read from the socket per `read`.
pub const READ_BUF: usize = 256 * 1024;

/// Bytes written to the socket per `write` at most.
pub const WRITE_BUF: usize = 256 * 1024;

/// Read timeout of the socket: how late a timer (delayed ack, keepalive) may fire at most
/// while the thread waits for input.
pub const TICK: Duration = Duration::from_millis(2);

/// Retransmit window of the session variant, in frames.
pub const WINDOW_FRAMES: usize = 1024;

/// Retransmit window of the session variant, in bytes.
pub const WINDOW_BYTES: usize = 1024 * 1024;

/// The link type the benchmark drives: 64 KiB aux, every header size, a 256 KiB output
/// queue, 256 transactions per table, CRC-32C with the CPU's instruction; `S` is
/// [`Plain`] or [`WithSession`].
pub type BenchLink<S> = Connection<{ 32 * 64 + AUX_MAX }, AUX_MAX, TX_BYTES, 256, HwCrc32c, S>;

/// No session storage: plain DMSG.
pub type Plain = NoSession;

/// The reliable session, with a window of [`WINDOW_FRAMES`] frames in [`WINDOW_BYTES`].
pub type WithSession = Reliable<HwCrc32c, WINDOW_FRAMES, WINDOW_BYTES, 0, 0>;

/// The two kinds of link the benchmark compares: [`Plain`] and [`WithSession`].
pub trait Flavor: SessionSlot<HwCrc32c> + Sized {
    /// Offers the reliable session.
    const SESSION: bool;

    /// True when the session runs on `conn` (always false for [`Plain`]).
    fn running(conn: &BenchLink<Self>) -> bool;
}

impl Flavor for Plain {
    const SESSION: bool = false;

    fn running(_: &BenchLink<Self>) -> bool {
        false
    }
}

impl Flavor for WithSession {
    const SESSION: bool = true;

    fn running(conn: &BenchLink<Self>) -> bool {
        conn.session_running()
    }
}

/// System calls and bytes of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// `read` calls that returned data.
    pub reads: u64,
    /// `write` batches (`write_all` calls).
    pub writes: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// What [`Endpoint::read`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes arrived (buffered for [`Endpoint::pump`]).
    Data(usize),
    /// Nothing arrived (non-blocking read, or the read timeout passed).
    Nothing,
    /// The peer closed the stream.
    Eof,
}

/// Whether [`Endpoint::read`] waits for data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Return at once when nothing is there.
    No,
    /// Wait up to [`TICK`].
    Tick,
}

/// What the event handler of [`Endpoint::pump`] asks for after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Nothing.
    Nothing,
    /// Answer the transaction with the bytes the handler left in the scratch buffer, as
    /// DBG_SHELL aux data, closing our direction (DELETE).
    Reply(TxnId),
}

/// A failure of the benchmark's link: the socket, or the link refusing what it must take.
#[derive(Debug)]
pub enum EngineError {
    /// A socket call failed.
    Io(io::Error),
    /// The connection refused a command.
    Send(SendError),
    /// The connection could not be built.
    Config(String),
    /// The link stopped: what happened.
    Link(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Io(e) => write!(f, "socket error: {e}"),
            EngineError::Send(e) => write!(f, "the link refused a frame: {e:?}"),
            EngineError::Config(e) => write!(f, "cannot build the link: {e}"),
            EngineError::Link(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<io::Error> for EngineError {
    fn from(e: io::Error) -> Self {
        EngineError::Io(e)
    }
}

impl From<SendError> for EngineError {
    fn from(e: SendError) -> Self {
        EngineError::Send(e)
    }
}

/// One end of a benchmark link: the connection, its socket and the batch buffers.
pub struct Endpoint<S: Flavor> {
    /// The connection (boxed: it is about 0.6 MiB plain, 1.6 MiB with the session).
    pub conn: Box<BenchLink<S>>,
    stream: TcpStream,
    clock: Clock,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    wlen: usize,
    nonblocking: bool,
    scratch: Vec<u8>,
    /// The secure channel of the `dmsg+secure` variant ([`with_secure`](Self::with_secure)).
    sec: Option<Box<SecureChannel>>,
    /// Ciphertext read, not yet opened (secure variant): `wire_in[..wire_len]`.
    wire_in: Vec<u8>,
    wire_len: usize,
    /// Records sealed from one batch (secure variant).
    sealed: Vec<u8>,
    /// System calls and bytes so far.
    pub io: IoCounts,
}

impl<S: Flavor> Endpoint<S> {
    /// An endpoint on a connected `stream` (Nagle off, read timeout [`TICK`]). The
    /// connection is built here, on the calling thread's stack, then boxed: call it on a
    /// thread with a few MiB of stack.
    pub fn new(stream: TcpStream, config: &LinkConfig, clock: Clock) -> Result<Self, EngineError> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TICK))?;
        let conn = BenchLink::<S>::new(clock.now(), config, HwCrc32c)
            .map_err(|e| EngineError::Config(format!("{e:?}")))?;
        Ok(Endpoint {
            conn: Box::new(conn),
            stream,
            clock,
            rbuf: vec![0; READ_BUF],
            rpos: 0,
            rlen: 0,
            wbuf: vec![0; WRITE_BUF],
            wlen: 0,
            nonblocking: false,
            scratch: Vec::with_capacity(AUX_MAX),
            sec: None,
            wire_in: Vec::new(),
            wire_len: 0,
            sealed: Vec::new(),
            io: IoCounts::default(),
        })
    }

    /// Runs the link inside the established secure channel `ch`: batches are sealed into
    /// records before they are written, input is opened before the connection sees it.
    pub fn with_secure(mut self, ch: SecureChannel) -> Self {
        self.sec = Some(Box::new(ch));
        self.wire_in = vec![0; READ_BUF];
        self.sealed = Vec::with_capacity(WRITE_BUF + WRITE_BUF / 64);
        self
    }

    /// The current time for the connection.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Pulls everything the connection has to send into the batch buffer, writing the
    /// buffer out whenever it fills.
    pub fn collect(&mut self, now: Instant) -> Result<(), EngineError> {
        loop {
            let n = self.conn.poll_transmit(now, &mut self.wbuf[self.wlen..]);
            if n == 0 {
                return Ok(());
            }
            self.wlen += n;
            if self.wlen == self.wbuf.len() {
                self.write_batch()?;
            }
        }
    }

    /// Writes everything out: the batch buffer first (it holds older bytes), then the
    /// connection's output queue straight from where it lies
    /// ([`transmit_ready`](Connection::transmit_ready), no copy) or, while the session
    /// runs, through [`collect`](Self::collect). Returns the bytes written.
    pub fn flush(&mut self) -> Result<usize, EngineError> {
        let now = self.now();
        let before = self.io.bytes_out;
        self.write_batch()?;
        self.set_nonblocking(false)?;
        match self.conn.transmit_ready().filter(|_| self.sec.is_none()) {
            Some(bytes) => {
                let n = bytes.len();
                if n > 0 {
                    self.stream.write_all(bytes)?;
                    self.conn.transmit_done(now, n);
                    self.io.writes += 1;
                    self.io.bytes_out += n as u64;
                }
            }
            None => {
                self.collect(now)?;
                self.write_batch()?;
            }
        }
        Ok((self.io.bytes_out - before) as usize)
    }

    fn write_batch(&mut self) -> Result<(), EngineError> {
        if self.wlen == 0 {
            return Ok(());
        }
        self.set_nonblocking(false)?;
        let bytes = match self.sec.as_mut() {
            Some(ch) => {
                self.sealed.clear();
                secure_link::seal(ch, &self.wbuf[..self.wlen], &mut self.sealed)?;
                &self.sealed[..]
            }
            None => &self.wbuf[..self.wlen],
        };
        self.stream.write_all(bytes)?;
        self.io.writes += 1;
        self.io.bytes_out += bytes.len() as u64;
        self.wlen = 0;
        Ok(())
    }

    fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        if self.nonblocking != on {
            self.stream.set_nonblocking(on)?;
            self.nonblocking = on;
        }
        Ok(())
    }

    /// Reads one chunk from the socket into the input buffer.
    pub fn read(&mut self, wait: Wait) -> Result<ReadOutcome, EngineError> {
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
        } else if self.rpos > 0 && self.rbuf.len() - self.rlen < self.rbuf.len() / 2 {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
        if self.rlen == self.rbuf.len() {
            return Err(EngineError::Link(
                "the link stopped taking input (input buffer full)".into(),
            ));
        }
        if let Some(ch) = self.sec.as_mut() {
            // Ciphertext left from the last read first, then the socket.
            let got = secure_link::open(
                ch,
                &mut self.wire_in,
                &mut self.wire_len,
                &mut self.rbuf[self.rlen..],
            )?;
            if got > 0 {
                self.rlen += got;
                return Ok(ReadOutcome::Data(got));
            }
            if self.wire_len == self.wire_in.len() {
                return Err(EngineError::Link(
                    "the secure channel stopped taking input (buffer full)".into(),
                ));
            }
            self.set_nonblocking(wait == Wait::No)?;
            return match self.stream.read(&mut self.wire_in[self.wire_len..]) {
                Ok(0) => Ok(ReadOutcome::Eof),
                Ok(n) => {
                    self.io.reads += 1;
                    self.io.bytes_in += n as u64;
                    self.wire_len += n;
                    let ch = self.sec.as_mut().expect("checked above");
                    let got = secure_link::open(
                        ch,
                        &mut self.wire_in,
                        &mut self.wire_len,
                        &mut self.rbuf[self.rlen..],
                    )?;
                    self.rlen += got;
                    Ok(if got > 0 {
                        ReadOutcome::Data(got)
                    } else {
                        ReadOutcome::Nothing
                    })
                }
                Err(e) if transient(&e) => Ok(ReadOutcome::Nothing),
                Err(e) => Err(e.into()),
            };
        }
        self.set_nonblocking(wait == Wait::No)?;
        match self.stream.read(&mut self.rbuf[self.rlen..]) {
            Ok(0) => Ok(ReadOutcome::Eof),
            Ok(n) => {
                self.rlen += n;
                self.io.reads += 1;
                self.io.bytes_in += n as u64;
                Ok(ReadOutcome::Data(n))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(ReadOutcome::Nothing)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Feeds the buffered input to the connection, following the drive contract: every
    /// event goes to `on_event` (with a scratch buffer for [`Then::Reply`]), then output is
    /// pulled into the batch buffer, before more input. The input is lent to the events
    /// ([`handle_input_lent`](Connection::handle_input_lent)): payloads are read where they
    /// arrived, not copied into the connection. Output stays in the batch buffer; call
    /// [`flush`](Self::flush) after.
    pub fn pump<F>(&mut self, mut on_event: F) -> Result<(), EngineError>
    where
        F: FnMut(&Event<'_>, &mut Vec<u8>) -> Then,
    {
        let now = self.now();
        if COPY_INPUT.load(Ordering::Relaxed) {
            return self.pump_copying(now, on_event);
        }
        let mut stalls = 0;
        loop {
            let mut reply = None;
            let mut closed = None;
            let used = {
                let mut lent = self
                    .conn
                    .handle_input_lent(now, &self.rbuf[self.rpos..self.rlen]);
                let used = lent.used();
                self.scratch.clear();
                while let Some(ev) = lent.poll_event() {
                    if let Event::LinkClosed { reason } = ev {
                        closed = Some(reason);
                        break;
                    }
                    if let Then::Reply(txn) = on_event(&ev, &mut self.scratch) {
                        // One frame per call: at most one request to answer.
                        reply = Some(txn);
                    }
                }
                used
            };
            if let Some(reason) = closed {
                return Err(EngineError::Link(format!("the link closed: {reason:?}")));
            }
            self.rpos += used;
            if let Some(txn) = reply {
                let scratch = std::mem::take(&mut self.scratch);
                let sent = self.reply(now, txn, &scratch);
                self.scratch = scratch;
                sent?;
            }
            self.collect(now)?;
            self.drain_events(now, &mut on_event)?;
            if self.rpos == self.rlen {
                return Ok(());
            }
            if used == 0 {
                // Only a full output queue holds input back once every event is polled:
                // write the batch out and try again.
                self.write_batch()?;
                stalls += 1;
                if stalls > 2 {
                    return Err(EngineError::Link(
                        "the link stopped taking input with its output drained".into(),
                    ));
                }
            } else {
                stalls = 0;
            }
        }
    }

    /// [`pump`](Self::pump) with the payloads copied into the connection
    /// ([`handle_input`](Connection::handle_input), then [`poll_event`](Connection::poll_event)).
    fn pump_copying<F>(&mut self, now: Instant, mut on_event: F) -> Result<(), EngineError>
    where
        F: FnMut(&Event<'_>, &mut Vec<u8>) -> Then,
    {
        let mut stalls = 0;
        loop {
            let used = self
                .conn
                .handle_input(now, &self.rbuf[self.rpos..self.rlen]);
            self.rpos += used;
            self.collect(now)?;
            self.drain_events(now, &mut on_event)?;
            if self.rpos == self.rlen {
                return Ok(());
            }
            if used == 0 {
                self.write_batch()?;
                stalls += 1;
                if stalls > 2 {
                    return Err(EngineError::Link(
                        "the link stopped taking input with its output drained".into(),
                    ));
                }
            } else {
                stalls = 0;
            }
        }
    }

    fn drain_events<F>(&mut self, now: Instant, on_event: &mut F) -> Result<(), EngineError>
    where
        F: FnMut(&Event<'_>, &mut Vec<u8>) -> Then,
    {
        loop {
            let then = {
                let Some(ev) = self.conn.poll_event() else {
                    return Ok(());
                };
                if let Event::LinkClosed { reason } = ev {
                    return Err(EngineError::Link(format!("the link closed: {reason:?}")));
                }
                self.scratch.clear();
                on_event(&ev, &mut self.scratch)
            };
            if let Then::Reply(txn) = then {
                let scratch = std::mem::take(&mut self.scratch);
                let sent = self.reply(now, txn, &scratch);
                self.scratch = scratch;
                sent?;
            }
            self.collect(now)?;
        }
    }

    /// Sends `aux` in `txn` with DELETE, writing the batch out when the queue is full.
    fn reply(&mut self, now: Instant, txn: TxnId, aux: &[u8]) -> Result<(), EngineError> {
        let msg = Outgoing::new(Command::DbgShell).with_aux(aux);
        loop {
            match self.conn.send(now, txn, &msg, Flags::DELETE) {
                Ok(()) => return Ok(()),
                Err(SendError::WouldBlock { .. }) => {
                    self.collect(now)?;
                    if self.wlen == 0 {
                        // Nothing of ours to write out: the room would only come back with
                        // the peer's acks, which this one-request-at-a-time use never needs.
                        return Err(SendError::WouldBlock {
                            needed: aux.len(),
                            available: self.conn.send_capacity(),
                        }
                        .into());
                    }
                    self.write_batch()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs the connection's timers if one is due.
    pub fn tick(&mut self) -> Result<(), EngineError> {
        let now = self.now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            self.collect(now)?;
            self.drain_events(now, &mut |_: &Event<'_>, _: &mut Vec<u8>| Then::Nothing)?;
        }
        Ok(())
    }

    /// Exchanges LNK_CONNs (and starts the session for [`WithSession`]) before any
    /// measurement: returns once the peer's LNK_CONN arrived and the session runs.
    pub fn establish(&mut self, limit: Duration) -> Result<(), EngineError> {
        let session = S::SESSION;
        let start = std::time::Instant::now();
        loop {
            self.flush()?;
            let ready = self.conn.peer_conn().is_some();
            if ready && (!session || S::running(&self.conn)) {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(EngineError::Link(format!(
                    "no LNK_CONN{} from the peer within {limit:?}",
                    if session { " and session" } else { "" }
                )));
            }
            if self.read(Wait::Tick)? == ReadOutcome::Eof {
                return Err(EngineError::Link(
                    "the peer closed before its LNK_CONN".into(),
                ));
            }
            self.pump(|_, _| Then::Nothing)?;
            self.tick()?;
        }
    }
}
