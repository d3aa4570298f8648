//! The `node` target: four `Node`s wired by links the script adds and cuts, plus a rogue peer
//! the script speaks for, driven by arbitrary span advertise/withdraw, transaction opens and
//! answers, raw bytes injected on links, crafted frames from the rogue (LNK_CONN, LNK_SPAN at
//! any distance, errors, shell commands, circuits), delivery in chunks and time steps.
//!
//! Uses only `dmsg_core` and `std` (no `arbitrary`), so `tests/tests/fuzz_node.rs` runs the
//! very same checks on generated inputs and saved regressions under a plain `cargo test`.
//!
//! Invariants, checked after every step (not only "no panic"):
//! - **bounded tables**: spans, relays and routes within `SPANS`, `RELAYS`, `ROUTES`; every
//!   link's transactions within `TXNS` and its queued output within `TX`;
//! - **transactions**: `Opened` never names a live or closed transaction, `Message` only live
//!   ones, `Closed` at most once; `LinkDown` once per link, after every transaction on it was
//!   `Closed`;
//! - **relays**: no relay is open on the link its span came in on; every LNK_SPAN a node
//!   sends on circuit 0 carries a distance of at most [`MAX_DIST`] (frames on a circuit are
//!   routed transactions, forwarded as their originator wrote them); everything a node
//!   sends is a valid DMSG stream (CRCs, salt sequence);
//! - **reachability**: `Reachable`/`Unreachable` alternate per node, and once a node has no
//!   pending work they match its span table (a node with a remote span and no local one);
//! - **stats**: spans accepted minus removed equals the remote spans held; high-water marks
//!   are at least the current sizes;
//!
//! and at the end, after a quiet tail: open relays name a span that exists, came in on
//! another link and is relayed within [`MAX_DIST`]; closing every transport ends every
//! transaction and link, and leaves no remote span, relay or route behind.

use std::collections::BTreeSet;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::errcode::txn;
use dmsg_core::link::{LinkConfig, Outgoing, Side};
use dmsg_core::node::{LocalSpan, Node, NodeAddr, NodeConfig, NodeEvent, NodeTxn, RelayState};
use dmsg_core::span::{LinkId, MAX_DIST};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::{ConnRepr, SpanRepr};
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId, Uuid};

const LINKS: usize = 4;
const SPANS: usize = 16;
const RELAYS: usize = 16;
const ROUTES: usize = 8;
const AUX: usize = 256;
const TX: usize = 2048;
const TXNS: usize = 8;
type N = Node<LINKS, SPANS, RELAYS, ROUTES, { 8 * 64 + AUX }, AUX, TX, TXNS>;

const NODES: usize = 4;
/// The rogue peer's "node index" in a wire's ends.
const ROGUE: usize = NODES;
const MAX_STEPS: usize = 160;
const MAX_TIMERS: usize = 16;
const DEC: DecoderConfig = DecoderConfig {
    max_aux_bytes: 4096,
    max_header_blocks: 8,
    check_sequence: true,
};

/// Reads the script one byte at a time; runs out into zeros.
struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn done(&self) -> bool {
        self.data.is_empty()
    }
}

/// Node addresses come from a small set, so that spans of one node arrive several ways.
fn addr(b: u8) -> NodeAddr {
    NodeAddr {
        peer_id: Uuid([1 + (b >> 3 & 1); 16]),
        pfs_id: Uuid([1 + (b & 7); 16]),
    }
}

fn span_of(s: &mut Script<'_>) -> SpanRepr {
    let a = addr(s.byte());
    let d = s.byte();
    SpanRepr {
        peer_id: a.peer_id,
        pfs_id: a.pfs_id,
        peer_type: s.byte() % 4,
        dist: match d {
            0..=239 => u32::from(d % 20),
            _ => u32::MAX - u32::from(d - 240),
        },
        ..SpanRepr::default()
    }
}

/// Delivery chunk sizes: 0 (what a script that ran out reads) delivers whole, small values
/// byte-sized chunks, the rest multiples of 8.
fn chunk_of(b: u8) -> usize {
    match b {
        0 => 4096,
        1..=8 => usize::from(b),
        n => usize::from(n) * 8,
    }
}

fn output_decoder() -> Decoder<Box<[u8]>, DefaultCrc> {
    match Decoder::new(
        vec![0u8; DEC.storage_len()].into_boxed_slice(),
        DEC,
        DefaultCrc::default(),
    ) {
        Ok(d) => d,
        Err(e) => panic!("decoder config: {e:?}"),
    }
}

/// One transport between two link ends (or a node and the rogue).
struct Wire {
    /// (node index, link there); the rogue's link id is unused.
    ends: [(usize, LinkId); 2],
    /// `pipes[k]`: bytes from `ends[k]` in flight to the other end.
    pipes: [Vec<u8>; 2],
    /// Checks what `ends[k]` sends.
    out: [Decoder<Box<[u8]>, DefaultCrc>; 2],
    /// The transport is up (bytes written by either end travel).
    up: bool,
    /// The rogue's encoder (rogue wires only).
    rogue: Option<Encoder>,
}

/// The application's view of one node.
#[derive(Default)]
struct Model {
    /// Links added and not yet reported down.
    links: BTreeSet<LinkId>,
    live: BTreeSet<NodeTxn>,
    closed: BTreeSet<NodeTxn>,
    reachable: BTreeSet<NodeAddr>,
    local: Vec<LocalSpan>,
}

struct Harness {
    nodes: Vec<Box<N>>,
    models: Vec<Model>,
    wires: Vec<Wire>,
    now: Instant,
    salt: u32,
}

/// What one run went through (for tests that the scripts reach the interesting paths).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeRun {
    /// Spans accepted, all nodes.
    pub spans_accepted: u64,
    /// Relays opened, all nodes.
    pub relays_opened: u64,
    /// Transactions relayed between two links, all nodes.
    pub routes_relayed: u64,
    /// Transactions the application saw closed, all nodes.
    pub closed: u64,
}

/// Runs one script. Panics (the fuzzer's crash) when an invariant breaks.
pub fn check_node(data: &[u8]) -> NodeRun {
    let mut h = Harness {
        nodes: (0..NODES)
            .map(|_| Box::new(N::new(NodeConfig::default())))
            .collect(),
        models: (0..NODES).map(|_| Model::default()).collect(),
        wires: Vec::new(),
        now: Instant::from_millis(1),
        salt: 1,
    };
    // A line to start with: 0-1-2-3.
    for i in 0..NODES - 1 {
        h.connect(i, i + 1);
    }
    let mut s = Script { data };
    let mut steps = 0;
    h.settle();
    while !s.done() && steps < MAX_STEPS {
        steps += 1;
        h.step(&mut s);
        h.settle();
        h.check();
    }
    h.tail()
}

impl Harness {
    fn link_config(&mut self) -> LinkConfig {
        self.salt = self.salt.wrapping_mul(0x9E37_79B9).wrapping_add(1);
        // Keepalives less often than the default (1 s) keep time steps cheap; the idle
        // timeout still notices a silently cut transport.
        LinkConfig {
            salt_seed: self.salt,
            ping_interval: Duration::from_secs(4),
            idle_timeout: Duration::from_secs(12),
            ..LinkConfig::default()
        }
    }

    fn add_link(&mut self, i: usize) -> Option<LinkId> {
        let cfg = self.link_config();
        let link = self.nodes[i].add_link(self.now, &cfg).ok()?;
        assert!(
            self.models[i].links.insert(link),
            "node {i}: link id {link:?} reused"
        );
        Some(link)
    }

    fn connect(&mut self, i: usize, j: usize) {
        let Some(li) = self.add_link(i) else {
            return;
        };
        let Some(lj) = self.add_link(j) else {
            let _ = self.nodes[i].remove_link(self.now, li);
            return;
        };
        self.wires.push(Wire {
            ends: [(i, li), (j, lj)],
            pipes: [Vec::new(), Vec::new()],
            out: [output_decoder(), output_decoder()],
            up: true,
            rogue: None,
        });
    }

    fn connect_rogue(&mut self, i: usize) -> bool {
        let Some(li) = self.add_link(i) else {
            return false;
        };
        self.wires.push(Wire {
            ends: [(i, li), (ROGUE, LinkId(0))],
            pipes: [Vec::new(), Vec::new()],
            out: [output_decoder(), output_decoder()],
            up: true,
            rogue: Some(Encoder::new(self.salt)),
        });
        true
    }

    /// The live wire of `link` at node `i`, and which end it is.
    fn wire_of(&self, i: usize, link: LinkId) -> Option<(usize, usize)> {
        self.wires.iter().enumerate().find_map(|(w, wire)| {
            if !wire.up {
                return None;
            }
            wire.ends
                .iter()
                .position(|&e| e == (i, link))
                .map(|k| (w, k))
        })
    }

    fn pick_wire(&self, s: &mut Script<'_>) -> Option<usize> {
        let up: Vec<usize> = (0..self.wires.len())
            .filter(|&w| self.wires[w].up)
            .collect();
        if up.is_empty() {
            return None;
        }
        Some(up[s.byte() as usize % up.len()])
    }

    fn step(&mut self, s: &mut Script<'_>) {
        match s.byte() % 20 {
            0..=3 => {
                let i = s.byte() as usize % NODES;
                self.command(i, s);
            }
            4..=6 => {
                if let Some(w) = self.pick_wire(s) {
                    let k = usize::from(s.byte() & 1);
                    let limit = match s.byte() {
                        0..=127 => usize::MAX,
                        n => usize::from(n) * 4,
                    };
                    let chunk = chunk_of(s.byte());
                    self.deliver(w, k, limit, chunk);
                }
            }
            7 | 8 => self.rogue_frame(s),
            9 => {
                // Raw bytes injected into a transport.
                let Some(w) = self.pick_wire(s) else {
                    return;
                };
                let k = usize::from(s.byte() & 1);
                let at = usize::from(s.byte()) * 4;
                let n = usize::from(s.byte() % 64);
                let raw = s.bytes(n).to_vec();
                let pipe = &mut self.wires[w].pipes[k];
                let at = at.min(pipe.len());
                pipe.splice(at..at, raw);
            }
            10 => {
                let (i, j) = (s.byte() as usize % NODES, s.byte() as usize % NODES);
                if i != j {
                    self.connect(i, j);
                } else if !self.wires.iter().any(|w| w.up && w.rogue.is_some()) {
                    self.connect_rogue(i);
                }
            }
            11 => {
                let Some(w) = self.pick_wire(s) else {
                    return;
                };
                let how = s.byte();
                self.cut(w, how);
            }
            12 | 13 => {
                let i = s.byte() as usize % NODES;
                if s.byte() % 3 != 0 || self.models[i].local.is_empty() {
                    let span = span_of(s);
                    if let Ok(l) = self.nodes[i].advertise(span) {
                        self.models[i].local.push(l);
                    }
                } else {
                    let k = s.byte() as usize % self.models[i].local.len();
                    let l = self.models[i].local.swap_remove(k);
                    assert!(
                        self.nodes[i].withdraw(l).is_ok(),
                        "node {i}: withdraw of {l:?} refused"
                    );
                }
            }
            14..=16 => {
                let ms = match s.byte() {
                    n @ 0..=99 => u64::from(n) * 10,
                    n @ 100..=199 => u64::from(n - 100) * 200,
                    n => u64::from(n - 200) * 1000,
                };
                let flowing = s.byte() & 1 == 0;
                self.advance(Duration::from_millis(ms), flowing);
            }
            17 => {
                let i = s.byte() as usize % NODES;
                self.nodes[i].handle_timeout(self.now);
            }
            _ => self.flow(),
        }
    }

    /// Cuts a transport: both ends told, one end told (the other finds out by its idle
    /// timeout), one end removed, or a clean close started (the transport stays).
    fn cut(&mut self, w: usize, how: u8) {
        let now = self.now;
        let ends = self.wires[w].ends;
        let k = usize::from(how >> 2 & 1);
        let (i, link) = ends[k];
        if i == ROGUE {
            // The rogue hung up: the node sees EOF.
            let (n, l) = ends[1 - k];
            self.wires[w].up = false;
            self.nodes[n].handle_close(now, l);
            return;
        }
        match how % 4 {
            0 => {
                self.wires[w].up = false;
                for (n, l) in ends {
                    if n != ROGUE {
                        self.nodes[n].handle_close(now, l);
                    }
                }
            }
            1 => {
                self.wires[w].up = false;
                self.nodes[i].handle_close(now, link);
            }
            2 => {
                self.wires[w].up = false;
                assert!(
                    self.nodes[i].remove_link(now, link).is_ok()
                        || !self.models[i].links.contains(&link),
                    "node {i}: remove_link({link:?}) refused for a known link"
                );
            }
            _ => {
                let _ = self.nodes[i].close_link(now, link);
            }
        }
    }

    /// A frame from the rogue peer (or raw bytes from it).
    fn rogue_frame(&mut self, s: &mut Script<'_>) {
        let w = match self.wires.iter().position(|w| w.up && w.rogue.is_some()) {
            Some(w) => w,
            None => {
                let i = s.byte() as usize % NODES;
                if !self.connect_rogue(i) {
                    return;
                }
                self.wires.len() - 1
            }
        };
        let commands = [
            Command::LnkConn,
            Command::LnkSpan,
            Command::LnkSpan,
            Command::LnkError,
            Command::DbgShell,
            Command::LnkPing,
            Command::BlkRead,
        ];
        let command = commands[s.byte() as usize % commands.len()];
        let flags = Flags::from_bits_truncate(u32::from(s.byte()) << 24);
        let msgid = MsgId(u64::from(s.byte() % 8));
        let circuit = dmsg_core::wire::Circuit(u64::from(s.byte() % 4));
        let error = [0, txn::NOSUPP, txn::LOSTLINK, 0][s.byte() as usize % 4];
        let body = match command {
            Command::LnkConn => Body::Conn(ConnRepr {
                peer_mask: u64::from(s.byte()) | (u64::from(s.byte() & 1) * u64::MAX),
                peer_type: s.byte() % 4,
                peer_id: addr(s.byte()).peer_id,
                ..ConnRepr::default()
            }),
            Command::LnkSpan => Body::Span(span_of(s)),
            Command::BlkRead => Body::BlkIo(Default::default()),
            _ => Body::None,
        };
        let aux: Vec<u8> = match command {
            Command::DbgShell => {
                let cmds: [&[u8]; 4] = [b"tree\0", b"help\0", b"conns\0", b"dot\0"];
                cmds[s.byte() as usize % 4].to_vec()
            }
            _ => {
                let n = s.byte() as usize % 32;
                s.bytes(n).to_vec()
            }
        };
        let header = HeaderRepr {
            error,
            circuit,
            ..HeaderRepr::new(Cmd::new(command, flags), msgid)
        };
        let wire = &mut self.wires[w];
        let Some(enc) = wire.rogue.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; 1024];
        if let Ok(n) = enc.encode(&DefaultCrc::default(), &header, &body, &aux, &mut buf) {
            wire.pipes[1].extend_from_slice(&buf[..n]);
        }
        let chunk = chunk_of(s.byte());
        self.deliver(w, 1, usize::MAX, chunk);
    }

    /// One application command at node `i`.
    fn command(&mut self, i: usize, s: &mut Script<'_>) {
        let now = self.now;
        let aux_len = s.byte() as usize % 40;
        let aux = s.bytes(aux_len).to_vec();
        let msg = Outgoing::new(Command::DbgShell).with_aux(&aux);
        let op = s.byte() % 8;
        let m = &self.models[i];
        let pick = s.byte() as usize;
        let target = if !m.live.is_empty() && (pick % 5 != 0 || m.closed.is_empty()) {
            m.live.iter().nth(pick % m.live.len()).copied()
        } else {
            m.closed.iter().nth(pick % m.closed.len().max(1)).copied()
        };
        let flags = if s.byte() & 1 == 0 {
            Flags::empty()
        } else {
            Flags::DELETE
        };
        let node = &mut self.nodes[i];
        let opened = match (op, target) {
            (0 | 1, _) => node.open(now, addr(s.byte()), &msg, flags).ok(),
            (2, _) => {
                let links: Vec<LinkId> = node.links().collect();
                if links.is_empty() {
                    None
                } else {
                    let l = links[s.byte() as usize % links.len()];
                    node.open_on(now, l, &msg, flags, None).ok()
                }
            }
            (3, _) => {
                let _ = node.send_one_way_to(now, addr(s.byte()), &msg);
                None
            }
            (_, None) => None,
            (4, Some(t)) => {
                let r = node.send(now, t, &msg, flags);
                self.stale_refused(i, t, r.is_err());
                None
            }
            (5, Some(t)) => {
                let r = node.reply(now, t, txn::NOSUPP);
                self.stale_refused(i, t, r.is_err());
                None
            }
            (6, Some(t)) => {
                let r = node.delete(now, t);
                self.stale_refused(i, t, r.is_err());
                None
            }
            (_, Some(t)) => {
                let r = node.abort(now, t);
                self.stale_refused(i, t, r.is_err());
                None
            }
        };
        if let Some(t) = opened {
            let m = &mut self.models[i];
            assert!(
                m.links.contains(&t.link),
                "node {i}: opened on unknown {t:?}"
            );
            assert!(
                m.live.insert(t),
                "node {i}: open returned a live handle {t:?}"
            );
            assert!(
                !m.closed.contains(&t),
                "node {i}: open returned a closed handle"
            );
            assert_eq!(t.txn.side(), Side::Ours);
        }
    }

    fn stale_refused(&self, i: usize, t: NodeTxn, refused: bool) {
        if self.models[i].closed.contains(&t) {
            assert!(refused, "node {i}: the stale handle {t:?} was accepted");
        }
    }

    /// Feeds up to `limit` bytes from end `k` of wire `w` to the other end, in chunks,
    /// following the drive contract.
    fn deliver(&mut self, w: usize, k: usize, limit: usize, chunk: usize) -> bool {
        if !self.wires[w].up {
            return false;
        }
        let (to, link) = self.wires[w].ends[1 - k];
        let mut pipe = std::mem::take(&mut self.wires[w].pipes[k]);
        if to == ROGUE {
            // The rogue reads and ignores (the output was checked when it was sent).
            return !pipe.is_empty();
        }
        let rest = pipe.split_off(limit.min(pipe.len()));
        let moved = !pipe.is_empty();
        let mut rounds = 0;
        while !pipe.is_empty() && rounds < 10_000 {
            rounds += 1;
            let take = chunk.min(pipe.len());
            let used = self.nodes[to].handle_input(self.now, link, &pipe[..take]);
            assert!(used <= take);
            pipe.drain(..used);
            // Only the receiving node has new work (its output only lands in pipes).
            let progressed = self.drain(to);
            if !self.wires[w].up {
                return true;
            }
            if used == 0 && !progressed {
                break;
            }
        }
        pipe.extend_from_slice(&rest);
        pipe.extend_from_slice(&self.wires[w].pipes[k]);
        self.wires[w].pipes[k] = pipe;
        self.settle();
        moved
    }

    /// Drains every node's output and events until nothing moves. Returns true if anything
    /// moved.
    fn settle(&mut self) -> bool {
        let mut moved = false;
        for _ in 0..1000 {
            let mut any = false;
            for i in 0..NODES {
                any |= self.drain(i);
            }
            if !any {
                return moved;
            }
            moved = true;
        }
        panic!("nodes did not settle");
    }

    fn drain(&mut self, i: usize) -> bool {
        let mut moved = false;
        let mut buf = [0u8; 1024];
        for _ in 0..10_000 {
            let mut any = false;
            while let Some(t) = self.nodes[i].poll_transmit(self.now, None, &mut buf) {
                any = true;
                assert!(t.len <= buf.len());
                if let Some((w, k)) = self.wire_of(i, t.link) {
                    self.check_output(w, k, &buf[..t.len]);
                    self.wires[w].pipes[k].extend_from_slice(&buf[..t.len]);
                }
            }
            while let Some(ev) = self.nodes[i].poll_event() {
                any = true;
                let m = &mut self.models[i];
                match ev {
                    NodeEvent::LinkUp { link } | NodeEvent::PeerConn { link, .. } => {
                        assert!(
                            m.links.contains(&link),
                            "node {i}: event for unknown {link:?}"
                        );
                    }
                    NodeEvent::LinkDown { link, .. } => {
                        assert!(m.links.remove(&link), "node {i}: LinkDown twice: {link:?}");
                        let open: Vec<_> = m.live.iter().filter(|t| t.link == link).collect();
                        assert!(
                            open.is_empty(),
                            "node {i}: LinkDown {link:?} with open transactions {open:?}"
                        );
                    }
                    NodeEvent::Reachable { node, .. } => {
                        assert!(
                            m.reachable.insert(node),
                            "node {i}: Reachable twice: {node}"
                        );
                    }
                    NodeEvent::Unreachable { node } => {
                        assert!(m.reachable.remove(&node), "node {i}: Unreachable {node}");
                    }
                    NodeEvent::Opened { txn, .. } => {
                        assert_eq!(txn.txn.side(), Side::Theirs);
                        assert!(
                            m.links.contains(&txn.link),
                            "node {i}: Opened on a dead link"
                        );
                        assert!(m.live.insert(txn), "node {i}: Opened twice: {txn:?}");
                        assert!(
                            !m.closed.contains(&txn),
                            "node {i}: Opened a closed {txn:?}"
                        );
                    }
                    NodeEvent::Message { txn, .. } => {
                        assert!(
                            m.live.contains(&txn),
                            "node {i}: Message on {txn:?}, not live"
                        );
                    }
                    NodeEvent::Closed { txn, .. } => {
                        assert!(m.live.remove(&txn), "node {i}: Closed for unknown {txn:?}");
                        assert!(m.closed.insert(txn), "node {i}: Closed twice: {txn:?}");
                    }
                    _ => {}
                }
            }
            if !any {
                return moved;
            }
            moved = true;
        }
        panic!("node {i}: drain did not finish");
    }

    /// Everything a node sends decodes, and relays stay within `MAX_DIST`.
    fn check_output(&mut self, w: usize, k: usize, mut bytes: &[u8]) {
        let (i, link) = self.wires[w].ends[k];
        let dec = &mut self.wires[w].out[k];
        while !bytes.is_empty() {
            let out = match dec.decode(bytes) {
                Ok(o) => o,
                Err(e) => panic!("node {i} sent an invalid stream on {link:?}: {e}"),
            };
            bytes = &bytes[out.consumed..];
            let Some(f) = out.frame else {
                continue;
            };
            let hdr = f.repr();
            // Spans propagate on circuit 0. A frame on a circuit is a routed transaction's,
            // forwarded as its originator wrote it (a hostile peer may route a LNK_SPAN of any
            // distance to another node; the node does not read it as a span).
            if hdr.cmd.command() == Command::LnkSpan && hdr.circuit.0 == 0 {
                if let Ok(Body::Span(span)) = f.body() {
                    assert!(
                        span.dist <= MAX_DIST,
                        "node {i} sent a LNK_SPAN at distance {} on {link:?}",
                        span.dist
                    );
                }
            }
        }
    }

    fn check(&self) {
        for i in 0..NODES {
            let n = &self.nodes[i];
            let m = &self.models[i];
            let st = n.stats();
            let remote = n
                .spans()
                .entries()
                .iter()
                .filter(|e| !e.key.via.is_local())
                .count() as u64;
            assert!(n.spans().len() <= SPANS, "node {i}: spans");
            assert!(n.relays().len() <= RELAYS, "node {i}: relays");
            assert!(n.routes().len() <= ROUTES, "node {i}: routes");
            assert_eq!(
                st.spans_accepted.checked_sub(st.spans_removed),
                Some(remote),
                "node {i}: spans accepted {} - removed {} != remote spans held",
                st.spans_accepted,
                st.spans_removed
            );
            assert!(st.spans_high_water >= remote, "node {i}: span high water");
            assert!(
                st.relays_high_water >= n.relays().len() as u64,
                "node {i}: relay hw"
            );
            assert!(
                st.routes_high_water >= n.routes().len() as u64,
                "node {i}: route hw"
            );
            for r in n.relays() {
                assert_ne!(
                    r.conn, r.source.via,
                    "node {i}: span relayed back out of the link it came from"
                );
            }
            for l in n.links() {
                let c = n.link(l).expect("listed link");
                assert!(c.open_transactions(Side::Ours) <= TXNS, "node {i}: txns");
                assert!(c.open_transactions(Side::Theirs) <= TXNS, "node {i}: txns");
                assert!(c.pending_transmit() <= TX, "node {i}: output queue");
            }
            if !n.has_pending_work() {
                let mut truth = BTreeSet::new();
                let mut local = BTreeSet::new();
                for e in n.spans().entries() {
                    let a = NodeAddr {
                        peer_id: e.span.peer_id,
                        pfs_id: e.span.pfs_id,
                    };
                    if e.key.via.is_local() {
                        local.insert(a);
                    } else {
                        truth.insert(a);
                    }
                }
                let truth: BTreeSet<_> = truth.difference(&local).copied().collect();
                assert_eq!(m.reachable, truth, "node {i}: reported reachability");
            }
        }
    }

    /// Advances the clock by `dt`, firing timers as they come due; with `flowing`, the
    /// network delivers everything in between, else it is frozen (a delay).
    fn advance(&mut self, dt: Duration, flowing: bool) {
        let end = self.now + dt;
        for _ in 0..MAX_TIMERS {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.poll_timeout())
                .min()
                .filter(|t| *t <= end);
            let Some(t) = next else {
                break;
            };
            self.now = self.now.max(t);
            self.fire();
            if flowing {
                self.flow();
            }
        }
        self.now = end;
        self.fire();
        if flowing {
            self.flow();
        }
    }

    fn fire(&mut self) {
        for n in &mut self.nodes {
            n.handle_timeout(self.now);
        }
        self.settle();
    }

    /// Delivers everything until nothing moves.
    fn flow(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            for w in 0..self.wires.len() {
                for k in 0..2 {
                    moved |= self.deliver(w, k, usize::MAX, 4096);
                }
            }
            moved |= self.settle();
            if !moved {
                return;
            }
        }
    }

    /// A quiet tail, the relay checks, then every transport closes.
    fn tail(&mut self) -> NodeRun {
        self.flow();
        for _ in 0..2 {
            self.advance(Duration::from_millis(1500), true);
        }
        self.check();
        if self.nodes.iter().all(|n| !n.has_pending_work()) {
            for (i, n) in self.nodes.iter().enumerate() {
                for r in n.relays().iter().filter(|r| r.state == RelayState::Open) {
                    let Some(e) = n.spans().get(r.source) else {
                        panic!("node {i}: open relay {r:?} of a span no longer held");
                    };
                    assert_ne!(e.key.via, r.conn, "node {i}: relay back out");
                    assert!(e.advertised_dist() <= MAX_DIST, "node {i}: relay too far");
                }
            }
        }
        let mut run = NodeRun::default();
        for n in &self.nodes {
            run.spans_accepted += n.stats().spans_accepted;
            run.relays_opened += n.stats().relays_opened;
            run.routes_relayed += n.stats().routes_relayed;
        }
        // Every transport goes away.
        let now = self.now;
        for w in &mut self.wires {
            w.up = false;
        }
        for i in 0..NODES {
            let links: Vec<LinkId> = self.nodes[i].links().collect();
            for l in links {
                self.nodes[i].handle_close(now, l);
            }
        }
        self.settle();
        for i in 0..NODES {
            let (n, m) = (&self.nodes[i], &self.models[i]);
            assert!(
                m.live.is_empty(),
                "node {i}: open after every link closed: {:?}",
                m.live
            );
            assert!(
                m.links.is_empty(),
                "node {i}: no LinkDown for {:?}",
                m.links
            );
            assert!(
                n.relays().is_empty(),
                "node {i}: relays left: {:?}",
                n.relays()
            );
            assert!(
                n.routes().is_empty(),
                "node {i}: routes left: {:?}",
                n.routes()
            );
            assert!(
                n.spans().entries().iter().all(|e| e.key.via.is_local()),
                "node {i}: remote spans left"
            );
            run.closed += m.closed.len() as u64;
        }
        self.check();
        run
    }
}
