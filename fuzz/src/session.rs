//! The `session` target: two `ReliableConnection`s (A connects, B accepts) that negotiate the
//! reliable session and then run over an arbitrary fault schedule: application commands on
//! both ends, partial deliveries, bytes dropped, duplicated, moved and corrupted in flight,
//! transport cuts in the middle of a frame (each end told at once or left to find out),
//! reconnects routed on B's side by `classify_stream` the way a node routes them, clean
//! closes, and time steps with the network frozen (delays) or flowing.
//!
//! Uses only `dmsg_core` and `std` (no `arbitrary`), so `tests/tests/fuzz_session.rs` runs
//! the very same checks on generated inputs and saved regressions under a plain `cargo test`.
//!
//! Every application frame with aux data carries a tag: `b"TG"`, the sender's letter and a
//! counter that grows by one per frame the sender's link accepted. Invariants, checked after
//! every step (not only "no panic"):
//! - **bounded memory**: open transactions and table entries within `TXNS`, queued output
//!   within `TX`, the session's window within `WF` frames and `WB` bytes, no reorder buffer;
//! - **at most once, in order**: the tags each end receives (Opened, Message, OneWay) strictly
//!   increase and name frames the peer's link accepted;
//! - **transactions**: `Closed` at most once per transaction, never for one the application
//!   did not know, no `Message` on a closed one; `LinkClosed` once, last, with nothing open;
//! - **timers**: after `handle_timeout(now)` no timer is still due at `now` (a driver would
//!   spin);
//!
//! and after a quiescent, fault-free tail (reconnect, time flows, everything delivered):
//! - **exactly once or reported**: every one-way message a link accepted was delivered to the
//!   peer exactly once, unless the sender's link closed: then it was delivered, or it is
//!   listed in the sender's `session().unacked()` (when the session had started). A link that
//!   closed cleanly over the session delivered everything.
//! - `abandon` ends every link with `LinkClosed` and every transaction with `Closed`.

use std::collections::BTreeSet;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::errcode::txn;
use dmsg_core::link::{
    classify_stream, Event, LinkConfig, Outgoing, ReliableConnection, SessionOffer, Side,
    StreamStart, TxnId,
};
use dmsg_core::session::{Outcome, SessionConfig};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::{Command, Flags};

const TXNS: usize = 4;
const TX: usize = 2048;
const WF: usize = 8;
const WB: usize = 2048;
const AUX: usize = 256;
type Link = ReliableConnection<{ 8 * 64 + AUX }, AUX, TX, TXNS, WF, WB>;

/// Steps of one input (the tail comes on top).
const MAX_STEPS: usize = 200;
/// Timer firings per time step, at most.
const MAX_TIMERS: usize = 64;
const TAG: &[u8; 2] = b"TG";
const TAG_LEN: usize = 11;

/// Reads the script one byte at a time; runs out into zeros.
struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn done(&self) -> bool {
        self.data.is_empty()
    }
}

/// The tag an application frame carries, if it has one.
fn tag_of(aux: &[u8]) -> Option<(u8, u64)> {
    if aux.len() < TAG_LEN || &aux[..2] != TAG {
        return None;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&aux[3..11]);
    Some((aux[2], u64::from_le_bytes(n)))
}

/// One end: its link and the application's view of it.
struct End {
    link: Box<Link>,
    name: u8,
    /// Writes into the current transport (false: into the void).
    attached: bool,
    /// The tag the next accepted frame carries.
    next_tag: u64,
    /// Tags of accepted one-way messages.
    one_way_sent: BTreeSet<u64>,
    /// The last tag received from the peer.
    last_rx: Option<u64>,
    /// Tags of one-way messages received from the peer.
    one_way_rx: BTreeSet<u64>,
    live: BTreeSet<TxnId>,
    closed: BTreeSet<TxnId>,
    link_closed: bool,
    /// The link closed with a clean shutdown (LNK_CONN exchange, then the session's FIN).
    clean_close: bool,
}

impl End {
    fn new(now: Instant, name: u8, id: u64, salt: u32) -> End {
        let cfg = LinkConfig {
            session: Some(SessionOffer {
                id,
                config: SessionConfig {
                    salt_seed: salt ^ 0x5e55,
                    ..SessionConfig::DEFAULT
                },
            }),
            salt_seed: salt,
            ..LinkConfig::default()
        };
        let link = match Link::new(now, &cfg, DefaultCrc::default()) {
            Ok(l) => Box::new(l),
            Err(e) => panic!("session link config refused: {e:?}"),
        };
        End {
            link,
            name,
            attached: true,
            next_tag: 0,
            one_way_sent: BTreeSet::new(),
            last_rx: None,
            one_way_rx: BTreeSet::new(),
            live: BTreeSet::new(),
            closed: BTreeSet::new(),
            link_closed: false,
            clean_close: false,
        }
    }

    /// Moves output into `wire` (or the void) and checks every event, until both are empty.
    /// `peer_next` is the tag the peer's next frame would carry (received tags are below it).
    fn drain(&mut self, now: Instant, wire: &mut Vec<u8>, peer_next: u64, peer: u8) -> bool {
        let mut moved = false;
        let mut buf = [0u8; 700];
        for _ in 0..100_000 {
            let n = self.link.poll_transmit(now, &mut buf);
            if n > 0 {
                if self.attached {
                    wire.extend_from_slice(&buf[..n]);
                }
                moved = true;
                continue;
            }
            let Some(event) = self.link.poll_event() else {
                return moved;
            };
            moved = true;
            let name = self.name as char;
            assert!(
                !self.link_closed,
                "{name}: event after LinkClosed: {event:?}"
            );
            let (aux, one_way) = match event {
                Event::Opened { txn, msg } => {
                    assert_eq!(txn.side(), Side::Theirs);
                    assert!(self.live.insert(txn), "{name}: Opened twice: {txn:?}");
                    assert!(
                        !self.closed.contains(&txn),
                        "{name}: Opened a closed {txn:?}"
                    );
                    (msg.aux, false)
                }
                Event::Message { txn, msg } => {
                    assert!(
                        self.live.contains(&txn),
                        "{name}: Message on {txn:?}, not live"
                    );
                    (msg.aux, false)
                }
                Event::OneWay { msg } => (msg.aux, true),
                Event::Closed { txn, .. } => {
                    assert!(self.live.remove(&txn), "{name}: Closed for unknown {txn:?}");
                    assert!(self.closed.insert(txn), "{name}: Closed twice: {txn:?}");
                    continue;
                }
                Event::LinkClosed { reason } => {
                    assert!(
                        self.live.is_empty(),
                        "{name}: LinkClosed ({reason:?}) with live transactions {:?}",
                        self.live
                    );
                    self.link_closed = true;
                    self.clean_close = reason.is_clean();
                    continue;
                }
                _ => continue,
            };
            if let Some((from, tag)) = tag_of(aux) {
                assert_eq!(from, peer, "{name}: a frame tagged by {}", from as char);
                assert!(
                    self.last_rx.is_none_or(|last| tag > last),
                    "{name}: tag {tag} after {:?}: duplicated or out of order",
                    self.last_rx
                );
                assert!(tag < peer_next, "{name}: tag {tag} was never accepted");
                self.last_rx = Some(tag);
                if one_way {
                    assert!(self.one_way_rx.insert(tag));
                }
            }
        }
        panic!("{}: drain did not finish", self.name as char);
    }

    fn check_bounds(&self) {
        let l = &self.link;
        let name = self.name as char;
        assert!(l.open_transactions(Side::Ours) <= TXNS, "{name}: our txns");
        assert!(
            l.open_transactions(Side::Theirs) <= TXNS,
            "{name}: their txns"
        );
        assert!(l.table_entries(Side::Ours) <= TXNS, "{name}: our table");
        assert!(l.table_entries(Side::Theirs) <= TXNS, "{name}: their table");
        assert!(l.pending_transmit() <= TX + WB, "{name}: pending output");
        let s = l.session();
        assert!(
            s.in_flight() <= WF,
            "{name}: window frames {}",
            s.in_flight()
        );
        assert!(s.in_flight_bytes() <= WB, "{name}: window bytes");
        assert_eq!(s.held(), 0, "{name}: reorder buffer without storage");
    }

    /// Picks a transaction: mostly live ones, sometimes stale ones.
    fn pick(&self, s: &mut Script<'_>) -> Option<TxnId> {
        let i = s.byte() as usize;
        if !self.live.is_empty() && (i % 5 != 0 || self.closed.is_empty()) {
            self.live.iter().nth(i % self.live.len()).copied()
        } else {
            self.closed
                .iter()
                .nth(i % self.closed.len().max(1))
                .copied()
        }
    }

    /// One application command.
    fn command(&mut self, now: Instant, s: &mut Script<'_>) {
        let fill = s.byte() as usize % 48;
        let mut aux = Vec::with_capacity(TAG_LEN + fill);
        aux.extend_from_slice(TAG);
        aux.push(self.name);
        aux.extend_from_slice(&self.next_tag.to_le_bytes());
        aux.resize(TAG_LEN + fill, self.name);
        let msg = Outgoing::new(Command::DbgShell).with_aux(&aux);
        let op = s.byte() % 8;
        let target = self.pick(s);
        let mut tagged = true;
        let result = match (op, target) {
            (0 | 1, _) => {
                let flags = if op == 1 {
                    Flags::DELETE
                } else {
                    Flags::empty()
                };
                self.link.open(now, &msg, flags, None).map(|t| {
                    assert!(self.live.insert(t), "open returned a live handle");
                    assert_eq!(t.side(), Side::Ours);
                })
            }
            (2 | 3, _) => self.link.send_one_way(now, &msg, op == 3, None),
            (_, None) => return,
            (4, Some(t)) => self.link.send(now, t, &msg, Flags::empty()),
            (5, Some(t)) => self.link.send(now, t, &msg, Flags::DELETE),
            (6, Some(t)) => {
                tagged = false;
                self.link.reply(now, t, txn::NOSUPP)
            }
            (_, Some(t)) => {
                tagged = false;
                if s.byte() & 1 == 0 {
                    self.link.delete(now, t)
                } else {
                    self.link.abort(now, t)
                }
            }
        };
        if let (true, Ok(())) = (tagged, result) {
            if op == 2 || op == 3 {
                self.one_way_sent.insert(self.next_tag);
            }
            self.next_tag += 1;
        }
        if let Some(t) = target {
            if op >= 4 && self.closed.contains(&t) {
                assert!(
                    result.is_err(),
                    "op {op}: the stale handle {t:?} was accepted"
                );
            }
        }
    }
}

struct Harness {
    a: End,
    b: End,
    a_to_b: Vec<u8>,
    b_to_a: Vec<u8>,
    now: Instant,
    /// A's current stream was refused by B's side (RESET sent): A writes into the void.
    refused: bool,
}

/// What one run went through (for tests that the schedules reach the interesting paths).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionRun {
    /// Tagged frames delivered, both directions.
    pub delivered: u64,
    /// Sessions that ran (negotiated), out of two.
    pub sessions: u64,
    /// Resumes completed, both ends.
    pub resumes: u64,
    /// Sessions that died (grace, RESET, abort before the final `abandon`).
    pub deaths: u64,
    /// Links that closed cleanly (LNK_CONN exchange and FIN) before the final `abandon`.
    pub clean: u64,
}

/// Runs one script. Panics (the fuzzer's crash) when an invariant breaks.
pub fn check_session(data: &[u8]) -> SessionRun {
    let now = Instant::from_millis(1);
    let mut h = Harness {
        a: End::new(now, b'A', 0xA11C_E000_0000_0001, 0x1234),
        b: End::new(now, b'B', 0xB0B0_0000_0000_0002, 0x4321),
        a_to_b: Vec::new(),
        b_to_a: Vec::new(),
        now,
        refused: false,
    };
    let mut s = Script { data };
    let mut steps = 0;
    h.drain();
    while !s.done() && steps < MAX_STEPS {
        steps += 1;
        h.step(&mut s);
        h.drain();
        h.a.check_bounds();
        h.b.check_bounds();
    }
    h.tail()
}

impl Harness {
    fn drain(&mut self) -> bool {
        let b_next = self.b.next_tag;
        let x = self.a.drain(self.now, &mut self.a_to_b, b_next, b'B');
        let a_next = self.a.next_tag;
        let y = self.b.drain(self.now, &mut self.b_to_a, a_next, b'A');
        x || y
    }

    fn step(&mut self, s: &mut Script<'_>) {
        match s.byte() % 16 {
            0..=3 => {
                let now = self.now;
                if s.byte() & 1 == 0 {
                    self.a.command(now, s);
                } else {
                    self.b.command(now, s);
                }
            }
            4..=6 => {
                let to_b = s.byte() & 1 == 0;
                let limit = match s.byte() {
                    0..=127 => usize::MAX,
                    n => usize::from(n) * 8,
                };
                let chunk = 1 + usize::from(s.byte()) * 4;
                self.deliver(to_b, limit, chunk);
            }
            7 | 8 => self.fault(s),
            9 => {
                let (pa, pb) = (usize::from(s.byte()) * 3, usize::from(s.byte()) * 3);
                let tell = s.byte();
                self.cut(pa, pb, tell & 1 != 0, tell & 2 != 0);
            }
            10 => {
                let tell_b = s.byte() & 1 != 0;
                self.reconnect(tell_b);
            }
            11..=13 => {
                let ms = match s.byte() {
                    n @ 0..=99 => u64::from(n) * 10,
                    n @ 100..=199 => u64::from(n - 100) * 200,
                    n => u64::from(n - 200) * 1000,
                };
                let flowing = s.byte() & 1 == 0;
                self.advance(Duration::from_millis(ms), flowing);
            }
            14 => {
                let now = self.now;
                match s.byte() % 4 {
                    0 => {
                        let _ = self.a.link.close(now);
                    }
                    1 => {
                        let _ = self.b.link.close(now);
                    }
                    // A spurious timeout is harmless.
                    2 => self.a.link.handle_timeout(now),
                    _ => self.b.link.handle_timeout(now),
                }
            }
            _ => {
                // Everything in flight, both ways.
                self.deliver(true, usize::MAX, 1500);
                self.deliver(false, usize::MAX, 1500);
            }
        }
    }

    /// Feeds up to `limit` bytes of one direction, in chunks, following the drive contract.
    fn deliver(&mut self, to_b: bool, limit: usize, chunk: usize) -> bool {
        self.route();
        let up = self.a.attached && self.b.attached;
        // After a refused stream only B's side's RESET travels (to A).
        let reset_to_a = self.refused && !to_b;
        if self.refused && to_b {
            self.a_to_b.clear();
        }
        if !up && !reset_to_a {
            return false;
        }
        let mut pipe = if to_b {
            std::mem::take(&mut self.a_to_b)
        } else {
            std::mem::take(&mut self.b_to_a)
        };
        let rest = pipe.split_off(limit.min(pipe.len()));
        let moved = !pipe.is_empty();
        let mut rounds = 0;
        while !pipe.is_empty() && rounds < 10_000 {
            rounds += 1;
            let take = chunk.min(pipe.len());
            let rx = if to_b { &mut self.b } else { &mut self.a };
            let used = rx.link.handle_input(self.now, &pipe[..take]);
            assert!(used <= take);
            pipe.drain(..used);
            let progressed = self.drain();
            let rx = if to_b { &self.b } else { &self.a };
            if rx.link.is_closed() {
                pipe.clear();
                break;
            }
            if rx.link.is_suspended() {
                // The link gave the transport up (bad bytes): the driver closes the socket,
                // and the peer sees EOF.
                self.drop_transport(to_b, !to_b);
                return true;
            }
            if used == 0 && !progressed {
                break;
            }
        }
        // Whatever was not consumed stays in flight, ahead of the rest.
        pipe.extend_from_slice(&rest);
        if to_b {
            pipe.extend_from_slice(&self.a_to_b);
            self.a_to_b = pipe;
        } else {
            pipe.extend_from_slice(&self.b_to_a);
            self.b_to_a = pipe;
        }
        moved
    }

    /// Attaches B to A's new stream once its first frame arrives, the way a node routes it.
    fn route(&mut self) {
        if self.b.attached || !self.a.attached || self.refused || self.a_to_b.is_empty() {
            return;
        }
        let crc = DefaultCrc::default();
        match classify_stream(&crc, &self.a_to_b) {
            StreamStart::NeedMore => {}
            start @ StreamStart::Resume(f) => {
                let mine = self.b.link.session_id() == Some(f.receiver_id);
                if mine && self.b.link.handle_reconnect(self.now).is_ok() {
                    self.b.attached = true;
                    self.drain();
                } else {
                    let mut reset = [0u8; 64];
                    if let Some(n) = start.stateless_reset(&crc, &mut reset) {
                        self.b_to_a.extend_from_slice(&reset[..n]);
                    }
                    self.a_to_b.clear();
                    self.refused = true;
                }
            }
            _ => {
                // Not a resume (bytes corrupted in flight): the node would start a new
                // connection; for this pair the stream is simply closed.
                self.a_to_b.clear();
                self.a.attached = false;
                self.a.link.handle_close();
                self.drain();
            }
        }
    }

    /// Drops the transport; `tell_a`/`tell_b`: who sees EOF now.
    fn drop_transport(&mut self, tell_a: bool, tell_b: bool) {
        self.a_to_b.clear();
        self.b_to_a.clear();
        let (was_a, was_b) = (self.a.attached, self.b.attached);
        self.a.attached = false;
        self.b.attached = false;
        self.refused = false;
        if tell_a && was_a {
            self.a.link.handle_close();
        }
        if tell_b && was_b {
            self.b.link.handle_close();
        }
        self.drain();
    }

    /// Cuts the transport after delivering a prefix of each direction (a frame may be cut in
    /// the middle).
    fn cut(&mut self, a_prefix: usize, b_prefix: usize, tell_a: bool, tell_b: bool) {
        let keep_a = self.a_to_b.len().min(a_prefix);
        let keep_b = self.b_to_a.len().min(b_prefix);
        self.a_to_b.truncate(keep_a);
        self.b_to_a.truncate(keep_b);
        self.deliver(true, usize::MAX, 97);
        self.deliver(false, usize::MAX, 97);
        self.drop_transport(tell_a, tell_b);
    }

    /// A connects a new transport; B's old one (if it still thinks it has one) sees EOF if
    /// `tell_b`, else B learns of it when the RESUME is routed to it.
    fn reconnect(&mut self, tell_b: bool) {
        self.drop_transport(false, tell_b);
        if self.a.link.handle_reconnect(self.now).is_ok() {
            self.a.attached = true;
        }
        self.drain();
        self.route();
    }

    /// Damages the bytes in flight in one direction.
    fn fault(&mut self, s: &mut Script<'_>) {
        let to_b = s.byte() & 1 == 0;
        let kind = s.byte() % 4;
        let pos = usize::from(s.byte()) * 4 + usize::from(s.byte() & 3);
        let len = 1 + usize::from(s.byte()) * 2;
        let x = s.byte() | 1;
        let pipe = if to_b {
            &mut self.a_to_b
        } else {
            &mut self.b_to_a
        };
        if pipe.is_empty() {
            return;
        }
        let at = pos % pipe.len();
        let end = (at + len).min(pipe.len());
        match kind {
            // Lost bytes.
            0 => {
                pipe.drain(at..end);
            }
            // Duplicated bytes.
            1 => {
                let copy = pipe[at..end].to_vec();
                pipe.splice(end..end, copy);
            }
            // Reordered: a range moved to the end.
            2 => {
                let moved: Vec<u8> = pipe.drain(at..end).collect();
                pipe.extend_from_slice(&moved);
            }
            // Corrupted byte.
            _ => pipe[at] ^= x,
        }
    }

    /// Advances the clock by `dt`, firing timers as they come due; with `flowing`, the
    /// network delivers everything in between, else it is frozen (a delay).
    fn advance(&mut self, dt: Duration, flowing: bool) {
        let end = self.now + dt;
        for _ in 0..MAX_TIMERS {
            let next = [self.a.link.poll_timeout(), self.b.link.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= end);
            let Some(t) = next else {
                break;
            };
            self.now = self.now.max(t);
            self.fire();
            if flowing {
                self.flow();
            }
        }
        self.now = end;
        self.fire();
        if flowing {
            self.flow();
        }
    }

    fn fire(&mut self) {
        let now = self.now;
        self.a.link.handle_timeout(now);
        self.b.link.handle_timeout(now);
        self.drain();
        for e in [&self.a, &self.b] {
            if let Some(t) = e.link.poll_timeout() {
                assert!(
                    t > now,
                    "{}: a timer still due after handle_timeout({now:?}): {t:?}",
                    e.name as char
                );
            }
        }
    }

    /// Delivers until nothing moves.
    fn flow(&mut self) {
        for _ in 0..64 {
            let x = self.deliver(true, usize::MAX, 1500);
            let y = self.deliver(false, usize::MAX, 1500);
            let z = self.drain();
            if !(x || y || z) {
                return;
            }
        }
    }

    fn quiet(&self) -> bool {
        let (a, b) = (&self.a.link, &self.b.link);
        (a.is_closed() && b.is_closed())
            || (a.session_running()
                && b.session_running()
                && self.a.attached
                && self.b.attached
                && a.session().in_flight() == 0
                && b.session().in_flight() == 0
                && self.a_to_b.is_empty()
                && self.b_to_a.is_empty())
    }

    /// The fault-free tail, then the end-to-end checks.
    fn tail(&mut self) -> SessionRun {
        // Up to 240 s: with a small window both ends can be busy (no room for the answers a
        // frame may need) and then progress only by retransmission timers; a fuzz input
        // (`tests/data/fuzz-regressions/session/slow-busy-recovery`) needed 71 s.
        for _ in 0..480 {
            let connected = self.a.attached && self.b.attached && !self.refused;
            if !self.a.link.is_closed() && !connected {
                self.reconnect(true);
            }
            self.advance(Duration::from_millis(500), true);
            if self.quiet() {
                break;
            }
        }
        check_delivery(&self.a, &self.b);
        check_delivery(&self.b, &self.a);
        let mut run = SessionRun::default();
        for e in [&self.a, &self.b] {
            let l = &e.link;
            run.delivered += e.last_rx.map_or(0, |t| t + 1);
            run.resumes += l.reliable_stats().resumes;
            if e.clean_close {
                run.clean += 1;
            }
            match l.session().outcome() {
                Outcome::NotStarted => {}
                Outcome::Running | Outcome::ClosedCleanly => run.sessions += 1,
                Outcome::Died(_) => {
                    run.sessions += 1;
                    run.deaths += 1;
                }
            }
        }
        let now = self.now;
        self.a.link.abandon(now);
        self.b.link.abandon(now);
        self.drain();
        for e in [&self.a, &self.b] {
            let name = e.name as char;
            assert!(e.link_closed, "{name}: no LinkClosed after abandon");
            assert!(
                e.live.is_empty(),
                "{name}: open after abandon: {:?}",
                e.live
            );
        }
        run
    }
}

/// Every one-way message `tx` accepted reached `rx` exactly once, or `tx` reported it.
fn check_delivery(tx: &End, rx: &End) {
    let name = tx.name as char;
    let s = tx.link.session();
    let lost: Vec<u64> = tx
        .one_way_sent
        .difference(&rx.one_way_rx)
        .copied()
        .collect();
    if lost.is_empty() {
        return;
    }
    assert!(
        !(tx.clean_close && s.outcome() != Outcome::NotStarted),
        "{name}: the link closed cleanly over the session without delivering {lost:?}"
    );
    match s.outcome() {
        Outcome::Running => panic!(
            "{name}: one-way tags {lost:?} neither delivered nor reported after a quiet tail \
             ({name} {:?}/{:?}, in flight {}, {:?}, {:?}, {:?}; peer {:?}/{:?}, {:?}, {:?}, {:?})",
            tx.link.state(),
            s.transport(),
            s.in_flight(),
            s.stats(),
            tx.link.reliable_stats(),
            tx.link.stats(),
            rx.link.state(),
            rx.link.session().transport(),
            rx.link.session().stats(),
            rx.link.reliable_stats(),
            rx.link.stats(),
        ),
        Outcome::ClosedCleanly => {
            panic!("{name}: the session closed cleanly without delivering {lost:?}")
        }
        Outcome::NotStarted => {
            // Never negotiated: a plain link that closed reports the loss by closing.
            assert!(tx.link_closed, "{name}: {lost:?} lost on a link still open");
        }
        Outcome::Died(_) => {
            assert!(
                tx.link_closed,
                "{name}: the session died without LinkClosed"
            );
            let unacked: BTreeSet<u64> = s
                .unacked()
                .filter_map(|f| {
                    let at = f.header.cmd.header_len();
                    f.bytes.get(at..).and_then(tag_of).map(|(_, t)| t)
                })
                .collect();
            for t in &lost {
                assert!(
                    unacked.contains(t),
                    "{name}: tag {t} neither delivered nor listed as unacknowledged"
                );
            }
        }
    }
}
