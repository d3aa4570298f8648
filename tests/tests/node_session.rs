//! Nodes whose links run the reliable session: a hub with two leaves over in-memory byte
//! pipes, request/reply transactions across the hub, and one leaf's transport cut at random
//! points (mid-frame included). With sessions on, every transaction completes exactly once
//! and no span or relay is withdrawn; with sessions off the same cut ends transactions with
//! LOSTLINK and withdraws spans; a session whose transport never comes back goes down
//! cleanly after its grace period.
//!
//! Each run takes a seed and prints it on failure; `SEED=<n> cargo test -p dmsg-tests --test
//! node_session` reruns one (`TRACE=1` prints its cuts, reconnects and link events).

use std::collections::HashMap;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::errcode::txn as err;
use dmsg_core::link::{
    classify_stream, CloseReason, LinkConfig, NoSession, Outgoing, ReconnectError, Reliable,
    SessionOffer, SessionSlot, StreamStart,
};
use dmsg_core::node::{Node, NodeAddr, NodeError, NodeEvent, NodeTxn};
use dmsg_core::session::{DeathReason, SessionConfig, TransportState};
use dmsg_core::span::LinkId;
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::{peer_type, SpanRepr};
use dmsg_core::wire::{Command, Flags, Label, Uuid};
use dmsg_tests::sim::rng::Rng;

/// A 32-frame, 16 KiB retransmit window per link.
type Rel = Reliable<DefaultCrc, 32, 16384, 0, 0>;
type N<S> = Node<4, 32, 32, 16, { 8 * 64 + 1024 }, 1024, 4096, 32, DefaultCrc, S>;

const CLUSTER: Uuid = Uuid([0x5e; 16]);
const HUB: usize = 0;
/// The leaf whose transport is cut.
const FLAKY: usize = 1;
const STEADY: usize = 2;
const STEP: Duration = Duration::from_millis(1);

fn span_of(node: usize) -> SpanRepr {
    SpanRepr {
        peer_id: CLUSTER,
        pfs_id: Uuid([node as u8 + 1; 16]),
        pfs_type: 1,
        peer_type: peer_type::HAMMER2,
        peer_label: Label::new("cl").unwrap(),
        pfs_label: Label::new(&format!("node-{node}")).unwrap(),
        ..SpanRepr::default()
    }
}

fn addr(node: usize) -> NodeAddr {
    NodeAddr {
        peer_id: CLUSTER,
        pfs_id: Uuid([node as u8 + 1; 16]),
    }
}

/// One leaf's TCP connection to the hub: bytes in flight each way.
struct Pipe {
    leaf: usize,
    hub_link: LinkId,
    leaf_link: LinkId,
    to_hub: Vec<u8>,
    to_leaf: Vec<u8>,
    up: bool,
    /// A new stream the hub has not routed yet (it must classify its first bytes).
    hub_unrouted: bool,
}

/// What the test knows about one request.
#[derive(Default, Debug)]
struct Req {
    /// The server saw it opened (counted: must end at 1).
    opened: u32,
    /// Replies the client got (must end at 1).
    replies: u32,
    client_closed: Option<u32>,
    server_closed: Option<u32>,
    /// Errors relays answered instead of a reply.
    errors: Vec<u32>,
}

/// A hub and two leaves.
struct Net<S> {
    nodes: Vec<Box<N<S>>>,
    pipes: Vec<Pipe>,
    now: Instant,
    rng: Rng,
    sessions: bool,
    grace: Duration,
    next_session_id: u64,
    /// Requests by id (the id travels in the payload).
    reqs: HashMap<u32, Req>,
    /// Open transactions of each node: handle -> (request id, we are the client).
    open: Vec<HashMap<NodeTxn, (u32, bool)>>,
    /// Requests a server answers at a later step: (due step, node, txn, id, payload length).
    answers: Vec<(u64, usize, NodeTxn, u32, usize)>,
    /// Requests each leaf still has to issue, and the next id.
    to_issue: [u32; 3],
    next_id: u32,
    outstanding: [usize; 3],
    step: u64,
    /// Cuts that split a frame (some bytes of it arrived, the rest was lost).
    mid_frame_cuts: u32,
    /// Events seen per node.
    suspended: [u32; 3],
    resumed: [u32; 3],
    link_down: Vec<(usize, LinkId, CloseReason)>,
    unreachable: Vec<(usize, NodeAddr)>,
}

impl<S: SessionSlot<DefaultCrc> + Send + 'static> Net<S> {
    fn new(seed: u64, sessions: bool, grace: Duration) -> Net<S> {
        let mut net = Net {
            nodes: (0..3)
                .map(|_| Box::new(N::<S>::new(Default::default())))
                .collect(),
            pipes: Vec::new(),
            now: Instant::ZERO,
            rng: Rng::new(seed),
            sessions,
            grace,
            next_session_id: seed.wrapping_mul(0x9E37_79B9) | 1,
            reqs: HashMap::new(),
            open: vec![HashMap::new(); 3],
            answers: Vec::new(),
            to_issue: [0; 3],
            next_id: 1,
            outstanding: [0; 3],
            step: 0,
            mid_frame_cuts: 0,
            suspended: [0; 3],
            resumed: [0; 3],
            link_down: Vec::new(),
            unreachable: Vec::new(),
        };
        for leaf in [FLAKY, STEADY] {
            net.nodes[leaf].advertise(span_of(leaf)).unwrap();
            let now = net.now;
            let hub_cfg = net.link_config();
            let leaf_cfg = net.link_config();
            let hub_link = net.nodes[HUB].add_link(now, &hub_cfg).unwrap();
            let leaf_link = net.nodes[leaf].add_link(now, &leaf_cfg).unwrap();
            net.pipes.push(Pipe {
                leaf,
                hub_link,
                leaf_link,
                to_hub: Vec::new(),
                to_leaf: Vec::new(),
                up: true,
                hub_unrouted: false,
            });
        }
        net
    }

    fn link_config(&mut self) -> LinkConfig {
        let session = self.sessions.then(|| {
            self.next_session_id = self.next_session_id.wrapping_add(0x1_0001);
            SessionOffer {
                id: self.next_session_id,
                config: SessionConfig {
                    grace: self.grace,
                    ..SessionConfig::DEFAULT
                },
            }
        });
        LinkConfig {
            session,
            ..LinkConfig::default()
        }
    }

    fn pipe_of(&self, leaf: usize) -> usize {
        self.pipes.iter().position(|p| p.leaf == leaf).unwrap()
    }

    /// Delivers a random part of the bytes in flight (so frames arrive in pieces).
    fn deliver(&mut self) {
        let now = self.now;
        for p in 0..self.pipes.len() {
            if !self.pipes[p].up {
                continue;
            }
            // Towards the hub: a new stream is routed by its first 64 bytes.
            if self.pipes[p].hub_unrouted && self.pipes[p].to_hub.len() >= 64 {
                self.route_new_stream(p);
            }
            if !self.pipes[p].hub_unrouted && !self.pipes[p].to_hub.is_empty() {
                let n = 1 + self.rng.below(self.pipes[p].to_hub.len());
                let link = self.pipes[p].hub_link;
                let used = self.nodes[HUB].handle_input(now, link, &self.pipes[p].to_hub[..n]);
                self.pipes[p].to_hub.drain(..used);
            }
            if !self.pipes[p].to_leaf.is_empty() {
                let n = 1 + self.rng.below(self.pipes[p].to_leaf.len());
                let (leaf, link) = (self.pipes[p].leaf, self.pipes[p].leaf_link);
                let used = self.nodes[leaf].handle_input(now, link, &self.pipes[p].to_leaf[..n]);
                self.pipes[p].to_leaf.drain(..used);
            }
        }
    }

    /// The hub's accept path for a stream that replaced a lost one (the recipe of
    /// `Node::find_session`).
    fn route_new_stream(&mut self, p: usize) {
        let crc = DefaultCrc::default();
        let now = self.now;
        match classify_stream(&crc, &self.pipes[p].to_hub[..64]) {
            StreamStart::Resume(frame) => {
                let link = self.nodes[HUB].find_session(frame.receiver_id);
                assert_eq!(link, Some(self.pipes[p].hub_link), "RESUME names the link");
                assert_eq!(self.nodes[HUB].find_resume(&frame), link);
                // The sender is the leaf: its identity is not ours.
                assert_eq!(self.nodes[HUB].find_session(frame.sender_id), None);
                self.nodes[HUB]
                    .handle_reconnect(now, self.pipes[p].hub_link)
                    .unwrap();
                self.pipes[p].hub_unrouted = false;
            }
            other => panic!("a reconnecting leaf starts with RESUME, not {other:?}"),
        }
    }

    /// Writes what every node has to send into its pipes (lost if the pipe is down).
    fn transmit(&mut self) -> bool {
        let now = self.now;
        let mut buf = [0u8; 1500];
        let mut any = false;
        for i in 0..3 {
            while let Some(t) = self.nodes[i].poll_transmit(now, None, &mut buf) {
                any = true;
                let pipe = self
                    .pipes
                    .iter_mut()
                    .find(|p| {
                        (i == HUB && p.hub_link == t.link) || (p.leaf == i && p.leaf_link == t.link)
                    })
                    .expect("a link of a pipe");
                if !pipe.up {
                    continue; // written into a dead socket
                }
                if i == HUB {
                    pipe.to_leaf.extend_from_slice(&buf[..t.len]);
                } else {
                    pipe.to_hub.extend_from_slice(&buf[..t.len]);
                }
            }
        }
        any
    }

    /// Takes every node's events and reacts like an application.
    fn events(&mut self) -> bool {
        let mut any = false;
        for i in 0..3 {
            let mut opened = Vec::new();
            while let Some(ev) = self.nodes[i].poll_event() {
                any = true;
                match ev {
                    NodeEvent::Opened { txn, msg, .. } => {
                        let id = u32::from_le_bytes(msg.aux[..4].try_into().unwrap());
                        assert!(msg.flags().contains(Flags::CREATE | Flags::DELETE));
                        self.reqs.get_mut(&id).unwrap().opened += 1;
                        self.open[i].insert(txn, (id, false));
                        opened.push((txn, id, msg.aux.len()));
                    }
                    NodeEvent::Message { txn, msg } => {
                        let (id, client) = self.open[i][&txn];
                        assert!(client, "servers get no further frames");
                        if msg.aux.is_empty() {
                            // A relay ended the route (LOSTLINK) or had no circuit for it
                            // (CANTCIRC).
                            self.reqs.get_mut(&id).unwrap().errors.push(msg.error());
                            continue;
                        }
                        let got = u32::from_le_bytes(msg.aux[..4].try_into().unwrap());
                        assert_eq!(got, id, "the reply belongs to the request");
                        assert!(msg.aux[4..].iter().all(|&b| b == id as u8));
                        self.reqs.get_mut(&id).unwrap().replies += 1;
                    }
                    NodeEvent::Closed { txn, error, .. } => {
                        let (id, client) = self.open[i]
                            .remove(&txn)
                            .unwrap_or_else(|| panic!("node {i}: Closed twice or unknown {txn:?}"));
                        let r = self.reqs.get_mut(&id).unwrap();
                        let slot = if client {
                            self.outstanding[i] -= 1;
                            &mut r.client_closed
                        } else {
                            &mut r.server_closed
                        };
                        assert_eq!(*slot, None, "request {id} closed twice");
                        *slot = Some(error);
                    }
                    NodeEvent::LinkSuspended { .. } => {
                        trace(format_args!("{} node {i} suspended", self.step));
                        self.suspended[i] += 1
                    }
                    NodeEvent::LinkResumed { .. } => {
                        trace(format_args!("{} node {i} resumed", self.step));
                        self.resumed[i] += 1
                    }
                    NodeEvent::LinkDown { link, reason } => {
                        trace(format_args!("{} node {i} down {reason:?}", self.step));
                        self.link_down.push((i, link, reason))
                    }
                    NodeEvent::Unreachable { node } => self.unreachable.push((i, node)),
                    _ => {}
                }
            }
            for (txn, id, len) in opened {
                // Answer a little later, so requests are open while transports break.
                let due = self.step + self.rng.range(0, 30);
                self.answers.push((due, i, txn, id, len));
            }
        }
        any
    }

    /// Sends the answers that are due, and issues new requests.
    fn work(&mut self) {
        let now = self.now;
        let mut k = 0;
        while k < self.answers.len() {
            let (due, i, txn, id, len) = self.answers[k];
            if due > self.step || !self.open[i].contains_key(&txn) {
                if !self.open[i].contains_key(&txn) {
                    self.answers.swap_remove(k); // lost with its link
                } else {
                    k += 1;
                }
                continue;
            }
            let mut payload = id.to_le_bytes().to_vec();
            payload.resize(len, id as u8);
            let msg = Outgoing::new(Command::DbgShell).with_aux(&payload);
            match self.nodes[i].send(now, txn, &msg, Flags::DELETE) {
                Ok(()) => {
                    self.answers.swap_remove(k);
                }
                Err(NodeError::Link(dmsg_core::link::SendError::WouldBlock { .. })) => k += 1,
                Err(e) => panic!("node {i} answering {id}: {e}"),
            }
        }
        for (i, other) in [(FLAKY, STEADY), (STEADY, FLAKY)] {
            while self.to_issue[i] > 0 && self.outstanding[i] < 6 {
                let id = self.next_id;
                let len = 4 + self.rng.below(900);
                let mut payload = id.to_le_bytes().to_vec();
                payload.resize(len, id as u8);
                let msg = Outgoing::new(Command::DbgShell).with_aux(&payload);
                match self.nodes[i].open(now, addr(other), &msg, Flags::DELETE) {
                    Ok(txn) => {
                        self.next_id += 1;
                        self.to_issue[i] -= 1;
                        self.outstanding[i] += 1;
                        self.open[i].insert(txn, (id, true));
                        self.reqs.insert(id, Req::default());
                    }
                    Err(NodeError::Link(dmsg_core::link::SendError::WouldBlock { .. }))
                    | Err(NodeError::RoutesFull) => break,
                    Err(e) => panic!(
                        "node {i} opening {id}: {e}; downs {:?} unreachable {:?}",
                        self.link_down, self.unreachable
                    ),
                }
            }
        }
    }

    /// One millisecond of the world.
    fn tick(&mut self) {
        self.step += 1;
        self.now = self.now + STEP;
        let now = self.now;
        for n in self.nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        self.work();
        for _ in 0..50 {
            let mut busy = self.transmit();
            busy |= self.events();
            if !busy {
                break;
            }
        }
        self.deliver();
        for _ in 0..50 {
            let mut busy = self.transmit();
            busy |= self.events();
            if !busy {
                break;
            }
        }
    }

    /// The transport of `leaf` breaks: a random part of what is in flight arrives (the
    /// rest is lost, frames cut anywhere), the leaf learns it at once, the hub at once, a
    /// little later, or not at all (a half-open connection).
    fn cut(&mut self, leaf: usize) -> (u64, Option<u64>) {
        let p = self.pipe_of(leaf);
        let keep_h = self.rng.below(self.pipes[p].to_hub.len() + 1);
        let keep_l = self.rng.below(self.pipes[p].to_leaf.len() + 1);
        if keep_h % 64 != 0 || keep_l % 64 != 0 {
            self.mid_frame_cuts += 1; // frames are multiples of 64 bytes
        }
        self.pipes[p].to_hub.truncate(keep_h);
        self.pipes[p].to_leaf.truncate(keep_l);
        self.deliver_all(p);
        let pipe = &mut self.pipes[p];
        pipe.up = false;
        pipe.to_hub.clear();
        pipe.to_leaf.clear();
        let unrouted = pipe.hub_unrouted;
        pipe.hub_unrouted = false;
        let leaf_at = self.step + self.rng.range(0, 5);
        let hub_at = match self.rng.below(3) {
            _ if unrouted => None, // the hub never saw that stream
            0 => Some(self.step),
            1 => Some(self.step + self.rng.range(1, 50)),
            _ => None,
        };
        (leaf_at, hub_at)
    }

    /// Feeds what is left in a pipe (best effort: the receiver may leave some unread).
    fn deliver_all(&mut self, p: usize) {
        let now = self.now;
        if !self.pipes[p].hub_unrouted {
            let link = self.pipes[p].hub_link;
            let used = self.nodes[HUB].handle_input(now, link, &self.pipes[p].to_hub);
            self.pipes[p].to_hub.drain(..used);
        }
        let (leaf, link) = (self.pipes[p].leaf, self.pipes[p].leaf_link);
        let used = self.nodes[leaf].handle_input(now, link, &self.pipes[p].to_leaf);
        self.pipes[p].to_leaf.drain(..used);
    }

    /// The leaf dialled again: a fresh stream, routed by the hub from its first bytes.
    fn reconnect(&mut self, leaf: usize) {
        let p = self.pipe_of(leaf);
        let now = self.now;
        let link = self.pipes[p].leaf_link;
        self.nodes[leaf].handle_reconnect(now, link).unwrap();
        let pipe = &mut self.pipes[p];
        pipe.up = true;
        pipe.hub_unrouted = true;
        pipe.to_hub.clear();
        pipe.to_leaf.clear();
    }

    fn converge(&mut self) {
        for _ in 0..5_000 {
            self.tick();
            let routes = self.nodes[FLAKY].route_to(&addr(STEADY)).is_some()
                && self.nodes[STEADY].route_to(&addr(FLAKY)).is_some();
            if routes && self.nodes.iter().all(|n| !n.has_pending_work()) {
                return;
            }
        }
        panic!("no convergence");
    }

    fn done(&self) -> bool {
        self.to_issue.iter().all(|&n| n == 0)
            && self.open.iter().all(|m| m.is_empty())
            && self.answers.is_empty()
    }
}

/// Prints a line of the run's history when `TRACE` is set.
fn trace(line: std::fmt::Arguments<'_>) {
    if std::env::var_os("TRACE").is_some() {
        eprintln!("{line}");
    }
}

/// Runs `f(seed)` for each seed and names the seed that failed.
fn for_seeds<T: Send + 'static>(seeds: std::ops::Range<u64>, f: fn(u64) -> T) -> Vec<T> {
    let seeds = match std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => s..s + 1,
        None => seeds,
    };
    let mut out = Vec::new();
    for seed in seeds {
        let run = std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(move || f(seed))
            .unwrap()
            .join();
        if let Err(e) = run {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed} failed (rerun with SEED={seed}): {msg}");
        }
        out.extend(run.ok());
    }
    out
}

/// Returns how many cuts split a frame.
fn sessions_survive_transport_cuts(seed: u64) -> u32 {
    let mut net = Net::<Rel>::new(seed, true, Duration::from_secs(10));
    net.converge();
    let hub_links: Vec<LinkId> = net.pipes.iter().map(|p| p.hub_link).collect();
    for &l in &hub_links {
        assert!(net.nodes[HUB].link(l).unwrap().session_running());
    }
    let relays = net.nodes[HUB].relays().len();
    let spans: Vec<_> = net.nodes.iter().map(|n| n.spans().len()).collect();
    let removed: Vec<_> = net.nodes.iter().map(|n| n.stats().spans_removed).collect();
    let relays_closed = net.nodes[HUB].stats().relays_closed;

    net.to_issue = [0, 120, 120];
    // Cut while traffic flows: after random numbers of completed requests.
    let cuts = 3 + net.rng.below(3);
    let mut cut_at: Vec<usize> = (0..cuts).map(|_| 5 + net.rng.below(200)).collect();
    cut_at.sort_unstable();
    let mut leaf_close: Option<u64> = None;
    let mut hub_close: Option<u64> = None;
    let mut redial: Option<u64> = None;
    let mut done_cuts = 0;
    let p = net.pipe_of(FLAKY);
    for _ in 0..60_000 {
        net.tick();
        let step = net.step;
        let completed = net
            .reqs
            .values()
            .filter(|r| r.client_closed.is_some())
            .count();
        if done_cuts < cuts && completed >= cut_at[done_cuts] && net.pipes[p].up && redial.is_none()
        {
            let (l, h) = net.cut(FLAKY);
            trace(format_args!("{step} cut leaf close {l} hub close {h:?}"));
            leaf_close = Some(l);
            hub_close = h;
            redial = Some(l + net.rng.range(1, 600));
            done_cuts += 1;
        }
        let now = net.now;
        if leaf_close.is_some_and(|t| step >= t) {
            net.nodes[FLAKY].handle_close(now, net.pipes[p].leaf_link);
            assert!(net.nodes[FLAKY].is_suspended(net.pipes[p].leaf_link));
            leaf_close = None;
        }
        if net.pipes[p].hub_unrouted || (net.pipes[p].up && hub_close.is_some()) {
            // The hub routed a new stream to the link (or is about to): the old socket's
            // close is no longer news (a driver closes the old socket when it reroutes and
            // must not report it afterwards).
            hub_close = None;
        }
        if hub_close.is_some_and(|t| step >= t) {
            net.nodes[HUB].handle_close(now, net.pipes[p].hub_link);
            trace(format_args!("{step} hub close"));
            hub_close = None;
        }
        if leaf_close.is_none() && redial.is_some_and(|t| step >= t) {
            net.reconnect(FLAKY);
            trace(format_args!("{step} redial"));
            redial = None;
        }
        let up = |n: &N<Rel>, l| {
            n.link(l)
                .is_some_and(|c| c.session().transport() == TransportState::Up)
        };
        let resumed = up(&net.nodes[FLAKY], net.pipes[p].leaf_link)
            && up(&net.nodes[HUB], net.pipes[p].hub_link);
        if done_cuts == cuts && redial.is_none() && resumed && net.done() {
            break;
        }
    }
    assert_eq!(done_cuts, cuts, "every cut happened");
    assert!(net.done(), "every request finished: {:?}", net.open);

    // Exactly once, nothing lost.
    assert_eq!(net.reqs.len(), 240);
    for (id, r) in &net.reqs {
        assert_eq!(r.opened, 1, "request {id} reached its server once: {r:?}");
        assert_eq!(r.replies, 1, "request {id} got one reply: {r:?}");
        assert_eq!(r.client_closed, Some(err::OK), "request {id}: {r:?}");
        assert_eq!(r.server_closed, Some(err::OK), "request {id}: {r:?}");
        assert!(r.errors.is_empty(), "request {id}: {r:?}");
    }
    // The cluster never noticed.
    assert!(net.link_down.is_empty(), "{:?}", net.link_down);
    assert!(net.unreachable.is_empty(), "{:?}", net.unreachable);
    assert_eq!(net.nodes[HUB].relays().len(), relays);
    assert_eq!(net.nodes[HUB].stats().relays_closed, relays_closed);
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.spans().len(), spans[i], "node {i}");
        assert_eq!(n.stats().spans_removed, removed[i], "node {i}");
    }
    // Every cut was a suspension and a reconnect; each completed resume was reported (a
    // cut during a resume handshake is resumed by the next transport: one resume for two
    // reconnects). The steady leaf saw none of it.
    let leaf_link = net.pipes[p].leaf_link;
    let st = net.nodes[FLAKY].reliable_stats(leaf_link).unwrap();
    assert_eq!(st.reconnects, cuts as u64);
    assert!(st.suspensions >= cuts as u64);
    assert!(st.resumes >= 1 && st.resumes <= st.reconnects, "{st:?}");
    assert_eq!(net.suspended[FLAKY] as u64, st.suspensions);
    assert_eq!(net.resumed[FLAKY] as u64, st.resumes);
    let hs = net.nodes[HUB]
        .reliable_stats(net.pipes[p].hub_link)
        .unwrap();
    assert_eq!(net.suspended[HUB] as u64, hs.suspensions);
    assert_eq!(net.resumed[HUB] as u64, hs.resumes);
    assert!(hs.resumes >= 1, "{hs:?}");
    assert_eq!((net.suspended[STEADY], net.resumed[STEADY]), (0, 0));
    assert!(net.nodes.iter().all(|n| n.routes().is_empty()));
    net.mid_frame_cuts
}

#[test]
fn transactions_complete_exactly_once_across_transport_cuts() {
    let mid_frame: u32 = for_seeds(0..6, sessions_survive_transport_cuts)
        .iter()
        .sum();
    if std::env::var_os("SEED").is_none() {
        assert!(mid_frame >= 3, "cuts split frames: {mid_frame}");
    }
}

/// The same cut without sessions: the link goes down, transactions across it end with
/// LOSTLINK, and the cut leaf's span is withdrawn through the hub.
fn plain_links_lose_everything(seed: u64) {
    let mut net = Net::<NoSession>::new(seed, false, Duration::from_secs(10));
    net.converge();
    let p = net.pipe_of(FLAKY);
    net.to_issue = [0, 40, 40];
    // Run until both leaves have requests open, then cut.
    for _ in 0..10_000 {
        net.tick();
        if net.open[FLAKY].len() >= 3 && net.open[STEADY].len() >= 3 {
            break;
        }
    }
    net.to_issue = [0, 0, 0];
    let open_before: usize = net.open.iter().map(|m| m.len()).sum();
    assert!(open_before >= 6);
    net.cut(FLAKY);
    let now = net.now;
    // A plain link cannot be resumed (and the refusal changes nothing).
    assert_eq!(
        net.nodes[FLAKY].handle_reconnect(now, net.pipes[p].leaf_link),
        Err(NodeError::Reconnect(ReconnectError::NoSession))
    );
    assert_eq!(net.suspended, [0; 3]);
    net.nodes[FLAKY].handle_close(now, net.pipes[p].leaf_link);
    net.nodes[HUB].handle_close(now, net.pipes[p].hub_link);
    // Gone, or still draining its last events: either way not resumable.
    assert!(matches!(
        net.nodes[FLAKY].handle_reconnect(now, net.pipes[p].leaf_link),
        Err(NodeError::UnknownLink(_) | NodeError::Reconnect(ReconnectError::NoSession))
    ));
    for _ in 0..200 {
        net.tick();
    }
    assert!(net.open.iter().all(|m| m.is_empty()), "{:?}", net.open);
    let lost = net
        .reqs
        .values()
        .filter(|r| r.client_closed == Some(err::LOSTLINK))
        .count();
    assert!(lost >= 1, "open requests ended with LOSTLINK");
    for (id, r) in &net.reqs {
        assert!(r.opened <= 1 && r.replies <= 1, "request {id}: {r:?}");
        assert!(r.client_closed.is_some(), "request {id} closed: {r:?}");
        if r.replies == 0 {
            // Lost with the link or route, or refused by the hub once the circuit was gone.
            let e = r.client_closed.unwrap();
            assert!(
                e == err::LOSTLINK || e == err::CANTCIRC,
                "request {id}: {r:?}"
            );
        }
    }
    let downs: Vec<usize> = net.link_down.iter().map(|d| d.0).collect();
    assert!(
        downs.contains(&FLAKY) && downs.contains(&HUB),
        "{:?}",
        net.link_down
    );
    assert!(net.unreachable.contains(&(STEADY, addr(FLAKY))));
    assert!(net.unreachable.contains(&(FLAKY, addr(STEADY))));
    assert!(net.nodes[HUB].route_to(&addr(FLAKY)).is_none());
    assert!(net.nodes[STEADY].route_to(&addr(FLAKY)).is_none());
    assert_eq!(net.suspended, [0; 3]);
}

#[test]
fn without_sessions_a_cut_loses_transactions_and_spans() {
    for_seeds(0..3, plain_links_lose_everything);
}

/// A session whose transport never comes back: after the grace period the link goes down
/// on both ends, the hub withdraws the leaf's span from the other leaf, and every
/// transaction is closed exactly once.
fn grace_expiry_takes_the_link_down(seed: u64) {
    let grace = Duration::from_secs(2);
    let mut net = Net::<Rel>::new(seed, true, grace);
    net.converge();
    let p = net.pipe_of(FLAKY);
    net.to_issue = [0, 40, 40];
    for _ in 0..10_000 {
        net.tick();
        if net.open[FLAKY].len() >= 3 && net.open[STEADY].len() >= 3 {
            break;
        }
    }
    net.to_issue = [0, 0, 0];
    net.cut(FLAKY);
    let now = net.now;
    let cut_at = now;
    net.nodes[FLAKY].handle_close(now, net.pipes[p].leaf_link);
    net.nodes[HUB].handle_close(now, net.pipes[p].hub_link);
    // Within the grace period nothing is withdrawn.
    while net.now + Duration::from_millis(100) < cut_at + grace {
        net.tick();
    }
    assert!(net.link_down.is_empty() && net.unreachable.is_empty());
    assert!(net.nodes[STEADY].route_to(&addr(FLAKY)).is_some());
    assert!(net.nodes[HUB].is_suspended(net.pipes[p].hub_link));
    for _ in 0..400 {
        net.tick();
    }
    let died = CloseReason::SessionDied(DeathReason::GraceExpired);
    assert!(
        net.link_down
            .contains(&(FLAKY, net.pipes[p].leaf_link, died)),
        "{:?}",
        net.link_down
    );
    assert!(
        net.link_down.contains(&(HUB, net.pipes[p].hub_link, died)),
        "{:?}",
        net.link_down
    );
    assert_eq!(net.link_down.len(), 2);
    assert!(net.unreachable.contains(&(STEADY, addr(FLAKY))));
    assert!(net.unreachable.contains(&(FLAKY, addr(STEADY))));
    assert!(net.nodes[HUB].route_to(&addr(FLAKY)).is_none());
    assert!(net.nodes[HUB]
        .relays()
        .iter()
        .all(|r| r.node != addr(FLAKY)));
    assert!(
        net.nodes[STEADY].spans().len() < 2,
        "only its own span is left"
    );
    assert!(net.open.iter().all(|m| m.is_empty()), "{:?}", net.open);
    for (id, r) in &net.reqs {
        assert!(r.opened <= 1 && r.replies <= 1, "request {id}: {r:?}");
        assert!(r.client_closed.is_some(), "request {id}: {r:?}");
        if r.replies == 0 {
            // Lost with the link or route, or refused by the hub once the circuit was gone.
            let e = r.client_closed.unwrap();
            assert!(
                e == err::LOSTLINK || e == err::CANTCIRC,
                "request {id}: {r:?}"
            );
        }
    }
    assert!(net
        .reqs
        .values()
        .any(|r| r.client_closed == Some(err::LOSTLINK)));
    // The link is gone: a late RESUME names nothing, and the leaf must start over.
    assert_eq!(net.nodes[HUB].find_session(1), None);
    assert!(net.nodes[HUB].links().all(|l| l != net.pipes[p].hub_link));
    let now = net.now;
    assert!(net.nodes[FLAKY]
        .handle_reconnect(now, net.pipes[p].leaf_link)
        .is_err());
}

#[test]
fn a_session_without_transport_dies_after_its_grace_period() {
    for_seeds(0..3, grace_expiry_takes_the_link_down);
}

/// The sizes the aliases document (x86_64).
#[test]
fn node_aliases_have_their_documented_sizes() {
    use dmsg_core::link::{ReliableHostConnection, ReliableMcuConnection};
    use dmsg_core::node::{ReliableHostHub, ReliableMcuLeaf};
    let leaf = std::mem::size_of::<ReliableMcuLeaf>();
    let hub = std::mem::size_of::<ReliableHostHub>();
    println!(
        "ReliableMcuLeaf {leaf} bytes (link {}), ReliableHostHub {hub} bytes (link {})",
        std::mem::size_of::<ReliableMcuConnection>(),
        std::mem::size_of::<ReliableHostConnection>()
    );
    assert!(leaf < 24 * 1024);
    assert!(hub < 10_000_000);
}

/// A hub that restarted knows no session: it answers the leaf's RESUME with a stateless
/// RESET, the leaf's link goes down at once (`PeerReset`, not after the grace period) with
/// its transactions closed LOSTLINK, and the leaf starts over with a new link.
#[test]
fn a_restarted_hub_resets_the_resume() {
    for_seeds(0..2, |seed| {
        let mut net = Net::<Rel>::new(seed, true, Duration::from_secs(10));
        net.converge();
        let p = net.pipe_of(FLAKY);
        net.to_issue = [0, 20, 0];
        for _ in 0..10_000 {
            net.tick();
            if net.open[FLAKY].len() >= 3 {
                break;
            }
        }
        net.to_issue = [0, 0, 0];
        let open_at_leaf = net.open[FLAKY].len();
        assert!(open_at_leaf >= 3);
        net.cut(FLAKY);
        let now = net.now;
        let leaf_link = net.pipes[p].leaf_link;
        net.nodes[FLAKY].handle_close(now, leaf_link);
        // The hub restarts: a fresh node with no links and no sessions.
        *net.nodes[HUB] = N::<Rel>::new(Default::default());
        net.nodes[FLAKY].handle_reconnect(now, leaf_link).unwrap();
        let mut buf = [0u8; 1500];
        let t = net.nodes[FLAKY]
            .poll_transmit(now, Some(leaf_link), &mut buf)
            .unwrap();
        let crc = DefaultCrc::default();
        let start = classify_stream(&crc, &buf[..t.len]);
        let StreamStart::Resume(frame) = start else {
            panic!("a RESUME first, not {start:?}");
        };
        assert_eq!(net.nodes[HUB].find_session(frame.receiver_id), None);
        assert_eq!(net.nodes[HUB].find_resume(&frame), None);
        let mut reset = [0u8; 64];
        assert_eq!(start.stateless_reset(&crc, &mut reset), Some(64));
        assert_eq!(net.nodes[FLAKY].handle_input(now, leaf_link, &reset), 64);
        net.events();
        let reset_death = CloseReason::SessionDied(DeathReason::PeerReset);
        assert_eq!(net.link_down, vec![(FLAKY, leaf_link, reset_death)]);
        assert!(net.open[FLAKY].is_empty(), "{:?}", net.open[FLAKY]);
        let lost = net
            .reqs
            .values()
            .filter(|r| r.client_closed == Some(err::LOSTLINK))
            .count();
        assert!(lost >= 1);
        assert!(net.unreachable.contains(&(FLAKY, addr(STEADY))));
        // Starting over: a new link with a fresh identity.
        let cfg = net.link_config();
        assert!(net.nodes[FLAKY].add_link(now, &cfg).is_ok());
    });
}

/// `remove_link` ends a suspended session at once (no grace period); a session identity
/// can be used by one link only.
#[test]
fn remove_link_abandons_a_session_and_identities_are_unique() {
    let mut net = Net::<Rel>::new(7, true, Duration::from_secs(10));
    net.converge();
    let p = net.pipe_of(FLAKY);
    let (hub_link, leaf_link) = (net.pipes[p].hub_link, net.pipes[p].leaf_link);
    net.cut(FLAKY);
    let now = net.now;
    net.nodes[HUB].handle_close(now, hub_link);
    net.events();
    assert!(net.nodes[HUB].is_suspended(hub_link));
    assert_eq!(net.suspended[HUB], 1);
    net.nodes[HUB].remove_link(now, hub_link).unwrap();
    net.events();
    let aborted = CloseReason::SessionDied(DeathReason::Aborted);
    assert_eq!(net.link_down, vec![(HUB, hub_link, aborted)]);
    // The withdrawal reaches the steady leaf over its own link.
    for _ in 0..100 {
        net.tick();
    }
    assert!(net.unreachable.contains(&(STEADY, addr(FLAKY))));
    // The leaf's identity is taken by its (suspended) link.
    let id = net.nodes[FLAKY]
        .link(leaf_link)
        .and_then(|c| c.session_id())
        .unwrap();
    let dup = LinkConfig {
        session: Some(SessionOffer::new(id)),
        ..LinkConfig::default()
    };
    assert_eq!(
        net.nodes[FLAKY].add_link(now, &dup),
        Err(NodeError::SessionIdInUse(id))
    );
    // A plain node refuses a session offer.
    let mut plain = N::<NoSession>::new(Default::default());
    assert!(matches!(
        plain.add_link(now, &dup),
        Err(NodeError::Config(_))
    ));
}
