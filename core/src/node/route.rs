//! Routing over circuits: transactions stacked on a LNK_SPAN (or on another transaction)
//! and relayed hop by hop.
//!
//! A circuit is the msgid of an open transaction on the link, written in `circuit`, with
//! REVCIRC telling whose it is (set: the receiver opened it). To reach node X a node opens
//! its transaction on the link its best span of X came in on, stacked on that LNK_SPAN (the
//! peer's transaction, so REVCIRC is set). The peer finds the circuit among the LNK_SPANs it
//! opened: one of its relays, whose source is a span it received on another link (or its own
//! node: then the transaction is for it). It opens the same command on that link, stacked on
//! the source span, and remembers the pair: a [`Route`] maps (link A, transaction A) to
//! (link B, transaction B), each stacked on its circuit. Every later frame of either
//! transaction is sent on over the other one, whatever its command (unknown commands keep
//! their extended header). Answers go back the same way: the link layer sets REPLY,
//! REVTRANS and REVCIRC for each hop.
//!
//! A circuit dies with its transaction: when a LNK_SPAN closes (either way) or its link is
//! lost, every route stacked on it on that link dies, and so do routes stacked on those
//! ("kill"). Killing a route sends `LNK_ERROR|ABORT|DELETE` with error LOSTLINK on each of
//! its ends whose direction is still open, so both endpoints get the transaction closed
//! with LOSTLINK and the relays free their records once their link transactions finish.
//! Both sides of a link see a LNK_SPAN close, and both kill what was stacked on it, so
//! neither waits for the other. A CREATE over a circuit that does not exist (or is
//! closing) is answered at once with CANTCIRC.

use crate::crc::Crc32c;
use crate::errcode::txn as err;
use crate::link::txn::Dir;
use crate::link::SessionSlot;
use crate::link::{Outgoing, SendError, TxnId};
use crate::span::LinkId;
use crate::wire::{Command, Flags};

use super::Node;

/// One end of a routed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteEnd {
    /// The link.
    pub link: LinkId,
    /// The transaction on it.
    pub txn: TxnId,
    /// The transaction it is stacked on (its circuit) on the same link.
    pub circuit: TxnId,
    /// The link reported the transaction closed.
    pub closed: bool,
    /// A LOSTLINK abort is owed on this end (sent when the link has room).
    pub kill: bool,
}

/// A routed transaction: two ends at a relay, or one end for an application transaction
/// over a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The ends: `[0]` where the CREATE came from (or the application's), `[1]` where it
    /// was sent on (`None` for the application's).
    pub ends: [Option<RouteEnd>; 2],
    /// The route was lost: frames on it are dropped, its ends are being aborted.
    pub dying: bool,
}

impl Route {
    /// True when it is an application transaction (one end).
    pub fn is_app(&self) -> bool {
        self.ends[1].is_none()
    }
}

/// The routes, at most `N` (linear scans: `N` is small).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RouteTable<const N: usize> {
    items: heapless::Vec<Route, N>,
}

impl<const N: usize> RouteTable<N> {
    pub const fn new() -> Self {
        RouteTable {
            items: heapless::Vec::new(),
        }
    }

    pub fn all(&self) -> &[Route] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_full(&self) -> bool {
        self.items.is_full()
    }

    pub fn insert(&mut self, r: Route) -> bool {
        self.items.push(r).is_ok()
    }

    /// The route and end index of transaction `txn` on `link`.
    pub fn find(&self, link: LinkId, txn: TxnId) -> Option<(usize, usize)> {
        self.items.iter().enumerate().find_map(|(p, r)| {
            r.ends
                .iter()
                .position(|e| e.is_some_and(|e| e.link == link && e.txn == txn))
                .map(|i| (p, i))
        })
    }

    pub fn get(&self, p: usize) -> Option<&Route> {
        self.items.get(p)
    }

    pub fn get_mut(&mut self, p: usize) -> Option<&mut Route> {
        self.items.get_mut(p)
    }

    pub fn remove_at(&mut self, p: usize) {
        if p < self.items.len() {
            self.items.swap_remove(p);
        }
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
    /// Marks route `p` lost: every end not yet closed owes a LOSTLINK abort.
    pub(super) fn kill_route(&mut self, p: usize) {
        let Some(r) = self.routes.get_mut(p) else {
            return;
        };
        if r.dying {
            return;
        }
        r.dying = true;
        for e in r.ends.iter_mut().flatten() {
            if !e.closed {
                e.kill = true;
            }
        }
        self.stats.routes_lost += 1;
        self.work = true;
    }

    /// The transaction `txn` on `link` ended or stopped being usable as a circuit: every
    /// route stacked on it dies, and every route stacked on those (to a fixpoint).
    pub(super) fn kill_stacked(&mut self, link: LinkId, txn: TxnId) {
        for p in 0..self.routes.len() {
            let hit = self.routes.get(p).is_some_and(|r| {
                !r.dying
                    && r.ends
                        .iter()
                        .flatten()
                        .any(|e| e.link == link && e.circuit == txn)
            });
            if hit {
                self.kill_route(p);
            }
        }
        // Nested circuits: a route stacked on an end of a dying route dies too. Each pass
        // kills at least one route or stops, so at most ROUTES passes.
        for _ in 0..ROUTES {
            let mut changed = false;
            for p in 0..self.routes.len() {
                let Some(r) = self.routes.get(p).copied() else {
                    continue;
                };
                if r.dying {
                    continue;
                }
                let stacked_on_dying = r.ends.iter().flatten().any(|e| {
                    self.routes.all().iter().any(|d| {
                        d.dying
                            && d.ends
                                .iter()
                                .flatten()
                                .any(|x| x.link == e.link && x.txn == e.circuit)
                    })
                });
                if stacked_on_dying {
                    self.kill_route(p);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Sends the owed LOSTLINK aborts that fit. Returns true when any was sent.
    pub(super) fn run_kills(&mut self) -> bool {
        let mut did = false;
        let now = self.now;
        for p in 0..self.routes.len() {
            for i in 0..2 {
                let Some(e) = self.routes.get(p).and_then(|r| r.ends[i]) else {
                    continue;
                };
                if !e.kill {
                    continue;
                }
                let done = match self.slot_mut(e.link) {
                    None => true,
                    Some(slot) => match slot.conn.txn_state(e.txn) {
                        None => true,
                        // Our direction is closed: the peer's DELETE will finish it.
                        Some(s) if s.local == Dir::Closed => true,
                        Some(_) => {
                            let msg = Outgoing::new(Command::LnkError).with_error(err::LOSTLINK);
                            match slot
                                .conn
                                .send(now, e.txn, &msg, Flags::ABORT | Flags::DELETE)
                            {
                                Ok(()) => {
                                    did = true;
                                    true
                                }
                                Err(SendError::WouldBlock { .. }) => false,
                                Err(_) => true,
                            }
                        }
                    },
                };
                if done {
                    if let Some(end) = self.routes.get_mut(p).and_then(|r| r.ends[i].as_mut()) {
                        end.kill = false;
                    }
                }
            }
        }
        did
    }

    /// The link reported transaction `txn` of route end (`p`, `i`) closed. Frees the route
    /// when every end is closed; a lost end (its link died) kills the rest of the route.
    pub(super) fn route_end_closed(&mut self, p: usize, i: usize, lost: bool) {
        let Some(r) = self.routes.get_mut(p) else {
            return;
        };
        if let Some(e) = r.ends[i].as_mut() {
            e.closed = true;
            e.kill = false;
        }
        let all_closed = r.ends.iter().flatten().all(|e| e.closed);
        if all_closed {
            self.routes.remove_at(p);
        } else if lost {
            self.kill_route(p);
        }
    }
}
