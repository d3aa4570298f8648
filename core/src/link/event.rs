//! What the application learns from a link: [`Event`]s, and why a link closed.

use crate::decode::DecodeError;
use crate::session::DeathReason;
use crate::time::Duration;
use crate::wire::body::ConnRepr;
use crate::wire::{Body, Command, Flags, HeaderRepr};

use super::config::Extensions;
use super::txn::{TxnEnd, TxnId};

/// A received frame as handed to the application. Borrows the connection: copy out what you
/// need before calling the connection again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received<'a> {
    /// The base header (command word with flags, msgid, circuit, error, ...).
    pub header: HeaderRepr,
    /// The extended header, parsed for the command. [`Body::None`] for commands without a
    /// structure, and for a header too short for its command (counted in
    /// [`LinkStats::bad_bodies`](super::LinkStats::bad_bodies)).
    pub body: &'a Body,
    /// The aux data (without padding).
    pub aux: &'a [u8],
    /// For a command this crate has no structure for: the extended header after the
    /// 64-byte base header, as received (up to [`OPAQUE_EXT_MAX`](super::OPAQUE_EXT_MAX)
    /// bytes; empty when the header is longer, so a relay can tell it cannot forward the
    /// frame unchanged by comparing with the header's size field). Empty for known commands.
    pub ext: &'a [u8],
}

impl Received<'_> {
    /// The command.
    pub fn command(&self) -> Command {
        self.header.cmd.command()
    }

    /// The flags (CREATE, DELETE, REPLY, ABORT, REVTRANS, ...).
    pub fn flags(&self) -> Flags {
        self.header.cmd.flags()
    }

    /// The `error` header field.
    pub fn error(&self) -> u32 {
        self.header.error
    }
}

/// Why a link closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CloseReason {
    /// Clean shutdown started by the peer (it DELETEd a LNK_CONN direction) and completed.
    PeerClosed,
    /// Clean shutdown started by [`Connection::close`](super::Connection::close) and
    /// completed.
    LocalClose,
    /// The caller reported the transport gone
    /// ([`Connection::handle_close`](super::Connection::handle_close): EOF, reset, dropped).
    TransportClosed,
    /// Nothing received for [`LinkConfig::idle_timeout`](super::LinkConfig::idle_timeout).
    KeepaliveTimeout,
    /// The byte stream broke (bad magic, CRC, sequence, sizes).
    Decode(DecodeError),
    /// The peer exceeded [`LinkConfig::max_violations`](super::LinkConfig::max_violations).
    ProtocolError,
    /// A clean shutdown did not finish within
    /// [`LinkConfig::close_timeout`](super::LinkConfig::close_timeout).
    CloseTimeout,
    /// The reliable session under the link died: no transport came back within its grace
    /// period ([`DeathReason::GraceExpired`]), the peer answered RESET because it restarted
    /// or forgot the session ([`DeathReason::PeerReset`]), or its FIN close timed out. The
    /// frames the peer never acknowledged are listed by
    /// [`Connection::session`](super::Connection::session)`().unacked()`.
    SessionDied(DeathReason),
}

impl CloseReason {
    /// True for the two clean shutdowns.
    pub const fn is_clean(&self) -> bool {
        matches!(self, CloseReason::PeerClosed | CloseReason::LocalClose)
    }
}

/// Something the application must know, from [`Connection::poll_event`](super::Connection::poll_event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Our LNK_CONN is queued: the link is up. Always the first event.
    Connected,
    /// The peer's LNK_CONN arrived and was accepted (answered with
    /// LNK_ERROR|CREATE|REPLY|REVTRANS, error 0).
    PeerConn {
        /// The peer's LNK_CONN body.
        conn: &'a ConnRepr,
        /// Extensions both sides offered (empty with DragonFly).
        extensions: Extensions,
    },
    /// The peer's first answer to our LNK_CONN (error 0 = accepted). A non-zero error or a
    /// DELETE in the same frame means the peer refused it; the link stays up for one-way
    /// traffic and new transactions, without LNK_CONN.
    ConnAnswered {
        /// The `error` field of the answer.
        error: u32,
    },
    /// The peer opened a transaction (its frame had CREATE). Answer with
    /// [`Connection::send`](super::Connection::send) /
    /// [`Connection::reply`](super::Connection::reply).
    Opened {
        /// The new transaction.
        txn: TxnId,
        /// The opening frame.
        msg: Received<'a>,
    },
    /// A further frame in an open transaction: the peer's answers in transactions we opened
    /// (the first carries CREATE|REPLY) and the peer's further frames in its own. DELETE in
    /// the flags means the peer closed its direction; ABORT means it asks to cut short.
    Message {
        /// The transaction.
        txn: TxnId,
        /// The frame.
        msg: Received<'a>,
    },
    /// A one-way message (none of CREATE, DELETE, ABORT; not for an open transaction).
    OneWay {
        /// The frame.
        msg: Received<'a>,
    },
    /// A transaction finished: both sides sent DELETE, or the link died first. Reported
    /// exactly once per transaction, after every [`Event::Message`] of it.
    Closed {
        /// The transaction; its handle is now stale.
        txn: TxnId,
        /// The `error` of the peer's closing frame, or LOSTLINK (0x21) when the link died.
        error: u32,
        /// How it ended.
        end: TxnEnd,
    },
    /// The link is closed. Always the last event; every transaction was reported
    /// [`Event::Closed`] before it.
    LinkClosed {
        /// Why.
        reason: CloseReason,
    },
    /// Reliable session only: the transport is gone ([`CloseReason::TransportClosed`],
    /// [`CloseReason::KeepaliveTimeout`] or [`CloseReason::Decode`]), but the link is not:
    /// transactions stay open and commands keep working (up to the retransmit window). Close
    /// the socket; the connecting side reconnects and calls
    /// [`handle_reconnect`](super::Connection::handle_reconnect). If no transport comes
    /// back within the session's grace period the link closes with
    /// [`CloseReason::SessionDied`].
    Suspended {
        /// Why the transport was given up.
        reason: CloseReason,
    },
    /// Reliable session only: a new transport carries the session again; every frame the
    /// peer had not acknowledged is being sent again, and nothing was lost or duplicated.
    Resumed {
        /// Time since the transport was lost.
        outage: Duration,
        /// Frames queued for (re)transmission when the session resumed.
        pending: u32,
    },
}

/// Events with no frame behind them, queued in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Notice {
    Connected,
    PeerConn,
    ConnAnswered(u32),
}

/// Capacity of [`Notices`]. Input stops while any event is pending, so at most one notice
/// from input plus [`Notice::Connected`] can wait at a time.
const NOTICES: usize = 4;

/// A tiny FIFO of [`Notice`]s.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Notices {
    items: [Notice; NOTICES],
    head: usize,
    len: usize,
}

impl Notices {
    pub const fn new() -> Self {
        Notices {
            items: [Notice::Connected; NOTICES],
            head: 0,
            len: 0,
        }
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `n`; returns false (and queues nothing) if full, which the input gating rules
    /// out.
    pub fn push(&mut self, n: Notice) -> bool {
        if self.len == NOTICES {
            return false;
        }
        self.items[(self.head + self.len) % NOTICES] = n;
        self.len += 1;
        true
    }

    pub fn peek(&self) -> Option<Notice> {
        if self.len == 0 {
            return None;
        }
        Some(self.items[self.head])
    }

    pub fn pop(&mut self) -> Option<Notice> {
        if self.len == 0 {
            return None;
        }
        let n = self.items[self.head];
        self.head = (self.head + 1) % NOTICES;
        self.len -= 1;
        Some(n)
    }
}
