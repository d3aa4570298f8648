//! The reliable session: sequence numbers, acks, retransmission, resume after a reconnect,
//! and a FIN close, between the codec and the link (transaction) layer.
//!
//! Without it, a DMSG link that drops aborts every open transaction with LOSTLINK. With it, a
//! leaf whose cable drops for a second reconnects and carries on: nothing accepted by
//! [`Session::send`] is lost, nothing is delivered twice, and the transaction layer above does
//! not notice an outage shorter than [`SessionConfig::grace`]. `spec/SESSION.md` is the
//! normative description; this module is its implementation.
//!
//! The session works on whole frames and never parses transactions:
//! - **send side**: the link layer encodes each outgoing frame with
//!   [`Encoder`](crate::encode::Encoder) and hands the bytes to [`Session::send`], which copies
//!   them into a bounded retransmit window (or answers [`SessionError::WindowFull`] and stores
//!   nothing). [`Session::poll_transmit`] writes frames out in order, stamping each one's salt
//!   (frame counter of the current transport), `link_verifier` (sequence number and
//!   cumulative ack) and header CRC as it goes.
//! - **receive side**: the link layer decodes with [`Decoder`](crate::decode::Decoder) and
//!   asks [`Session::on_frame`] what to do with each frame ([`Verdict`]). Frames that arrived
//!   ahead of a gap come back in order from [`Session::poll_deliver`].
//! - **transport**: the driver reports [`Session::transport_lost`] and
//!   [`Session::transport_connected`]; the session resumes with RESUME / RESUME_OK, or dies
//!   when the grace period passes or the peer answers RESET.
//!
//! Negotiation happens in LNK_CONN ([`SESSION_V1`] in `ext_offer`, identities in
//! `session_id`, see [`negotiate`]); a DragonFly peer offers nothing and never sees a session
//! frame.
//!
//! # Memory
//! `Session<C, WF, WB, RF, RB>` holds everything inline: a retransmit window of `WF` frames in
//! `WB` bytes (the window must hold the largest frame sent) and a reorder buffer of `RF` frames
//! in `RB` bytes. [`Session::MEMORY`] is the total: `WB + RB + 16·WF + 20·RF` bytes plus 624
//! bytes of timers, counters, event queue and a control-frame buffer (x86-64).
//! [`DefaultSession`] (16 frames in 8 KiB, 4 held frames in 2 KiB) takes 11,200 bytes;
//! [`McuSession`] (8 frames in 2 KiB, no reorder buffer: enough over TCP) 2,800 bytes.
//!
//! # Sending cost
//! The session rewrites the salt, `link_verifier` and header CRC of every frame it sends, so
//! a link layer running a session encodes with
//! [`Encoder::encode_unsealed`](crate::encode::Encoder::encode_unsealed), which skips the
//! header CRC the session would recompute anyway.
//!
//! # Drive loop
//! After every input (`start`, `send`, `close`, `on_frame`, `transport_*`, `handle_timeout`),
//! drain `poll_deliver` (after a [`Verdict::Deliver`]), `poll_transmit` until it returns 0,
//! `poll_event` until `None`, then sleep until `poll_timeout` and call `handle_timeout`.
//!
//! ```
//! use dmsg_core::crc::DefaultCrc;
//! use dmsg_core::decode::{Decoder, DecoderConfig};
//! use dmsg_core::encode::Encoder;
//! use dmsg_core::session::{DefaultSession, SessionConfig, Verdict};
//! use dmsg_core::time::{Duration, Instant};
//! use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};
//!
//! let crc = DefaultCrc::default();
//! let mut a = DefaultSession::new(SessionConfig::default(), crc);
//! let mut b = DefaultSession::new(SessionConfig::default(), crc);
//! let mut now = Instant::ZERO;
//! // Both LNK_CONNs offered the session with ids 0xA and 0xB (frame 0 of each direction).
//! a.start(now, 0xA, 0xB).unwrap();
//! b.start(now, 0xB, 0xA).unwrap();
//! let cfg = DecoderConfig { max_aux_bytes: 1024, ..DecoderConfig::default() };
//! let mut dec_at_b = Decoder::new([0u8; 4096], cfg, crc).unwrap();
//! let mut dec_at_a = Decoder::new([0u8; 4096], cfg, crc).unwrap();
//! // The decoders already saw each side's LNK_CONN: skip the counter past it.
//! # let mut enc = Encoder::new(1);
//! # let conn = HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
//! # let mut tmp = [0u8; 64];
//! # enc.encode(&crc, &conn, &Body::None, &[], &mut tmp).unwrap();
//! # let _ = dec_at_b.decode(&tmp).unwrap();
//! # let _ = dec_at_a.decode(&tmp).unwrap();
//!
//! // The link layer encodes a frame and hands it to the session.
//! let mut enc = Encoder::new(7);
//! let hdr = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(0));
//! let mut frame = [0u8; 128];
//! let n = enc.encode(&crc, &hdr, &Body::None, b"uptime\0", &mut frame).unwrap();
//! a.send(now, &frame[..n]).unwrap();
//!
//! // Driver: A's bytes go to B's socket.
//! let mut wire = [0u8; 1024];
//! let len = a.poll_transmit(now, &mut wire);
//! let out = dec_at_b.decode(&wire[..len]).unwrap();
//! let f = out.frame.unwrap();
//! assert_eq!(b.on_frame(now, &f), Verdict::Deliver); // the link layer processes `f` now
//! assert_eq!(f.aux(), b"uptime\0");
//! while let Some(_held) = b.poll_deliver(now) { /* process in order */ }
//!
//! // Nothing piggy-backs B's ack, so after the delayed-ack timer B sends an ACK frame.
//! assert_eq!(b.poll_transmit(now, &mut wire), 0);
//! now = b.poll_timeout().unwrap();
//! b.handle_timeout(now);
//! let len = b.poll_transmit(now, &mut wire);
//! assert_eq!(len, 64);
//! let f = dec_at_a.decode(&wire[..len]).unwrap().frame.unwrap();
//! assert_eq!(a.on_frame(now, &f), Verdict::Control);
//! assert_eq!(a.in_flight(), 0); // acknowledged
//! ```

mod control;
mod reorder;
mod seq;
mod types;
mod window;

pub use control::{
    negotiate, offered_session, stateless_reset, ControlError, ControlFrame, ControlOp,
    CONTROL_TAG, SESSION_V1,
};
pub use seq::{pack_link_verifier, unpack_link_verifier, Seq};
pub use types::{
    DeathReason, DropReason, HeldFrame, Outcome, Reserve, SessionConfig, SessionError,
    SessionEvent, SessionStats, State, TransportState, UnackedFrame, Verdict,
};

use core::hash::{Hash, Hasher};

use crate::crc::Crc32c;
use crate::decode::Frame;
use crate::encode::EncodeError;
use crate::time::{Duration, Instant};
use crate::wire::{align64, ByteOrder, Command, Header, HeaderRepr, HEADER_LEN};

use reorder::Reorder;
use window::{PushError, Window};

/// Frames a node has sent on the first transport before the session starts: its LNK_CONN.
/// The session's first frame there carries salt counter 1.
pub const FRAMES_BEFORE_START: u8 = 1;

/// Largest distance ahead of the next expected sequence number a frame may be held at.
pub const MAX_AHEAD: u32 = 1 << 16;

/// 16 frames and 8 KiB of retransmit window, 4 frames and 2 KiB of reorder buffer.
pub type DefaultSession<C> = Session<C, 16, 8192, 4, 2048>;

/// 8 frames and 2 KiB of retransmit window and no reorder buffer: enough for a leaf over TCP.
pub type McuSession<C> = Session<C, 8, 2048, 0, 0>;

/// Where the bytes being written out come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    /// A stored data frame (pinned in the window until written).
    Window(Seq),
    /// The control buffer.
    Ctrl,
}

/// A frame partly written by `poll_transmit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Emission {
    source: Source,
    pos: usize,
    len: usize,
}

/// Inputs of the closing state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Input {
    AppClose,
    FinReceived,
    FinAcked,
    Timeout,
    TransportLost,
    Die(DeathReason),
}

const EVENTS: usize = 4;

/// A tiny event FIFO. At most one `Resumed` is pending (later ones replace it), and each of
/// the others happens at most once per session, so 4 entries never overflow.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Events {
    q: [Option<SessionEvent>; EVENTS],
    head: usize,
    len: usize,
}

impl Events {
    const fn new() -> Self {
        Events {
            q: [None; EVENTS],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, ev: SessionEvent) {
        if let SessionEvent::Resumed { .. } = ev {
            for i in 0..self.len {
                let slot = &mut self.q[(self.head + i) % EVENTS];
                if matches!(slot, Some(SessionEvent::Resumed { .. })) {
                    *slot = Some(ev);
                    return;
                }
            }
        }
        if self.len == EVENTS {
            debug_assert!(false, "session event queue overflow");
            self.pop();
        }
        self.q[(self.head + self.len) % EVENTS] = Some(ev);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<SessionEvent> {
        if self.len == 0 {
            return None;
        }
        let ev = self.q[self.head].take();
        self.head = (self.head + 1) % EVENTS;
        self.len -= 1;
        ev
    }
}

/// One reliable session over a sequence of transports. Plain data (`Clone`, `Eq`, `Hash`,
/// `Debug`).
///
/// `Hash` covers the protocol state only: the counters ([`Session::stats`]), the random bits
/// of control-frame salts and the stale contents of the control-frame buffer are left out, so
/// a model checker can merge states that behave alike. `Eq` compares everything (equal
/// sessions still hash equally).
///
/// - `C`: the CRC-32C implementation (for re-stamping header CRCs).
/// - `WF`, `WB`: retransmit window in frames (at least 2: one slot is kept for the FIN) and
///   bytes (must hold the largest frame sent).
/// - `RF`, `RB`: reorder buffer in frames and bytes (0 is fine over TCP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session<C, const WF: usize, const WB: usize, const RF: usize, const RB: usize> {
    config: SessionConfig,
    crc: C,
    state: State,
    outcome: Outcome,
    our_id: u64,
    peer_id: u64,
    // Send side.
    window: Window<WF, WB>,
    snd_nxt: Seq,
    peer_ack: Seq,
    dup_acks: u8,
    fast_retx_seq: Option<Seq>,
    rto: Duration,
    rto_deadline: Option<Instant>,
    // Receive side.
    rcv_nxt: Seq,
    peer_fin: bool,
    /// After a clean close: the ack that covered the peer's FIN, for late RESUMEs and FINs.
    final_ack: Option<Seq>,
    reorder: Reorder<RF, RB>,
    reorder_pop: Option<Seq>,
    ack_deadline: Option<Instant>,
    ack_now: bool,
    // Transport.
    transport: TransportState,
    lost_at: Option<Instant>,
    resume_sent: bool,
    resume_rto: Duration,
    resume_deadline: Option<Instant>,
    answer_resume_ok: bool,
    answer_reset: Option<ControlFrame>,
    // Emission.
    salt_counter: u8,
    salt_rng: u32,
    emitting: Option<Emission>,
    ctrl: [u8; HEADER_LEN],
    // Closing.
    state_deadline: Option<Instant>,
    events: Events,
    stats: SessionStats,
}

impl<C: Hash, const WF: usize, const WB: usize, const RF: usize, const RB: usize> Hash
    for Session<C, WF, WB, RF, RB>
{
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Every field but `stats`, `salt_rng` and an idle `ctrl` (see the type's docs).
        let Session {
            config,
            crc,
            state,
            outcome,
            our_id,
            peer_id,
            window,
            snd_nxt,
            peer_ack,
            dup_acks,
            fast_retx_seq,
            rto,
            rto_deadline,
            rcv_nxt,
            peer_fin,
            final_ack,
            reorder,
            reorder_pop,
            ack_deadline,
            ack_now,
            transport,
            lost_at,
            resume_sent,
            resume_rto,
            resume_deadline,
            answer_resume_ok,
            answer_reset,
            salt_counter,
            salt_rng: _,
            emitting,
            ctrl,
            state_deadline,
            events,
            stats: _,
        } = self;
        (
            config, crc, state, outcome, our_id, peer_id, window, snd_nxt,
        )
            .hash(h);
        (
            peer_ack,
            dup_acks,
            fast_retx_seq,
            rto,
            rto_deadline,
            rcv_nxt,
        )
            .hash(h);
        (
            peer_fin,
            final_ack,
            reorder,
            reorder_pop,
            ack_deadline,
            ack_now,
        )
            .hash(h);
        (transport, lost_at, resume_sent, resume_rto, resume_deadline).hash(h);
        (answer_resume_ok, answer_reset, salt_counter, emitting).hash(h);
        (state_deadline, events).hash(h);
        if matches!(
            emitting,
            Some(Emission {
                source: Source::Ctrl,
                ..
            })
        ) {
            ctrl.hash(h);
        }
    }
}

impl<C, const WF: usize, const WB: usize, const RF: usize, const RB: usize>
    Session<C, WF, WB, RF, RB>
{
    /// Bytes one session of this configuration occupies.
    pub const MEMORY: usize = core::mem::size_of::<Self>();
}

impl<C: Crc32c, const WF: usize, const WB: usize, const RF: usize, const RB: usize>
    Session<C, WF, WB, RF, RB>
{
    /// A session that has not started ([`State::Closed`], [`Outcome::NotStarted`]).
    pub fn new(config: SessionConfig, crc: C) -> Self {
        const {
            assert!(
                WF >= 2,
                "the window needs a slot for data and one for the FIN"
            );
            assert!(WF <= u16::MAX as usize && WB <= u32::MAX as usize);
            assert!(RB <= u32::MAX as usize);
        }
        Session {
            config,
            crc,
            state: State::Closed,
            outcome: Outcome::NotStarted,
            our_id: 0,
            peer_id: 0,
            window: Window::new(),
            snd_nxt: Seq::ONE,
            peer_ack: Seq::ONE,
            dup_acks: 0,
            fast_retx_seq: None,
            rto: config.rto_initial,
            rto_deadline: None,
            rcv_nxt: Seq::ONE,
            peer_fin: false,
            final_ack: None,
            reorder: Reorder::new(),
            reorder_pop: None,
            ack_deadline: None,
            ack_now: false,
            transport: TransportState::Down,
            lost_at: None,
            resume_sent: false,
            resume_rto: config.rto_initial,
            resume_deadline: None,
            answer_resume_ok: false,
            answer_reset: None,
            salt_counter: 0,
            salt_rng: config.salt_seed | 1,
            emitting: None,
            ctrl: [0; HEADER_LEN],
            state_deadline: None,
            events: Events::new(),
            stats: SessionStats::default(),
        }
    }

    // ----- accessors -----------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
    /// The closing state.
    pub fn state(&self) -> State {
        self.state
    }
    /// Whether the session runs, and how it ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
    /// The transport as last reported.
    pub fn transport(&self) -> TransportState {
        self.transport
    }
    /// `(our_id, peer_id)` once started.
    pub fn ids(&self) -> Option<(u64, u64)> {
        (self.outcome != Outcome::NotStarted).then_some((self.our_id, self.peer_id))
    }
    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }
    /// Frames in the window (sent or not) that the peer has not acknowledged, FIN included.
    pub fn in_flight(&self) -> usize {
        self.window.len()
    }
    /// Bytes of unacknowledged frames in the window.
    pub fn in_flight_bytes(&self) -> usize {
        self.window.bytes_used()
    }
    /// The sequence number the next accepted frame will get.
    pub fn next_seq(&self) -> Seq {
        self.snd_nxt
    }
    /// The sequence number expected next from the peer (the ack we send).
    pub fn expected_seq(&self) -> Seq {
        self.rcv_nxt
    }
    /// Frames held in the reorder buffer.
    pub fn held(&self) -> usize {
        self.reorder.len()
    }
    /// True when [`Session::send`] would accept a frame of `len` bytes now.
    pub fn can_send(&self, len: usize) -> bool {
        self.state.can_send() && self.window.fits(len, 1)
    }

    /// True when [`Session::send_with`] would accept a frame of `len` bytes with `reserve`
    /// now.
    pub fn can_send_with(&self, len: usize, reserve: Reserve) -> bool {
        self.state.can_send()
            && self
                .window
                .fits_keeping(len, 1 + reserve.frames as usize, reserve.bytes as usize)
    }

    /// True when `n` frames of `len` bytes each, sent one after the other with
    /// [`Reserve::NONE`], would all be accepted now.
    pub fn can_send_many(&self, n: usize, len: usize) -> bool {
        self.state.can_send() && self.window.fits_many(n, len, 1)
    }

    /// The largest frame [`Session::send_with`] would accept with `reserve` now (0: none).
    pub fn send_room(&self, reserve: Reserve) -> usize {
        if !self.state.can_send() {
            return 0;
        }
        self.window
            .room(1 + reserve.frames as usize, reserve.bytes as usize)
    }

    /// True when [`poll_transmit`](Session::poll_transmit) has something to write now
    /// (frames not sent yet or marked for retransmission, a handshake frame, an ack due at
    /// once, or the rest of a frame being written). An ack whose delay has not run out does
    /// not count.
    pub fn wants_transmit(&self) -> bool {
        if self.transport == TransportState::Down {
            return false;
        }
        if self.emitting.is_some() || self.answer_reset.is_some() {
            return true;
        }
        if self.outcome != Outcome::Running {
            return false;
        }
        match self.transport {
            TransportState::Resuming => !self.resume_sent,
            _ => self.answer_resume_ok || self.ack_now || self.window.has_unsent(),
        }
    }

    /// Bytes [`poll_transmit`](Session::poll_transmit) would write now, counted as
    /// [`wants_transmit`](Session::wants_transmit) does (0 when it has nothing).
    pub fn pending_bytes(&self) -> usize {
        if self.transport == TransportState::Down {
            return 0;
        }
        let mut n = self.emitting.map_or(0, |e| e.len - e.pos);
        if self.answer_reset.is_some() {
            n += HEADER_LEN;
        }
        if self.outcome != Outcome::Running {
            return n;
        }
        if self.transport == TransportState::Resuming {
            return n + if self.resume_sent { 0 } else { HEADER_LEN };
        }
        let (bytes, fins) = self.window.unsent();
        n += bytes + fins * HEADER_LEN;
        if self.answer_resume_ok {
            n += HEADER_LEN;
        }
        if self.ack_now && bytes + fins == 0 {
            n += HEADER_LEN;
        }
        n
    }

    /// The frames the peer has not acknowledged, oldest first (FIN excluded). After
    /// [`SessionEvent::Died`] this is what the link layer reports as lost (their msgids name the
    /// transactions); it stays available until [`Session::reset`] or the next
    /// [`Session::start`].
    pub fn unacked(&self) -> impl Iterator<Item = UnackedFrame<'_>> + '_ {
        (0..self.window.len()).filter_map(move |i| {
            let s = self.window.slot(i);
            if s.fin {
                return None;
            }
            let bytes = self.window.frame(i);
            let h = Header::new_checked(bytes).ok()?;
            Some(UnackedFrame {
                seq: s.seq,
                header: HeaderRepr::parse(&h),
                bytes,
                transmissions: s.tx_count,
            })
        })
    }

    fn data_unacked(&self) -> u32 {
        (0..self.window.len())
            .filter(|&i| !self.window.slot(i).fin)
            .count() as u32
    }

    // ----- lifecycle -----------------------------------------------------------------------

    fn clear_runtime(&mut self) {
        self.window.clear();
        self.reorder.clear();
        self.reorder_pop = None;
        self.peer_fin = false;
        self.dup_acks = 0;
        self.fast_retx_seq = None;
        self.rto = self.config.rto_initial;
        self.rto_deadline = None;
        self.ack_deadline = None;
        self.ack_now = false;
        self.lost_at = None;
        self.resume_sent = false;
        self.resume_rto = self.config.rto_initial;
        self.resume_deadline = None;
        self.answer_resume_ok = false;
        self.answer_reset = None;
        self.state_deadline = None;
    }

    /// Starts the session once both LNK_CONNs offered it (see [`negotiate`]). Call it when the
    /// peer's LNK_CONN has arrived; our LNK_CONN was frame 0 of the current transport
    /// ([`FRAMES_BEFORE_START`]), and from now on every frame goes through the session.
    pub fn start(&mut self, _now: Instant, our_id: u64, peer_id: u64) -> Result<(), SessionError> {
        if self.outcome == Outcome::Running {
            return Err(SessionError::AlreadyRunning);
        }
        if our_id == 0 || peer_id == 0 {
            return Err(SessionError::InvalidId);
        }
        self.clear_runtime();
        self.emitting = None;
        self.final_ack = None;
        self.our_id = our_id;
        self.peer_id = peer_id;
        self.snd_nxt = Seq::initial(our_id);
        self.peer_ack = self.snd_nxt;
        self.rcv_nxt = Seq::initial(peer_id);
        self.state = State::Established;
        self.outcome = Outcome::Running;
        self.transport = TransportState::Up;
        self.salt_counter = FRAMES_BEFORE_START;
        Ok(())
    }

    /// Forgets everything but the configuration and the counters, including the unacked
    /// frames of a dead session; the session can then [`start`](Session::start) again.
    pub fn reset(&mut self) {
        self.clear_runtime();
        self.emitting = None;
        self.final_ack = None;
        self.state = State::Closed;
        self.outcome = Outcome::NotStarted;
        self.transport = TransportState::Down;
        self.events = Events::new();
        self.our_id = 0;
        self.peer_id = 0;
    }

    /// Accepts one encoded frame for sending and returns its sequence number.
    ///
    /// `frame` is exactly one frame as [`Encoder`](crate::encode::Encoder) wrote it (header and
    /// padded aux). It is copied; salt, `link_verifier` and header CRC are rewritten when it is
    /// sent. Errors store nothing: [`SessionError::WindowFull`] is backpressure (retry after
    /// acks arrive), [`SessionError::Closing`] means [`close`](Session::close) was called.
    pub fn send(&mut self, _now: Instant, frame: &[u8]) -> Result<Seq, SessionError> {
        self.check_can_send()?;
        check_frame(frame)?;
        let seq = self.snd_nxt;
        match self.window.push(seq, frame, 1) {
            Ok(()) => {}
            Err(PushError::Full) => return Err(SessionError::WindowFull),
            Err(PushError::TooLarge) => {
                return Err(SessionError::FrameTooLarge {
                    len: frame.len(),
                    capacity: WB,
                })
            }
        }
        self.snd_nxt = seq.next();
        self.stats.frames_accepted += 1;
        Ok(seq)
    }

    /// [`send`](Session::send) without the copy: the frame of `len` bytes is written straight
    /// into the retransmit window by `write` (typically
    /// [`Encoder::encode_unsealed`](crate::encode::Encoder::encode_unsealed) into the slice it
    /// is given, returning the length written), keeping `reserve` free for later frames.
    ///
    /// Errors store nothing: [`SessionError::WindowFull`] when there is no room for `len`
    /// bytes plus the reserve now, [`SessionError::FrameTooLarge`] when there never will be,
    /// [`SessionError::Encode`] when `write` fails, [`SessionError::BadFrame`] when it wrote
    /// something other than one frame of exactly `len` bytes (or a session control frame).
    pub fn send_with(
        &mut self,
        _now: Instant,
        len: usize,
        reserve: Reserve,
        write: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<Seq, SessionError> {
        self.check_can_send()?;
        let seq = self.snd_nxt;
        let pushed = self.window.push_with(
            seq,
            len,
            1 + reserve.frames as usize,
            reserve.bytes as usize,
            |buf| {
                let n = write(buf).map_err(SessionError::Encode)?;
                if n != len {
                    return Err(SessionError::BadFrame);
                }
                check_frame(buf)
            },
        );
        match pushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(PushError::Full) => return Err(SessionError::WindowFull),
            Err(PushError::TooLarge) => {
                return Err(SessionError::FrameTooLarge {
                    len,
                    capacity: WB.saturating_sub(reserve.bytes as usize),
                })
            }
        }
        self.snd_nxt = seq.next();
        self.stats.frames_accepted += 1;
        Ok(seq)
    }

    fn check_can_send(&self) -> Result<(), SessionError> {
        match self.state {
            State::Established | State::CloseWait => Ok(()),
            State::Closed => Err(SessionError::NotRunning),
            _ => Err(SessionError::Closing),
        }
    }

    /// Starts the FIN handshake: our FIN is queued after every frame already accepted, and
    /// [`send`](Session::send) refuses everything from now on. The session ends with
    /// [`SessionEvent::ClosedCleanly`] (or dies on a timeout).
    pub fn close(&mut self, now: Instant) -> Result<(), SessionError> {
        self.transition(now, Input::AppClose)
    }

    /// Kills the session now ([`DeathReason::Aborted`]); if a transport is up, a RESET tells the
    /// peer so it does not wait for its grace period.
    pub fn abort(&mut self, now: Instant) {
        if self.outcome != Outcome::Running {
            return;
        }
        if self.transport != TransportState::Down {
            self.answer_reset = Some(ControlFrame {
                op: ControlOp::Reset,
                sender_id: self.our_id,
                receiver_id: self.peer_id,
                seq: None,
                ack: None,
            });
        }
        let _ = self.transition(now, Input::Die(DeathReason::Aborted));
    }

    // ----- transport ----------------------------------------------------------------------

    /// The transport is gone (EOF, reset, keepalive timeout). Frames stay in the window; the
    /// grace timer starts (unless an outage is already being timed). Call
    /// [`transport_connected`](Session::transport_connected) when a new one is up.
    pub fn transport_lost(&mut self, now: Instant) {
        if self.outcome != Outcome::Running {
            self.transport = TransportState::Down;
            self.emitting = None;
            self.answer_reset = None;
            return;
        }
        self.transport = TransportState::Down;
        self.emitting = None;
        self.resume_sent = false;
        self.resume_deadline = None;
        self.answer_resume_ok = false;
        self.answer_reset = None;
        self.ack_deadline = None;
        self.ack_now = false;
        self.rto_deadline = None;
        self.dup_acks = 0;
        if self.lost_at.is_none() {
            self.lost_at = Some(now);
        }
        // Frees deferred while a frame was being written.
        self.free_acked(now);
        let _ = self.transition(now, Input::TransportLost);
    }

    /// A new transport is up (we connected, or the driver routed an accepted connection whose
    /// first frame is a RESUME for this session to us). The salt counter restarts at 0 and the
    /// first frame sent is RESUME (or RESUME_OK, if the peer's RESUME is processed first).
    /// An old transport still marked up is treated as lost.
    pub fn transport_connected(&mut self, now: Instant) {
        if self.outcome != Outcome::Running {
            // An ended session still answers a RESUME for it with RESET.
            self.transport = TransportState::Up;
            self.salt_counter = 0;
            self.emitting = None;
            self.answer_reset = None;
            return;
        }
        if self.transport != TransportState::Down {
            self.transport_lost(now);
            if self.outcome != Outcome::Running {
                return;
            }
        }
        self.transport = TransportState::Resuming;
        self.salt_counter = 0;
        self.resume_sent = false;
        self.resume_rto = self.config.rto_initial;
        self.resume_deadline = None;
    }

    // ----- receive --------------------------------------------------------------------------

    /// Classifies a decoded frame. See [`Verdict`]; after [`Verdict::Deliver`] process the frame
    /// and then drain [`poll_deliver`](Session::poll_deliver).
    pub fn on_frame(&mut self, now: Instant, frame: &Frame<'_>) -> Verdict {
        self.on_frame_parts(now, frame.ext_bytes(), frame.aux())
    }

    /// [`on_frame`](Session::on_frame) for a frame given as its extended header (base header
    /// included, as received) and its unpadded aux data.
    pub fn on_frame_parts(&mut self, now: Instant, ext: &[u8], aux: &[u8]) -> Verdict {
        self.on_frame_inner(now, ext, aux, false)
    }

    /// [`on_frame_parts`](Session::on_frame_parts) for a layer above that cannot take a frame
    /// now (it has no room for the answers the frame may need). Everything the frame says to
    /// the session is processed (its ack, control frames), but the next frame in sequence,
    /// data or FIN, is not delivered: it is [`Verdict::Dropped`] with [`DropReason::Busy`],
    /// an ack goes out at once, and the peer sends the frame again (duplicate acks, or its
    /// retransmission timer). Acks keep flowing this way while the layer above waits for its
    /// own frames to be acknowledged, so two busy ends never wait for each other.
    pub fn on_frame_parts_busy(&mut self, now: Instant, ext: &[u8], aux: &[u8]) -> Verdict {
        self.on_frame_inner(now, ext, aux, true)
    }

    fn on_frame_inner(&mut self, now: Instant, ext: &[u8], aux: &[u8], busy: bool) -> Verdict {
        self.settle();
        let v = self.receive(now, ext, aux, busy);
        if let Verdict::Dropped(r) = v {
            match r {
                DropReason::ReorderFull | DropReason::OutOfWindow => self.stats.future_dropped += 1,
                _ => self.stats.frames_dropped += 1,
            }
        }
        v
    }

    /// The next held frame that is now in order, if any. Call after every
    /// [`Verdict::Deliver`] until `None`, processing each frame before the next call. A held
    /// FIN is consumed here.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<HeldFrame<'_>> {
        self.settle();
        if self.outcome != Outcome::Running {
            return None;
        }
        let i = self.reorder.find(self.rcv_nxt)?;
        let held = self.reorder.get(i).0;
        if held.fin {
            self.reorder.remove(i);
            self.accept_fin(now);
            return None;
        }
        self.reorder_pop = Some(held.seq);
        self.rcv_nxt = held.seq.next();
        self.stats.frames_delivered += 1;
        self.schedule_ack(now);
        let (h, ext, aux) = self.reorder.get(i);
        Some(HeldFrame {
            seq: h.seq,
            ext,
            aux,
            order: h.order,
        })
    }

    /// Completes a removal deferred while a held frame was lent out.
    fn settle(&mut self) {
        if let Some(seq) = self.reorder_pop.take() {
            if let Some(i) = self.reorder.find(seq) {
                self.reorder.remove(i);
            }
        }
    }

    fn receive(&mut self, now: Instant, ext: &[u8], aux: &[u8], busy: bool) -> Verdict {
        let Ok(h) = Header::new_checked(ext) else {
            return Verdict::Dropped(DropReason::Malformed);
        };
        let order = h.byte_order();
        let is_control =
            h.cmd().command() == Command::LnkPad && h.reserved02() & 0xFF00 == CONTROL_TAG;
        if self.outcome != Outcome::Running {
            return self.receive_ended(&HeaderRepr::parse(&h));
        }
        if self.transport == TransportState::Down {
            return Verdict::Dropped(DropReason::TransportDown);
        }
        let (seq, ack) = unpack_link_verifier(h.link_verifier());
        let control = if is_control {
            ControlFrame::parse(&HeaderRepr::parse(&h))
        } else {
            None
        };
        match control {
            None => {
                let Some(seq) = seq else {
                    return Verdict::Dropped(DropReason::Unsequenced);
                };
                let v = self.classify(seq, ext, aux, order, false, busy);
                if let Some(a) = ack {
                    self.on_ack(now, a, false);
                }
                if v == Verdict::Deliver {
                    self.stats.frames_delivered += 1;
                    self.schedule_ack(now);
                }
                v
            }
            Some(Err(_)) => Verdict::Dropped(DropReason::BadControl),
            Some(Ok(c)) => self.receive_control(now, c, ext, order, busy),
        }
    }

    /// A frame for a session that is not running. A RESUME is answered with RESET (the session
    /// ended, or never was); after a clean close a RESUME or a retransmitted FIN of this session
    /// gets a RESET carrying the ack of the peer's FIN, so a peer whose last ack was lost still
    /// closes cleanly.
    fn receive_ended(&mut self, repr: &HeaderRepr) -> Verdict {
        let Some(Ok(c)) = ControlFrame::parse(repr) else {
            return Verdict::Dropped(DropReason::NotRunning);
        };
        if self.transport == TransportState::Down {
            return Verdict::Dropped(DropReason::NotRunning);
        }
        let ours = c.sender_id == self.peer_id && c.receiver_id == self.our_id;
        let final_ack = if ours { self.final_ack } else { None };
        let answer = match c.op {
            ControlOp::Resume => true,
            ControlOp::Fin => final_ack.is_some(),
            _ => false,
        };
        if !answer {
            return Verdict::Dropped(DropReason::NotRunning);
        }
        self.answer_reset = Some(ControlFrame {
            ack: final_ack,
            ..c.reset_reply()
        });
        Verdict::Control
    }

    /// Decides a sequenced frame's fate against the next expected sequence number.
    fn classify(
        &mut self,
        seq: Seq,
        ext: &[u8],
        aux: &[u8],
        order: ByteOrder,
        fin: bool,
        busy: bool,
    ) -> Verdict {
        if seq == self.rcv_nxt {
            if self.peer_fin {
                return Verdict::Dropped(DropReason::AfterFin);
            }
            if busy {
                self.ack_now = true;
                self.stats.busy_refused += 1;
                return Verdict::Dropped(DropReason::Busy);
            }
            self.rcv_nxt = seq.next();
            if RF > 0 && self.reorder.len() > 0 {
                if let Some(i) = self.reorder.find(seq) {
                    self.reorder.remove(i);
                }
            }
            return Verdict::Deliver;
        }
        // Out of order: tell the peer where we are at once (it may be missing a frame).
        self.ack_now = true;
        if seq.is_before(self.rcv_nxt) {
            self.stats.duplicates_dropped += 1;
            return Verdict::Duplicate;
        }
        if self.peer_fin {
            return Verdict::Dropped(DropReason::AfterFin);
        }
        if self.rcv_nxt.distance_to(seq) > MAX_AHEAD {
            return Verdict::Dropped(DropReason::OutOfWindow);
        }
        if self.reorder.find(seq).is_some() {
            self.stats.duplicates_dropped += 1;
            return Verdict::Duplicate;
        }
        if self.reorder.insert(seq, ext, aux, order, fin) {
            self.stats.future_held += 1;
            Verdict::Held
        } else {
            Verdict::Dropped(DropReason::ReorderFull)
        }
    }

    fn receive_control(
        &mut self,
        now: Instant,
        c: ControlFrame,
        ext: &[u8],
        order: ByteOrder,
        busy: bool,
    ) -> Verdict {
        if c.sender_id != self.peer_id || c.receiver_id != self.our_id {
            if c.op == ControlOp::Resume {
                // A RESUME for a session we do not have: tell the sender it is gone.
                self.answer_reset = Some(c.reset_reply());
                return Verdict::Control;
            }
            return Verdict::Dropped(DropReason::ForeignSession);
        }
        match c.op {
            ControlOp::Ack => {
                if let Some(a) = c.ack {
                    self.on_ack(now, a, true);
                }
                Verdict::Control
            }
            ControlOp::Fin => {
                let Some(seq) = c.seq else {
                    return Verdict::Dropped(DropReason::BadControl);
                };
                // The FIN takes a sequence number: it is processed after all earlier data.
                let v = self.classify(seq, ext, &[], order, true, busy);
                if v == Verdict::Deliver {
                    self.accept_fin(now);
                }
                if let Some(a) = c.ack {
                    self.on_ack(now, a, false);
                }
                match v {
                    Verdict::Dropped(_) => v,
                    _ => Verdict::Control,
                }
            }
            ControlOp::Resume | ControlOp::ResumeOk => {
                if let Some(a) = c.ack {
                    self.on_ack(now, a, false);
                }
                if c.op == ControlOp::Resume {
                    self.answer_resume_ok = true;
                }
                if self.transport == TransportState::Resuming {
                    self.resumed(now);
                } else if c.op == ControlOp::Resume {
                    // The peer did not hear us: resend what it has not acknowledged.
                    self.stats.duplicate_resumes += 1;
                    self.mark_all_for_retransmission();
                }
                Verdict::Control
            }
            ControlOp::Reset => {
                self.stats.resets_received += 1;
                // A peer that closed cleanly says how far it got: that may complete our close.
                if let Some(a) = c.ack {
                    self.on_ack(now, a, false);
                }
                let _ = self.transition(now, Input::Die(DeathReason::PeerReset));
                Verdict::Control
            }
        }
    }

    /// The peer's FIN arrived in order.
    fn accept_fin(&mut self, now: Instant) {
        self.peer_fin = true;
        self.ack_now = true;
        // Nothing can follow a FIN.
        self.reorder.clear();
        self.reorder_pop = None;
        let _ = self.transition(now, Input::FinReceived);
    }

    fn schedule_ack(&mut self, now: Instant) {
        if self.ack_deadline.is_none() {
            self.ack_deadline = Some(now + self.config.delayed_ack);
        }
    }

    fn resumed(&mut self, now: Instant) {
        self.transport = TransportState::Up;
        self.resume_deadline = None;
        self.resume_rto = self.config.rto_initial;
        let outage = match self.lost_at.take() {
            Some(t) => now - t,
            None => Duration::ZERO,
        };
        self.mark_all_for_retransmission();
        self.rto = self.config.rto_initial;
        self.rto_deadline = None;
        self.dup_acks = 0;
        self.fast_retx_seq = None;
        self.stats.resumes += 1;
        self.events.push(SessionEvent::Resumed {
            outage,
            pending: self.window.len() as u32,
        });
    }

    fn mark_all_for_retransmission(&mut self) {
        for i in 0..self.window.len() {
            self.window.mark_for_tx(i);
        }
    }

    /// True when a frame was emitted and not acknowledged. Frames are first emitted in
    /// sequence order, so the emitted ones are a prefix of the window.
    fn has_in_flight(&self) -> bool {
        !self.window.is_empty() && self.window.slot(0).tx_count > 0
    }

    /// Processes a cumulative ack ("the peer expects `ack` next").
    fn on_ack(&mut self, now: Instant, ack: Seq, pure: bool) {
        if ack == self.peer_ack {
            if pure && self.config.dup_ack_threshold > 0 && self.has_in_flight() {
                self.dup_acks = self.dup_acks.saturating_add(1);
                if self.dup_acks >= self.config.dup_ack_threshold && self.fast_retx_seq != Some(ack)
                {
                    if let Some(0) = self.window.find(ack) {
                        let s = *self.window.slot(0);
                        if s.tx_count > 0 && !s.needs_tx {
                            self.window.mark_for_tx(0);
                            self.fast_retx_seq = Some(ack);
                            self.stats.fast_retransmits += 1;
                        }
                    }
                }
            }
            return;
        }
        if ack.is_before(self.peer_ack) {
            return; // stale
        }
        if self.peer_ack.distance_to(ack) > self.peer_ack.distance_to(self.snd_nxt) {
            self.stats.bad_acks += 1;
            return;
        }
        self.peer_ack = ack;
        self.dup_acks = 0;
        self.fast_retx_seq = None;
        self.free_acked(now);
    }

    /// Drops acknowledged frames from the window (but not the one being written out) and
    /// advances the closing state when our FIN was among them.
    fn free_acked(&mut self, now: Instant) {
        let (freed, fin_acked) = self.pop_acked();
        if freed > 0 {
            self.rto = self.config.rto_initial;
            self.rto_deadline = self
                .has_in_flight()
                .then_some(now + self.config.rto_initial);
        }
        if fin_acked {
            let _ = self.transition(now, Input::FinAcked);
        }
    }

    /// Pops acknowledged frames; returns how many and whether our FIN was one.
    fn pop_acked(&mut self) -> (u32, bool) {
        let pinned = match self.emitting {
            Some(Emission {
                source: Source::Window(seq),
                ..
            }) => Some(seq),
            _ => None,
        };
        let mut freed = 0u32;
        let mut fin_acked = false;
        while !self.window.is_empty() {
            let s = *self.window.slot(0);
            if !s.seq.is_before(self.peer_ack) || pinned == Some(s.seq) {
                break;
            }
            self.window.pop_front();
            freed += 1;
            self.stats.frames_acked += 1;
            fin_acked |= s.fin;
        }
        (freed, fin_acked)
    }

    // ----- the closing state machine ---------------------------------------------------------

    /// Every state change of the session, in one place.
    fn transition(&mut self, now: Instant, input: Input) -> Result<(), SessionError> {
        use State::*;
        let from = self.state;
        let to = match (from, input) {
            (Closed, Input::AppClose) => return Err(SessionError::NotRunning),
            (Closed, _) => return Ok(()),
            // TIME_WAIT only re-acks; whatever ends it, the close was already clean.
            (TimeWait, Input::Timeout | Input::TransportLost | Input::Die(_)) => {
                self.finish_clean();
                Closed
            }
            // Both FINs were exchanged and everything but our FIN is acknowledged: all data
            // got through both ways, only the peer's ack of our FIN is missing (it left
            // TIME_WAIT, or its node answers RESET). That is a clean close.
            (LastAck | Closing, Input::Die(_) | Input::Timeout) if self.only_fin_unacked() => {
                self.events.push(SessionEvent::ClosedCleanly);
                self.finish_clean();
                Closed
            }
            (_, Input::Die(reason)) => {
                self.finish_dead(reason);
                Closed
            }
            (Established, Input::AppClose) => {
                self.queue_fin();
                FinWait1
            }
            (CloseWait, Input::AppClose) => {
                self.queue_fin();
                LastAck
            }
            (FinWait1 | FinWait2 | Closing | LastAck | TimeWait, Input::AppClose) => {
                return Err(SessionError::Closing)
            }
            (Established, Input::FinReceived) => {
                self.events.push(SessionEvent::PeerClosing);
                CloseWait
            }
            (FinWait1, Input::FinReceived) => Closing,
            (FinWait2, Input::FinReceived) => {
                self.events.push(SessionEvent::ClosedCleanly);
                TimeWait
            }
            (FinWait1, Input::FinAcked) => FinWait2,
            (Closing, Input::FinAcked) => {
                self.events.push(SessionEvent::ClosedCleanly);
                TimeWait
            }
            (LastAck, Input::FinAcked) => {
                self.events.push(SessionEvent::ClosedCleanly);
                self.finish_clean();
                Closed
            }
            (FinWait1 | FinWait2 | CloseWait | Closing | LastAck, Input::Timeout) => {
                self.finish_dead(DeathReason::CloseTimeout(from));
                Closed
            }
            // A second in-order FIN, an ack of a FIN never sent, a state timer in
            // ESTABLISHED, or a transport loss outside TIME_WAIT: nothing changes.
            (CloseWait | LastAck | Closing | TimeWait, Input::FinReceived)
            | (Established | FinWait2 | CloseWait | TimeWait, Input::FinAcked)
            | (Established, Input::Timeout)
            | (
                Established | FinWait1 | FinWait2 | CloseWait | Closing | LastAck,
                Input::TransportLost,
            ) => from,
        };
        if to != from {
            self.state = to;
            self.state_deadline = match to {
                FinWait1 | FinWait2 | CloseWait | Closing | LastAck => {
                    Some(now + self.config.close_timeout)
                }
                TimeWait => Some(now + self.config.time_wait),
                Established | Closed => None,
            };
        }
        Ok(())
    }

    fn only_fin_unacked(&self) -> bool {
        self.peer_fin && self.data_unacked() == 0
    }

    fn queue_fin(&mut self) {
        // `send` keeps one slot free, so this cannot fail.
        let pushed = self.window.push_fin(self.snd_nxt);
        debug_assert!(pushed.is_ok());
        self.snd_nxt = self.snd_nxt.next();
    }

    /// CLOSED after a clean close: the sequence state is reset.
    fn finish_clean(&mut self) {
        self.final_ack = Some(self.rcv_nxt);
        self.clear_runtime();
        // A control frame being written (an ACK in TIME_WAIT) is finished; no stored frame
        // can be in the middle of being written, they were all acknowledged.
        if matches!(
            self.emitting,
            Some(Emission {
                source: Source::Window(_),
                ..
            })
        ) {
            debug_assert!(false, "clean close with a stored frame being written");
            self.emitting = None;
        }
        self.outcome = Outcome::ClosedCleanly;
        self.snd_nxt = Seq::initial(self.our_id);
        self.peer_ack = self.snd_nxt;
        self.rcv_nxt = Seq::initial(self.peer_id);
    }

    /// CLOSED after a death: the window is kept for [`Session::unacked`].
    fn finish_dead(&mut self, reason: DeathReason) {
        self.outcome = Outcome::Died(reason);
        // A frame cut in the middle leaves the transport unusable: no RESET after it. Frames
        // acknowledged but pinned for writing are freed, so `unacked` is exact.
        if self.emitting.take().is_some() {
            self.answer_reset = None;
        }
        let _ = self.pop_acked();
        self.reorder.clear();
        self.reorder_pop = None;
        self.rto_deadline = None;
        self.ack_deadline = None;
        self.ack_now = false;
        self.lost_at = None;
        self.resume_deadline = None;
        self.answer_resume_ok = false;
        self.state_deadline = None;
        self.events.push(SessionEvent::Died {
            reason,
            unacked: self.data_unacked(),
        });
    }

    // ----- time ------------------------------------------------------------------------------

    /// The earliest instant at which [`handle_timeout`](Session::handle_timeout) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome != Outcome::Running {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut take = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        };
        take(self.lost_at.map(|l| l + self.config.grace));
        take(self.state_deadline);
        match self.transport {
            TransportState::Up => {
                take(self.rto_deadline);
                if !self.ack_now {
                    take(self.ack_deadline);
                }
            }
            TransportState::Resuming => {
                if self.resume_sent {
                    take(self.resume_deadline);
                }
            }
            TransportState::Down => {}
        }
        t
    }

    /// Runs the timers due at `now`. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome != Outcome::Running {
            return;
        }
        if let Some(lost) = self.lost_at {
            if now >= lost + self.config.grace {
                let _ = self.transition(now, Input::Die(DeathReason::GraceExpired));
                return;
            }
        }
        if self.state_deadline.is_some_and(|d| now >= d) {
            let _ = self.transition(now, Input::Timeout);
            if self.outcome != Outcome::Running {
                return;
            }
        }
        match self.transport {
            TransportState::Up => {
                if self.rto_deadline.is_some_and(|d| now >= d) {
                    self.rto_expired();
                }
                if self.ack_deadline.is_some_and(|d| now >= d) {
                    self.ack_deadline = None;
                    self.ack_now = true;
                }
            }
            TransportState::Resuming => {
                if self.resume_sent && self.resume_deadline.is_some_and(|d| now >= d) {
                    // Send RESUME again, backing off.
                    self.resume_sent = false;
                    self.resume_deadline = None;
                    self.resume_rto = (self.resume_rto + self.resume_rto).min(self.config.rto_max);
                }
            }
            TransportState::Down => {}
        }
    }

    fn rto_expired(&mut self) {
        self.stats.rto_expiries += 1;
        for i in 0..self.window.len() {
            if self.window.slot(i).tx_count > 0 {
                self.window.mark_for_tx(i);
            }
        }
        self.rto = (self.rto + self.rto).min(self.config.rto_max);
        self.rto_deadline = None;
        self.fast_retx_seq = None;
    }

    // ----- transmit ----------------------------------------------------------------------------

    /// Writes the next bytes to send into `out` and returns how many (0: nothing to send now).
    ///
    /// Order: handshake frames (RESUME, RESUME_OK, RESET) first, then retransmissions, then new
    /// frames, then an ACK-only frame if an ack is due and nothing carried it. A frame larger
    /// than `out` is continued on the next call; the transport must take every byte returned.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            if self.emitting.is_none() && !self.begin_next(now) {
                break;
            }
            let Some(mut e) = self.emitting else {
                break;
            };
            let src: &[u8] = match e.source {
                Source::Ctrl => &self.ctrl[..e.len],
                Source::Window(seq) => match self.window.find(seq) {
                    Some(i) => self.window.frame(i),
                    None => {
                        debug_assert!(false, "a frame being written is pinned");
                        self.emitting = None;
                        break;
                    }
                },
            };
            let take = (e.len - e.pos).min(out.len() - n);
            out[n..n + take].copy_from_slice(&src[e.pos..e.pos + take]);
            n += take;
            e.pos += take;
            if e.pos == e.len {
                self.emitting = None;
                // Frees deferred while the frame was pinned (an ack arrived meanwhile).
                if matches!(e.source, Source::Window(_))
                    && !self.window.is_empty()
                    && self.window.slot(0).seq.is_before(self.peer_ack)
                {
                    self.free_acked(now);
                }
            } else {
                self.emitting = Some(e);
            }
        }
        n
    }

    fn next_salt(&mut self) -> u32 {
        let mut x = self.salt_rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.salt_rng = x;
        let counter = self.salt_counter;
        self.salt_counter = counter.wrapping_add(1);
        (x & 0xFFFF_FF00) | counter as u32
    }

    fn emit_control(&mut self, f: ControlFrame) {
        let salt = self.next_salt();
        f.emit(&self.crc, salt, &mut self.ctrl);
        self.emitting = Some(Emission {
            source: Source::Ctrl,
            pos: 0,
            len: HEADER_LEN,
        });
        if f.ack.is_some() {
            self.ack_now = false;
            self.ack_deadline = None;
        }
    }

    fn control(&self, op: ControlOp, seq: Option<Seq>) -> ControlFrame {
        ControlFrame {
            op,
            sender_id: self.our_id,
            receiver_id: self.peer_id,
            seq,
            ack: Some(self.rcv_nxt),
        }
    }

    /// Picks the next frame to write; false when there is none.
    fn begin_next(&mut self, now: Instant) -> bool {
        if self.transport == TransportState::Down {
            return false;
        }
        if let Some(reset) = self.answer_reset.take() {
            self.stats.resets_sent += 1;
            self.stats.handshakes_sent += 1;
            self.emit_control(reset);
            return true;
        }
        if self.outcome != Outcome::Running {
            return false;
        }
        if self.transport == TransportState::Resuming {
            if self.answer_resume_ok {
                // Cannot happen: answering a RESUME completes the resume.
                self.answer_resume_ok = false;
            }
            if !self.resume_sent {
                self.resume_sent = true;
                self.resume_deadline = Some(now + self.resume_rto);
                self.stats.handshakes_sent += 1;
                let f = self.control(ControlOp::Resume, None);
                self.emit_control(f);
                return true;
            }
            return false;
        }
        if self.answer_resume_ok {
            self.answer_resume_ok = false;
            self.stats.handshakes_sent += 1;
            let f = self.control(ControlOp::ResumeOk, None);
            self.emit_control(f);
            return true;
        }
        if let Some(i) = self.window.next_to_send() {
            self.begin_window_frame(now, i);
            return true;
        }
        if self.ack_now || self.ack_deadline.is_some_and(|d| now >= d) {
            self.stats.acks_sent += 1;
            let f = self.control(ControlOp::Ack, None);
            self.emit_control(f);
            return true;
        }
        false
    }

    fn begin_window_frame(&mut self, now: Instant, i: usize) {
        let slot = *self.window.slot(i);
        if slot.tx_count == 0 {
            self.stats.frames_sent += 1;
        } else {
            self.stats.frames_retransmitted += 1;
        }
        {
            let s = self.window.slot_mut(i);
            s.needs_tx = false;
            s.tx_count = s.tx_count.saturating_add(1);
        }
        if slot.fin {
            let f = self.control(ControlOp::Fin, Some(slot.seq));
            self.emit_control(f);
        } else {
            let salt = self.next_salt();
            let lv = pack_link_verifier(Some(slot.seq), Some(self.rcv_nxt));
            control::stamp(&self.crc, self.window.frame_mut(i), salt as u8, lv);
            self.ack_now = false;
            self.ack_deadline = None;
            self.emitting = Some(Emission {
                source: Source::Window(slot.seq),
                pos: 0,
                len: slot.len as usize,
            });
        }
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rto);
        }
    }

    // ----- events ----------------------------------------------------------------------------

    /// The next event for the layer above.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop()
    }
}

/// Checks that `frame` is exactly one well-formed encoded frame and not a session control
/// frame (what [`Session::send`] accepts).
fn check_frame(frame: &[u8]) -> Result<(), SessionError> {
    let h = Header::new_checked(frame).map_err(|_| SessionError::BadFrame)?;
    h.check_size().map_err(|_| SessionError::BadFrame)?;
    let expected = h
        .cmd()
        .header_len()
        .checked_add(align64(h.aux_bytes() as usize));
    let control = h.cmd().command() == Command::LnkPad && h.reserved02() & 0xFF00 == CONTROL_TAG;
    if expected != Some(frame.len()) || control {
        return Err(SessionError::BadFrame);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
