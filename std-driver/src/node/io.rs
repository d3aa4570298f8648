//! The I/O thread: one `mio` poller, the boxed node, every socket, the dials and the drive
//! loop (see the [module docs](super) for the design).

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use dmsg_core::link::{SessionOffer, StreamStart, TxnEnd};
use dmsg_core::node::NodeEvent as CoreEvent;
use dmsg_core::span::LinkId;
use dmsg_core::time::Instant;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::drive::DriveNode;
use super::echo::Echo;
use super::events::{EventTx, NodeEvent};
use super::sock::{Phase, Sock};
use super::{Cmd, LinkInfo, NodeOptions, RtError, Status, INPUT_CAP};
use crate::clock::Clock;
use crate::connector::{Connector, Retry};
use crate::link::{describe_close, salt_seed, ReceivedMsg, TransportEnd};
use crate::net::Addr;
use crate::secure::{AcceptAs, SecureCounters};
use dmsg_core::secure::PublicKey;

mod handshake;

/// The waker's token.
pub(crate) const WAKER: Token = Token(0);
/// The listener's token.
const LISTENER: Token = Token(1);
/// Sockets: index + this.
const FIRST_SOCK: usize = 2;
/// How long an accepted connection may stay silent before it is taken as a new link (a
/// peer that waits for our LNK_CONN first); with sessions, its first 64 bytes decide.
const CLASSIFY_WAIT: Duration = Duration::from_millis(500);

/// Binds the listener and registers it.
pub(crate) fn bind(addr: SocketAddr, poll: &Poll) -> Result<TcpListener, RtError> {
    let mut l = TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => "another program listens there; pick another port with --listen HOST:PORT",
            io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges; run as root or pick a port >= 1024 with --listen HOST:PORT"
            }
            io::ErrorKind::AddrNotAvailable => "that address is not on this machine; use 0.0.0.0 or a local address",
            _ => "check the address",
        };
        RtError::Io(format!("cannot listen on {addr}: {e}; {hint}"))
    })?;
    poll.registry()
        .register(&mut l, LISTENER, Interest::READABLE)
        .map_err(|e| RtError::Io(format!("cannot watch the listener: {e}")))?;
    Ok(l)
}

/// What commands may do on the I/O thread.
pub(crate) trait Control {
    /// The node.
    fn node(&mut self) -> &mut dyn DriveNode;
    /// The core's current time.
    fn now(&self) -> Instant;
    /// Keeps a link to `addr` up; `peer` names it in the keys directory.
    fn dial(&mut self, addr: Addr, peer: Option<String>);
    /// Cuts a link's connection.
    fn kill(&mut self, link: LinkId) -> Result<(), RtError>;
    /// Counters and links.
    fn status(&mut self) -> Status;
    /// Starts a clean shutdown.
    fn shutdown(&mut self);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DialState {
    /// Next attempt at this time.
    Due(std::time::Instant),
    /// Connecting on this socket.
    Connecting(usize),
    /// Linked on this socket.
    Up(usize),
    /// Given up, or shutting down.
    Stopped,
}

struct Dial {
    connector: Connector,
    /// The link this dial carries (kept while it is suspended, to resume it).
    link: Option<LinkId>,
    state: DialState,
    up_at: Option<std::time::Instant>,
    /// Which resolved address to try next.
    next_addr: usize,
    /// The peer's name in the keys directory.
    peer: String,
}

pub(crate) struct Runtime<N: DriveNode> {
    node: Box<N>,
    poll: Poll,
    clock: Clock,
    opts: NodeOptions,
    listener: Option<TcpListener>,
    accept_retry: Option<std::time::Instant>,
    socks: Vec<Option<Sock>>,
    free: Vec<usize>,
    by_link: HashMap<LinkId, usize>,
    /// Suspended links (no socket) and the dial that resumes them, if we dialled them.
    suspended: HashMap<LinkId, Option<usize>>,
    dials: Vec<Dial>,
    cmds: Receiver<Cmd>,
    events: EventTx,
    echo: Echo,
    buf: Vec<u8>,
    stopping: Option<std::time::Instant>,
    redials: u64,
    resumes: u64,
    secure: SecureCounters,
    /// The authenticated static key each link was created with (`None`: plaintext); a
    /// session resumes only on a connection that proves the same one.
    link_keys: HashMap<LinkId, Option<PublicKey>>,
}

impl<N: DriveNode> Runtime<N> {
    pub fn new(
        node: Box<N>,
        poll: Poll,
        listener: Option<TcpListener>,
        cmds: Receiver<Cmd>,
        events: EventTx,
        opts: NodeOptions,
    ) -> Runtime<N> {
        let frame = 32 * 64 + node.max_aux() + 64;
        Runtime {
            node,
            poll,
            clock: Clock::new(),
            opts,
            listener,
            accept_retry: None,
            socks: Vec::new(),
            free: Vec::new(),
            by_link: HashMap::new(),
            suspended: HashMap::new(),
            dials: Vec::new(),
            cmds,
            events,
            echo: Echo::default(),
            buf: vec![0; frame.max(64 * 1024)],
            stopping: None,
            redials: 0,
            resumes: 0,
            secure: SecureCounters::default(),
            link_keys: HashMap::new(),
        }
    }

    /// Runs until shut down.
    pub fn run(mut self) {
        if let Some(a) = self.listener.as_ref().and_then(|l| l.local_addr().ok()) {
            log::info!("{}: listening on {a}", self.opts.name);
        }
        let mut events = Events::with_capacity(1024);
        loop {
            self.commands();
            self.accept();
            self.dials_due();
            self.connects_check();
            self.timers();
            self.turn();
            if self.finished() {
                break;
            }
            let timeout = self.next_wake();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("{}: the poller failed ({e}); stopping", self.opts.name);
                    break;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept_retry = Some(std::time::Instant::now()),
                    Token(t) => {
                        if let Some(s) = self.socks.get_mut(t - FIRST_SOCK).and_then(Option::as_mut)
                        {
                            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                                s.readable = true;
                            }
                        }
                    }
                }
            }
        }
        self.finish();
    }

    // ---------------------------------------------------------------------------------
    // The drive loop

    /// Follows the node's drive contract until nothing moves: input, transmit, events.
    fn turn(&mut self) {
        loop {
            let now = self.clock.now();
            let mut busy = false;
            for i in 0..self.socks.len() {
                busy |= self.pump_in(i, now);
            }
            for i in 0..self.socks.len() {
                busy |= self.pump_out(i, now);
            }
            busy |= self.pump_events(now);
            if !busy {
                break;
            }
        }
        for s in self.socks.iter_mut().flatten() {
            s.trim();
        }
    }

    fn pump_in(&mut self, i: usize, now: Instant) -> bool {
        let Some(s) = self.socks.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        if matches!(s.phase, Phase::Connecting { .. }) {
            return false;
        }
        let mut busy = s.read_some(&mut self.buf, INPUT_CAP).bytes > 0;
        if !matches!(s.phase, Phase::Handshaking { .. }) {
            busy |= s.decrypt(now, INPUT_CAP);
            if let Some(e) = self.secure_failure(i) {
                busy = true;
                if let Some(s) = self.socks[i].as_ref() {
                    // A cut connection (no authenticated close) is what every network
                    // failure looks like: counted, but not worth a warning.
                    let level = if e == dmsg_core::secure::SecureError::Truncated {
                        log::Level::Info
                    } else {
                        log::Level::Warn
                    };
                    log::log!(
                        level,
                        "{}: {} ({:?}): secure channel failed: {e}; the link ends",
                        self.opts.name,
                        s.peer,
                        s.link
                    );
                }
            }
        }
        let Some(s) = self.socks.get_mut(i).and_then(Option::as_mut) else {
            return busy;
        };
        match s.phase {
            Phase::Connecting { .. } => {}
            Phase::Handshaking { .. } => {
                busy |= self.handshake_step(i, now);
            }
            Phase::Classifying { deadline } => {
                if s.input.len() >= 64 || s.end.is_some() || std::time::Instant::now() >= deadline {
                    self.classify(i, now);
                    busy = true;
                }
            }
            Phase::Linked => {
                let Some(link) = s.link else { return busy };
                if !s.input.is_empty() {
                    let used = self.node.handle_input(now, link, &s.input);
                    s.input.drain(..used.min(s.input.len()));
                    busy |= used > 0;
                }
                if s.end.is_some() && s.input.is_empty() && !s.close_fed {
                    s.close_fed = true;
                    s.phase = Phase::Dead;
                    let _ = self.poll.registry().deregister(&mut s.stream);
                    let _ = s.stream.shutdown(Shutdown::Both);
                    log::debug!(
                        "{}: link {link} ({}): transport ended: {:?}",
                        self.opts.name,
                        s.peer,
                        s.end
                    );
                    self.node.handle_close(now, link);
                    busy = true;
                }
            }
            Phase::Dead => s.input.clear(),
        }
        busy
    }

    fn pump_out(&mut self, i: usize, now: Instant) -> bool {
        let Some(s) = self.socks.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        let Some(link) = s.link else { return false };
        let mut busy = false;
        match s.phase {
            Phase::Linked => {
                if !s.flush() {
                    return s.end.is_some();
                }
                while s.output.is_empty() && s.end.is_none() {
                    match self.node.poll_transmit(now, Some(link), &mut self.buf) {
                        Some(t) => {
                            s.write_or_keep(&self.buf[..t.len]);
                            busy = true;
                        }
                        None => break,
                    }
                }
            }
            Phase::Dead => {
                // The transport is gone: what the node still sends goes nowhere.
                while self
                    .node
                    .poll_transmit(now, Some(link), &mut self.buf)
                    .is_some()
                {
                    busy = true;
                }
            }
            _ => {}
        }
        busy
    }

    fn pump_events(&mut self, now: Instant) -> bool {
        let mut busy = self.echo.flush(&mut *self.node, now);
        while self.events.has_room() && self.echo.has_room() {
            let node = &mut *self.node;
            let Some(ev) = node.poll_event() else { break };
            busy = true;
            let mut down = None;
            let mut suspend = None;
            let out = match ev {
                CoreEvent::LinkUp { link } => {
                    let s = self
                        .by_link
                        .get(&link)
                        .and_then(|&i| self.socks[i].as_ref());
                    match s {
                        Some(s) => {
                            let dialled = s.dial.map(|d| self.dials[d].connector.addr().clone());
                            log::info!("{}: link {link} up ({})", self.opts.name, s.peer);
                            Some(NodeEvent::LinkUp {
                                link,
                                peer: s.peer,
                                dialled,
                            })
                        }
                        None => None,
                    }
                }
                CoreEvent::PeerConn { link, conn } => {
                    log::info!(
                        "{}: link {link}: peer {} ({}) sent LNK_CONN",
                        self.opts.name,
                        conn.peer_label.as_str().unwrap_or("?"),
                        dmsg_core::span::peer_type_name(conn.peer_type)
                    );
                    Some(NodeEvent::PeerConn {
                        link,
                        conn: Box::new(*conn),
                    })
                }
                CoreEvent::LinkDown { link, reason } => {
                    down = Some(link);
                    let end = self
                        .by_link
                        .get(&link)
                        .and_then(|&i| self.socks[i].as_ref())
                        .and_then(|s| s.end.clone());
                    let why = describe_close(&reason, end.as_ref());
                    if reason.is_clean() || self.stopping.is_some() {
                        log::info!("{}: link {link} closed: {why}", self.opts.name);
                    } else {
                        log::warn!("{}: link {link} closed: {why}", self.opts.name);
                    }
                    Some(NodeEvent::LinkDown { link, reason, why })
                }
                CoreEvent::LinkSuspended { link } => {
                    suspend = Some(link);
                    None
                }
                CoreEvent::LinkResumed { link } => {
                    self.resumes += 1;
                    log::info!("{}: link {link} resumed; nothing lost", self.opts.name);
                    Some(NodeEvent::LinkResumed { link })
                }
                CoreEvent::Reachable { node, dist } => {
                    log::debug!("{}: {node} reachable at distance {dist}", self.opts.name);
                    Some(NodeEvent::Reachable { node, dist })
                }
                CoreEvent::Unreachable { node } => {
                    log::debug!("{}: {node} unreachable", self.opts.name);
                    Some(NodeEvent::Unreachable { node })
                }
                CoreEvent::Opened { txn, via, msg } => {
                    if self.opts.echo {
                        let h = msg.header;
                        self.echo
                            .frame(txn, h.cmd.command(), msg.aux, h.cmd.flags(), true);
                        None
                    } else {
                        Some(NodeEvent::Opened {
                            txn,
                            via,
                            msg: owned(&msg),
                        })
                    }
                }
                CoreEvent::Message { txn, msg } => {
                    if self.echo.owns(txn) {
                        let h = msg.header;
                        self.echo
                            .frame(txn, h.cmd.command(), msg.aux, h.cmd.flags(), false);
                        None
                    } else {
                        Some(NodeEvent::Message {
                            txn,
                            msg: owned(&msg),
                        })
                    }
                }
                CoreEvent::OneWay { link, via, msg } => Some(NodeEvent::OneWay {
                    link,
                    via,
                    msg: owned(&msg),
                }),
                CoreEvent::Closed { txn, error, end } => {
                    if self.echo.owns(txn) {
                        self.echo.closed(txn);
                        None
                    } else {
                        if end == TxnEnd::LinkLost {
                            log::debug!(
                                "{}: transaction on {} lost ({error:#x})",
                                self.opts.name,
                                txn.link
                            );
                        }
                        Some(NodeEvent::Closed { txn, error, end })
                    }
                }
                _ => None,
            };
            if let Some(e) = out {
                self.events.send(e);
            }
            if let Some(link) = down {
                self.link_gone(link);
            }
            if let Some(link) = suspend {
                if self.link_suspended(link) {
                    self.events.send(NodeEvent::LinkSuspended { link });
                }
            }
            self.echo.flush(&mut *self.node, now);
        }
        busy
    }

    /// A link's `LinkDown` is out: drop its socket; redial if we dialled it.
    fn link_gone(&mut self, link: LinkId) {
        self.link_keys.remove(&link);
        let Some(i) = self.by_link.remove(&link) else {
            return;
        };
        let Some(mut s) = self.socks[i].take() else {
            return;
        };
        self.free.push(i);
        if s.phase != Phase::Dead {
            s.close_secure();
            let _ = self.poll.registry().deregister(&mut s.stream);
            let _ = s.stream.shutdown(Shutdown::Both);
        }
        if let Some(d) = s.dial {
            let why = s
                .end
                .as_ref()
                .map(|e| match e {
                    TransportEnd::Eof => "the peer closed the connection".to_string(),
                    TransportEnd::ReadError { message, .. }
                    | TransportEnd::WriteError { message, .. } => {
                        format!("the connection broke ({message})")
                    }
                    TransportEnd::Shutdown => "shut down".to_string(),
                    TransportEnd::Secure(e) => format!("the secure channel failed ({e})"),
                })
                .unwrap_or_else(|| "the link closed".to_string());
            if let Some(up) = self.dials[d].up_at.take() {
                if up.elapsed() >= self.dials[d].connector.backoff().reset_after {
                    self.dials[d].connector.reset();
                }
            }
            self.redials += 1;
            self.dial_failed(d, why);
        }
    }

    /// A reliable link lost its transport: drop the socket, keep the link; redial if we
    /// dialled it. False when the suspension is of a transport already replaced.
    fn link_suspended(&mut self, link: LinkId) -> bool {
        if !self.node.is_suspended(link) {
            // A stale report: the link was reconnected on a new socket since (the event was
            // about the transport that socket replaced), or it is already closed (its
            // LinkDown follows).
            return false;
        }
        let mut dial = None;
        if let Some(&i) = self.by_link.get(&link) {
            if let Some(s) = self.socks[i].as_mut() {
                dial = s.dial;
                let why =
                    s.end.as_ref().map(|e| format!("{e:?}")).unwrap_or_else(|| {
                        "the node gave up on it (nothing received in time)".into()
                    });
                log::info!(
                    "{}: link {link} ({}): connection lost ({why}); session kept, waiting for a new connection",
                    self.opts.name,
                    s.peer
                );
            }
            self.by_link.remove(&link);
            self.drop_sock(i);
        }
        self.suspended.insert(link, dial);
        if self.stopping.is_some() {
            // Shutting down: nothing will resume it.
            let now = self.clock.now();
            let _ = self.node.remove_link(now, link);
            return true;
        }
        if let Some(d) = dial {
            if let Some(up) = self.dials[d].up_at.take() {
                if up.elapsed() >= self.dials[d].connector.backoff().reset_after {
                    self.dials[d].connector.reset();
                }
            }
            self.redials += 1;
            self.dial_failed(d, "the connection was lost; resuming the session".into());
        }
        true
    }

    // ---------------------------------------------------------------------------------
    // Sockets

    fn insert_sock(&mut self, mut s: Sock) -> io::Result<usize> {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.socks.push(None);
                self.socks.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut s.stream,
            Token(i + FIRST_SOCK),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(i);
            return Err(e);
        }
        self.socks[i] = Some(s);
        Ok(i)
    }

    fn drop_sock(&mut self, i: usize) {
        if let Some(mut s) = self.socks.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut s.stream);
            let _ = s.stream.shutdown(Shutdown::Both);
            self.free.push(i);
        }
    }

    /// Makes socket `i` carry a new link.
    fn attach_new(&mut self, i: usize, now: Instant) -> bool {
        let mut cfg = self.opts.link;
        cfg.salt_seed = salt_seed();
        if self.opts.sessions {
            let id = (u64::from(salt_seed()) << 32) | u64::from(salt_seed());
            cfg.session = Some(SessionOffer::new(id.max(1)));
        }
        match self.node.add_link(now, &cfg) {
            Ok(link) => {
                let mut key = None;
                if let Some(s) = self.socks[i].as_mut() {
                    s.link = Some(link);
                    s.phase = Phase::Linked;
                    key = s.sec.as_ref().and_then(|w| w.ch.peer_static());
                }
                self.by_link.insert(link, i);
                self.link_keys.insert(link, key);
                true
            }
            Err(e) => {
                let peer = self.socks[i].as_ref().map(|s| s.peer);
                log::warn!(
                    "{}: connection from {peer:?} refused: {e} (the node holds as many links as it can)",
                    self.opts.name
                );
                false
            }
        }
    }

    /// An accepted connection's first bytes decide: a new link, or a resumed session.
    /// Without sessions every connection is a new link (decided at accept).
    fn classify(&mut self, i: usize, now: Instant) {
        let Some(s) = self.socks[i].as_ref() else {
            return;
        };
        let (peer, timed_out) = (
            s.peer,
            matches!(s.phase, Phase::Classifying { deadline } if std::time::Instant::now() >= deadline),
        );
        let start = self.node.classify(&s.input);
        match start {
            StreamStart::Fresh => {
                if !self.attach_new(i, now) {
                    self.drop_sock(i);
                }
            }
            StreamStart::NeedMore if s.end.is_none() && s.input.is_empty() && timed_out => {
                // Silent: a peer that waits for us to speak first.
                if !self.attach_new(i, now) {
                    self.drop_sock(i);
                }
            }
            StreamStart::NeedMore if s.end.is_none() && !timed_out => {}
            StreamStart::NeedMore => {
                log::info!(
                    "{}: {peer} closed or stalled before its first frame; dropped",
                    self.opts.name
                );
                self.drop_sock(i);
            }
            StreamStart::Resume(frame) => match self.node.find_resume(&frame) {
                Some(link) if self.same_keys(link, i) => self.resume_on(i, link, now),
                found => {
                    if let Some(link) = found {
                        self.secure.resume_refused += 1;
                        log::warn!(
                            "{}: {peer} asked to resume the session of link {link} but does not prove the static key it was created with (or one side is plaintext); refused with a RESET, the session is unaffected",
                            self.opts.name
                        );
                    }
                    let mut reset = [0u8; 64];
                    if let Some(n) = self.node.stateless_reset(&start, &mut reset) {
                        if let Some(s) = self.socks[i].as_mut() {
                            s.write_or_keep(&reset[..n]);
                            s.flush();
                        }
                    }
                    log::info!(
                        "{}: {peer} asked to resume session {:#x}, which this node does not hold \
                         (it restarted, or the session expired); answered with a RESET so it \
                         starts a new link",
                        self.opts.name,
                        frame.receiver_id
                    );
                    self.drop_sock(i);
                }
            },
            _ => {
                log::warn!(
                    "{}: {peer} did not start with a DMSG frame (bad magic or header CRC); \
                     dropped. Is it a plaintext DMSG peer?",
                    self.opts.name
                );
                self.drop_sock(i);
            }
        }
    }

    /// Socket `i` (a RESUME) takes over suspended (or failing) `link`.
    fn resume_on(&mut self, i: usize, link: LinkId, now: Instant) {
        if let Some(old) = self.by_link.remove(&link) {
            // An old connection the node did not see end yet (half-open): the node gives
            // it up in handle_reconnect.
            self.drop_sock(old);
        }
        match self.node.handle_reconnect(now, link) {
            Ok(()) => {
                if let Some(s) = self.socks[i].as_mut() {
                    log::info!(
                        "{}: link {link}: session resumed on {}",
                        self.opts.name,
                        s.peer
                    );
                    s.link = Some(link);
                    s.phase = Phase::Linked;
                }
                self.suspended.remove(&link);
                self.by_link.insert(link, i);
            }
            Err(e) => {
                log::info!(
                    "{}: link {link}: cannot resume ({e}); connection dropped",
                    self.opts.name
                );
                self.drop_sock(i);
            }
        }
    }

    fn accept(&mut self) {
        if self
            .accept_retry
            .is_none_or(|t| t > std::time::Instant::now())
        {
            return;
        }
        self.accept_retry = None;
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((stream, peer)) => {
                    if self.stopping.is_some() {
                        continue;
                    }
                    let setup = self.opts.secure.clone();
                    let secure = match setup.as_ref().map(|s| s.accept_policy(peer.ip())) {
                        None | Some(AcceptAs::Plaintext) => None,
                        Some(AcceptAs::Secure) => setup,
                        Some(AcceptAs::Refuse(why)) => {
                            self.secure.accept_refused += 1;
                            log::warn!(
                                "{}: connection from {peer} refused by the keys directory: {why}",
                                self.opts.name
                            );
                            continue;
                        }
                    };
                    if let Some(setup) = &secure {
                        if self.half_open() >= setup.max_half_open {
                            self.secure.half_open_refused += 1;
                            let n = self.secure.half_open_refused;
                            if n.is_power_of_two() {
                                log::warn!(
                                    "{}: connection from {peer} refused: {} handshakes already running (the bound); {n} refused so far",
                                    self.opts.name,
                                    setup.max_half_open
                                );
                            }
                            continue;
                        }
                    }
                    let _ = stream.set_nodelay(true);
                    let deadline = std::time::Instant::now() + CLASSIFY_WAIT;
                    let s = Sock::new(stream, peer, Phase::Classifying { deadline });
                    let i = match self.insert_sock(s) {
                        Ok(i) => i,
                        Err(e) => {
                            log::warn!(
                                "{}: cannot watch the connection from {peer}: {e}",
                                self.opts.name
                            );
                            continue;
                        }
                    };
                    log::debug!("{}: accepted {peer}", self.opts.name);
                    if let Some(setup) = secure {
                        let now = self.clock.now();
                        match setup.responder(now) {
                            Ok(w) => {
                                if let Some(s) = self.socks[i].as_mut() {
                                    s.sec = Some(w);
                                    s.phase = Phase::Handshaking { accepted: true };
                                }
                            }
                            Err(e) => {
                                log::warn!(
                                    "{}: cannot start the secure channel for {peer}: {e}",
                                    self.opts.name
                                );
                                self.drop_sock(i);
                            }
                        }
                        continue;
                    }
                    if !self.sessions() {
                        let now = self.clock.now();
                        if !self.attach_new(i, now) {
                            self.drop_sock(i);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. out of file descriptors: try again shortly, not in a busy loop.
                    log::warn!(
                        "{}: cannot accept a connection: {e}; retrying in 100 ms (raise `ulimit -n` if this repeats)",
                        self.opts.name
                    );
                    self.accept_retry =
                        Some(std::time::Instant::now() + Duration::from_millis(100));
                    return;
                }
            }
        }
    }

    /// True when accepted connections must be classified first (sessions on).
    fn sessions(&self) -> bool {
        self.opts.sessions
    }

    // ---------------------------------------------------------------------------------
    // Dials

    fn dials_due(&mut self) {
        let now = std::time::Instant::now();
        for d in 0..self.dials.len() {
            if let DialState::Due(t) = self.dials[d].state {
                if t <= now && self.stopping.is_none() {
                    self.start_connect(d);
                }
            }
        }
    }

    fn start_connect(&mut self, d: usize) {
        let addrs = match self.dials[d].connector.addr().resolve() {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                self.dial_failed(d, "the name resolves to no address".into());
                return;
            }
            Err(e) => {
                self.dial_failed(d, e.to_string());
                return;
            }
        };
        let sa = addrs[self.dials[d].next_addr % addrs.len()];
        self.dials[d].next_addr = self.dials[d].next_addr.wrapping_add(1);
        let stream = match TcpStream::connect(sa) {
            Ok(s) => s,
            Err(e) => {
                let ce = crate::net::ConnectError::from_io(sa, &e);
                self.dial_failed(d, ce.to_string());
                return;
            }
        };
        let deadline = std::time::Instant::now() + self.opts.connect_timeout;
        let mut s = Sock::new(stream, sa, Phase::Connecting { deadline });
        s.dial = Some(d);
        match self.insert_sock(s) {
            Ok(i) => {
                self.dials[d].state = DialState::Connecting(i);
                log::debug!("{}: connecting to {sa}", self.opts.name);
            }
            Err(e) => self.dial_failed(d, format!("cannot watch the socket: {e}")),
        }
    }

    fn connects_check(&mut self) {
        let now = std::time::Instant::now();
        for d in 0..self.dials.len() {
            let DialState::Connecting(i) = self.dials[d].state else {
                continue;
            };
            let Some(s) = self.socks[i].as_mut() else {
                continue;
            };
            let Phase::Connecting { deadline } = s.phase else {
                continue;
            };
            let peer = s.peer;
            let failed = match s.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    Some(crate::net::ConnectError::from_io(peer, &e).to_string())
                }
                Ok(None) => match s.stream.peer_addr() {
                    Ok(_) => None,
                    Err(e)
                        if e.kind() == io::ErrorKind::NotConnected
                            || e.kind() == io::ErrorKind::WouldBlock =>
                    {
                        if now >= deadline {
                            Some(format!(
                                "connecting to {peer} timed out after {:.1} s; is the host up and the port open?",
                                self.opts.connect_timeout.as_secs_f64()
                            ))
                        } else {
                            continue;
                        }
                    }
                    Err(e) => Some(crate::net::ConnectError::from_io(peer, &e).to_string()),
                },
            };
            match failed {
                Some(why) => {
                    self.drop_sock(i);
                    self.dial_failed(d, why);
                }
                None => {
                    let _ = s.stream.set_nodelay(true);
                    s.readable = true;
                    let cnow = self.clock.now();
                    if !self.secure_dial(i, d, cnow) {
                        self.dial_connected(i, d, cnow);
                    }
                }
            }
        }
    }

    /// Dialled socket `i` is ready to carry DMSG: resume the dial's session or add a link.
    fn dial_connected(&mut self, i: usize, d: usize, now: Instant) {
        if self.reattach(i, d, now) {
            return;
        }
        if self.attach_new(i, now) {
            self.dials[d].link = self.socks[i].as_ref().and_then(|s| s.link);
            self.dials[d].state = DialState::Up(i);
            self.dials[d].up_at = Some(std::time::Instant::now());
        } else {
            self.drop_sock(i);
            self.dial_failed(d, "the node has no free link slot".into());
        }
    }

    /// A dialled connection for a suspended session: resume it (sessions only). False when
    /// there is nothing to resume (the caller adds a new link).
    fn reattach(&mut self, i: usize, d: usize, now: Instant) -> bool {
        let Some(link) = self.dials[d].link else {
            return false;
        };
        if !self.node.is_suspended(link) {
            return false;
        }
        if !self.same_keys(link, i) {
            self.secure.resume_refused += 1;
            log::warn!(
                "{}: link {link}: the peer now proves another static key (or none) than the session was created with; not resuming it, starting a new link",
                self.opts.name
            );
            self.dials[d].link = None;
            return false;
        }
        match self.node.handle_reconnect(now, link) {
            Ok(()) => {
                if let Some(s) = self.socks[i].as_mut() {
                    log::info!(
                        "{}: link {link}: resuming the session on {}",
                        self.opts.name,
                        s.peer
                    );
                    s.link = Some(link);
                    s.phase = Phase::Linked;
                }
                self.suspended.remove(&link);
                self.by_link.insert(link, i);
                self.dials[d].state = DialState::Up(i);
                self.dials[d].up_at = Some(std::time::Instant::now());
                true
            }
            Err(e) => {
                log::info!(
                    "{}: link {link}: cannot resume ({e}); starting a new link",
                    self.opts.name
                );
                self.dials[d].link = None;
                false
            }
        }
    }

    fn dial_failed(&mut self, d: usize, reason: String) {
        if self.stopping.is_some() {
            self.dials[d].state = DialState::Stopped;
            return;
        }
        let delay = self.dials[d].connector.next_delay();
        let addr = self.dials[d].connector.addr().clone();
        if self.dials[d].connector.exhausted() {
            log::warn!("{}: giving up on {addr}: {reason}", self.opts.name);
            self.dials[d].state = DialState::Stopped;
            self.events.send(NodeEvent::GaveUp {
                addr,
                error: reason,
            });
            return;
        }
        let retry = Retry {
            attempt: self.dials[d].connector.failures(),
            delay,
            reason,
        };
        log::info!("{}: {addr}: {retry}", self.opts.name);
        self.dials[d].state = DialState::Due(std::time::Instant::now() + delay);
        self.events.send(NodeEvent::Retrying { addr, retry });
    }

    // ---------------------------------------------------------------------------------
    // Time, commands, ending

    fn timers(&mut self) {
        let now = self.clock.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
    }

    fn next_wake(&self) -> Option<Duration> {
        let snow = std::time::Instant::now();
        let mut wake: Option<Duration> = None;
        let mut at = |d: Duration| wake = Some(wake.map_or(d, |w| w.min(d)));
        if let Some(t) = self.node.poll_timeout() {
            // Round up to a whole millisecond so the poller does not wake a hair early.
            at(Clock::until(self.clock.now(), t) + Duration::from_micros(999));
        }
        for d in &self.dials {
            if let DialState::Due(t) = d.state {
                at(t.saturating_duration_since(snow));
            }
        }
        for s in self.socks.iter().flatten() {
            if let Phase::Connecting { deadline } | Phase::Classifying { deadline } = s.phase {
                at(deadline.saturating_duration_since(snow) + Duration::from_millis(1));
            }
            if let Some(t) = s.sec.as_ref().and_then(|w| w.ch.poll_timeout()) {
                at(Clock::until(self.clock.now(), t) + Duration::from_micros(999));
            }
        }
        if let Some(t) = self.accept_retry {
            at(t.saturating_duration_since(snow));
        }
        if let Some(t) = self.stopping {
            at(t.saturating_duration_since(snow)
                .min(Duration::from_millis(50)));
        }
        wake
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            cmd(self);
        }
    }

    fn finished(&mut self) -> bool {
        let Some(deadline) = self.stopping else {
            return false;
        };
        if self.node.link_ids().is_empty() {
            return true;
        }
        if std::time::Instant::now() < deadline {
            return false;
        }
        // The grace period is over: drop what is left.
        let now = self.clock.now();
        for link in self.node.link_ids() {
            log::info!(
                "{}: link {link} did not close in time; dropped",
                self.opts.name
            );
            let _ = self.node.remove_link(now, link);
        }
        self.turn();
        true
    }

    fn finish(&mut self) {
        for i in 0..self.socks.len() {
            self.drop_sock(i);
        }
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        log::info!("{}: stopped", self.opts.name);
        self.events.send(NodeEvent::Stopped);
    }
}

impl<N: DriveNode> Control for Runtime<N> {
    fn node(&mut self) -> &mut dyn DriveNode {
        &mut *self.node
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn dial(&mut self, addr: Addr, peer: Option<String>) {
        let peer = peer.unwrap_or_else(|| addr.host().to_string());
        let connector = Connector::new(addr)
            .with_backoff(self.opts.backoff)
            .with_connect_timeout(self.opts.connect_timeout);
        self.dials.push(Dial {
            connector,
            state: DialState::Due(std::time::Instant::now()),
            link: None,
            up_at: None,
            next_addr: 0,
            peer,
        });
        if self.stopping.is_none() {
            self.start_connect(self.dials.len() - 1);
        }
    }

    fn kill(&mut self, link: LinkId) -> Result<(), RtError> {
        let i = *self.by_link.get(&link).ok_or(RtError::UnknownLink(link))?;
        let s = self.socks[i].as_mut().ok_or(RtError::UnknownLink(link))?;
        log::info!(
            "{}: link {link}: cutting the connection to {}",
            self.opts.name,
            s.peer
        );
        let _ = s.stream.shutdown(Shutdown::Both);
        if s.end.is_none() {
            s.end = Some(TransportEnd::ReadError {
                kind: io::ErrorKind::ConnectionAborted,
                message: "connection cut locally".into(),
            });
        }
        s.input.clear();
        s.output.clear();
        Ok(())
    }

    fn status(&mut self) -> Status {
        let links = self
            .by_link
            .iter()
            .filter_map(|(&link, &i)| {
                let s = self.socks[i].as_ref()?;
                Some(LinkInfo {
                    link,
                    peer: s.peer,
                    local: s.stream.local_addr().ok(),
                    dialled: s.dial.map(|d| self.dials[d].connector.addr().clone()),
                    stats: self.node.link_stats(link),
                })
            })
            .collect();
        Status {
            stats: self.node.stats(),
            links,
            spans: self.node.span_count(),
            node_bytes: self.node.size_bytes(),
            listening: self.listener.as_ref().and_then(|l| l.local_addr().ok()),
            redials: self.redials,
            resumes: self.resumes,
            secure: SecureCounters {
                half_open: self.half_open(),
                ..self.secure
            },
        }
    }

    fn shutdown(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(std::time::Instant::now() + self.opts.shutdown_grace);
        for d in 0..self.dials.len() {
            if let DialState::Connecting(i) = self.dials[d].state {
                self.drop_sock(i);
            }
            self.dials[d].state = DialState::Stopped;
        }
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Accepted connections that are not links yet.
        for i in 0..self.socks.len() {
            if self.socks[i].as_ref().is_some_and(|s| s.link.is_none()) {
                self.drop_sock(i);
            }
        }
        let now = self.clock.now();
        for link in self.node.link_ids() {
            if self.node.is_suspended(link) {
                // No transport to close it over: the session is abandoned.
                let _ = self.node.remove_link(now, link);
                continue;
            }
            if let Err(e) = self.node.close_link(now, link) {
                log::debug!(
                    "{}: link {link}: clean close refused ({e}); dropping it",
                    self.opts.name
                );
                let _ = self.node.remove_link(now, link);
            }
        }
    }
}

/// The owned copy of a received frame.
fn owned(m: &dmsg_core::link::Received<'_>) -> ReceivedMsg {
    ReceivedMsg {
        header: m.header,
        body: *m.body,
        aux: m.aux.to_vec(),
    }
}
