//! One-way throughput: a stream of messages from a sender thread to a receiver thread over a
//! fresh loopback TCP connection.
//!
//! DMSG sends one-way messages (DBG_SHELL, msgid 0, no transaction; the payload is the aux
//! data); the baseline sends length-prefixed payloads. A round's time runs from the sender's
//! first message (after the link is set up) to the receiver's last one.

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant as WallClock};

use dmsg_core::link::{Event, Outgoing, SendError};
use dmsg_core::wire::Command;

use super::engine::{Endpoint, EngineError, Flavor, Plain, ReadOutcome, Then, Wait, WithSession};
use super::link_kind::{link_config, socket_pair, Kind, LINK_THREAD_STACK};
use super::{cpu, raw, secure_link};
use crate::clock::Clock;

/// What one round measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub payload_bytes: u64,
    /// Bytes on the wire from sender to receiver.
    pub wire_bytes: u64,
    /// From the first message sent to the last one received.
    pub elapsed: Duration,
    /// CPU time of the sending thread over the round (`None` where not measurable).
    pub send_cpu: Option<Duration>,
    /// CPU time of the receiving thread over the round.
    pub recv_cpu: Option<Duration>,
}

const SETUP_LIMIT: Duration = Duration::from_secs(10);

/// Runs one round of `count` messages of `size` bytes on a new connection from `listener`.
pub fn round(kind: Kind, listener: &TcpListener, count: u64, size: usize) -> Result<Round, String> {
    let (tx_sock, rx_sock) = socket_pair(listener).map_err(|e| format!("loopback connect: {e}"))?;
    match kind {
        Kind::Raw => run_pair(
            tx_sock,
            rx_sock,
            (count, size, false),
            raw_sender,
            raw_receiver,
        ),
        Kind::Dmsg | Kind::Secure => run_pair(
            tx_sock,
            rx_sock,
            (count, size, kind == Kind::Secure),
            dmsg_sender::<Plain>,
            dmsg_receiver::<Plain>,
        ),
        Kind::Session => run_pair(
            tx_sock,
            rx_sock,
            (count, size, false),
            dmsg_sender::<WithSession>,
            dmsg_receiver::<WithSession>,
        ),
    }
}

/// What the sender thread is given.
struct SendSide {
    stream: TcpStream,
    secure: bool,
    count: u64,
    size: usize,
    ready: Arc<Barrier>,
    done: mpsc::Receiver<()>,
}

/// What the receiver thread is given.
struct RecvSide {
    stream: TcpStream,
    secure: bool,
    count: u64,
    ready: Arc<Barrier>,
    done: mpsc::Sender<()>,
}

/// What one side measured: the sender's start (the receiver's end), the bytes it wrote
/// (payload bytes received) and its CPU time.
type SideResult = Result<(WallClock, u64, Option<Duration>), String>;
type SendResult = SideResult;
type RecvResult = SideResult;

/// Runs a sender and a receiver; `(count, size, secure)`.
fn run_pair(
    tx_sock: TcpStream,
    rx_sock: TcpStream,
    (count, size, secure): (u64, usize, bool),
    sender: fn(SendSide) -> SendResult,
    receiver: fn(RecvSide) -> RecvResult,
) -> Result<Round, String> {
    let ready = Arc::new(Barrier::new(2));
    let (done_tx, done_rx) = mpsc::channel();
    let send_side = SendSide {
        stream: tx_sock,
        secure,
        count,
        size,
        ready: ready.clone(),
        done: done_rx,
    };
    let recv_side = RecvSide {
        stream: rx_sock,
        secure,
        count,
        ready,
        done: done_tx,
    };
    let spawn = |name: &str| {
        thread::Builder::new()
            .name(name.into())
            .stack_size(LINK_THREAD_STACK)
    };
    let s = spawn("bench-send")
        .spawn(move || sender(send_side))
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let r = spawn("bench-recv")
        .spawn(move || receiver(recv_side))
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let recv = r
        .join()
        .map_err(|_| "the receiver thread panicked".to_string())?;
    let send = s
        .join()
        .map_err(|_| "the sender thread panicked".to_string())?;
    // The receiver's failure first: it usually explains the sender's (a reset socket).
    let (end, payload_bytes, recv_cpu) = recv.map_err(|e| format!("receiver: {e}"))?;
    let (start, wire_bytes, send_cpu) = send.map_err(|e| format!("sender: {e}"))?;
    Ok(Round {
        messages: count,
        payload_bytes,
        wire_bytes,
        elapsed: end.saturating_duration_since(start),
        send_cpu,
        recv_cpu,
    })
}

fn raw_sender(mut side: SendSide) -> SendResult {
    let payload = vec![0xA5u8; side.size];
    side.ready.wait();
    let cpu = cpu::thread_cpu_time();
    let start = WallClock::now();
    let wire = raw::send(&mut side.stream, side.count, &payload).map_err(|e| e.to_string())?;
    let cpu = cpu::since(cpu);
    // Keep the socket open until the receiver has everything.
    let _ = side.done.recv();
    Ok((start, wire, cpu))
}

fn raw_receiver(mut side: RecvSide) -> RecvResult {
    side.ready.wait();
    let cpu = cpu::thread_cpu_time();
    let bytes = raw::receive(&mut side.stream, side.count).map_err(|e| e.to_string())?;
    let end = WallClock::now();
    let cpu = cpu::since(cpu);
    let _ = side.done.send(());
    Ok((end, bytes, cpu))
}

/// An endpoint on `stream`; with `secure = Some(initiator)`, inside the secure channel
/// (handshake first).
pub fn endpoint<S: Flavor>(
    mut stream: TcpStream,
    id: u64,
    clock: Clock,
    secure: Option<bool>,
) -> Result<Endpoint<S>, EngineError> {
    let ch = match secure {
        Some(initiator) => Some(secure_link::handshake(&mut stream, initiator)?),
        None => None,
    };
    let ep = Endpoint::<S>::new(stream, &link_config::<S>(id), clock)?;
    Ok(match ch {
        Some(ch) => ep.with_secure(ch),
        None => ep,
    })
}

fn dmsg_sender<S: Flavor>(side: SendSide) -> SendResult {
    let fail = |e: EngineError| e.to_string();
    let clock = Clock::new();
    let ready = side.ready.clone();
    let setup = endpoint::<S>(side.stream, 0xA11CE, clock, side.secure.then_some(true))
        .and_then(|mut ep| ep.establish(SETUP_LIMIT).map(|()| ep));
    // Meet the receiver at the barrier even on failure, so it does not wait forever.
    ready.wait();
    let mut ep = setup.map_err(fail)?;
    let payload = vec![0xA5u8; side.size];
    let msg = Outgoing::new(Command::DbgShell).with_aux(&payload);
    let wire_before = ep.io.bytes_out;
    let cpu = cpu::thread_cpu_time();
    let start = WallClock::now();
    let mut sent = 0;
    while sent < side.count {
        let now = ep.now();
        let mut queued = 0;
        while sent < side.count {
            match ep.conn.send_one_way(now, &msg, false, None) {
                Ok(()) => {
                    sent += 1;
                    queued += 1;
                }
                Err(SendError::WouldBlock { .. }) => break,
                Err(e) => return Err(fail(e.into())),
            }
        }
        let wrote = ep.flush().map_err(fail)?;
        // Acks and keepalives from the receiver: look without waiting, or wait a tick when
        // nothing could be sent (a full session window waits for acks).
        let wait = if queued == 0 && wrote == 0 {
            Wait::Tick
        } else {
            Wait::No
        };
        if peer_gone(ep.read(wait)).map_err(fail)? {
            if sent == side.count {
                // The receiver had everything and closed.
                break;
            }
            return Err(format!(
                "the receiver closed after {sent} messages were sent"
            ));
        }
        ep.pump(|_, _| Then::Nothing).map_err(fail)?;
        ep.tick().map_err(fail)?;
    }
    ep.flush().map_err(fail)?;
    let cpu = cpu::since(cpu);
    let wire = ep.io.bytes_out - wire_before;
    // Keep serving acks until the receiver has everything (a session's window may still
    // hold frames to retransmit), then close.
    loop {
        match side.done.try_recv() {
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if peer_gone(ep.read(Wait::Tick)).map_err(fail)? {
            break;
        }
        ep.pump(|_, _| Then::Nothing).map_err(fail)?;
        ep.tick().map_err(fail)?;
        ep.flush().map_err(fail)?;
    }
    Ok((start, wire, cpu))
}

/// Whether a read found the receiver gone: EOF, or a reset (it closed with bytes of ours
/// unread, e.g. a keepalive that crossed its close; it only closes once it has everything).
fn peer_gone(r: Result<ReadOutcome, EngineError>) -> Result<bool, EngineError> {
    match r {
        Ok(ReadOutcome::Eof) => Ok(true),
        Ok(_) => Ok(false),
        Err(EngineError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(true),
        Err(e) => Err(e),
    }
}

fn dmsg_receiver<S: Flavor>(side: RecvSide) -> RecvResult {
    let fail = |e: EngineError| e.to_string();
    let setup = endpoint::<S>(
        side.stream,
        0xB0B,
        Clock::new(),
        side.secure.then_some(false),
    )
    .and_then(|mut ep| ep.establish(SETUP_LIMIT).map(|()| ep));
    side.ready.wait();
    let mut ep = setup.map_err(fail)?;
    let cpu = cpu::thread_cpu_time();
    let (mut got, mut bytes) = (0u64, 0u64);
    while got < side.count {
        if ep.read(Wait::Tick).map_err(fail)? == ReadOutcome::Eof {
            return Err(format!(
                "the sender closed after {got} of {} messages",
                side.count
            ));
        }
        ep.pump(|ev, _| {
            if let Event::OneWay { msg } = ev {
                got += 1;
                bytes += msg.aux.len() as u64;
            }
            Then::Nothing
        })
        .map_err(fail)?;
        ep.tick().map_err(fail)?;
        ep.flush().map_err(fail)?;
    }
    let end = WallClock::now();
    let cpu = cpu::since(cpu);
    let _ = side.done.send(());
    Ok((end, bytes, cpu))
}
