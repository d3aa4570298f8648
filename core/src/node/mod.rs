//! The cluster layer: a [`Node`] owns several links and runs DMSG's SPAN protocol over them
//! (the span database, relays, routing over circuits, the debug shell).
//!
//! A leaf has one link, a hub many: the same code with different bounds. Every table is a
//! compile-time capacity; running into one is a typed, counted outcome (a refused span, a
//! refused route, a postponed relay), never a panic and never unbounded memory. The full
//! rules are in `spec/NODE.md`.
//!
//! # What a node does
//!
//! - **Spans**: LNK_SPAN transactions peers open are kept in a [`SpanTable`], grouped by
//!   cluster and node, each node's links sorted by distance. A span is accepted with
//!   `LNK_ERROR|CREATE|REPLY|REVTRANS` (as DragonFly does) and refused with error PARAM when
//!   the table is full. [`Node::advertise`] adds spans of our own.
//! - **Relays**: for every link whose peer sent LNK_CONN, the best two links of every node
//!   are relayed as LNK_SPANs of ours with `dist + 1` (never back out of the link they came
//!   from, never beyond distance 16, filtered by the peer's `peer_mask` and, for a CLIENT,
//!   its cluster). Planned per node after every change, applied as the links have room,
//!   retried when they drain (see [`relay`]).
//! - **Routing**: [`Node::open`] opens a transaction to a remote node over the span that
//!   leads to it; relays forward it hop by hop and both ends see it closed with LOSTLINK if
//!   the route is lost, CANTCIRC if the circuit does not exist (see [`route`]).
//! - **Shell**: DBG_SHELL commands (`help`, `tree`, `conns`, `dot`) are answered the way
//!   DragonFly's daemon answers them (see [`shell`]).
//!
//! # The drive contract
//!
//! The same shape as [`Connection`]'s, for many links. Inputs are
//! `handle_*` calls that take the current time and a link; outputs are pulled with `poll_*`.
//! After **any** input (bytes, a timeout, a closed transport, a command):
//!
//! 1. **transmit**: call [`poll_transmit`](Node::poll_transmit) (for one link, or `None`
//!    for any) until it returns `None`, and write each [`Transmit`] to its link's transport;
//! 2. **events**: call [`poll_event`](Node::poll_event) until it returns `None`. Frame
//!    events borrow the node until the next call: copy out what you need, then issue
//!    commands. Issuing commands or taking events can make more output, so repeat 1 and 2
//!    until both return `None` in the same round;
//! 3. **input left over**: [`handle_input`](Node::handle_input) consumes only what the node
//!    can act on now (a link stops while its next frame waits for the application, or for
//!    room on the link it is relayed to). Keep the rest and feed it again after 1 and 2;
//! 4. **timer**: call [`handle_timeout`](Node::handle_timeout) when the instant from
//!    [`poll_timeout`](Node::poll_timeout) has passed (early or repeated calls are harmless).
//!
//! ```text
//! loop {
//!     let (link, data) = wait_for(any socket readable, or node.poll_timeout());
//!     let now = clock();
//!     match data {
//!         Readable(bytes)  => pending[link].extend(bytes),
//!         Eof | Error      => node.handle_close(now, link),
//!         TimerFired       => node.handle_timeout(now),
//!     }
//!     loop {
//!         let mut busy = false;
//!         for link in links_with_pending_input {           // step 3
//!             let used = node.handle_input(now, link, &pending[link]);
//!             pending[link].drain(..used);
//!             busy |= used > 0;
//!         }
//!         while let Some(t) = node.poll_transmit(now, None, &mut buf) {   // step 1
//!             sockets[t.link].write_all(&buf[..t.len]);
//!             busy = true;
//!         }
//!         while let Some(event) = node.poll_event() {     // step 2
//!             react(event);                               // may call node.open/send/...
//!             busy = true;
//!         }
//!         if !busy { break; }
//!     }
//! }
//! ```
//!
//! The same loop, runnable: a hub with two leaves; one leaf asks the other for "ping" over
//! a circuit through the hub.
//!
//! ```
//! use dmsg_core::link::{LinkConfig, Outgoing};
//! use dmsg_core::node::{Node, NodeAddr, NodeEvent};
//! use dmsg_core::span::LinkId;
//! use dmsg_core::time::Instant;
//! use dmsg_core::wire::{body::SpanRepr, Command, Flags, Uuid};
//!
//! // 4 links, 64 spans, 64 relays, 16 routes; small links.
//! type N = Node<4, 64, 64, 16, { 8 * 64 + 1024 }, 1024, 4096, 32>;
//!
//! fn span_of(id: u8) -> SpanRepr {
//!     SpanRepr { peer_type: 3, peer_id: Uuid([9; 16]), pfs_id: Uuid([id; 16]), ..SpanRepr::default() }
//! }
//! let now = Instant::ZERO;
//! let cfg = LinkConfig::default();
//! let (mut hub, mut a, mut b) = (N::new(Default::default()), N::new(Default::default()), N::new(Default::default()));
//! let ha = hub.add_link(now, &cfg).unwrap();
//! let hb = hub.add_link(now, &cfg).unwrap();
//! let la = a.add_link(now, &cfg).unwrap();
//! let lb = b.add_link(now, &cfg).unwrap();
//! a.advertise(span_of(1)).unwrap();
//! b.advertise(span_of(2)).unwrap();
//!
//! // Wires: (from node, from link) -> (to node, to link). Node indices: 0 hub, 1 a, 2 b.
//! let wires = [((1, la), (0, ha)), ((0, ha), (1, la)), ((2, lb), (0, hb)), ((0, hb), (2, lb))];
//! let mut pending: Vec<Vec<u8>> = vec![Vec::new(); 4]; // per wire, bytes in flight
//! let mut log = Vec::new();
//! let mut asked = false;
//! for _round in 0..50 {
//!     let mut nodes = [&mut hub, &mut a, &mut b];
//!     for (w, &(_, (to, link))) in wires.iter().enumerate() {
//!         let used = nodes[to].handle_input(now, link, &pending[w]);
//!         pending[w].drain(..used);
//!     }
//!     for (n, node) in nodes.iter_mut().enumerate() {
//!         let mut buf = [0u8; 2048];
//!         loop {
//!             let mut busy = false;
//!             while let Some(t) = node.poll_transmit(now, None, &mut buf) {
//!                 let w = wires.iter().position(|&(from, _)| from == (n, t.link)).unwrap();
//!                 pending[w].extend_from_slice(&buf[..t.len]);
//!                 busy = true;
//!             }
//!             let mut answer = None;
//!             while let Some(ev) = node.poll_event() {
//!                 busy = true;
//!                 match ev {
//!                     NodeEvent::Opened { txn, msg, .. } => {
//!                         log.push(format!("node {n} opened {:?}", msg.aux));
//!                         answer = Some(txn);
//!                         break;
//!                     }
//!                     NodeEvent::Message { msg, .. } => log.push(format!("node {n} got {:?}", msg.aux)),
//!                     NodeEvent::Closed { error, .. } => log.push(format!("node {n} closed {error}")),
//!                     _ => {}
//!                 }
//!             }
//!             if let Some(txn) = answer {
//!                 let pong = Outgoing::new(Command::DbgShell).with_aux(b"pong");
//!                 node.send(now, txn, &pong, Flags::DELETE).unwrap();
//!             }
//!             if !busy { break; }
//!         }
//!     }
//!     let to_b = NodeAddr { peer_id: Uuid([9; 16]), pfs_id: Uuid([2; 16]) };
//!     if !asked && a.route_to(&to_b).is_some() {
//!         let ping = Outgoing::new(Command::DbgShell).with_aux(b"ping");
//!         a.open(now, to_b, &ping, Flags::DELETE).unwrap(); // CREATE|DELETE: one-frame request
//!         asked = true;
//!     }
//! }
//! assert!(log.contains(&"node 2 opened [112, 105, 110, 103]".to_string()));
//! assert!(log.contains(&"node 1 got [112, 111, 110, 103]".to_string()));
//! assert!(log.contains(&"node 1 closed 0".to_string()));
//! assert!(log.contains(&"node 2 closed 0".to_string()));
//! assert_eq!(hub.stats().routes_relayed, 1);
//! ```
//!
//! # Reliable sessions
//!
//! With session storage (`S` = [`Reliable`](crate::link::Reliable), e.g.
//! [`ReliableMcuLeaf`], [`ReliableHostHub`]) and [`LinkConfig::session`] set on
//! [`add_link`](Node::add_link), a link whose peer offers the session too runs over it
//! (`spec/SESSION.md`), and a flaky transport no longer tears the cluster apart:
//!
//! - **Loss**: [`handle_close`](Node::handle_close), a broken byte stream or the idle timeout
//!   only *suspend* the link: [`NodeEvent::LinkSuspended`]. Its spans, relays, routes and
//!   open transactions stay; frames for it (the application's and relayed ones) queue in its
//!   retransmit window, and when that is full the links that feed it wait (backpressure).
//!   When the node suspended the link itself (idle timeout, a broken stream), close the
//!   socket so the peer notices too.
//! - **Window discipline**: a session's window frees only when the peer acknowledges, so a
//!   link whose next frame waits for room elsewhere still reads acks (frames are refused and
//!   sent again by the peer), and frames that need an answer (opens, relays, forwarded
//!   frames, the application's opens) leave room for a few answers in the window: the
//!   application may get `WouldBlock` a little earlier than on a plain link
//!   (`spec/NODE.md` §12).
//! - **Reconnect**: the connecting side dials again and calls
//!   [`handle_reconnect`](Node::handle_reconnect); the accepting side classifies each new
//!   stream and routes a RESUME to its link with [`find_session`](Node::find_session) (the
//!   recipe and a runnable example are there). Both then feed the new stream with
//!   [`handle_input`](Node::handle_input) as usual; [`NodeEvent::LinkResumed`] follows, and
//!   every frame the peer missed is sent again: nothing is lost or duplicated.
//! - **Death**: only when no transport comes back within the session's grace period, or the
//!   peer answers RESET (it restarted), does the link go [`NodeEvent::LinkDown`]
//!   ([`CloseReason::SessionDied`](crate::link::CloseReason::SessionDied)); then, as for a
//!   plain link, its transactions end with LOSTLINK and its spans are withdrawn through the
//!   mesh. [`remove_link`](Node::remove_link) ends a session at once (the peer gets RESET).
//!
//! A driver must report a transport's close only while it is the link's current one: after
//! `handle_reconnect` a late EOF of the old socket would suspend the new transport. The
//! link's counters of suspensions, reconnects and resumes are in
//! [`reliable_stats`](Node::reliable_stats). A node without session storage (`S` =
//! [`NoSession`], the default) is plain DMSG, byte for byte and at no size cost.
//!
//! # Memory
//!
//! A `Node<LINKS, SPANS, RELAYS, ROUTES, RX, AUX, TX, TXNS, C, S>` is one plain value
//! (`Clone + Eq + Hash + Debug`); `Box` it on a host. Its size is about
//! `LINKS * (size of a Connection<RX, AUX, TX, TXNS, C, S> + 150) + SPANS * 470 +
//! RELAYS * 120 + ROUTES * 104 + 2.5 KiB`:
//!
//! | parameter | what it bounds | cost |
//! |---|---|---|
//! | `LINKS` | links at once (ids are reused only after a link's `LinkDown`) | one [`Connection`] each (see its table) plus ~150 bytes |
//! | `SPANS` | spans held (received and our own) and nodes reported reachable | ~470 bytes each (entry 420 with labels, two index slots, a reachability slot) |
//! | `RELAYS` | LNK_SPANs we keep open to relay spans (at most 2 per node per link) | ~120 bytes each |
//! | `ROUTES` | transactions routed through us or opened over circuits | ~104 bytes each |
//! | `RX`, `AUX`, `TX`, `TXNS`, `C` | each link's buffers and tables | see [`link`](crate::link) |
//! | `S` | each link's session storage: [`NoSession`] or [`Reliable`](crate::link::Reliable) | 0, or the retransmit window plus ~0.7 KiB per link ([`reliable`](crate::link::reliable)) |
//!
//! The per-link `TXNS` must cover the LNK_SPANs a link carries both ways (up to 2 per
//! remote node each way) plus the routed transactions on it.

mod event;
mod pump;
mod reach;
pub mod relay;
pub mod route;
pub mod shell;
mod slot;
mod stats;
mod types;

pub use event::NodeEvent;
pub use relay::{Relay, RelayState};
pub use route::{Route, RouteEnd};
pub use stats::{LinkNodeStats, NodeStats};
pub use types::{LocalSpan, NodeAddr, NodeConfig, NodeError, NodeTxn, Via};

use crate::crc::{Crc32c, DefaultCrc};
use crate::link::{
    Connection, Event, LinkConfig, NoSession, Outgoing, ReliableStats, SessionSlot, Side,
};
use crate::session::{ControlFrame, SessionStats};
use crate::span::{LinkId, SpanKey, SpanTable};
use crate::time::Instant;
use crate::wire::body::SpanRepr;
use crate::wire::{Flags, MsgId};

use event::{Notice, NoticeQueue};
use reach::{Dirty, ReachSet};
use relay::RelayTable;
use route::RouteTable;
use slot::{AppPending, LinkSlot};
use types::tag;

/// Refuses (with `WouldBlock`) a frame of the application that is not an answer when it
/// would eat into the room a session link keeps for answers (see `pump::ANSWER_FRAMES`).
fn room_for_open<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S>(
    conn: &Connection<RX, AUX, TX, TXNS, C, S>,
    msg: &Outgoing<'_>,
) -> Result<(), NodeError>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    let header = if msg.ext.is_empty() {
        crate::wire::Cmd::new(msg.command, Flags::empty()).header_len()
    } else {
        64 + crate::wire::align64(msg.ext.len())
    };
    let needed = header + crate::wire::align64(msg.aux.len());
    let (available, kept) = pump::open_room(conn);
    // A frame too large to ever leave the room may use it (else it would wait forever).
    let fits_ever = needed + kept <= conn.max_app_frame();
    if available < needed && fits_ever {
        return Err(NodeError::Link(crate::link::SendError::WouldBlock {
            needed,
            available,
        }));
    }
    Ok(())
}

/// A leaf on a small MCU whose one link runs the reliable session: the link is a
/// [`ReliableMcuConnection`](crate::link::ReliableMcuConnection) (1 KiB aux, 2 KiB output
/// queue, a 12-frame 2 KiB retransmit window, 8 transactions per table), with room for 16
/// spans, 4 relays and 4 routed transactions. 20,960 bytes on x86_64 (less on 32-bit MCUs;
/// a compile-time check keeps it under 24 KiB).
/// Offer the session with [`LinkConfig::session`] in [`add_link`](Node::add_link); against a
/// peer that does not offer it the link is plain DMSG.
pub type ReliableMcuLeaf = Node<
    1,
    16,
    4,
    4,
    { 8 * 64 + 1024 },
    1024,
    2048,
    8,
    crate::crc::SoftCrc32c1,
    crate::link::Reliable<crate::crc::SoftCrc32c1, 12, 2048, 0, 0>,
>;

/// A hub on a host whose links run the reliable session: 16 links, each a
/// [`ReliableHostConnection`](crate::link::ReliableHostConnection) (64 KiB aux, 256
/// transactions per table, a 64-frame window of four maximal frames), with room for 1,024
/// spans, 2,048 relays and 512 routed transactions. 9,688,456 bytes (x86_64): `Box` it, and
/// call `Box::new(ReliableHostHub::new(..))` on a thread whose stack can hold it for a moment
/// (`new` returns it by value; e.g. `std::thread::Builder::stack_size(32 << 20)`).
pub type ReliableHostHub = Node<
    16,
    1024,
    2048,
    512,
    { 32 * 64 + 65536 },
    65536,
    { 2 * (32 * 64 + 65536) },
    256,
    DefaultCrc,
    crate::link::Reliable<DefaultCrc, 64, { 4 * (32 * 64 + 65536) }, 0, 0>,
>;

// The MCU leaf stays within its budget on every target.
const _: () = assert!(core::mem::size_of::<ReliableMcuLeaf>() < 24 * 1024);

/// Bytes to write to one link's transport, from [`Node::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub struct Transmit {
    /// The link.
    pub link: LinkId,
    /// How many bytes of the buffer.
    pub len: usize,
}

/// A DMSG node: several links and the cluster layer over them. See the [module
/// docs](self) for the drive contract and memory costs.
///
/// - `LINKS`: links at once (1 for a leaf).
/// - `SPANS`: spans held (received and our own).
/// - `RELAYS`: relayed LNK_SPANs we keep open.
/// - `ROUTES`: routed transactions (through us, or ours over circuits).
/// - `RX`, `AUX`, `TX`, `TXNS`, `C`: each link's [`Connection`] parameters.
/// - `S`: each link's session storage: [`NoSession`] (plain DMSG, zero bytes) or
///   [`Reliable`](crate::link::Reliable) (see [Reliable sessions](self#reliable-sessions)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node<
    const LINKS: usize,
    const SPANS: usize,
    const RELAYS: usize,
    const ROUTES: usize,
    const RX: usize,
    const AUX: usize,
    const TX: usize,
    const TXNS: usize,
    C = DefaultCrc,
    S = NoSession,
> {
    config: NodeConfig,
    now: Instant,
    slots: [Option<LinkSlot<RX, AUX, TX, TXNS, C, S>>; LINKS],
    gens: [u16; LINKS],
    spans: SpanTable<SPANS>,
    next_local: u64,
    relays: RelayTable<RELAYS>,
    routes: RouteTable<ROUTES>,
    reach: ReachSet<SPANS>,
    dirty: Dirty,
    notices: NoticeQueue,
    cursor: usize,
    /// Something may be possible now that was not: run [`Node::progress`].
    work: bool,
    /// Output drained or a transaction finished since the last progress: retry what waited.
    room_freed: bool,
    /// A relay was removed since the last progress (a plan blocked on a full relay table
    /// may go on).
    relay_room: bool,
    /// A plan was blocked by the full relay table.
    relay_full_blocked: bool,
    stats: NodeStats,
}

impl<
        const LINKS: usize,
        const SPANS: usize,
        const RELAYS: usize,
        const ROUTES: usize,
        const RX: usize,
        const AUX: usize,
        const TX: usize,
        const TXNS: usize,
        C: Crc32c + Clone,
        S: SessionSlot<C>,
    > Node<LINKS, SPANS, RELAYS, ROUTES, RX, AUX, TX, TXNS, C, S>
{
    /// Compile-time checks of the bounds.
    const LAYOUT: () = {
        assert!(LINKS >= 1 && LINKS < 0x7FFF, "LINKS must be 1..32767");
        assert!(SPANS < u32::MAX as usize && RELAYS < u32::MAX as usize);
    };

    /// A node with no links.
    pub fn new(config: NodeConfig) -> Self {
        let () = Self::LAYOUT;
        Node {
            config,
            now: Instant::ZERO,
            slots: [const { None }; LINKS],
            gens: [0; LINKS],
            spans: SpanTable::new(),
            next_local: 1,
            relays: RelayTable::new(),
            routes: RouteTable::new(),
            reach: ReachSet::new(),
            dirty: Dirty::new(),
            notices: NoticeQueue::new(),
            cursor: 0,
            work: false,
            room_freed: false,
            relay_room: false,
            relay_full_blocked: false,
            stats: NodeStats::default(),
        }
    }

    // ----------------------------------------------------------------------------------
    // Links

    /// Adds a link on a freshly connected transport: its LNK_CONN is queued at once and
    /// [`NodeEvent::LinkUp`] reported. With [`LinkConfig::session`] set (a node with session
    /// storage, `S` = [`Reliable`](crate::link::Reliable)) the link offers the reliable
    /// session; its identity must be fresh (random, never reused). Errors:
    /// [`NodeError::LinksFull`], [`NodeError::Config`] (also for a session on a node without
    /// session storage), [`NodeError::SessionIdInUse`].
    pub fn add_link(&mut self, now: Instant, config: &LinkConfig) -> Result<LinkId, NodeError>
    where
        C: Default,
    {
        self.now = now;
        let i = self
            .slots
            .iter()
            .position(|s| s.is_none())
            .ok_or(NodeError::LinksFull)?;
        if let Some(offer) = config.session {
            // Our identity names the link when the peer resumes: it must be unique.
            let taken = self
                .slots
                .iter()
                .flatten()
                .any(|s| !s.down && s.conn.session_id_any() == Some(offer.id));
            if taken {
                return Err(NodeError::SessionIdInUse(offer.id));
            }
        }
        let conn = Connection::new(now, config, C::default()).map_err(NodeError::Config)?;
        // Ids: slot + LINKS * generation, so a reused slot gets a new id, and id % LINKS
        // finds the slot. Never LinkId::LOCAL.
        let max_gen = ((0xFFFE - i) / LINKS) as u16;
        let gen = if self.gens[i] > max_gen {
            0
        } else {
            self.gens[i]
        };
        self.gens[i] = gen.wrapping_add(1);
        let id = LinkId((i + LINKS * gen as usize) as u16);
        self.slots[i] = Some(LinkSlot {
            id,
            conn,
            stats: LinkNodeStats::default(),
            shell: None,
            app: None,
            stalled: false,
            active: true,
            down: false,
            discard_app: false,
            plan_blocked: false,
            room: false,
            closing_seen: false,
        });
        self.work = true;
        Ok(id)
    }

    /// Drops a link now (the application is done with it): its pending frame for the
    /// application is discarded, it is closed with LOSTLINK if still open, and its slot is
    /// freed once its [`NodeEvent::LinkDown`] was queued. Error: [`NodeError::UnknownLink`].
    pub fn remove_link(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError> {
        self.now = now;
        let slot = self.slot_mut(link).ok_or(NodeError::UnknownLink(link))?;
        slot.discard_app = true;
        // With a reliable session: aborted (the peer gets RESET if a transport is up), not
        // merely suspended.
        slot.conn.abandon_any(now);
        slot.active = true;
        if slot.app.take().is_some() {
            // The frame the application did not take yet.
            let _ = slot.conn.poll_event();
        }
        self.work = true;
        self.progress();
        Ok(())
    }

    /// Starts a clean shutdown of a link (LNK_CONN DELETEs both ways; see
    /// [`Connection::close`]).
    pub fn close_link(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError> {
        self.now = now;
        let slot = self.slot_mut(link).ok_or(NodeError::UnknownLink(link))?;
        slot.conn.close(now)?;
        slot.active = true;
        self.work = true;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Inputs

    /// Feeds bytes received on `link`; returns how many were used. Feed the rest again after
    /// draining [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event)
    /// (see the drive contract). Bytes for an unknown (removed) link are discarded: the
    /// return is `input.len()`. A link with a reliable session whose next frame waits for
    /// room elsewhere reads on (taking the peer's acks, refusing its frames, which the peer
    /// sends again) instead of leaving the input unread.
    #[must_use = "unused input must be fed again after draining transmit and events"]
    pub fn handle_input(&mut self, now: Instant, link: LinkId, input: &[u8]) -> usize {
        self.now = now;
        let Some(i) = self.slot_index(link) else {
            return input.len();
        };
        let mut used = 0;
        let mut stuck = false;
        loop {
            let Some(slot) = self.slots.get_mut(i).and_then(|s| s.as_mut()) else {
                return input.len();
            };
            let room = slot.conn.send_capacity();
            let rest = input.get(used..).unwrap_or(&[]);
            let mut n = slot.conn.handle_input(now, rest);
            if n == 0 && slot.stalled {
                // The link's next frame waits for room elsewhere, which may wait for acks
                // in this very stream (two reliable links each waiting to forward into the
                // other): a session reads on, refusing frames but taking acks.
                n = slot.conn.handle_input_stalled(now, rest);
            }
            slot.active = true;
            if slot.conn.send_capacity() > room {
                // A session's acks freed its retransmit window: what waited for room on
                // this link may go on.
                slot.room = true;
                self.room_freed = true;
            }
            used += n;
            self.work = true;
            self.progress();
            if used >= input.len() {
                return input.len();
            }
            if n == 0 {
                // The link waits for an event to be taken; taking it (above) may have
                // opened the gate: try once more, then leave the rest to the caller.
                if stuck {
                    return used;
                }
                stuck = true;
            } else {
                stuck = false;
            }
        }
    }

    /// The transport of `link` is gone (EOF, reset). On a plain link (or one whose session
    /// was not negotiated yet) the link closes: every transaction on it ends with LOSTLINK,
    /// its spans and relays go away, and [`NodeEvent::LinkDown`] follows. On a link with an
    /// established reliable session the link is only suspended
    /// ([`NodeEvent::LinkSuspended`]): everything on it is kept until
    /// [`handle_reconnect`](Self::handle_reconnect) brings a new transport, or the grace
    /// period runs out (then `LinkDown`). Either way, drop what was left unread of the old
    /// transport, and report only the close of the link's *current* transport (after
    /// [`handle_reconnect`](Self::handle_reconnect), a late close of the old one would
    /// suspend the new one). Unknown links are ignored.
    pub fn handle_close(&mut self, now: Instant, link: LinkId) {
        self.now = now;
        if let Some(slot) = self.slot_mut(link) {
            // The grace period of a session starts now.
            slot.conn.note_time(now);
            slot.conn.handle_close();
            slot.active = true;
            self.work = true;
            self.progress();
        }
    }

    /// A new transport replaces the lost (or failing) one of `link`, whose reliable session
    /// is still alive. The connecting side calls this after it dialled again; the accepting
    /// side after [`find_session`](Self::find_session) named the link for a stream that
    /// starts with a RESUME. Then feed the new stream's bytes with
    /// [`handle_input`](Self::handle_input) from its first byte (on the accepting side,
    /// including the RESUME itself) and write what [`poll_transmit`](Self::poll_transmit)
    /// gives to the new transport; anything unread from the old one is dropped. The session
    /// sends RESUME (or RESUME_OK), then every frame the peer has not acknowledged;
    /// [`NodeEvent::LinkResumed`] follows when the peer answers. A transport that was not
    /// reported lost is given up first ([`NodeEvent::LinkSuspended`]).
    ///
    /// Errors: [`NodeError::UnknownLink`]; [`NodeError::Reconnect`] with
    /// [`ReconnectError::NoSession`](crate::link::ReconnectError::NoSession) when the link
    /// runs no session (a plain node, a plain peer, or not negotiated yet: the old transport
    /// ended the link) or [`ReconnectError::Closed`](crate::link::ReconnectError::Closed)
    /// when the link is already closed (its session died): drop the new transport (on the
    /// accepting side, after a [stateless RESET](crate::link::StreamStart::stateless_reset)),
    /// and on the connecting side start over with [`add_link`](Self::add_link).
    pub fn handle_reconnect(&mut self, now: Instant, link: LinkId) -> Result<(), NodeError> {
        self.now = now;
        let slot = self.slot_mut(link).ok_or(NodeError::UnknownLink(link))?;
        let room = slot.conn.send_capacity();
        let res = slot.conn.reconnect_any(now);
        if slot.conn.send_capacity() > room {
            slot.room = true;
            self.room_freed = true;
        }
        self.work = true;
        self.progress();
        res.map_err(NodeError::Reconnect)
    }

    /// The link that holds the reliable session a new inbound stream wants to resume, by our
    /// session identity on it (its [`LinkConfig::session`] id). `None` when no link runs a
    /// live session with that identity. Plain links never match.
    ///
    /// The driver of an accepting node routes every new inbound stream this way:
    ///
    /// 1. read until it has 64 bytes (or the stream ends) and classify them with
    ///    [`classify_stream`](crate::link::classify_stream), consuming nothing;
    /// 2. [`StreamStart::Resume(frame)`](crate::link::StreamStart::Resume): the RESUME's
    ///    `frame.receiver_id` is **our** identity on the link it belongs to (its
    ///    `frame.sender_id` is the peer's). If `find_session(frame.receiver_id)` names a link,
    ///    call [`handle_reconnect`](Self::handle_reconnect) on it, close the link's old
    ///    socket (drop its unread bytes) and feed the new stream from its first byte with
    ///    [`handle_input`](Self::handle_input). If no link matches (or `handle_reconnect`
    ///    fails), write [`StreamStart::stateless_reset`](crate::link::StreamStart::stateless_reset)
    ///    to the stream and close it: the peer's session dies at once instead of after its
    ///    grace period;
    /// 3. [`StreamStart::Fresh`](crate::link::StreamStart::Fresh): a new link:
    ///    [`add_link`](Self::add_link) (with a fresh session identity) and feed it the stream;
    /// 4. [`StreamStart::Invalid`](crate::link::StreamStart::Invalid): close the stream;
    ///    [`StreamStart::NeedMore`](crate::link::StreamStart::NeedMore): read more.
    ///
    /// [`find_resume`](Self::find_resume) checks the peer's identity too.
    ///
    /// ```
    /// use dmsg_core::link::{
    ///     classify_stream, LinkConfig, Reliable, SessionOffer, StreamStart,
    /// };
    /// use dmsg_core::crc::DefaultCrc;
    /// use dmsg_core::node::{Node, NodeEvent};
    /// use dmsg_core::span::LinkId;
    /// use dmsg_core::time::{Duration, Instant};
    ///
    /// // Small nodes with a 16-frame, 8 KiB retransmit window per link.
    /// type N = Node<4, 16, 16, 8, { 8 * 64 + 1024 }, 1024, 4096, 16, DefaultCrc,
    ///               Reliable<DefaultCrc, 16, 8192, 0, 0>>;
    /// fn config(id: u64) -> LinkConfig {
    ///     LinkConfig { session: Some(SessionOffer::new(id)), ..LinkConfig::default() }
    /// }
    /// /// Moves bytes from one node to the other; true if any moved.
    /// fn carry(now: Instant, from: &mut N, lf: LinkId, to: &mut N, lt: LinkId) -> bool {
    ///     let mut buf = [0u8; 4096];
    ///     let mut busy = false;
    ///     while let Some(t) = from.poll_transmit(now, Some(lf), &mut buf) {
    ///         assert_eq!(to.handle_input(now, lt, &buf[..t.len]), t.len);
    ///         busy = true;
    ///     }
    ///     busy
    /// }
    /// /// Moves bytes both ways and takes events until nothing moves.
    /// fn pump(now: Instant, a: &mut N, la: LinkId, b: &mut N, lb: LinkId, log: &mut Vec<String>) {
    ///     loop {
    ///         let mut busy = carry(now, a, la, b, lb);
    ///         busy |= carry(now, b, lb, a, la);
    ///         for n in [&mut *a, &mut *b] {
    ///             while let Some(ev) = n.poll_event() {
    ///                 log.push(format!("{ev:?}"));
    ///                 busy = true;
    ///             }
    ///         }
    ///         if !busy { break; }
    ///     }
    /// }
    ///
    /// let mut now = Instant::ZERO;
    /// let (mut hub, mut leaf) = (N::new(Default::default()), N::new(Default::default()));
    /// let mut log = Vec::new();
    /// // The leaf dials; the hub accepts a stream that starts with a LNK_CONN: a new link.
    /// let l = leaf.add_link(now, &config(0x1EAF)).unwrap();
    /// let mut first = [0u8; 4096];
    /// let t = leaf.poll_transmit(now, Some(l), &mut first).unwrap();
    /// let crc = DefaultCrc::default();
    /// assert_eq!(classify_stream(&crc, &first[..t.len]), StreamStart::Fresh);
    /// let h = hub.add_link(now, &config(0xB0B)).unwrap();
    /// assert_eq!(hub.handle_input(now, h, &first[..t.len]), t.len);
    /// pump(now, &mut hub, h, &mut leaf, l, &mut log);
    /// assert!(leaf.link(l).unwrap().session_running());
    ///
    /// // The TCP connection breaks: both sides suspend; nothing is torn down.
    /// now = now + Duration::from_millis(100);
    /// leaf.handle_close(now, l);
    /// hub.handle_close(now, h);
    /// pump(now, &mut hub, h, &mut leaf, l, &mut log);
    /// assert!(log.iter().any(|e| e.starts_with("LinkSuspended")));
    /// assert!(!log.iter().any(|e| e.starts_with("LinkDown")));
    ///
    /// // The leaf dials again; its first frame on the new stream is a RESUME.
    /// leaf.handle_reconnect(now, l).unwrap();
    /// let t = leaf.poll_transmit(now, Some(l), &mut first).unwrap();
    /// // The hub's accept loop: classify, find the session, reconnect, feed.
    /// match classify_stream(&crc, &first[..t.len]) {
    ///     StreamStart::Resume(frame) => match hub.find_session(frame.receiver_id) {
    ///         Some(link) => {
    ///             assert_eq!(link, h);
    ///             hub.handle_reconnect(now, link).unwrap();
    ///             assert_eq!(hub.handle_input(now, link, &first[..t.len]), t.len);
    ///         }
    ///         None => {
    ///             let mut reset = [0u8; 64];
    ///             let n = StreamStart::Resume(frame).stateless_reset(&crc, &mut reset).unwrap();
    ///             // write reset[..n] to the stream, then close it
    ///             # let _ = n;
    ///         }
    ///     },
    ///     StreamStart::Fresh => { /* hub.add_link(..) and feed it the stream */ }
    ///     StreamStart::NeedMore => { /* read more */ }
    ///     StreamStart::Invalid => { /* close the stream */ }
    /// }
    /// pump(now, &mut hub, h, &mut leaf, l, &mut log);
    /// assert_eq!(log.iter().filter(|e| e.starts_with("LinkResumed")).count(), 2);
    /// assert_eq!(hub.reliable_stats(h).unwrap().resumes, 1);
    ///
    /// // A RESUME for a session nobody holds (say, from before the hub restarted).
    /// assert_eq!(hub.find_session(0xDEAD), None);
    /// ```
    pub fn find_session(&self, session_id: u64) -> Option<LinkId> {
        self.slots
            .iter()
            .flatten()
            .find(|s| {
                !s.down
                    && s.conn
                        .live_session_ids()
                        .is_some_and(|(ours, _)| ours == session_id)
            })
            .map(|s| s.id)
    }

    /// Like [`find_session`](Self::find_session), but checks both identities a RESUME
    /// carries: the link whose session is ours `frame.receiver_id` with the peer
    /// `frame.sender_id`. A RESUME from someone else (a peer that restarted and kept our
    /// identity, a stray stream) names no link and gets the stateless RESET.
    pub fn find_resume(&self, frame: &ControlFrame) -> Option<LinkId> {
        self.slots
            .iter()
            .flatten()
            .find(|s| {
                !s.down && s.conn.live_session_ids() == Some((frame.receiver_id, frame.sender_id))
            })
            .map(|s| s.id)
    }

    /// True while `link`'s transport is lost and its session waits for a new one (between
    /// [`NodeEvent::LinkSuspended`] and [`handle_reconnect`](Self::handle_reconnect)).
    /// Always false for a plain link.
    pub fn is_suspended(&self, link: LinkId) -> bool {
        self.slot(link)
            .is_some_and(|s| s.conn.transport_suspended())
    }

    /// The counters of `link` around its reliable session (transports lost, reconnects,
    /// resumes); `None` for an unknown link or a node without session storage. They count
    /// while the session runs; a link whose peer did not offer it has zeros.
    pub fn reliable_stats(&self, link: LinkId) -> Option<ReliableStats> {
        self.slot(link).and_then(|s| s.conn.reliable_stats_any())
    }

    /// Frames in `link`'s retransmit window the peer has not acknowledged yet (0 for a plain
    /// link or an unknown one). A driver that wants to know everything it sent arrived (before
    /// a shutdown, in a test) waits for 0.
    pub fn unacked_frames(&self, link: LinkId) -> usize {
        self.slot(link).map_or(0, |s| s.conn.unacked_frames())
    }

    /// The counters of `link`'s session itself (frames sent, retransmitted, acked, busy
    /// refusals, resumes...); `None` for an unknown link or a node without session storage.
    pub fn session_stats(&self, link: LinkId) -> Option<SessionStats> {
        self.slot(link).and_then(|s| s.conn.session_stats_any())
    }

    /// Advances every link's timers (keepalive, idle timeout, close timeout; with a reliable
    /// session also retransmission, delayed acks and the grace period of a suspended link).
    /// Calling it early, late or repeatedly is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        for slot in self.slots.iter_mut().flatten() {
            if slot.conn.poll_timeout().is_some_and(|t| t <= now) {
                let room = slot.conn.send_capacity();
                slot.conn.handle_timeout(now);
                slot.active = true;
                self.work = true;
                if slot.conn.send_capacity() > room {
                    slot.room = true;
                    self.room_freed = true;
                }
            }
        }
        self.progress();
    }

    // ----------------------------------------------------------------------------------
    // Outputs

    /// Copies queued bytes of `link` (or of any link, with `None`) into `buf`. Call until
    /// it returns `None` after every input.
    #[must_use = "the returned bytes must be written to the link's transport"]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        link: Option<LinkId>,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        self.now = now;
        if self.work {
            self.progress();
        }
        let i = match link {
            Some(l) => self.slot_index(l)?,
            None => {
                let found = (0..LINKS).map(|k| (self.cursor + k) % LINKS).find(|&k| {
                    self.slots[k]
                        .as_ref()
                        .is_some_and(|s| s.conn.pending_transmit() > 0)
                })?;
                self.cursor = (found + 1) % LINKS;
                found
            }
        };
        let slot = self.slots.get_mut(i)?.as_mut()?;
        let n = slot.conn.poll_transmit(now, buf);
        if n == 0 {
            return None;
        }
        slot.room = true;
        self.work = true;
        self.room_freed = true;
        Some(Transmit {
            link: slot.id,
            len: n,
        })
    }

    /// The next event. Frame events borrow the node until the next call. Call until `None`
    /// after every input.
    #[must_use = "events must be handled"]
    pub fn poll_event(&mut self) -> Option<NodeEvent<'_>> {
        if self.work {
            self.progress();
        }
        if let Some(n) = self.notices.pop() {
            self.work = true; // room in the queue: links may go on
            return Some(self.notice_event(n));
        }
        let i = (0..LINKS)
            .map(|k| (self.cursor + k) % LINKS)
            .find(|&k| self.slots[k].as_ref().is_some_and(|s| s.app.is_some()))?;
        self.cursor = (i + 1) % LINKS;
        self.work = true;
        let slot = self.slots.get_mut(i)?.as_mut()?;
        // A reliable link reports a transport change ahead of a frame that waits: report it
        // now, the frame stays for the next call.
        match slot.conn.peek_event() {
            Some(Event::Suspended { .. }) => {
                let _ = slot.conn.poll_event();
                return Some(NodeEvent::LinkSuspended { link: slot.id });
            }
            Some(Event::Resumed { .. }) => {
                let _ = slot.conn.poll_event();
                return Some(NodeEvent::LinkResumed { link: slot.id });
            }
            _ => {}
        }
        let kind = slot.app.take()?;
        slot.active = true;
        let link = slot.id;
        match (kind, slot.conn.poll_event()) {
            (AppPending::Opened(via), Some(Event::Opened { txn, msg })) => {
                Some(NodeEvent::Opened {
                    txn: NodeTxn { link, txn },
                    via,
                    msg,
                })
            }
            (AppPending::Message, Some(Event::Message { txn, msg })) => Some(NodeEvent::Message {
                txn: NodeTxn { link, txn },
                msg,
            }),
            (AppPending::OneWay(via), Some(Event::OneWay { msg })) => {
                Some(NodeEvent::OneWay { link, via, msg })
            }
            _ => {
                // The link's next event was the frame when it was marked; nothing can come
                // before it. Not reachable; the event is dropped.
                debug_assert!(false, "application frame out of order");
                None
            }
        }
    }

    fn notice_event(&self, n: Notice) -> NodeEvent<'_> {
        match n {
            Notice::LinkUp(link) => NodeEvent::LinkUp { link },
            Notice::PeerConn(link) => match self.slot(link).and_then(|s| s.conn.peer_conn()) {
                Some(conn) => NodeEvent::PeerConn { link, conn },
                None => NodeEvent::LinkUp { link },
            },
            Notice::LinkDown(link, reason) => NodeEvent::LinkDown { link, reason },
            Notice::LinkSuspended(link) => NodeEvent::LinkSuspended { link },
            Notice::LinkResumed(link) => NodeEvent::LinkResumed { link },
            Notice::Reachable(node, dist) => NodeEvent::Reachable { node, dist },
            Notice::Unreachable(node) => NodeEvent::Unreachable { node },
            Notice::Closed(txn, error, end) => NodeEvent::Closed { txn, error, end },
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next (the earliest
    /// timer of any link); `None` with no open link.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| s.conn.poll_timeout())
            .min()
    }

    // ----------------------------------------------------------------------------------
    // The engine

    /// Does everything that can be done now: takes link events, sends owed aborts, shell
    /// output and planned relays, reports reachability, frees finished links. Each step
    /// consumes finite work, so this ends.
    fn progress(&mut self) {
        self.work = false;
        loop {
            let mut did = self.pump_all();
            did |= self.run_kills();
            did |= self.run_shell();
            did |= self.run_closing();
            did |= self.run_plan();
            did |= self.run_reach();
            did |= self.free_slots();
            if did {
                // What was just sent or taken may let a waiting link go on.
                self.room_freed = true;
                continue;
            }
            break;
        }
        if self.room_freed {
            for s in self.slots.iter_mut().flatten() {
                s.room = false;
            }
        }
        self.room_freed = false;
        self.relay_room = false;
    }

    /// Links that started a clean shutdown (ours or the peer's LNK_CONN DELETE) leave the
    /// relay plan: every node is planned again, so the relays on them are closed and the
    /// shutdown can finish instead of waiting for its timeout.
    fn run_closing(&mut self) -> bool {
        let mut any = false;
        for s in self.slots.iter_mut().flatten() {
            if !s.closing_seen && s.conn.state() == crate::link::LinkState::Closing {
                s.closing_seen = true;
                any = true;
            }
        }
        if any {
            self.dirty.mark_all_plans();
        }
        any
    }

    /// Frees the slots of links that are down and drained.
    fn free_slots(&mut self) -> bool {
        let mut did = false;
        for s in self.slots.iter_mut() {
            let done = s.as_ref().is_some_and(|x| {
                x.down && x.app.is_none() && x.conn.pending_transmit() == 0 && !x.active
            });
            if done {
                *s = None;
                did = true;
            }
        }
        did
    }

    pub(crate) fn slot_index(&self, id: LinkId) -> Option<usize> {
        let i = id.0 as usize % LINKS;
        match self.slots.get(i).and_then(|s| s.as_ref()) {
            Some(s) if s.id == id => Some(i),
            _ => None,
        }
    }

    fn slot(&self, id: LinkId) -> Option<&LinkSlot<RX, AUX, TX, TXNS, C, S>> {
        self.slots.get(self.slot_index(id)?)?.as_ref()
    }

    pub(crate) fn slot_mut(
        &mut self,
        id: LinkId,
    ) -> Option<&mut LinkSlot<RX, AUX, TX, TXNS, C, S>> {
        let i = self.slot_index(id)?;
        let s = self.slots.get_mut(i)?.as_mut()?;
        s.active = true;
        Some(s)
    }

    // ----------------------------------------------------------------------------------
    // Commands

    /// Advertises a span of our own (e.g. a leaf advertising itself) on every link whose
    /// peer sent LNK_CONN, at the span's own `dist` (normally 0).
    pub fn advertise(&mut self, span: SpanRepr) -> Result<LocalSpan, NodeError> {
        let key = SpanKey {
            via: LinkId::LOCAL,
            msgid: MsgId(self.next_local),
        };
        self.spans
            .insert(key, span)
            .map_err(|_| NodeError::SpansFull)?;
        self.next_local += 1;
        self.dirty.mark(NodeAddr {
            peer_id: span.peer_id,
            pfs_id: span.pfs_id,
        });
        self.work = true;
        Ok(LocalSpan(key.msgid))
    }

    /// Withdraws a span of our own: its relays are closed.
    pub fn withdraw(&mut self, span: LocalSpan) -> Result<(), NodeError> {
        let e = self
            .spans
            .remove(SpanKey {
                via: LinkId::LOCAL,
                msgid: span.0,
            })
            .map_err(|_| NodeError::UnknownSpan)?;
        self.dirty.mark(NodeAddr {
            peer_id: e.span.peer_id,
            pfs_id: e.span.pfs_id,
        });
        self.work = true;
        Ok(())
    }

    /// The best known way to `node`: the link its best span came in on, and that span's
    /// advertised distance. `None` when it is not reachable.
    pub fn route_to(&self, node: &NodeAddr) -> Option<(LinkId, u32)> {
        self.spans
            .best_remote(&node.peer_id, &node.pfs_id)
            .map(|e| (e.key.via, e.advertised_dist()))
    }

    /// Opens a transaction to the remote node `to`, over the span that leads to it (the
    /// circuit is that LNK_SPAN; relays forward it hop by hop). `flags` as for
    /// [`Connection::open`] (DELETE for a one-frame request). If the route is lost the
    /// transaction is closed with LOSTLINK; if a relay has no such circuit, with CANTCIRC.
    pub fn open(
        &mut self,
        now: Instant,
        to: NodeAddr,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<NodeTxn, NodeError> {
        self.now = now;
        let e = *self
            .spans
            .best_remote(&to.peer_id, &to.pfs_id)
            .ok_or(NodeError::Unreachable)?;
        if self.routes.is_full() {
            return Err(NodeError::RoutesFull);
        }
        let link = e.key.via;
        let slot = self.slot_mut(link).ok_or(NodeError::Unreachable)?;
        let circuit = slot
            .conn
            .txn_handle(Side::Theirs, e.key.msgid)
            .ok_or(NodeError::Unreachable)?;
        room_for_open(&slot.conn, msg)?;
        let txn = slot.conn.open(now, msg, flags, Some(circuit))?;
        slot.conn.set_txn_tag(txn, tag::APP_ROUTED);
        let ok = self.routes.insert(Route {
            ends: [
                Some(RouteEnd {
                    link,
                    txn,
                    circuit,
                    closed: false,
                    kill: false,
                }),
                None,
            ],
            dying: false,
        });
        debug_assert!(ok, "checked is_full");
        self.stats.routes_app += 1;
        self.stats.routes_high_water = self.stats.routes_high_water.max(self.routes.len() as u64);
        self.work = true;
        Ok(NodeTxn { link, txn })
    }

    /// Opens a transaction directly with the peer of `link` (circuit 0), or stacked on one
    /// of our transactions on that link (`parent`).
    pub fn open_on(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &Outgoing<'_>,
        flags: Flags,
        parent: Option<NodeTxn>,
    ) -> Result<NodeTxn, NodeError> {
        self.now = now;
        if let Some(p) = parent {
            self.check_app(p)?;
            if p.link != link {
                return Err(NodeError::UnknownLink(p.link));
            }
            if self.routes.is_full() {
                return Err(NodeError::RoutesFull);
            }
        }
        let slot = self.slot_mut(link).ok_or(NodeError::UnknownLink(link))?;
        room_for_open(&slot.conn, msg)?;
        let txn = slot.conn.open(now, msg, flags, parent.map(|p| p.txn))?;
        match parent {
            None => {
                slot.conn.set_txn_tag(txn, tag::APP);
            }
            Some(p) => {
                slot.conn.set_txn_tag(txn, tag::APP_ROUTED);
                let ok = self.routes.insert(Route {
                    ends: [
                        Some(RouteEnd {
                            link,
                            txn,
                            circuit: p.txn,
                            closed: false,
                            kill: false,
                        }),
                        None,
                    ],
                    dying: false,
                });
                debug_assert!(ok, "checked is_full");
            }
        }
        self.work = true;
        Ok(NodeTxn { link, txn })
    }

    fn check_app(&self, t: NodeTxn) -> Result<(), NodeError> {
        let slot = self.slot(t.link).ok_or(NodeError::UnknownLink(t.link))?;
        match slot.conn.txn_tag(t.txn) {
            Some(tag::APP | tag::APP_ROUTED | tag::NONE) => Ok(()),
            Some(_) => Err(NodeError::NotApplication(t)),
            None => Err(NodeError::Link(crate::link::SendError::UnknownTxn(t.txn))),
        }
    }

    /// Sends `msg` in one of our transactions (see [`Connection::send`]).
    pub fn send(
        &mut self,
        now: Instant,
        txn: NodeTxn,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), NodeError> {
        self.now = now;
        self.check_app(txn)?;
        let slot = self
            .slot_mut(txn.link)
            .ok_or(NodeError::UnknownLink(txn.link))?;
        slot.conn.send(now, txn.txn, msg, flags)?;
        self.work = true;
        Ok(())
    }

    /// Answers and closes our direction with `error` (see [`Connection::reply`]).
    pub fn reply(&mut self, now: Instant, txn: NodeTxn, error: u32) -> Result<(), NodeError> {
        self.now = now;
        self.check_app(txn)?;
        let slot = self
            .slot_mut(txn.link)
            .ok_or(NodeError::UnknownLink(txn.link))?;
        slot.conn.reply(now, txn.txn, error)?;
        self.work = true;
        Ok(())
    }

    /// Closes our direction (LNK_ERROR|DELETE, error 0).
    pub fn delete(&mut self, now: Instant, txn: NodeTxn) -> Result<(), NodeError> {
        self.reply(now, txn, 0)
    }

    /// Aborts one of our transactions (LNK_ERROR|ABORT|DELETE).
    pub fn abort(&mut self, now: Instant, txn: NodeTxn) -> Result<(), NodeError> {
        self.now = now;
        self.check_app(txn)?;
        let slot = self
            .slot_mut(txn.link)
            .ok_or(NodeError::UnknownLink(txn.link))?;
        slot.conn.abort(now, txn.txn)?;
        self.work = true;
        Ok(())
    }

    /// Sends a one-way message to the peer of `link` (`reply` sets REPLY).
    pub fn send_one_way(
        &mut self,
        now: Instant,
        link: LinkId,
        msg: &Outgoing<'_>,
        reply: bool,
    ) -> Result<(), NodeError> {
        self.now = now;
        let slot = self.slot_mut(link).ok_or(NodeError::UnknownLink(link))?;
        room_for_open(&slot.conn, msg)?;
        slot.conn.send_one_way(now, msg, reply, None)?;
        self.work = true;
        Ok(())
    }

    /// Sends a one-way message to the remote node `to` over the span that leads to it
    /// (relays forward one-way frames towards the node that advertised the span).
    pub fn send_one_way_to(
        &mut self,
        now: Instant,
        to: NodeAddr,
        msg: &Outgoing<'_>,
    ) -> Result<(), NodeError> {
        self.now = now;
        let e = *self
            .spans
            .best_remote(&to.peer_id, &to.pfs_id)
            .ok_or(NodeError::Unreachable)?;
        let slot = self.slot_mut(e.key.via).ok_or(NodeError::Unreachable)?;
        let circuit = slot
            .conn
            .txn_handle(Side::Theirs, e.key.msgid)
            .ok_or(NodeError::Unreachable)?;
        room_for_open(&slot.conn, msg)?;
        slot.conn.send_one_way(now, msg, false, Some(circuit))?;
        self.work = true;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Queries

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The span database.
    pub fn spans(&self) -> &SpanTable<SPANS> {
        &self.spans
    }

    /// The relays (LNK_SPANs we keep open on other links).
    pub fn relays(&self) -> &[Relay] {
        self.relays.all()
    }

    /// The routed transactions (through us, or ours over circuits).
    pub fn routes(&self) -> &[Route] {
        self.routes.all()
    }

    /// Counters of the node.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The ids of the links in use.
    pub fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.slots.iter().flatten().map(|s| s.id)
    }

    /// A link's connection (state, peer LNK_CONN, counters, transactions).
    pub fn link(&self, link: LinkId) -> Option<&Connection<RX, AUX, TX, TXNS, C, S>> {
        self.slot(link).map(|s| &s.conn)
    }

    /// A link's counters of the cluster layer.
    pub fn link_stats(&self, link: LinkId) -> Option<&LinkNodeStats> {
        self.slot(link).map(|s| &s.stats)
    }

    /// True when the node has work it is waiting to do: relays to plan or retry, aborts or
    /// shell output owed, reachability to report, or a link whose next frame waits for
    /// room. A quiet network with this false has converged.
    pub fn has_pending_work(&self) -> bool {
        self.dirty.has_plan_work()
            || self.dirty.has_reach_work()
            || self
                .routes
                .all()
                .iter()
                .any(|r| r.ends.iter().flatten().any(|e| e.kill))
            || self
                .slots
                .iter()
                .flatten()
                .any(|s| s.shell.is_some() || s.stalled)
    }
}
