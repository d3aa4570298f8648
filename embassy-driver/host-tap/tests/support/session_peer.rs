//! A session-capable peer for the TAP test: one core `ReliableConnection` that accepts
//! connections over std TCP and routes each new stream by its first frame
//! (`classify_stream`): a RESUME of its session goes to the existing link
//! (`handle_reconnect`), anything else starts a new link. This is what the accepting side
//! of the reliable session needs; the core `Node` (the hub) does not do it yet, so the
//! session check runs against this peer.
//!
//! Threads as in `hub.rs`: an acceptor, a reader per stream, and one thread that owns the
//! connection.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::link::{
    classify_stream, Event, LinkConfig, Outgoing, ReliableConnection, SessionOffer, StreamStart,
    TxnId,
};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::{peer_type, ConnRepr};
use dmsg_core::wire::{Command, Flags, Label, Uuid, HEADER_LEN};

use super::hub::TxnResult;

/// Host-sized link with a 64-frame, 64 KiB retransmit window.
type PeerConn = ReliableConnection<{ 8 * 64 + 4096 }, 4096, 16384, 64, 64, 65536>;

type Done = Sender<Result<TxnResult, String>>;

/// What the peer saw.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    /// Links started from a fresh LNK_CONN.
    pub fresh_links: u64,
    /// Streams routed to the existing link by their RESUME.
    pub resumed_streams: u64,
    /// `Event::Suspended` / `Event::Resumed` of the link.
    pub suspensions: u64,
    /// Completed resumes.
    pub resumes: u64,
    /// The session runs on the current link.
    pub session_running: bool,
    /// LNK_SPANs the leaf opened, and how many of them closed.
    pub span_opens: u64,
    /// LNK_SPANs of the leaf that closed.
    pub span_closes: u64,
    /// Why links closed, in order.
    pub link_closed: Vec<String>,
}

enum Msg {
    Accepted(u64, TcpStream),
    Bytes(u64, Vec<u8>),
    Eof(u64),
    Open {
        command: Command,
        aux: Vec<u8>,
        done: Done,
    },
    Status(Sender<PeerStatus>),
    Stop,
}

/// A running peer; stopped on drop.
pub struct SessionPeer {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl SessionPeer {
    /// Starts the peer on `listener` (bound by the caller, in the namespace).
    pub fn start(listener: TcpListener, cluster: Uuid, ping: Duration, idle: Duration) -> Self {
        let (tx, rx) = mpsc::channel();
        let accept_tx = tx.clone();
        std::thread::spawn(move || {
            for (id, stream) in (1u64..).zip(listener.incoming()) {
                let Ok(stream) = stream else { return };
                let _ = stream.set_nodelay(true);
                let Ok(mut reader) = stream.try_clone() else {
                    continue;
                };
                if accept_tx.send(Msg::Accepted(id, stream)).is_err() {
                    return;
                }
                let tx = accept_tx.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = tx.send(Msg::Eof(id));
                                return;
                            }
                            Ok(n) => {
                                if tx.send(Msg::Bytes(id, buf[..n].to_vec())).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        let thread = std::thread::spawn(move || run(rx, cluster, ping, idle));
        SessionPeer {
            tx,
            thread: Some(thread),
        }
    }

    /// Opens a one-frame transaction (CREATE|DELETE) on the link (circuit 0); the receiver
    /// gets its outcome once it closed.
    pub fn open(&self, command: Command, aux: &[u8]) -> Receiver<Result<TxnResult, String>> {
        let (done, rx) = mpsc::channel();
        let _ = self.tx.send(Msg::Open {
            command,
            aux: aux.to_vec(),
            done,
        });
        rx
    }

    /// What the peer saw so far.
    pub fn status(&self) -> PeerStatus {
        let (tx, rx) = mpsc::channel();
        let _ = self.tx.send(Msg::Status(tx));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_default()
    }
}

impl Drop for SessionPeer {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    start: std::time::Instant,
    config: LinkConfig,
    crc: DefaultCrc,
    conn: Option<Box<PeerConn>>,
    /// The stream the link runs on, and its bytes not yet taken.
    active: Option<(u64, TcpStream)>,
    pending: Vec<u8>,
    /// New streams whose first frame has not arrived yet.
    classifying: HashMap<u64, (TcpStream, Vec<u8>)>,
    txns: HashMap<TxnId, (Vec<Vec<u8>>, Done)>,
    span: Option<TxnId>,
    status: PeerStatus,
}

impl State {
    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as u64)
    }

    fn drop_active(&mut self) {
        if let Some((_, s)) = self.active.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.pending.clear();
    }

    /// Routes a new stream once its first frame is in.
    fn classify(&mut self, id: u64) {
        let Some((_, first)) = self.classifying.get(&id) else {
            return;
        };
        let start = classify_stream(&self.crc, first);
        if start == StreamStart::NeedMore {
            return;
        }
        let Some((stream, first)) = self.classifying.remove(&id) else {
            return;
        };
        let now = self.now();
        match start {
            StreamStart::Fresh => {
                // A new link (the leaf restarted, or it is the first): the old one goes.
                if let Some(old) = self.conn.as_mut() {
                    old.abandon(now);
                    self.drain_events(now);
                }
                self.drop_active();
                let cfg = LinkConfig {
                    session: Some(SessionOffer::new(0x5e55_0000 + self.status.fresh_links + 1)),
                    ..self.config
                };
                match PeerConn::new(now, &cfg, DefaultCrc::default()) {
                    Ok(c) => {
                        self.conn = Some(Box::new(c));
                        self.status.fresh_links += 1;
                        self.span = None;
                        self.active = Some((id, stream));
                        self.pending = first;
                    }
                    Err(_) => {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            }
            StreamStart::Resume(f) => {
                let ours = self
                    .conn
                    .as_mut()
                    .filter(|c| c.session_id() == Some(f.receiver_id));
                match ours.map(|c| c.handle_reconnect(now)) {
                    Some(Ok(())) => {
                        self.drop_active();
                        self.status.resumed_streams += 1;
                        self.active = Some((id, stream));
                        self.pending = first;
                    }
                    _ => {
                        let mut reset = [0u8; HEADER_LEN];
                        if let Some(n) = start.stateless_reset(&self.crc, &mut reset) {
                            let mut s = &stream;
                            let _ = s.write_all(&reset[..n]);
                        }
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            }
            _ => {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// The drive contract: input, transmit, events, until nothing moves.
    fn drive(&mut self) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let now = self.now();
            let mut busy = false;
            if let (Some(conn), Some(_)) = (self.conn.as_mut(), self.active.as_ref()) {
                if !self.pending.is_empty() {
                    let used = conn.handle_input(now, &self.pending);
                    self.pending.drain(..used);
                    busy |= used > 0;
                }
            }
            if let (Some(conn), Some((_, stream))) = (self.conn.as_mut(), self.active.as_mut()) {
                loop {
                    let n = conn.poll_transmit(now, &mut buf);
                    if n == 0 {
                        break;
                    }
                    busy = true;
                    if stream.write_all(&buf[..n]).is_err() {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            }
            busy |= self.drain_events(now);
            if !busy {
                return;
            }
        }
    }

    /// Takes every event and reacts; true if there was one.
    fn drain_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return any;
            };
            let mut echo = None;
            match conn.poll_event() {
                None => return any,
                Some(Event::Opened { txn, msg }) if msg.command() == Command::LnkSpan => {
                    self.status.span_opens += 1;
                    self.span = Some(txn);
                }
                Some(Event::Opened { txn, msg }) => {
                    echo = Some((txn, msg.command(), msg.aux.to_vec()));
                }
                Some(Event::Message { txn, msg }) => {
                    if let Some((replies, _)) = self.txns.get_mut(&txn) {
                        replies.push(msg.aux.to_vec());
                    }
                }
                Some(Event::Closed { txn, error, .. }) => {
                    if Some(txn) == self.span {
                        self.status.span_closes += 1;
                        self.span = None;
                    }
                    if let Some((replies, done)) = self.txns.remove(&txn) {
                        let _ = done.send(Ok(TxnResult { replies, error }));
                    }
                }
                Some(Event::Suspended { .. }) => self.status.suspensions += 1,
                Some(Event::Resumed { .. }) => self.status.resumes += 1,
                Some(Event::LinkClosed { reason }) => {
                    self.status.link_closed.push(format!("{reason:?}"));
                }
                Some(_) => {}
            }
            any = true;
            if let Some((txn, command, aux)) = echo {
                let out = Outgoing::new(command).with_aux(&aux);
                if conn.send(now, txn, &out, Flags::DELETE).is_err() {
                    let _ = conn.abort(now, txn);
                }
            }
        }
    }
}

fn run(rx: Receiver<Msg>, cluster: Uuid, ping: Duration, idle: Duration) {
    let mut st = State {
        start: std::time::Instant::now(),
        config: LinkConfig {
            conn: ConnRepr {
                peer_id: cluster,
                peer_type: peer_type::ROUTER,
                peer_mask: u64::MAX,
                peer_label: Label::new("tap-test-session-peer").unwrap_or(Label::EMPTY),
                ..ConnRepr::default()
            },
            ping_interval: ping,
            idle_timeout: idle,
            ..LinkConfig::default()
        },
        crc: DefaultCrc::default(),
        conn: None,
        active: None,
        pending: Vec::new(),
        classifying: HashMap::new(),
        txns: HashMap::new(),
        span: None,
        status: PeerStatus::default(),
    };
    loop {
        let now = st.now();
        let wait = st
            .conn
            .as_ref()
            .and_then(|c| c.poll_timeout())
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
                st.drop_active();
                return;
            }
            Some(Msg::Accepted(id, stream)) => {
                st.classifying.insert(id, (stream, Vec::new()));
            }
            Some(Msg::Bytes(id, bytes)) => {
                if st.active.as_ref().is_some_and(|(a, _)| *a == id) {
                    st.pending.extend_from_slice(&bytes);
                } else if let Some((_, first)) = st.classifying.get_mut(&id) {
                    first.extend_from_slice(&bytes);
                    st.classify(id);
                }
            }
            Some(Msg::Eof(id)) => {
                if st.active.as_ref().is_some_and(|(a, _)| *a == id) {
                    st.drop_active();
                    if let Some(c) = st.conn.as_mut() {
                        c.handle_close();
                    }
                } else {
                    st.classifying.remove(&id);
                }
            }
            Some(Msg::Open { command, aux, done }) => {
                let out = Outgoing::new(command).with_aux(&aux);
                match st
                    .conn
                    .as_mut()
                    .map(|c| c.open(now, &out, Flags::DELETE, None))
                {
                    Some(Ok(txn)) => {
                        st.txns.insert(txn, (Vec::new(), done));
                    }
                    Some(Err(e)) => {
                        let _ = done.send(Err(format!("{e:?}")));
                    }
                    None => {
                        let _ = done.send(Err("no link".into()));
                    }
                }
            }
            Some(Msg::Status(reply)) => {
                let mut s = st.status.clone();
                s.session_running = st.conn.as_ref().is_some_and(|c| c.session_running());
                let _ = reply.send(s);
            }
        }
        if let Some(c) = st.conn.as_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        st.drive();
    }
}
