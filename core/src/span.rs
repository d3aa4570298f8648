//! The SPAN database and relay planning (the spanning tree of DMSG), as pure bounded logic.
//!
//! A node learns about other nodes from LNK_SPAN transactions its peers open, and advertises
//! what it knows by opening LNK_SPAN transactions of its own on each connection ("relays").
//! This module holds the received spans and computes, for each connection, which spans should
//! be relayed there; the node layer opens and closes the transactions to match. Planning is
//! idempotent: after any change the node asks for the difference between what is relayed and
//! what should be, applies what its links can take, and asks again later for the rest.
//!
//! Rules (DragonFly's msg_lnk.c, with one deliberate difference):
//! - Spans are grouped by cluster (`peer_id`) and node (`pfs_id`); a node's links are ordered
//!   by advertised distance, then by the receiving link and msgid (a stable tiebreak).
//! - For every connection whose peer has sent LNK_CONN, the best [`RELAYS_PER_NODE`] eligible
//!   links of every node are relayed, with `dist + 1`.
//! - Never relayed back out of the connection a span came in on; never when the relayed
//!   distance would exceed [`MAX_DIST`]; only when the connection's `peer_mask` has bit
//!   `1 << peer_type`; and when the connection's LNK_CONN is a CLIENT's (peer_type 63) with a
//!   non-nil `peer_id`, only spans of that cluster.
//! - DragonFly stops scanning a node's links at the first one that fails a filter, so a span
//!   that came in on the target connection hides the second-best one from elsewhere. We skip
//!   it and keep looking, which is what "best 2 eligible links" means.
//!
//! Memory: a table of `N` received spans costs about `N * 428` bytes (420 per entry, most of
//! it the two labels, and 8 for its two hash indexes).

use core::fmt;

use crate::link::index::{hash_bytes16, mix64, PosIndex};
use crate::wire::body::{peer_type, SpanRepr};
use crate::wire::{MsgId, Uuid};

/// Largest distance a span is relayed with.
pub const MAX_DIST: u32 = 16;
/// How many links of each node are relayed to each connection.
pub const RELAYS_PER_NODE: usize = 2;

/// Identifies one link (connection) of a node. [`LinkId::LOCAL`] marks our own spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkId(pub u16);

impl LinkId {
    /// Spans this node advertises itself.
    pub const LOCAL: LinkId = LinkId(u16::MAX);

    /// True for [`LinkId::LOCAL`].
    pub const fn is_local(self) -> bool {
        self.0 == u16::MAX
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_local() {
            f.write_str("local")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// A received (or local) span: the link it came in on and the peer's msgid for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SpanKey {
    /// The link it arrived on.
    pub via: LinkId,
    /// The msgid of the LNK_SPAN transaction on that link (ours for local spans).
    pub msgid: MsgId,
}

/// One entry of the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanEntry {
    /// Where it came from.
    pub key: SpanKey,
    /// The span as received (`dist` as the sender advertised it).
    pub span: SpanRepr,
}

impl SpanEntry {
    /// The distance at which this node advertises the span: 0 for local spans, the received
    /// distance + 1 otherwise (saturating).
    pub fn advertised_dist(&self) -> u32 {
        if self.key.via.is_local() {
            self.span.dist
        } else {
            self.span.dist.saturating_add(1)
        }
    }

    fn order(&self) -> (u32, SpanKey) {
        (self.advertised_dist(), self.key)
    }

    /// The span to send when relaying this entry (its distance adjusted).
    pub fn relayed(&self) -> SpanRepr {
        SpanRepr {
            dist: self.advertised_dist(),
            ..self.span
        }
    }

    fn same_node(&self, other: &SpanRepr) -> bool {
        self.same_node_ids(&other.peer_id, &other.pfs_id)
    }

    fn same_node_ids(&self, peer_id: &Uuid, pfs_id: &Uuid) -> bool {
        self.span.peer_id == *peer_id && self.span.pfs_id == *pfs_id
    }
}

/// Writes one `Relay-out` line of the tree, as DragonFly prints it under a link: the msgid
/// of our LNK_SPAN transaction relaying that span and the link it is open on.
pub fn write_relay_out(w: &mut impl fmt::Write, msgid: MsgId, conn: LinkId) -> fmt::Result {
    writeln!(w, "\t    Relay-out msgid {msgid} via {conn}")
}

/// What a connection's LNK_CONN asks for, for filtering relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnFilter {
    /// The connection.
    pub link: LinkId,
    /// Peer types it wants (`1 << peer_type`).
    pub peer_mask: u64,
    /// Its own peer type.
    pub peer_type: u8,
    /// Its cluster id (restricts a CLIENT to its cluster when non-nil).
    pub peer_id: Uuid,
}

impl ConnFilter {
    /// True when `entry` may be relayed to this connection at all (ignoring the top-2 rule).
    pub fn accepts(&self, entry: &SpanEntry) -> bool {
        if entry.key.via == self.link || entry.advertised_dist() > MAX_DIST {
            return false;
        }
        let ptype = entry.span.peer_type;
        if ptype >= 64 || self.peer_mask & (1u64 << ptype) == 0 {
            return false;
        }
        if self.peer_type == peer_type::CLIENT
            && !self.peer_id.is_nil()
            && entry.span.peer_id != self.peer_id
        {
            return false;
        }
        true
    }
}

/// Errors from the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SpanError {
    /// The table is full (a span flood beyond capacity).
    Full,
    /// A span with this key is already open.
    Duplicate,
    /// No span with this key.
    Unknown,
}

impl fmt::Display for SpanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpanError::Full => "span table full",
            SpanError::Duplicate => "span already open",
            SpanError::Unknown => "no such span",
        })
    }
}

impl core::error::Error for SpanError {}

/// A change the node should make to its relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelayAction {
    /// Open a LNK_SPAN on `conn` relaying `source` (send `SpanEntry::relayed`).
    Open {
        /// Connection to open it on.
        conn: LinkId,
        /// The span relayed.
        source: SpanKey,
    },
    /// Close the relay of `source` on `conn`.
    Close {
        /// Connection it is open on.
        conn: LinkId,
        /// The span relayed.
        source: SpanKey,
    },
}

/// How many of a node's entries [`SpanTable::plan_node`] ranks once per call.
const RANKED: usize = 8;

/// A node's best entries in order (see [`SpanTable::plan_node`]).
struct Ranked<'a> {
    peer_id: Uuid,
    pfs_id: Uuid,
    top: heapless::Vec<&'a SpanEntry, RANKED>,
    /// Every entry of the node is in `top`.
    complete: bool,
}

/// The database of spans, holding at most `N`.
///
/// Entries live in a dense array; two hash indexes over their positions (by [`SpanKey`],
/// and by node `(peer_id, pfs_id)`) make lookups, inserts and removals O(1) expected and
/// give a node's links without a scan, so a node with thousands of spans can replan one
/// node at a time ([`SpanTable::plan_node`]). The indexes cost `8 * N` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpanTable<const N: usize> {
    entries: heapless::Vec<SpanEntry, N>,
    by_key: PosIndex<N>,
    by_node: PosIndex<N>,
}

fn key_hash(k: SpanKey) -> u64 {
    mix64(k.msgid.0 ^ mix64(k.via.0 as u64 ^ 0x5ba1_1e55))
}

/// Hash of a node `(peer_id, pfs_id)`, as the node index uses it.
pub(crate) fn node_hash(peer_id: &Uuid, pfs_id: &Uuid) -> u64 {
    hash_bytes16(&pfs_id.0, hash_bytes16(&peer_id.0, 0x6e0d_e000))
}

impl<const N: usize> Default for SpanTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SpanTable<N> {
    /// An empty table.
    pub const fn new() -> Self {
        SpanTable {
            entries: heapless::Vec::new(),
            by_key: PosIndex::new(),
            by_node: PosIndex::new(),
        }
    }

    /// Number of spans held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, in no particular order.
    pub fn entries(&self) -> &[SpanEntry] {
        &self.entries
    }

    fn position(&self, key: SpanKey) -> Option<usize> {
        self.by_key.find(key_hash(key), |p| {
            self.entries.get(p).is_some_and(|e| e.key == key)
        })
    }

    fn node_hash_at(&self, p: usize) -> u64 {
        self.entries
            .get(p)
            .map_or(0, |e| node_hash(&e.span.peer_id, &e.span.pfs_id))
    }

    fn key_hash_at(&self, p: usize) -> u64 {
        self.entries.get(p).map_or(0, |e| key_hash(e.key))
    }

    /// The entry for `key`.
    pub fn get(&self, key: SpanKey) -> Option<&SpanEntry> {
        self.position(key).and_then(|p| self.entries.get(p))
    }

    /// The entries of the node `(peer_id, pfs_id)` (local ones included), in no particular
    /// order.
    pub fn node_entries(&self, peer_id: Uuid, pfs_id: Uuid) -> impl Iterator<Item = &SpanEntry> {
        self.by_node
            .probe(node_hash(&peer_id, &pfs_id))
            .filter_map(move |p| self.entries.get(p))
            .filter(move |e| e.span.peer_id == peer_id && e.span.pfs_id == pfs_id)
    }

    /// True when the table holds a span of the node `(peer_id, pfs_id)` that arrived on a
    /// link (local spans do not count).
    pub fn reaches(&self, peer_id: &Uuid, pfs_id: &Uuid) -> bool {
        self.node_entries(*peer_id, *pfs_id)
            .any(|e| !e.key.via.is_local())
    }

    /// The best received (non-local) span of the node `(peer_id, pfs_id)`: the one with the
    /// smallest advertised distance (stable tiebreak), the way to reach that node.
    pub fn best_remote(&self, peer_id: &Uuid, pfs_id: &Uuid) -> Option<&SpanEntry> {
        self.node_entries(*peer_id, *pfs_id)
            .filter(|e| !e.key.via.is_local())
            .min_by_key(|e| e.order())
    }

    /// True when the table holds any span (local ones included) of the node
    /// `(peer_id, pfs_id)`.
    pub fn has_node(&self, peer_id: &Uuid, pfs_id: &Uuid) -> bool {
        self.node_entries(*peer_id, *pfs_id).next().is_some()
    }

    /// True when the entry at position `p` of [`entries`](Self::entries) is the one
    /// [`nodes`](Self::nodes) reports for its node: used to visit each node once.
    pub fn is_first_of_node(&self, p: usize) -> bool {
        let Some(e) = self.entries.get(p) else {
            return false;
        };
        self.by_node
            .find(node_hash(&e.span.peer_id, &e.span.pfs_id), |q| {
                self.entries.get(q).is_some_and(|o| o.same_node(&e.span))
            })
            == Some(p)
    }

    /// One representative entry per distinct node, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &SpanEntry> + '_ {
        (0..self.entries.len())
            .filter(move |&p| self.is_first_of_node(p))
            .filter_map(move |p| self.entries.get(p))
    }

    /// Records a span opened on `key.via` (or a local one).
    pub fn insert(&mut self, key: SpanKey, span: SpanRepr) -> Result<(), SpanError> {
        if self.get(key).is_some() {
            return Err(SpanError::Duplicate);
        }
        let pos = self.entries.len();
        self.entries
            .push(SpanEntry { key, span })
            .map_err(|_| SpanError::Full)?;
        let ok = self.by_key.insert(key_hash(key), pos)
            && self
                .by_node
                .insert(node_hash(&span.peer_id, &span.pfs_id), pos);
        debug_assert!(ok, "indexes have a slot per entry");
        Ok(())
    }

    /// Replaces the contents of an open span (a status update on its transaction).
    pub fn update(&mut self, key: SpanKey, span: SpanRepr) -> Result<(), SpanError> {
        let p = self.position(key).ok_or(SpanError::Unknown)?;
        let old = self.node_hash_at(p);
        let new = node_hash(&span.peer_id, &span.pfs_id);
        if old != new {
            let entries = &self.entries;
            self.by_node.remove(old, p, |q| {
                entries
                    .get(q)
                    .map_or(0, |e| node_hash(&e.span.peer_id, &e.span.pfs_id))
            });
        }
        if let Some(e) = self.entries.get_mut(p) {
            e.span = span;
        }
        if old != new {
            let ok = self.by_node.insert(new, p);
            debug_assert!(ok);
        }
        Ok(())
    }

    /// Removes the entry at position `p`, keeping both indexes in step with the
    /// `swap_remove`.
    fn remove_at(&mut self, p: usize) -> Option<SpanEntry> {
        let e = *self.entries.get(p)?;
        let kh = key_hash(e.key);
        let nh = node_hash(&e.span.peer_id, &e.span.pfs_id);
        let entries = &self.entries;
        self.by_key
            .remove(kh, p, |q| entries.get(q).map_or(0, |e| key_hash(e.key)));
        self.by_node.remove(nh, p, |q| {
            entries
                .get(q)
                .map_or(0, |e| node_hash(&e.span.peer_id, &e.span.pfs_id))
        });
        let last = self.entries.len() - 1;
        if p != last {
            let lk = self.key_hash_at(last);
            let ln = self.node_hash_at(last);
            self.by_key.moved(lk, last, p);
            self.by_node.moved(ln, last, p);
        }
        Some(self.entries.swap_remove(p))
    }

    /// Forgets a span (its transaction closed).
    pub fn remove(&mut self, key: SpanKey) -> Result<SpanEntry, SpanError> {
        let p = self.position(key).ok_or(SpanError::Unknown)?;
        self.remove_at(p).ok_or(SpanError::Unknown)
    }

    /// Forgets every span that came in on `link` (the link went away); returns how many.
    pub fn remove_link(&mut self, link: LinkId) -> usize {
        self.remove_link_each(link, |_| {})
    }

    /// [`remove_link`](Self::remove_link), calling `f` with each entry removed (one pass).
    pub fn remove_link_each(&mut self, link: LinkId, mut f: impl FnMut(&SpanEntry)) -> usize {
        let mut removed = 0;
        let mut p = 0;
        while p < self.entries.len() {
            if self.entries[p].key.via == link {
                if let Some(e) = self.remove_at(p) {
                    f(&e);
                }
                removed += 1;
            } else {
                p += 1;
            }
        }
        removed
    }

    /// The best eligible links of the node `(peer_id, pfs_id)` for `conn`, best first.
    pub fn best_for(
        &self,
        peer_id: Uuid,
        pfs_id: Uuid,
        conn: &ConnFilter,
    ) -> heapless::Vec<SpanKey, RELAYS_PER_NODE> {
        let mut best: heapless::Vec<&SpanEntry, RELAYS_PER_NODE> = heapless::Vec::new();
        for e in self.node_entries(peer_id, pfs_id) {
            if !conn.accepts(e) {
                continue;
            }
            // Insertion into a sorted list of at most RELAYS_PER_NODE.
            let pos = best
                .iter()
                .position(|b| e.order() < b.order())
                .unwrap_or(best.len());
            if pos < RELAYS_PER_NODE {
                if best.is_full() {
                    best.pop();
                }
                // Cannot fail: one slot is free after the pop.
                let _ = best.insert(pos, e);
            }
        }
        best.iter().map(|e| e.key).collect()
    }

    /// True when `source` should be relayed on `conn`.
    pub fn wanted(&self, source: SpanKey, conn: &ConnFilter) -> bool {
        match self.get(source) {
            Some(e) => self
                .best_for(e.span.peer_id, e.span.pfs_id, conn)
                .contains(&source),
            None => false,
        }
    }

    /// The changes that bring the relays `current` (pairs of connection and relayed span) to
    /// what they should be for the connections `conns`, at most `M` at a time (call again
    /// after applying them). Closes come before opens, so a better link replaces a worse one
    /// without a relay count above the limit.
    ///
    /// ```
    /// use dmsg_core::span::{ConnFilter, LinkId, RelayAction, SpanKey, SpanTable};
    /// use dmsg_core::wire::{body::SpanRepr, MsgId, Uuid};
    ///
    /// let mut db: SpanTable<8> = SpanTable::new();
    /// let key = SpanKey { via: LinkId(1), msgid: MsgId(7) };
    /// db.insert(key, SpanRepr { peer_type: 3, pfs_id: Uuid([1; 16]), ..SpanRepr::default() }).unwrap();
    /// let conns = [
    ///     ConnFilter { link: LinkId(1), peer_mask: u64::MAX, peer_type: 1, peer_id: Uuid::NIL },
    ///     ConnFilter { link: LinkId(2), peer_mask: u64::MAX, peer_type: 1, peer_id: Uuid::NIL },
    /// ];
    /// let plan = db.plan::<4>(&conns, core::iter::empty());
    /// assert_eq!(plan.as_slice(), &[RelayAction::Open { conn: LinkId(2), source: key }]);
    /// ```
    pub fn plan<const M: usize>(
        &self,
        conns: &[ConnFilter],
        current: impl Iterator<Item = (LinkId, SpanKey)> + Clone,
    ) -> heapless::Vec<RelayAction, M> {
        let mut out: heapless::Vec<RelayAction, M> = heapless::Vec::new();
        // Closes: relays that are no longer wanted (or whose connection is gone).
        for (conn, source) in current.clone() {
            let keep = conns
                .iter()
                .find(|c| c.link == conn)
                .is_some_and(|c| self.wanted(source, c));
            if !keep && out.push(RelayAction::Close { conn, source }).is_err() {
                return out;
            }
        }
        // Opens: wanted relays that do not exist yet.
        for c in conns {
            for e in self.entries.iter() {
                if !c.accepts(e) {
                    continue;
                }
                let exists = current
                    .clone()
                    .any(|(conn, source)| conn == c.link && source == e.key);
                if exists || !self.wanted(e.key, c) {
                    continue;
                }
                if out
                    .push(RelayAction::Open {
                        conn: c.link,
                        source: e.key,
                    })
                    .is_err()
                {
                    return out;
                }
            }
        }
        out
    }

    /// [`plan`](Self::plan) for one node `(peer_id, pfs_id)`: `current` lists the relays of
    /// that node's spans (including relays of spans already removed), and `exists(conn,
    /// source)` tells whether a relay exists (an index lookup, so a hub with many
    /// connections plans a node in O(connections + links of the node)). Call it for every
    /// node whose spans changed, and for every node when the connections changed.
    ///
    /// ```
    /// use dmsg_core::span::{ConnFilter, LinkId, RelayAction, SpanKey, SpanTable};
    /// use dmsg_core::wire::{body::SpanRepr, MsgId, Uuid};
    ///
    /// let mut db: SpanTable<8> = SpanTable::new();
    /// let node = SpanRepr { peer_type: 3, pfs_id: Uuid([1; 16]), ..SpanRepr::default() };
    /// let key = SpanKey { via: LinkId(1), msgid: MsgId(7) };
    /// db.insert(key, node).unwrap();
    /// let conns = [ConnFilter { link: LinkId(2), peer_mask: u64::MAX, peer_type: 1, peer_id: Uuid::NIL }];
    /// let plan = db.plan_node::<4>(&node.peer_id, &node.pfs_id, &conns, core::iter::empty(), |_, _| false);
    /// assert_eq!(plan.as_slice(), &[RelayAction::Open { conn: LinkId(2), source: key }]);
    /// ```
    pub fn plan_node<const M: usize>(
        &self,
        peer_id: &Uuid,
        pfs_id: &Uuid,
        conns: &[ConnFilter],
        current: impl Iterator<Item = (LinkId, SpanKey)>,
        exists: impl Fn(LinkId, SpanKey) -> bool,
    ) -> heapless::Vec<RelayAction, M> {
        let mut out: heapless::Vec<RelayAction, M> = heapless::Vec::new();
        let ranked = self.ranked(*peer_id, *pfs_id);
        for (conn, source) in current {
            let keep = conns
                .iter()
                .find(|c| c.link == conn)
                .is_some_and(|c| self.best_ranked(&ranked, c).contains(&source));
            if !keep && out.push(RelayAction::Close { conn, source }).is_err() {
                return out;
            }
        }
        for c in conns {
            for source in self.best_ranked(&ranked, c) {
                if exists(c.link, source) {
                    continue;
                }
                if out
                    .push(RelayAction::Open {
                        conn: c.link,
                        source,
                    })
                    .is_err()
                {
                    return out;
                }
            }
        }
        out
    }

    /// The best [`RANKED`] entries of a node, best first, and whether that is all of them.
    fn ranked(&self, peer_id: Uuid, pfs_id: Uuid) -> Ranked<'_> {
        let mut top: heapless::Vec<&SpanEntry, RANKED> = heapless::Vec::new();
        let mut complete = true;
        for e in self.node_entries(peer_id, pfs_id) {
            let pos = top
                .iter()
                .position(|b| e.order() < b.order())
                .unwrap_or(top.len());
            if pos < RANKED {
                if top.is_full() {
                    top.pop();
                    complete = false;
                }
                let _ = top.insert(pos, e);
            } else {
                complete = false;
            }
        }
        Ranked {
            peer_id,
            pfs_id,
            top,
            complete,
        }
    }

    /// [`best_for`](Self::best_for) from a ranked list: the first eligible entries in order
    /// (a full scan only when the list is cut short and has too few eligible ones).
    fn best_ranked(
        &self,
        r: &Ranked<'_>,
        conn: &ConnFilter,
    ) -> heapless::Vec<SpanKey, RELAYS_PER_NODE> {
        let mut out: heapless::Vec<SpanKey, RELAYS_PER_NODE> = heapless::Vec::new();
        for e in r.top.iter() {
            if conn.accepts(e) && out.push(e.key).is_err() {
                break;
            }
            if out.is_full() {
                return out;
            }
        }
        if r.complete {
            out
        } else {
            self.best_for(r.peer_id, r.pfs_id, conn)
        }
    }

    /// Writes the span tree the way DragonFly's shell prints it: `Cluster` lines, `Node`
    /// lines under them, and a line per link with its msgid, the distance as received, and
    /// the link it came in on.
    pub fn write_tree(&self, w: &mut impl fmt::Write) -> fmt::Result {
        self.write_tree_relays(w, |_, _| Ok(()))
    }

    /// [`write_tree`](Self::write_tree) with, under each link, the relays of that span
    /// written by `relays(w, key)` (DragonFly prints `Relay-out msgid MSGID via LINK`
    /// lines there, indented; [`write_relay_out`] writes one).
    pub fn write_tree_relays<W: fmt::Write>(
        &self,
        w: &mut W,
        mut relays: impl FnMut(&mut W, SpanKey) -> fmt::Result,
    ) -> fmt::Result {
        self.for_each_node(|first_of_cluster, e| {
            if first_of_cluster {
                writeln!(
                    w,
                    "Cluster {} {} ({})",
                    peer_type_name(e.span.peer_type),
                    e.span.peer_id,
                    e.span.peer_label
                )?;
            }
            writeln!(
                w,
                "    Node {:02x} {} ({})",
                e.span.pfs_type, e.span.pfs_id, e.span.pfs_label
            )?;
            let mut links: heapless::Vec<&SpanEntry, N> =
                self.node_entries(e.span.peer_id, e.span.pfs_id).collect();
            links.sort_unstable_by_key(|x| x.order());
            for l in links {
                writeln!(
                    w,
                    "\tSLink msgid {} dist={} via {}",
                    l.key.msgid, l.span.dist, l.key.via
                )?;
                relays(w, l.key)?;
            }
            Ok(())
        })
    }

    /// Writes the span tree as a Graphviz DOT digraph: one vertex per node (labelled with
    /// its labels), one edge per link from the node to the link it is reached through.
    pub fn write_dot(&self, w: &mut impl fmt::Write, self_label: &str) -> fmt::Result {
        writeln!(w, "digraph dmsg {{")?;
        writeln!(
            w,
            "  \"self\" [label=\"{}\", shape=box];",
            Escaped(self_label)
        )?;
        self.for_each_node(|_, e| {
            writeln!(
                w,
                "  \"{}\" [label=\"{}\\n{}\"];",
                e.span.pfs_id,
                Escaped(e.span.peer_label.as_str().unwrap_or("?")),
                Escaped(e.span.pfs_label.as_str().unwrap_or("?"))
            )?;
            for l in self.node_entries(e.span.peer_id, e.span.pfs_id) {
                writeln!(
                    w,
                    "  \"self\" -> \"{}\" [label=\"link {} dist {}\"];",
                    e.span.pfs_id,
                    l.key.via,
                    l.advertised_dist()
                )?;
            }
            Ok(())
        })?;
        writeln!(w, "}}")
    }

    /// Calls `f` once per distinct node, in (peer_id, pfs_id) order, with a flag that is true
    /// for the first node of each cluster and a representative entry.
    fn for_each_node(&self, mut f: impl FnMut(bool, &SpanEntry) -> fmt::Result) -> fmt::Result {
        let mut last: Option<(Uuid, Uuid)> = None;
        loop {
            // The smallest (peer_id, pfs_id) greater than `last`: O(n) per node, no heap.
            let next = self
                .entries
                .iter()
                .filter(|e| last.is_none_or(|l| (e.span.peer_id, e.span.pfs_id) > l))
                .min_by_key(|e| (e.span.peer_id, e.span.pfs_id, e.order()));
            let Some(e) = next else { return Ok(()) };
            let first = last.is_none_or(|(p, _)| p != e.span.peer_id);
            f(first, e)?;
            last = Some((e.span.peer_id, e.span.pfs_id));
        }
    }
}

/// DragonFly's name of a peer type (`HAMMER2`, `ROUTER`, ...), or its number.
pub fn peer_type_name(t: u8) -> PeerTypeName {
    PeerTypeName(t)
}

/// Display helper returned by [`peer_type_name`].
#[derive(Clone, Copy, Debug)]
pub struct PeerTypeName(u8);

impl fmt::Display for PeerTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match peer_type::name(self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "{:02x}", self.0),
        }
    }
}

struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' | '\\' => write!(f, "\\{c}")?,
                c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Label;
    use std::string::String;

    fn span(node: u8, dist: u32, ptype: u8) -> SpanRepr {
        SpanRepr {
            peer_id: Uuid([0xC0; 16]),
            pfs_id: Uuid([node; 16]),
            peer_type: ptype,
            dist,
            peer_label: Label::new("cluster").unwrap(),
            pfs_label: Label::new("node").unwrap(),
            ..SpanRepr::default()
        }
    }

    fn key(via: u16, msgid: u64) -> SpanKey {
        SpanKey {
            via: LinkId(via),
            msgid: MsgId(msgid),
        }
    }

    fn conn(link: u16) -> ConnFilter {
        ConnFilter {
            link: LinkId(link),
            peer_mask: u64::MAX,
            peer_type: peer_type::ROUTER,
            peer_id: Uuid::NIL,
        }
    }

    #[test]
    fn best_two_skip_the_incoming_connection_instead_of_stopping() {
        let mut db: SpanTable<8> = SpanTable::new();
        db.insert(key(1, 1), span(9, 0, 3)).unwrap(); // best, but came in on link 1
        db.insert(key(2, 1), span(9, 1, 3)).unwrap();
        db.insert(key(3, 1), span(9, 2, 3)).unwrap();
        db.insert(key(4, 1), span(9, 3, 3)).unwrap();
        assert_eq!(
            db.best_for(Uuid([0xC0; 16]), Uuid([9; 16]), &conn(1))
                .as_slice(),
            &[key(2, 1), key(3, 1)]
        );
        assert_eq!(
            db.best_for(Uuid([0xC0; 16]), Uuid([9; 16]), &conn(5))
                .as_slice(),
            &[key(1, 1), key(2, 1)]
        );
    }

    #[test]
    fn filters_distance_mask_and_client_cluster() {
        let mut db: SpanTable<8> = SpanTable::new();
        db.insert(key(1, 1), span(1, MAX_DIST - 1, 3)).unwrap(); // relayed at 16: ok
        db.insert(key(1, 2), span(2, MAX_DIST, 3)).unwrap(); // would be 17: never
        db.insert(key(1, 3), span(3, 0, 2)).unwrap(); // BLOCK
        let c = ConnFilter {
            peer_mask: 1 << 3,
            ..conn(2)
        };
        assert!(db.wanted(key(1, 1), &c));
        assert!(!db.wanted(key(1, 2), &c));
        assert!(!db.wanted(key(1, 3), &c), "peer_mask has no BLOCK bit");
        let client = ConnFilter {
            peer_type: peer_type::CLIENT,
            peer_id: Uuid([0xAA; 16]),
            ..conn(2)
        };
        assert!(!db.wanted(key(1, 1), &client), "other cluster");
        let client_nil = ConnFilter {
            peer_id: Uuid::NIL,
            ..client
        };
        assert!(db.wanted(key(1, 1), &client_nil));
    }

    #[test]
    fn plan_replaces_a_worse_relay_and_drops_relays_of_gone_links() {
        let mut db: SpanTable<8> = SpanTable::new();
        db.insert(key(1, 1), span(9, 4, 3)).unwrap();
        db.insert(key(2, 1), span(9, 5, 3)).unwrap();
        let conns = [conn(3)];
        let plan = db.plan::<8>(&conns, core::iter::empty());
        assert_eq!(plan.len(), 2);
        let current = [(LinkId(3), key(1, 1)), (LinkId(3), key(2, 1))];
        assert!(db.plan::<8>(&conns, current.iter().copied()).is_empty());
        // A better link appears: the worst relay is closed, the new one opened.
        db.insert(key(4, 1), span(9, 0, 3)).unwrap();
        let plan = db.plan::<8>(&conns, current.iter().copied());
        assert_eq!(
            plan.as_slice(),
            &[
                RelayAction::Close {
                    conn: LinkId(3),
                    source: key(2, 1)
                },
                RelayAction::Open {
                    conn: LinkId(3),
                    source: key(4, 1)
                },
            ]
        );
        // Link 1 goes away: its relay closes.
        assert_eq!(db.remove_link(LinkId(1)), 1);
        let current = [(LinkId(3), key(1, 1)), (LinkId(3), key(4, 1))];
        let plan = db.plan::<8>(&conns, current.iter().copied());
        assert!(plan.contains(&RelayAction::Close {
            conn: LinkId(3),
            source: key(1, 1)
        }));
        assert!(plan.contains(&RelayAction::Open {
            conn: LinkId(3),
            source: key(2, 1)
        }));
    }

    #[test]
    fn local_spans_are_advertised_at_their_own_distance() {
        let mut db: SpanTable<4> = SpanTable::new();
        let k = SpanKey {
            via: LinkId::LOCAL,
            msgid: MsgId(1),
        };
        db.insert(k, span(1, 0, 3)).unwrap();
        db.insert(key(1, 5), span(2, 0, 3)).unwrap();
        assert_eq!(db.get(k).unwrap().relayed().dist, 0);
        assert_eq!(db.get(key(1, 5)).unwrap().relayed().dist, 1);
    }

    #[test]
    fn capacity_and_duplicates_are_typed_errors() {
        let mut db: SpanTable<1> = SpanTable::new();
        db.insert(key(1, 1), span(1, 0, 3)).unwrap();
        assert_eq!(
            db.insert(key(1, 1), span(1, 0, 3)),
            Err(SpanError::Duplicate)
        );
        assert_eq!(db.insert(key(1, 2), span(1, 0, 3)), Err(SpanError::Full));
        assert_eq!(db.remove(key(9, 9)).err(), Some(SpanError::Unknown));
        assert_eq!(db.update(key(9, 9), span(1, 0, 3)), Err(SpanError::Unknown));
    }

    #[test]
    // Safe code walking thousands of steps: hours under Miri, and nothing Miri could find.
    #[cfg_attr(miri, ignore)]
    fn indexes_agree_with_a_brute_force_model() {
        // Random inserts, updates (that may move a span to another node) and removals,
        // including whole links; after each step every lookup matches a plain scan.
        let mut db: SpanTable<24> = SpanTable::new();
        let mut model: std::vec::Vec<SpanEntry> = std::vec::Vec::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..4000 {
            let r = next();
            let k = key((r % 4) as u16, (r >> 8) % 12);
            let sp = span(((r >> 16) % 5) as u8, ((r >> 24) % 6) as u32, 3);
            match (r >> 32) % 5 {
                0 | 1 => {
                    let want = if model.iter().any(|e| e.key == k) {
                        Err(SpanError::Duplicate)
                    } else if model.len() == 24 {
                        Err(SpanError::Full)
                    } else {
                        model.push(SpanEntry { key: k, span: sp });
                        Ok(())
                    };
                    assert_eq!(db.insert(k, sp), want);
                }
                2 => {
                    let want = match model.iter_mut().find(|e| e.key == k) {
                        Some(e) => {
                            e.span = sp;
                            Ok(())
                        }
                        None => Err(SpanError::Unknown),
                    };
                    assert_eq!(db.update(k, sp), want);
                }
                3 => {
                    let want = model
                        .iter()
                        .position(|e| e.key == k)
                        .map(|i| model.remove(i));
                    assert_eq!(db.remove(k).ok(), want);
                }
                _ => {
                    let link = LinkId((r % 4) as u16);
                    let before = model.len();
                    model.retain(|e| e.key.via != link);
                    assert_eq!(db.remove_link(link), before - model.len());
                }
            }
            assert_eq!(db.len(), model.len());
            for e in &model {
                assert_eq!(db.get(e.key), Some(e));
            }
            for node in 0..5u8 {
                let (p, f) = (Uuid([0xC0; 16]), Uuid([node; 16]));
                let mut got: std::vec::Vec<SpanKey> =
                    db.node_entries(p, f).map(|e| e.key).collect();
                let mut want: std::vec::Vec<SpanKey> = model
                    .iter()
                    .filter(|e| e.span.pfs_id == f)
                    .map(|e| e.key)
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want);
                for c in 0..4 {
                    let mut brute: std::vec::Vec<&SpanEntry> = model
                        .iter()
                        .filter(|e| e.span.pfs_id == f && conn(c).accepts(e))
                        .collect();
                    brute.sort_by_key(|e| e.order());
                    let brute: std::vec::Vec<SpanKey> =
                        brute.iter().take(RELAYS_PER_NODE).map(|e| e.key).collect();
                    assert_eq!(db.best_for(p, f, &conn(c)).as_slice(), brute.as_slice());
                }
            }
            // Planning node by node gives what planning the whole table gives.
            let conns = [conn(0), conn(1), conn(2), conn(3)];
            let whole: heapless::Vec<RelayAction, 256> = db.plan(&conns, core::iter::empty());
            let mut by_node = 0;
            for node in 0..5u8 {
                let (p, f) = (Uuid([0xC0; 16]), Uuid([node; 16]));
                let part: heapless::Vec<RelayAction, 64> =
                    db.plan_node(&p, &f, &conns, core::iter::empty(), |_, _| false);
                for a in &part {
                    assert!(whole.contains(a), "{a:?}");
                }
                by_node += part.len();
            }
            assert_eq!(by_node, whole.len());
        }
    }

    #[test]
    fn tree_dump_matches_dragonflys_shape() {
        let mut db: SpanTable<4> = SpanTable::new();
        db.insert(key(4, 0x7f0e_a000_1840), span(8, 0, 3)).unwrap();
        let mut s = String::new();
        db.write_tree(&mut s).unwrap();
        assert_eq!(
            s,
            "Cluster HAMMER2 c0c0c0c0-c0c0-c0c0-c0c0-c0c0c0c0c0c0 (cluster)\n    Node 00 08080808-0808-0808-0808-080808080808 (node)\n\tSLink msgid 00007f0ea0001840 dist=0 via 4\n"
        );
        let mut dot = String::new();
        db.write_dot(&mut dot, "hub \"1\"").unwrap();
        assert!(dot.starts_with("digraph dmsg {\n  \"self\" [label=\"hub \\\"1\\\"\""));
        assert!(dot.trim_end().ends_with('}'));
    }
}
