//! The binding to dmsg-core: everything the runner knows about the protocol engine is here.
//!
//! [`CoreLink`] is the drive API the runner uses (implemented for every
//! [`Connection`]); [`Leaf`] puts the leaf's own behaviour on top of it, sans-IO:
//! the span it advertises, the echo answers, and the copy of the core's borrowed events into
//! owned [`LeafEvent`]s. The async runner only moves bytes, time and channel messages in and
//! out of a `Leaf`, so this module is the one place to change when a multi-link node replaces
//! the single connection, and all of it is tested on the host.

use dmsg_core::crc::{Crc32c, SoftCrc32cNibble};
use dmsg_core::errcode::txn as errcode;
use dmsg_core::link::{
    self, Connection, Event, LinkConfig, LinkStats, Outgoing, Received, Reliable, SendError,
    SessionOffer, Side, TxnEnd, TxnId, TxnState,
};
use dmsg_core::time::Instant;
use dmsg_core::wire::body::{ConnRepr, SpanRepr};
use dmsg_core::wire::{Body, Command, Flags, Label};

use crate::types::{LeafCommand, LeafConfig, LeafEvent, Msg};

/// The default link of a leaf: up to 1 KiB of aux data received, 8-block headers, a 1 KiB
/// output queue (frames up to 896 bytes out: a LNK_SPAN, or aux data up to 832 bytes), 8
/// open transactions per side, the half-byte-table CRC (64 bytes of flash). Like the core's `McuConnection` with
/// half its output queue: the runner empties the queue into the TCP socket's own buffer at
/// once, so the queue only ever holds the frames of one step. 1 KiB less RAM.
pub type LeafConnection = Connection<{ 8 * 64 + 1024 }, 1024, 1024, 8, SoftCrc32cNibble>;

/// The drive API of one dmsg-core link, as the runner uses it. See the drive contract in
/// [`dmsg_core::link`]; every method forwards to the [`Connection`] method of that name.
pub trait CoreLink: Sized {
    /// Where the leaf keeps echo requests whose answer found no room, to retry them: a
    /// [`heapless::Deque`] for a link with the reliable session (its retransmit window frees
    /// only as the hub acknowledges), [`NoDeferral`] (zero bytes) for a plain link, whose
    /// output queue always has room once the runner emptied it.
    type Deferred<const A: usize>: DeferQueue<A>;
    /// True for a link with session storage: the session paths of the leaf and the runner
    /// are compiled only then (a plain leaf's firmware does not carry them).
    const SESSION: bool = false;
    /// A connection on a freshly connected transport (its LNK_CONN is queued).
    fn connect(now: Instant, config: &LinkConfig) -> Result<Self, link::ConfigError>;
    /// Feeds received bytes; returns how many were used.
    fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize;
    /// Advances the timers.
    fn handle_timeout(&mut self, now: Instant);
    /// The transport is gone.
    fn handle_close(&mut self);
    /// Copies queued bytes into `out`.
    fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize;
    /// Bytes queued for `poll_transmit`.
    fn pending_transmit(&self) -> usize;
    /// The next event.
    fn poll_event(&mut self) -> Option<Event<'_>>;
    /// When `handle_timeout` is due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// True once the link is closed.
    fn is_closed(&self) -> bool;
    /// State of an open transaction.
    fn txn_state(&self, txn: TxnId) -> Option<TxnState>;
    /// Counters.
    fn stats(&self) -> &LinkStats;
    /// Opens a transaction.
    fn open(
        &mut self,
        now: Instant,
        msg: &Outgoing<'_>,
        flags: Flags,
        circuit: Option<TxnId>,
    ) -> Result<TxnId, SendError>;
    /// Sends in an open transaction.
    fn send(
        &mut self,
        now: Instant,
        txn: TxnId,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), SendError>;
    /// LNK_ERROR with `error` and DELETE.
    fn reply(&mut self, now: Instant, txn: TxnId, error: u32) -> Result<(), SendError>;
    /// Aborts a transaction.
    fn abort(&mut self, now: Instant, txn: TxnId) -> Result<(), SendError>;
    /// Sends a one-way message.
    fn send_one_way(
        &mut self,
        now: Instant,
        msg: &Outgoing<'_>,
        reply: bool,
        circuit: Option<TxnId>,
    ) -> Result<(), SendError>;
    /// True while the link's reliable session waits for a new transport (the last one was
    /// lost): reconnect and call [`reconnect`](Self::reconnect) rather than starting a new
    /// link. Always false for a link without session storage.
    fn is_suspended(&self) -> bool {
        false
    }
    /// Resumes a suspended session on a freshly connected transport (queues the RESUME);
    /// false when there is nothing to resume (no session, or it died): start a new link.
    fn reconnect(&mut self, _now: Instant) -> bool {
        false
    }
}

/// The forwarding methods both [`CoreLink`] impls share (every one calls the [`Connection`]
/// method of the same name).
macro_rules! forward_core_link {
    () => {
        #[inline(never)]
        fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
            Connection::handle_input(self, now, input)
        }
        #[inline(never)]
        fn handle_timeout(&mut self, now: Instant) {
            Connection::handle_timeout(self, now)
        }
        #[inline(never)]
        fn handle_close(&mut self) {
            Connection::handle_close(self)
        }
        #[inline(never)]
        fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
            Connection::poll_transmit(self, now, out)
        }
        #[inline(never)]
        fn pending_transmit(&self) -> usize {
            Connection::pending_transmit(self)
        }
        #[inline(never)]
        fn poll_event(&mut self) -> Option<Event<'_>> {
            Connection::poll_event(self)
        }
        #[inline(never)]
        fn poll_timeout(&self) -> Option<Instant> {
            Connection::poll_timeout(self)
        }
        #[inline(never)]
        fn is_closed(&self) -> bool {
            Connection::is_closed(self)
        }
        #[inline(never)]
        fn txn_state(&self, txn: TxnId) -> Option<TxnState> {
            Connection::txn_state(self, txn)
        }
        #[inline(never)]
        fn stats(&self) -> &LinkStats {
            Connection::stats(self)
        }
        #[inline(never)]
        fn open(
            &mut self,
            now: Instant,
            msg: &Outgoing<'_>,
            flags: Flags,
            circuit: Option<TxnId>,
        ) -> Result<TxnId, SendError> {
            Connection::open(self, now, msg, flags, circuit)
        }
        #[inline(never)]
        fn send(
            &mut self,
            now: Instant,
            txn: TxnId,
            msg: &Outgoing<'_>,
            flags: Flags,
        ) -> Result<(), SendError> {
            Connection::send(self, now, txn, msg, flags)
        }
        #[inline(never)]
        fn reply(&mut self, now: Instant, txn: TxnId, error: u32) -> Result<(), SendError> {
            Connection::reply(self, now, txn, error)
        }
        #[inline(never)]
        fn abort(&mut self, now: Instant, txn: TxnId) -> Result<(), SendError> {
            Connection::abort(self, now, txn)
        }
        #[inline(never)]
        fn send_one_way(
            &mut self,
            now: Instant,
            msg: &Outgoing<'_>,
            reply: bool,
            circuit: Option<TxnId>,
        ) -> Result<(), SendError> {
            Connection::send_one_way(self, now, msg, reply, circuit)
        }
    };
}

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C> CoreLink
    for Connection<RX, AUX, TX, TXNS, C>
where
    C: Crc32c + Clone + Default,
{
    type Deferred<const A: usize> = NoDeferral;
    #[inline(never)]
    fn connect(now: Instant, config: &LinkConfig) -> Result<Self, link::ConfigError> {
        Connection::new(now, config, C::default())
    }
    forward_core_link!();
}

/// A link with the reliable session ([`ReliableConnection`](dmsg_core::link::ReliableConnection),
/// e.g. `dmsg_core::link::ReliableMcuConnection`): it offers the session in its LNK_CONN (with
/// an identity derived from the salt seed, which the runner varies per connection), and a
/// lost transport suspends it instead of ending it; the runner then reconnects and resumes.
/// Against a peer that does not offer the session it is a plain link.
impl<
        const RX: usize,
        const AUX: usize,
        const TX: usize,
        const TXNS: usize,
        C,
        const WF: usize,
        const WB: usize,
        const RF: usize,
        const RB: usize,
    > CoreLink for Connection<RX, AUX, TX, TXNS, C, Reliable<C, WF, WB, RF, RB>>
where
    C: Crc32c + Clone + Default,
{
    type Deferred<const A: usize> = heapless::Deque<(TxnId, Msg<A>), DEFERRED_ECHOES>;
    const SESSION: bool = true;
    #[inline(never)]
    fn connect(now: Instant, config: &LinkConfig) -> Result<Self, link::ConfigError> {
        let mut config = *config;
        if config.session.is_none() {
            config.session = Some(SessionOffer::new(session_id(config.salt_seed)));
        }
        Connection::new(now, &config, C::default())
    }
    #[inline(never)]
    fn is_suspended(&self) -> bool {
        Connection::is_suspended(self)
    }
    #[inline(never)]
    fn reconnect(&mut self, now: Instant) -> bool {
        self.is_suspended() && self.handle_reconnect(now).is_ok()
    }
    forward_core_link!();
}

/// A non-zero session identity from a 32-bit seed (splitmix64's finaliser, so nearby seeds
/// give unrelated identities).
fn session_id(seed: u32) -> u64 {
    let mut z = u64::from(seed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// A configuration the leaf cannot run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// A label is longer than 127 bytes or contains a NUL byte.
    BadLabel,
    /// The connection refused its settings.
    Link(link::ConfigError),
    /// Feature `secure`: a link with the reliable session cannot run over the secure channel
    /// yet (resuming needs the resume proof of `spec/SECURE.md` section 7).
    #[cfg(feature = "secure")]
    SecureSession,
}

/// Echo transactions answered but not finished yet, whose further events are swallowed.
const ECHO_SLOTS: usize = 4;

/// Echo requests a link with the reliable session keeps for a retry (see
/// [`CoreLink::Deferred`]).
pub const DEFERRED_ECHOES: usize = 2;

/// A bounded FIFO of echo requests waiting for room (see [`CoreLink::Deferred`]).
pub trait DeferQueue<const A: usize>: Clone + core::fmt::Debug {
    /// Empty.
    fn new() -> Self;
    /// The oldest entry.
    fn front(&self) -> Option<&(TxnId, Msg<A>)>;
    /// Removes the oldest entry.
    fn pop_front(&mut self);
    /// Adds an entry; gives it back when full.
    fn push_back(&mut self, item: (TxnId, Msg<A>)) -> Result<(), (TxnId, Msg<A>)>;
    /// True if `txn` waits here.
    fn contains(&self, txn: TxnId) -> bool;
    /// Forgets `txn`.
    fn remove(&mut self, txn: TxnId);
    /// Forgets everything.
    fn clear(&mut self);
}

/// No room for deferred echoes (a plain link): every push fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoDeferral;

impl<const A: usize> DeferQueue<A> for NoDeferral {
    fn new() -> Self {
        NoDeferral
    }
    fn front(&self) -> Option<&(TxnId, Msg<A>)> {
        None
    }
    fn pop_front(&mut self) {}
    fn push_back(&mut self, item: (TxnId, Msg<A>)) -> Result<(), (TxnId, Msg<A>)> {
        Err(item)
    }
    fn contains(&self, _: TxnId) -> bool {
        false
    }
    fn remove(&mut self, _: TxnId) {}
    fn clear(&mut self) {}
}

impl<const A: usize, const N: usize> DeferQueue<A> for heapless::Deque<(TxnId, Msg<A>), N> {
    fn new() -> Self {
        heapless::Deque::new()
    }
    fn front(&self) -> Option<&(TxnId, Msg<A>)> {
        heapless::Deque::front(self)
    }
    fn pop_front(&mut self) {
        let _ = heapless::Deque::pop_front(self);
    }
    fn push_back(&mut self, item: (TxnId, Msg<A>)) -> Result<(), (TxnId, Msg<A>)> {
        heapless::Deque::push_back(self, item)
    }
    fn contains(&self, txn: TxnId) -> bool {
        self.iter().any(|(t, _)| *t == txn)
    }
    fn remove(&mut self, txn: TxnId) {
        self.retain(|(t, _)| *t != txn);
    }
    fn clear(&mut self) {
        heapless::Deque::clear(self)
    }
}

/// A leaf's span, advertised once the hub's LNK_CONN arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    SpanAdvertised(TxnId),
    SpanFailed(SendError),
}

/// One step of [`Leaf::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Polled<const A: usize> {
    /// An event for the application.
    Event(LeafEvent<A>),
    /// The leaf handled an event itself (and may have queued bytes): transmit, then poll again.
    Handled,
    /// No event is waiting.
    Idle,
}

/// A cluster leaf on one link: the core connection plus the leaf's own behaviour.
///
/// Driven exactly like the core connection (see [`dmsg_core::link`]), with one addition:
/// events come from [`poll`](Leaf::poll), which answers what the leaf answers by itself and
/// hands out the rest as owned [`LeafEvent`]s. **Transmit everything queued before each
/// `poll` and [`command`](Leaf::command)**: the leaf's own answers then always find room.
///
/// - on the hub's LNK_CONN it opens its LNK_SPAN (if [`LeafConfig::advertise_span`]) and keeps
///   it open; when the hub closes it, the leaf closes its side;
/// - it answers [`LeafConfig::echo`] transactions and one-way messages;
/// - when the hub closes its side of a LNK_SPAN it opened, the leaf closes its side.
#[derive(Clone, Debug)]
pub struct Leaf<L: CoreLink, const A: usize> {
    link: L,
    span: Option<TxnId>,
    notice: Option<Notice>,
    echoing: [Option<TxnId>; ECHO_SLOTS],
    deferred: L::Deferred<A>,
}

impl<L: CoreLink, const A: usize> Leaf<L, A> {
    /// The settings of the link a leaf with `cfg` runs, with salt seed `salt_seed`.
    pub fn link_config(cfg: &LeafConfig<'_>, salt_seed: u32) -> Result<LinkConfig, ConfigError> {
        let label = Label::new(cfg.peer_label).map_err(|_| ConfigError::BadLabel)?;
        Ok(LinkConfig {
            conn: ConnRepr {
                media_id: cfg.media_id,
                peer_id: cfg.peer_id,
                peer_mask: cfg.peer_mask,
                peer_type: cfg.peer_type,
                peer_label: label,
                ..ConnRepr::default()
            },
            ping_interval: cfg.ping_interval,
            idle_timeout: cfg.idle_timeout,
            close_timeout: cfg.close_timeout,
            max_violations: cfg.max_violations,
            salt_seed,
            ..LinkConfig::default()
        })
    }

    /// The LNK_SPAN a leaf with `cfg` advertises.
    pub fn span_repr(cfg: &LeafConfig<'_>) -> Result<SpanRepr, ConfigError> {
        Ok(SpanRepr {
            peer_id: cfg.peer_id,
            pfs_id: cfg.pfs_id,
            pfs_type: cfg.pfs_type,
            peer_type: cfg.peer_type,
            proto_version: cfg.span_proto_version,
            peer_label: Label::new(cfg.peer_label).map_err(|_| ConfigError::BadLabel)?,
            pfs_label: Label::new(cfg.pfs_label).map_err(|_| ConfigError::BadLabel)?,
            ..SpanRepr::default()
        })
    }

    /// Checks everything in `cfg` that [`new`](Self::new) would refuse.
    pub fn check(cfg: &LeafConfig<'_>) -> Result<(), ConfigError> {
        Self::link_config(cfg, 0)?;
        Self::span_repr(cfg)?;
        Ok(())
    }

    /// A leaf on a freshly connected transport: its LNK_CONN is queued. `salt_seed` seeds
    /// the frames' salt (any value; should differ between connections).
    pub fn new(now: Instant, cfg: &LeafConfig<'_>, salt_seed: u32) -> Result<Self, ConfigError> {
        if cfg.advertise_span {
            Label::new(cfg.pfs_label).map_err(|_| ConfigError::BadLabel)?;
        }
        let link =
            L::connect(now, &Self::link_config(cfg, salt_seed)?).map_err(ConfigError::Link)?;
        Ok(Leaf {
            link,
            span: None,
            notice: None,
            echoing: [None; ECHO_SLOTS],
            deferred: DeferQueue::new(),
        })
    }

    /// The core connection (for its counters and state).
    pub fn link(&self) -> &L {
        &self.link
    }

    /// Our LNK_SPAN, while it is open.
    pub fn span(&self) -> Option<TxnId> {
        self.span
    }

    /// Feeds received bytes; returns how many were used (see [`CoreLink::handle_input`]).
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        self.link.handle_input(now, input)
    }

    /// Advances the timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(now)
    }

    /// The transport is gone.
    pub fn handle_close(&mut self) {
        self.link.handle_close()
    }

    /// Copies queued bytes into `out`; returns how many.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        self.link.poll_transmit(now, out)
    }

    /// Bytes queued for [`poll_transmit`](Self::poll_transmit).
    pub fn pending_transmit(&self) -> usize {
        self.link.pending_transmit()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.link.poll_timeout()
    }

    /// True once the link is closed.
    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    /// True while the link's reliable session waits for a new transport (see
    /// [`CoreLink::is_suspended`]): open transactions and our span live on.
    pub fn is_suspended(&self) -> bool {
        self.link.is_suspended()
    }

    /// Resumes the suspended session on a freshly connected transport; false when there is
    /// nothing to resume (then drain [`poll`](Self::poll) and start a new leaf).
    pub fn resume(&mut self, now: Instant) -> bool {
        self.link.reconnect(now)
    }

    /// Carries out an application command. `Ok(Some(txn))` for a transaction opened.
    #[inline(never)]
    pub fn command(
        &mut self,
        now: Instant,
        cmd: &LeafCommand<A>,
    ) -> Result<Option<TxnId>, SendError> {
        let del = |d: bool| if d { Flags::DELETE } else { Flags::empty() };
        match cmd {
            LeafCommand::Open {
                command,
                aux,
                delete,
                circuit,
                ..
            } => {
                let msg = Outgoing::new(*command).with_aux(aux);
                self.link.open(now, &msg, del(*delete), *circuit).map(Some)
            }
            LeafCommand::Send {
                txn,
                command,
                aux,
                error,
                delete,
            } => {
                let msg = Outgoing::new(*command).with_aux(aux).with_error(*error);
                self.link.send(now, *txn, &msg, del(*delete)).map(|_| None)
            }
            LeafCommand::Reply { txn, error } => self.link.reply(now, *txn, *error).map(|_| None),
            LeafCommand::Delete { txn } => self.link.reply(now, *txn, errcode::OK).map(|_| None),
            LeafCommand::Abort { txn } => self.link.abort(now, *txn).map(|_| None),
            LeafCommand::OneWay {
                command,
                aux,
                reply,
                circuit,
            } => {
                let msg = Outgoing::new(*command).with_aux(aux);
                self.link
                    .send_one_way(now, &msg, *reply, *circuit)
                    .map(|_| None)
            }
        }
    }

    /// The next event: handles what the leaf answers by itself ([`Polled::Handled`]) and
    /// copies the rest out for the application. Transmit before every call.
    #[inline(never)]
    pub fn poll(&mut self, now: Instant, cfg: &LeafConfig<'_>) -> Polled<A> {
        if let Some(n) = self.notice.take() {
            return Polled::Event(match n {
                Notice::SpanAdvertised(txn) => LeafEvent::SpanAdvertised { txn },
                Notice::SpanFailed(error) => LeafEvent::SpanFailed { error },
            });
        }
        if let Some((txn, msg)) = self.deferred.front().cloned() {
            match self.echo_txn(now, txn, &msg) {
                Err(SendError::WouldBlock { .. }) => {} // still no room; take events meanwhile
                _ => {
                    self.deferred.pop_front();
                    return Polled::Handled;
                }
            }
        }
        let Some(ev) = self.link.poll_event() else {
            return Polled::Idle;
        };
        // Copy out what is needed, so the connection is free for the answers.
        let (kind, msg) = match ev {
            Event::Connected => return Polled::Event(LeafEvent::Up),
            Event::PeerConn { conn, .. } => {
                let ev = LeafEvent::PeerConn {
                    peer_type: conn.peer_type,
                    peer_id: conn.peer_id,
                };
                if cfg.advertise_span && self.span.is_none() {
                    self.advertise(now, cfg);
                }
                return Polled::Event(ev);
            }
            Event::ConnAnswered { error } => {
                return Polled::Event(LeafEvent::ConnAnswered { error })
            }
            Event::Opened { txn, msg } => (Kind::Opened(txn), copy_msg(&msg)),
            Event::Message { txn, msg } => (Kind::Message(txn), copy_msg(&msg)),
            Event::OneWay { msg } => (Kind::OneWay, copy_msg(&msg)),
            Event::Closed { txn, error, end } => return self.on_closed(txn, error, end),
            Event::LinkClosed { reason } => {
                self.span = None;
                self.echoing = [None; ECHO_SLOTS];
                self.deferred.clear();
                return Polled::Event(LeafEvent::Down(crate::types::Down::Link(reason)));
            }
            Event::Suspended { reason } if L::SESSION => {
                return Polled::Event(LeafEvent::Suspended { reason })
            }
            Event::Resumed { outage, .. } if L::SESSION => {
                return Polled::Event(LeafEvent::Resumed { outage })
            }
            _ => return Polled::Handled,
        };
        match kind {
            Kind::Opened(txn) => {
                if cfg.echo == Some(msg.command) {
                    if let Err(SendError::WouldBlock { .. }) = self.echo_txn(now, txn, &msg) {
                        // No room now: answer later. When even that queue is full, the
                        // application gets the request (and sees its answer refused).
                        if let Err((txn, msg)) = self.deferred.push_back((txn, msg)) {
                            return Polled::Event(LeafEvent::Request { txn, msg });
                        }
                    }
                    return Polled::Handled;
                }
                self.close_peer_span(now, txn, &msg);
                Polled::Event(LeafEvent::Request { txn, msg })
            }
            Kind::Message(txn) => {
                if Some(txn) == self.span {
                    // The hub's answers on our span: close our side when it closes its.
                    if msg.flags.contains(Flags::DELETE) {
                        self.close_our_side(now, txn);
                    }
                    return Polled::Handled;
                }
                if self.echoing.contains(&Some(txn)) || self.is_deferred(txn) {
                    return Polled::Handled;
                }
                self.close_peer_span(now, txn, &msg);
                Polled::Event(LeafEvent::Message { txn, msg })
            }
            Kind::OneWay => {
                if cfg.echo == Some(msg.command) && !msg.flags.contains(Flags::REPLY) {
                    if let Some(circuit) = self.reply_circuit(&msg) {
                        if !msg.is_truncated() {
                            let out = Outgoing::new(msg.command).with_aux(&msg.aux);
                            if let Err(e) = self.link.send_one_way(now, &out, true, circuit) {
                                debug!("dmsg: one-way echo not sent: {:?}", e);
                            }
                        }
                        return Polled::Handled;
                    }
                }
                Polled::Event(LeafEvent::OneWay { msg })
            }
        }
    }

    /// Opens our LNK_SPAN.
    fn advertise(&mut self, now: Instant, cfg: &LeafConfig<'_>) {
        // `new` checked the labels, so this cannot fail.
        let Ok(span) = Self::span_repr(cfg) else {
            return;
        };
        let body = Body::Span(span);
        let msg = Outgoing::new(Command::LnkSpan).with_body(&body);
        self.notice = Some(match self.link.open(now, &msg, Flags::empty(), None) {
            Ok(txn) => {
                self.span = Some(txn);
                Notice::SpanAdvertised(txn)
            }
            Err(e) => Notice::SpanFailed(e),
        });
    }

    /// Answers an echo transaction with its own aux data and DELETE.
    /// `WouldBlock` (nothing sent) means: try again once the hub acknowledged some of our
    /// frames; on any other error the transaction is aborted.
    fn echo_txn(&mut self, now: Instant, txn: TxnId, msg: &Msg<A>) -> Result<(), SendError> {
        let res = if msg.is_truncated() {
            self.link.reply(now, txn, errcode::PARAM)
        } else {
            let out = Outgoing::new(msg.command).with_aux(&msg.aux);
            self.link.send(now, txn, &out, Flags::DELETE)
        };
        match res {
            Ok(()) => {
                if let Some(slot) = self.echoing.iter_mut().find(|s| s.is_none()) {
                    *slot = Some(txn);
                }
            }
            Err(SendError::WouldBlock { .. }) => {}
            Err(e) => {
                debug!("dmsg: echo not sent: {:?}", e);
                let _ = self.link.abort(now, txn);
            }
        }
        res
    }

    fn is_deferred(&self, txn: TxnId) -> bool {
        self.deferred.contains(txn)
    }

    /// The hub closed a LNK_SPAN it opened: close our side too, as DragonFly does.
    fn close_peer_span(&mut self, now: Instant, txn: TxnId, msg: &Msg<A>) {
        if txn.side() == Side::Theirs
            && msg.command == Command::LnkSpan
            && msg.flags.contains(Flags::DELETE)
        {
            self.close_our_side(now, txn);
        }
    }

    /// DELETEs our direction of `txn` if it is still open.
    fn close_our_side(&mut self, now: Instant, txn: TxnId) {
        let open = self
            .link
            .txn_state(txn)
            .is_some_and(|s| s.local != link::txn::Dir::Closed);
        if open {
            if let Err(e) = self.link.reply(now, txn, errcode::OK) {
                debug!("dmsg: DELETE not sent: {:?}", e);
            }
        }
    }

    /// The circuit to answer a one-way message on: circuit 0, or our span when the hub sent it
    /// on our span. `None` for any other circuit (the core has no lookup by wire circuit id).
    fn reply_circuit(&self, msg: &Msg<A>) -> Option<Option<TxnId>> {
        if msg.circuit.0 == 0 {
            return Some(None);
        }
        match self.span {
            Some(span) if msg.circuit.0 == span.msgid().0 && msg.flags.contains(Flags::REVCIRC) => {
                Some(Some(span))
            }
            _ => None,
        }
    }

    /// Routes a transaction's end: our span's, an echo's (swallowed), or the application's.
    fn on_closed(&mut self, txn: TxnId, error: u32, end: TxnEnd) -> Polled<A> {
        if Some(txn) == self.span {
            self.span = None;
            return Polled::Event(LeafEvent::SpanClosed { error });
        }
        if let Some(slot) = self.echoing.iter_mut().find(|s| **s == Some(txn)) {
            *slot = None;
            return Polled::Handled;
        }
        if self.is_deferred(txn) {
            // The hub gave up on it (ABORT) before our answer found room.
            self.deferred.remove(txn);
            return Polled::Handled;
        }
        Polled::Event(LeafEvent::Closed { txn, error, end })
    }
}

/// Which event a copied frame came with.
#[derive(Clone, Copy)]
enum Kind {
    Opened(TxnId),
    Message(TxnId),
    OneWay,
}

/// Copies a received frame: header fields and the first `A` bytes of its aux data.
pub fn copy_msg<const A: usize>(msg: &Received<'_>) -> Msg<A> {
    let n = msg.aux.len().min(A);
    let mut aux = heapless::Vec::new();
    // Cannot fail: n <= A.
    let _ = aux.extend_from_slice(&msg.aux[..n]);
    Msg {
        command: msg.command(),
        flags: msg.flags(),
        circuit: msg.header.circuit,
        error: msg.error(),
        aux,
        aux_len: u32::try_from(msg.aux.len()).unwrap_or(u32::MAX),
    }
}
