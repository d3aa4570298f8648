//! dmsg-core on an emulated Cortex-M: two links talk to each other in memory.
//!
//! Runs on QEMU's `mps2-an385` board (`cargo run --release` in this directory; see
//! `.cargo/config.toml`). Two scenarios, each with two [`Connection`]s wired back to back
//! through byte pipes, driven by the core's drive contract:
//!
//! 1. **plain** (`McuConnection`-sized links, no session): LNK_CONN both ways, a LNK_SPAN
//!    from the client (the server checks its labels), 8 DBG_SHELL transactions with aux data
//!    of 1 to 1,024 bytes (odd ones in two frames) that the server echoes and the client
//!    compares byte for byte, the span closed from both sides, then a clean shutdown.
//! 2. **reliable** (`ReliableMcuConnection`, both ends offer the session): the same, and in
//!    the middle the transport is cut with frames in flight in both directions; the client
//!    reconnects, the server routes the new stream with `classify_stream`, and the session
//!    must deliver every lost frame: all 8 transactions still complete with exact echoes.
//!
//! Every check is printed (`ok` or `FAIL`). The exit code, through semihosting, is 0 when all
//! checks passed and 1 otherwise (a panic also exits with 1).
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use dmsg_core::crc::SoftCrc32c1;
use dmsg_core::link::{
    classify_stream, CloseReason, Connection, Event, LinkConfig, NoSession, Outgoing, Reliable,
    SendError, SessionOffer, SessionSlot, StreamStart, TxnEnd, TxnId,
};
use dmsg_core::node::Node;
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::SpanRepr;
use dmsg_core::wire::{Body, Command, Flags, Label};

/// The links under test: the core's MCU sizes (1 KiB aux, 8-block headers, 2 KiB output
/// queue, 8 transactions per side, the 1 KiB-table CRC); `S` selects the session storage.
type Link<S> = Connection<{ 8 * 64 + 1024 }, 1024, 2048, 8, SoftCrc32c1, S>;
/// A one-link `Node` with the embassy leaf's link parameters and `SPANS` span slots.
type LeafNode<const SPANS: usize> =
    Node<1, SPANS, 2, 8, { 8 * 64 + 1024 }, 1024, 1024, 8, SoftCrc32c1>;
/// `ReliableMcuConnection`'s session storage: a 12-frame, 2 KiB retransmit window.
type Session = Reliable<SoftCrc32c1, 12, 2048, 0, 0>;

/// Transactions the client opens (the link's table holds 8 per side).
const TXNS: usize = 8;
/// Aux length of each transaction's first frame: 1 byte to the 1 KiB maximum.
const FIRST_LEN: [usize; TXNS] = [1, 64, 100, 512, 1000, 1024, 7, 333];
/// The span's labels.
const PFS_LABEL: &str = "qemu-leaf";
const PEER_LABEL: &str = "cortex-m";
/// Rounds before a scenario is declared stuck.
const MAX_ROUNDS: u32 = 20_000;
/// Emulated time per round.
const TICK: Duration = Duration::from_millis(2);

/// Odd transactions carry a second frame.
fn parts(i: usize) -> u8 {
    if i % 2 == 1 {
        2
    } else {
        1
    }
}

/// Aux length of part `p` of transaction `i`.
fn part_len(i: usize, p: u8) -> usize {
    match p {
        0 => FIRST_LEN[i],
        _ => 200 + 10 * i,
    }
}

/// Byte `j` of part `p` of transaction `i`.
fn part_byte(i: usize, p: u8, j: usize) -> u8 {
    (i * 31 + usize::from(p) * 7 + j * 13) as u8
}

/// Writes part `p` of transaction `i` into `out`; returns its length.
fn fill_part(i: usize, p: u8, out: &mut [u8; 1024]) -> usize {
    let n = part_len(i, p);
    for (j, b) in out.iter_mut().take(n).enumerate() {
        *b = part_byte(i, p, j);
    }
    n
}

fn part_matches(i: usize, p: u8, aux: &[u8]) -> bool {
    aux.len() == part_len(i, p)
        && aux
            .iter()
            .enumerate()
            .all(|(j, &b)| b == part_byte(i, p, j))
}

/// Check counters, printed as they go.
struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, scenario: &str, ok: bool, what: &str) {
        if ok {
            self.passed += 1;
            hprintln!("  ok   [{}] {}", scenario, what);
        } else {
            self.failed += 1;
            hprintln!("  FAIL [{}] {}", scenario, what);
        }
    }
}

/// One direction of the in-memory transport.
struct Pipe {
    buf: [u8; 16 * 1024],
    len: usize,
    overflowed: bool,
}

impl Pipe {
    const fn new() -> Pipe {
        Pipe {
            buf: [0; 16 * 1024],
            len: 0,
            overflowed: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        match self.buf.get_mut(self.len..self.len + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.len += data.len();
            }
            None => self.overflowed = true,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Drops everything in flight (a cut transport); returns how many bytes were lost.
    fn lose(&mut self) -> usize {
        core::mem::replace(&mut self.len, 0)
    }
}

/// A command an endpoint still has to issue (retried while the link says `WouldBlock`).
#[derive(Clone, Copy)]
enum Action {
    /// Server: echo the aux data in `scratch[..len]` on `txn`, with DELETE if `delete`.
    Echo {
        txn: TxnId,
        len: usize,
        delete: bool,
    },
    /// Server: close our side of the client's span.
    CloseSpan(TxnId),
    /// Client: the second frame of transaction `i`, with DELETE.
    SecondPart { txn: TxnId, i: usize },
}

/// What an endpoint saw, and what it still has to do.
struct State {
    connected: bool,
    peer_conn_ok: bool,
    conn_answered: Option<u32>,
    link_closed: Option<CloseReason>,
    suspended: u32,
    resumed: u32,
    /// Events that broke an expectation (wrong data, unexpected end, ...).
    bad: u32,
    pending: Option<Action>,
    scratch: [u8; 1024],
    // Client side.
    span: Option<TxnId>,
    span_closed: bool,
    span_close_sent: bool,
    txns: [Option<TxnId>; TXNS],
    echoes_ok: [u8; TXNS],
    completed: [bool; TXNS],
    next: usize,
    close_sent: bool,
    // Server side.
    span_seen: Option<TxnId>,
    span_labels_ok: bool,
    served_ok: u32,
}

impl State {
    const fn new() -> State {
        State {
            connected: false,
            peer_conn_ok: false,
            conn_answered: None,
            link_closed: None,
            suspended: 0,
            resumed: 0,
            bad: 0,
            pending: None,
            scratch: [0; 1024],
            span: None,
            span_closed: false,
            span_close_sent: false,
            txns: [None; TXNS],
            echoes_ok: [0; TXNS],
            completed: [false; TXNS],
            next: 0,
            close_sent: false,
            span_seen: None,
            span_labels_ok: false,
            served_ok: 0,
        }
    }

    fn index(&self, txn: TxnId) -> Option<usize> {
        self.txns.iter().position(|t| *t == Some(txn))
    }

    fn all_completed(&self) -> bool {
        self.completed.iter().all(|c| *c)
    }
}

/// Which end an endpoint plays.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// Reacts to one event; returns a command to issue once the event's borrow ended.
fn on_event(role: Role, st: &mut State, ev: Event<'_>) -> Option<Action> {
    match ev {
        Event::Connected => st.connected = true,
        Event::PeerConn { conn, extensions } => {
            let _ = extensions;
            st.peer_conn_ok = conn.peer_mask == u64::MAX;
        }
        Event::ConnAnswered { error } => st.conn_answered = Some(error),
        Event::Suspended { .. } => st.suspended += 1,
        Event::Resumed { .. } => st.resumed += 1,
        Event::LinkClosed { reason } => st.link_closed = Some(reason),
        Event::Opened { txn, msg } if role == Role::Server => match msg.command() {
            Command::LnkSpan => {
                st.span_seen = Some(txn);
                st.span_labels_ok = matches!(msg.body, Body::Span(s)
                    if s.pfs_label.as_bytes() == PFS_LABEL.as_bytes()
                        && s.peer_label.as_bytes() == PEER_LABEL.as_bytes());
            }
            Command::DbgShell => {
                let len = msg.aux.len();
                st.scratch[..len].copy_from_slice(msg.aux);
                return Some(Action::Echo {
                    txn,
                    len,
                    delete: msg.flags().contains(Flags::DELETE),
                });
            }
            _ => st.bad += 1,
        },
        Event::Message { txn, msg } if role == Role::Server => {
            if Some(txn) == st.span_seen {
                if msg.flags().contains(Flags::DELETE) {
                    return Some(Action::CloseSpan(txn));
                }
            } else if msg.command() == Command::DbgShell {
                let len = msg.aux.len();
                st.scratch[..len].copy_from_slice(msg.aux);
                return Some(Action::Echo {
                    txn,
                    len,
                    delete: msg.flags().contains(Flags::DELETE),
                });
            } else {
                st.bad += 1;
            }
        }
        Event::Closed { txn, error, end } if role == Role::Server => {
            if Some(txn) == st.span_seen {
                st.span_seen = None;
                st.span_closed = true;
            } else if error == 0 && end == TxnEnd::Completed {
                st.served_ok += 1;
            } else {
                st.bad += 1;
            }
        }
        Event::Message { txn, msg } => {
            if Some(txn) == st.span {
                return None; // no answers on the span before its close
            }
            let Some(i) = st.index(txn) else {
                st.bad += 1;
                return None;
            };
            let p = st.echoes_ok[i];
            if msg.command() == Command::DbgShell && part_matches(i, p, msg.aux) {
                st.echoes_ok[i] += 1;
            } else {
                st.bad += 1;
            }
            let delete = msg.flags().contains(Flags::DELETE);
            if !delete && st.echoes_ok[i] == 1 && parts(i) == 2 {
                return Some(Action::SecondPart { txn, i });
            }
        }
        Event::Closed { txn, error, end } => {
            if Some(txn) == st.span {
                st.span = None;
                st.span_closed = error == 0 && end == TxnEnd::Completed;
            } else if let Some(i) = st.index(txn) {
                st.completed[i] =
                    error == 0 && end == TxnEnd::Completed && st.echoes_ok[i] == parts(i);
                if !st.completed[i] {
                    st.bad += 1;
                }
            } else {
                st.bad += 1;
            }
        }
        _ => st.bad += 1,
    }
    None
}

/// Issues `action`; false while the link has no room for it yet.
fn act<S: SessionSlot<SoftCrc32c1>>(
    link: &mut Link<S>,
    st: &mut State,
    now: Instant,
    action: Action,
) -> bool {
    let res = match action {
        Action::Echo { txn, len, delete } => {
            let msg = Outgoing::new(Command::DbgShell).with_aux(&st.scratch[..len]);
            let flags = if delete {
                Flags::DELETE
            } else {
                Flags::empty()
            };
            link.send(now, txn, &msg, flags)
        }
        Action::CloseSpan(txn) => link.reply(now, txn, 0),
        Action::SecondPart { txn, i } => {
            let n = fill_part(i, 1, &mut st.scratch);
            let msg = Outgoing::new(Command::DbgShell).with_aux(&st.scratch[..n]);
            link.send(now, txn, &msg, Flags::DELETE)
        }
    };
    match res {
        Ok(()) => true,
        Err(SendError::WouldBlock { .. }) => false,
        Err(_) => {
            st.bad += 1;
            true
        }
    }
}

/// Steps 1 and 2 of the drive contract: transmit into `out`, then events (with the
/// reactions). Returns true if anything moved.
fn drain<S: SessionSlot<SoftCrc32c1>>(
    link: &mut Link<S>,
    role: Role,
    st: &mut State,
    now: Instant,
    out: &mut Pipe,
) -> bool {
    let mut moved = false;
    let mut buf = [0u8; 512];
    loop {
        loop {
            let n = link.poll_transmit(now, &mut buf);
            if n == 0 {
                break;
            }
            out.push(&buf[..n]);
            moved = true;
        }
        if let Some(a) = st.pending {
            if !act(link, st, now, a) {
                return moved; // no room yet: leave further events (and input) waiting
            }
            st.pending = None;
            moved = true;
            continue;
        }
        let Some(ev) = link.poll_event() else {
            return moved;
        };
        moved = true;
        st.pending = on_event(role, st, ev);
    }
}

/// Feeds what is in `input` to `link` (drive contract), its output going to `out`.
fn feed<S: SessionSlot<SoftCrc32c1>>(
    link: &mut Link<S>,
    role: Role,
    st: &mut State,
    now: Instant,
    input: &mut Pipe,
    out: &mut Pipe,
) -> bool {
    let mut moved = false;
    while input.len > 0 {
        let used = link.handle_input(now, input.data());
        input.consume(used);
        let drained = drain(link, role, st, now, out);
        moved |= used > 0 || drained;
        if used == 0 && !drained {
            break; // waiting for room (a pending command); next round
        }
    }
    moved
}

/// Step 3 of the drive contract.
fn timers<S: SessionSlot<SoftCrc32c1>>(link: &mut Link<S>, now: Instant) {
    if link.poll_timeout().is_some_and(|t| t <= now) {
        link.handle_timeout(now);
    }
}

/// The client's script: the span after LNK_CONN, then the transactions one at a time as the
/// link takes them, then the span's close, then the link's.
fn client_step<S: SessionSlot<SoftCrc32c1>>(link: &mut Link<S>, st: &mut State, now: Instant) {
    if st.pending.is_some() || !st.peer_conn_ok || st.conn_answered != Some(0) {
        return;
    }
    if st.span.is_none() && !st.span_closed && !st.span_close_sent {
        let (Ok(pfs_label), Ok(peer_label)) = (Label::new(PFS_LABEL), Label::new(PEER_LABEL))
        else {
            st.bad += 1;
            return;
        };
        let body = Body::Span(SpanRepr {
            pfs_label,
            peer_label,
            peer_type: 3,
            ..SpanRepr::default()
        });
        match link.open(
            now,
            &Outgoing::new(Command::LnkSpan).with_body(&body),
            Flags::empty(),
            None,
        ) {
            Ok(txn) => st.span = Some(txn),
            Err(SendError::WouldBlock { .. }) => {}
            Err(_) => st.bad += 1,
        }
        return;
    }
    if st.next < TXNS {
        let i = st.next;
        let n = fill_part(i, 0, &mut st.scratch);
        let msg = Outgoing::new(Command::DbgShell).with_aux(&st.scratch[..n]);
        // Even transactions are one-frame requests (CREATE|DELETE).
        let flags = if parts(i) == 1 {
            Flags::DELETE
        } else {
            Flags::empty()
        };
        match link.open(now, &msg, flags, None) {
            Ok(txn) => {
                st.txns[i] = Some(txn);
                st.next += 1;
            }
            Err(SendError::WouldBlock { .. }) => {}
            Err(_) => {
                st.bad += 1;
                st.next += 1;
            }
        }
        return;
    }
    if !st.all_completed() {
        return;
    }
    if let Some(span) = st.span {
        if !st.span_close_sent {
            match link.reply(now, span, 0) {
                Ok(()) => st.span_close_sent = true,
                Err(SendError::WouldBlock { .. }) => {}
                Err(_) => st.bad += 1,
            }
        }
        return;
    }
    if !st.close_sent {
        match link.close(now) {
            Ok(()) => st.close_sent = true,
            Err(SendError::WouldBlock { .. }) => {}
            Err(_) => st.bad += 1,
        }
    }
}

/// Reconnects a link after a cut transport (reliable links only).
type Reconnect<S> = fn(&mut Link<S>, Instant) -> bool;

/// Runs one scenario and records its checks.
fn scenario<S: SessionSlot<SoftCrc32c1>>(
    name: &str,
    chk: &mut Checks,
    config: fn(u64, u32) -> LinkConfig,
    reconnect: Option<Reconnect<S>>,
) {
    hprintln!(
        "scenario {}: {} bytes per link",
        name,
        core::mem::size_of::<Link<S>>()
    );
    let mut now = Instant::from_millis(1);
    let (Ok(mut a), Ok(mut b)) = (
        Link::<S>::new(now, &config(0xA11CE, 0x1111), SoftCrc32c1),
        Link::<S>::new(now, &config(0xB0B, 0x2222), SoftCrc32c1),
    ) else {
        chk.check(name, false, "both links accept their configuration");
        return;
    };
    let (mut sa, mut sb) = (State::new(), State::new());
    let (mut ab, mut ba) = (Pipe::new(), Pipe::new());
    let mut lost = 0;
    let mut cut = false;
    let mut reconnected = false;
    let mut resume_routed = false;
    let mut rounds = 0;
    while rounds < MAX_ROUNDS && (sa.link_closed.is_none() || sb.link_closed.is_none()) {
        rounds += 1;
        now = now + TICK;
        client_step(&mut a, &mut sa, now);
        drain(&mut a, Role::Client, &mut sa, now, &mut ab);
        if let Some(reconnect) = reconnect {
            // Cut the transport with the fifth transaction's request in flight (and
            // whatever the server had queued), in both directions.
            if !cut && sa.next == 5 {
                cut = true;
                lost = ab.lose() + ba.lose();
                a.handle_close();
                b.handle_close();
                drain(&mut a, Role::Client, &mut sa, now, &mut ab);
                drain(&mut b, Role::Server, &mut sb, now, &mut ba);
                // Whatever a suspended link queues waits for the new transport.
                ab.lose();
                ba.lose();
                now = now + Duration::from_millis(300);
                reconnected = reconnect(&mut a, now);
                drain(&mut a, Role::Client, &mut sa, now, &mut ab);
                // The accepting side routes the new stream by its first frame.
                if let StreamStart::Resume(_) = classify_stream(&SoftCrc32c1, ab.data()) {
                    resume_routed = reconnect(&mut b, now);
                }
                continue;
            }
        }
        feed(&mut b, Role::Server, &mut sb, now, &mut ab, &mut ba);
        feed(&mut a, Role::Client, &mut sa, now, &mut ba, &mut ab);
        timers(&mut a, now);
        timers(&mut b, now);
        drain(&mut a, Role::Client, &mut sa, now, &mut ab);
        drain(&mut b, Role::Server, &mut sb, now, &mut ba);
    }
    hprintln!("  ({} rounds, {} ms emulated)", rounds, rounds * 2);

    chk.check(
        name,
        rounds < MAX_ROUNDS,
        "the exchange finished (no stall)",
    );
    chk.check(name, sa.connected && sb.connected, "both links came up");
    chk.check(
        name,
        sa.peer_conn_ok && sb.peer_conn_ok,
        "LNK_CONN arrived both ways",
    );
    chk.check(
        name,
        sa.conn_answered == Some(0) && sb.conn_answered == Some(0),
        "both LNK_CONNs were accepted (error 0)",
    );
    chk.check(
        name,
        sb.span_labels_ok,
        "the server got the client's LNK_SPAN with its labels",
    );
    chk.check(
        name,
        sa.span_closed && sb.span_closed,
        "the LNK_SPAN was closed from both sides",
    );
    chk.check(
        name,
        sa.all_completed(),
        "8 transactions completed, every echo byte-exact",
    );
    chk.check(
        name,
        sb.served_ok == TXNS as u32,
        "the server saw 8 transactions complete",
    );
    chk.check(
        name,
        sa.link_closed == Some(CloseReason::LocalClose)
            && sb.link_closed == Some(CloseReason::PeerClosed),
        "clean shutdown: LocalClose at the client, PeerClosed at the server",
    );
    chk.check(
        name,
        sa.bad == 0 && sb.bad == 0,
        "no unexpected event or answer",
    );
    let violations = a.stats().violations.total() + b.stats().violations.total();
    chk.check(name, violations == 0, "no protocol violations counted");
    chk.check(
        name,
        !ab.overflowed && !ba.overflowed,
        "pipes never overflowed",
    );
    chk.check(name, ab.len == 0 && ba.len == 0, "nothing left unread");
    if reconnect.is_some() {
        chk.check(name, cut && lost > 0, "the cut dropped bytes in flight");
        chk.check(
            name,
            sa.suspended == 1 && sb.suspended == 1,
            "both links suspended (not closed) on the cut",
        );
        chk.check(
            name,
            reconnected && resume_routed,
            "reconnect, and the new stream classified as a RESUME",
        );
        chk.check(
            name,
            sa.resumed == 1 && sb.resumed == 1,
            "both sessions resumed",
        );
    } else {
        chk.check(
            name,
            sa.suspended == 0 && sb.suspended == 0,
            "no suspension without a session",
        );
    }
}

fn plain_config(_id: u64, salt: u32) -> LinkConfig {
    LinkConfig {
        salt_seed: salt,
        ..LinkConfig::default()
    }
}

fn reliable_config(id: u64, salt: u32) -> LinkConfig {
    LinkConfig {
        salt_seed: salt,
        session: Some(SessionOffer::new(id)),
        ..LinkConfig::default()
    }
}

fn reconnect_reliable(link: &mut Link<Session>, now: Instant) -> bool {
    link.handle_reconnect(now).is_ok()
}

#[entry]
fn main() -> ! {
    hprintln!("dmsg-core self-test on an emulated Cortex-M (thumbv6m code)");
    // What a `Node` leaf would cost in RAM on the RP2040 (one link with the embassy leaf's
    // `LeafConnection` parameters; the spans a leaf holds: its own and those the hub relays).
    hprintln!(
        "sizes: LeafConnection {} B; Node<1 link, 4 spans, 2 relays, 8 routes> {} B; with 16 spans {} B",
        core::mem::size_of::<Connection<{ 8 * 64 + 1024 }, 1024, 1024, 8, SoftCrc32c1>>(),
        core::mem::size_of::<LeafNode<4>>(),
        core::mem::size_of::<LeafNode<16>>(),
    );
    let mut chk = Checks {
        passed: 0,
        failed: 0,
    };
    scenario::<NoSession>("plain", &mut chk, plain_config, None);
    scenario::<Session>(
        "reliable",
        &mut chk,
        reliable_config,
        Some(reconnect_reliable),
    );
    hprintln!("{} checks passed, {} failed", chk.passed, chk.failed);
    if chk.failed == 0 {
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        debug::exit(debug::EXIT_FAILURE);
    }
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    hprintln!("FAIL: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}
