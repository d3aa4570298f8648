//! The Linux side's client of the hub: a `dmsg-std` node runtime (the same runtime `dmsg
//! hub` and `dmsg leaf` run) that dials the hub inside the test's network namespace, learns
//! the embassy leaf's span from the hub's relays, and opens transactions to the leaf,
//! routed through the hub over the leaf's span.
//!
//! The runtime is started from a thread that entered the namespace (`setns`), so its I/O
//! thread and every socket it makes live there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dmsg_core::link::SendError;
use dmsg_core::node::{NodeAddr, NodeError, NodeTxn};
use dmsg_core::wire::body::peer_type;
use dmsg_core::wire::{Body, Command, Flags, Label, Uuid};
use dmsg_std::link::Message;
use dmsg_std::net::Addr;
use dmsg_std::node::drive::LeafNode;
use dmsg_std::node::{self, NodeEvent, NodeHandle, NodeOptions, RtError};

/// How a transaction the client opened ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Aux data of every frame the peer sent in it, in order.
    pub replies: Vec<Vec<u8>>,
    /// The closing error (0 OK, 0x20 NOSUPP, 0x21 LOSTLINK, ...).
    pub error: u32,
}

type Done = Sender<Result<TxnResult, String>>;

/// What arrived for a transaction before it was registered.
#[derive(Default)]
struct Early {
    replies: Vec<Vec<u8>>,
    closed: Option<u32>,
}

#[derive(Default)]
struct Shared {
    reachable: Vec<NodeAddr>,
    unreachable_events: Vec<NodeAddr>,
    txns: HashMap<NodeTxn, (Vec<Vec<u8>>, Done)>,
    /// Frames and closing errors that arrived before their transaction was registered.
    early: HashMap<NodeTxn, Early>,
    links_down: Vec<String>,
}

/// A running client; its runtime stops on drop.
pub struct Client {
    handle: NodeHandle,
    shared: Arc<Mutex<Shared>>,
}

impl Client {
    /// Starts the client in the namespace at `netns` (its `/var/run/netns` path) and dials
    /// `hub`. It offers the reliable session, wants every span type (`peer_mask` all ones)
    /// and is a CLIENT of `cluster`.
    pub fn start(netns: PathBuf, hub: &str, cluster: Uuid) -> Result<Client, String> {
        let hub: Addr = hub.parse().map_err(|e| format!("{e}"))?;
        let (handle, events) = std::thread::spawn(move || {
            let fd = std::fs::File::open(&netns).map_err(|e| e.to_string())?;
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())?;
            let mut opts = NodeOptions {
                listen: None,
                sessions: true,
                echo: false,
                name: "tap-client".into(),
                ..NodeOptions::default()
            };
            opts.link.conn.peer_type = peer_type::CLIENT;
            opts.link.conn.peer_id = cluster;
            opts.link.conn.peer_mask = u64::MAX;
            opts.link.conn.peer_label = Label::new("tap-client").unwrap_or(Label::EMPTY);
            let (h, ev) = node::spawn::<LeafNode>(opts).map_err(|e| e.to_string())?;
            h.connect(hub).map_err(|e| e.to_string())?;
            Ok::<_, String>((h, ev))
        })
        .join()
        .map_err(|_| "the client thread panicked".to_string())??;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sh = Arc::clone(&shared);
        std::thread::spawn(move || {
            while let Some(ev) = events.recv() {
                let mut s = sh.lock().unwrap_or_else(|p| p.into_inner());
                match ev {
                    NodeEvent::Reachable { node, .. } if !s.reachable.contains(&node) => {
                        s.reachable.push(node);
                    }
                    NodeEvent::Unreachable { node } => {
                        s.reachable.retain(|n| *n != node);
                        s.unreachable_events.push(node);
                    }
                    NodeEvent::Message { txn, msg } => match s.txns.get_mut(&txn) {
                        Some((replies, _)) => replies.push(msg.aux),
                        None => s.early.entry(txn).or_default().replies.push(msg.aux),
                    },
                    NodeEvent::Closed { txn, error, .. } => match s.txns.remove(&txn) {
                        Some((replies, done)) => {
                            let _ = done.send(Ok(TxnResult { replies, error }));
                        }
                        None => s.early.entry(txn).or_default().closed = Some(error),
                    },
                    NodeEvent::LinkDown { why, .. } => s.links_down.push(why),
                    NodeEvent::Stopped => return,
                    _ => {}
                }
            }
        });
        Ok(Client { handle, shared })
    }

    /// True while `node` is reachable (its span reached us through the hub).
    pub fn reachable(&self, node: &NodeAddr) -> bool {
        self.lock().reachable.contains(node)
    }

    /// How often `node` became unreachable so far.
    pub fn unreachable_count(&self, node: &NodeAddr) -> usize {
        self.lock()
            .unreachable_events
            .iter()
            .filter(|n| *n == node)
            .count()
    }

    /// Links of the client that closed (its link to the hub never should).
    pub fn links_down(&self) -> Vec<String> {
        self.lock().links_down.clone()
    }

    /// Opens a one-frame transaction (CREATE|DELETE) of `command` with `aux` to `to`, routed
    /// through the hub; the receiver gets its outcome once it closed.
    pub fn open(
        &self,
        to: NodeAddr,
        command: Command,
        aux: &[u8],
    ) -> Receiver<Result<TxnResult, String>> {
        let (done, rx) = mpsc::channel();
        let msg = Message {
            command,
            body: Body::None,
            aux: aux.to_vec(),
            error: 0,
        };
        // `WouldBlock` is the runtime's backpressure (the link's output or its session
        // window is full, e.g. while the session starts): retry, as its docs say, for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        // Registered under the lock, so an answer racing the registration is not lost.
        let mut s = self.lock();
        let opened = loop {
            match self.handle.open(to, msg.clone(), Flags::DELETE) {
                Err(RtError::Node(NodeError::Link(SendError::WouldBlock { .. })))
                    if Instant::now() < deadline =>
                {
                    drop(s);
                    std::thread::sleep(Duration::from_millis(5));
                    s = self.lock();
                }
                other => break other,
            }
        };
        match opened {
            Ok(txn) => match s.early.remove(&txn) {
                Some(Early {
                    replies,
                    closed: Some(error),
                }) => {
                    let _ = done.send(Ok(TxnResult { replies, error }));
                }
                Some(Early {
                    replies,
                    closed: None,
                }) => {
                    s.txns.insert(txn, (replies, done));
                }
                None => {
                    s.txns.insert(txn, (Vec::new(), done));
                }
            },
            Err(e) => {
                let _ = done.send(Err(format!("{e}")));
            }
        }
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}
