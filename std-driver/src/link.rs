//! One DMSG link over a [`TcpStream`], run on its own threads: [`spawn`] returns a
//! [`LinkHandle`] (`Send + Sync + Clone`) for commands and [`LinkEvents`] for what happens.
//!
//! # Threads and the drive contract
//!
//! Each link has two threads and no async runtime:
//!
//! - a **reader** ([`crate::reader`]) blocks in `read` and hands each chunk to the driver;
//! - the **driver** owns the core [`HostConnection`] (boxed: it is 290 KB) and the socket's
//!   write side. It sleeps in `recv_timeout` on one channel that carries socket input,
//!   commands from handles and the shutdown request, with the timeout taken from
//!   [`poll_timeout`](dmsg_core::link::Connection::poll_timeout). After every wake-up it
//!   follows the core's drive contract exactly: feed the input (`handle_input`, keeping the
//!   unused rest and feeding it again after draining), or `handle_close` on EOF/error, or
//!   `handle_timeout` when the deadline passed, or the command; then drain `poll_transmit` to
//!   the socket (blocking `write_all`, bounded by a write timeout) and `poll_event` into the
//!   events channel, repeating while either produces something.
//!
//! Why not one thread with read timeouts: a thread blocked in `read` cannot be woken by a
//! command, so it would have to poll (latency, or wake-ups for nothing). With the reader
//! thread every wake-up of the driver has a cause, and timers cost nothing while idle.
//!
//! Commands are synchronous: a handle's call returns when the driver has queued the frame and
//! written it to the socket (or refused it with the core's [`SendError`]).
//!
//! # Ending
//!
//! A link ends when the core closes it (clean shutdown, keepalive timeout, broken stream,
//! peer misbehaviour, EOF or a socket error): the driver reports [`LinkEvent::LinkClosed`]
//! (after a `Closed` with LOSTLINK for every open transaction), logs the reason, shuts the
//! socket down, joins the reader and exits. Nothing ends the process. When the last
//! [`LinkHandle`] is dropped the link is shut down the same way (our LNK_CONN DELETEs are sent
//! best-effort first) and the drop joins both threads, so no thread outlives its handles.
//! [`runtime_threads`] counts the live threads of every runtime, for tests.
//!
//! # Bounds
//!
//! Input chunks are at most [`READ_CHUNK`](crate::reader::READ_CHUNK) bytes, the input
//! channel holds [`LinkOptions::input_depth`] of them, and the reader stops while
//! [`LinkOptions::event_backlog`] events wait unread, so a peer cannot grow memory without
//! bound: its TCP window closes instead. An application that leaves events unread for longer
//! than the idle timeout loses the link (keepalive), which is the visible outcome.
//!
//! # Reuse
//!
//! The pieces a multi-link node runtime needs are separate: [`crate::reader`] (one reader per
//! socket, chunks tagged by the `wrap` function onto one channel), [`crate::clock`] (clock and
//! interruptible sleep), [`crate::connector`] (connect with backoff and reconnect) and
//! [`crate::net`] (addresses and errors). [`own_event`] turns a core event into an owned one.
//!
//! ```no_run
//! use dmsg_std::link::{self, LinkEvent, LinkOptions, Message};
//! use dmsg_core::wire::Command;
//!
//! let stream = std::net::TcpStream::connect("127.0.0.1:987")?;
//! let (handle, events) = link::spawn(stream, LinkOptions::default())?;
//! handle.send_one_way(Message::new(Command::DbgShell).with_aux(*b"tree\0"), false, None)?;
//! for ev in events {
//!     match ev {
//!         LinkEvent::OneWay { msg } => print!("{}", msg.text()),
//!         LinkEvent::LinkClosed { .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::errcode;
use dmsg_core::link::{
    CloseReason, ConfigError, Event, Extensions, HostConnection, LinkConfig, LinkState, LinkStats,
    Outgoing, SendError, Side, TxnEnd, TxnId,
};
use dmsg_core::secure::{SecureChannel, MAX_RECORD_WIRE};
use dmsg_core::time::Instant;
use dmsg_core::wire::body::ConnRepr;
use dmsg_core::wire::{Body, Command, Flags, HeaderRepr};

use crate::clock::Clock;
use crate::reader::{spawn_reader, Gate, ReadOutcome};

// ---------------------------------------------------------------------------------------
// Thread accounting

static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads of every link runtime (drivers and readers) alive in this process right now.
pub fn runtime_threads() -> usize {
    LIVE_THREADS.load(Ordering::SeqCst)
}

/// Counts a runtime thread while it lives: take the guard before spawning the thread and
/// move it in, so the count covers the thread's whole life.
#[derive(Debug)]
pub struct ThreadCount(());

impl ThreadCount {
    /// Counts one thread until the guard is dropped.
    pub fn enter() -> ThreadCount {
        LIVE_THREADS.fetch_add(1, Ordering::SeqCst);
        ThreadCount(())
    }
}

impl Drop for ThreadCount {
    fn drop(&mut self) {
        LIVE_THREADS.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------
// Owned messages and events

/// A frame to send, owned (the runtime's counterpart of the core's [`Outgoing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The command.
    pub command: Command,
    /// The extended header ([`Body::None`] for commands without a structure).
    pub body: Body,
    /// Aux data.
    pub aux: Vec<u8>,
    /// The `error` header field.
    pub error: u32,
}

impl Message {
    /// `command` with no body, no aux and error 0.
    pub fn new(command: Command) -> Message {
        Message {
            command,
            body: Body::None,
            aux: Vec::new(),
            error: 0,
        }
    }

    /// With this extended header.
    pub fn with_body(self, body: Body) -> Message {
        Message { body, ..self }
    }

    /// With this aux data.
    pub fn with_aux(self, aux: impl Into<Vec<u8>>) -> Message {
        Message {
            aux: aux.into(),
            ..self
        }
    }

    /// With this `error` field.
    pub fn with_error(self, error: u32) -> Message {
        Message { error, ..self }
    }

    /// The core's borrowed form.
    pub fn as_outgoing(&self) -> Outgoing<'_> {
        Outgoing::new(self.command)
            .with_body(&self.body)
            .with_aux(&self.aux)
            .with_error(self.error)
    }
}

/// A received frame, owned (the core's [`Received`](dmsg_core::link::Received) copied out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMsg {
    /// The base header.
    pub header: HeaderRepr,
    /// The extended header as parsed for the command.
    pub body: Body,
    /// The aux data (without padding).
    pub aux: Vec<u8>,
}

impl ReceivedMsg {
    /// The command.
    pub fn command(&self) -> Command {
        self.header.cmd.command()
    }

    /// The flags.
    pub fn flags(&self) -> Flags {
        self.header.cmd.flags()
    }

    /// The `error` field.
    pub fn error(&self) -> u32 {
        self.header.error
    }

    /// The aux data as text: up to the first NUL (DBG_SHELL text is NUL-terminated), with
    /// bytes that are not UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        let end = self
            .aux
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.aux.len());
        String::from_utf8_lossy(&self.aux[..end])
    }
}

/// How the transport ended, as seen by the runtime (the core only knows "transport closed").
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEnd {
    /// The peer closed the connection (read returned 0).
    Eof,
    /// A read failed (e.g. reset by the peer).
    ReadError {
        /// The error's kind.
        kind: io::ErrorKind,
        /// The system's message.
        message: String,
    },
    /// A write failed or timed out (the peer stopped reading).
    WriteError {
        /// The error's kind.
        kind: io::ErrorKind,
        /// The system's message.
        message: String,
    },
    /// We ended it: the last handle was dropped, or [`LinkHandle::shutdown`].
    Shutdown,
    /// The secure channel failed (a record did not authenticate, the stream was cut short,
    /// ...): nothing from the failed record was delivered.
    Secure(dmsg_core::secure::SecureError),
}

/// What happened on a link. The owned counterpart of the core's [`Event`], in the same
/// order and with the same guarantees (`Connected` first, one `Closed` per transaction,
/// `LinkClosed` last).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// Our LNK_CONN is queued: the link is up.
    Connected,
    /// The peer's LNK_CONN arrived and was accepted.
    PeerConn {
        /// Its body.
        conn: ConnRepr,
        /// Extensions on for the link.
        extensions: Extensions,
    },
    /// The peer's first answer to our LNK_CONN (0 = accepted).
    ConnAnswered {
        /// The answer's error field.
        error: u32,
    },
    /// The peer opened a transaction.
    Opened {
        /// The transaction.
        txn: TxnId,
        /// Its first frame.
        msg: ReceivedMsg,
    },
    /// A further frame in an open transaction.
    Message {
        /// The transaction.
        txn: TxnId,
        /// The frame.
        msg: ReceivedMsg,
    },
    /// A one-way message (e.g. DBG_SHELL|REPLY text, LNK_PING is answered by the core).
    OneWay {
        /// The frame.
        msg: ReceivedMsg,
    },
    /// A transaction finished (error LOSTLINK, 0x21, when the link died first).
    Closed {
        /// The transaction.
        txn: TxnId,
        /// The peer's closing error, or LOSTLINK.
        error: u32,
        /// How it ended.
        end: TxnEnd,
    },
    /// The link is closed; always the last event.
    LinkClosed {
        /// The core's reason.
        reason: CloseReason,
        /// How the socket ended, when the runtime saw it end.
        transport: Option<TransportEnd>,
    },
}

/// The owned copy of a core event (`None` for an event kind this runtime does not know yet;
/// the core's `Event` is non-exhaustive).
pub fn own_event(ev: Event<'_>) -> Option<LinkEvent> {
    let msg = |m: dmsg_core::link::Received<'_>| ReceivedMsg {
        header: m.header,
        body: *m.body,
        aux: m.aux.to_vec(),
    };
    Some(match ev {
        Event::Connected => LinkEvent::Connected,
        Event::PeerConn { conn, extensions } => LinkEvent::PeerConn {
            conn: *conn,
            extensions,
        },
        Event::ConnAnswered { error } => LinkEvent::ConnAnswered { error },
        Event::Opened { txn, msg: m } => LinkEvent::Opened { txn, msg: msg(m) },
        Event::Message { txn, msg: m } => LinkEvent::Message { txn, msg: msg(m) },
        Event::OneWay { msg: m } => LinkEvent::OneWay { msg: msg(m) },
        Event::Closed { txn, error, end } => LinkEvent::Closed { txn, error, end },
        Event::LinkClosed { reason } => LinkEvent::LinkClosed {
            reason,
            transport: None,
        },
        _ => return None,
    })
}

/// A sentence saying why a link closed and what to do about it.
pub fn describe_close(reason: &CloseReason, transport: Option<&TransportEnd>) -> String {
    match (reason, transport) {
        (CloseReason::PeerClosed, _) => "the peer closed the link cleanly".into(),
        (CloseReason::LocalClose, _) => "we closed the link cleanly".into(),
        (_, Some(TransportEnd::Shutdown)) => "the link was shut down locally".into(),
        (_, Some(TransportEnd::Secure(e))) => {
            format!("secure channel: {e}; the link was ended (nothing of the failed record was delivered)")
        }
        (_, Some(TransportEnd::Eof)) => {
            "the peer closed the connection (EOF); the service may have stopped or dropped us"
                .into()
        }
        (_, Some(TransportEnd::ReadError { message, .. })) => {
            format!("the connection broke ({message}); the peer went away or the network failed")
        }
        (_, Some(TransportEnd::WriteError { kind, message })) => {
            if matches!(kind, io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
                "the peer stopped reading (write timed out); it may be hung".into()
            } else {
                format!("cannot send to the peer ({message}); the connection broke")
            }
        }
        (CloseReason::TransportClosed, None) => "the connection closed".into(),
        (CloseReason::KeepaliveTimeout, _) => {
            "nothing received within the idle timeout (keepalive); the peer hung or the \
             network dropped the connection"
                .into()
        }
        // The decode error's text starts with its class, e.g. "SYNC (1): bad magic ...".
        (CloseReason::Decode(e), _) => format!(
            "protocol error, class {e}. Is the peer a plaintext DMSG peer (configured as \
             <ip>.none on DragonFly, not encrypted)?"
        ),
        (CloseReason::ProtocolError, _) => {
            "protocol error, class TRANS: the peer broke transaction rules too often (see -v \
             for the counts)"
                .into()
        }
        (CloseReason::CloseTimeout, _) => {
            "the clean shutdown did not finish in time; the link was cut".into()
        }
        (r, None) => format!("the link closed ({r:?})"),
    }
}

impl LinkEvent {
    /// For [`LinkEvent::LinkClosed`]: [`describe_close`]; otherwise `None`.
    pub fn close_description(&self) -> Option<String> {
        match self {
            LinkEvent::LinkClosed { reason, transport } => {
                Some(describe_close(reason, transport.as_ref()))
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Options, errors

/// Settings of one link runtime.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// The core's link settings (our LNK_CONN, keepalive, timeouts).
    pub config: LinkConfig,
    /// A name for logs and thread names (default: the peer's address).
    pub name: Option<String>,
    /// Longest a write may block before the link is declared broken (default 10 s).
    pub write_timeout: Duration,
    /// Input chunks that may wait for the driver (default 4).
    pub input_depth: usize,
    /// Unread events at which the reader stops reading (default 1024).
    pub event_backlog: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            config: LinkConfig {
                salt_seed: salt_seed(),
                ..LinkConfig::default()
            },
            name: None,
            write_timeout: Duration::from_secs(10),
            input_depth: 4,
            event_backlog: 1024,
        }
    }
}

/// A salt seed that differs between links (time and a counter, mixed).
pub fn salt_seed() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ (u64::from(N.fetch_add(1, Ordering::Relaxed)) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u32
}

/// Why a link command or [`spawn`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The core refused the command (nothing was sent).
    Send(SendError),
    /// The link is closed (its threads ended).
    Closed,
    /// The link settings are unusable.
    Config(ConfigError),
    /// The socket could not be set up or a thread not started.
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// What failed.
        message: String,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Send(e) => write!(f, "command refused: {e}"),
            LinkError::Closed => f.write_str("the link is closed"),
            LinkError::Config(e) => write!(f, "bad link configuration: {e}"),
            LinkError::Io { message, .. } => write!(f, "cannot start the link: {message}"),
        }
    }
}

impl std::error::Error for LinkError {}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        LinkError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// State and counters of a link, from [`LinkHandle::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Open, closing or closed.
    pub state: LinkState,
    /// The core's counters.
    pub stats: LinkStats,
    /// Open transactions we opened.
    pub open_ours: usize,
    /// Open transactions the peer opened.
    pub open_theirs: usize,
    /// Extensions on, once the peer's LNK_CONN arrived.
    pub extensions: Option<Extensions>,
    /// The peer's LNK_CONN, once received.
    pub peer_conn: Option<ConnRepr>,
}

// ---------------------------------------------------------------------------------------
// Handle

enum Op {
    Open {
        msg: Message,
        flags: Flags,
        circuit: Option<TxnId>,
    },
    Send {
        txn: TxnId,
        msg: Message,
        flags: Flags,
    },
    Reply {
        txn: TxnId,
        error: u32,
    },
    Delete(TxnId),
    Abort(TxnId),
    OneWay {
        msg: Message,
        reply: bool,
        circuit: Option<TxnId>,
    },
    Close,
    Status,
    Shutdown,
}

enum Done {
    Unit,
    Txn(TxnId),
    Status(Box<LinkStatus>),
}

type ReplyTx = SyncSender<Result<Done, SendError>>;

/// What wakes the driver.
enum Wake {
    Read(ReadOutcome),
    Command(Box<Op>, Option<ReplyTx>),
    /// The last handle is gone.
    Dropped,
}

struct Shared {
    tx: SyncSender<Wake>,
    driver: Mutex<Option<JoinHandle<()>>>,
    name: String,
    peer: SocketAddr,
    local: SocketAddr,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Fails at once if the driver already ended (its receiver is gone).
        let _ = self.tx.send(Wake::Dropped);
        let driver = self
            .driver
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(j) = driver {
            if j.thread().id() != thread::current().id() && j.join().is_err() {
                log::error!("{}: the link's driver thread panicked", self.name);
            }
        }
    }
}

/// Issues commands to a link. `Send + Sync + Clone`; when the last clone is dropped the link
/// shuts down and its threads are joined.
#[derive(Clone)]
pub struct LinkHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkHandle")
            .field("name", &self.shared.name)
            .field("peer", &self.shared.peer)
            .finish()
    }
}

impl LinkHandle {
    fn call(&self, op: Op) -> Result<Done, LinkError> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.shared
            .tx
            .send(Wake::Command(Box::new(op), Some(rtx)))
            .map_err(|_| LinkError::Closed)?;
        match rrx.recv() {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(SendError::Closed)) => Err(LinkError::Closed),
            Ok(Err(e)) => Err(LinkError::Send(e)),
            Err(_) => Err(LinkError::Closed),
        }
    }

    fn unit(&self, op: Op) -> Result<(), LinkError> {
        self.call(op).map(|_| ())
    }

    /// Opens a transaction with `msg` (CREATE, plus DELETE/ABORT from `flags`), stacked on
    /// `circuit` (`None`: circuit 0).
    pub fn open(
        &self,
        msg: Message,
        flags: Flags,
        circuit: Option<TxnId>,
    ) -> Result<TxnId, LinkError> {
        match self.call(Op::Open {
            msg,
            flags,
            circuit,
        })? {
            Done::Txn(t) => Ok(t),
            _ => Err(LinkError::Closed),
        }
    }

    /// Sends `msg` in `txn` (DELETE/ABORT from `flags`).
    pub fn send(&self, txn: TxnId, msg: Message, flags: Flags) -> Result<(), LinkError> {
        self.unit(Op::Send { txn, msg, flags })
    }

    /// Answers and closes our direction of `txn` with LNK_ERROR `error`.
    pub fn reply(&self, txn: TxnId, error: u32) -> Result<(), LinkError> {
        self.unit(Op::Reply { txn, error })
    }

    /// Closes our direction of `txn` (LNK_ERROR|DELETE, error 0).
    pub fn delete(&self, txn: TxnId) -> Result<(), LinkError> {
        self.unit(Op::Delete(txn))
    }

    /// Aborts `txn` (LNK_ERROR|ABORT|DELETE).
    pub fn abort(&self, txn: TxnId) -> Result<(), LinkError> {
        self.unit(Op::Abort(txn))
    }

    /// Sends a one-way message (REPLY set if `reply`), on `circuit` (`None`: circuit 0).
    pub fn send_one_way(
        &self,
        msg: Message,
        reply: bool,
        circuit: Option<TxnId>,
    ) -> Result<(), LinkError> {
        self.unit(Op::OneWay {
            msg,
            reply,
            circuit,
        })
    }

    /// Starts a clean shutdown (LNK_CONN DELETE exchange; open transactions run to their
    /// end). [`LinkEvent::LinkClosed`] follows when it completes or times out.
    pub fn close(&self) -> Result<(), LinkError> {
        self.unit(Op::Close)
    }

    /// Ends the link now, whatever other handles exist: our LNK_CONN DELETEs are sent
    /// best-effort, the socket is closed, open transactions end with LOSTLINK. Returns when
    /// the driver has done it (at once if the link is already closed).
    pub fn shutdown(&self) {
        let _ = self.call(Op::Shutdown);
    }

    /// State and counters.
    pub fn status(&self) -> Result<LinkStatus, LinkError> {
        match self.call(Op::Status)? {
            Done::Status(s) => Ok(*s),
            _ => Err(LinkError::Closed),
        }
    }

    /// The name used in logs.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Our socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }
}

// ---------------------------------------------------------------------------------------
// Events

/// The events of one link, in order. Ends (`recv` returns `None`) after
/// [`LinkEvent::LinkClosed`] once the driver exited. Dropping it is allowed: the link goes on,
/// and transactions the peer opens are then refused with NOSUPP.
pub struct LinkEvents {
    rx: Receiver<LinkEvent>,
    gate: Arc<Gate>,
}

impl fmt::Debug for LinkEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkEvents")
            .field("backlog", &self.gate.backlog())
            .finish()
    }
}

impl LinkEvents {
    fn took(&self, ev: LinkEvent) -> LinkEvent {
        self.gate.consumed();
        ev
    }

    /// The next event, blocking; `None` when the link is gone and every event was taken.
    pub fn recv(&self) -> Option<LinkEvent> {
        self.rx.recv().ok().map(|e| self.took(e))
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<LinkEvent, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map(|e| self.took(e))
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Result<LinkEvent, TryRecvError> {
        self.rx.try_recv().map(|e| self.took(e))
    }
}

impl Iterator for LinkEvents {
    type Item = LinkEvent;
    fn next(&mut self) -> Option<LinkEvent> {
        self.recv()
    }
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.gate.detach();
    }
}

// ---------------------------------------------------------------------------------------
// Spawning

/// Stack of the driver thread: the boxed connection is built on it first (about 290 KB, a
/// few copies in a debug build).
const DRIVER_STACK: usize = 8 << 20;

/// Runs a link over `stream` (connected, in plaintext mode) on new threads. Our LNK_CONN is
/// the first frame sent and [`LinkEvent::Connected`] the first event.
pub fn spawn(stream: TcpStream, opts: LinkOptions) -> Result<(LinkHandle, LinkEvents), LinkError> {
    spawn_inner(stream, opts, None)
}

/// Like [`spawn`], over the established secure channel `ch` (from
/// [`crate::secure::dial_handshake`]): the DMSG stream travels in its records. A record that
/// fails ends the link with [`TransportEnd::Secure`].
pub fn spawn_secure(
    stream: TcpStream,
    opts: LinkOptions,
    ch: SecureChannel,
) -> Result<(LinkHandle, LinkEvents), LinkError> {
    spawn_inner(stream, opts, Some(Box::new(ch)))
}

fn spawn_inner(
    stream: TcpStream,
    opts: LinkOptions,
    sec: Option<Box<SecureChannel>>,
) -> Result<(LinkHandle, LinkEvents), LinkError> {
    let peer = stream.peer_addr()?;
    let local = stream.local_addr()?;
    let name = opts.name.clone().unwrap_or_else(|| peer.to_string());
    stream.set_nodelay(true)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(Some(opts.write_timeout.max(Duration::from_millis(1))))?;
    let read_half = stream.try_clone()?;

    let (tx, rx) = mpsc::sync_channel::<Wake>(opts.input_depth.max(1));
    let (etx, erx) = mpsc::channel::<LinkEvent>();
    let gate = Gate::new(opts.event_backlog);
    let (init_tx, init_rx) = mpsc::sync_channel::<Result<(), LinkError>>(1);

    let reader_tx = tx.clone();
    let driver_gate = gate.clone();
    let driver_name = name.clone();
    let config = opts.config;
    let count = ThreadCount::enter();
    let driver = thread::Builder::new()
        .name(format!("dmsg-link {name}"))
        .stack_size(DRIVER_STACK)
        .spawn(move || {
            let _count = count;
            let clock = Clock::new();
            let conn = match HostConnection::new(clock.now(), &config, DefaultCrc::default()) {
                Ok(c) => Box::new(c),
                Err(e) => {
                    let _ = init_tx.send(Err(LinkError::Config(e)));
                    return;
                }
            };
            let reader = match spawn_reader(
                format!("dmsg-read {driver_name}"),
                read_half,
                reader_tx,
                driver_gate.clone(),
                Wake::Read,
            ) {
                Ok(j) => j,
                Err(e) => {
                    let _ = init_tx.send(Err(e.into()));
                    return;
                }
            };
            let _ = init_tx.send(Ok(()));
            Driver {
                conn,
                stream,
                clock,
                events: Some(etx),
                gate: driver_gate,
                name: driver_name,
                transport: None,
                out: vec![0u8; 64 * 1024],
                sec,
                plain: Vec::new(),
            }
            .run(rx, reader);
        })?;
    match init_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = driver.join();
            return Err(e);
        }
        Err(_) => {
            let _ = driver.join();
            return Err(LinkError::Closed);
        }
    }
    let handle = LinkHandle {
        shared: Arc::new(Shared {
            tx,
            driver: Mutex::new(Some(driver)),
            name,
            peer,
            local,
        }),
    };
    Ok((handle, LinkEvents { rx: erx, gate }))
}

// ---------------------------------------------------------------------------------------
// Driver

struct Driver {
    conn: Box<HostConnection>,
    stream: TcpStream,
    clock: Clock,
    /// `None` once the application dropped its [`LinkEvents`].
    events: Option<Sender<LinkEvent>>,
    gate: Arc<Gate>,
    name: String,
    transport: Option<TransportEnd>,
    out: Vec<u8>,
    /// The secure channel, when the link runs over one.
    sec: Option<Box<SecureChannel>>,
    /// Plaintext of one record on its way to the connection.
    plain: Vec<u8>,
}

/// How many times in a row `handle_input` may use nothing after a full drain before the
/// driver gives up on the link (the contract says it cannot happen; this bounds the loop).
const STALL_LIMIT: u32 = 3;

impl Driver {
    fn run(mut self, rx: Receiver<Wake>, reader: JoinHandle<()>) {
        let now = self.clock.now();
        self.drain(now);
        log::debug!("{}: link up, LNK_CONN sent", self.name);
        loop {
            if self.conn.is_closed() && self.conn.pending_transmit() == 0 {
                break;
            }
            let wake = match self.conn.poll_timeout() {
                Some(deadline) => {
                    let now = self.clock.now();
                    // At least 1 ms, so a deadline the core did not move cannot spin us.
                    let wait = Clock::until(now, deadline).max(Duration::from_millis(1));
                    rx.recv_timeout(wait)
                }
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let now = self.clock.now();
            match wake {
                Ok(Wake::Read(ReadOutcome::Data(bytes))) => self.feed(now, &bytes),
                Ok(Wake::Read(ReadOutcome::Eof)) => {
                    if let Some(Err(e)) = self.sec.as_mut().map(|c| c.handle_eof()) {
                        self.transport.get_or_insert(TransportEnd::Secure(e));
                    }
                    self.transport.get_or_insert(TransportEnd::Eof);
                    self.conn.handle_close();
                }
                Ok(Wake::Read(ReadOutcome::Error(e))) => {
                    self.transport.get_or_insert(TransportEnd::ReadError {
                        kind: e.kind(),
                        message: e.to_string(),
                    });
                    self.conn.handle_close();
                }
                Ok(Wake::Command(op, reply)) => {
                    let result = self.execute(now, *op);
                    self.drain(now);
                    if let Some(r) = reply {
                        let _ = r.send(result);
                    }
                }
                Ok(Wake::Dropped) | Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown(now);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Step 3 of the contract: the timer, whenever its instant has passed.
            if self.conn.poll_timeout().is_some_and(|t| now >= t) {
                self.conn.handle_timeout(now);
            }
            self.drain(now);
        }
        // The link is closed and everything queued was written; then our authenticated
        // close, when the link runs over the secure channel.
        if let Some(ch) = self.sec.as_mut() {
            if ch.is_established() && ch.close().is_ok() {
                let mut rec = [0u8; MAX_RECORD_WIRE];
                while let Ok(n @ 1..) = ch.poll_transmit(&mut rec) {
                    if self.stream.write_all(&rec[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.gate.stop();
        // The reader may be blocked sending into a full channel: dropping the receiver
        // fails that send. Commands still queued get `LinkError::Closed`.
        drop(rx);
        if reader.join().is_err() {
            log::error!("{}: the reader thread panicked", self.name);
        }
        log::debug!("{}: link threads done", self.name);
    }

    /// Feeds received bytes: through the secure channel first when there is one.
    fn feed(&mut self, now: Instant, bytes: &[u8]) {
        if self.sec.is_none() {
            return self.feed_plain(now, bytes);
        }
        let mut rest = bytes;
        loop {
            let Some(ch) = self.sec.as_mut() else { return };
            if !ch.plaintext().is_empty() {
                self.plain.clear();
                self.plain.extend_from_slice(ch.plaintext());
                let n = self.plain.len();
                ch.consume(n);
                let plain = std::mem::take(&mut self.plain);
                self.feed_plain(now, &plain);
                self.plain = plain;
                continue;
            }
            if rest.is_empty() || self.conn.is_closed() {
                return;
            }
            match ch.handle_input(now, rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) => {
                    log::warn!("{}: secure channel failed: {e}", self.name);
                    self.transport.get_or_insert(TransportEnd::Secure(e));
                    self.conn.handle_close();
                    self.drain(now);
                    return;
                }
            }
        }
    }

    /// Feeds received plaintext per the contract: what `handle_input` leaves is fed again
    /// after draining.
    fn feed_plain(&mut self, now: Instant, bytes: &[u8]) {
        let mut rest = bytes;
        let mut stalls = 0;
        while !rest.is_empty() {
            let used = self.conn.handle_input(now, rest);
            rest = &rest[used..];
            self.drain(now);
            if used == 0 {
                stalls += 1;
                if stalls >= STALL_LIMIT {
                    log::error!(
                        "{}: the link stopped taking input with {} bytes left; closing it",
                        self.name,
                        rest.len()
                    );
                    self.conn.handle_close();
                    self.drain(now);
                    return;
                }
            } else {
                stalls = 0;
            }
        }
    }

    fn execute(&mut self, now: Instant, op: Op) -> Result<Done, SendError> {
        let first = self.try_op(now, &op);
        if let Err(SendError::WouldBlock { .. }) = first {
            // The queue is drained after every step, so this is rare: drain and retry once.
            self.drain(now);
            return self.try_op(now, &op);
        }
        first
    }

    fn try_op(&mut self, now: Instant, op: &Op) -> Result<Done, SendError> {
        let c = &mut self.conn;
        match op {
            Op::Open {
                msg,
                flags,
                circuit,
            } => c
                .open(now, &msg.as_outgoing(), *flags, *circuit)
                .map(Done::Txn),
            Op::Send { txn, msg, flags } => c
                .send(now, *txn, &msg.as_outgoing(), *flags)
                .map(|()| Done::Unit),
            Op::Reply { txn, error } => c.reply(now, *txn, *error).map(|()| Done::Unit),
            Op::Delete(txn) => c.delete(now, *txn).map(|()| Done::Unit),
            Op::Abort(txn) => c.abort(now, *txn).map(|()| Done::Unit),
            Op::OneWay {
                msg,
                reply,
                circuit,
            } => c
                .send_one_way(now, &msg.as_outgoing(), *reply, *circuit)
                .map(|()| Done::Unit),
            Op::Close => c.close(now).map(|()| Done::Unit),
            Op::Status => Ok(Done::Status(Box::new(LinkStatus {
                state: c.state(),
                stats: *c.stats(),
                open_ours: c.open_transactions(Side::Ours),
                open_theirs: c.open_transactions(Side::Theirs),
                extensions: c.extensions(),
                peer_conn: c.peer_conn().copied(),
            }))),
            Op::Shutdown => {
                self.shutdown(now);
                Ok(Done::Unit)
            }
        }
    }

    /// Ends the link now: our LNK_CONN DELETEs best-effort, then the transport is gone.
    fn shutdown(&mut self, now: Instant) {
        if self.conn.is_closed() {
            return;
        }
        if self.conn.close(now).is_ok() {
            self.flush(now);
        }
        self.transport.get_or_insert(TransportEnd::Shutdown);
        self.conn.handle_close();
    }

    /// Step 1 of the contract: every queued byte to the socket. A failed write ends the link.
    fn flush(&mut self, now: Instant) {
        loop {
            let n = self.conn.poll_transmit(now, &mut self.out);
            if n == 0 {
                return;
            }
            if let Err(e) = self.write(n) {
                self.transport.get_or_insert(e);
                // Drops the rest of the queue; poll_transmit returns 0 from now on.
                self.conn.handle_close();
            }
        }
    }

    /// Writes `self.out[..n]`, sealed into records when the link runs the secure channel.
    fn write(&mut self, n: usize) -> Result<(), TransportEnd> {
        let io_end = |e: io::Error| TransportEnd::WriteError {
            kind: e.kind(),
            message: e.to_string(),
        };
        let Some(ch) = self.sec.as_mut() else {
            return self.stream.write_all(&self.out[..n]).map_err(io_end);
        };
        let mut rec = [0u8; MAX_RECORD_WIRE];
        let mut rest = &self.out[..n];
        loop {
            let taken = ch.send(rest).map_err(TransportEnd::Secure)?;
            rest = &rest[taken..];
            let m = ch.poll_transmit(&mut rec).map_err(TransportEnd::Secure)?;
            self.stream.write_all(&rec[..m]).map_err(io_end)?;
            if rest.is_empty() && !ch.wants_transmit() {
                return Ok(());
            }
            if taken == 0 && m == 0 {
                // Cannot happen on an established channel; never spin.
                return Err(TransportEnd::Secure(dmsg_core::secure::SecureError::Closed));
            }
        }
    }

    /// Steps 1 and 2 of the contract, until neither produces anything.
    fn drain(&mut self, now: Instant) {
        loop {
            self.flush(now);
            let Some(ev) = self.conn.poll_event() else {
                return;
            };
            let Some(mut ev) = own_event(ev) else {
                log::debug!(
                    "{}: an event of a kind this runtime does not know",
                    self.name
                );
                continue;
            };
            if let LinkEvent::LinkClosed { transport, .. } = &mut ev {
                *transport = self.transport.clone();
            }
            self.log_event(&ev);
            self.gate.produced();
            let unsent = match &self.events {
                Some(tx) => tx.send(ev).err().map(|mpsc::SendError(ev)| ev),
                None => Some(ev),
            };
            if let Some(ev) = unsent {
                // The application dropped its events: from now on the runtime answers alone.
                self.gate.detach();
                self.events = None;
                self.react_unattended(now, &ev);
            }
        }
    }

    /// With nobody reading events, refuse what the peer opens so it does not wait forever.
    fn react_unattended(&mut self, now: Instant, ev: &LinkEvent) {
        if let LinkEvent::Opened { txn, .. } = ev {
            let _ = self.conn.reply(now, *txn, errcode::txn::NOSUPP);
        }
    }

    fn log_event(&self, ev: &LinkEvent) {
        let n = &self.name;
        match ev {
            LinkEvent::PeerConn { conn, extensions } => log::info!(
                "{n}: peer LNK_CONN: type {} label '{}' extensions {extensions}",
                conn.peer_type,
                conn.peer_label
            ),
            LinkEvent::ConnAnswered { error } if *error != 0 => log::info!(
                "{n}: the peer refused our LNK_CONN with error {error:#x} ({}); one-way \
                 traffic still works",
                errcode::txn::name(*error).unwrap_or("?")
            ),
            LinkEvent::Opened { txn, msg } => {
                log::debug!("{n}: peer opened {} msgid {}", msg.command(), txn.msgid())
            }
            LinkEvent::Closed { txn, error, end } => log::debug!(
                "{n}: transaction {} ended {end:?} error {error:#x}",
                txn.msgid()
            ),
            LinkEvent::OneWay { msg } => log::trace!("{n}: one-way {}", msg.command()),
            LinkEvent::LinkClosed { reason, transport } => {
                let why = describe_close(reason, transport.as_ref());
                let v = self.conn.stats().violations;
                if reason.is_clean() || transport == &Some(TransportEnd::Shutdown) {
                    log::info!("{n}: link closed: {why}");
                } else {
                    log::warn!("{n}: link closed: {why}");
                }
                if v.total() > 0 {
                    log::info!("{n}: peer protocol violations: {v:?}");
                }
            }
            _ => {}
        }
    }
}
