//! A small DMSG hub for the TAP test: a `dmsg_core::node::Node` over std TCP, driven by the
//! core's drive contract (see `core/src/node/mod.rs`), in threads of this process whose
//! sockets live in the test's network namespace.
//!
//! One thread accepts connections, one reads each connection and one owns the node; the
//! reader threads hand their bytes to the node thread over a channel, so the node is only
//! ever touched by one thread. The test asks the node thread to open transactions and for
//! its view of the cluster ([`Hub::open`], [`Hub::status`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;

use dmsg_core::link::{LinkConfig, Outgoing};
use dmsg_core::node::{Node, NodeAddr, NodeConfig, NodeEvent, NodeTxn};
use dmsg_core::span::LinkId;
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::{peer_type, ConnRepr};
use dmsg_core::wire::{Command, Flags, Label, Uuid};

/// 16 links, 64 spans, 64 relays, 64 routes; links with 4 KiB of aux and 64 transactions.
type HubNode = Node<16, 64, 64, 64, { 8 * 64 + 4096 }, 4096, 16384, 64>;

/// How a transaction the hub opened ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Aux data of every frame the peer sent in it, in order.
    pub replies: Vec<Vec<u8>>,
    /// The closing error (0 OK, 0x20 NOSUPP, 0x21 LOSTLINK, ...).
    pub error: u32,
}

/// The hub's view of the cluster.
#[derive(Clone, Debug, Default)]
pub struct HubStatus {
    /// Nodes reachable now (a span of theirs is held).
    pub reachable: Vec<NodeAddr>,
    /// `pfs_label`s of the spans held.
    pub span_labels: Vec<String>,
    /// Links open now.
    pub links: usize,
    /// Links that came up since the start.
    pub links_up: u64,
    /// Why each link that closed closed, in order.
    pub links_down: Vec<String>,
    /// Transactions the leaf opened and the hub answered (echo).
    pub answered: u64,
}

/// Where the outcome of a transaction goes.
type Done = Sender<Result<TxnResult, String>>;

enum Msg {
    Accepted(TcpStream),
    Bytes(LinkId, Vec<u8>),
    Eof(LinkId),
    Open {
        to: NodeAddr,
        command: Command,
        aux: Vec<u8>,
        done: Done,
    },
    Status(Sender<HubStatus>),
    Stop,
}

/// A running hub; stopped on drop.
pub struct Hub {
    tx: Sender<Msg>,
    node_thread: Option<JoinHandle<()>>,
}

/// Settings of the hub's links.
#[derive(Clone, Copy, Debug)]
pub struct HubTimers {
    /// LNK_PING after this long without sending.
    pub ping: Duration,
    /// A link is dead after this long without receiving.
    pub idle: Duration,
}

impl Hub {
    /// Starts a hub listening on `listener` (bound by the caller, in the namespace).
    pub fn start(listener: TcpListener, cluster: Uuid, timers: HubTimers) -> Hub {
        let (tx, rx) = mpsc::channel();
        let accept_tx = tx.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if accept_tx.send(Msg::Accepted(s)).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let node_tx = tx.clone();
        let node_thread = std::thread::spawn(move || run(rx, node_tx, cluster, timers));
        Hub {
            tx,
            node_thread: Some(node_thread),
        }
    }

    /// Opens a one-frame transaction (CREATE|DELETE) of `command` with `aux` to `to`,
    /// routed over its span; the receiver gets its outcome once it closed (`Err` if it
    /// could not be opened).
    pub fn open(
        &self,
        to: NodeAddr,
        command: Command,
        aux: &[u8],
    ) -> Receiver<Result<TxnResult, String>> {
        let (done, rx) = mpsc::channel();
        let _ = self.tx.send(Msg::Open {
            to,
            command,
            aux: aux.to_vec(),
            done,
        });
        rx
    }

    /// The hub's view now.
    pub fn status(&self) -> HubStatus {
        let (tx, rx) = mpsc::channel();
        let _ = self.tx.send(Msg::Status(tx));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_default()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.node_thread.take() {
            let _ = t.join();
        }
    }
}

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

struct State {
    node: Box<HubNode>,
    conns: HashMap<LinkId, Conn>,
    txns: HashMap<NodeTxn, (Vec<Vec<u8>>, Done)>,
    reachable: Vec<NodeAddr>,
    links_up: u64,
    links_down: Vec<String>,
    answered: u64,
    start: std::time::Instant,
    link_config: LinkConfig,
}

impl State {
    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// Steps 1 to 3 of the drive contract, until nothing moves.
    fn drive(&mut self) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let now = self.now();
            let mut busy = false;
            let links: Vec<LinkId> = self.conns.keys().copied().collect();
            for link in links {
                let Some(conn) = self.conns.get_mut(&link) else {
                    continue;
                };
                if conn.pending.is_empty() {
                    continue;
                }
                let used = self.node.handle_input(now, link, &conn.pending);
                conn.pending.drain(..used);
                busy |= used > 0;
            }
            while let Some(t) = self.node.poll_transmit(now, None, &mut buf) {
                busy = true;
                if let Some(conn) = self.conns.get_mut(&t.link) {
                    if conn.stream.write_all(&buf[..t.len]).is_err() {
                        // The reader sees the broken stream and reports Eof.
                        let _ = conn.stream.shutdown(Shutdown::Both);
                    }
                }
            }
            while self.take_event(now) {
                busy = true;
            }
            if !busy {
                break;
            }
        }
    }

    /// Takes one event and reacts; false when there was none.
    fn take_event(&mut self, now: Instant) -> bool {
        enum Then {
            Nothing,
            Answer(NodeTxn, Command, Vec<u8>),
        }
        let then = match self.node.poll_event() {
            None => return false,
            Some(NodeEvent::LinkUp { .. }) => {
                self.links_up += 1;
                Then::Nothing
            }
            Some(NodeEvent::LinkDown { link, reason }) => {
                self.links_down.push(format!("{reason:?}"));
                if let Some(conn) = self.conns.remove(&link) {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                }
                Then::Nothing
            }
            Some(NodeEvent::Reachable { node, .. }) => {
                self.reachable.push(node);
                Then::Nothing
            }
            Some(NodeEvent::Unreachable { node }) => {
                self.reachable.retain(|n| *n != node);
                Then::Nothing
            }
            Some(NodeEvent::Opened { txn, msg, .. }) => {
                // The leaf's transactions: answered with their own aux (an echo service).
                Then::Answer(txn, msg.command(), msg.aux.to_vec())
            }
            Some(NodeEvent::Message { txn, msg }) => {
                if let Some((replies, _)) = self.txns.get_mut(&txn) {
                    replies.push(msg.aux.to_vec());
                }
                Then::Nothing
            }
            Some(NodeEvent::Closed { txn, error, .. }) => {
                if let Some((replies, done)) = self.txns.remove(&txn) {
                    let _ = done.send(Ok(TxnResult { replies, error }));
                }
                Then::Nothing
            }
            Some(_) => Then::Nothing,
        };
        if let Then::Answer(txn, command, aux) = then {
            let out = Outgoing::new(command).with_aux(&aux);
            match self.node.send(now, txn, &out, Flags::DELETE) {
                Ok(()) => self.answered += 1,
                Err(_) => {
                    let _ = self.node.abort(now, txn);
                }
            }
        }
        true
    }

    fn status(&self) -> HubStatus {
        HubStatus {
            reachable: self.reachable.clone(),
            span_labels: self
                .node
                .spans()
                .entries()
                .iter()
                .map(|e| e.span.pfs_label.as_str().unwrap_or("?").to_string())
                .collect(),
            links: self.conns.len(),
            links_up: self.links_up,
            links_down: self.links_down.clone(),
            answered: self.answered,
        }
    }
}

fn run(rx: Receiver<Msg>, tx: Sender<Msg>, cluster: Uuid, timers: HubTimers) {
    let link_config = LinkConfig {
        conn: ConnRepr {
            peer_id: cluster,
            peer_type: peer_type::ROUTER,
            peer_mask: u64::MAX,
            peer_label: Label::new("tap-test-hub").unwrap_or(Label::EMPTY),
            ..ConnRepr::default()
        },
        ping_interval: timers.ping,
        idle_timeout: timers.idle,
        ..LinkConfig::default()
    };
    let mut st = State {
        node: Box::new(HubNode::new(NodeConfig::default())),
        conns: HashMap::new(),
        txns: HashMap::new(),
        reachable: Vec::new(),
        links_up: 0,
        links_down: Vec::new(),
        answered: 0,
        start: std::time::Instant::now(),
        link_config,
    };
    loop {
        // Wait for input or the node's timer (at most 50 ms, so the clock is looked at).
        let now = st.now();
        let wait = st
            .node
            .poll_timeout()
            .map(|t| t.as_micros().saturating_sub(now.as_micros()))
            .unwrap_or(50_000)
            .min(50_000);
        let msg = match rx.recv_timeout(std::time::Duration::from_micros(wait)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = st.now();
        match msg {
            None => {}
            Some(Msg::Stop) => {
                for conn in st.conns.values() {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                }
                return;
            }
            Some(Msg::Accepted(stream)) => {
                let _ = stream.set_nodelay(true);
                let cfg = LinkConfig {
                    salt_seed: st.links_up as u32 ^ 0x5eed,
                    ..st.link_config
                };
                match (st.node.add_link(now, &cfg), stream.try_clone()) {
                    (Ok(link), Ok(mut reader)) => {
                        st.conns.insert(
                            link,
                            Conn {
                                stream,
                                pending: Vec::new(),
                            },
                        );
                        let tx = tx.clone();
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                match reader.read(&mut buf) {
                                    Ok(0) | Err(_) => {
                                        let _ = tx.send(Msg::Eof(link));
                                        return;
                                    }
                                    Ok(n) => {
                                        if tx.send(Msg::Bytes(link, buf[..n].to_vec())).is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                        });
                    }
                    _ => {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            }
            Some(Msg::Bytes(link, bytes)) => {
                if let Some(conn) = st.conns.get_mut(&link) {
                    conn.pending.extend_from_slice(&bytes);
                }
            }
            Some(Msg::Eof(link)) if st.conns.contains_key(&link) => {
                st.node.handle_close(now, link);
            }
            Some(Msg::Eof(_)) => {}
            Some(Msg::Open {
                to,
                command,
                aux,
                done,
            }) => {
                let out = Outgoing::new(command).with_aux(&aux);
                match st.node.open(now, to, &out, Flags::DELETE) {
                    Ok(txn) => {
                        st.txns.insert(txn, (Vec::new(), done));
                    }
                    Err(e) => {
                        let _ = done.send(Err(format!("{e:?}")));
                    }
                }
            }
            Some(Msg::Status(reply)) => {
                let _ = reply.send(st.status());
            }
        }
        if st.node.poll_timeout().is_some_and(|t| t <= now) {
            st.node.handle_timeout(now);
        }
        st.drive();
    }
}
