//! [`DriveNode`]: the core [`Node`] API the runtime uses, as a trait so one runtime drives any
//! node size; and the node sizes the `dmsg` program uses ([`HubNode`], [`LeafNode`]).
//!
//! # Sizes
//!
//! A core `Node` is one value sized by its const generics (about `LINKS * (size of a
//! Connection + 150) + SPANS * 470 + RELAYS * 120 + ROUTES * 104` bytes). A host
//! `HostConnection` (64 KiB aux, 256 transactions) is 290 KB, so 1,000 of them would be
//! 290 MB; a hub uses smaller links instead:
//!
//! | | links | per-link aux / rx / tx / txns | spans, relays, routes | session window | size |
//! |---|---|---|---|---|---|
//! | [`HubNode`] | 1,024 | 16 KiB / 18 KiB / 20 KiB / 64 | 4096, 4096, 1024 | 32 frames, 20 KiB | 88.8 MB |
//! | [`PlainHubNode`] | 1,024 | the same | the same | none | 66.6 MB |
//! | [`LeafNode`] | 4 | 16 KiB / 18 KiB / 20 KiB / 512 | 1024, 256, 256 | 32 frames, 20 KiB | 0.97 MB |
//! | [`PlainLeafNode`] | 4 | the same | the same | none | 0.89 MB |
//!
//! That is about 86 KB per hub link with session storage (65 KB without): a hub of 1,000
//! leaves fits in under 100 MB. The whole node is allocated (and touched) at start, so the
//! figure is what an idle hub costs too; `dmsg hub --no-session` saves a quarter.
//! 16 KiB of aux per frame covers DMSG's block I/O sizes and the bench's 4 KiB payloads; a
//! frame with more aux is refused by the link (a typed error, counted) rather than buffered.
//! 64 transactions per hub link cover one leaf's span, the relays of the other nodes to it
//! (one per node, as each node has one link) and its routed transactions at a time. That
//! bounds what one leaf hears of: about 60 other nodes, fewer while many transactions are
//! routed over its link; relays beyond that wait and are retried as room frees (counted in
//! `relay_retries`). A hub of 1,000 leaves that each want every other's span needs a
//! different size (and a million relays); leaves that only serve (LNK_CONN `peer_mask` 0,
//! as in the scale test) cost one transaction each. A leaf's 512 cover two relayed spans
//! per remote node for a couple of hundred nodes.

use std::fmt::Write as _;

use dmsg_core::crc::{Crc32c, DefaultCrc};
use dmsg_core::link::{
    classify_stream, LinkConfig, LinkStats, NoSession, Outgoing, Reliable, ReliableStats,
    SessionSlot, StreamStart,
};
use dmsg_core::node::{
    LocalSpan, Node, NodeAddr, NodeConfig, NodeError, NodeEvent, NodeStats, NodeTxn, Transmit,
};
use dmsg_core::session::ControlFrame;
use dmsg_core::span::LinkId;
use dmsg_core::time::Instant;
use dmsg_core::wire::body::SpanRepr;
use dmsg_core::wire::Flags;

/// Aux bytes per frame on the `dmsg` program's links.
pub const AUX: usize = 16 * 1024;
/// Receive buffer: an extended header of up to 32 blocks plus [`AUX`].
pub const RX: usize = 32 * 64 + AUX;
/// Output queue: one largest frame plus room for control frames.
pub const TX: usize = 32 * 64 + AUX + 2048;

/// Each link's reliable-session retransmit window: 32 frames in one output queue's worth of
/// bytes (a largest frame fits; smaller frames stream 32 deep before an ack is needed).
pub type HostSession = Reliable<DefaultCrc, 32, TX, 0, 0>;

/// The hub's node: 1,024 links of 16 KiB frames with reliable-session storage (see the
/// [module docs](self)).
pub type HubNode = Node<1024, 4096, 4096, 1024, RX, AUX, TX, 64, DefaultCrc, HostSession>;
/// A leaf's node: a few links of 16 KiB frames with reliable-session storage.
pub type LeafNode = Node<4, 1024, 256, 256, RX, AUX, TX, 512, DefaultCrc, HostSession>;
/// [`HubNode`] without session storage (plain DMSG only; smaller).
pub type PlainHubNode = Node<1024, 4096, 4096, 1024, RX, AUX, TX, 64, DefaultCrc, NoSession>;
/// [`LeafNode`] without session storage.
pub type PlainLeafNode = Node<4, 1024, 256, 256, RX, AUX, TX, 512, DefaultCrc, NoSession>;

/// What the runtime needs of a node: the core [`Node`]'s drive API (see its module docs for
/// the contract), implemented for every `Node` size.
pub trait DriveNode: Send + 'static {
    /// A node with no links.
    fn create(config: NodeConfig) -> Self
    where
        Self: Sized;
    /// Largest aux a frame may carry on its links.
    fn max_aux(&self) -> usize;
    /// [`Node::add_link`].
    fn add_link(&mut self, now: Instant, config: &LinkConfig) -> Result<LinkId, NodeError>;
    /// [`Node::remove_link`].
    fn remove_link(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError>;
    /// [`Node::close_link`].
    fn close_link(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError>;
    /// [`Node::handle_input`].
    fn handle_input(&mut self, now: Instant, link: LinkId, input: &[u8]) -> usize;
    /// [`Node::handle_close`].
    fn handle_close(&mut self, now: Instant, link: LinkId);
    /// [`Node::handle_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// [`Node::poll_transmit`].
    fn poll_transmit(
        &mut self,
        now: Instant,
        link: Option<LinkId>,
        buf: &mut [u8],
    ) -> Option<Transmit>;
    /// [`Node::poll_event`].
    fn poll_event(&mut self) -> Option<NodeEvent<'_>>;
    /// [`Node::poll_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;
    /// [`Node::advertise`].
    fn advertise(&mut self, span: SpanRepr) -> Result<LocalSpan, NodeError>;
    /// [`Node::withdraw`].
    fn withdraw(&mut self, span: LocalSpan) -> Result<(), NodeError>;
    /// [`Node::open`].
    fn open(
        &mut self,
        now: Instant,
        to: NodeAddr,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<NodeTxn, NodeError>;
    /// [`Node::open_on`].
    fn open_on(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &Outgoing<'_>,
        flags: Flags,
        parent: Option<NodeTxn>,
    ) -> Result<NodeTxn, NodeError>;
    /// [`Node::send`].
    fn send(
        &mut self,
        now: Instant,
        txn: NodeTxn,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), NodeError>;
    /// [`Node::reply`].
    fn reply(&mut self, now: Instant, txn: NodeTxn, error: u32) -> Result<(), NodeError>;
    /// [`Node::abort`].
    fn abort(&mut self, now: Instant, txn: NodeTxn) -> Result<(), NodeError>;
    /// [`Node::send_one_way`].
    fn send_one_way(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &Outgoing<'_>,
        reply: bool,
    ) -> Result<(), NodeError>;
    /// [`Node::send_one_way_to`].
    fn send_one_way_to(
        &mut self,
        now: Instant,
        to: NodeAddr,
        msg: &Outgoing<'_>,
    ) -> Result<(), NodeError>;
    /// [`Node::route_to`].
    fn route_to(&self, node: &NodeAddr) -> Option<(LinkId, u32)>;
    /// [`Node::stats`].
    fn stats(&self) -> NodeStats;
    /// The link's core counters.
    fn link_stats(&self, link: LinkId) -> Option<LinkStats>;
    /// [`Node::links`].
    fn link_ids(&self) -> Vec<LinkId>;
    /// The span tree as the shell's `tree` prints it.
    fn tree_text(&self) -> String;
    /// The span tree as Graphviz DOT.
    fn dot_text(&self) -> String;
    /// One line per link (the shell's `conns`).
    fn conns_text(&self) -> String;
    /// Spans held.
    fn span_count(&self) -> usize;
    /// Size of the node value in bytes.
    fn size_bytes(&self) -> usize;
    /// True when the links have session storage (a session can be offered).
    fn supports_sessions(&self) -> bool;
    /// What the first bytes of an accepted stream are ([`classify_stream`]).
    fn classify(&self, first: &[u8]) -> StreamStart;
    /// The RESUME's 64-byte stateless RESET answer, for a session nobody holds.
    fn stateless_reset(&self, start: &StreamStart, out: &mut [u8; 64]) -> Option<usize>;
    /// [`Node::find_resume`].
    fn find_resume(&self, frame: &ControlFrame) -> Option<LinkId>;
    /// [`Node::handle_reconnect`].
    fn handle_reconnect(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError>;
    /// [`Node::is_suspended`].
    fn is_suspended(&self, link: LinkId) -> bool;
    /// [`Node::reliable_stats`].
    fn reliable_stats(&self, link: LinkId) -> Option<ReliableStats>;
}

impl<
        const LINKS: usize,
        const SPANS: usize,
        const RELAYS: usize,
        const ROUTES: usize,
        const RXB: usize,
        const AUXB: usize,
        const TXB: usize,
        const TXNS: usize,
        C: Crc32c + Clone + Default + Send + 'static,
        S: SessionSlot<C> + Send + 'static,
    > DriveNode for Node<LINKS, SPANS, RELAYS, ROUTES, RXB, AUXB, TXB, TXNS, C, S>
{
    fn create(config: NodeConfig) -> Self {
        Node::new(config)
    }
    fn max_aux(&self) -> usize {
        AUXB
    }
    fn add_link(&mut self, now: Instant, config: &LinkConfig) -> Result<LinkId, NodeError> {
        Node::add_link(self, now, config)
    }
    fn remove_link(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError> {
        Node::remove_link(self, now, link)
    }
    fn close_link(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError> {
        Node::close_link(self, now, link)
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
    fn poll_transmit(
        &mut self,
        now: Instant,
        link: Option<LinkId>,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        Node::poll_transmit(self, now, link, buf)
    }
    fn poll_event(&mut self) -> Option<NodeEvent<'_>> {
        Node::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }
    fn advertise(&mut self, span: SpanRepr) -> Result<LocalSpan, NodeError> {
        Node::advertise(self, span)
    }
    fn withdraw(&mut self, span: LocalSpan) -> Result<(), NodeError> {
        Node::withdraw(self, span)
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
    fn open_on(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &Outgoing<'_>,
        flags: Flags,
        parent: Option<NodeTxn>,
    ) -> Result<NodeTxn, NodeError> {
        Node::open_on(self, now, link, msg, flags, parent)
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
    fn reply(&mut self, now: Instant, txn: NodeTxn, error: u32) -> Result<(), NodeError> {
        Node::reply(self, now, txn, error)
    }
    fn abort(&mut self, now: Instant, txn: NodeTxn) -> Result<(), NodeError> {
        Node::abort(self, now, txn)
    }
    fn send_one_way(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &Outgoing<'_>,
        reply: bool,
    ) -> Result<(), NodeError> {
        Node::send_one_way(self, now, link, msg, reply)
    }
    fn send_one_way_to(
        &mut self,
        now: Instant,
        to: NodeAddr,
        msg: &Outgoing<'_>,
    ) -> Result<(), NodeError> {
        Node::send_one_way_to(self, now, to, msg)
    }
    fn route_to(&self, node: &NodeAddr) -> Option<(LinkId, u32)> {
        Node::route_to(self, node)
    }
    fn stats(&self) -> NodeStats {
        *Node::stats(self)
    }
    fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        Node::link(self, link).map(|c| *c.stats())
    }
    fn link_ids(&self) -> Vec<LinkId> {
        Node::links(self).collect()
    }
    fn tree_text(&self) -> String {
        let mut s = String::new();
        let _ = self.write_tree(&mut s);
        s
    }
    fn dot_text(&self) -> String {
        let mut s = String::new();
        let _ = self.write_dot(&mut s);
        s
    }
    fn conns_text(&self) -> String {
        let mut s = String::new();
        let _ = self.write_conns(&mut s);
        if !s.is_empty() && !s.ends_with('\n') {
            let _ = writeln!(s);
        }
        s
    }
    fn span_count(&self) -> usize {
        self.spans().len()
    }
    fn size_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
    }
    fn supports_sessions(&self) -> bool {
        // `NoSession` is the zero-sized storage; any `Reliable` has a window.
        core::mem::size_of::<S>() > 0
    }
    fn classify(&self, first: &[u8]) -> StreamStart {
        classify_stream(&C::default(), first)
    }
    fn stateless_reset(&self, start: &StreamStart, out: &mut [u8; 64]) -> Option<usize> {
        start.stateless_reset(&C::default(), out)
    }
    fn find_resume(&self, frame: &ControlFrame) -> Option<LinkId> {
        Node::find_resume(self, frame)
    }
    fn handle_reconnect(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError> {
        Node::handle_reconnect(self, now, link)
    }
    fn is_suspended(&self, link: LinkId) -> bool {
        Node::is_suspended(self, link)
    }
    fn reliable_stats(&self, link: LinkId) -> Option<ReliableStats> {
        Node::reliable_stats(self, link)
    }
}

/// Builds a node in a [`Box`] without holding it on a long-lived stack.
///
/// `Node::new` returns the value, so `Box::new` first builds it on the stack; a hub's node
/// (tens of MB) does not fit a normal stack. This builds it on a short-lived thread whose
/// stack is sized for it, so the stack pages are returned when the thread ends and only the
/// heap copy stays resident.
pub fn boxed_node<N: DriveNode>(config: NodeConfig) -> std::io::Result<Box<N>> {
    let size = core::mem::size_of::<N>();
    let stack = size.saturating_mul(4).saturating_add(4 << 20);
    let t = std::thread::Builder::new()
        .name("dmsg-node-alloc".into())
        .stack_size(stack)
        .spawn(move || Box::new(N::create(config)))?;
    t.join()
        .map_err(|_| std::io::Error::other("building the node panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_sizes_stay_within_their_documented_bounds() {
        let sizes = [
            ("HubNode", core::mem::size_of::<HubNode>()),
            ("PlainHubNode", core::mem::size_of::<PlainHubNode>()),
            ("LeafNode", core::mem::size_of::<LeafNode>()),
            ("PlainLeafNode", core::mem::size_of::<PlainLeafNode>()),
        ];
        for (name, size) in sizes {
            println!("{name}: {size} bytes");
        }
        assert!(sizes[0].1 < 100_000_000 && sizes[1].1 < 70_000_000);
        assert!(sizes[2].1 < 1_500_000 && sizes[3].1 < 1_200_000);
    }
}
