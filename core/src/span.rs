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
//! Memory: a table of `N` received spans costs about `N * 420` bytes.

use core::fmt;

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
        self.span.peer_id == other.peer_id && self.span.pfs_id == other.pfs_id
    }
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

/// The database of spans, holding at most `N`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpanTable<const N: usize> {
    entries: heapless::Vec<SpanEntry, N>,
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

    /// The entry for `key`.
    pub fn get(&self, key: SpanKey) -> Option<&SpanEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Records a span opened on `key.via` (or a local one).
    pub fn insert(&mut self, key: SpanKey, span: SpanRepr) -> Result<(), SpanError> {
        if self.get(key).is_some() {
            return Err(SpanError::Duplicate);
        }
        self.entries
            .push(SpanEntry { key, span })
            .map_err(|_| SpanError::Full)
    }

    /// Replaces the contents of an open span (a status update on its transaction).
    pub fn update(&mut self, key: SpanKey, span: SpanRepr) -> Result<(), SpanError> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.key == key)
            .ok_or(SpanError::Unknown)?;
        e.span = span;
        Ok(())
    }

    /// Forgets a span (its transaction closed).
    pub fn remove(&mut self, key: SpanKey) -> Result<SpanEntry, SpanError> {
        let i = self
            .entries
            .iter()
            .position(|e| e.key == key)
            .ok_or(SpanError::Unknown)?;
        Ok(self.entries.swap_remove(i))
    }

    /// Forgets every span that came in on `link` (the link went away); returns how many.
    pub fn remove_link(&mut self, link: LinkId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.key.via != link);
        before - self.entries.len()
    }

    /// The best eligible links of the node `(peer_id, pfs_id)` for `conn`, best first.
    pub fn best_for(
        &self,
        peer_id: Uuid,
        pfs_id: Uuid,
        conn: &ConnFilter,
    ) -> heapless::Vec<SpanKey, RELAYS_PER_NODE> {
        let mut best: heapless::Vec<&SpanEntry, RELAYS_PER_NODE> = heapless::Vec::new();
        for e in self.entries.iter() {
            if e.span.peer_id != peer_id || e.span.pfs_id != pfs_id || !conn.accepts(e) {
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

    /// Writes the span tree the way DragonFly's shell prints it: `Cluster` lines, `Node`
    /// lines under them, and a line per link with its msgid, the distance as received, and
    /// the link it came in on.
    pub fn write_tree(&self, w: &mut impl fmt::Write) -> fmt::Result {
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
            let mut links: heapless::Vec<&SpanEntry, N> = self
                .entries
                .iter()
                .filter(|x| x.same_node(&e.span))
                .collect();
            links.sort_unstable_by_key(|x| x.order());
            for l in links {
                writeln!(
                    w,
                    "\tSLink msgid {} dist={} via {}",
                    l.key.msgid, l.span.dist, l.key.via
                )?;
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
            for l in self.entries.iter().filter(|x| x.same_node(&e.span)) {
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
