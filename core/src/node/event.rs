//! What the application learns from a node: [`NodeEvent`]s.

use crate::link::{CloseReason, Received, TxnEnd};
use crate::span::LinkId;
use crate::wire::body::ConnRepr;

use super::types::{NodeAddr, NodeTxn, Via};

/// Something the application must know, from [`Node::poll_event`](super::Node::poll_event).
/// Frame events borrow the node (the frame lives in its link's buffer until the next call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent<'a> {
    /// A link was added and its LNK_CONN queued.
    LinkUp {
        /// The link.
        link: LinkId,
    },
    /// The peer's LNK_CONN arrived: spans are relayed to it from now on.
    PeerConn {
        /// The link.
        link: LinkId,
        /// The peer's LNK_CONN.
        conn: &'a ConnRepr,
    },
    /// The link closed. Every transaction on it was reported [`NodeEvent::Closed`] first;
    /// its id is free for reuse once this event is out. A link with a reliable session goes
    /// down only when the session dies ([`CloseReason::SessionDied`]: the grace period ran
    /// out, or the peer answered RESET) or closes cleanly; a lost transport only suspends it
    /// ([`NodeEvent::LinkSuspended`]).
    LinkDown {
        /// The link.
        link: LinkId,
        /// Why.
        reason: CloseReason,
    },
    /// Reliable session only: the transport of the link was lost (the driver reported it
    /// closed, the byte stream broke, or nothing arrived for the idle timeout), but the link
    /// lives on: its spans, relays, routes and open transactions are all kept, and commands
    /// on it keep working (up to its retransmit window). Close the socket and drop any unread
    /// bytes of it. The connecting side dials again and calls
    /// [`Node::handle_reconnect`](super::Node::handle_reconnect); the accepting side waits
    /// for the peer's RESUME (see [`Node::find_session`](super::Node::find_session)). Without
    /// a new transport within the session's grace period the link goes
    /// [`LinkDown`](NodeEvent::LinkDown) with
    /// [`CloseReason::SessionDied`].
    LinkSuspended {
        /// The link.
        link: LinkId,
    },
    /// Reliable session only: a new transport carries the link's session again; whatever the
    /// peer had not acknowledged is being sent again, and nothing was lost or duplicated.
    LinkResumed {
        /// The link.
        link: LinkId,
    },
    /// A node became reachable: the first span of it arrived.
    Reachable {
        /// The node.
        node: NodeAddr,
        /// Its best distance in hops (the received distance + 1).
        dist: u32,
    },
    /// A node is no longer reachable: its last span went away.
    Unreachable {
        /// The node.
        node: NodeAddr,
    },
    /// A peer opened a transaction to us. Answer with [`Node::send`](super::Node::send),
    /// [`Node::reply`](super::Node::reply)...
    Opened {
        /// The transaction.
        txn: NodeTxn,
        /// How it reached us (directly, or over a circuit to one of our nodes).
        via: Via,
        /// The opening frame.
        msg: Received<'a>,
    },
    /// A further frame in one of our transactions (answers to ours, further frames of the
    /// peer's). A peer's ABORT|DELETE is answered for you (ABORT|DELETE), so the
    /// transaction always finishes.
    Message {
        /// The transaction.
        txn: NodeTxn,
        /// The frame.
        msg: Received<'a>,
    },
    /// A one-way message (DBG_SHELL commands are answered by the node and not reported).
    OneWay {
        /// The link it arrived on.
        link: LinkId,
        /// Directly, or over a circuit to one of our nodes.
        via: Via,
        /// The frame.
        msg: Received<'a>,
    },
    /// One of our transactions finished (error 0x21 LOSTLINK when its link or route was
    /// lost, 0x24 CANTCIRC when its circuit did not exist at a relay). Reported exactly once.
    Closed {
        /// The transaction; its handle is now stale.
        txn: NodeTxn,
        /// The `error` of the peer's closing frame, or LOSTLINK.
        error: u32,
        /// How it ended.
        end: TxnEnd,
    },
}

/// Events without a frame, queued in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Notice {
    LinkUp(LinkId),
    PeerConn(LinkId),
    LinkDown(LinkId, CloseReason),
    LinkSuspended(LinkId),
    LinkResumed(LinkId),
    Reachable(NodeAddr, u32),
    Unreachable(NodeAddr),
    Closed(NodeTxn, u32, TxnEnd),
}

/// Capacity of the notice queue. A link's next event is taken only while at least
/// [`NOTICE_SLACK`] entries are free, so one event (which queues at most one notice) always
/// fits; reachability changes wait while it is full.
pub(crate) const NOTICES: usize = 16;
/// Free entries needed before a link event is taken.
pub(crate) const NOTICE_SLACK: usize = 2;

/// A FIFO of [`Notice`]s (a ring of [`NOTICES`] entries).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NoticeQueue {
    items: [Notice; NOTICES],
    head: usize,
    len: usize,
}

impl NoticeQueue {
    pub const fn new() -> Self {
        NoticeQueue {
            items: [Notice::LinkUp(LinkId(0)); NOTICES],
            head: 0,
            len: 0,
        }
    }

    pub fn free(&self) -> usize {
        NOTICES - self.len
    }

    /// Queues `n`; the callers check [`free`](Self::free) first.
    pub fn push(&mut self, n: Notice) -> bool {
        if self.len == NOTICES {
            debug_assert!(false, "notice queue overrun");
            return false;
        }
        self.items[(self.head + self.len) % NOTICES] = n;
        self.len += 1;
        true
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
