//! The node runtime: a core [`Node`](dmsg_core::node::Node) (many links, span relays,
//! routing, the debug shell) on one I/O thread with nonblocking TCP sockets.
//!
//! [`spawn`] starts it and returns a [`NodeHandle`] (`Send + Sync + Clone`) for commands and
//! [`NodeEvents`] for what happens. The runtime listens (port 987 by default, any
//! address:port by [`NodeOptions::listen`]), keeps outbound connections up
//! ([`NodeHandle::connect`]: reconnect with exponential backoff and jitter, from
//! [`crate::connector`]), drives the node's timers from its `poll_timeout`, and optionally
//! answers echo transactions itself ([`NodeOptions::echo`]).
//!
//! # Why one I/O thread with `mio`
//!
//! A hub holds a thousand links. The single-link runtime ([`crate::link`]) uses two threads
//! per link (a blocking reader and a driver): 2,000 threads, each with its own stack and a
//! channel hop per chunk, and the node (one value) would still need one owner. Here one
//! thread owns the boxed node and every socket, registered nonblocking with `mio`
//! (epoll/kqueue: one wake-up reports every ready socket, cost proportional to the ready
//! ones). Commands from handles arrive on a channel with a `mio::Waker`. The thread follows
//! the node's drive contract after every wake-up: feed input (keeping what was not used),
//! drain `poll_transmit` per link into its socket, drain `poll_event` into the events
//! channel, repeat until nothing moves; then sleep until a socket is ready, a command comes or
//! the node's next timer. `mio` is small, has no runtime and is the base of tokio; `polling`
//! would do as well.
//!
//! # Bounds
//!
//! Per socket at most [`INPUT_CAP`] bytes wait for the node and whatever did not fit in the
//! socket's send buffer from one `poll_transmit` (at most one output queue). While a link's
//! output is blocked, its queue is not drained, so the node refuses further sends with
//! `WouldBlock` (backpressure); while [`NodeOptions::event_backlog`] events wait unread, the
//! runtime takes no more events, so the node stops consuming input and TCP windows close.
//!
//! # Ending
//!
//! Socket errors, EOF, keepalive timeouts and protocol violations end *that link*: the node
//! closes its transactions with LOSTLINK, [`NodeEvent::LinkDown`] carries the reason (also
//! logged), outbound links are redialled. Nothing ends the process. [`NodeHandle::shutdown`]
//! closes every link cleanly (LNK_CONN DELETE both ways; with sessions, FIN) within
//! [`NodeOptions::shutdown_grace`] and joins the thread; dropping the last handle does the
//! same, so no thread outlives its handles ([`crate::link::runtime_threads`] counts it).
//!
//! ```no_run
//! use dmsg_std::node::{self, NodeOptions, NodeEvent};
//! use dmsg_std::node::drive::LeafNode;
//!
//! let opts = NodeOptions { listen: None, echo: true, ..NodeOptions::default() };
//! let (handle, events) = node::spawn::<LeafNode>(opts)?;
//! handle.connect("127.0.0.1:987".parse()?)?;
//! while let Some(ev) = events.recv() {
//!     if let NodeEvent::PeerConn { link, .. } = ev {
//!         println!("connected on link {link}");
//!         break;
//!     }
//! }
//! handle.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod drive;
mod echo;
mod events;
mod io;
mod sock;

use std::fmt;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use dmsg_core::link::{LinkConfig, LinkStats, SendError};
use dmsg_core::node::{LocalSpan, NodeAddr, NodeConfig, NodeError, NodeStats, NodeTxn};
use dmsg_core::span::LinkId;
use dmsg_core::wire::body::{peer_type, SpanRepr};
use dmsg_core::wire::{Flags, Label, Uuid};

use crate::connector::Backoff;
use crate::link::{Message, ThreadCount};
use crate::net::Addr;
use crate::secure::{SecureCounters, SecureSetup};

pub use drive::DriveNode;
pub use events::{NodeEvent, NodeEvents};

/// Bytes of received input that may wait for the node, per socket.
pub const INPUT_CAP: usize = 64 * 1024;

/// Settings of a node runtime.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's settings (its label in the shell's `dot`).
    pub node: NodeConfig,
    /// Settings of every link (our LNK_CONN, keepalive, timeouts); the salt seed is drawn
    /// per link.
    pub link: LinkConfig,
    /// Address to listen on (`None`: no listener).
    pub listen: Option<SocketAddr>,
    /// Offer the reliable session on every link (needs a node type with session storage,
    /// e.g. [`drive::HubNode`]; default false). Against a peer that does not offer it (e.g.
    /// DragonFly) a link is plain DMSG. With it, a lost connection suspends the link
    /// ([`NodeEvent::LinkSuspended`]); dialled links are redialled and resumed, accepted ones
    /// resume when the peer dials back; nothing is lost or repeated.
    pub sessions: bool,
    /// Answer every transaction opened to us by echoing each frame's aux back (a leaf's
    /// service); those transactions are not reported.
    pub echo: bool,
    /// Backoff of outbound connections.
    pub backoff: Backoff,
    /// Longest a connect attempt may take.
    pub connect_timeout: Duration,
    /// Unread events at which the runtime stops taking events from the node.
    pub event_backlog: usize,
    /// Longest a graceful shutdown waits for the links to close.
    pub shutdown_grace: Duration,
    /// A name for logs and the thread.
    pub name: String,
    /// Run the secure channel per the keys directory (`spec/SECURE.md`, [`crate::secure`]);
    /// `None`: every connection is plaintext DMSG.
    pub secure: Option<Arc<SecureSetup>>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            node: NodeConfig::default(),
            link: LinkConfig::default(),
            listen: Some(SocketAddr::from(([0, 0, 0, 0], crate::net::DEFAULT_PORT))),
            sessions: false,
            echo: false,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
                ..Backoff::default()
            },
            connect_timeout: Duration::from_secs(5),
            event_backlog: 4096,
            shutdown_grace: Duration::from_secs(2),
            name: "dmsg-node".into(),
            secure: None,
        }
    }
}

/// Why a runtime command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtError {
    /// The node refused the command (nothing was sent).
    Node(NodeError),
    /// The runtime has stopped.
    Stopped,
    /// No such link in the runtime.
    UnknownLink(LinkId),
    /// A message is larger than the links carry.
    TooLarge {
        /// Aux bytes given.
        aux: usize,
        /// Largest aux the links carry.
        max: usize,
    },
    /// A socket or thread could not be set up.
    Io(String),
}

impl fmt::Display for RtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtError::Node(e) => write!(f, "refused by the node: {e}"),
            RtError::Stopped => f.write_str("the node runtime has stopped"),
            RtError::UnknownLink(l) => write!(f, "no link {l} in the runtime"),
            RtError::TooLarge { aux, max } => write!(
                f,
                "message too large: {aux} bytes of aux, the links carry at most {max}; split it"
            ),
            RtError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RtError {}

impl From<NodeError> for RtError {
    fn from(e: NodeError) -> Self {
        RtError::Node(e)
    }
}

/// One link as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link.
    pub link: LinkId,
    /// The peer's socket address.
    pub peer: SocketAddr,
    /// Our end's socket address.
    pub local: Option<SocketAddr>,
    /// For a link we dialled: the address as given.
    pub dialled: Option<Addr>,
    /// The link's core counters.
    pub stats: Option<LinkStats>,
}

/// A snapshot of a runtime, from [`NodeHandle::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's counters.
    pub stats: NodeStats,
    /// The links with a socket.
    pub links: Vec<LinkInfo>,
    /// Spans held.
    pub spans: usize,
    /// Size of the node value.
    pub node_bytes: usize,
    /// The address the runtime listens on.
    pub listening: Option<SocketAddr>,
    /// Outbound links redialled after a loss so far.
    pub redials: u64,
    /// Sessions resumed on a new connection so far.
    pub resumes: u64,
    /// Secure-channel counters (all zero without [`NodeOptions::secure`]).
    pub secure: SecureCounters,
}

/// What a command does on the I/O thread (the node, and the runtime's own state).
pub(crate) type Cmd = Box<dyn FnOnce(&mut dyn io::Control) + Send>;

struct Shared {
    tx: Sender<Cmd>,
    waker: Arc<mio::Waker>,
    thread: Mutex<Option<JoinHandle<()>>>,
    name: String,
    max_aux: usize,
    local: Option<SocketAddr>,
}

impl Shared {
    fn stop_and_join(&self) {
        let _ = self
            .tx
            .send(Box::new(|c: &mut dyn io::Control| c.shutdown()));
        let _ = self.waker.wake();
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(j) = t {
            if j.thread().id() != thread::current().id() && j.join().is_err() {
                log::error!("{}: the node's I/O thread panicked", self.name);
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Issues commands to a node runtime. `Send + Sync + Clone`; when the last clone is dropped
/// the runtime shuts down (links closed cleanly, bounded by
/// [`NodeOptions::shutdown_grace`]) and its thread is joined.
///
/// Commands are synchronous: a call returns once the I/O thread has done it (the frame is
/// queued on its link, written as the socket takes it).
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle")
            .field("name", &self.shared.name)
            .field("local", &self.shared.local)
            .finish()
    }
}

impl NodeHandle {
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn io::Control) -> T + Send + 'static,
    ) -> Result<T, RtError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let cmd: Cmd = Box::new(move |c: &mut dyn io::Control| {
            let _ = tx.send(f(c));
        });
        self.shared.tx.send(cmd).map_err(|_| RtError::Stopped)?;
        self.shared
            .waker
            .wake()
            .map_err(|e| RtError::Io(e.to_string()))?;
        rx.recv().map_err(|_| RtError::Stopped)
    }

    fn check_size(&self, msg: &Message) -> Result<(), RtError> {
        if msg.aux.len() > self.shared.max_aux {
            return Err(RtError::TooLarge {
                aux: msg.aux.len(),
                max: self.shared.max_aux,
            });
        }
        Ok(())
    }

    /// The address the runtime listens on (with the port the system picked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local
    }

    /// Largest aux a message may carry on this node's links.
    pub fn max_aux(&self) -> usize {
        self.shared.max_aux
    }

    /// Keeps a link to `addr` up: connects now and after every loss, with backoff. With
    /// [`NodeOptions::secure`], the peer's name in the keys directory is the host part of
    /// `addr` ([`connect_peer`](Self::connect_peer) names it otherwise).
    pub fn connect(&self, addr: Addr) -> Result<(), RtError> {
        self.call(move |c| c.dial(addr, None))
    }

    /// Like [`connect`](Self::connect), the peer named `peer` in the keys directory
    /// (`peer.pub`: its static key; `peer.none`: plaintext).
    pub fn connect_peer(&self, addr: Addr, peer: &str) -> Result<(), RtError> {
        let peer = peer.to_string();
        self.call(move |c| c.dial(addr, Some(peer)))
    }

    /// Opens a transaction to the remote node `to` over the span that leads to it (see
    /// [`Node::open`](dmsg_core::node::Node::open)).
    pub fn open(&self, to: NodeAddr, msg: Message, flags: Flags) -> Result<NodeTxn, RtError> {
        self.check_size(&msg)?;
        self.call(move |c| {
            let now = c.now();
            c.node().open(now, to, &msg.as_outgoing(), flags)
        })?
        .map_err(RtError::Node)
    }

    /// [`open`](Self::open), waiting up to `patience` while the node answers `WouldBlock`
    /// (the link's output queue or its session window is full, e.g. right after a session
    /// link came up with the spans it relays still unacknowledged). Other errors return at
    /// once; after `patience` the last `WouldBlock` is returned.
    ///
    /// ```no_run
    /// # fn f(h: &dmsg_std::node::NodeHandle, to: dmsg_core::node::NodeAddr)
    /// # -> Result<(), dmsg_std::node::RtError> {
    /// use std::time::Duration;
    /// use dmsg_core::wire::{Command, Flags};
    /// use dmsg_std::link::Message;
    /// let msg = Message::new(Command::DbgShell).with_aux(b"ping".to_vec());
    /// let txn = h.open_waiting(to, msg, Flags::DELETE, Duration::from_secs(5))?;
    /// # let _ = txn; Ok(()) }
    /// ```
    pub fn open_waiting(
        &self,
        to: NodeAddr,
        msg: Message,
        flags: Flags,
        patience: Duration,
    ) -> Result<NodeTxn, RtError> {
        let deadline = std::time::Instant::now() + patience;
        let mut pause = Duration::from_micros(200);
        loop {
            match self.open(to, msg.clone(), flags) {
                Err(RtError::Node(NodeError::Link(SendError::WouldBlock { .. })))
                    if std::time::Instant::now() < deadline =>
                {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// Opens a transaction directly with the peer of `link`.
    pub fn open_on(&self, link: LinkId, msg: Message, flags: Flags) -> Result<NodeTxn, RtError> {
        self.check_size(&msg)?;
        self.call(move |c| {
            let now = c.now();
            c.node().open_on(now, link, &msg.as_outgoing(), flags, None)
        })?
        .map_err(RtError::Node)
    }

    /// Sends a frame in one of our transactions (`Flags::DELETE` closes our direction).
    /// `Node(Link(WouldBlock))` means the link's output is full: retry after a moment.
    pub fn send(&self, txn: NodeTxn, msg: Message, flags: Flags) -> Result<(), RtError> {
        self.check_size(&msg)?;
        self.call(move |c| {
            let now = c.now();
            c.node().send(now, txn, &msg.as_outgoing(), flags)
        })?
        .map_err(RtError::Node)
    }

    /// Answers and closes our direction with `error`.
    pub fn reply(&self, txn: NodeTxn, error: u32) -> Result<(), RtError> {
        self.call(move |c| {
            let now = c.now();
            c.node().reply(now, txn, error)
        })?
        .map_err(RtError::Node)
    }

    /// Aborts one of our transactions.
    pub fn abort(&self, txn: NodeTxn) -> Result<(), RtError> {
        self.call(move |c| {
            let now = c.now();
            c.node().abort(now, txn)
        })?
        .map_err(RtError::Node)
    }

    /// Sends a one-way message to the peer of `link`.
    pub fn send_one_way(&self, link: LinkId, msg: Message, reply: bool) -> Result<(), RtError> {
        self.check_size(&msg)?;
        self.call(move |c| {
            let now = c.now();
            c.node().send_one_way(now, link, &msg.as_outgoing(), reply)
        })?
        .map_err(RtError::Node)
    }

    /// Advertises a span of our own on every link.
    pub fn advertise(&self, span: SpanRepr) -> Result<LocalSpan, RtError> {
        self.call(move |c| c.node().advertise(span))?
            .map_err(RtError::Node)
    }

    /// Withdraws a span of our own.
    pub fn withdraw(&self, span: LocalSpan) -> Result<(), RtError> {
        self.call(move |c| c.node().withdraw(span))?
            .map_err(RtError::Node)
    }

    /// The best way to `node`: its first-hop link and advertised distance.
    pub fn route_to(&self, node: NodeAddr) -> Result<Option<(LinkId, u32)>, RtError> {
        self.call(move |c| c.node().route_to(&node))
    }

    /// The span tree, as the debug shell's `tree` prints it.
    pub fn tree(&self) -> Result<String, RtError> {
        self.call(|c| c.node().tree_text())
    }

    /// The span tree as Graphviz DOT.
    pub fn dot(&self) -> Result<String, RtError> {
        self.call(|c| c.node().dot_text())
    }

    /// Counters and links.
    pub fn status(&self) -> Result<Status, RtError> {
        self.call(|c| c.status())
    }

    /// Cuts a link's TCP connection at once (`shutdown(Both)`), as a network failure would:
    /// the node sees the transport end. For tests and the demo.
    pub fn kill_link(&self, link: LinkId) -> Result<(), RtError> {
        self.call(move |c| c.kill(link))?
    }

    /// Closes every link cleanly, stops listening and dialling, and joins the I/O thread
    /// (other clones then get [`RtError::Stopped`]).
    pub fn shutdown(&self) {
        self.shared.stop_and_join();
    }
}

/// A span for a node of the `dmsg` program: cluster `cluster`, node id derived from
/// `label`, peer type HAMMER2, distance 0.
pub fn span_for(cluster: Uuid, label: &str) -> SpanRepr {
    let l = Label::new(label).unwrap_or(Label::EMPTY);
    SpanRepr {
        peer_id: cluster,
        pfs_id: uuid_of(label),
        peer_type: peer_type::HAMMER2,
        pfs_label: l,
        peer_label: Label::new("dmsg").unwrap_or(Label::EMPTY),
        ..SpanRepr::default()
    }
}

/// A stable UUID for a name (FNV-1a over the name, twice with different seeds).
pub fn uuid_of(name: &str) -> Uuid {
    let h = |seed: u64| {
        let mut x = seed;
        for b in name.bytes() {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0000_0100_0000_01b3);
        }
        x
    };
    let (a, b) = (h(0xcbf2_9ce4_8422_2325), h(0x84222325_cbf29ce4));
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&a.to_be_bytes());
    u[8..].copy_from_slice(&b.to_be_bytes());
    Uuid(u)
}

/// The cluster id the `dmsg` program's nodes use unless told otherwise.
pub fn default_cluster() -> Uuid {
    uuid_of("dmsg-cluster")
}

/// The address of the node a label names in cluster `cluster`.
pub fn addr_of(cluster: Uuid, label: &str) -> NodeAddr {
    NodeAddr {
        peer_id: cluster,
        pfs_id: uuid_of(label),
    }
}

/// Starts a runtime for a node of type `N` (e.g. [`drive::HubNode`], [`drive::LeafNode`]).
/// Errors: the listener cannot be bound (the message says which address and why), or the
/// thread cannot be started.
pub fn spawn<N: DriveNode>(opts: NodeOptions) -> Result<(NodeHandle, NodeEvents), RtError> {
    let node: Box<N> = drive::boxed_node(opts.node).map_err(|e| RtError::Io(e.to_string()))?;
    if opts.sessions && !node.supports_sessions() {
        return Err(RtError::Io(
            "sessions were asked for, but this node type has no session storage; use one with \
             a Reliable session slot (e.g. drive::HubNode) or turn sessions off"
                .into(),
        ));
    }
    let max_aux = node.max_aux();
    let poll = mio::Poll::new().map_err(|e| RtError::Io(format!("cannot create a poller: {e}")))?;
    let waker = Arc::new(
        mio::Waker::new(poll.registry(), io::WAKER)
            .map_err(|e| RtError::Io(format!("cannot create a waker: {e}")))?,
    );
    let listener = match opts.listen {
        Some(a) => Some(io::bind(a, &poll)?),
        None => None,
    };
    let local = listener.as_ref().and_then(|l| l.local_addr().ok());
    let (ctx, crx) = mpsc::channel::<Cmd>();
    let (events_tx, events) = events::channel(opts.event_backlog, waker.clone());
    let name = opts.name.clone();
    let count = ThreadCount::enter();
    let rt = io::Runtime::new(node, poll, listener, crx, events_tx, opts);
    let thread = thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _count = count;
            rt.run();
        })
        .map_err(|e| RtError::Io(format!("cannot start the node thread: {e}")))?;
    Ok((
        NodeHandle {
            shared: Arc::new(Shared {
                tx: ctx,
                waker,
                thread: Mutex::new(Some(thread)),
                name,
                max_aux,
                local,
            }),
        },
        events,
    ))
}

/// The resident memory of this process (`VmRSS` from `/proc/self/status`), in bytes; `None`
/// where that file does not exist.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_sync_clone_and_events_are_send() {
        fn handle<T: Send + Sync + Clone + 'static>() {}
        fn events<T: Send + 'static>() {}
        handle::<NodeHandle>();
        events::<NodeEvents>();
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(uuid_of("alpha"), uuid_of("alpha"));
        assert_ne!(uuid_of("alpha"), uuid_of("bravo"));
        let s = span_for(default_cluster(), "alpha");
        assert_eq!(s.pfs_label.as_str(), Some("alpha"));
        assert_eq!(
            addr_of(default_cluster(), "alpha"),
            NodeAddr {
                peer_id: s.peer_id,
                pfs_id: s.pfs_id
            }
        );
    }
}
