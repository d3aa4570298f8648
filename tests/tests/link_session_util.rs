//! Shared helpers for the `link_session_*` tests: owned events of any connection type
//! (session events included), a seeded RNG, and `Net`: two connections over an in-memory
//! transport that can be cut, with a node-style router on B's side that routes a reconnecting
//! stream by its first frame (`classify_stream`).
//!
//! Included by the other `link_session_*.rs` files with `#[path]`; on its own it has no tests.
#![allow(dead_code)]

use dmsg_core::crc::{Crc32c, DefaultCrc};
use dmsg_core::link::{
    classify_stream, CloseReason, Connection, Event, LinkConfig, LinkState, LinkStats, Outgoing,
    ReliableConnection, SendError, SessionOffer, SessionSlot, Side, StreamStart, TxnEnd, TxnId,
};
use dmsg_core::session::{SessionConfig, SessionStats};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::{Body, Flags, HeaderRepr};

/// A host-sized test link with the session: 4 KiB aux, 16 KiB output queue, 8 transactions
/// per table, 16 frames in 8 KiB of retransmit window.
pub type RLink = ReliableConnection<{ 8 * 64 + 4096 }, 4096, 16384, 8, 16, 8192>;

/// The same sizes without session storage.
pub type PLink = Connection<{ 8 * 64 + 4096 }, 4096, 16384, 8>;

/// splitmix64: the only source of randomness of a run.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// An event with its borrowed parts copied out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Connected,
    /// The peer's `session_id` and `ext_offer`.
    PeerConn(u64, u32),
    ConnAnswered(u32),
    Opened(TxnId, HeaderRepr, Body, Vec<u8>),
    Message(TxnId, HeaderRepr, Body, Vec<u8>),
    OneWay(HeaderRepr, Body, Vec<u8>),
    Closed(TxnId, u32, TxnEnd),
    LinkClosed(CloseReason),
    Suspended(CloseReason),
    Resumed(Duration, u32),
}

impl Ev {
    pub fn from_event(ev: Event<'_>) -> Ev {
        match ev {
            Event::Connected => Ev::Connected,
            Event::PeerConn { conn, .. } => Ev::PeerConn(conn.session_id, conn.ext_offer),
            Event::ConnAnswered { error } => Ev::ConnAnswered(error),
            Event::Opened { txn, msg } => Ev::Opened(txn, msg.header, *msg.body, msg.aux.to_vec()),
            Event::Message { txn, msg } => {
                Ev::Message(txn, msg.header, *msg.body, msg.aux.to_vec())
            }
            Event::OneWay { msg } => Ev::OneWay(msg.header, *msg.body, msg.aux.to_vec()),
            Event::Closed { txn, error, end } => Ev::Closed(txn, error, end),
            Event::LinkClosed { reason } => Ev::LinkClosed(reason),
            Event::Suspended { reason } => Ev::Suspended(reason),
            Event::Resumed { outage, pending } => Ev::Resumed(outage, pending),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// What the harness needs from a connection of any size and session storage.
pub trait Endpoint {
    fn input(&mut self, now: Instant, data: &[u8]) -> usize;
    fn transmit(&mut self, now: Instant, out: &mut [u8]) -> usize;
    fn event(&mut self) -> Option<Ev>;
    fn timeout(&self) -> Option<Instant>;
    fn on_timeout(&mut self, now: Instant);
    fn close_transport(&mut self);
}

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S> Endpoint
    for Connection<RX, AUX, TX, TXNS, C, S>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    fn input(&mut self, now: Instant, data: &[u8]) -> usize {
        self.handle_input(now, data)
    }
    fn transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        self.poll_transmit(now, out)
    }
    fn event(&mut self) -> Option<Ev> {
        self.poll_event().map(Ev::from_event)
    }
    fn timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn on_timeout(&mut self, now: Instant) {
        self.handle_timeout(now)
    }
    fn close_transport(&mut self) {
        self.handle_close()
    }
}

/// Session timers for tests: the defaults with a given grace period.
pub fn session_config(grace: Duration) -> SessionConfig {
    SessionConfig {
        grace,
        ..SessionConfig::default()
    }
}

/// A link config offering the session with identity `id`.
pub fn offering(id: u64, salt: u32) -> LinkConfig {
    LinkConfig {
        session: Some(SessionOffer::new(id)),
        salt_seed: salt,
        ..LinkConfig::default()
    }
}

/// Moves all queued bytes of `c` into `wire` (or drops them when `wire` is `None`) and all
/// events into `events`, until both are empty. Returns true if anything moved.
pub fn flush<E: Endpoint + ?Sized>(
    c: &mut E,
    now: Instant,
    mut wire: Option<&mut Vec<u8>>,
    events: &mut Vec<Ev>,
) -> bool {
    let mut moved = false;
    let mut buf = [0u8; 1500];
    loop {
        let mut any = false;
        loop {
            let n = c.transmit(now, &mut buf);
            if n == 0 {
                break;
            }
            if let Some(w) = wire.as_deref_mut() {
                w.extend_from_slice(&buf[..n]);
            }
            any = true;
        }
        while let Some(ev) = c.event() {
            events.push(ev);
            any = true;
        }
        if !any {
            return moved;
        }
        moved = true;
    }
}

/// Feeds `pipe` to `c` following the drive contract; output goes to `wire`.
pub fn feed<E: Endpoint + ?Sized>(
    c: &mut E,
    now: Instant,
    pipe: &mut Vec<u8>,
    mut wire: Option<&mut Vec<u8>>,
    events: &mut Vec<Ev>,
) -> bool {
    let mut consumed = false;
    for _ in 0..100_000 {
        if pipe.is_empty() {
            break;
        }
        let used = c.input(now, pipe);
        pipe.drain(..used);
        consumed |= used > 0;
        let moved = flush(c, now, wire.as_deref_mut(), events);
        assert!(
            used > 0 || moved || pipe.is_empty(),
            "no progress feeding input"
        );
    }
    consumed
}

/// Two endpoints over an in-memory transport that the test can cut.
///
/// A is the connecting side, B the accepting one. While the transport is up, bytes flow
/// whole. `cut` drops what is in flight (optionally after delivering a prefix, so a frame is
/// cut in the middle), tells the chosen sides (`handle_close`), and detaches both: an end that
/// is detached writes into the void. `reconnect_a` attaches A to a new transport; the bytes A
/// writes there are routed, when they reach B's side, by `classify_stream` exactly as a node
/// would: a RESUME naming B's session id makes B `handle_reconnect` and attach; a RESUME
/// for another id gets the stateless RESET.
pub struct Net<A: Endpoint, B: Endpoint> {
    pub now: Instant,
    pub a: Box<A>,
    pub b: Box<B>,
    pub a_to_b: Vec<u8>,
    pub b_to_a: Vec<u8>,
    pub a_events: Vec<Ev>,
    pub b_events: Vec<Ev>,
    pub a_attached: bool,
    pub b_attached: bool,
    /// The session id B's side routes RESUMEs to (None: B's node knows no session).
    pub b_session: Option<u64>,
    /// Streams that were answered with a stateless RESET.
    pub resets_sent: usize,
    /// B's `handle_reconnect` hook (set by the test, since `B` is generic).
    pub b_reconnect: fn(&mut B, Instant) -> bool,
    /// A's `handle_reconnect` hook.
    pub a_reconnect: fn(&mut A, Instant) -> bool,
}

fn no_reconnect<T>(_: &mut T, _: Instant) -> bool {
    false
}

impl<A: Endpoint, B: Endpoint> Net<A, B> {
    pub fn new(a: A, b: B) -> Self {
        Net {
            now: Instant::ZERO,
            a: Box::new(a),
            b: Box::new(b),
            a_to_b: Vec::new(),
            b_to_a: Vec::new(),
            a_events: Vec::new(),
            b_events: Vec::new(),
            a_attached: true,
            b_attached: true,
            b_session: None,
            resets_sent: 0,
            b_reconnect: no_reconnect::<B>,
            a_reconnect: no_reconnect::<A>,
        }
    }

    /// True when both ends write into the same live transport.
    pub fn up(&self) -> bool {
        self.a_attached && self.b_attached
    }

    /// Collects output and events of both ends.
    pub fn flush(&mut self) -> bool {
        let x = flush(
            &mut *self.a,
            self.now,
            self.a_attached.then_some(&mut self.a_to_b),
            &mut self.a_events,
        );
        let y = flush(
            &mut *self.b,
            self.now,
            self.b_attached.then_some(&mut self.b_to_a),
            &mut self.b_events,
        );
        x || y
    }

    /// Routes a stream A opened while B is detached, the way a node does.
    fn route_new_stream(&mut self) -> bool {
        if self.b_attached || !self.a_attached || self.a_to_b.is_empty() {
            return false;
        }
        match classify_stream(&DefaultCrc::default(), &self.a_to_b) {
            StreamStart::NeedMore => false,
            StreamStart::Resume(f) if Some(f.receiver_id) == self.b_session => {
                assert!(
                    (self.b_reconnect)(&mut self.b, self.now),
                    "B takes the stream"
                );
                self.b_attached = true;
                true
            }
            start @ StreamStart::Resume(_) => {
                let mut reset = [0u8; 64];
                let n = start
                    .stateless_reset(&DefaultCrc::default(), &mut reset)
                    .unwrap();
                self.b_to_a.extend_from_slice(&reset[..n]);
                self.a_to_b.clear();
                self.resets_sent += 1;
                true
            }
            other => panic!("unexpected stream start {other:?}"),
        }
    }

    /// Delivers what is in flight in both directions and collects the results.
    pub fn deliver(&mut self) -> bool {
        let routed = self.route_new_stream();
        let mut moved = routed;
        if self.b_attached && self.a_attached {
            let mut pipe = std::mem::take(&mut self.a_to_b);
            moved |= feed(
                &mut *self.b,
                self.now,
                &mut pipe,
                Some(&mut self.b_to_a),
                &mut self.b_events,
            );
        }
        if self.a_attached && !self.b_to_a.is_empty() {
            let mut pipe = std::mem::take(&mut self.b_to_a);
            moved |= feed(
                &mut *self.a,
                self.now,
                &mut pipe,
                self.a_attached.then_some(&mut self.a_to_b),
                &mut self.a_events,
            );
        }
        moved
    }

    /// Runs both ends until nothing moves, without advancing time.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            let f = self.flush();
            let d = self.deliver();
            if !f && !d {
                return;
            }
        }
        panic!("net did not settle");
    }

    /// Advances the clock by `dt`, firing timers as they come due and driving in between.
    pub fn advance(&mut self, dt: Duration) {
        let end = self.now + dt;
        self.drive();
        for _ in 0..1_000_000 {
            let next = [self.a.timeout(), self.b.timeout()]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= end);
            let Some(t) = next else {
                self.now = end;
                self.a.on_timeout(end);
                self.b.on_timeout(end);
                self.drive();
                return;
            };
            self.now = self.now.max(t);
            self.a.on_timeout(self.now);
            self.b.on_timeout(self.now);
            self.drive();
        }
        panic!("timers did not settle");
    }

    /// Cuts the transport: delivers `a_prefix`/`b_prefix` bytes of what is in flight (a frame
    /// may be cut in the middle), drops the rest, and detaches both ends. `tell_a`/`tell_b`:
    /// which ends see EOF at once (`handle_close`); the others find out later.
    pub fn cut(&mut self, a_prefix: usize, b_prefix: usize, tell_a: bool, tell_b: bool) {
        if self.up() {
            let mut pa: Vec<u8> = self.a_to_b.iter().copied().take(a_prefix).collect();
            let mut pb: Vec<u8> = self.b_to_a.iter().copied().take(b_prefix).collect();
            self.a_to_b.clear();
            self.b_to_a.clear();
            // Partial deliveries: whatever the ends write in answer goes nowhere.
            feed(&mut *self.b, self.now, &mut pa, None, &mut self.b_events);
            feed(&mut *self.a, self.now, &mut pb, None, &mut self.a_events);
        }
        self.a_to_b.clear();
        self.b_to_a.clear();
        self.a_attached = false;
        self.b_attached = false;
        if tell_a {
            self.a.close_transport();
        }
        if tell_b {
            self.b.close_transport();
        }
        self.flush();
    }

    /// A connects a new transport (`handle_reconnect`); B attaches when the stream's first
    /// frame reaches its router.
    pub fn reconnect_a(&mut self) {
        assert!(!self.a_attached);
        self.a_to_b.clear();
        self.b_to_a.clear();
        assert!((self.a_reconnect)(&mut self.a, self.now), "A reconnects");
        self.a_attached = true;
        self.drive();
    }

    pub fn take_a(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.a_events)
    }

    pub fn take_b(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.b_events)
    }
}

/// `handle_reconnect` for the test link type, as a `Net` hook.
pub fn reconnect_rlink(c: &mut RLink, now: Instant) -> bool {
    c.handle_reconnect(now).is_ok()
}

/// A tiny session link: 1 KiB aux, 6 frames in 1 KiB of window (3 application frames in
/// flight at most), to stress backpressure and the busy path.
pub type TinyLink = ReliableConnection<{ 8 * 64 + 1024 }, 1024, 2048, 4, 6, 1024>;

/// What the random workload needs from a session link of any size.
pub trait SessionLink: Endpoint + Sized {
    /// Largest aux payload the workload sends.
    const MAX_PAYLOAD: usize;
    fn make(now: Instant, cfg: &LinkConfig) -> Self;
    fn reconnect(&mut self, now: Instant) -> bool;
    fn open_txn(
        &mut self,
        now: Instant,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<TxnId, SendError>;
    fn send_txn(
        &mut self,
        now: Instant,
        t: TxnId,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), SendError>;
    fn one_way(&mut self, now: Instant, msg: &Outgoing<'_>) -> Result<(), SendError>;
    fn running(&self) -> bool;
    fn link_state(&self) -> LinkState;
    fn link_stats(&self) -> LinkStats;
    fn sess_stats(&self) -> SessionStats;
    fn open_txns(&self, side: Side) -> usize;
}

impl<
        const RX: usize,
        const AUX: usize,
        const TX: usize,
        const TXNS: usize,
        const WF: usize,
        const WB: usize,
    > SessionLink for ReliableConnection<RX, AUX, TX, TXNS, WF, WB>
{
    const MAX_PAYLOAD: usize = if AUX < 3000 { AUX * 3 / 4 } else { 3000 };
    fn make(now: Instant, cfg: &LinkConfig) -> Self {
        Self::new(now, cfg, Default::default()).unwrap()
    }
    fn reconnect(&mut self, now: Instant) -> bool {
        self.handle_reconnect(now).is_ok()
    }
    fn open_txn(
        &mut self,
        now: Instant,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<TxnId, SendError> {
        self.open(now, msg, flags, None)
    }
    fn send_txn(
        &mut self,
        now: Instant,
        t: TxnId,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), SendError> {
        self.send(now, t, msg, flags)
    }
    fn one_way(&mut self, now: Instant, msg: &Outgoing<'_>) -> Result<(), SendError> {
        self.send_one_way(now, msg, false, None)
    }
    fn running(&self) -> bool {
        self.session_running()
    }
    fn link_state(&self) -> LinkState {
        self.state()
    }
    fn link_stats(&self) -> LinkStats {
        *self.stats()
    }
    fn sess_stats(&self) -> SessionStats {
        *self.session_stats()
    }
    fn open_txns(&self, side: Side) -> usize {
        self.open_transactions(side)
    }
}

/// A `Net` of two session links of type `L` offering the session with ids `0xA11CE` and
/// `0xB0B`.
pub fn lnet<L: SessionLink>(grace: Duration) -> Net<L, L> {
    let mut ca = offering(0xA11CE, 1);
    let mut cb = offering(0xB0B, 2);
    for c in [&mut ca, &mut cb] {
        if let Some(s) = c.session.as_mut() {
            s.config = session_config(grace);
        }
    }
    let mut n = Net::new(L::make(Instant::ZERO, &ca), L::make(Instant::ZERO, &cb));
    n.b_session = Some(0xB0B);
    n.a_reconnect = L::reconnect;
    n.b_reconnect = L::reconnect;
    n.drive();
    n
}

/// A `Net` of two session links offering the session with ids `0xA11CE` and `0xB0B`.
pub fn rnet(grace: Duration) -> Net<RLink, RLink> {
    let mut ca = offering(0xA11CE, 1);
    let mut cb = offering(0xB0B, 2);
    if let Some(s) = ca.session.as_mut() {
        s.config = session_config(grace);
    }
    if let Some(s) = cb.session.as_mut() {
        s.config = session_config(grace);
    }
    rnet_with(ca, cb)
}

pub fn rnet_with(ca: LinkConfig, cb: LinkConfig) -> Net<RLink, RLink> {
    let mut n = Net::new(
        RLink::new(Instant::ZERO, &ca, Default::default()).unwrap(),
        RLink::new(Instant::ZERO, &cb, Default::default()).unwrap(),
    );
    n.b_session = cb.session.map(|s| s.id);
    n.a_reconnect = reconnect_rlink;
    n.b_reconnect = reconnect_rlink;
    n.drive();
    n
}
