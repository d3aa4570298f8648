//! Plain-data types of the session API: configuration, states, events, verdicts, errors,
//! counters.

use core::fmt;

use crate::encode::EncodeError;
use crate::time::Duration;
use crate::wire::{Body, ByteOrder, Header, HeaderRepr, WireError};

use super::seq::Seq;

/// Timing of one session. Build with [`SessionConfig::default`] and change fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionConfig {
    /// How long the transport may stay away before the session dies (default 10 s). Counted
    /// from [`Session::transport_lost`](super::Session::transport_lost) until a resume
    /// completes.
    pub grace: Duration,
    /// Longest a received frame waits for its ack to ride on an outgoing frame before an
    /// ACK-only frame is sent (default 20 ms).
    pub delayed_ack: Duration,
    /// First retransmission timeout (default 1 s). Doubles on every expiry without progress.
    pub rto_initial: Duration,
    /// Upper bound of the retransmission timeout (default 8 s).
    pub rto_max: Duration,
    /// Pure ACKs repeating the same ack that trigger a retransmission of the oldest
    /// unacknowledged frame (default 2; 0 turns fast retransmission off).
    pub dup_ack_threshold: u8,
    /// Longest the session stays in any one closing state (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT,
    /// CLOSING, LAST_ACK) before it gives up with
    /// [`DeathReason::CloseTimeout`] (default 10 s).
    pub close_timeout: Duration,
    /// How long TIME_WAIT lingers to re-acknowledge a retransmitted FIN (default 2 s, two
    /// initial retransmission timeouts).
    pub time_wait: Duration,
    /// Seed of the random high bits of the salt of control frames (any value).
    pub salt_seed: u32,
}

impl SessionConfig {
    /// The defaults (as [`SessionConfig::default`]), usable in constants.
    pub const DEFAULT: SessionConfig = SessionConfig {
        grace: Duration::from_secs(10),
        delayed_ack: Duration::from_millis(20),
        rto_initial: Duration::from_secs(1),
        rto_max: Duration::from_secs(8),
        dup_ack_threshold: 2,
        close_timeout: Duration::from_secs(10),
        time_wait: Duration::from_secs(2),
        salt_seed: 0x5e55_1017,
    };
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig::DEFAULT
    }
}

/// The closing state machine (RFC 793 names, reduced to connection teardown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum State {
    /// Not running: never started, closed, or dead (see [`Session::outcome`](super::Session::outcome)).
    Closed,
    /// Running; both directions open.
    Established,
    /// We sent FIN; waiting for its ack (and the peer's FIN).
    FinWait1,
    /// Our FIN is acked; waiting for the peer's FIN.
    FinWait2,
    /// The peer's FIN arrived; waiting for the application to [`close`](super::Session::close).
    CloseWait,
    /// Both FINs sent, ours not yet acked, after CLOSE_WAIT.
    LastAck,
    /// Both FINs sent at about the same time; waiting for the ack of ours.
    Closing,
    /// Both FINs exchanged and ours acked; lingering to re-ack a retransmitted FIN.
    TimeWait,
}

impl State {
    /// The RFC 793 name.
    pub const fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN_WAIT1",
            State::FinWait2 => "FIN_WAIT2",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::Closing => "CLOSING",
            State::TimeWait => "TIME_WAIT",
        }
    }

    /// True in the states where [`Session::send`](super::Session::send) accepts frames.
    pub const fn can_send(self) -> bool {
        matches!(self, State::Established | State::CloseWait)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the transport under the session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransportState {
    /// No transport: frames are kept, nothing is sent, the grace timer runs.
    Down,
    /// A new transport is up and the RESUME handshake has not completed: only RESUME,
    /// RESUME_OK and RESET are sent.
    Resuming,
    /// Up and synchronised: frames flow.
    Up,
}

/// How a session ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// Never started (or [`reset`](super::Session::reset) since).
    NotStarted,
    /// Started and not ended.
    Running,
    /// The FIN handshake completed: everything sent was acknowledged and everything the peer
    /// sent was delivered.
    ClosedCleanly,
    /// The session died; [`Session::unacked`](super::Session::unacked) lists what the peer never
    /// acknowledged.
    Died(DeathReason),
}

/// Why a session died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeathReason {
    /// No transport came back (or no resume completed) within [`SessionConfig::grace`].
    GraceExpired,
    /// The peer answered RESET: it restarted or no longer knows the session.
    PeerReset,
    /// The session stayed too long in this closing state ([`SessionConfig::close_timeout`]).
    CloseTimeout(State),
    /// [`Session::abort`](super::Session::abort) was called.
    Aborted,
}

impl fmt::Display for DeathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeathReason::GraceExpired => f.write_str("no transport within the grace period"),
            DeathReason::PeerReset => f.write_str("peer reset the session"),
            DeathReason::CloseTimeout(s) => write!(f, "close timed out in {s}"),
            DeathReason::Aborted => f.write_str("aborted locally"),
        }
    }
}

/// What the session tells the layer above (drain with
/// [`Session::poll_event`](super::Session::poll_event)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SessionEvent {
    /// A new transport carries the session again; unacknowledged frames are being resent.
    Resumed {
        /// Time since the transport was lost.
        outage: Duration,
        /// Frames queued for (re)transmission at the moment of resumption.
        pending: u32,
    },
    /// The peer's FIN arrived in order: it will send nothing more. Finish what you are doing
    /// and call [`Session::close`](super::Session::close).
    PeerClosing,
    /// The FIN handshake completed. The session may still linger in TIME_WAIT to re-ack a
    /// retransmitted FIN; the transport may be dropped now.
    ClosedCleanly,
    /// The session is dead. End the open transactions with LOSTLINK; the frames the peer never
    /// acknowledged are listed by [`Session::unacked`](super::Session::unacked) until
    /// [`Session::reset`](super::Session::reset).
    Died {
        /// Why.
        reason: DeathReason,
        /// Data frames accepted by `send` and not acknowledged (the FIN is not counted).
        unacked: u32,
    },
}

/// What to do with a received frame (from [`Session::on_frame`](super::Session::on_frame)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "a Deliver verdict means the frame must be processed now"]
pub enum Verdict {
    /// The next frame in sequence: process it now, then drain
    /// [`Session::poll_deliver`](super::Session::poll_deliver).
    Deliver,
    /// Already delivered earlier: drop it.
    Duplicate,
    /// Ahead of a gap: the session kept a copy and hands it out through
    /// [`Session::poll_deliver`](super::Session::poll_deliver) when the gap fills.
    Held,
    /// A session control frame; consumed.
    Control,
    /// Not acceptable; drop it (counted).
    Dropped(DropReason),
}

/// Why a received frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropReason {
    /// The session is not running (not started, closed or dead).
    NotRunning,
    /// [`Session::transport_lost`](super::Session::transport_lost) was called and no new
    /// transport was reported yet.
    TransportDown,
    /// Shorter than a base header or without a valid magic.
    Malformed,
    /// A frame without a sequence number while the session runs.
    Unsequenced,
    /// Ahead of a gap, but the reorder buffer is full: retransmission will bring it again.
    ReorderFull,
    /// Implausibly far ahead of the next expected sequence number.
    OutOfWindow,
    /// Sequenced after the peer's FIN.
    AfterFin,
    /// A control frame for other session identities.
    ForeignSession,
    /// A control frame with an unknown opcode or missing fields.
    BadControl,
    /// The next frame in sequence, refused because the layer above could not take it now
    /// ([`Session::on_frame_parts_busy`](super::Session::on_frame_parts_busy)): it was not
    /// delivered, the sender gets an immediate ack and sends it again.
    Busy,
}

/// Misuse of the send side, or backpressure. Nothing is stored when an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SessionError {
    /// No room in the retransmit window now (frames or bytes); try again after acks arrive.
    WindowFull,
    /// The frame is larger than the whole window: it can never be sent on this session.
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The window's byte capacity.
        capacity: usize,
    },
    /// Not exactly one well-formed encoded frame, or a session control frame.
    BadFrame,
    /// After [`Session::close`](super::Session::close): nothing more is accepted.
    Closing,
    /// The session is not running.
    NotRunning,
    /// [`Session::start`](super::Session::start) on a running session.
    AlreadyRunning,
    /// A session identity of 0.
    InvalidId,
    /// The frame writer of [`Session::send_with`](super::Session::send_with) failed.
    Encode(EncodeError),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SessionError::WindowFull => f.write_str("retransmit window full"),
            SessionError::FrameTooLarge { len, capacity } => {
                write!(f, "frame of {len} bytes exceeds the {capacity}-byte window")
            }
            SessionError::BadFrame => f.write_str("not one well-formed frame"),
            SessionError::Closing => f.write_str("session is closing: nothing more accepted"),
            SessionError::NotRunning => f.write_str("session is not running"),
            SessionError::AlreadyRunning => f.write_str("session already running"),
            SessionError::InvalidId => f.write_str("session identity 0"),
            SessionError::Encode(e) => write!(f, "encoding the frame: {e}"),
        }
    }
}

impl core::error::Error for SessionError {}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionStats {
    /// Frames accepted by `send`.
    pub frames_accepted: u64,
    /// Sequenced frames emitted for the first time (FIN included).
    pub frames_sent: u64,
    /// Sequenced frames emitted again.
    pub frames_retransmitted: u64,
    /// Frames freed by an acknowledgement (FIN included).
    pub frames_acked: u64,
    /// ACK-only frames emitted.
    pub acks_sent: u64,
    /// Control frames emitted other than ACK and FIN (RESUME, RESUME_OK, RESET).
    pub handshakes_sent: u64,
    /// Frames handed up in order (directly or from the reorder buffer).
    pub frames_delivered: u64,
    /// Duplicates dropped.
    pub duplicates_dropped: u64,
    /// Frames held ahead of a gap.
    pub future_held: u64,
    /// Frames ahead of a gap dropped (reorder buffer full or out of window).
    pub future_dropped: u64,
    /// Other received frames dropped (unsequenced, foreign, malformed, after FIN, ...).
    pub frames_dropped: u64,
    /// Retransmission timer expiries.
    pub rto_expiries: u64,
    /// Retransmissions triggered by duplicate acks.
    pub fast_retransmits: u64,
    /// Completed resumes.
    pub resumes: u64,
    /// RESUMEs received while already synchronised (answered again).
    pub duplicate_resumes: u64,
    /// RESETs sent.
    pub resets_sent: u64,
    /// RESETs received for this session.
    pub resets_received: u64,
    /// Acks outside the window, ignored.
    pub bad_acks: u64,
    /// In-order frames refused because the layer above was busy (sent again by the peer).
    pub busy_refused: u64,
}

/// Room that [`Session::send_with`](super::Session::send_with) keeps free in the retransmit
/// window for frames sent later with a smaller reserve (the link layer keeps room for its own
/// answers this way). The slot for the FIN is always kept in addition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reserve {
    /// Frame slots kept free.
    pub frames: u16,
    /// Contiguous bytes kept free right after the frame.
    pub bytes: u32,
}

impl Reserve {
    /// Nothing kept (but the FIN's slot).
    pub const NONE: Reserve = Reserve {
        frames: 0,
        bytes: 0,
    };
}

/// A frame the reorder buffer handed back in order (from
/// [`Session::poll_deliver`](super::Session::poll_deliver)). The same accessors as
/// [`crate::decode::Frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldFrame<'a> {
    pub(crate) seq: Seq,
    pub(crate) ext: &'a [u8],
    pub(crate) aux: &'a [u8],
    pub(crate) order: ByteOrder,
}

impl<'a> HeldFrame<'a> {
    /// Its sequence number.
    pub fn seq(&self) -> Seq {
        self.seq
    }
    /// The base header view.
    pub fn header(&self) -> Header<&'a [u8]> {
        Header::new_unchecked(self.ext, self.order)
    }
    /// The base header as plain values.
    pub fn repr(&self) -> HeaderRepr {
        HeaderRepr::parse(&self.header())
    }
    /// The extended header parsed for its command.
    pub fn body(&self) -> Result<Body, WireError> {
        Body::parse(self.header().cmd().command(), self.ext, self.order)
    }
    /// The whole extended header as received.
    pub fn ext_bytes(&self) -> &'a [u8] {
        self.ext
    }
    /// The aux data without padding.
    pub fn aux(&self) -> &'a [u8] {
        self.aux
    }
    /// The sender's byte order.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }
}

/// A frame the peer has not acknowledged (from [`Session::unacked`](super::Session::unacked)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnackedFrame<'a> {
    /// Its sequence number.
    pub seq: Seq,
    /// Its base header as last stamped (msgid, circuit, command and flags tell the link layer
    /// which transaction it belonged to).
    pub header: HeaderRepr,
    /// The whole frame as stored.
    pub bytes: &'a [u8],
    /// Times it was emitted (0: never left this node).
    pub transmissions: u16,
}
