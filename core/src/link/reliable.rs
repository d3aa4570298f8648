//! The reliable session inside a link (`spec/SESSION.md` §8–9, `spec/LINK.md` §13).
//!
//! A [`Connection`] carries its session storage in its last type parameter: [`NoSession`]
//! (zero-sized, the default: plain DMSG and nothing else) or [`Reliable`], which holds a
//! [`Session`] and the little state the link needs around it. [`ReliableConnection`] names the
//! usual choice. With [`LinkConfig::session`] set and a peer that offers the session too,
//! every frame after the two LNK_CONNs runs through the session:
//!
//! - **Sending**: frames are encoded straight into the session's retransmit window
//!   ([`Session::send_with`], no intermediate copy); the socket gets
//!   [`Session::poll_transmit`] bytes only. A full window is
//!   [`SendError::WouldBlock`] for the application; room for
//!   two of the link's own answers is always kept free in the window (the reserve idea of the
//!   plain output queue).
//! - **Receiving**: every decoded frame goes through [`Session::on_frame_parts`] and is
//!   processed by the link only when the session delivers it (in order, exactly once). When
//!   the window has no room for the answers a frame may need, the link still reads the stream
//!   but lets the session refuse in-order frames ([`Session::on_frame_parts_busy`]): acks keep
//!   flowing, so two ends that both wait for acks never deadlock, and the refused frames come
//!   again. A layer above that holds an event back until room appears elsewhere (the node
//!   relaying between links) has the link read on the same way meanwhile, since that room
//!   may come from acks in this very stream.
//! - **Transport loss** (`handle_close`, a decode error, keepalive expiry) suspends the link
//!   instead of killing it ([`Event::Suspended`]): transactions stay open, commands keep
//!   working into the window. After [`Connection::handle_reconnect`] the session resumes,
//!   resends what the peer has not acknowledged, and the link reports [`Event::Resumed`].
//!   Only when the grace period runs out, or the peer answers RESET (it restarted), do the
//!   transactions end with LOSTLINK, once, with [`CloseReason::SessionDied`].
//! - **Clean shutdown**: the LNK_CONN DELETE exchange as in plain DMSG, then the session's FIN
//!   handshake; the link reports `LinkClosed` when both are done.
//!
//! A node that accepts connections routes a new stream with [`classify_stream`]: a RESUME goes
//! to the connection whose [`session_id`](Connection::session_id) it names (then
//! `handle_reconnect` and `handle_input` with the stream's bytes), anything else starts a new
//! connection, and a RESUME for no known session is answered with
//! [`StreamStart::stateless_reset`] before the stream is closed.

use core::fmt;

use crate::crc::{Crc32c, DefaultCrc, SoftCrc32c1};
use crate::encode::EncodeError;
use crate::session::{
    offered_session, ControlFrame, ControlOp, Outcome, Reserve, Session, SessionError,
    SessionEvent, SessionStats, TransportState, Verdict,
};
use crate::time::{Duration, Instant};
use crate::wire::{align64, Body, ByteOrder, Cmd, Command, Flags, Header, HeaderRepr, HEADER_LEN};

use super::config::{Extensions, LinkConfig};
use super::error::{ConfigError, SendError};
use super::event::{CloseReason, Event};
use super::outq::{wire_len, CTL_RESERVE};
use super::{Connection, Outgoing, Phase, Side, OPAQUE_EXT_MAX};

/// A [`Connection`] with storage for the reliable session: a retransmit window of `WF` frames
/// in `WB` bytes (no reorder buffer: over TCP frames arrive in order). The session runs when
/// [`LinkConfig::session`] is set and the peer offers it too; otherwise the link is plain DMSG,
/// byte for byte. Its size is a plain connection's plus about `WB + 16 * WF + 700` bytes.
pub type ReliableConnection<
    const RX: usize,
    const AUX: usize,
    const TX: usize,
    const TXNS: usize,
    const WF: usize,
    const WB: usize,
    C = DefaultCrc,
> = Connection<RX, AUX, TX, TXNS, C, Reliable<C, WF, WB, 0, 0>>;

/// [`McuConnection`](super::McuConnection) with the reliable session: a 12-frame, 2 KiB
/// retransmit window (the largest application frame stays 1,920 bytes).
pub type ReliableMcuConnection =
    ReliableConnection<{ 8 * 64 + 1024 }, 1024, 2048, 8, 12, 2048, SoftCrc32c1>;

/// [`HostConnection`](super::HostConnection) with the reliable session: a 64-frame window of
/// four maximal frames (about 264 KiB). `Box` it.
pub type ReliableHostConnection = ReliableConnection<
    { 32 * 64 + 65536 },
    65536,
    { 2 * (32 * 64 + 65536) },
    256,
    64,
    { 4 * (32 * 64 + 65536) },
    DefaultCrc,
>;

/// Room an application frame leaves in the window: two answers of the link's own.
const APP_RESERVE: Reserve = Reserve {
    frames: 2,
    bytes: CTL_RESERVE as u32,
};

/// The storage of a [`Connection`] that can run a session. Sealed: [`NoSession`] and
/// [`Reliable`] are the only ones.
pub trait SessionSlot<C: Crc32c + Clone>: hooks::Hooks<C> {}

/// No session storage: the connection speaks plain DMSG only (zero bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoSession;

impl<C: Crc32c + Clone> SessionSlot<C> for NoSession {}

/// Where a session-capable connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    /// Not offered: plain DMSG.
    Off,
    /// Offered; nothing but our LNK_CONN leaves until the peer's first frame arrives.
    /// Commands are accepted and held behind the LNK_CONN (at most what the window takes).
    Holding,
    /// The peer did not offer it (or its first frame was not its LNK_CONN): plain DMSG.
    Plain,
    /// Running (and, once the link closed, ended: see the session's outcome).
    Session,
}

/// Counters of the link around its session (the session's own are in
/// [`Session::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReliableStats {
    /// Transports given up (each reported as [`Event::Suspended`] unless coalesced).
    pub suspensions: u64,
    /// [`Connection::handle_reconnect`] calls accepted.
    pub reconnects: u64,
    /// Completed resumes (each reported as [`Event::Resumed`] unless coalesced).
    pub resumes: u64,
    /// Frames accepted before the peer's LNK_CONN and moved into the session at its start.
    pub frames_held: u64,
}

/// Session storage of a [`Connection`]: the [`Session`] (`WF` frames in `WB` bytes of
/// retransmit window, `RF` frames in `RB` bytes of reorder buffer) and the link's state around
/// it. Plain data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reliable<C, const WF: usize, const WB: usize, const RF: usize, const RB: usize> {
    session: Session<C, WF, WB, RF, RB>,
    /// Our identity when offered (0: not offered).
    our_id: u64,
    mode: Mode,
    /// The latest instant seen, for the inputs that carry none.
    clock: Instant,
    /// Bytes of our LNK_CONN not yet transmitted (what may leave while holding).
    conn_left: u32,
    /// Frames and bytes queued behind our LNK_CONN while holding.
    staged_frames: u16,
    staged_bytes: u32,
    /// The transport is gone and no new one was reported: why.
    down: Option<CloseReason>,
    /// Events for the application.
    ev_suspended: Option<CloseReason>,
    ev_resumed: Option<(Duration, u32)>,
    /// Our FIN is queued (the link's own shutdown completed).
    fin_queued: bool,
    stats: ReliableStats,
}

impl<C: Crc32c + Clone, const WF: usize, const WB: usize, const RF: usize, const RB: usize>
    SessionSlot<C> for Reliable<C, WF, WB, RF, RB>
{
}

impl<C, const WF: usize, const WB: usize, const RF: usize, const RB: usize>
    Reliable<C, WF, WB, RF, RB>
{
    /// Compile-time checks of the window against the link's needs.
    const LAYOUT: () = {
        assert!(
            WF >= 5,
            "the window needs a frame, two answers of the link, a spare and the FIN"
        );
        assert!(
            WB >= 2 * CTL_RESERVE + 6 * 64,
            "the window must hold a small frame plus the link's reserve (and our LNK_CONN's size)"
        );
    };

    /// Room for frames held before the session starts: they all fit into the empty window
    /// with our answer to the peer's LNK_CONN (a bare header, sent through the session right
    /// after it starts), the reserve and the FIN's slot to spare. Without the room for that
    /// answer, two ends that both filled their staging area start their sessions with no room
    /// for the answers a received frame may need (see `answers_fit`): each refuses the other's
    /// frames as busy, nothing is ever acknowledged, and the link deadlocks.
    fn staging_room(&self) -> usize {
        if self.staged_frames as usize + 1 + 1 + 1 + APP_RESERVE.frames as usize > WF {
            return 0;
        }
        (WB - CTL_RESERVE - HEADER_LEN).saturating_sub(self.staged_bytes as usize)
    }

    fn tick(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }
}

/// Why [`Connection::handle_reconnect`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReconnectError {
    /// The link does not run a session (not offered, not negotiated yet, or the peer did not
    /// offer it): a lost transport ended it.
    NoSession,
    /// The link is closed; drop it (and answer a RESUME for it with a stateless RESET).
    Closed,
}

impl fmt::Display for ReconnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconnectError::NoSession => f.write_str("the link runs no session"),
            ReconnectError::Closed => f.write_str("the link is closed"),
        }
    }
}

impl core::error::Error for ReconnectError {}

// ---------------------------------------------------------------------------------------------
// Routing a new stream

/// What the first bytes of a newly accepted stream are ([`classify_stream`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StreamStart {
    /// Fewer than 64 bytes so far: read more.
    NeedMore,
    /// A session RESUME: the stream belongs to the connection whose
    /// [`session_id`](Connection::session_id) is `frame.receiver_id` (and whose peer is
    /// `frame.sender_id`). Call its [`handle_reconnect`](Connection::handle_reconnect), then
    /// feed it the stream from its first byte. With no such connection, send
    /// [`stateless_reset`](StreamStart::stateless_reset) and close the stream.
    Resume(ControlFrame),
    /// Anything else (a LNK_CONN, or a plain DMSG peer's first frame): a new link.
    Fresh,
    /// Not a valid first frame (bad magic, a bad header CRC on a RESUME, or another session
    /// control frame): close the stream.
    Invalid,
}

impl StreamStart {
    /// For a [`StreamStart::Resume`] that names no known session: writes the RESET to send
    /// back (the first frame of our side of the stream) and returns its length, 64. `None`
    /// for the other kinds.
    pub fn stateless_reset<C: Crc32c>(&self, crc: &C, out: &mut [u8; HEADER_LEN]) -> Option<usize> {
        match self {
            StreamStart::Resume(f) => {
                f.reset_reply().emit(crc, 0, out);
                Some(HEADER_LEN)
            }
            _ => None,
        }
    }
}

/// Classifies the first bytes of a newly accepted stream, so a node can route it: a RESUME of
/// an existing session, or a new link. See [`StreamStart`]. Looks at the first 64 bytes only
/// and consumes nothing.
///
/// ```
/// use dmsg_core::crc::DefaultCrc;
/// use dmsg_core::link::{classify_stream, StreamStart};
/// use dmsg_core::session::{ControlFrame, ControlOp};
///
/// let crc = DefaultCrc::default();
/// let resume = ControlFrame { op: ControlOp::Resume, sender_id: 7, receiver_id: 9, seq: None, ack: None };
/// let mut first = [0u8; 64];
/// resume.emit(&crc, 0, &mut first);
/// let start = classify_stream(&crc, &first);
/// assert_eq!(start, StreamStart::Resume(resume));
/// // No connection has session id 9: answer RESET and close.
/// let mut reset = [0u8; 64];
/// assert_eq!(start.stateless_reset(&crc, &mut reset), Some(64));
/// assert_eq!(classify_stream(&crc, &first[..10]), StreamStart::NeedMore);
/// ```
pub fn classify_stream<C: Crc32c>(crc: &C, first: &[u8]) -> StreamStart {
    let Some(base) = first.get(..HEADER_LEN) else {
        return match first.get(..2) {
            Some(m) if ByteOrder::from_magic(u16::from_le_bytes([m[0], m[1]])).is_none() => {
                StreamStart::Invalid
            }
            _ => StreamStart::NeedMore,
        };
    };
    let Ok(h) = Header::new_checked(base) else {
        return StreamStart::Invalid;
    };
    let repr = HeaderRepr::parse(&h);
    match ControlFrame::parse(&repr) {
        None => StreamStart::Fresh,
        Some(Ok(f)) if f.op == ControlOp::Resume && h.cmd().header_len() == HEADER_LEN => {
            let mut zeroed = [0u8; HEADER_LEN];
            zeroed.copy_from_slice(base);
            zeroed[0x3C..HEADER_LEN].fill(0);
            if crc.checksum(&zeroed) == repr.hdr_crc {
                StreamStart::Resume(f)
            } else {
                StreamStart::Invalid
            }
        }
        Some(_) => StreamStart::Invalid,
    }
}

// ---------------------------------------------------------------------------------------------
// The hooks the connection calls

pub(super) mod hooks {
    use super::*;

    /// What a [`Connection`] asks of its session storage. Every method has the plain-DMSG
    /// answer as its default; [`NoSession`] keeps them all, so the compiler removes every
    /// session branch from a plain connection.
    pub trait Hooks<C: Crc32c + Clone>: Sized {
        /// The storage for `config` (checks [`LinkConfig::session`]).
        fn new(config: &LinkConfig, crc: &C) -> Result<Self, ConfigError>;

        /// Extra `ext_offer` bits and the `session_id` of our LNK_CONN.
        #[inline(always)]
        fn conn_fields(&self) -> (Extensions, u64) {
            (Extensions::NONE, 0)
        }

        /// Waiting for the peer's first frame with output held behind our LNK_CONN.
        #[inline(always)]
        fn holding(&self) -> bool {
            false
        }

        /// The session was negotiated: input, output and timers go through the session.
        #[inline(always)]
        fn in_session(&self) -> bool {
            false
        }

        /// An event of the session layer waits.
        #[inline(always)]
        fn has_event(&self) -> bool {
            false
        }

        /// The next event of the session layer.
        #[inline(always)]
        fn take_event(&mut self) -> Option<Event<'static>> {
            None
        }

        /// The next event of the session layer, left in place.
        #[inline(always)]
        fn peek_event(&self) -> Option<Event<'static>> {
            None
        }

        /// Bytes the application may queue while holding (`usize::MAX` when not holding).
        #[inline(always)]
        fn staging_room(&self) -> usize {
            usize::MAX
        }

        /// A frame of `bytes` was queued behind our LNK_CONN.
        #[inline(always)]
        fn note_queued(&mut self, _bytes: usize) {}

        /// Largest application frame, given the output queue's.
        #[inline(always)]
        fn max_frame(&self, queue_max: usize) -> usize {
            queue_max
        }

        /// While holding: the peer's first frame arrived (before the link processes it).
        #[inline(always)]
        fn first_frame<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
            _hdr: &HeaderRepr,
        ) {
        }

        /// `handle_input` in session mode.
        #[inline(always)]
        fn input<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
            input: &[u8],
        ) -> usize {
            input.len()
        }

        /// `handle_timeout` in session mode.
        #[inline(always)]
        fn timeout<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
        ) {
        }

        /// `poll_timeout` in session mode (the link is not closed).
        #[inline(always)]
        fn timeout_at<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> Option<Instant> {
            None
        }

        /// The transport is gone, in session mode.
        #[inline(always)]
        fn transport_lost<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _reason: CloseReason,
        ) {
        }

        /// `poll_transmit` while holding or in session mode.
        #[inline(always)]
        fn transmit<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
            _out: &mut [u8],
        ) -> usize {
            0
        }

        /// `pending_transmit` while holding or in session mode.
        #[inline(always)]
        fn pending<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> usize {
            c.out.len()
        }

        /// An application frame, in session mode.
        #[inline(always)]
        fn push_app<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
            _hdr: &HeaderRepr,
            _msg: &Outgoing<'_>,
        ) -> Result<(), SendError> {
            Err(SendError::Closed)
        }

        /// A frame of the link's own (no body, no aux), in session mode.
        #[inline(always)]
        fn push_ctl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
            _hdr: &HeaderRepr,
        ) {
        }

        /// `send_capacity` in session mode.
        #[inline(always)]
        fn capacity<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> usize {
            0
        }

        /// The link dies (any mode; called before it is marked closed).
        #[inline(always)]
        fn on_die<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
        ) {
        }

        /// In session mode: the link's clean shutdown is complete but for the session's FIN
        /// handshake. Returns true when the link may close now.
        #[inline(always)]
        fn finish_close<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> bool {
            true
        }

        /// [`Connection::handle_reconnect`], for any storage.
        #[inline(always)]
        fn reconnect<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
        ) -> Result<(), ReconnectError> {
            Err(ReconnectError::NoSession)
        }

        /// `(our_id, peer_id)` of a session that runs and can still be resumed.
        #[inline(always)]
        fn live_ids(&self) -> Option<(u64, u64)> {
            None
        }

        /// Between a transport loss and the next reconnect.
        #[inline(always)]
        fn suspended(&self) -> bool {
            false
        }

        /// Our session identity when offered.
        #[inline(always)]
        fn offered_id(&self) -> Option<u64> {
            None
        }

        /// The current time, for the inputs that carry none (`handle_close`).
        #[inline(always)]
        fn note_time(&mut self, _now: Instant) {}

        /// Input while the layer above holds the pending event back (see
        /// `session_input_mode`); plain DMSG reads nothing then.
        #[inline(always)]
        fn input_stalled<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            _c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
            _input: &[u8],
        ) -> usize {
            0
        }

        /// [`Connection::abandon`], for any storage.
        fn abandon<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
        );

        /// The link's counters around its session, if it has session storage.
        #[inline(always)]
        fn rel_stats(&self) -> Option<ReliableStats> {
            None
        }

        /// The session's own counters, if the link has session storage.
        #[inline(always)]
        fn sess_stats(&self) -> Option<SessionStats> {
            None
        }

        /// Frames in the session's window the peer has not acknowledged.
        #[inline(always)]
        fn unacked(&self) -> usize {
            0
        }

        /// In session mode: the largest application frame that leaves room for `frames`
        /// more frames of `frame_bytes` in the window than usual, `frames` capped at a quarter
        /// of the window (at least 2); with that room in bytes. `None`: not in session.
        #[inline(always)]
        fn room_keeping<const TX: usize>(
            &self,
            _frames: u16,
            _frame_bytes: u32,
        ) -> Option<(usize, usize)> {
            None
        }
    }

    impl<C: Crc32c + Clone> Hooks<C> for NoSession {
        #[inline(always)]
        fn new(config: &LinkConfig, _crc: &C) -> Result<Self, ConfigError> {
            match config.session {
                Some(_) => Err(ConfigError::SessionUnsupported),
                None => Ok(NoSession),
            }
        }

        #[inline(always)]
        fn abandon<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            _now: Instant,
        ) {
            c.handle_close();
        }
    }

    impl<C: Crc32c + Clone, const WF: usize, const WB: usize, const RF: usize, const RB: usize>
        Hooks<C> for Reliable<C, WF, WB, RF, RB>
    {
        fn new(config: &LinkConfig, crc: &C) -> Result<Self, ConfigError> {
            let () = Self::LAYOUT;
            let (our_id, mode, scfg) = match config.session {
                None => (0, Mode::Off, Default::default()),
                Some(o) if o.id == 0 => return Err(ConfigError::ZeroSessionId),
                Some(o) => (o.id, Mode::Holding, o.config),
            };
            let conn_len = Cmd::new(Command::LnkConn, Flags::CREATE).header_len();
            Ok(Reliable {
                session: Session::new(scfg, crc.clone()),
                our_id,
                mode,
                clock: Instant::ZERO,
                conn_left: conn_len as u32,
                staged_frames: 0,
                staged_bytes: 0,
                down: None,
                ev_suspended: None,
                ev_resumed: None,
                fin_queued: false,
                stats: ReliableStats::default(),
            })
        }

        fn conn_fields(&self) -> (Extensions, u64) {
            match self.mode {
                Mode::Off => (Extensions::NONE, 0),
                _ => (Extensions::RELIABLE_SESSION_V1, self.our_id),
            }
        }

        #[inline]
        fn holding(&self) -> bool {
            self.mode == Mode::Holding
        }

        #[inline]
        fn in_session(&self) -> bool {
            self.mode == Mode::Session
        }

        #[inline]
        fn has_event(&self) -> bool {
            self.ev_suspended.is_some() || self.ev_resumed.is_some()
        }

        fn take_event(&mut self) -> Option<Event<'static>> {
            let ev = self.peek_event();
            if self.ev_suspended.take().is_none() {
                self.ev_resumed = None;
            }
            ev
        }

        fn peek_event(&self) -> Option<Event<'static>> {
            if let Some(reason) = self.ev_suspended {
                return Some(Event::Suspended { reason });
            }
            self.ev_resumed
                .map(|(outage, pending)| Event::Resumed { outage, pending })
        }

        fn staging_room(&self) -> usize {
            match self.mode {
                Mode::Holding => Reliable::staging_room(self),
                _ => usize::MAX,
            }
        }

        fn note_queued(&mut self, bytes: usize) {
            if self.mode == Mode::Holding {
                self.staged_frames += 1;
                self.staged_bytes += bytes as u32;
            }
        }

        fn max_frame(&self, queue_max: usize) -> usize {
            match self.mode {
                Mode::Holding | Mode::Session => queue_max.min(WB - CTL_RESERVE),
                Mode::Off | Mode::Plain => queue_max,
            }
        }

        fn first_frame<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
            hdr: &HeaderRepr,
        ) {
            c.session_first_frame(now, hdr);
        }

        fn input<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
            input: &[u8],
        ) -> usize {
            c.session_input(now, input)
        }

        fn timeout<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
        ) {
            c.session_timeout(now);
        }

        fn timeout_at<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> Option<Instant> {
            c.session_timeout_at()
        }

        fn transport_lost<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            reason: CloseReason,
        ) {
            let now = c.rel.clock;
            c.suspend(now, reason);
        }

        fn transmit<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
            out: &mut [u8],
        ) -> usize {
            c.session_transmit(now, out)
        }

        fn pending<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> usize {
            match c.rel.mode {
                Mode::Holding => c.out.len().min(c.rel.conn_left as usize),
                Mode::Session => c.out.len() + c.rel.session.pending_bytes(),
                Mode::Off | Mode::Plain => c.out.len(),
            }
        }

        fn push_app<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
            hdr: &HeaderRepr,
            msg: &Outgoing<'_>,
        ) -> Result<(), SendError> {
            c.session_push_app(now, hdr, msg)
        }

        fn push_ctl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
            hdr: &HeaderRepr,
        ) {
            c.session_push_ctl(now, hdr);
        }

        fn capacity<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> usize {
            c.rel
                .session
                .send_room(APP_RESERVE)
                .min(TX.saturating_sub(CTL_RESERVE))
        }

        fn on_die<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
        ) {
            if c.rel.mode == Mode::Session && c.rel.session.outcome() == Outcome::Running {
                // Tell the peer at once (RESET, if a transport is up), so it does not wait for
                // its grace period.
                let now = c.rel.clock;
                c.rel.session.abort(now);
                while c.rel.session.poll_event().is_some() {}
            }
        }

        fn finish_close<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
        ) -> bool {
            if !c.rel.fin_queued {
                c.rel.fin_queued = true;
                let now = c.rel.clock;
                // Fails only if the session already ended, which ends the link too.
                let _ = c.rel.session.close(now);
            }
            false
        }

        fn reconnect<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
        ) -> Result<(), ReconnectError> {
            c.handle_reconnect(now)
        }

        fn live_ids(&self) -> Option<(u64, u64)> {
            match (self.mode, self.session.outcome()) {
                (Mode::Session, Outcome::Running) => self.session.ids(),
                _ => None,
            }
        }

        fn suspended(&self) -> bool {
            self.down.is_some()
        }

        fn offered_id(&self) -> Option<u64> {
            (self.mode != Mode::Off).then_some(self.our_id)
        }

        fn note_time(&mut self, now: Instant) {
            self.tick(now);
        }

        fn abandon<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
        ) {
            c.abandon(now);
        }

        fn input_stalled<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize>(
            c: &mut Connection<RX, AUX, TX, TXNS, C, Self>,
            now: Instant,
            input: &[u8],
        ) -> usize {
            if c.is_closed() || !c.rel.in_session() {
                return 0;
            }
            c.session_input_mode(now, input, true)
        }

        fn rel_stats(&self) -> Option<ReliableStats> {
            Some(self.stats)
        }

        fn sess_stats(&self) -> Option<SessionStats> {
            Some(*self.session.stats())
        }

        fn unacked(&self) -> usize {
            self.session.in_flight()
        }

        fn room_keeping<const TX: usize>(
            &self,
            frames: u16,
            frame_bytes: u32,
        ) -> Option<(usize, usize)> {
            if self.mode != Mode::Session {
                return None;
            }
            let frames = frames.min((WF / 4).max(2) as u16);
            let bytes = frames as u32 * frame_bytes;
            let reserve = Reserve {
                frames: APP_RESERVE.frames + frames,
                bytes: APP_RESERVE.bytes + bytes,
            };
            let room = self
                .session
                .send_room(reserve)
                .min(TX.saturating_sub(CTL_RESERVE));
            Some((room, bytes as usize))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session queries for any storage (the node layer is generic over it)

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S>
    Connection<RX, AUX, TX, TXNS, C, S>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    /// [`handle_reconnect`](Connection::handle_reconnect) for any session storage: a plain
    /// connection answers [`ReconnectError::NoSession`].
    pub(crate) fn reconnect_any(&mut self, now: Instant) -> Result<(), ReconnectError> {
        S::reconnect(self, now)
    }

    /// `(our_id, peer_id)` while a session runs on the link and can be resumed (not before
    /// it was negotiated, not after it ended or the link closed).
    pub(crate) fn live_session_ids(&self) -> Option<(u64, u64)> {
        if self.is_closed() {
            return None;
        }
        self.rel.live_ids()
    }

    /// True between a transport loss and the next reconnect (always false without a
    /// session).
    pub(crate) fn transport_suspended(&self) -> bool {
        !self.is_closed() && self.rel.suspended()
    }

    /// The counters around the session, if the connection has session storage.
    pub(crate) fn reliable_stats_any(&self) -> Option<ReliableStats> {
        self.rel.rel_stats()
    }

    /// The largest frame the application can send now (the output queue's, or the
    /// session window's).
    pub(crate) fn max_app_frame(&self) -> usize {
        self.rel.max_frame(Self::MAX_FRAME)
    }

    /// [`send_capacity`](Connection::send_capacity), but leaving room in a running
    /// session's window for `frames` more frames of `frame_bytes` each (at most a quarter of
    /// the window's frames, at least 2), and the bytes so kept. Without a running session:
    /// `send_capacity` and 0 (a plain output queue drains whatever the peer does).
    pub(crate) fn send_capacity_keeping(&self, frames: u16, frame_bytes: u32) -> (usize, usize) {
        self.rel
            .room_keeping::<TX>(frames, frame_bytes)
            .unwrap_or_else(|| (self.send_capacity(), 0))
    }

    /// Frames the peer has not acknowledged yet (0 without a session).
    pub(crate) fn unacked_frames(&self) -> usize {
        self.rel.unacked()
    }

    /// The session's counters, if the connection has session storage.
    pub(crate) fn session_stats_any(&self) -> Option<SessionStats> {
        self.rel.sess_stats()
    }

    /// [`session_id`](Connection::session_id) for any session storage.
    pub(crate) fn session_id_any(&self) -> Option<u64> {
        self.rel.offered_id()
    }

    /// Input for a link whose pending event the layer above holds back until room appears
    /// elsewhere: with a running session the stream is read on through the session's busy
    /// path (acks and control are processed, frames are refused and sent again by the peer),
    /// so windows that wait for acks in this stream can drain; returns the bytes used.
    /// Without a session it reads nothing (returns 0): a plain link's output drains without
    /// the peer's help.
    pub(crate) fn handle_input_stalled(&mut self, now: Instant, input: &[u8]) -> usize {
        S::input_stalled(self, now, input)
    }

    /// Ends the link now, session or not ([`abandon`](Connection::abandon) for any
    /// storage).
    pub(crate) fn abandon_any(&mut self, now: Instant) {
        S::abandon(self, now);
    }

    /// Tells the session the time before an input that carries none
    /// ([`handle_close`](Connection::handle_close)), so the grace period starts now.
    pub(crate) fn note_time(&mut self, now: Instant) {
        self.rel.note_time(now);
    }
}

// ---------------------------------------------------------------------------------------------
// The session-mode paths of the connection

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
    > Connection<RX, AUX, TX, TXNS, C, Reliable<C, WF, WB, RF, RB>>
where
    C: Crc32c + Clone,
{
    /// A new transport is up for this link's session: the connecting side after it
    /// reconnected, or the accepting side after [`classify_stream`] routed a stream that
    /// starts with a RESUME for [`session_id`](Self::session_id) to it. Feed the new
    /// stream's bytes from its first one with [`handle_input`](Self::handle_input) and
    /// discard anything unread from the old transport. The session sends RESUME (or
    /// RESUME_OK), then everything the peer has not acknowledged; [`Event::Resumed`] follows
    /// when the peer answers.
    ///
    /// A transport that was not reported lost is given up first ([`Event::Suspended`]).
    pub fn handle_reconnect(&mut self, now: Instant) -> Result<(), ReconnectError> {
        if self.is_closed() {
            return Err(ReconnectError::Closed);
        }
        if self.rel.mode != Mode::Session {
            return Err(ReconnectError::NoSession);
        }
        self.rel.tick(now);
        if self.rel.down.is_none() {
            self.suspend(now, CloseReason::TransportClosed);
        }
        if self.is_closed() {
            return Err(ReconnectError::Closed);
        }
        self.decoder.reset();
        self.rel.session.transport_connected(now);
        self.rel.down = None;
        self.rel.stats.reconnects += 1;
        self.last_rx = now;
        self.last_tx = now;
        self.session_events(now);
        Ok(())
    }

    /// Gives the link up now, without waiting for the grace period (a node that sees the peer
    /// connect afresh, or a driver shutting down): with a running session it is aborted (the
    /// peer gets RESET if a transport is up), every open transaction closes with LOSTLINK and
    /// the link reports [`CloseReason::SessionDied`] with
    /// [`DeathReason::Aborted`](crate::session::DeathReason::Aborted); without one this is
    /// [`handle_close`](Self::handle_close). No effect once closed.
    pub fn abandon(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.rel.tick(now);
        if self.session_running() {
            self.rel.session.abort(now);
            self.session_events(now);
        } else {
            self.die(CloseReason::TransportClosed);
        }
    }

    /// The session (read-only): its outcome, state, counters, and after it died the frames
    /// the peer never acknowledged ([`Session::unacked`]).
    pub fn session(&self) -> &Session<C, WF, WB, RF, RB> {
        &self.rel.session
    }

    /// True while the link runs over the session (negotiated and not ended).
    pub fn session_running(&self) -> bool {
        self.rel.mode == Mode::Session && self.rel.session.outcome() == Outcome::Running
    }

    /// Our session identity when the session is offered ([`SessionOffer::id`](super::SessionOffer::id)).
    pub fn session_id(&self) -> Option<u64> {
        (self.rel.mode != Mode::Off).then_some(self.rel.our_id)
    }

    /// True between a transport loss ([`Event::Suspended`]) and the next
    /// [`handle_reconnect`](Self::handle_reconnect).
    pub fn is_suspended(&self) -> bool {
        self.rel.down.is_some() && !self.is_closed()
    }

    /// Counters of the link around its session.
    pub fn reliable_stats(&self) -> &ReliableStats {
        &self.rel.stats
    }

    /// Session counters (shortcut for `session().stats()`).
    pub fn session_stats(&self) -> &SessionStats {
        self.rel.session.stats()
    }

    // ----- negotiation -------------------------------------------------------------------

    /// The peer's first frame while holding: its LNK_CONN offering the session starts it;
    /// anything else means a plain peer.
    fn session_first_frame(&mut self, now: Instant, hdr: &HeaderRepr) {
        self.rel.tick(now);
        let flags = hdr.cmd.flags();
        let peer_id = match &self.rx_body {
            Body::Conn(conn)
                if hdr.cmd.command() == Command::LnkConn
                    && flags.contains(Flags::CREATE)
                    && !flags.intersects(Flags::REPLY | Flags::REVTRANS) =>
            {
                offered_session(conn)
            }
            _ => None,
        };
        let our_id = self.rel.our_id;
        let started = peer_id.is_some_and(|p| self.rel.session.start(now, our_id, p).is_ok());
        if !started {
            // Plain DMSG: what was held leaves as it is.
            self.rel.mode = Mode::Plain;
            self.offer = Extensions::from_bits_truncate(
                self.offer.bits() & !Extensions::RELIABLE_SESSION_V1.bits(),
            );
            return;
        }
        self.rel.mode = Mode::Session;
        // Frames queued behind our LNK_CONN move into the session (their salt, sequence
        // numbers and header CRC are rewritten when sent). They fit: see `staging_room`.
        let keep = self.rel.conn_left as usize;
        let waiting = self.out.waiting();
        let mut off = keep;
        while off < waiting.len() {
            let len = match Header::new_checked(&waiting[off..]) {
                Ok(h) => h.cmd().header_len() + align64(h.aux_bytes() as usize),
                Err(_) => break,
            };
            let Some(frame) = waiting.get(off..off + len) else {
                break;
            };
            let moved = self.rel.session.send(now, frame);
            debug_assert!(moved.is_ok(), "held frames fit the empty window");
            self.rel.stats.frames_held += 1;
            off += len;
        }
        debug_assert_eq!(off, waiting.len());
        self.out.truncate(keep);
        self.rel.staged_frames = 0;
        self.rel.staged_bytes = 0;
    }

    // ----- input -------------------------------------------------------------------------

    /// True when the window has room for the answers one received frame may need (or the
    /// session can send nothing anymore, so there will be none).
    fn answers_fit(&self) -> bool {
        let s = &self.rel.session;
        !s.state().can_send() || s.can_send_many(2, HEADER_LEN)
    }

    fn session_input(&mut self, now: Instant, input: &[u8]) -> usize {
        self.session_input_mode(now, input, false)
    }

    /// `stalled`: the layer above leaves the pending event where it is until room appears
    /// elsewhere, and that room may depend on acks in this very stream (a node relaying
    /// between two links whose windows are full, each waiting to forward into the other).
    /// Read on regardless: every frame goes through the session's busy path (its ack and
    /// control are processed, nothing is delivered; the peer sends the frames again).
    fn session_input_mode(&mut self, now: Instant, input: &[u8], stalled: bool) -> usize {
        self.rel.tick(now);
        if self.rel.down.is_some() {
            // Bytes of a transport already given up.
            self.stats.rx_bytes_discarded += input.len() as u64;
            return input.len();
        }
        self.release_delivered();
        let mut used = 0;
        loop {
            if self.is_closed() {
                self.stats.rx_bytes_discarded += (input.len() - used) as u64;
                return input.len();
            }
            if self.rel.down.is_some() || (!stalled && self.has_pending_event()) {
                break;
            }
            let ready = !stalled && self.answers_fit();
            if RF > 0 && ready && self.deliver_held(now) {
                continue;
            }
            if used >= input.len() {
                break;
            }
            let session = &mut self.rel.session;
            let aux_buf = &mut self.aux;
            let ext_buf = &mut self.rx_ext;
            let ext_len = &mut self.rx_ext_len;
            let body_buf = &mut self.rx_body;
            let bad_bodies = &mut self.stats.bad_bodies;
            let (n, frame) = match self.decoder.decode(&input[used..]) {
                Ok(out) => {
                    let frame = out.frame.map(|f| {
                        let v = if ready {
                            session.on_frame_parts(now, f.ext_bytes(), f.aux())
                        } else {
                            session.on_frame_parts_busy(now, f.ext_bytes(), f.aux())
                        };
                        if v != Verdict::Deliver {
                            return None;
                        }
                        let aux = f.aux();
                        let copied = match aux_buf.get_mut(..aux.len()) {
                            Some(dst) => {
                                dst.copy_from_slice(aux);
                                aux.len()
                            }
                            None => 0, // the decoder limits aux to AUX bytes
                        };
                        let repr = f.repr();
                        *ext_len = copy_ext(repr.cmd.command(), f.ext_bytes(), ext_buf);
                        super::store_body(&f, body_buf, bad_bodies);
                        Some((repr, copied))
                    });
                    (out.consumed, frame)
                }
                Err(e) => {
                    self.stats.rx_bytes_discarded += (input.len() - used) as u64;
                    self.suspend(now, CloseReason::Decode(e));
                    return input.len();
                }
            };
            used += n;
            self.stats.bytes_in += n as u64;
            self.last_rx = now;
            match frame {
                Some(Some((hdr, aux_len))) => {
                    debug_assert!(!stalled, "the busy path delivers nothing");
                    self.on_frame(now, hdr, aux_len);
                }
                Some(None) => self.stats.frames_in += 1,
                None if n == 0 => break,
                None => {}
            }
            self.session_events(now);
        }
        used
    }

    /// Processes the next frame the reorder buffer holds in order, if any.
    fn deliver_held(&mut self, now: Instant) -> bool {
        let aux_buf = &mut self.aux;
        let ext_buf = &mut self.rx_ext;
        let ext_len = &mut self.rx_ext_len;
        let Some(held) = self.rel.session.poll_deliver(now) else {
            return false;
        };
        let aux = held.aux();
        let copied = match aux_buf.get_mut(..aux.len()) {
            Some(dst) => {
                dst.copy_from_slice(aux);
                aux.len()
            }
            None => 0,
        };
        let repr = held.repr();
        *ext_len = copy_ext(repr.cmd.command(), held.ext_bytes(), ext_buf);
        self.rx_body = match held.body() {
            Ok(b) => b,
            Err(_) => {
                self.stats.bad_bodies += 1;
                Body::None
            }
        };
        self.on_frame(now, repr, copied);
        self.session_events(now);
        true
    }

    /// Acts on what the session reports.
    fn session_events(&mut self, now: Instant) {
        while let Some(ev) = self.rel.session.poll_event() {
            match ev {
                SessionEvent::Resumed { outage, pending } => {
                    self.rel.stats.resumes += 1;
                    self.rel.ev_resumed = Some((outage, pending));
                    self.last_rx = now;
                }
                SessionEvent::PeerClosing => {
                    // The peer finished its side: finish ours (or, if ours is done, the FIN
                    // handshake completes it).
                    if self.phase == Phase::Open {
                        self.begin_shutdown(now, Side::Theirs);
                    } else {
                        self.check_clean_close();
                    }
                }
                SessionEvent::ClosedCleanly => {
                    if let Phase::Closing { initiator, .. } = self.phase {
                        self.phase = Phase::Closed {
                            reason: match initiator {
                                Side::Ours => CloseReason::LocalClose,
                                Side::Theirs => CloseReason::PeerClosed,
                            },
                            reported: false,
                        };
                    }
                }
                SessionEvent::Died { reason, .. } => {
                    self.die(CloseReason::SessionDied(reason));
                }
            }
        }
    }

    /// Gives up the transport: the session keeps every frame, the grace period runs.
    fn suspend(&mut self, now: Instant, reason: CloseReason) {
        if self.is_closed() || self.rel.down.is_some() {
            return;
        }
        self.rel.session.transport_lost(now);
        self.rel.down = Some(reason);
        self.rel.stats.suspensions += 1;
        // The application learns the latest state: suspended, and resumed only after that.
        self.rel.ev_resumed = None;
        if self.rel.ev_suspended.is_none() {
            self.rel.ev_suspended = Some(reason);
        }
        self.session_events(now);
    }

    // ----- timers ------------------------------------------------------------------------

    /// True when a keepalive PING would go out now if it were due: the transport is up and
    /// synchronised, nothing waits to be sent, and the window has room to spare.
    fn ping_ready(&self) -> bool {
        let s = &self.rel.session;
        self.rel.down.is_none()
            && s.transport() == TransportState::Up
            && !s.wants_transmit()
            && s.can_send_with(HEADER_LEN, APP_RESERVE)
    }

    fn session_timeout(&mut self, now: Instant) {
        self.rel.tick(now);
        self.rel.session.handle_timeout(now);
        self.session_events(now);
        if self.is_closed() {
            return;
        }
        if self.rel.down.is_none() && now >= self.last_rx + self.idle_timeout {
            // A silent transport is lost, not the link.
            self.suspend(now, CloseReason::KeepaliveTimeout);
        }
        if let Phase::Closing { deadline, .. } = self.phase {
            if now >= deadline {
                self.die(CloseReason::CloseTimeout);
                return;
            }
        }
        if RF > 0 && self.rel.down.is_none() {
            while !self.has_pending_event() && self.answers_fit() && self.deliver_held(now) {}
        }
        if self.ping_ready() && now >= self.last_tx + self.ping_interval {
            let hdr = HeaderRepr::new(
                Cmd::new(Command::LnkPing, Flags::empty()),
                Default::default(),
            );
            if self
                .session_push(now, &hdr, &Body::None, &[], &[], APP_RESERVE)
                .is_ok()
            {
                self.stats.ctl_out += 1;
                self.stats.pings_out += 1;
            }
        }
    }

    fn session_timeout_at(&self) -> Option<Instant> {
        let mut t = self.rel.session.poll_timeout();
        let mut take = |d: Instant| t = Some(t.map_or(d, |x| x.min(d)));
        if self.rel.down.is_none() {
            take(self.last_rx + self.idle_timeout);
        }
        if self.ping_ready() {
            take(self.last_tx + self.ping_interval);
        }
        if let Phase::Closing { deadline, .. } = self.phase {
            take(deadline);
        }
        t
    }

    // ----- output ------------------------------------------------------------------------

    fn session_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        self.rel.tick(now);
        let mut n;
        if self.rel.mode == Mode::Holding {
            // Only our LNK_CONN may leave before the peer's first frame.
            let limit = out.len().min(self.rel.conn_left as usize);
            n = self.out.pop(&mut out[..limit]);
            self.rel.conn_left -= n as u32;
        } else {
            // What is left of our LNK_CONN, then the session.
            n = self.out.pop(out);
            self.rel.conn_left = self.rel.conn_left.saturating_sub(n as u32);
            if self.out.is_empty() && n < out.len() {
                n += self.rel.session.poll_transmit(now, &mut out[n..]);
            }
        }
        if n > 0 {
            self.stats.bytes_out += n as u64;
            self.last_tx = now;
        }
        if self.rel.mode == Mode::Session {
            // Writing a frame out may free acknowledged ones and complete the FIN handshake.
            self.session_events(now);
        }
        n
    }

    /// Encodes a frame straight into the session window (the session computes the header
    /// CRC when it sends it).
    fn session_push(
        &mut self,
        now: Instant,
        hdr: &HeaderRepr,
        body: &Body,
        ext: &[u8],
        aux: &[u8],
        reserve: Reserve,
    ) -> Result<(), SessionError> {
        let needed = wire_len(hdr, aux);
        let (enc, crc) = (&mut self.encoder, &self.crc);
        self.rel.session.send_with(now, needed, reserve, |buf| {
            let n = enc.encode_unsealed(crc, hdr, body, aux, buf)?;
            if !ext.is_empty() {
                match buf.get_mut(HEADER_LEN..HEADER_LEN + ext.len()) {
                    Some(dst) if HEADER_LEN + ext.len() <= hdr.header_len() => {
                        dst.copy_from_slice(ext)
                    }
                    _ => return Err(EncodeError::BodyMismatch),
                }
            }
            Ok(n)
        })?;
        self.stats.frames_out += 1;
        self.last_tx = now;
        Ok(())
    }

    fn session_push_app(
        &mut self,
        now: Instant,
        hdr: &HeaderRepr,
        msg: &Outgoing<'_>,
    ) -> Result<(), SendError> {
        let needed = wire_len(hdr, msg.aux);
        let max = TX.min(WB) - CTL_RESERVE;
        if needed > max {
            return Err(SendError::TooLarge { needed, max });
        }
        match self.session_push(now, hdr, msg.body, msg.ext, msg.aux, APP_RESERVE) {
            Ok(()) => Ok(()),
            Err(SessionError::WindowFull) => Err(SendError::WouldBlock {
                needed,
                available: self.send_capacity(),
            }),
            Err(SessionError::FrameTooLarge { .. }) => Err(SendError::TooLarge { needed, max }),
            Err(SessionError::Encode(EncodeError::BufferTooSmall { needed, available })) => {
                Err(SendError::WouldBlock { needed, available })
            }
            Err(SessionError::Encode(e)) => Err(SendError::Encode(e)),
            Err(SessionError::Closing) => Err(SendError::Closing),
            Err(_) => Err(SendError::Closed),
        }
    }

    fn session_push_ctl(&mut self, now: Instant, hdr: &HeaderRepr) {
        match self.session_push(now, hdr, &Body::None, &[], &[], Reserve::NONE) {
            Ok(()) => self.stats.ctl_out += 1,
            // After our FIN nothing can be sent: the peer expects nothing more either.
            Err(SessionError::Closing) => self.stats.ignored += 1,
            Err(_) => {
                debug_assert!(false, "window reserve exhausted");
                self.stats.ctl_dropped += 1;
            }
        }
    }
}

/// Copies the extended header after the base header of a frame of a command without a
/// structure into `dst` (as the plain receive path does); returns the length kept.
fn copy_ext(command: Command, ext: &[u8], dst: &mut [u8; OPAQUE_EXT_MAX]) -> usize {
    if command.struct_len().is_some() {
        return 0;
    }
    let ext = ext.get(HEADER_LEN..).unwrap_or(&[]);
    match dst.get_mut(..ext.len()) {
        Some(d) => {
            d.copy_from_slice(ext);
            ext.len()
        }
        None => 0,
    }
}
