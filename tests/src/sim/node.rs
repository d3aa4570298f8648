//! The simulator drives nodes of any capacity through this trait (a blanket impl covers
//! every `Node<...>` with the default CRC, with or without session storage), using only the
//! node's public API.

use dmsg_core::crc::DefaultCrc;
use dmsg_core::link::{LinkConfig, LinkStats, Outgoing, SessionSlot, Side};
use dmsg_core::node::{
    Node, NodeAddr, NodeConfig, NodeError, NodeEvent, NodeStats, NodeTxn, Relay, Route, Transmit,
};
use dmsg_core::span::{ConnFilter, LinkId, SpanEntry, SpanKey};
use dmsg_core::time::Instant;
use dmsg_core::wire::body::{ConnRepr, SpanRepr};
use dmsg_core::wire::Flags;

/// What the simulator needs from a node.
#[allow(missing_docs)]
pub trait SimNode {
    fn boxed(config: NodeConfig) -> Box<Self>;
    fn add_link(&mut self, now: Instant, config: &LinkConfig) -> Result<LinkId, NodeError>;
    fn handle_input(&mut self, now: Instant, link: LinkId, input: &[u8]) -> usize;
    fn handle_close(&mut self, now: Instant, link: LinkId);
    fn handle_reconnect(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError>;
    fn find_session(&self, session_id: u64) -> Option<LinkId>;
    fn is_suspended(&self, link: LinkId) -> bool;
    fn unacked_frames(&self, link: LinkId) -> usize;
    /// Completed resumes on `link` (0 without a session).
    fn link_resumes(&self, link: LinkId) -> u64;
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit>;
    fn poll_event(&mut self) -> Option<NodeEvent<'_>>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn advertise(&mut self, span: SpanRepr) -> Result<(), NodeError>;
    fn open(
        &mut self,
        now: Instant,
        to: NodeAddr,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<NodeTxn, NodeError>;
    fn send(
        &mut self,
        now: Instant,
        txn: NodeTxn,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), NodeError>;
    fn route_to(&self, node: &NodeAddr) -> Option<(LinkId, u32)>;
    fn span_entries(&self) -> &[SpanEntry];
    fn span(&self, key: SpanKey) -> Option<SpanEntry>;
    fn best_remote(&self, node: &NodeAddr) -> Option<SpanEntry>;
    fn best_for(&self, node: &NodeAddr, conn: &ConnFilter) -> Vec<SpanKey>;
    fn relays(&self) -> &[Relay];
    fn routes(&self) -> &[Route];
    fn stats(&self) -> NodeStats;
    fn link_ids(&self) -> Vec<LinkId>;
    fn link_stats(&self, link: LinkId) -> Option<LinkStats>;
    fn link_peer_conn(&self, link: LinkId) -> Option<ConnRepr>;
    fn link_open_txns(&self, link: LinkId, side: Side) -> usize;
    fn link_is_open(&self, link: LinkId) -> bool;
    fn has_pending_work(&self) -> bool;
    fn tree(&self) -> String;
    /// One line about a link, for failure messages.
    fn link_debug(&self, link: LinkId) -> String;
    fn size_bytes() -> usize;
}

impl<
        const L: usize,
        const SP: usize,
        const R: usize,
        const T: usize,
        const RX: usize,
        const AUX: usize,
        const TX: usize,
        const TXNS: usize,
        S: SessionSlot<DefaultCrc>,
    > SimNode for Node<L, SP, R, T, RX, AUX, TX, TXNS, DefaultCrc, S>
{
    fn boxed(config: NodeConfig) -> Box<Self> {
        Box::new(Node::new(config))
    }
    fn add_link(&mut self, now: Instant, config: &LinkConfig) -> Result<LinkId, NodeError> {
        Node::add_link(self, now, config)
    }
    fn handle_input(&mut self, now: Instant, link: LinkId, input: &[u8]) -> usize {
        Node::handle_input(self, now, link, input)
    }
    fn handle_close(&mut self, now: Instant, link: LinkId) {
        Node::handle_close(self, now, link)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now)
    }
    fn handle_reconnect(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError> {
        Node::handle_reconnect(self, now, link)
    }
    fn find_session(&self, session_id: u64) -> Option<LinkId> {
        Node::find_session(self, session_id)
    }
    fn is_suspended(&self, link: LinkId) -> bool {
        Node::is_suspended(self, link)
    }
    fn unacked_frames(&self, link: LinkId) -> usize {
        Node::unacked_frames(self, link)
    }
    fn link_resumes(&self, link: LinkId) -> u64 {
        self.reliable_stats(link).map_or(0, |s| s.resumes)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        Node::poll_transmit(self, now, None, buf)
    }
    fn poll_event(&mut self) -> Option<NodeEvent<'_>> {
        Node::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }
    fn advertise(&mut self, span: SpanRepr) -> Result<(), NodeError> {
        Node::advertise(self, span).map(|_| ())
    }
    fn open(
        &mut self,
        now: Instant,
        to: NodeAddr,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<NodeTxn, NodeError> {
        Node::open(self, now, to, msg, flags)
    }
    fn send(
        &mut self,
        now: Instant,
        txn: NodeTxn,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), NodeError> {
        Node::send(self, now, txn, msg, flags)
    }
    fn route_to(&self, node: &NodeAddr) -> Option<(LinkId, u32)> {
        Node::route_to(self, node)
    }
    fn span_entries(&self) -> &[SpanEntry] {
        self.spans().entries()
    }
    fn span(&self, key: SpanKey) -> Option<SpanEntry> {
        self.spans().get(key).copied()
    }
    fn best_remote(&self, node: &NodeAddr) -> Option<SpanEntry> {
        self.spans()
            .best_remote(&node.peer_id, &node.pfs_id)
            .copied()
    }
    fn best_for(&self, node: &NodeAddr, conn: &ConnFilter) -> Vec<SpanKey> {
        self.spans()
            .best_for(node.peer_id, node.pfs_id, conn)
            .into_iter()
            .collect()
    }
    fn relays(&self) -> &[Relay] {
        Node::relays(self)
    }
    fn routes(&self) -> &[Route] {
        Node::routes(self)
    }
    fn stats(&self) -> NodeStats {
        *Node::stats(self)
    }
    fn link_ids(&self) -> Vec<LinkId> {
        self.links().collect()
    }
    fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        self.link(link).map(|c| *c.stats())
    }
    fn link_peer_conn(&self, link: LinkId) -> Option<ConnRepr> {
        self.link(link).and_then(|c| c.peer_conn().copied())
    }
    fn link_open_txns(&self, link: LinkId, side: Side) -> usize {
        self.link(link).map_or(0, |c| c.open_transactions(side))
    }
    fn link_is_open(&self, link: LinkId) -> bool {
        self.link(link)
            .is_some_and(|c| c.state() == dmsg_core::link::LinkState::Open)
    }
    fn has_pending_work(&self) -> bool {
        Node::has_pending_work(self)
    }
    fn tree(&self) -> String {
        let mut s = String::new();
        let _ = self.write_tree(&mut s);
        s
    }
    fn link_debug(&self, link: LinkId) -> String {
        let Some(c) = self.link(link) else {
            return format!("link {link}: gone");
        };
        format!(
            "link {link}: {:?} capacity {} pending {} suspended {} timeout {:?} session {:?} {:?} node {:?} txns {}/{}",
            c.state(),
            c.send_capacity(),
            c.pending_transmit(),
            self.is_suspended(link),
            c.poll_timeout(),
            self.reliable_stats(link),
            self.session_stats(link),
            self.link_stats(link),
            c.open_transactions(Side::Ours),
            c.open_transactions(Side::Theirs),
        )
    }
    fn size_bytes() -> usize {
        std::mem::size_of::<Self>()
    }
}
