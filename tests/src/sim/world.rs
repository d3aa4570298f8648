//! The simulated world: nodes, byte-stream links with delay, faults, a workload, virtual
//! time. Everything is driven from one seeded [`Rng`], so a seed replays exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use dmsg_core::crc::DefaultCrc;
use dmsg_core::link::CloseReason;
use dmsg_core::link::{classify_stream, LinkConfig, Outgoing, SessionOffer, StreamStart};
use dmsg_core::node::{NodeAddr, NodeConfig, NodeEvent, NodeTxn};
use dmsg_core::secure::{Keypair, PublicKey, SecureError, SecureEvent};
use dmsg_core::span::LinkId;
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::{peer_type, ConnRepr, SpanRepr};
use dmsg_core::wire::{Command, Flags, Label, Uuid};

use super::node::SimNode;
use super::rng::Rng;
use super::secure::{impostor_keypair, node_keypair, SecureLink, SimCryptoRng};
use super::topo::Topology;

/// The cluster id every simulated node advertises.
pub const CLUSTER: Uuid = Uuid([0xC1; 16]);

/// The address of simulated node `i`.
pub fn addr_of(i: usize) -> NodeAddr {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    id[8] = 0x5A;
    NodeAddr {
        peer_id: CLUSTER,
        pfs_id: Uuid(id),
    }
}

/// Knobs of a run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// One-way delay range of a link, microseconds.
    pub delay_us: (u64, u64),
    /// Delay before a lost link is connected again, microseconds.
    pub reconnect_us: (u64, u64),
    /// Range of the buffer size handed to `poll_transmit` (so frames cross in pieces).
    pub chunk: (usize, usize),
    /// Keep a trace of the last this-many actions (printed on failure).
    pub trace: usize,
    /// Offer the reliable session on every link (the nodes need session storage). A lost
    /// transport then suspends the links of its edge; the edge's first node dials again
    /// and resumes, the second routes the new stream by its first 64 bytes.
    pub sessions: bool,
    /// Run every transport through a pair of secure channels (`super::secure`): Noise IK
    /// with the dialing end as initiator, keys derived from the seed.
    pub secure: bool,
}

impl SimConfig {
    /// Defaults for `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            delay_us: (200, 20_000),
            reconnect_us: (50_000, 1_500_000),
            chunk: (64, 2048),
            trace: std::env::var("SIM_TRACE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(400),
            sessions: false,
            secure: false,
        }
    }

    /// The same knobs with every transport encrypted (`super::secure`).
    pub fn encrypted(self) -> SimConfig {
        SimConfig {
            secure: true,
            ..self
        }
    }

    /// Defaults for `seed`, with the reliable session on every link.
    pub fn with_sessions(seed: u64) -> SimConfig {
        SimConfig {
            sessions: true,
            ..SimConfig::new(seed)
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Pipe {
    q: VecDeque<(Instant, Vec<u8>)>,
    last: Instant,
}

/// One transport connection (one edge, one incarnation).
#[derive(Clone, Debug)]
pub struct Conn {
    /// The edge it belongs to.
    pub edge: usize,
    /// Its two ends: (node, link id at that node).
    pub ends: [(usize, LinkId); 2],
    pipes: [Pipe; 2],
    pending: [Vec<u8>; 2],
    /// False once reset.
    pub alive: bool,
    clogged_until: Instant,
    /// A resumed stream the second end has not routed to its link yet (its link id in
    /// `ends` is a placeholder until then).
    unbound: bool,
}

/// One edge of the topology.
#[derive(Clone, Debug)]
pub struct Edge {
    /// Its end nodes.
    pub a: usize,
    /// Its end nodes.
    pub b: usize,
    /// The live connection, if any.
    pub conn: Option<usize>,
    /// False while partitioned.
    pub enabled: bool,
    reconnect_pending: bool,
    /// With sessions: the two links of the edge's session (kept across transports), until
    /// one of them goes down.
    pub session: Option<[LinkId; 2]>,
}

/// A transaction of the workload.
#[derive(Clone, Debug)]
pub struct TxnRecord {
    /// Opener.
    pub src: usize,
    /// Target.
    pub dst: usize,
    /// Held open for a while (else a one-frame request).
    pub hold: bool,
    /// The opener's handle.
    pub txn: NodeTxn,
    /// Incarnation of the opener when opened.
    pub incarnation: u32,
    /// When.
    pub opened_at: Instant,
    /// The error it closed with.
    pub closed: Option<u32>,
    /// An answer arrived.
    pub answered: bool,
    /// Answers ("resp") that arrived: more than one would be a duplicate.
    pub answers: u32,
    /// Times the target saw it opened: more than one would be a duplicate.
    pub delivered: u32,
    /// The opener restarted: its side is gone with it.
    pub orphaned: bool,
}

/// A transaction opened to a node (the answering side).
#[derive(Clone, Debug)]
pub struct InRecord {
    /// The node.
    pub node: usize,
    /// Its handle.
    pub txn: NodeTxn,
    /// Incarnation of the node.
    pub incarnation: u32,
    /// The error it closed with.
    pub closed: Option<u32>,
    /// The node restarted.
    pub orphaned: bool,
}

/// Per-node state of the world.
pub struct SimNodeState<N> {
    /// The node.
    pub node: Box<N>,
    /// Its address.
    pub addr: NodeAddr,
    /// Its links: (link id, connection index).
    pub links: Vec<(LinkId, usize)>,
    /// Restarts so far.
    pub incarnation: u32,
    timer: Option<Instant>,
    out_txns: BTreeMap<NodeTxn, usize>,
    in_txns: BTreeMap<NodeTxn, usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Deliver {
        conn: usize,
        dir: usize,
    },
    Timer {
        node: usize,
    },
    Reconnect {
        edge: usize,
    },
    CloseHold {
        rec: usize,
    },
    Unclog {
        conn: usize,
    },
    /// Closes a connection (after a stateless RESET was written to it).
    Drop {
        conn: usize,
    },
    /// Encryption: the handshake deadline of a connection's channels.
    SecureDeadline {
        conn: usize,
    },
    /// An answer that found no room (`WouldBlock`), tried again.
    Answer {
        node: usize,
        incarnation: u32,
        txn: NodeTxn,
        reply: Reply,
    },
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimCounters {
    /// Bytes written to links.
    pub bytes: u64,
    /// Transmit calls that produced bytes.
    pub writes: u64,
    /// Connections made (first and again).
    pub connects: u64,
    /// Link losses injected.
    pub losses: u64,
    /// Links the nodes closed themselves (keepalive, errors).
    pub node_closes: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Clogs.
    pub clogs: u64,
    /// Workload transactions opened.
    pub opened: u64,
    /// Opens refused (not reachable...).
    pub open_refused: u64,
    /// Sessions: transports dialled again to resume a suspended link.
    pub redials: u64,
    /// Sessions: resumed streams the accepting end routed to a link.
    pub resumes_routed: u64,
    /// Sessions: RESUMEs for no known session, answered with a stateless RESET.
    pub stateless_resets: u64,
    /// `Closed` events for a transaction the world did not know open (a duplicate).
    pub unknown_closes: u64,
    /// Sessions: transports a node gave up itself (idle timeout, broken stream).
    pub node_suspends: u64,
    /// Links that went down because their byte stream broke (a decode error or too many
    /// protocol violations). With encryption on, a corrupted byte never reaches the frame
    /// decoder, so this stays 0.
    pub decode_closes: u64,
    /// Encryption: handshakes completed (counted at the initiator).
    pub secure_handshakes: u64,
    /// Encryption: transports ended by a secure channel error (see `Sim::secure_errors`).
    pub secure_failures: u64,
    /// Encryption: ciphertext bytes altered in flight.
    pub corruptions: u64,
    /// Encryption: dials made with a key nobody knows.
    pub impostors: u64,
    /// Encryption: plaintext bytes a channel delivered that the other node never wrote
    /// (a forged byte; must stay 0).
    pub forged_bytes: u64,
}

/// The world.
pub struct Sim<N: SimNode> {
    /// Knobs.
    pub cfg: SimConfig,
    /// The PRNG.
    pub rng: Rng,
    /// Virtual time.
    pub now: Instant,
    /// Topology.
    pub topo: Topology,
    /// Nodes.
    pub nodes: Vec<SimNodeState<N>>,
    /// Edges.
    pub edges: Vec<Edge>,
    /// Every connection ever made (dead ones stay, marked).
    pub conns: Vec<Conn>,
    /// Workload transactions.
    pub txns: Vec<TxnRecord>,
    /// Transactions opened to nodes.
    pub ins: Vec<InRecord>,
    /// Counters.
    pub counters: SimCounters,
    /// Encryption: the secure channels of every encrypted connection, by connection index
    /// (kept after the connection dies, for the checks).
    pub secure: BTreeMap<usize, Box<SecureLink>>,
    /// Encryption: every secure channel failure: (connection, node whose channel failed,
    /// the error).
    pub secure_errors: Vec<(usize, usize, SecureError)>,
    /// Encryption: the nodes' static keys (every node knows every public key).
    keys: Vec<Keypair>,
    /// Encryption: the next dial of these edges uses an impostor's key.
    impostor_next: Vec<bool>,
    queue: BinaryHeap<Reverse<(Instant, u64, Action)>>,
    seq: u64,
    dirty: VecDeque<usize>,
    is_dirty: Vec<bool>,
    trace: VecDeque<String>,
    buf: Vec<u8>,
}

impl<N: SimNode> Sim<N> {
    /// A world of `topo`'s nodes, every edge connecting at time 0 (with a small jitter).
    pub fn new(topo: Topology, cfg: SimConfig) -> Sim<N> {
        let rng = Rng::new(cfg.seed);
        let mut sim = Sim {
            rng,
            now: Instant::ZERO,
            nodes: Vec::new(),
            edges: topo
                .edges
                .iter()
                .map(|&(a, b)| Edge {
                    a,
                    b,
                    conn: None,
                    enabled: true,
                    reconnect_pending: false,
                    session: None,
                })
                .collect(),
            conns: Vec::new(),
            txns: Vec::new(),
            ins: Vec::new(),
            counters: SimCounters::default(),
            secure: BTreeMap::new(),
            secure_errors: Vec::new(),
            keys: (0..topo.n).map(|i| node_keypair(cfg.seed, i)).collect(),
            impostor_next: vec![false; topo.edges.len()],
            queue: BinaryHeap::new(),
            seq: 0,
            dirty: VecDeque::new(),
            is_dirty: vec![false; topo.n],
            trace: VecDeque::new(),
            buf: vec![0u8; 4096],
            topo,
            cfg,
        };
        for i in 0..sim.topo.n {
            let node = sim.make_node(i);
            sim.nodes.push(SimNodeState {
                node,
                addr: addr_of(i),
                links: Vec::new(),
                incarnation: 0,
                timer: None,
                out_txns: BTreeMap::new(),
                in_txns: BTreeMap::new(),
            });
        }
        for e in 0..sim.edges.len() {
            let t = sim.rng.range(0, 5_000);
            sim.schedule(
                Instant::ZERO + Duration::from_micros(t),
                Action::Reconnect { edge: e },
            );
            sim.edges[e].reconnect_pending = true;
        }
        sim
    }

    fn make_node(&mut self, i: usize) -> Box<N> {
        let cfg = NodeConfig {
            label: Label::new(&format!("node-{i}")).unwrap_or(Label::EMPTY),
        };
        let mut node = N::boxed(cfg);
        let a = addr_of(i);
        let span = SpanRepr {
            peer_id: a.peer_id,
            pfs_id: a.pfs_id,
            pfs_type: 1,
            peer_type: peer_type::HAMMER2,
            proto_version: 1,
            dist: 0,
            peer_label: Label::new("sim").unwrap_or(Label::EMPTY),
            pfs_label: Label::new(&format!("node-{i}")).unwrap_or(Label::EMPTY),
            ..SpanRepr::default()
        };
        node.advertise(span).expect("room for our own span");
        node
    }

    /// Notes an action in the trace.
    pub fn note(&mut self, s: impl FnOnce() -> String) {
        if self.cfg.trace == 0 {
            return;
        }
        if self.trace.len() == self.cfg.trace {
            self.trace.pop_front();
        }
        let line = format!("[{:>10}us] {}", self.now.as_micros(), s());
        self.trace.push_back(line);
    }

    /// The trace, oldest first.
    pub fn trace(&self) -> String {
        self.trace.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn schedule(&mut self, at: Instant, a: Action) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, a)));
    }

    fn mark(&mut self, i: usize) {
        if !self.is_dirty[i] {
            self.is_dirty[i] = true;
            self.dirty.push_back(i);
        }
    }

    // ------------------------------------------------------------------------------
    // Connections

    fn connect(&mut self, e: usize) {
        if self.cfg.sessions && self.redial(e) {
            return;
        }
        let (a, b) = (self.edges[e].a, self.edges[e].b);
        let mut links = [LinkId(0); 2];
        for (k, &n) in [a, b].iter().enumerate() {
            let session = self
                .cfg
                .sessions
                .then(|| SessionOffer::new(self.rng.next_u64() | 1));
            let cfg = LinkConfig {
                session,
                conn: ConnRepr {
                    peer_mask: u64::MAX,
                    peer_type: peer_type::ROUTER,
                    peer_label: Label::new(&format!("node-{n}")).unwrap_or(Label::EMPTY),
                    ..ConnRepr::default()
                },
                salt_seed: self.rng.next_u32(),
                ..LinkConfig::default()
            };
            match self.nodes[n].node.add_link(self.now, &cfg) {
                Ok(l) => links[k] = l,
                Err(err) => panic!("node {n} cannot add a link: {err}"),
            }
        }
        let c = self.conns.len();
        self.conns.push(Conn {
            edge: e,
            ends: [(a, links[0]), (b, links[1])],
            pipes: [Pipe::default(), Pipe::default()],
            pending: [Vec::new(), Vec::new()],
            alive: true,
            clogged_until: Instant::ZERO,
            unbound: false,
        });
        self.nodes[a].links.push((links[0], c));
        self.nodes[b].links.push((links[1], c));
        self.edges[e].conn = Some(c);
        if self.cfg.sessions {
            self.edges[e].session = Some(links);
        }
        self.counters.connects += 1;
        self.open_secure(c);
        self.note(|| {
            format!(
                "connect edge {e}: {a}/{} <-> {b}/{} (conn {c})",
                links[0], links[1]
            )
        });
        self.mark(a);
        self.mark(b);
    }

    /// With sessions: the edge's first node dials again for its suspended link. Returns
    /// false when there is nothing to resume (connect afresh).
    fn redial(&mut self, e: usize) -> bool {
        let (a, b) = (self.edges[e].a, self.edges[e].b);
        let Some([la, _]) = self.edges[e].session else {
            return false;
        };
        if !self.nodes[a].node.is_suspended(la) {
            return false;
        }
        let now = self.now;
        if let Err(err) = self.nodes[a].node.handle_reconnect(now, la) {
            self.note(|| format!("edge {e}: node {a} cannot resume {la}: {err}"));
            return false;
        }
        let c = self.conns.len();
        self.conns.push(Conn {
            edge: e,
            // The second end is bound when it routes the stream.
            ends: [(a, la), (b, LinkId::LOCAL)],
            pipes: [Pipe::default(), Pipe::default()],
            pending: [Vec::new(), Vec::new()],
            alive: true,
            clogged_until: Instant::ZERO,
            unbound: true,
        });
        self.nodes[a].links.push((la, c));
        self.edges[e].conn = Some(c);
        self.counters.connects += 1;
        self.counters.redials += 1;
        self.open_secure(c);
        self.note(|| format!("redial edge {e}: {a}/{la} -> {b} (conn {c})"));
        self.mark(a);
        true
    }

    /// The second end of a resumed stream routes it by its first 64 bytes (the recipe of
    /// `Node::find_session`): a RESUME of a live session goes to its link, anything else
    /// gets a stateless RESET and the stream is closed.
    fn route_stream(&mut self, c: usize) {
        let (b, _) = self.conns[c].ends[1];
        let crc = DefaultCrc::default();
        let Some(first) = self.conns[c].pending[1].get(..64) else {
            return; // read more
        };
        let start = classify_stream(&crc, first);
        let now = self.now;
        let link = match start {
            StreamStart::Resume(frame) => self.nodes[b].node.find_session(frame.receiver_id),
            _ => None,
        };
        let routed = link.filter(|&l| self.nodes[b].node.handle_reconnect(now, l).is_ok());
        match routed {
            Some(lb) => {
                let e = self.conns[c].edge;
                self.conns[c].ends[1] = (b, lb);
                self.conns[c].unbound = false;
                self.nodes[b].links.push((lb, c));
                if let Some(s) = self.edges[e].session.as_mut() {
                    s[1] = lb;
                }
                self.counters.resumes_routed += 1;
                self.note(|| format!("node {b} routes conn {c} to its link {lb}"));
                self.mark(b);
            }
            None => {
                let mut reset = [0u8; 64];
                let n = start.stateless_reset(&crc, &mut reset).unwrap_or(0);
                self.counters.stateless_resets += 1;
                self.note(|| format!("node {b} answers conn {c} ({start:?}) with RESET"));
                // The RESET, then the close.
                let at = self.write(c, 1, reset[..n].to_vec());
                self.schedule(at + Duration::from_micros(1), Action::Drop { conn: c });
            }
        }
    }

    /// A link went down at node `i`: its edge's session is over.
    fn session_over(&mut self, i: usize, link: LinkId) {
        for e in self.edges.iter_mut() {
            if let Some([la, lb]) = e.session {
                if (e.a == i && la == link) || (e.b == i && lb == link) {
                    e.session = None;
                }
            }
        }
    }

    /// Resets connection `c` (both ends see it closed); the edge reconnects later if it is
    /// enabled. `except` is a node that already knows (it closed the link itself).
    fn reset_conn(&mut self, c: usize, except: Option<usize>) {
        if !self.conns[c].alive {
            return;
        }
        self.conns[c].alive = false;
        let ends = self.conns[c].ends;
        for (k, (n, l)) in ends.into_iter().enumerate() {
            if k == 1 && self.conns[c].unbound {
                continue; // that end never took the stream
            }
            self.nodes[n].links.retain(|&(x, cc)| !(x == l && cc == c));
            if Some(n) != except {
                let now = self.now;
                self.nodes[n].node.handle_close(now, l);
                self.mark(n);
            }
        }
        let e = self.conns[c].edge;
        self.edges[e].conn = None;
        self.note(|| format!("reset conn {c} (edge {e})"));
        self.schedule_reconnect(e);
    }

    fn schedule_reconnect(&mut self, e: usize) {
        if !self.edges[e].enabled || self.edges[e].reconnect_pending || self.edges[e].conn.is_some()
        {
            return;
        }
        let d = self
            .rng
            .range(self.cfg.reconnect_us.0, self.cfg.reconnect_us.1);
        self.edges[e].reconnect_pending = true;
        self.schedule(
            self.now + Duration::from_micros(d),
            Action::Reconnect { edge: e },
        );
    }

    // ------------------------------------------------------------------------------
    // Faults

    /// Resets the connection of edge `e` (both ends see a close); it comes back later.
    pub fn lose_link(&mut self, e: usize) {
        if let Some(c) = self.edges[e].conn {
            self.counters.losses += 1;
            self.reset_conn(c, None);
        }
    }

    /// Cuts every edge between `side` and the rest, until [`heal`](Self::heal).
    pub fn partition(&mut self, side: &[usize]) {
        for e in 0..self.edges.len() {
            let (a, b) = (self.edges[e].a, self.edges[e].b);
            if side.contains(&a) != side.contains(&b) {
                self.edges[e].enabled = false;
                if let Some(c) = self.edges[e].conn {
                    self.reset_conn(c, None);
                }
            }
        }
        self.note(|| format!("partition {side:?}"));
    }

    /// Ends every partition: cut edges connect again.
    pub fn heal(&mut self) {
        for e in 0..self.edges.len() {
            if !self.edges[e].enabled {
                self.edges[e].enabled = true;
                self.schedule_reconnect(e);
            }
        }
        self.note(|| "heal".to_string());
    }

    /// Clogs edge `e`'s connection for `d`: bytes wait, none is lost.
    pub fn clog(&mut self, e: usize, d: Duration) {
        if let Some(c) = self.edges[e].conn {
            let until = self.now + d;
            if until > self.conns[c].clogged_until {
                self.conns[c].clogged_until = until;
            }
            self.counters.clogs += 1;
            self.schedule(until, Action::Unclog { conn: c });
            self.note(|| format!("clog edge {e} until {}us", until.as_micros()));
        }
    }

    /// Restarts node `i`: every link of it resets, its state is rebuilt from scratch.
    pub fn restart(&mut self, i: usize) {
        let conns: Vec<usize> = self.nodes[i].links.iter().map(|&(_, c)| c).collect();
        for c in conns {
            self.reset_conn(c, Some(i));
        }
        self.nodes[i].links.clear();
        let node = self.make_node(i);
        self.nodes[i].node = node;
        self.nodes[i].incarnation += 1;
        self.nodes[i].timer = None;
        for (_, r) in std::mem::take(&mut self.nodes[i].out_txns) {
            self.txns[r].orphaned = true;
        }
        for (_, r) in std::mem::take(&mut self.nodes[i].in_txns) {
            self.ins[r].orphaned = true;
        }
        self.counters.restarts += 1;
        self.note(|| format!("restart node {i}"));
        for e in 0..self.edges.len() {
            if self.edges[e].a == i || self.edges[e].b == i {
                // The other end may still hold a suspended link; a RESUME from it gets a
                // stateless RESET from the new incarnation.
                if self.edges[e].a == i {
                    self.edges[e].session = None;
                }
                self.schedule_reconnect(e);
            }
        }
        self.mark(i);
    }

    // ------------------------------------------------------------------------------
    // Workload

    /// Opens a transaction from `src` to `dst` if `src` has a route: a one-frame request,
    /// or (with `hold`) one that stays open for a while before the opener closes it.
    pub fn open_txn(&mut self, src: usize, dst: usize, hold: bool) -> bool {
        let to = addr_of(dst);
        let rec = self.txns.len();
        let payload = format!("req {rec}");
        let msg = Outgoing::new(Command::DbgShell).with_aux(payload.as_bytes());
        let flags = if hold { Flags::empty() } else { Flags::DELETE };
        let now = self.now;
        match self.nodes[src].node.open(now, to, &msg, flags) {
            Ok(txn) => {
                self.txns.push(TxnRecord {
                    src,
                    dst,
                    hold,
                    txn,
                    incarnation: self.nodes[src].incarnation,
                    opened_at: now,
                    closed: None,
                    answered: false,
                    answers: 0,
                    delivered: 0,
                    orphaned: false,
                });
                self.nodes[src].out_txns.insert(txn, rec);
                self.counters.opened += 1;
                if hold {
                    let d = self.rng.range(200_000, 3_000_000);
                    self.schedule(now + Duration::from_micros(d), Action::CloseHold { rec });
                }
                self.note(|| format!("open txn {rec}: {src} -> {dst} hold={hold} as {txn:?}"));
                self.mark(src);
                true
            }
            Err(_) => {
                self.counters.open_refused += 1;
                false
            }
        }
    }

    /// Opens a few random transactions.
    pub fn random_txns(&mut self, count: usize) {
        let n = self.nodes.len();
        if n < 2 {
            return;
        }
        for _ in 0..count {
            let src = self.rng.below(n);
            let mut dst = self.rng.below(n - 1);
            if dst >= src {
                dst += 1;
            }
            let hold = self.rng.chance(0.3);
            self.open_txn(src, dst, hold);
        }
    }

    fn on_event(&mut self, i: usize, ev: Ev) {
        match ev {
            Ev::LinkDown(link, reason) => {
                if matches!(reason, CloseReason::Decode(_) | CloseReason::ProtocolError) {
                    self.counters.decode_closes += 1;
                    self.note(|| format!("node {i} link {link} broke: {reason:?}"));
                }
                self.session_over(i, link);
                let found = self.nodes[i]
                    .links
                    .iter()
                    .find(|&&(l, _)| l == link)
                    .copied();
                if let Some((_, c)) = found {
                    self.counters.node_closes += 1;
                    self.note(|| format!("node {i} closed link {link} itself"));
                    self.reset_conn(c, Some(i));
                }
            }
            Ev::Suspended(link) => {
                let found = self.nodes[i]
                    .links
                    .iter()
                    .find(|&&(l, _)| l == link)
                    .copied();
                self.note(|| format!("node {i} link {link} suspended"));
                if let Some((_, c)) = found {
                    // The node gave the transport up itself (idle timeout, a broken
                    // stream): the driver closes the socket, the peer sees it closed, and
                    // the edge is dialled again.
                    self.counters.node_suspends += 1;
                    self.reset_conn(c, Some(i));
                }
            }
            Ev::Resumed(link) => self.note(|| format!("node {i} link {link} resumed")),
            Ev::Opened { txn, delete, req } => {
                if let Some(r) = req.and_then(|r| self.txns.get_mut(r)) {
                    r.delivered += 1;
                }
                let rec = self.ins.len();
                self.ins.push(InRecord {
                    node: i,
                    txn,
                    incarnation: self.nodes[i].incarnation,
                    closed: None,
                    orphaned: false,
                });
                self.nodes[i].in_txns.insert(txn, rec);
                let reply = if delete {
                    Reply::RespDelete
                } else {
                    Reply::Resp
                };
                self.answer(i, txn, reply);
            }
            Ev::Message { txn, delete, resp } => {
                if let Some(&r) = self.nodes[i].out_txns.get(&txn) {
                    self.txns[r].answered = true;
                    if resp {
                        self.txns[r].answers += 1;
                    }
                }
                if delete && self.nodes[i].in_txns.contains_key(&txn) {
                    // The opener closed its side: close ours.
                    self.answer(i, txn, Reply::Bye);
                }
            }
            Ev::Closed { txn, error } => {
                let mut known = false;
                if let Some(r) = self.nodes[i].out_txns.remove(&txn) {
                    self.txns[r].closed = Some(error);
                    known = true;
                    self.note(|| format!("txn {r} closed at opener {i} error {error:#x}"));
                }
                if let Some(r) = self.nodes[i].in_txns.remove(&txn) {
                    self.ins[r].closed = Some(error);
                    known = true;
                    self.note(|| format!("in-txn {r} closed at node {i} error {error:#x}"));
                }
                if !known {
                    self.counters.unknown_closes += 1;
                    self.note(|| format!("node {i}: Closed for unknown {txn:?}"));
                }
            }
            Ev::Other => {}
        }
    }

    /// Node `i` answers in one of the transactions opened to it; an answer that finds no
    /// room (a full output queue or retransmit window) is tried again 20 ms later, as an
    /// application would.
    fn answer(&mut self, i: usize, txn: NodeTxn, reply: Reply) {
        let now = self.now;
        let (aux, flags): (&[u8], Flags) = match reply {
            Reply::Resp => (b"resp", Flags::empty()),
            Reply::RespDelete => (b"resp", Flags::DELETE),
            Reply::Bye => (b"bye", Flags::DELETE),
        };
        let msg = Outgoing::new(Command::DbgShell).with_aux(aux);
        let r = self.nodes[i].node.send(now, txn, &msg, flags);
        self.note(|| format!("node {i} answers {txn:?} with {reply:?}: {r:?}"));
        if let Err(dmsg_core::node::NodeError::Link(dmsg_core::link::SendError::WouldBlock {
            ..
        })) = r
        {
            let incarnation = self.nodes[i].incarnation;
            self.schedule(
                now + Duration::from_millis(20),
                Action::Answer {
                    node: i,
                    incarnation,
                    txn,
                    reply,
                },
            );
        }
        self.mark(i);
    }

    // ------------------------------------------------------------------------------
    // Driving

    /// Feeds, drains and reacts at node `i` until it has nothing more to do now.
    fn settle(&mut self, i: usize) {
        for _round in 0..100_000 {
            let mut busy = false;
            let now = self.now;
            // Input left over.
            let links = self.nodes[i].links.clone();
            for (link, c) in links {
                let dir = if self.conns[c].ends[0].0 == i && self.conns[c].ends[0].1 == link {
                    0
                } else {
                    1
                };
                if self.conns[c].pending[dir].is_empty() {
                    continue;
                }
                let input = std::mem::take(&mut self.conns[c].pending[dir]);
                let used = self.nodes[i].node.handle_input(now, link, &input);
                if used > 0 {
                    busy = true;
                }
                self.conns[c].pending[dir] = input[used..].to_vec();
            }
            // Output.
            loop {
                let len = self
                    .rng
                    .range(self.cfg.chunk.0 as u64, self.cfg.chunk.1 as u64 + 1)
                    as usize;
                let mut buf = std::mem::take(&mut self.buf);
                let t = self.nodes[i].node.poll_transmit(now, &mut buf[..len]);
                let Some(t) = t else {
                    self.buf = buf;
                    break;
                };
                busy = true;
                self.counters.bytes += t.len as u64;
                self.counters.writes += 1;
                let bytes = buf[..t.len].to_vec();
                self.buf = buf;
                self.send_bytes(i, t.link, bytes);
            }
            // Events.
            loop {
                let ev = match self.nodes[i].node.poll_event() {
                    None => break,
                    Some(ev) => Ev::of(&ev),
                };
                busy = true;
                self.on_event(i, ev);
            }
            if !busy {
                break;
            }
        }
        let t = self.nodes[i].node.poll_timeout();
        if t != self.nodes[i].timer {
            self.nodes[i].timer = t;
            if let Some(t) = t {
                self.schedule(t.max(self.now), Action::Timer { node: i });
            }
        }
    }

    fn send_bytes(&mut self, i: usize, link: LinkId, bytes: Vec<u8>) {
        let Some(&(_, c)) = self.nodes[i].links.iter().find(|&&(l, _)| l == link) else {
            return; // the link's connection is gone: the bytes go nowhere
        };
        if !self.conns[c].alive {
            return;
        }
        let dir = if self.conns[c].ends[0] == (i, link) {
            0
        } else {
            1
        };
        self.write(c, dir, bytes);
    }

    /// End `dir` of connection `c` writes `bytes` (through its secure channel when the
    /// connection is encrypted); returns the latest delivery time scheduled.
    fn write(&mut self, c: usize, dir: usize, bytes: Vec<u8>) -> Instant {
        let Some(link) = self.secure.get_mut(&c) else {
            return self.push_wire(c, dir, bytes);
        };
        link.expect[dir].extend(bytes.iter().copied());
        link.outbox[dir].extend_from_slice(&bytes);
        self.pump_secure(c, dir)
    }

    /// Puts bytes on the wire of connection `c` in direction `dir`, after the link's delay.
    fn push_wire(&mut self, c: usize, dir: usize, bytes: Vec<u8>) -> Instant {
        let d = self.rng.range(self.cfg.delay_us.0, self.cfg.delay_us.1);
        let at = (self.now + Duration::from_micros(d)).max(self.conns[c].pipes[dir].last);
        self.conns[c].pipes[dir].last = at;
        self.conns[c].pipes[dir].q.push_back((at, bytes));
        self.schedule(at, Action::Deliver { conn: c, dir });
        at
    }

    // ------------------------------------------------------------------------------
    // Encryption

    /// With encryption: a pair of secure channels for the new connection `c` (its first end
    /// dialed: the initiator), handshake message 1 on the wire, a handshake deadline.
    fn open_secure(&mut self, c: usize) {
        if !self.cfg.secure {
            return;
        }
        let e = self.conns[c].edge;
        let (a, b) = (self.edges[e].a, self.edges[e].b);
        let impostor = std::mem::take(&mut self.impostor_next[e]);
        let local = if impostor {
            self.counters.impostors += 1;
            impostor_keypair(self.cfg.seed)
        } else {
            self.keys[a].clone()
        };
        let mut rng = SimCryptoRng(self.rng.next_u64());
        let link = match SecureLink::new(
            self.now,
            local,
            self.keys[b].public(),
            self.keys[b].clone(),
            &mut rng,
            impostor,
        ) {
            Ok(l) => l,
            Err(err) => panic!("conn {c}: cannot start the secure channels: {err}"),
        };
        let deadline = link.ch[0].poll_timeout();
        self.secure.insert(c, Box::new(link));
        self.note(|| format!("conn {c}: secure handshake starts (impostor {impostor})"));
        self.pump_secure(c, 0);
        if let Some(t) = deadline {
            self.schedule(t, Action::SecureDeadline { conn: c });
        }
    }

    /// Moves end `dir`'s plaintext through its channel onto the wire.
    fn pump_secure(&mut self, c: usize, dir: usize) -> Instant {
        let Some(link) = self.secure.get_mut(&c) else {
            return self.now;
        };
        match link.pump(dir) {
            Ok(wire) if wire.is_empty() => self.now,
            Ok(wire) => self.push_wire(c, dir, wire),
            Err(err) => {
                self.secure_fail(c, dir, err);
                self.now
            }
        }
    }

    /// The channel at end `end` of connection `c` failed: the driver closes the transport
    /// (both nodes see it closed).
    fn secure_fail(&mut self, c: usize, end: usize, err: SecureError) {
        let node = self.conns[c].ends[end].0;
        self.counters.secure_failures += 1;
        self.secure_errors.push((c, node, err));
        self.note(|| format!("conn {c}: secure channel at node {node} failed: {err:?}"));
        self.reset_conn(c, None);
    }

    /// Whether the accepting node's policy admits the initiator's static key: it must be
    /// one of the cluster's keys.
    fn key_known(&self, peer: &PublicKey) -> bool {
        self.keys.iter().any(|k| k.public() == *peer)
    }

    /// Ciphertext `bytes` arrived at end `end` of encrypted connection `c`: the channel
    /// opens it, the plaintext goes to the node's input (checked against what the other
    /// node wrote). Returns false when the channel failed (the connection is gone).
    fn secure_receive(&mut self, c: usize, end: usize, bytes: &[u8]) -> bool {
        let now = self.now;
        let mut rest = bytes;
        loop {
            let Some(link) = self.secure.get_mut(&c) else {
                return false;
            };
            let r = link.ch[end].handle_input(now, rest);
            let n = match r {
                Ok(n) => n,
                Err(err) => {
                    self.secure_fail(c, end, err);
                    return false;
                }
            };
            rest = &rest[n..];
            let plain = link.ch[end].plaintext().to_vec();
            link.ch[end].consume(plain.len());
            // The other end wrote these bytes, in this order, or they are forged.
            let mut forged = 0;
            for &b in &plain {
                if link.expect[1 - end].pop_front() != Some(b) {
                    forged += 1;
                }
            }
            let mut events = Vec::new();
            while let Some(ev) = link.ch[end].poll_event() {
                events.push(ev);
            }
            self.counters.forged_bytes += forged;
            self.conns[c].pending[end].extend_from_slice(&plain);
            let progress = n > 0 || !plain.is_empty() || !events.is_empty();
            for ev in events {
                match ev {
                    SecureEvent::PeerHello { peer } => {
                        let known = self.key_known(&peer);
                        self.note(|| format!("conn {c}: peer key known: {known}"));
                        let Some(link) = self.secure.get_mut(&c) else {
                            return false;
                        };
                        let r = if known {
                            link.ch[end].accept(now)
                        } else {
                            Err(link.ch[end].refuse())
                        };
                        if let Err(err) = r {
                            self.secure_fail(c, end, err);
                            return false;
                        }
                        self.pump_secure(c, end);
                    }
                    SecureEvent::Established { .. } => {
                        if end == 0 {
                            self.counters.secure_handshakes += 1;
                        }
                        self.pump_secure(c, end);
                    }
                    SecureEvent::PeerClosed => {}
                }
                if !self.conns[c].alive {
                    return false;
                }
            }
            if !progress {
                return true;
            }
        }
    }

    /// Alters one byte of ciphertext in flight on a random encrypted connection that has
    /// bytes in flight. Returns false when no connection has any.
    pub fn corrupt_in_flight(&mut self) -> bool {
        let mut cands: Vec<(usize, usize)> = Vec::new();
        for (&c, _) in self.secure.iter() {
            if !self.conns[c].alive {
                continue;
            }
            for dir in 0..2 {
                if !self.conns[c].pipes[dir].q.is_empty() {
                    cands.push((c, dir));
                }
            }
        }
        if cands.is_empty() {
            return false;
        }
        let (c, dir) = cands[self.rng.below(cands.len())];
        let q = &self.conns[c].pipes[dir].q;
        let k = self.rng.below(q.len());
        let at = self.rng.below(q[k].1.len());
        let x = 1 + self.rng.below(255) as u8;
        self.conns[c].pipes[dir].q[k].1[at] ^= x;
        if let Some(link) = self.secure.get_mut(&c) {
            link.corrupted = true;
        }
        self.counters.corruptions += 1;
        self.note(|| format!("corrupt conn {c} dir {dir}: chunk {k} byte {at} ^= {x:#04x}"));
        true
    }

    /// The next dial of edge `e` is made with a key nobody knows (the accepting node must
    /// refuse it); the edge's connection is lost now so that the dial comes soon.
    pub fn impostor_dial(&mut self, e: usize) {
        if !self.cfg.secure {
            return;
        }
        self.impostor_next[e] = true;
        self.note(|| format!("edge {e}: next dial is an impostor"));
        self.lose_link(e);
    }

    fn settle_all(&mut self) {
        while let Some(i) = self.dirty.pop_front() {
            self.is_dirty[i] = false;
            self.settle(i);
        }
    }

    fn apply(&mut self, a: Action) {
        match a {
            Action::Deliver { conn: c, dir } => {
                if !self.conns[c].alive {
                    return;
                }
                if self.now < self.conns[c].clogged_until {
                    return; // Unclog delivers it
                }
                let (to, _) = self.conns[c].ends[1 - dir];
                let mut got = false;
                while let Some((t, _)) = self.conns[c].pipes[dir].q.front() {
                    if *t > self.now {
                        break;
                    }
                    let Some((_, bytes)) = self.conns[c].pipes[dir].q.pop_front() else {
                        break;
                    };
                    if self.secure.contains_key(&c) {
                        if !self.secure_receive(c, 1 - dir, &bytes) {
                            return; // the channel failed: the connection is gone
                        }
                    } else {
                        self.conns[c].pending[1 - dir].extend_from_slice(&bytes);
                    }
                    got = true;
                }
                if got && dir == 0 && self.conns[c].unbound {
                    self.route_stream(c);
                }
                if got {
                    self.mark(to);
                }
            }
            Action::Unclog { conn: c } => {
                if self.conns[c].alive && self.now >= self.conns[c].clogged_until {
                    for dir in 0..2 {
                        if !self.conns[c].pipes[dir].q.is_empty() {
                            self.apply(Action::Deliver { conn: c, dir });
                        }
                        // Later chunks keep their own delivery events.
                    }
                }
            }
            Action::Timer { node } => {
                if self.nodes[node].timer.is_some_and(|t| t <= self.now) {
                    self.nodes[node].timer = None;
                    let now = self.now;
                    self.nodes[node].node.handle_timeout(now);
                    self.mark(node);
                }
            }
            Action::SecureDeadline { conn } => {
                if !self.conns[conn].alive {
                    return;
                }
                let now = self.now;
                for end in 0..2 {
                    let r = match self.secure.get_mut(&conn) {
                        Some(link) => link.ch[end].handle_timeout(now),
                        None => return,
                    };
                    if let Err(err) = r {
                        self.secure_fail(conn, end, err);
                        return;
                    }
                }
            }
            Action::Drop { conn } => {
                if self.conns[conn].alive {
                    self.note(|| format!("drop conn {conn}"));
                    self.reset_conn(conn, None);
                }
            }
            Action::Reconnect { edge } => {
                self.edges[edge].reconnect_pending = false;
                if self.edges[edge].enabled && self.edges[edge].conn.is_none() {
                    self.connect(edge);
                }
            }
            Action::CloseHold { rec } => {
                let r = self.txns[rec].clone();
                if r.closed.is_none() && !r.orphaned {
                    let bye = Outgoing::new(Command::DbgShell).with_aux(b"done");
                    let now = self.now;
                    let res = self.nodes[r.src].node.send(now, r.txn, &bye, Flags::DELETE);
                    self.note(|| format!("txn {rec}: opener closes: {res:?}"));
                    if let Err(dmsg_core::node::NodeError::Link(
                        dmsg_core::link::SendError::WouldBlock { .. },
                    )) = res
                    {
                        // No room now: try again, as an application would.
                        self.schedule(now + Duration::from_millis(20), Action::CloseHold { rec });
                    }
                    self.mark(r.src);
                }
            }
            Action::Answer {
                node,
                incarnation,
                txn,
                reply,
            } => {
                let live = self.nodes[node].incarnation == incarnation
                    && self.nodes[node].in_txns.contains_key(&txn);
                if live {
                    self.answer(node, txn, reply);
                }
            }
        }
    }

    /// Runs until virtual time `end`.
    pub fn run_until(&mut self, end: Instant) {
        loop {
            self.settle_all();
            let Some(Reverse((t, _, _))) = self.queue.peek() else {
                break;
            };
            if *t > end {
                break;
            }
            let Some(Reverse((t, _, a))) = self.queue.pop() else {
                break;
            };
            if t > self.now {
                self.now = t;
            }
            self.apply(a);
        }
        self.settle_all();
        if end > self.now {
            self.now = end;
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// A fingerprint of the cluster state that changes whenever spans, relays or routes
    /// change.
    fn fingerprint(&self) -> u64 {
        let mut h = 0u64;
        for n in &self.nodes {
            let s = n.node.stats();
            for v in [
                s.spans_accepted,
                s.spans_removed,
                s.relays_opened,
                s.relays_closed,
                s.relays_refused,
                s.routes_relayed,
                s.routes_lost,
                s.frames_relayed,
                n.node.span_entries().len() as u64,
                n.node.relays().len() as u64,
                n.node.routes().len() as u64,
            ] {
                h = h.wrapping_mul(0x100_0000_01b3).wrapping_add(v);
            }
        }
        h
    }

    /// True when no node has pending work, no workload transaction is open, every edge is
    /// connected, and no bytes wait in a node's input.
    pub fn idle(&self) -> bool {
        self.nodes.iter().all(|n| !n.node.has_pending_work())
            && self.edges.iter().all(|e| !e.enabled || e.conn.is_some())
            && self
                .conns
                .iter()
                .filter(|c| c.alive)
                .all(|c| c.pending.iter().all(|p| p.is_empty()))
            && self.txns.iter().all(|t| t.closed.is_some() || t.orphaned)
            && self.conns.iter().all(|c| !c.alive || !c.unbound)
            && self
                .secure
                .iter()
                .all(|(&c, l)| !self.conns[c].alive || (l.settled() && !l.corrupted))
            && self.nodes.iter().all(|n| {
                // A session waiting for its transport (or for its grace period to end), or
                // frames not acknowledged yet (a retransmission may be seconds away).
                n.node
                    .link_ids()
                    .iter()
                    .all(|&l| !n.node.is_suspended(l) && n.node.unacked_frames(l) == 0)
            })
    }

    /// Why the world is not [`idle`](Self::idle), for failure messages.
    pub fn idle_report(&self) -> String {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.node.has_pending_work() {
                out.push(format!("node {i} has pending work"));
                if std::env::var_os("SIM_DUMP").is_some() {
                    for &(l, c) in &n.links {
                        out.push(format!("  node {i} {}", n.node.link_debug(l)));
                        let (j, lj) =
                            self.conns[c].ends[if self.conns[c].ends[0].0 == i { 1 } else { 0 }];
                        out.push(format!(
                            "   peer node {j} {}",
                            self.nodes[j].node.link_debug(lj)
                        ));
                    }
                }
            }
            for l in n.node.link_ids() {
                if n.node.is_suspended(l) {
                    out.push(format!("node {i} link {l} suspended"));
                }
                if n.node.unacked_frames(l) > 0 {
                    out.push(format!(
                        "node {i} link {l}: {} frames unacknowledged",
                        n.node.unacked_frames(l)
                    ));
                }
            }
        }
        for (e, edge) in self.edges.iter().enumerate() {
            if edge.enabled && edge.conn.is_none() {
                out.push(format!("edge {e} not connected"));
            }
        }
        for (k, c) in self.conns.iter().enumerate().filter(|(_, c)| c.alive) {
            if c.unbound {
                out.push(format!("conn {k} not routed"));
            }
            if let Some(l) = self.secure.get(&k) {
                if !l.settled() {
                    out.push(format!("conn {k}: secure channels not settled"));
                }
                if l.corrupted {
                    out.push(format!("conn {k}: corrupted, still up"));
                }
            }
            for (d, p) in c.pending.iter().enumerate() {
                if !p.is_empty() {
                    out.push(format!("conn {k} end {d}: {} bytes unread", p.len()));
                }
            }
        }
        for (k, t) in self.txns.iter().enumerate() {
            if t.closed.is_none() && !t.orphaned {
                out.push(format!("txn {k} open: {t:?}"));
            }
        }
        out.join("; ")
    }

    /// Runs until the cluster is quiet (its fingerprint unchanged for 3 s of virtual time
    /// and [`idle`](Self::idle)), at most `max`. Returns the virtual time of the last
    /// change, or `None` if it did not settle.
    pub fn run_until_quiet(&mut self, max: Duration) -> Option<Instant> {
        self.run_until_quiet_step(max, Duration::from_millis(250))
    }

    /// [`run_until_quiet`](Self::run_until_quiet), looking for changes every `step` (the
    /// resolution of the returned time).
    pub fn run_until_quiet_step(&mut self, max: Duration, step: Duration) -> Option<Instant> {
        let end = self.now + max;
        let mut last_fp = self.fingerprint();
        let mut last_change = self.now;
        while self.now < end {
            self.run_for(step);
            let fp = self.fingerprint();
            if fp != last_fp {
                last_fp = fp;
                last_change = self.now;
            } else if self.now >= last_change + Duration::from_secs(3) && self.idle() {
                return Some(last_change);
            }
        }
        None
    }
}

/// What the answering side of a workload transaction sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reply {
    /// "resp", keeping our side open.
    Resp,
    /// "resp" and DELETE.
    RespDelete,
    /// "bye" and DELETE (the opener closed its side).
    Bye,
}

/// A node event, copied out of the node's borrow.
enum Ev {
    LinkDown(LinkId, CloseReason),
    Suspended(LinkId),
    Resumed(LinkId),
    Opened {
        txn: NodeTxn,
        delete: bool,
        /// The workload record named in the payload ("req N").
        req: Option<usize>,
    },
    Message {
        txn: NodeTxn,
        delete: bool,
        /// The payload is an answer ("resp").
        resp: bool,
    },
    Closed {
        txn: NodeTxn,
        error: u32,
    },
    Other,
}

impl Ev {
    fn of(ev: &NodeEvent<'_>) -> Ev {
        match ev {
            NodeEvent::LinkDown { link, reason } => Ev::LinkDown(*link, *reason),
            NodeEvent::LinkSuspended { link } => Ev::Suspended(*link),
            NodeEvent::LinkResumed { link } => Ev::Resumed(*link),
            NodeEvent::Opened { txn, msg, .. } => Ev::Opened {
                txn: *txn,
                delete: msg.flags().contains(Flags::DELETE),
                req: std::str::from_utf8(msg.aux)
                    .ok()
                    .and_then(|s| s.strip_prefix("req "))
                    .and_then(|n| n.parse().ok()),
            },
            NodeEvent::Message { txn, msg } => Ev::Message {
                txn: *txn,
                delete: msg.flags().contains(Flags::DELETE),
                resp: msg.aux == b"resp",
            },
            NodeEvent::Closed { txn, error, .. } => Ev::Closed {
                txn: *txn,
                error: *error,
            },
            _ => Ev::Other,
        }
    }
}
