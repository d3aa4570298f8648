//! Shared helpers for the `link_*` tests: owned events, a back-to-back `Pair` of connections
//! with a virtual clock, and a raw scripted peer that builds frames with the encoder.
//!
//! Included by the other `link_*.rs` files with `#[path]`; built on its own it has no tests.
#![allow(dead_code)]

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::link::{CloseReason, Connection, Event, Extensions, LinkConfig, TxnEnd, TxnId};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::ConnRepr;
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};

/// An event with its borrowed parts copied out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Connected,
    PeerConn(ConnRepr, Extensions),
    ConnAnswered(u32),
    Opened(TxnId, HeaderRepr, Body, Vec<u8>),
    Message(TxnId, HeaderRepr, Body, Vec<u8>),
    OneWay(HeaderRepr, Body, Vec<u8>),
    Closed(TxnId, u32, TxnEnd),
    LinkClosed(CloseReason),
}

impl Ev {
    pub fn from_event(ev: Event<'_>) -> Ev {
        match ev {
            Event::Connected => Ev::Connected,
            Event::PeerConn { conn, extensions } => Ev::PeerConn(*conn, extensions),
            Event::ConnAnswered { error } => Ev::ConnAnswered(error),
            Event::Opened { txn, msg } => Ev::Opened(txn, msg.header, *msg.body, msg.aux.to_vec()),
            Event::Message { txn, msg } => {
                Ev::Message(txn, msg.header, *msg.body, msg.aux.to_vec())
            }
            Event::OneWay { msg } => Ev::OneWay(msg.header, *msg.body, msg.aux.to_vec()),
            Event::Closed { txn, error, end } => Ev::Closed(txn, error, end),
            Event::LinkClosed { reason } => Ev::LinkClosed(reason),
            other => panic!("unexpected event {other:?}"),
        }
    }

    /// The flags of a frame event.
    pub fn flags(&self) -> Option<Flags> {
        match self {
            Ev::Opened(_, h, ..) | Ev::Message(_, h, ..) | Ev::OneWay(h, ..) => Some(h.cmd.flags()),
            _ => None,
        }
    }
}

/// What the harness needs from a connection of any size.
pub trait Endpoint {
    fn input(&mut self, now: Instant, data: &[u8]) -> usize;
    fn transmit(&mut self, now: Instant, out: &mut [u8]) -> usize;
    fn event(&mut self) -> Option<Ev>;
    fn timeout(&self) -> Option<Instant>;
    fn on_timeout(&mut self, now: Instant);
}

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize> Endpoint
    for Connection<RX, AUX, TX, TXNS>
{
    fn input(&mut self, now: Instant, data: &[u8]) -> usize {
        self.handle_input(now, data)
    }
    fn transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        self.poll_transmit(now, out)
    }
    fn event(&mut self) -> Option<Ev> {
        self.poll_event().map(Ev::from_event)
    }
    fn timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn on_timeout(&mut self, now: Instant) {
        self.handle_timeout(now)
    }
}

/// A small link used by most tests: 4 KiB aux, 16 KiB output, 8 transactions.
pub type Link = Connection<{ 8 * 64 + 4096 }, 4096, 16384, 8>;

/// Moves all queued bytes of `c` into `wire` and all events into `events`, until both are
/// empty. Returns true if anything moved.
pub fn flush<E: Endpoint>(
    c: &mut E,
    now: Instant,
    wire: &mut Vec<u8>,
    events: &mut Vec<Ev>,
) -> bool {
    let mut moved = false;
    let mut buf = [0u8; 1000];
    loop {
        let mut any = false;
        loop {
            let n = c.transmit(now, &mut buf);
            if n == 0 {
                break;
            }
            wire.extend_from_slice(&buf[..n]);
            any = true;
        }
        while let Some(ev) = c.event() {
            events.push(ev);
            any = true;
        }
        if !any {
            return moved;
        }
        moved = true;
    }
}

/// Feeds all of `pipe` to `c` following the drive contract (input, then drain). Returns true
/// if any byte was consumed.
pub fn feed<E: Endpoint>(
    c: &mut E,
    now: Instant,
    pipe: &mut Vec<u8>,
    wire: &mut Vec<u8>,
    events: &mut Vec<Ev>,
) -> bool {
    let mut consumed = false;
    for _ in 0..100_000 {
        if pipe.is_empty() {
            break;
        }
        let used = c.input(now, pipe);
        pipe.drain(..used);
        consumed |= used > 0;
        let moved = flush(c, now, wire, events);
        assert!(
            used > 0 || moved || pipe.is_empty(),
            "no progress feeding input"
        );
    }
    consumed
}

/// Two connections wired back to back through in-memory pipes, with a virtual clock.
pub struct Pair<A: Endpoint, B: Endpoint> {
    pub now: Instant,
    pub a: Box<A>,
    pub b: Box<B>,
    /// Bytes sent by `a`, not yet delivered to `b`.
    pub a_to_b: Vec<u8>,
    /// Bytes sent by `b`, not yet delivered to `a`.
    pub b_to_a: Vec<u8>,
    /// Events seen by `a` and `b`, in order (tests take them out).
    pub a_events: Vec<Ev>,
    pub b_events: Vec<Ev>,
    /// When false, bytes sent are dropped instead of delivered (a dead network).
    pub connected: bool,
    /// Every byte each end ever sent, in order (a tap on the wire).
    pub a_sent: Vec<u8>,
    pub b_sent: Vec<u8>,
}

impl<A: Endpoint, B: Endpoint> Pair<A, B> {
    pub fn new(a: A, b: B) -> Self {
        Pair {
            now: Instant::ZERO,
            a: Box::new(a),
            b: Box::new(b),
            a_to_b: Vec::new(),
            b_to_a: Vec::new(),
            a_events: Vec::new(),
            b_events: Vec::new(),
            connected: true,
            a_sent: Vec::new(),
            b_sent: Vec::new(),
        }
    }

    /// Collects output and events of both ends without delivering anything.
    pub fn flush(&mut self) -> bool {
        let (la, lb) = (self.a_to_b.len(), self.b_to_a.len());
        let x = flush(&mut *self.a, self.now, &mut self.a_to_b, &mut self.a_events);
        let y = flush(&mut *self.b, self.now, &mut self.b_to_a, &mut self.b_events);
        self.a_sent.extend_from_slice(&self.a_to_b[la..]);
        self.b_sent.extend_from_slice(&self.b_to_a[lb..]);
        if !self.connected {
            self.a_to_b.clear();
            self.b_to_a.clear();
        }
        x || y
    }

    /// Delivers what is in flight in both directions (once) and collects the results.
    pub fn deliver(&mut self) -> bool {
        if !self.connected {
            self.a_to_b.clear();
            self.b_to_a.clear();
            return false;
        }
        let mut pipe = std::mem::take(&mut self.a_to_b);
        let lb = self.b_to_a.len();
        let x = feed(
            &mut *self.b,
            self.now,
            &mut pipe,
            &mut self.b_to_a,
            &mut self.b_events,
        );
        self.b_sent.extend_from_slice(&self.b_to_a[lb..]);
        let mut pipe2 = std::mem::take(&mut self.b_to_a);
        let y = feed(
            &mut *self.a,
            self.now,
            &mut pipe2,
            &mut self.a_to_b,
            &mut self.a_events,
        );
        self.a_sent.extend_from_slice(&self.a_to_b);
        x || y
    }

    /// Runs both ends until nothing moves, without advancing time.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            let f = self.flush();
            let d = self.deliver();
            if !f && !d && (self.a_to_b.is_empty() && self.b_to_a.is_empty() || !self.connected) {
                return;
            }
        }
        panic!("pair did not settle");
    }

    /// Advances the clock by `dt`, firing timers as they come due and driving in between.
    pub fn advance(&mut self, dt: Duration) {
        let end = self.now + dt;
        self.drive();
        for _ in 0..1_000_000 {
            let next = [self.a.timeout(), self.b.timeout()]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= end);
            let Some(t) = next else {
                self.now = end;
                self.a.on_timeout(end);
                self.b.on_timeout(end);
                self.drive();
                return;
            };
            self.now = self.now.max(t);
            self.a.on_timeout(self.now);
            self.b.on_timeout(self.now);
            self.drive();
        }
        panic!("timers did not settle");
    }

    pub fn take_a(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.a_events)
    }

    pub fn take_b(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.b_events)
    }
}

/// A config with the given LNK_CONN identity.
pub fn config(peer_type: u8, label: &str) -> LinkConfig {
    let mut c = LinkConfig::default();
    c.conn.peer_type = peer_type;
    c.conn.peer_label = dmsg_core::wire::Label::new(label).unwrap();
    c
}

/// A decoded frame as the far end sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub header: HeaderRepr,
    pub body: Body,
    pub aux: Vec<u8>,
}

impl Seen {
    pub fn cmd(&self) -> u32 {
        self.header.cmd.0
    }
}

/// Decodes a whole byte stream (sequence checked from 0), panicking on any error.
pub fn decode_all(bytes: &[u8]) -> Vec<Seen> {
    decode_with(bytes, true)
}

/// Decodes a stream that starts mid-connection (sequence not checked).
pub fn decode_tail(bytes: &[u8]) -> Vec<Seen> {
    decode_with(bytes, false)
}

fn decode_with(bytes: &[u8], check_sequence: bool) -> Vec<Seen> {
    let cfg = DecoderConfig {
        check_sequence,
        ..DecoderConfig::default()
    };
    let mut dec = Decoder::new(
        vec![0u8; cfg.storage_len()].into_boxed_slice(),
        cfg,
        DefaultCrc::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut input = bytes;
    while !input.is_empty() {
        let d = dec.decode(input).expect("our output decodes");
        input = &input[d.consumed..];
        if let Some(f) = d.frame {
            out.push(Seen {
                header: f.repr(),
                body: f.body().unwrap(),
                aux: f.aux().to_vec(),
            });
        }
    }
    assert!(dec.is_idle(), "stream ends mid-frame");
    out
}

/// A raw peer: builds frames with its own encoder (so its salt counter is right) and decodes
/// what it receives with its own decoder.
pub struct RawPeer {
    pub enc: Encoder,
    pub dec: Decoder<Box<[u8]>, DefaultCrc>,
}

impl Default for RawPeer {
    fn default() -> Self {
        let cfg = DecoderConfig::default();
        RawPeer {
            enc: Encoder::new(0x5a5a_5a5a),
            dec: Decoder::new(
                vec![0u8; cfg.storage_len()].into_boxed_slice(),
                cfg,
                DefaultCrc::default(),
            )
            .unwrap(),
        }
    }
}

impl RawPeer {
    /// Encodes one frame.
    pub fn frame(&mut self, cmd: Cmd, msgid: u64, error: u32, body: &Body, aux: &[u8]) -> Vec<u8> {
        let hdr = HeaderRepr {
            error,
            ..HeaderRepr::new(cmd, MsgId(msgid))
        };
        let mut out = vec![0u8; cmd.header_len() + dmsg_core::wire::align64(aux.len())];
        let n = self
            .enc
            .encode(&DefaultCrc::default(), &hdr, body, aux, &mut out)
            .unwrap();
        assert_eq!(n, out.len());
        out
    }

    /// A frame with no body (a command of one block).
    pub fn simple(&mut self, command: Command, flags: Flags, msgid: u64, error: u32) -> Vec<u8> {
        self.frame(Cmd::new(command, flags), msgid, error, &Body::None, &[])
    }

    /// Decodes everything in `bytes`.
    pub fn read(&mut self, bytes: &[u8]) -> Vec<Seen> {
        let mut out = Vec::new();
        let mut input = bytes;
        while !input.is_empty() {
            let d = self.dec.decode(input).expect("our output decodes");
            input = &input[d.consumed..];
            if let Some(f) = d.frame {
                out.push(Seen {
                    header: f.repr(),
                    body: f.body().unwrap(),
                    aux: f.aux().to_vec(),
                });
            }
        }
        out
    }
}

/// Flags of a command word, for readable assertions.
pub fn flags_of(cmd: u32) -> Flags {
    Cmd(cmd).flags()
}
