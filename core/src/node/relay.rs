//! Relays: the LNK_SPAN transactions we open to advertise spans on other links, and the
//! planning loop that keeps them equal to what [`SpanTable::plan_node`] wants.
//!
//! A relay is `Open` (wanted, our LNK_SPAN open), `Refused` (the peer closed it while we
//! wanted it, e.g. its table was full: we closed ours too and do not reopen it until the
//! plan stops wanting it, so a refusal cannot turn into an open/refuse loop) or `Closing`
//! (we sent DELETE; the record stays until the link reports the transaction closed, so a
//! CREATE racing our DELETE over that circuit is answered CANTCIRC, never misrouted).
//!
//! Planning is per node: every change to a node's spans (or to the set of connections)
//! marks it dirty, and the node's planning pass asks the span table for the difference and applies
//! what the links can take now. An open or close that finds no room (output queue, the
//! link's transaction table, the relay table) leaves the node dirty, and it is planned again
//! when a link's output drains or a transaction finishes; nothing is lost and nothing is
//! done twice, because planning is idempotent.
//!
//! [`SpanTable::plan_node`]: crate::span::SpanTable::plan_node

use crate::crc::Crc32c;
use crate::link::SessionSlot;
use crate::link::{Outgoing, SendError, TxnId};
use crate::span::{ConnFilter, LinkId, RelayAction, SpanKey};
use crate::wire::{Body, Cmd, Command, Flags, MsgId};

use super::pump::open_room;

use super::types::{tag, NodeAddr};
use super::Node;
use crate::link::index::{mix64, PosIndex};

/// Where a relay is in its life (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RelayState {
    /// Our LNK_SPAN is open and wanted.
    Open,
    /// The peer closed it while we wanted it; not reopened while the plan wants it.
    Refused,
    /// We sent DELETE and wait for the transaction to finish.
    Closing,
}

/// One relay: span `source` advertised on connection `conn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Relay {
    /// The connection it is open on.
    pub conn: LinkId,
    /// The span relayed.
    pub source: SpanKey,
    /// The node of that span.
    pub node: NodeAddr,
    /// Our LNK_SPAN transaction on `conn` (`None` once a refused relay finished).
    pub txn: Option<TxnId>,
    /// Its state.
    pub state: RelayState,
}

impl Relay {
    /// True while it counts as present for planning (open or refused).
    pub fn is_current(&self) -> bool {
        self.state != RelayState::Closing
    }
}

fn src_hash(conn: LinkId, source: SpanKey) -> u64 {
    mix64(source.msgid.0 ^ mix64(((conn.0 as u64) << 16) ^ source.via.0 as u64))
}

fn txn_hash(conn: LinkId, msgid: MsgId) -> u64 {
    mix64(msgid.0 ^ mix64(conn.0 as u64 ^ 0x7e1a))
}

fn node_hash(n: &NodeAddr) -> u64 {
    crate::span::node_hash(&n.peer_id, &n.pfs_id)
}

/// The relays, at most `N`, indexed by (connection, source), by (connection, msgid) and by
/// node. About `N * 120` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RelayTable<const N: usize> {
    items: heapless::Vec<Relay, N>,
    by_src: PosIndex<N>,
    by_txn: PosIndex<N>,
    by_node: PosIndex<N>,
}

impl<const N: usize> RelayTable<N> {
    pub const fn new() -> Self {
        RelayTable {
            items: heapless::Vec::new(),
            by_src: PosIndex::new(),
            by_txn: PosIndex::new(),
            by_node: PosIndex::new(),
        }
    }

    pub fn all(&self) -> &[Relay] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_full(&self) -> bool {
        self.items.is_full()
    }

    pub fn get(&self, p: usize) -> Option<&Relay> {
        self.items.get(p)
    }

    /// The current (not closing) relay of `source` on `conn`.
    pub fn find_src(&self, conn: LinkId, source: SpanKey) -> Option<usize> {
        self.by_src.find(src_hash(conn, source), |p| {
            self.items
                .get(p)
                .is_some_and(|r| r.conn == conn && r.source == source && r.is_current())
        })
    }

    /// The relay whose transaction is `msgid` on `conn`.
    pub fn find_txn(&self, conn: LinkId, msgid: MsgId) -> Option<usize> {
        self.by_txn.find(txn_hash(conn, msgid), |p| {
            self.items
                .get(p)
                .is_some_and(|r| r.conn == conn && r.txn.is_some_and(|t| t.msgid() == msgid))
        })
    }

    /// Positions of the relays of `node` (every state).
    pub fn of_node<'a>(&'a self, node: &'a NodeAddr) -> impl Iterator<Item = usize> + 'a {
        self.by_node
            .probe(node_hash(node))
            .filter(move |&p| self.items.get(p).is_some_and(|r| r.node == *node))
    }

    pub fn insert(&mut self, r: Relay) -> bool {
        let p = self.items.len();
        if self.items.push(r).is_err() {
            return false;
        }
        let mut ok = self.by_src.insert(src_hash(r.conn, r.source), p);
        ok &= self.by_node.insert(node_hash(&r.node), p);
        if let Some(t) = r.txn {
            ok &= self.by_txn.insert(txn_hash(r.conn, t.msgid()), p);
        }
        debug_assert!(ok, "indexes have a slot per relay");
        true
    }

    pub fn set_state(&mut self, p: usize, state: RelayState) {
        if let Some(r) = self.items.get_mut(p) {
            r.state = state;
        }
    }

    /// Forgets the transaction of a finished (refused) relay.
    pub fn clear_txn(&mut self, p: usize) {
        let Some(r) = self.items.get(p).copied() else {
            return;
        };
        if let Some(t) = r.txn {
            let items = &self.items;
            self.by_txn.remove(txn_hash(r.conn, t.msgid()), p, |q| {
                items
                    .get(q)
                    .and_then(|x| x.txn.map(|t| txn_hash(x.conn, t.msgid())))
                    .unwrap_or(0)
            });
        }
        if let Some(r) = self.items.get_mut(p) {
            r.txn = None;
        }
    }

    pub fn remove_at(&mut self, p: usize) -> Option<Relay> {
        let r = *self.items.get(p)?;
        self.clear_txn(p);
        let items = &self.items;
        self.by_src.remove(src_hash(r.conn, r.source), p, |q| {
            items.get(q).map_or(0, |x| src_hash(x.conn, x.source))
        });
        self.by_node.remove(node_hash(&r.node), p, |q| {
            items.get(q).map_or(0, |x| node_hash(&x.node))
        });
        let last = self.items.len() - 1;
        if p != last {
            if let Some(l) = self.items.get(last).copied() {
                self.by_src.moved(src_hash(l.conn, l.source), last, p);
                self.by_node.moved(node_hash(&l.node), last, p);
                if let Some(t) = l.txn {
                    self.by_txn.moved(txn_hash(l.conn, t.msgid()), last, p);
                }
            }
        }
        Some(self.items.swap_remove(p))
    }
}

/// Outcome of applying one planned action.
enum Applied {
    Done,
    Blocked,
}

/// Most actions taken from one `plan_node` call before planning again.
const PLAN_BATCH: usize = 8;

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
    /// The connections spans are relayed to: open links whose peer sent LNK_CONN.
    pub(super) fn conn_filters(&self) -> heapless::Vec<ConnFilter, LINKS> {
        let mut out = heapless::Vec::new();
        for s in self.slots.iter().flatten() {
            if s.down || s.conn.state() != crate::link::LinkState::Open {
                continue;
            }
            if let Some(pc) = s.conn.peer_conn() {
                let _ = out.push(ConnFilter {
                    link: s.id,
                    peer_mask: pc.peer_mask,
                    peer_type: pc.peer_type,
                    peer_id: pc.peer_id,
                });
            }
        }
        out
    }

    /// Plans and applies relays for dirty nodes. Returns true when anything was sent.
    ///
    /// Nodes marked since the last run are planned at once; nodes whose plan was blocked
    /// wait until a blocked link (or the relay table) has room again, so a busy link does
    /// not make every input replan them.
    pub(super) fn run_plan(&mut self) -> bool {
        let retry = (self.relay_full_blocked && self.relay_room)
            || self
                .slots
                .iter()
                .flatten()
                .any(|s| s.plan_blocked && s.room);
        if !self.dirty.fresh && !retry {
            return false;
        }
        self.dirty.fresh = false;
        if !self.dirty.has_plan_work() {
            return false;
        }
        if retry {
            self.relay_full_blocked = false;
            for s in self.slots.iter_mut().flatten() {
                s.plan_blocked = false;
            }
        }
        let conns = self.conn_filters();
        let mut did = false;
        if self.dirty.plan_all && (self.dirty.plan_all_fresh || retry) {
            self.dirty.plan_all = false;
            self.dirty.plan_all_fresh = false;
            let (d, complete) = self.plan_everything(&conns);
            did |= d;
            if !complete {
                self.dirty.plan_all = true;
            }
        }
        let mut i = 0;
        while i < self.dirty.items.len() {
            let Some(e) = self.dirty.items.get(i).copied() else {
                break;
            };
            if e.plan && (e.fresh || retry) {
                let (d, complete) = self.plan_one(&e.node, &conns);
                did |= d;
                if let Some(x) = self.dirty.items.get_mut(i) {
                    x.plan = !complete;
                    x.fresh = false;
                }
            }
            i += 1;
        }
        self.dirty.compact();
        did
    }

    /// Plans every node that has spans or relays, resuming where the last pass stopped.
    ///
    /// A pass walks the span table, then the relays of nodes without spans. It stops at the
    /// first node whose plan is blocked (a link without room) and resumes there when room
    /// comes back, so opening thousands of relays on a new link costs one pass, not one
    /// pass per output queue's worth of them. Records move when others are removed, so a
    /// pass that was interrupted is followed by one uninterrupted pass from the start
    /// before "everything" counts as planned. Returns (anything applied, all planned).
    fn plan_everything(&mut self, conns: &[ConnFilter]) -> (bool, bool) {
        let mut did = false;
        let mut p = self.dirty.all_cursor;
        let spans = self.spans.len();
        while p < spans + self.relays.len() {
            let node = if p < spans {
                match self.spans.entries().get(p) {
                    Some(e) if self.spans.is_first_of_node(p) => Some(NodeAddr {
                        peer_id: e.span.peer_id,
                        pfs_id: e.span.pfs_id,
                    }),
                    _ => None,
                }
            } else {
                // Relays of nodes that have no span left.
                match self.relays.get(p - spans) {
                    Some(r)
                        if r.is_current()
                            && !self.spans.has_node(&r.node.peer_id, &r.node.pfs_id) =>
                    {
                        Some(r.node)
                    }
                    _ => None,
                }
            };
            if let Some(node) = node {
                let (d, complete) = self.plan_one(&node, conns);
                did |= d;
                if !complete {
                    self.dirty.all_cursor = p;
                    self.dirty.all_interrupted = true;
                    return (did, false);
                }
                if d && p >= spans {
                    // Relays were removed: this position holds another one now.
                    continue;
                }
            }
            p += 1;
        }
        self.dirty.all_cursor = 0;
        if self.dirty.all_interrupted {
            // Confirm with an uninterrupted pass (at the next planning).
            self.dirty.all_interrupted = false;
            self.dirty.fresh = true;
            self.dirty.plan_all_fresh = true;
            return (did, false);
        }
        (did, true)
    }

    /// Brings the relays of one node in line with the plan, as far as the links allow.
    /// Returns (anything applied, nothing left to do).
    fn plan_one(&mut self, node: &NodeAddr, conns: &[ConnFilter]) -> (bool, bool) {
        let mut did = false;
        // Each round applies up to PLAN_BATCH actions; a node has at most 2 opens and 2
        // closes per connection, so this is bounded.
        for _ in 0..(4 * LINKS + 4) {
            let relays = &self.relays;
            let current = relays
                .of_node(node)
                .filter_map(|p| relays.get(p))
                .filter(|r| r.is_current())
                .map(|r| (r.conn, r.source));
            let actions: heapless::Vec<RelayAction, PLAN_BATCH> = self.spans.plan_node(
                &node.peer_id,
                &node.pfs_id,
                conns,
                current,
                |conn, source| relays.find_src(conn, source).is_some(),
            );
            if actions.is_empty() {
                return (did, true);
            }
            let full = actions.len() == PLAN_BATCH;
            let mut blocked = false;
            for a in actions {
                match self.apply(a, node) {
                    Applied::Done => did = true,
                    Applied::Blocked => blocked = true,
                }
            }
            if blocked {
                return (did, false);
            }
            if !full {
                // Everything asked for was done: the plan is met.
                return (did, true);
            }
        }
        (did, false)
    }

    fn apply(&mut self, action: RelayAction, node: &NodeAddr) -> Applied {
        match action {
            RelayAction::Open { conn, source } => self.open_relay(conn, source, node),
            RelayAction::Close { conn, source } => self.close_relay(conn, source),
        }
    }

    fn open_relay(&mut self, conn: LinkId, source: SpanKey, node: &NodeAddr) -> Applied {
        let Some(entry) = self.spans.get(source).copied() else {
            return Applied::Done;
        };
        if self.relays.is_full() {
            self.stats.relay_table_full += 1;
            self.relay_full_blocked = true;
            return Applied::Blocked;
        }
        let now = self.now;
        let Some(slot) = self.slot_mut(conn) else {
            return Applied::Done;
        };
        let body = Body::Span(entry.relayed());
        let msg = Outgoing::new(Command::LnkSpan).with_body(&body);
        let len = Cmd::new(Command::LnkSpan, Flags::CREATE).header_len();
        let (room, kept) = open_room(&slot.conn);
        let fits_ever = len + kept <= slot.conn.max_app_frame();
        let res = if room < len && fits_ever {
            // The peer must answer it: leave the room for answers (see ANSWER_FRAMES).
            Err(SendError::WouldBlock {
                needed: len,
                available: room,
            })
        } else {
            slot.conn.open(now, &msg, Flags::empty(), None)
        };
        match res {
            Ok(txn) => {
                slot.conn.set_txn_tag(txn, tag::RELAY);
                slot.stats.relays_out += 1;
                let ok = self.relays.insert(Relay {
                    conn,
                    source,
                    node: *node,
                    txn: Some(txn),
                    state: RelayState::Open,
                });
                debug_assert!(ok, "checked is_full");
                self.stats.relays_opened += 1;
                self.stats.relays_high_water =
                    self.stats.relays_high_water.max(self.relays.len() as u64);
                Applied::Done
            }
            Err(SendError::WouldBlock { .. } | SendError::TableFull) => {
                slot.plan_blocked = true;
                self.stats.relay_retries += 1;
                Applied::Blocked
            }
            // Closing or closed: the connection leaves the plan (and the node is planned
            // again) with its LinkDown; nothing to retry before that.
            Err(_) => Applied::Done,
        }
    }

    fn close_relay(&mut self, conn: LinkId, source: SpanKey) -> Applied {
        let Some(p) = self.relays.find_src(conn, source) else {
            return Applied::Done;
        };
        let Some(r) = self.relays.get(p).copied() else {
            return Applied::Done;
        };
        match (r.state, r.txn) {
            (RelayState::Open, Some(txn)) => {
                let now = self.now;
                let sent = match self.slot_mut(conn) {
                    // The peer answers our DELETE: leave the room for answers.
                    Some(slot) if open_room(&slot.conn).0 < 64 => Err(SendError::WouldBlock {
                        needed: 64,
                        available: open_room(&slot.conn).0,
                    }),
                    Some(slot) => slot.conn.delete(now, txn),
                    None => Err(SendError::Closed),
                };
                match sent {
                    Ok(()) => {
                        self.relays.set_state(p, RelayState::Closing);
                        self.stats.relays_closed += 1;
                        self.kill_stacked(conn, txn);
                        Applied::Done
                    }
                    Err(SendError::WouldBlock { .. }) => {
                        self.stats.relay_retries += 1;
                        if let Some(slot) = self.slot_mut(conn) {
                            slot.plan_blocked = true;
                        }
                        Applied::Blocked
                    }
                    Err(_) => {
                        // The transaction is gone with its link: its Closed event removes it.
                        self.relays.set_state(p, RelayState::Closing);
                        Applied::Done
                    }
                }
            }
            (_, Some(_)) => {
                // Refused: our DELETE is out; wait for the transaction to finish.
                self.relays.set_state(p, RelayState::Closing);
                Applied::Done
            }
            (_, None) => {
                self.relays.remove_at(p);
                self.relay_room = true;
                Applied::Done
            }
        }
    }
}
