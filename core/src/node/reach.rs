//! Which nodes changed (to plan their relays and report their reachability), and which
//! nodes the application was told are reachable.
//!
//! Both are bounded: the dirty list holds [`DIRTY`] nodes and, when more change at once (a
//! link carrying thousands of spans goes down), it falls back to "everything is dirty",
//! which costs one pass over the tables. The reported set holds at most one entry per node
//! the span table can hold, so a node is reported reachable once and unreachable once.

use crate::crc::Crc32c;
use crate::link::SessionSlot;

use super::event::{Notice, NOTICE_SLACK};
use super::types::NodeAddr;
use super::Node;
use crate::link::index::PosIndex;

/// Nodes tracked individually before falling back to a full pass.
pub(crate) const DIRTY: usize = 64;

/// One changed node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DirtyNode {
    pub node: NodeAddr,
    /// Its relays must be planned again.
    pub plan: bool,
    /// Its reachability must be compared with what was reported.
    pub reach: bool,
    /// Marked since its last planning (else it waits for room on a blocked link).
    pub fresh: bool,
}

/// The changed nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Dirty {
    pub items: heapless::Vec<DirtyNode, DIRTY>,
    /// Every node must be planned (the list overflowed, or the connections changed).
    pub plan_all: bool,
    /// `plan_all` was set since the last planning (else it waits for room).
    pub plan_all_fresh: bool,
    /// Where an interrupted `plan_all` pass resumes.
    pub all_cursor: usize,
    /// The current `plan_all` pass was interrupted (a confirming pass follows).
    pub all_interrupted: bool,
    /// Every node's reachability must be compared.
    pub reach_all: bool,
    /// Something was marked since the last planning pass.
    pub fresh: bool,
}

impl Dirty {
    pub const fn new() -> Self {
        Dirty {
            items: heapless::Vec::new(),
            plan_all: false,
            plan_all_fresh: false,
            all_cursor: 0,
            all_interrupted: false,
            reach_all: false,
            fresh: false,
        }
    }

    /// `node`'s spans changed.
    pub fn mark(&mut self, node: NodeAddr) {
        self.fresh = true;
        if let Some(e) = self.items.iter_mut().find(|e| e.node == node) {
            e.plan = true;
            e.reach = true;
            e.fresh = true;
            return;
        }
        let e = DirtyNode {
            node,
            plan: true,
            reach: true,
            fresh: true,
        };
        if self.items.push(e).is_err() {
            self.mark_all_plans();
            self.reach_all = true;
        }
    }

    /// The connections changed: every node must be planned again (from the start).
    pub fn mark_all_plans(&mut self) {
        self.fresh = true;
        self.plan_all = true;
        self.plan_all_fresh = true;
        self.all_cursor = 0;
        self.all_interrupted = false;
    }

    pub fn has_plan_work(&self) -> bool {
        self.plan_all || self.items.iter().any(|e| e.plan)
    }

    pub fn has_reach_work(&self) -> bool {
        self.reach_all || self.items.iter().any(|e| e.reach)
    }

    /// Drops entries with nothing left to do.
    pub fn compact(&mut self) {
        self.items.retain(|e| e.plan || e.reach);
    }
}

/// The nodes reported [`Reachable`](super::NodeEvent::Reachable) and not since reported
/// unreachable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ReachSet<const N: usize> {
    items: heapless::Vec<NodeAddr, N>,
    idx: PosIndex<N>,
}

fn hash(n: &NodeAddr) -> u64 {
    crate::span::node_hash(&n.peer_id, &n.pfs_id)
}

impl<const N: usize> ReachSet<N> {
    pub const fn new() -> Self {
        ReachSet {
            items: heapless::Vec::new(),
            idx: PosIndex::new(),
        }
    }

    fn position(&self, n: &NodeAddr) -> Option<usize> {
        self.idx
            .find(hash(n), |p| self.items.get(p).is_some_and(|x| x == n))
    }

    pub fn contains(&self, n: &NodeAddr) -> bool {
        self.position(n).is_some()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn get(&self, p: usize) -> Option<&NodeAddr> {
        self.items.get(p)
    }

    pub fn insert(&mut self, n: NodeAddr) -> bool {
        let p = self.items.len();
        if self.items.push(n).is_err() {
            return false;
        }
        let ok = self.idx.insert(hash(&n), p);
        debug_assert!(ok);
        true
    }

    pub fn remove(&mut self, n: &NodeAddr) {
        let Some(p) = self.position(n) else {
            return;
        };
        let items = &self.items;
        self.idx
            .remove(hash(n), p, |q| items.get(q).map_or(0, hash));
        let last = self.items.len() - 1;
        if p != last {
            if let Some(l) = self.items.get(last).copied() {
                self.idx.moved(hash(&l), last, p);
            }
        }
        self.items.swap_remove(p);
    }
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
    /// True when a span of `node` arrived on a link and we do not advertise it ourselves.
    pub(super) fn is_reachable(&self, node: &NodeAddr) -> bool {
        let mut remote = false;
        for e in self.spans.node_entries(node.peer_id, node.pfs_id) {
            if e.key.via.is_local() {
                return false;
            }
            remote = true;
        }
        remote
    }

    /// Compares one node's reachability with what was reported; queues the event. Returns
    /// false when the notice queue has no room (try again later).
    fn report_reach(&mut self, node: NodeAddr) -> Option<bool> {
        let now = self.is_reachable(&node);
        let was = self.reach.contains(&node);
        if now == was {
            return Some(false);
        }
        if self.notices.free() <= NOTICE_SLACK {
            return None;
        }
        if now {
            let dist = self
                .spans
                .best_remote(&node.peer_id, &node.pfs_id)
                .map_or(0, |e| e.advertised_dist());
            if !self.reach.insert(node) {
                return Some(false);
            }
            self.notices.push(Notice::Reachable(node, dist));
        } else {
            self.reach.remove(&node);
            self.notices.push(Notice::Unreachable(node));
        }
        Some(true)
    }

    /// Reports reachability changes of dirty nodes. Returns true when anything was queued.
    pub(super) fn run_reach(&mut self) -> bool {
        if !self.dirty.has_reach_work() {
            return false;
        }
        let mut did = false;
        for i in 0..self.dirty.items.len() {
            let Some(e) = self.dirty.items.get(i).copied() else {
                break;
            };
            if !e.reach {
                continue;
            }
            match self.report_reach(e.node) {
                Some(d) => {
                    did |= d;
                    if let Some(x) = self.dirty.items.get_mut(i) {
                        x.reach = false;
                    }
                }
                None => return did,
            }
        }
        self.dirty.compact();
        if self.dirty.reach_all {
            // Nodes reported reachable that no longer are.
            let mut p = 0;
            while p < self.reach.len() {
                let Some(n) = self.reach.get(p).copied() else {
                    break;
                };
                match self.report_reach(n) {
                    Some(true) => {
                        did = true; // removed: position p now holds another node
                    }
                    Some(false) => p += 1,
                    None => return did,
                }
            }
            // Nodes reachable and not reported yet.
            let mut p = 0;
            while p < self.spans.len() {
                let node = match self.spans.entries().get(p) {
                    Some(e) if self.spans.is_first_of_node(p) => NodeAddr {
                        peer_id: e.span.peer_id,
                        pfs_id: e.span.pfs_id,
                    },
                    _ => {
                        p += 1;
                        continue;
                    }
                };
                match self.report_reach(node) {
                    Some(d) => did |= d,
                    None => return did,
                }
                p += 1;
            }
            self.dirty.reach_all = false;
        }
        did
    }
}
