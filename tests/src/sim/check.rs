//! Invariants checked on a quiet world, each against truth computed independently of the
//! node code: BFS over the live topology, the state at the other end of every link, and the
//! relay rules recomputed here from the span entries (not with the span module).

use std::collections::HashMap;

use dmsg_core::link::Side;
use dmsg_core::node::{NodeAddr, Relay, RelayState};
use dmsg_core::secure::SecureError;
use dmsg_core::span::{ConnFilter, LinkId, SpanEntry, SpanKey, MAX_DIST, RELAYS_PER_NODE};
use dmsg_core::wire::MsgId;

use super::node::SimNode;
use super::topo::bfs;
use super::world::{addr_of, Sim};

/// What to check.
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    /// No protocol violation may be counted on any link.
    pub no_violations: bool,
    /// Every workload transaction must have finished.
    pub txns_finished: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            no_violations: true,
            txns_finished: true,
        }
    }
}

/// The far end of `link` at node `i`: (node, link there).
fn peer_of<N: SimNode>(sim: &Sim<N>, i: usize, link: LinkId) -> Option<(usize, LinkId)> {
    let &(_, c) = sim.nodes[i].links.iter().find(|&&(l, _)| l == link)?;
    let conn = &sim.conns[c];
    if !conn.alive {
        return None;
    }
    if conn.ends[0] == (i, link) {
        Some(conn.ends[1])
    } else {
        Some(conn.ends[0])
    }
}

fn node_of(e: &SpanEntry) -> NodeAddr {
    NodeAddr {
        peer_id: e.span.peer_id,
        pfs_id: e.span.pfs_id,
    }
}

/// Per-node lookups built once.
struct Index<'a> {
    /// Relays by (connection, our msgid).
    relay_by_txn: HashMap<(LinkId, MsgId), &'a Relay>,
}

fn index<N: SimNode>(node: &N) -> Index<'_> {
    let mut relay_by_txn = HashMap::new();
    for r in node.relays() {
        if let Some(t) = r.txn {
            relay_by_txn.insert((r.conn, t.msgid()), r);
        }
    }
    Index { relay_by_txn }
}

/// The live graph: edges whose connection is up and whose LNK_CONNs were exchanged.
pub fn live_edges<N: SimNode>(sim: &Sim<N>) -> Vec<(usize, usize)> {
    let mut live = Vec::new();
    for e in &sim.edges {
        let Some(c) = e.conn else { continue };
        let conn = &sim.conns[c];
        let ok = conn.alive
            && conn.ends.iter().all(|&(x, l)| {
                sim.nodes[x].node.link_is_open(l) && sim.nodes[x].node.link_peer_conn(l).is_some()
            });
        if ok {
            live.push((e.a, e.b));
        }
    }
    live
}

/// Checks every invariant; returns the first violation found.
pub fn check<N: SimNode>(sim: &Sim<N>, checks: Checks) -> Result<(), String> {
    let n = sim.nodes.len();
    let live = live_edges(sim);
    let idx: Vec<Index<'_>> = sim.nodes.iter().map(|s| index(&*s.node)).collect();

    // 1. Distances: the best span of every origin is the BFS hop count. A span is relayed
    // only while its relayed dist is <= MAX_DIST, so a node holds spans received with dist
    // <= 16: hop counts up to MAX_DIST + 1 are present, farther origins absent.
    for x in 0..n {
        let dist = bfs(n, &live, x);
        let ax = addr_of(x);
        for (v, d) in dist.iter().enumerate() {
            if v == x {
                continue;
            }
            let best = sim.nodes[v]
                .node
                .best_remote(&ax)
                .map(|e| e.advertised_dist());
            let want = d.filter(|&d| d <= MAX_DIST + 1);
            if best != want {
                return Err(format!(
                    "node {v}: best distance to node {x} is {best:?}, BFS says {want:?} (hop count {d:?})\n{}",
                    sim.nodes[v].node.tree()
                ));
            }
        }
    }

    // 2. Every span held is backed by an open relay at the other end of its link, carrying
    // the source's distance, and every relay is held by the other end (no stale state).
    for v in 0..n {
        for e in sim.nodes[v].node.span_entries() {
            if e.key.via.is_local() {
                continue;
            }
            let Some((u, lu)) = peer_of(sim, v, e.key.via) else {
                return Err(format!("node {v}: span {:?} on a dead link", e.key));
            };
            let Some(r) = idx[u].relay_by_txn.get(&(lu, e.key.msgid)) else {
                return Err(format!(
                    "node {v}: span {:?} has no relay at node {u} (stale)",
                    e.key
                ));
            };
            if r.state != RelayState::Open {
                return Err(format!(
                    "node {v}: span {:?} backed by {:?} relay",
                    e.key, r.state
                ));
            }
            let Some(src) = sim.nodes[u].node.span(r.source) else {
                return Err(format!("node {u}: relay of a span it does not hold: {r:?}"));
            };
            if src.advertised_dist() != e.span.dist || node_of(&src) != node_of(e) {
                return Err(format!(
                    "node {v}: span {:?} dist {} disagrees with its source at node {u} ({})",
                    e.key,
                    e.span.dist,
                    src.advertised_dist()
                ));
            }
        }
        for r in sim.nodes[v].node.relays() {
            if r.state != RelayState::Open {
                return Err(format!("node {v}: relay {r:?} not open at quiescence"));
            }
            let Some(t) = r.txn else {
                return Err(format!("node {v}: relay without transaction {r:?}"));
            };
            let Some((u, lu)) = peer_of(sim, v, r.conn) else {
                return Err(format!("node {v}: relay {r:?} on a dead link"));
            };
            let key = SpanKey {
                via: lu,
                msgid: t.msgid(),
            };
            if sim.nodes[u].node.span(key).is_none() {
                return Err(format!("node {v}: relay {r:?} not held by node {u}"));
            }
        }
    }

    // 3. No relay loops: every span's derivation chain reaches an origin's own span, the
    // distance dropping by one per hop.
    for v in 0..n {
        for e in sim.nodes[v].node.span_entries() {
            let (mut at, mut key, mut dist) = (v, e.key, e.advertised_dist());
            for _ in 0..=(MAX_DIST + 2) {
                if key.via.is_local() {
                    break;
                }
                let Some((u, lu)) = peer_of(sim, at, key.via) else {
                    return Err(format!("node {at}: chain through dead link"));
                };
                let Some(r) = idx[u].relay_by_txn.get(&(lu, key.msgid)) else {
                    return Err(format!("node {at}: broken chain at {key:?}"));
                };
                let Some(src) = sim.nodes[u].node.span(r.source) else {
                    return Err(format!("node {u}: chain source missing"));
                };
                if src.advertised_dist() + 1 != dist {
                    return Err(format!(
                        "relay loop or bad distance at node {u}: {} then {dist}",
                        src.advertised_dist()
                    ));
                }
                at = u;
                key = r.source;
                dist = src.advertised_dist();
            }
            if !key.via.is_local() {
                return Err(format!(
                    "node {v}: span {:?} chain does not end (loop)",
                    e.key
                ));
            }
        }
    }

    // 4. The relays are exactly the plan: for every connection whose peer sent LNK_CONN,
    // the best 2 spans of every node by (advertised distance, link, msgid) among those
    // that did not come in on it, are relayed at a distance <= 16 and pass its peer_mask.
    for v in 0..n {
        let node = &sim.nodes[v].node;
        let mut by_node: HashMap<NodeAddr, Vec<(u32, SpanKey, u8)>> = HashMap::new();
        for e in node.span_entries() {
            by_node.entry(node_of(e)).or_default().push((
                e.advertised_dist(),
                e.key,
                e.span.peer_type,
            ));
        }
        for list in by_node.values_mut() {
            list.sort();
        }
        let mut relays: HashMap<(LinkId, NodeAddr), Vec<SpanKey>> = HashMap::new();
        for r in node.relays() {
            relays.entry((r.conn, r.node)).or_default().push(r.source);
        }
        for link in node.link_ids() {
            let Some(pc) = node.link_peer_conn(link) else {
                continue;
            };
            if !node.link_is_open(link) {
                continue;
            }
            let f = ConnFilter {
                link,
                peer_mask: pc.peer_mask,
                peer_type: pc.peer_type,
                peer_id: pc.peer_id,
            };
            for (a, list) in &by_node {
                let mut want: Vec<SpanKey> = list
                    .iter()
                    .filter(|(d, k, t)| {
                        k.via != link && *d <= MAX_DIST && f.peer_mask & (1u64 << t) != 0
                    })
                    .take(RELAYS_PER_NODE)
                    .map(|x| x.1)
                    .collect();
                want.sort();
                let mut have = relays.remove(&(link, *a)).unwrap_or_default();
                have.sort();
                if want != have {
                    return Err(format!(
                        "node {v} link {link}: relays of {a} are {have:?}, the rules want {want:?}"
                    ));
                }
            }
        }
        if let Some(((link, a), keys)) = relays.into_iter().next() {
            return Err(format!(
                "node {v}: relays {keys:?} of {a} on link {link} that nothing wants"
            ));
        }
        if node.has_pending_work() {
            return Err(format!("node {v} still has pending work"));
        }
    }

    // 5. Nothing left over: no routes, and the only open transactions on a link are its
    // spans (theirs) and relays (ours).
    for v in 0..n {
        let node = &sim.nodes[v].node;
        if !node.routes().is_empty() {
            return Err(format!(
                "node {v}: {} routes left: {:?}",
                node.routes().len(),
                node.routes()
            ));
        }
        let mut spans: HashMap<LinkId, usize> = HashMap::new();
        for e in node.span_entries() {
            *spans.entry(e.key.via).or_default() += 1;
        }
        let mut relays: HashMap<LinkId, usize> = HashMap::new();
        for r in node.relays() {
            *relays.entry(r.conn).or_default() += 1;
        }
        for link in node.link_ids() {
            let spans = spans.get(&link).copied().unwrap_or(0);
            let relays = relays.get(&link).copied().unwrap_or(0);
            let theirs = node.link_open_txns(link, Side::Theirs);
            let ours = node.link_open_txns(link, Side::Ours);
            if theirs != spans || ours != relays {
                return Err(format!(
                    "node {v} link {link}: {theirs} peer txns for {spans} spans, {ours} own for {relays} relays"
                ));
            }
        }
    }

    // 6. Protocol violations.
    if checks.no_violations {
        for v in 0..n {
            for link in sim.nodes[v].node.link_ids() {
                if let Some(s) = sim.nodes[v].node.link_stats(link) {
                    if s.violations.total() != 0 || s.ctl_dropped != 0 {
                        return Err(format!(
                            "node {v} link {link}: violations {:?} ctl_dropped {}",
                            s.violations, s.ctl_dropped
                        ));
                    }
                }
            }
        }
    }

    // 7. Every transaction opened over a route finished, on both ends.
    if checks.txns_finished {
        for (i, t) in sim.txns.iter().enumerate() {
            if t.closed.is_none() && !t.orphaned {
                return Err(format!(
                    "txn {i} ({} -> {}) never finished: {t:?}",
                    t.src, t.dst
                ));
            }
        }
        for (i, t) in sim.ins.iter().enumerate() {
            if t.closed.is_none() && !t.orphaned {
                return Err(format!(
                    "in-txn {i} at node {} never finished: {t:?}",
                    t.node
                ));
            }
        }
    }
    Ok(())
}

/// The invariants of encrypted links (`SimConfig::secure`), on a quiet world:
/// - no plaintext byte a channel delivered differs from what the other node wrote (no
///   forged byte reached a frame decoder), and no link broke on a decode error or protocol
///   violations (corruption never got past a channel);
/// - every transport whose ciphertext was corrupted in flight is gone, and every secure
///   channel failure happened on a corrupted transport or an impostor's dial (no false
///   alarm); an impostor that got as far as the accepting node was refused by policy;
/// - every live transport completed its handshake and has nothing waiting to be sent.
pub fn check_secure<N: SimNode>(sim: &Sim<N>) -> Result<(), String> {
    let c = &sim.counters;
    if c.forged_bytes != 0 {
        return Err(format!(
            "{} forged plaintext bytes delivered",
            c.forged_bytes
        ));
    }
    if c.decode_closes != 0 {
        return Err(format!(
            "{} links broke on a decode error or violations despite encryption",
            c.decode_closes
        ));
    }
    for (&k, link) in &sim.secure {
        let conn = &sim.conns[k];
        if link.corrupted && conn.alive {
            return Err(format!("conn {k}: corrupted in flight, still up"));
        }
        if conn.alive && !link.settled() {
            return Err(format!(
                "conn {k}: live but its secure channels are not settled"
            ));
        }
    }
    for &(k, node, err) in &sim.secure_errors {
        let Some(link) = sim.secure.get(&k) else {
            return Err(format!(
                "conn {k}: secure error {err:?} on an unknown transport"
            ));
        };
        if !link.corrupted && !link.impostor {
            return Err(format!(
                "conn {k}: secure channel at node {node} failed ({err:?}) with nothing altered"
            ));
        }
        if link.impostor && !link.corrupted && err != SecureError::PeerRefused {
            return Err(format!(
                "conn {k}: impostor's dial ended with {err:?}, not PeerRefused"
            ));
        }
    }
    Ok(())
}
