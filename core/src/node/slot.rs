//! One link slot of a node: the connection and the node's bookkeeping for it.

use crate::link::Connection;
use crate::span::LinkId;

use super::shell::ShellJob;
use super::stats::LinkNodeStats;
use super::types::Via;

/// The link's next event is a frame for the application; [`Node::poll_event`] hands it out.
///
/// [`Node::poll_event`]: super::Node::poll_event
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AppPending {
    Opened(Via),
    Message,
    OneWay(Via),
}

/// A link and what the node keeps about it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LinkSlot<
    const RX: usize,
    const AUX: usize,
    const TX: usize,
    const TXNS: usize,
    C,
    S,
> {
    pub id: LinkId,
    pub conn: Connection<RX, AUX, TX, TXNS, C, S>,
    pub stats: LinkNodeStats,
    /// A shell answer in progress.
    pub shell: Option<ShellJob>,
    /// The next event is for the application.
    pub app: Option<AppPending>,
    /// The next event waits for room elsewhere.
    pub stalled: bool,
    /// Events may be waiting (input, timers or commands touched the link).
    pub active: bool,
    /// The link reported LinkClosed; the slot is freed once its output is drained.
    pub down: bool,
    /// The application dropped the link: its frames are discarded.
    pub discard_app: bool,
    /// A relay open or close found no room on this link (output queue or table).
    pub plan_blocked: bool,
    /// Room was freed on this link since the last progress (output drained, a
    /// transaction finished).
    pub room: bool,
    /// The link was seen closing (its relays were replanned away).
    pub closing_seen: bool,
}
