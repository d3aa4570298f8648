//! Plain types of the node layer: addresses, handles, configuration and errors.

use core::fmt;

use crate::link::{ConfigError, ReconnectError, SendError, TxnId};
use crate::span::LinkId;
use crate::wire::{Label, MsgId, Uuid};

/// A node of the cluster: a cluster id (`peer_id`) and a node id (`pfs_id`), as a LNK_SPAN
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeAddr {
    /// Cluster id.
    pub peer_id: Uuid,
    /// Node id.
    pub pfs_id: Uuid,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.peer_id, self.pfs_id)
    }
}

/// A transaction of the application: the link it runs on and its handle there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeTxn {
    /// The link (for a transaction over a circuit: the first hop).
    pub link: LinkId,
    /// The transaction on that link.
    pub txn: TxnId,
}

/// A span this node advertises itself (see [`Node::advertise`](super::Node::advertise)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LocalSpan(pub MsgId);

/// How a transaction (or one-way message) reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Via {
    /// Directly from the peer of the link (circuit 0).
    Direct,
    /// Over a circuit: stacked on the LNK_SPAN we relay for our own node `to`, so it was
    /// routed to us hop by hop from somewhere in the cluster. (DMSG circuits name the
    /// destination, not the origin; an application that needs the origin carries it in its
    /// own payload.)
    Circuit {
        /// Our advertised node the opener addressed.
        to: NodeAddr,
    },
    /// Stacked on a LNK_SPAN the peer advertises for node `from`: the peer speaks for that
    /// node (one hop; such transactions are not routed further).
    PeerSpan {
        /// The node of that span.
        from: NodeAddr,
    },
    /// Stacked on another transaction of the application (e.g. a BLK_READ on a BLK_OPEN).
    Stacked {
        /// The enclosing transaction.
        parent: NodeTxn,
    },
}

/// Settings of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeConfig {
    /// Our name in the shell's `dot` output.
    pub label: Label,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            label: Label::EMPTY,
        }
    }
}

/// Why a node command was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum NodeError {
    /// Every link slot is taken (`LINKS`).
    LinksFull,
    /// No such link (never added, or closed and freed).
    UnknownLink(LinkId),
    /// No span of the target node is known: it is not reachable.
    Unreachable,
    /// The table of routed transactions is full (`ROUTES`).
    RoutesFull,
    /// The span table is full (`SPANS`).
    SpansFull,
    /// No such local span.
    UnknownSpan,
    /// The transaction is run by the node itself (a span, a relay or a routed
    /// transaction), not by the application.
    NotApplication(NodeTxn),
    /// The link refused the command.
    Link(SendError),
    /// The link could not be created.
    Config(ConfigError),
    /// [`Node::handle_reconnect`](super::Node::handle_reconnect) refused: the link runs no
    /// session, or it is closed.
    Reconnect(ReconnectError),
    /// Another link already offers a reliable session with this identity (identities must
    /// be unique: a resuming peer names its link by it).
    SessionIdInUse(u64),
}

impl From<SendError> for NodeError {
    fn from(e: SendError) -> Self {
        NodeError::Link(e)
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::LinksFull => f.write_str("every link slot is taken"),
            NodeError::UnknownLink(l) => write!(f, "no link {l}"),
            NodeError::Unreachable => f.write_str("no span of the target node is known"),
            NodeError::RoutesFull => f.write_str("routed-transaction table full"),
            NodeError::SpansFull => f.write_str("span table full"),
            NodeError::UnknownSpan => f.write_str("no such local span"),
            NodeError::NotApplication(t) => {
                write!(
                    f,
                    "transaction {} on link {} is run by the node",
                    t.txn.msgid(),
                    t.link
                )
            }
            NodeError::Link(e) => write!(f, "link: {e}"),
            NodeError::Config(e) => write!(f, "link config: {e}"),
            NodeError::Reconnect(e) => write!(f, "reconnect: {e}"),
            NodeError::SessionIdInUse(id) => write!(f, "session identity {id:#x} is in use"),
        }
    }
}

impl core::error::Error for NodeError {}

/// Owner tags the node stores with each transaction on its links
/// ([`Connection::set_txn_tag`](crate::link::Connection::set_txn_tag)).
pub(crate) mod tag {
    /// Not classified yet.
    pub const NONE: u8 = 0;
    /// The application's (circuit 0 or stacked on another application transaction).
    pub const APP: u8 = 1;
    /// A LNK_SPAN the peer opened (in the span table).
    pub const SPAN: u8 = 2;
    /// A LNK_SPAN we opened to relay a span (in the relay table).
    pub const RELAY: u8 = 3;
    /// One end of a transaction relayed between two links (in the route table).
    pub const ROUTE: u8 = 4;
    /// The application's, over a circuit (in the route table, so it dies with the circuit).
    pub const APP_ROUTED: u8 = 5;
    /// A peer's transaction we refused; its remaining frames are absorbed.
    pub const REFUSED: u8 = 6;
}
