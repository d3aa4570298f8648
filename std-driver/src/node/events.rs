//! What a node runtime reports ([`NodeEvent`], owned copies of the core's events plus the
//! runtime's own), and the counted channel that carries them ([`NodeEvents`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use dmsg_core::link::{CloseReason, TxnEnd};
use dmsg_core::node::{NodeAddr, NodeTxn, Via};
use dmsg_core::span::LinkId;
use dmsg_core::wire::body::ConnRepr;

use crate::connector::Retry;
use crate::link::ReceivedMsg;
use crate::net::Addr;

/// What happened in a node runtime. The core's [`NodeEvent`](dmsg_core::node::NodeEvent)s,
/// owned and in the same order, plus the runtime's own (listening, dialling).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A link was added on a new connection.
    LinkUp {
        /// The link.
        link: LinkId,
        /// The peer's socket address.
        peer: SocketAddr,
        /// For a link we dialled: the address as given.
        dialled: Option<Addr>,
    },
    /// The peer's LNK_CONN arrived.
    PeerConn {
        /// The link.
        link: LinkId,
        /// Its LNK_CONN.
        conn: Box<ConnRepr>,
    },
    /// The link closed (every transaction on it was reported `Closed` first).
    LinkDown {
        /// The link.
        link: LinkId,
        /// The core's reason.
        reason: CloseReason,
        /// A sentence saying why, for people.
        why: String,
    },
    /// A reliable link lost its connection; its session waits for a new one.
    LinkSuspended {
        /// The link.
        link: LinkId,
    },
    /// A suspended link resumed on a new connection; nothing was lost.
    LinkResumed {
        /// The link.
        link: LinkId,
    },
    /// A node became reachable.
    Reachable {
        /// The node.
        node: NodeAddr,
        /// Hops to it.
        dist: u32,
    },
    /// A node is no longer reachable.
    Unreachable {
        /// The node.
        node: NodeAddr,
    },
    /// A peer opened a transaction to us.
    Opened {
        /// The transaction.
        txn: NodeTxn,
        /// How it reached us.
        via: Via,
        /// Its first frame.
        msg: ReceivedMsg,
    },
    /// A further frame in one of our transactions.
    Message {
        /// The transaction.
        txn: NodeTxn,
        /// The frame.
        msg: ReceivedMsg,
    },
    /// A one-way message.
    OneWay {
        /// The link it arrived on.
        link: LinkId,
        /// How it reached us.
        via: Via,
        /// The frame.
        msg: ReceivedMsg,
    },
    /// One of our transactions finished (error 0x21 LOSTLINK when its link or route died).
    Closed {
        /// The transaction.
        txn: NodeTxn,
        /// The closing error.
        error: u32,
        /// How it ended.
        end: TxnEnd,
    },
    /// A connect attempt failed or a dialled link was lost; the next attempt follows.
    Retrying {
        /// The address dialled.
        addr: Addr,
        /// The failure and the wait.
        retry: Retry,
    },
    /// Dialling `addr` stopped after too many failures in a row.
    GaveUp {
        /// The address.
        addr: Addr,
        /// The last failure.
        error: String,
    },
    /// A connection's secure channel failed (handshake refused or timed out, a record that
    /// did not authenticate, ...): the connection was closed; nothing of the failed record
    /// reached the node. With `link`, that link ends as well (its `LinkDown` or
    /// `LinkSuspended` follows).
    SecureFailed {
        /// The peer's socket address.
        peer: SocketAddr,
        /// The link the connection carried, if it got that far.
        link: Option<LinkId>,
        /// Why.
        error: dmsg_core::secure::SecureError,
    },
    /// The runtime stopped; the last event.
    Stopped,
}

/// Unread-event counter shared by the runtime and [`NodeEvents`]: the runtime takes no more
/// events from the node while `cap` are unread, and is woken when the reader frees room.
#[derive(Debug)]
pub(crate) struct Gate {
    unread: AtomicUsize,
    cap: usize,
    waker: Arc<mio::Waker>,
}

impl Gate {
    pub fn has_room(&self) -> bool {
        self.unread.load(Ordering::SeqCst) < self.cap
    }
}

/// The runtime's sending side.
pub(crate) struct EventTx {
    tx: Sender<NodeEvent>,
    gate: Arc<Gate>,
}

impl EventTx {
    /// Sends an event (dropped if the receiver is gone).
    pub fn send(&self, ev: NodeEvent) {
        if self.tx.send(ev).is_ok() {
            self.gate.unread.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn has_room(&self) -> bool {
        self.gate.has_room()
    }
}

/// The events of a node runtime, in order; ends (`recv` returns `None`) after
/// [`NodeEvent::Stopped`]. Leaving events unread for long stalls the node (backpressure).
#[derive(Debug)]
pub struct NodeEvents {
    rx: Receiver<NodeEvent>,
    gate: Arc<Gate>,
}

pub(crate) fn channel(cap: usize, waker: Arc<mio::Waker>) -> (EventTx, NodeEvents) {
    let (tx, rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        unread: AtomicUsize::new(0),
        cap: cap.max(1),
        waker,
    });
    (
        EventTx {
            tx,
            gate: gate.clone(),
        },
        NodeEvents { rx, gate },
    )
}

impl NodeEvents {
    fn took(&self, ev: NodeEvent) -> NodeEvent {
        let before = self.gate.unread.fetch_sub(1, Ordering::SeqCst);
        if before == self.gate.cap {
            // The runtime may be waiting for room.
            let _ = self.gate.waker.wake();
        }
        ev
    }

    /// The next event, waiting for it; `None` once the runtime stopped.
    pub fn recv(&self) -> Option<NodeEvent> {
        self.rx.recv().ok().map(|e| self.took(e))
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<NodeEvent, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map(|e| self.took(e))
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Result<NodeEvent, TryRecvError> {
        self.rx.try_recv().map(|e| self.took(e))
    }
}

impl Iterator for NodeEvents {
    type Item = NodeEvent;
    fn next(&mut self) -> Option<NodeEvent> {
        self.recv()
    }
}
