//! One DMSG link: transactions, LNK_CONN, keepalive and link loss over one byte stream.
//!
//! A [`Connection`] is a sans-IO state machine for one connected transport (a TCP stream in
//! plaintext mode: no handshake, frames from the first byte, as DragonFly's daemon speaks with
//! a `<ip>.none` peer). It owns the frame decoder and encoder, two transaction tables (ours
//! and the peer's, keyed by msgid), our and the peer's LNK_CONN transactions, the keepalive
//! timers and a bounded output queue. It never allocates, never touches a socket or a clock,
//! and every table has a compile-time bound. The full rules are in `spec/LINK.md`.
//!
//! A [`ReliableConnection`] can also run the reliable session (`spec/SESSION.md`) under its
//! frames when both ends offer it: a lost transport then suspends the link
//! ([`Event::Suspended`]) until [`handle_reconnect`](Connection::handle_reconnect) and the
//! session's resume ([`Event::Resumed`]), instead of ending every transaction. See [`reliable`].
//!
//! # The drive contract
//!
//! Inputs are `handle_*` calls that take the current time; outputs are pulled with `poll_*`.
//! After **any** input (bytes, a timeout, a command you issued), do all three, in this order:
//!
//! 1. **transmit**: call [`poll_transmit`](Connection::poll_transmit) until it returns 0 and
//!    write what it gives you to the transport, in order;
//! 2. **events**: call [`poll_event`](Connection::poll_event) until it returns `None`. An event
//!    borrows the connection (its aux data lives in an internal buffer until the next call),
//!    so copy out what you need, then issue commands; commands queue bytes, so go back to 1
//!    whenever you issued any;
//! 3. **timer**: take [`poll_timeout`](Connection::poll_timeout) and call
//!    [`handle_timeout`](Connection::handle_timeout) when that instant has passed (calling it
//!    early or twice is harmless).
//!
//! [`handle_input`](Connection::handle_input) consumes only as much input as it can turn into
//! events and answers without overrunning its bounds: it stops after a frame whose event must
//! be polled first, and while the output queue lacks room for the answers a frame may need.
//! It returns the number of bytes used; keep the rest and feed it again after steps 1 and 2.
//! The loop below always makes progress, and nothing received is lost:
//!
//! ```text
//! loop {
//!     let data = wait_for(socket readable, or the instant from conn.poll_timeout());
//!     let now = clock();
//!     match data {
//!         Readable(mut input) => while !input.is_empty() {
//!             let used = conn.handle_input(now, input);
//!             input = &input[used..];
//!             drain(&mut conn, now);              // steps 1 and 2
//!         },
//!         Eof | Error          => conn.handle_close(),
//!         TimerFired           => conn.handle_timeout(now),
//!     }
//!     drain(&mut conn, now);
//!     if conn.is_closed() && conn.pending_transmit() == 0 { break; } // then close the socket
//! }
//!
//! fn drain(conn, now) {
//!     loop {
//!         while let n @ 1.. = conn.poll_transmit(now, &mut buf) { socket.write_all(&buf[..n]) }
//!         let Some(event) = conn.poll_event() else { break };
//!         react(event);                          // may call conn.open/send/reply/...
//!     }
//! }
//! ```
//!
//! A host that moves large batches can skip two copies: [`transmit_ready`] lends the output
//! queue for step 1 (then [`transmit_done`]), and [`handle_input_lent`] hands out received
//! payloads where they lie in the input instead of copying them into the connection
//! (`dmsg bench` in `dmsg-std` drives links this way).
//!
//! [`transmit_ready`]: Connection::transmit_ready
//! [`transmit_done`]: Connection::transmit_done
//! [`handle_input_lent`]: Connection::handle_input_lent
//!
//! The same loop, runnable, with two connections wired back to back:
//!
//! ```
//! use dmsg_core::link::{Connection, Event, LinkConfig, Outgoing};
//! use dmsg_core::time::Instant;
//! use dmsg_core::wire::{Command, Flags};
//!
//! type Link = Connection<{ 8 * 64 + 1024 }, 1024, 4096, 8>;
//!
//! /// Steps 1 and 2 of the contract for `conn`, with `wire` standing for its socket. A
//! /// server's reaction is built in: answer every transaction with "ok" and close it.
//! fn drain(conn: &mut Link, now: Instant, wire: &mut Vec<u8>, log: &mut Vec<String>) {
//!     let mut buf = [0u8; 256];
//!     loop {
//!         loop {
//!             let n = conn.poll_transmit(now, &mut buf);
//!             if n == 0 { break; }
//!             wire.extend_from_slice(&buf[..n]);
//!         }
//!         let mut answer = None;
//!         match conn.poll_event() {
//!             None => break,
//!             Some(Event::Opened { txn, msg }) => {
//!                 log.push(format!("opened {} {:?}", msg.command(), msg.aux));
//!                 answer = Some(txn);
//!             }
//!             Some(Event::Message { msg, .. }) => log.push(format!("reply {:?}", msg.aux)),
//!             Some(Event::Closed { error, .. }) => log.push(format!("closed error={error}")),
//!             Some(_) => {}
//!         }
//!         if let Some(txn) = answer {
//!             let ok = Outgoing::new(Command::DbgShell).with_aux(b"ok");
//!             conn.send(now, txn, &ok, Flags::DELETE).unwrap();
//!         }
//!     }
//! }
//!
//! /// Feeds everything in `input` to `conn`, following the contract.
//! fn feed(conn: &mut Link, now: Instant, input: &mut Vec<u8>, wire: &mut Vec<u8>, log: &mut Vec<String>) {
//!     let mut rest = &input[..];
//!     while !rest.is_empty() {
//!         let used = conn.handle_input(now, rest);
//!         rest = &rest[used..];
//!         drain(conn, now, wire, log);
//!     }
//!     input.clear();
//! }
//!
//! let now = Instant::ZERO;
//! let (mut a, mut b) = (
//!     Link::new(now, &LinkConfig::default(), Default::default()).unwrap(),
//!     Link::new(now, &LinkConfig::default(), Default::default()).unwrap(),
//! );
//! let (mut a_to_b, mut b_to_a, mut log) = (Vec::new(), Vec::new(), Vec::new());
//! drain(&mut a, now, &mut a_to_b, &mut log); // each side's LNK_CONN
//! drain(&mut b, now, &mut b_to_a, &mut log);
//!
//! let req = Outgoing::new(Command::DbgShell).with_aux(b"tree\0");
//! let txn = a.open(now, &req, Flags::DELETE, None).unwrap(); // CREATE|DELETE: one-frame request
//! for _ in 0..3 {
//!     drain(&mut a, now, &mut a_to_b, &mut log);
//!     feed(&mut b, now, &mut a_to_b, &mut b_to_a, &mut log);
//!     feed(&mut a, now, &mut b_to_a, &mut a_to_b, &mut log);
//! }
//! assert!(log.contains(&"opened DBG_SHELL [116, 114, 101, 101, 0]".to_string()));
//! assert!(log.contains(&"reply [111, 107]".to_string()));
//! assert_eq!(log.iter().filter(|l| l.starts_with("closed")).count(), 2); // once per side
//! assert_eq!(a.txn_state(txn), None);
//! assert_eq!(a.stats().violations.total() + b.stats().violations.total(), 0);
//! ```
//!
//! # Memory
//!
//! A `Connection<RX, AUX, TX, TXNS, C, S>` is one plain value (no pointers, `Clone + Eq + Hash`),
//! so a model checker can copy and compare it, and a host can `Box` it. Its size is about
//! `RX + AUX + TX + 2 * TXNS * 44 + 1.7 KiB` bytes (64-bit target):
//!
//! | parameter | what it bounds | cost |
//! |---|---|---|
//! | `RX` | decoder storage: the largest frame received | `RX` bytes; at least `align64(AUX) + 512` (8-block headers, e.g. LNK_VOLCONF); `align64(AUX) + 2048` accepts every header size |
//! | `AUX` | largest aux payload accepted (larger: the link dies with a `FIELD` decode error) | `AUX` bytes (the event buffer) |
//! | `TX` | output queue, encoded bytes | `TX` bytes; the largest frame the application can send is `TX - 128` |
//! | `TXNS` | open transactions per table (ours and theirs each) | 44 bytes per entry (40 plus 4 of msgid index), two tables |
//! | `C` | the CRC-32C implementation | zero-sized; tables live in flash |
//! | `S` | storage for the reliable session: [`NoSession`] (default) or [`Reliable`] | 0, or the session's window plus about 0.7 KiB ([`reliable`]) |
//!
//! The fixed part (about 1.7 KiB) holds the last received frame's parsed extended header
//! (368 bytes) and, for commands without a structure, its raw extended header (448, see
//! [`Received::ext`]), the peer's LNK_CONN (200), the counters (216), the decoder's and
//! encoder's state, the remembered refusals and the timers. [`McuConnection`] (1 KiB aux, 8
//! transactions) is 7,064 bytes; [`HostConnection`] (64 KiB aux, 256 transactions) 292,568
//! bytes (both measured on x86_64; the `link_pair` test `mcu_config_is_small` prints them).

mod cmd;
pub mod config;
mod error;
pub mod event;
pub(crate) mod index;
#[cfg(test)]
mod lent_tests;
mod outq;
pub mod reliable;
mod rx;
mod stats;
pub mod txn;

pub use config::{Extensions, LinkConfig, SessionOffer};
pub use error::{ConfigError, SendError};
pub use event::{CloseReason, Event, Received};
pub use outq::CTL_RESERVE;
pub use reliable::{
    classify_stream, NoSession, ReconnectError, Reliable, ReliableConnection,
    ReliableHostConnection, ReliableMcuConnection, ReliableStats, SessionSlot, StreamStart,
};
pub use stats::{LinkStats, Violations};
pub use txn::{Side, TxnEnd, TxnId, TxnState};

use crate::crc::{Crc32c, DefaultCrc, SoftCrc32c1};
use crate::decode::{Decoder, DecoderConfig};
use crate::encode::Encoder;
use crate::time::{Duration, Instant};
use crate::wire::body::ConnRepr;
use crate::wire::{align64, Body, Cmd, Command, Flags, HeaderRepr, MsgId, AUX_MAX, HDR_MAX_BLOCKS};

use event::{Notice, Notices};
use outq::OutQueue;
use txn::{Actor, Step, Table, Tombstones};

/// A link for a small MCU leaf: 1 KiB aux, 8-block headers, 2 KiB output queue, 8
/// transactions per table, the 1 KiB-table CRC. 7,064 bytes.
pub type McuConnection = Connection<{ 8 * 64 + 1024 }, 1024, 2048, 8, SoftCrc32c1>;

/// A link for a host: 64 KiB aux, every header size, room for two maximal frames in the
/// output queue, 256 transactions per table. 292,568 bytes: `Box` it.
pub type HostConnection =
    Connection<{ 32 * 64 + 65536 }, 65536, { 2 * (32 * 64 + 65536) }, 256, DefaultCrc>;

// The aliases are valid on every target, and the MCU one stays well within its budget.
const _: () = McuConnection::LAYOUT;
const _: () = HostConnection::LAYOUT;
const _: () = assert!(core::mem::size_of::<McuConnection>() < 7 * 1024);

/// Where a link is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkState {
    /// Up (from construction on).
    Open,
    /// A clean shutdown is under way: no new transactions; open ones run to their end.
    Closing,
    /// Closed; only queued bytes (a clean shutdown's last DELETEs) may still come out.
    Closed,
}

/// A frame to send: command, body, aux data and the `error` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The command.
    pub command: Command,
    /// Its extended header ([`Body::None`] for commands without a structure).
    pub body: &'a Body,
    /// Aux data.
    pub aux: &'a [u8],
    /// The `error` header field (the result, in answers).
    pub error: u32,
    /// Raw extended-header bytes after the 64-byte base header, for a command this crate
    /// has no structure for (a frame relayed opaquely, see [`Received::ext`]). Empty for
    /// every known command; when non-empty, `body` must be [`Body::None`] and the header
    /// size is `1 + ceil(ext.len() / 64)` blocks.
    pub ext: &'a [u8],
}

static NO_BODY: Body = Body::None;

impl<'a> Outgoing<'a> {
    /// `command` with no body, no aux data and error 0.
    pub fn new(command: Command) -> Outgoing<'a> {
        Outgoing {
            command,
            body: &NO_BODY,
            aux: &[],
            error: 0,
            ext: &[],
        }
    }

    /// With this extended header.
    pub fn with_body(self, body: &'a Body) -> Outgoing<'a> {
        Outgoing { body, ..self }
    }

    /// With this aux data.
    pub fn with_aux(self, aux: &'a [u8]) -> Outgoing<'a> {
        Outgoing { aux, ..self }
    }

    /// With this `error` field.
    pub fn with_error(self, error: u32) -> Outgoing<'a> {
        Outgoing { error, ..self }
    }

    /// With these raw extended-header bytes (after the base header; see [`Outgoing::ext`]).
    pub fn with_ext(self, ext: &'a [u8]) -> Outgoing<'a> {
        Outgoing { ext, ..self }
    }

    /// The frame received in `msg`, to be sent on again (relayed): same command, body,
    /// opaque extended header, aux data and `error`.
    pub fn relay_of(msg: &Received<'a>) -> Outgoing<'a> {
        Outgoing {
            command: msg.command(),
            body: msg.body,
            aux: msg.aux,
            error: msg.error(),
            ext: msg.ext,
        }
    }
}

/// Largest opaque extended header (bytes after the base header) a connection keeps for a
/// received frame of a command it has no structure for: 7 blocks, so headers of up to 8
/// blocks can be relayed unchanged. See [`Received::ext`].
pub const OPAQUE_EXT_MAX: usize = 7 * 64;

/// Our or the peer's LNK_CONN transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnTxn {
    msgid: MsgId,
    state: TxnState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Open,
    Closing { initiator: Side, deadline: Instant },
    Closed { reason: CloseReason, reported: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RxKind {
    Opened(TxnId),
    Message(TxnId),
    OneWay,
}

/// The received frame waiting to be reported (its body and aux live beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RxEvent {
    kind: RxKind,
    header: HeaderRepr,
}

/// One DMSG link. See the [module docs](self) for the drive contract and memory costs.
///
/// - `RX`: decoder storage in bytes (at least `align64(AUX) + 512`).
/// - `AUX`: largest aux payload received, in bytes (at most 1 MiB).
/// - `TX`: output queue in bytes (at least 640).
/// - `TXNS`: open transactions per table (ours and theirs).
/// - `C`: the CRC-32C implementation.
/// - `S`: storage for the reliable session: [`NoSession`] (zero bytes, plain DMSG only) or
///   [`Reliable`] (see [`ReliableConnection`] and the [`reliable`] module).
///
/// Wrong sizes are compile-time errors (when `new` is instantiated).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Connection<
    const RX: usize,
    const AUX: usize,
    const TX: usize,
    const TXNS: usize,
    C = DefaultCrc,
    S = NoSession,
> {
    decoder: Decoder<[u8; RX], C>,
    crc: C,
    encoder: Encoder,
    out: OutQueue<TX>,
    ours: Table<TXNS>,
    theirs: Table<TXNS>,
    tombstones: Tombstones,
    our_conn: ConnTxn,
    peer_conn: Option<ConnTxn>,
    peer_conn_repr: ConnRepr,
    offer: Extensions,
    extensions: Option<Extensions>,
    phase: Phase,
    notices: Notices,
    rx: Option<RxEvent>,
    rx_delivered: bool,
    rx_body: Body,
    aux: [u8; AUX],
    aux_len: usize,
    /// The pending frame's aux data was not copied into `aux`: it lies at this offset of
    /// the input lent through [`LentInput`] (which copies it in if it is dropped first).
    aux_lent: Option<usize>,
    rx_ext: [u8; OPAQUE_EXT_MAX],
    rx_ext_len: usize,
    next_msgid: u64,
    next_serial: u32,
    last_rx: Instant,
    last_tx: Instant,
    ping_interval: Duration,
    idle_timeout: Duration,
    close_timeout: Duration,
    max_violations: u64,
    stats: LinkStats,
    rel: S,
}

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S>
    Connection<RX, AUX, TX, TXNS, C, S>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    /// Compile-time checks of the sizes.
    const LAYOUT: () = {
        assert!(AUX <= AUX_MAX, "AUX exceeds the protocol's 1 MiB");
        assert!(
            RX >= align64(AUX) + 8 * 64,
            "RX must hold an 8-block header plus AUX rounded up to 64"
        );
        assert!(
            TX >= 6 * 64 + CTL_RESERVE + 128,
            "TX must hold our LNK_CONN, the control reserve and a small frame"
        );
        assert!(
            TXNS >= 1 && TXNS <= u16::MAX as usize,
            "TXNS must be 1..=65535"
        );
    };

    /// Largest extended header accepted, in blocks.
    const HEADER_BLOCKS: u8 = {
        let b = RX.saturating_sub(align64(AUX)) / 64;
        if b > HDR_MAX_BLOCKS as usize {
            HDR_MAX_BLOCKS
        } else {
            b as u8
        }
    };

    /// Largest frame (header plus aligned aux) the application can queue.
    pub const MAX_FRAME: usize = TX - CTL_RESERVE;

    /// A connection on a freshly connected transport. Our LNK_CONN (CREATE, circuit 0) is
    /// queued at once, so it is the first frame out, and [`Event::Connected`] is the first
    /// event.
    pub fn new(now: Instant, config: &LinkConfig, crc: C) -> Result<Self, ConfigError> {
        let () = Self::LAYOUT;
        if config.conn_msgid.0 == 0 {
            return Err(ConfigError::ZeroConnMsgId);
        }
        let dcfg = DecoderConfig {
            max_aux_bytes: AUX,
            max_header_blocks: Self::HEADER_BLOCKS,
            check_sequence: config.check_sequence,
        };
        let decoder = Decoder::new([0u8; RX], dcfg, crc.clone()).map_err(ConfigError::Decoder)?;
        let rel = S::new(config, &crc)?;
        let (session_offer, session_id) = rel.conn_fields();
        let offer = Extensions::from_bits_truncate(config.offer.union(session_offer).bits());
        let mut conn = Connection {
            decoder,
            crc,
            encoder: Encoder::new(config.salt_seed),
            out: OutQueue::new(),
            ours: Table::new(),
            theirs: Table::new(),
            tombstones: Tombstones::new(),
            our_conn: ConnTxn {
                msgid: config.conn_msgid,
                state: TxnState::NEW,
            },
            peer_conn: None,
            peer_conn_repr: ConnRepr::default(),
            offer,
            extensions: None,
            phase: Phase::Open,
            notices: Notices::new(),
            rx: None,
            rx_delivered: false,
            rx_body: Body::None,
            aux: [0u8; AUX],
            aux_len: 0,
            aux_lent: None,
            rx_ext: [0u8; OPAQUE_EXT_MAX],
            rx_ext_len: 0,
            next_msgid: config.msgid_base,
            next_serial: 0,
            last_rx: now,
            last_tx: now,
            ping_interval: config.ping_interval.max(Duration::from_millis(1)),
            idle_timeout: config.idle_timeout,
            close_timeout: config.close_timeout,
            max_violations: config.max_violations,
            stats: LinkStats::default(),
            rel,
        };
        let body = ConnRepr {
            ext_offer: offer.bits(),
            ext_param: 0,
            session_id,
            ..config.conn
        };
        let hdr = HeaderRepr::new(Cmd::new(Command::LnkConn, Flags::CREATE), config.conn_msgid);
        conn.out
            .push(&mut conn.encoder, &conn.crc, &hdr, &Body::Conn(body), &[])
            .map_err(ConfigError::Encode)?;
        conn.stats.frames_out += 1;
        conn.stats.ctl_out += 1;
        if let Step::Accept(s) = txn::step(TxnState::NEW, Actor::Local, Flags::CREATE) {
            conn.our_conn.state = s;
        }
        let queued = conn.notices.push(Notice::Connected);
        debug_assert!(queued);
        Ok(conn)
    }

    // ----------------------------------------------------------------------------------
    // Inputs

    /// Feeds received bytes; returns how many were used. Feed the rest again after draining
    /// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event) (see the
    /// drive contract). Returns 0 while an event is waiting to be polled or the output queue
    /// lacks room for answers. After the link closed, all input is discarded (and counted).
    #[must_use = "unused input must be fed again after draining transmit and events"]
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        self.input_frames(now, input, false)
    }

    /// [`handle_input`](Self::handle_input) with the input lent to the events it produces:
    /// the aux data of a frame that lies whole in `input` is handed out from there instead
    /// of being copied into the connection. Take the events from the returned
    /// [`LentInput`] (then commands through [`LentInput::conn`], or after dropping it); its
    /// [`used`](LentInput::used) is what `handle_input` would return. Dropping it with the
    /// frame's event not taken copies the aux data in, so nothing is lost. With the
    /// reliable session running, aux data is copied as by `handle_input`.
    ///
    /// A host reading large chunks saves one copy of every payload byte it receives.
    ///
    /// ```
    /// use dmsg_core::link::{Event, HostConnection, LinkConfig, Outgoing};
    /// use dmsg_core::time::Instant;
    /// use dmsg_core::wire::Command;
    ///
    /// let now = Instant::ZERO;
    /// let new = || Box::new(HostConnection::new(now, &LinkConfig::default(), Default::default()).unwrap());
    /// let (mut a, mut b) = (new(), new());
    /// a.send_one_way(now, &Outgoing::new(Command::DbgShell).with_aux(b"hello"), false, None).unwrap();
    /// let mut wire = vec![0u8; 4096];
    /// let n = a.poll_transmit(now, &mut wire); // A's LNK_CONN, then the message
    ///
    /// let mut input = &wire[..n];
    /// let mut got = Vec::new();
    /// while !input.is_empty() {
    ///     let mut lent = b.handle_input_lent(now, input);
    ///     let used = lent.used();
    ///     while let Some(ev) = lent.poll_event() {
    ///         if let Event::OneWay { msg } = ev {
    ///             got.extend_from_slice(msg.aux); // borrowed from `input`
    ///         }
    ///     }
    ///     drop(lent);
    ///     input = &input[used..];
    ///     while b.poll_transmit(now, &mut [0u8; 512]) > 0 {} // B's answers (dropped here)
    /// }
    /// assert_eq!(got, b"hello");
    /// ```
    pub fn handle_input_lent<'c, 'i>(
        &'c mut self,
        now: Instant,
        input: &'i [u8],
    ) -> LentInput<'c, 'i, RX, AUX, TX, TXNS, C, S> {
        let used = self.input_frames(now, input, true);
        LentInput {
            conn: self,
            input,
            used,
        }
    }

    fn input_frames(&mut self, now: Instant, input: &[u8], lend: bool) -> usize {
        if self.is_closed() {
            self.stats.rx_bytes_discarded += input.len() as u64;
            return input.len();
        }
        if self.rel.in_session() {
            return S::input(self, now, input);
        }
        self.release_delivered();
        let mut used = 0;
        // The frame's parsed body. Most data frames have none: only the tag is written, and
        // the 368-byte enum is passed on by reference, never moved.
        while used < input.len() && self.ready_for_input() {
            let (n, frame) = match self.decoder.decode(&input[used..]) {
                Ok(out) => {
                    let aux_buf = &mut self.aux;
                    let aux_lent = &mut self.aux_lent;
                    let ext_buf = &mut self.rx_ext;
                    let ext_len = &mut self.rx_ext_len;
                    let body_buf = &mut self.rx_body;
                    let bad_bodies = &mut self.stats.bad_bodies;
                    let frame = out.frame.map(|f| {
                        let aux = f.aux();
                        *aux_lent = if lend {
                            offset_within(input, aux)
                        } else {
                            None
                        };
                        let copied = match (*aux_lent, aux_buf.get_mut(..aux.len())) {
                            (Some(_), _) => aux.len(),
                            (None, Some(dst)) => {
                                dst.copy_from_slice(aux);
                                aux.len()
                            }
                            (None, None) => 0, // the decoder limits aux to AUX bytes
                        };
                        *ext_len = copy_opaque_ext(&f, ext_buf);
                        store_body(&f, body_buf, bad_bodies);
                        (f.repr(), copied)
                    });
                    (out.consumed, frame)
                }
                Err(e) => {
                    self.stats.rx_bytes_discarded += (input.len() - used) as u64;
                    self.die(CloseReason::Decode(e));
                    return input.len();
                }
            };
            used += n;
            self.stats.bytes_in += n as u64;
            self.last_rx = now;
            match frame {
                Some((hdr, aux_len)) => {
                    if self.rel.holding() {
                        S::first_frame(self, now, &hdr);
                    }
                    self.on_frame(now, hdr, aux_len);
                    if self.rx.is_none() {
                        // Lent aux belongs only to a frame that became the pending event;
                        // the next frame may take another path (the session's, which
                        // copies).
                        self.aux_lent = None;
                    }
                }
                None if n == 0 => break,
                None => {}
            }
            if self.is_closed() {
                self.stats.rx_bytes_discarded += (input.len() - used) as u64;
                return input.len();
            }
            if self.rel.in_session() {
                // The peer's LNK_CONN started the session: the rest is sequenced.
                return used + S::input(self, now, &input[used..]);
            }
        }
        used
    }

    /// Advances the timers: sends a keepalive LNK_PING when nothing was sent for
    /// `ping_interval` (and the output queue is empty), declares the link dead after
    /// `idle_timeout` without input, and ends a clean shutdown that overran `close_timeout`.
    /// Calling it early, late or repeatedly is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if self.rel.in_session() {
            return S::timeout(self, now);
        }
        if now >= self.last_rx + self.idle_timeout {
            self.die(CloseReason::KeepaliveTimeout);
            return;
        }
        if let Phase::Closing { deadline, .. } = self.phase {
            if now >= deadline {
                self.die(CloseReason::CloseTimeout);
                return;
            }
        }
        if self.out.is_empty() && !self.rel.holding() && now >= self.last_tx + self.ping_interval {
            self.send_ctl(now, Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0), 0);
            self.stats.pings_out += 1;
        }
    }

    /// The transport is gone (EOF, reset, or the caller dropped it). Every open transaction
    /// is closed with LOSTLINK and the link reports [`CloseReason::TransportClosed`], unless a
    /// clean shutdown already completed. With a running reliable session the link is only
    /// suspended instead ([`Event::Suspended`]; see [`reliable`]).
    pub fn handle_close(&mut self) {
        if self.rel.in_session() {
            return S::transport_lost(self, CloseReason::TransportClosed);
        }
        self.die(CloseReason::TransportClosed);
    }

    // ----------------------------------------------------------------------------------
    // Outputs

    /// Copies queued bytes into `out`; returns how many (0 when nothing is queued). Call until
    /// it returns 0 after every input.
    #[must_use = "the returned bytes must be written to the transport"]
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        if self.rel.in_session() || self.rel.holding() {
            return S::transmit(self, now, out);
        }
        let n = self.out.pop(out);
        if n > 0 {
            self.stats.bytes_out += n as u64;
            self.last_tx = now;
        }
        n
    }

    /// The queued output, lent instead of copied: the bytes [`poll_transmit`] would return,
    /// to be written straight from the output queue. Call [`transmit_done`] with how many
    /// were written. `None` while the reliable session runs (or waits for the peer's
    /// LNK_CONN): its frames live in the retransmit window; use [`poll_transmit`] then.
    ///
    /// A host writing large batches saves one copy of every byte it sends this way.
    ///
    /// ```
    /// use dmsg_core::link::{HostConnection, LinkConfig};
    /// use dmsg_core::time::Instant;
    ///
    /// let now = Instant::ZERO;
    /// let mut conn = Box::new(HostConnection::new(now, &LinkConfig::default(), Default::default()).unwrap());
    /// let mut socket = Vec::new(); // stands for the transport
    /// if let Some(bytes) = conn.transmit_ready() {
    ///     socket.extend_from_slice(bytes); // our LNK_CONN
    ///     let n = bytes.len();
    ///     conn.transmit_done(now, n);
    /// }
    /// assert_eq!(socket.len(), 6 * 64); // our LNK_CONN: a 6-block header
    /// assert_eq!(conn.pending_transmit(), 0);
    /// ```
    ///
    /// [`poll_transmit`]: Self::poll_transmit
    /// [`transmit_done`]: Self::transmit_done
    pub fn transmit_ready(&self) -> Option<&[u8]> {
        if self.rel.in_session() || self.rel.holding() {
            return None;
        }
        Some(self.out.waiting())
    }

    /// Marks the first `n` bytes of [`transmit_ready`](Self::transmit_ready) as written:
    /// they leave the queue, as if [`poll_transmit`](Self::poll_transmit) had returned them.
    /// `n` is capped at what is queued; no effect while the session runs (see
    /// `transmit_ready`).
    pub fn transmit_done(&mut self, now: Instant, n: usize) {
        if self.rel.in_session() || self.rel.holding() {
            return;
        }
        let n = self.out.consume(n);
        if n > 0 {
            self.stats.bytes_out += n as u64;
            self.last_tx = now;
        }
    }

    /// The next event, borrowing the connection until the next call (aux data stays in an
    /// internal buffer until then). Call until `None` after every input.
    #[must_use = "events must be handled"]
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        debug_assert!(
            self.aux_lent.is_none(),
            "a LentInput copies its aux in when dropped"
        );
        self.poll_event_from(&[])
    }

    /// [`poll_event`](Self::poll_event), with the pending frame's aux data taken from
    /// `lent` when it was lent (see [`handle_input_lent`](Self::handle_input_lent)).
    fn poll_event_from<'a>(&'a mut self, lent: &'a [u8]) -> Option<Event<'a>> {
        self.release_delivered();
        if let Some(n) = self.notices.pop() {
            return Some(self.notice_event(n));
        }
        if let Some(ev) = self.rel.take_event() {
            return Some(ev);
        }
        if let Some(rx) = self.rx {
            self.rx_delivered = true;
            return Some(self.rx_event(rx, lent));
        }
        for side in [Side::Ours, Side::Theirs] {
            if let Some(slot) = self.table_mut(side).take_ended() {
                return Some(closed_event(side, &slot));
            }
        }
        if let Phase::Closed {
            reason,
            reported: false,
        } = self.phase
        {
            self.phase = Phase::Closed {
                reason,
                reported: true,
            };
            return Some(Event::LinkClosed { reason });
        }
        None
    }

    /// The event the next [`poll_event`](Self::poll_event) would return, without taking
    /// it: the connection is unchanged, and input stays gated while it waits. A layer above
    /// uses this to leave a frame pending until it can act on it (for example until the
    /// link it relays the frame to has room), which pushes back on the peer.
    #[must_use]
    pub fn peek_event(&self) -> Option<Event<'_>> {
        if let Some(n) = self.notices.peek() {
            return Some(self.notice_event(n));
        }
        if let Some(ev) = self.rel.peek_event() {
            return Some(ev);
        }
        if let Some(rx) = self.rx {
            if !self.rx_delivered {
                debug_assert!(self.aux_lent.is_none());
                return Some(self.rx_event(rx, &[]));
            }
        }
        for side in [Side::Ours, Side::Theirs] {
            if let Some(slot) = self.table(side).first_ended() {
                return Some(closed_event(side, slot));
            }
        }
        match self.phase {
            Phase::Closed {
                reason,
                reported: false,
            } => Some(Event::LinkClosed { reason }),
            _ => None,
        }
    }

    fn notice_event(&self, n: Notice) -> Event<'_> {
        match n {
            Notice::Connected => Event::Connected,
            Notice::PeerConn => Event::PeerConn {
                conn: &self.peer_conn_repr,
                extensions: self.extensions.unwrap_or_default(),
            },
            Notice::ConnAnswered(error) => Event::ConnAnswered { error },
        }
    }

    /// The event of the pending frame; its aux data from `lent` if it was lent.
    fn rx_event<'a>(&'a self, rx: RxEvent, lent: &'a [u8]) -> Event<'a> {
        let aux = match self.aux_lent {
            Some(at) => lent.get(at..at + self.aux_len).unwrap_or(&[]),
            None => self.aux.get(..self.aux_len).unwrap_or(&[]),
        };
        let msg = Received {
            header: rx.header,
            body: &self.rx_body,
            aux,
            ext: self.rx_ext.get(..self.rx_ext_len).unwrap_or(&[]),
        };
        match rx.kind {
            RxKind::Opened(txn) => Event::Opened { txn, msg },
            RxKind::Message(txn) => Event::Message { txn, msg },
            RxKind::OneWay => Event::OneWay { msg },
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next; `None` once the
    /// link is closed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = match self.phase {
            Phase::Closed { .. } => return None,
            _ if self.rel.in_session() => return S::timeout_at(self),
            _ => self.last_rx + self.idle_timeout,
        };
        if self.out.is_empty() && !self.rel.holding() {
            t = t.min(self.last_tx + self.ping_interval);
        }
        if let Phase::Closing { deadline, .. } = self.phase {
            t = t.min(deadline);
        }
        Some(t)
    }

    // ----------------------------------------------------------------------------------
    // Queries

    /// Where the link is in its life.
    pub fn state(&self) -> LinkState {
        match self.phase {
            Phase::Open => LinkState::Open,
            Phase::Closing { .. } => LinkState::Closing,
            Phase::Closed { .. } => LinkState::Closed,
        }
    }

    /// True once the link is closed (commands fail, input is discarded).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed { .. })
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Extensions on for this link; `None` until the peer's LNK_CONN arrived.
    pub fn extensions(&self) -> Option<Extensions> {
        self.extensions
    }

    /// The peer's LNK_CONN, once received.
    pub fn peer_conn(&self) -> Option<&ConnRepr> {
        self.peer_conn.map(|_| &self.peer_conn_repr)
    }

    /// msgid of our LNK_CONN transaction.
    pub fn conn_msgid(&self) -> MsgId {
        self.our_conn.msgid
    }

    /// Open (not finished) transactions opened by `side`, LNK_CONN not included.
    pub fn open_transactions(&self, side: Side) -> usize {
        self.table(side).live()
    }

    /// Table entries in use by `side`'s transactions: open ones plus finished ones whose
    /// [`Event::Closed`] was not polled yet. Never more than `TXNS`.
    pub fn table_entries(&self, side: Side) -> usize {
        self.table(side).occupied()
    }

    /// State of an open transaction; `None` once finished or for a stale handle.
    pub fn txn_state(&self, txn: TxnId) -> Option<TxnState> {
        let t = self.table(txn.side());
        t.find_handle(txn.msgid(), txn.serial())
            .and_then(|i| t.get(i))
            .map(|s| s.state)
    }

    /// The handle of the open transaction `msgid` in `side`'s table (for example a LNK_SPAN
    /// the peer opened, found by the msgid a frame names as its circuit).
    pub fn txn_handle(&self, side: Side, msgid: MsgId) -> Option<TxnId> {
        let t = self.table(side);
        t.find_live(msgid)
            .and_then(|i| t.get(i))
            .map(|s| TxnId::new(side, s.msgid, s.serial))
    }

    /// Stores `tag`, an opaque byte of the layer above (the node marks which transactions
    /// it runs itself), with an open transaction, or with a finished one whose
    /// [`Event::Closed`] was not polled yet. Every transaction starts with tag 0. Returns
    /// false for a stale handle.
    pub fn set_txn_tag(&mut self, txn: TxnId, tag: u8) -> bool {
        let t = self.table_mut(txn.side());
        match t.find_any(txn.msgid(), txn.serial()) {
            Some(i) => match t.get_mut(i) {
                Some(s) => {
                    s.tag = tag;
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// The tag stored with [`set_txn_tag`](Self::set_txn_tag): for an open transaction, or a
    /// finished one whose [`Event::Closed`] was not polled yet (so it can be read after
    /// [`peek_event`](Self::peek_event) shows that event).
    pub fn txn_tag(&self, txn: TxnId) -> Option<u8> {
        let t = self.table(txn.side());
        t.find_any(txn.msgid(), txn.serial())
            .and_then(|i| t.get(i))
            .map(|s| s.tag)
    }

    /// The circuit field an open transaction carries (0 when it is not stacked).
    pub fn txn_circuit(&self, txn: TxnId) -> Option<crate::wire::Circuit> {
        let t = self.table(txn.side());
        t.find_handle(txn.msgid(), txn.serial())
            .and_then(|i| t.get(i))
            .map(|s| s.circuit)
    }

    /// Bytes queued for [`poll_transmit`](Self::poll_transmit) (with the reliable session:
    /// what it would write now).
    pub fn pending_transmit(&self) -> usize {
        S::pending(self)
    }

    /// Bytes the application can queue right now (the output queue's free space minus the
    /// [`CTL_RESERVE`] kept for the connection's own answers; with the reliable session, the
    /// largest frame its retransmit window takes now while keeping that reserve).
    pub fn send_capacity(&self) -> usize {
        if self.rel.in_session() {
            return S::capacity(self);
        }
        self.out
            .free()
            .saturating_sub(CTL_RESERVE)
            .min(self.rel.staging_room())
    }

    // ----------------------------------------------------------------------------------
    // Internals shared by the receive path and the commands

    fn table(&self, side: Side) -> &Table<TXNS> {
        match side {
            Side::Ours => &self.ours,
            Side::Theirs => &self.theirs,
        }
    }

    fn table_mut(&mut self, side: Side) -> &mut Table<TXNS> {
        match side {
            Side::Ours => &mut self.ours,
            Side::Theirs => &mut self.theirs,
        }
    }

    /// Forgets the frame event handed out by the previous `poll_event`.
    fn release_delivered(&mut self) {
        if self.rx_delivered {
            self.rx = None;
            self.rx_delivered = false;
            self.aux_len = 0;
            self.aux_lent = None;
            self.rx_ext_len = 0;
        }
    }

    /// Copies lent aux data (at its offset in `lent`) into the connection's own buffer.
    fn take_in_lent_aux(&mut self, lent: &[u8]) {
        if let Some(at) = self.aux_lent.take() {
            let n = self.aux_len;
            match (lent.get(at..at + n), self.aux.get_mut(..n)) {
                (Some(src), Some(dst)) => dst.copy_from_slice(src),
                _ => {
                    // Unreachable: the offset was taken from this very input.
                    debug_assert!(false, "lent aux outside its input");
                    self.aux_len = 0;
                }
            }
        }
    }

    fn has_pending_event(&self) -> bool {
        !self.notices.is_empty()
            || self.rel.has_event()
            || (self.rx.is_some() && !self.rx_delivered)
            || self.ours.has_ended()
            || self.theirs.has_ended()
    }

    /// Input is read one frame at a time, and only when that frame's event and answers
    /// are sure to fit.
    fn ready_for_input(&self) -> bool {
        !self.has_pending_event() && self.out.free() >= CTL_RESERVE
    }

    fn take_serial(&mut self) -> u32 {
        let s = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        s
    }

    /// Queues a frame the connection sends by itself (no body, no aux). The reserve makes
    /// room certain; a failure would be a bug and is counted.
    fn send_ctl(&mut self, now: Instant, cmd: Cmd, msgid: MsgId, error: u32) {
        if self.is_closed() {
            // A frame that killed the link (violation budget) gets no answer.
            return;
        }
        let hdr = HeaderRepr {
            error,
            ..HeaderRepr::new(cmd, msgid)
        };
        if self.rel.in_session() {
            return S::push_ctl(self, now, &hdr);
        }
        match self
            .out
            .push(&mut self.encoder, &self.crc, &hdr, &Body::None, &[])
        {
            Ok(n) => {
                self.stats.frames_out += 1;
                self.stats.ctl_out += 1;
                self.last_tx = now;
                self.rel.note_queued(n);
            }
            Err(_) => {
                debug_assert!(false, "control reserve exhausted");
                self.stats.ctl_dropped += 1;
            }
        }
    }

    /// Ends the link abnormally: every live transaction is lost (reported with LOSTLINK) and
    /// queued bytes are dropped. No effect once closed.
    fn die(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        S::on_die(self);
        self.phase = Phase::Closed {
            reason,
            reported: false,
        };
        self.ours.lose_all();
        self.theirs.lose_all();
        self.stats.tx_bytes_discarded += self.out.clear() as u64;
        debug_assert_eq!(self.ours.live() + self.theirs.live(), 0);
    }

    /// Starts (or continues) a clean shutdown: DELETE every LNK_CONN direction of ours that
    /// is still open. At most two frames.
    fn begin_shutdown(&mut self, now: Instant, initiator: Side) {
        match self.phase {
            Phase::Open => {
                self.phase = Phase::Closing {
                    initiator,
                    deadline: now + self.close_timeout,
                }
            }
            Phase::Closing { .. } => {}
            Phase::Closed { .. } => return,
        }
        self.close_our_conn(now);
        if let Some(mut pc) = self.peer_conn {
            if !pc.state.is_finished() && pc.state.local != txn::Dir::Closed {
                let mut flags = Flags::DELETE | Flags::REPLY | Flags::REVTRANS;
                if pc.state.local == txn::Dir::Idle {
                    flags |= Flags::CREATE;
                }
                self.send_ctl(now, Cmd::new(Command::LnkError, flags), pc.msgid, 0);
                pc.state.local = txn::Dir::Closed;
                self.peer_conn = Some(pc);
            }
        }
        self.check_clean_close();
    }

    /// DELETEs our LNK_CONN direction if it is open (LNK_ERROR|DELETE, as DragonFly does).
    fn close_our_conn(&mut self, now: Instant) {
        if self.our_conn.state.local == txn::Dir::Open {
            let msgid = self.our_conn.msgid;
            self.send_ctl(now, Cmd::new(Command::LnkError, Flags::DELETE), msgid, 0);
            self.our_conn.state.local = txn::Dir::Closed;
        }
    }

    /// Completes a clean shutdown once both LNK_CONNs and every transaction are finished.
    fn check_clean_close(&mut self) {
        let Phase::Closing { initiator, .. } = self.phase else {
            return;
        };
        let conns_done = self.our_conn.state.is_finished()
            && self.peer_conn.is_none_or(|p| p.state.is_finished());
        if conns_done && self.ours.live() == 0 && self.theirs.live() == 0 {
            if self.rel.in_session() && !S::finish_close(self) {
                // The session's FIN handshake completes the close.
                return;
            }
            self.phase = Phase::Closed {
                reason: match initiator {
                    Side::Ours => CloseReason::LocalClose,
                    Side::Theirs => CloseReason::PeerClosed,
                },
                reported: false,
            };
        }
    }
}

/// The [`Event::Closed`] of a finished transaction slot.
fn closed_event(side: Side, slot: &txn::Slot) -> Event<'static> {
    let end = slot.end.unwrap_or(TxnEnd::LinkLost);
    let error = match end {
        TxnEnd::LinkLost => crate::errcode::txn::LOSTLINK,
        TxnEnd::Completed | TxnEnd::Aborted => slot.error,
    };
    Event::Closed {
        txn: TxnId::new(side, slot.msgid, slot.serial),
        error,
        end,
    }
}

/// Parses the body of frame `f` into `dst` (the link's received-body slot, free while input
/// is read), in place: a body is up to a few hundred bytes, and moving it through the receive
/// path by value cost kilobytes of copies on small MCUs. A body that does not parse is
/// counted and stored as [`Body::None`].
fn store_body(f: &crate::decode::Frame<'_>, dst: &mut Body, bad_bodies: &mut u64) {
    match f.body() {
        Ok(b) => *dst = b,
        Err(_) => {
            *bad_bodies += 1;
            *dst = Body::None;
        }
    }
}

/// Copies the extended header after the base header of a frame of a command without a
/// structure into `dst`; returns the length kept (0 for known commands, for 1-block headers
/// and for headers longer than [`OPAQUE_EXT_MAX`] after the base).
fn copy_opaque_ext(f: &crate::decode::Frame<'_>, dst: &mut [u8; OPAQUE_EXT_MAX]) -> usize {
    if f.repr().cmd.command().struct_len().is_some() {
        return 0;
    }
    let ext = f.ext_bytes().get(64..).unwrap_or(&[]);
    match dst.get_mut(..ext.len()) {
        Some(d) => {
            d.copy_from_slice(ext);
            ext.len()
        }
        None => 0,
    }
}

/// The offset of `part` in `whole` when `part` lies inside it (compared by address).
fn offset_within(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = whole.as_ptr().addr();
    let at = part.as_ptr().addr().checked_sub(start)?;
    (at.checked_add(part.len())? <= whole.len()).then_some(at)
}

/// Input lent to the events it produced: see [`Connection::handle_input_lent`].
pub struct LentInput<
    'c,
    'i,
    const RX: usize,
    const AUX: usize,
    const TX: usize,
    const TXNS: usize,
    C,
    S,
> where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    conn: &'c mut Connection<RX, AUX, TX, TXNS, C, S>,
    input: &'i [u8],
    used: usize,
}

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S>
    LentInput<'_, '_, RX, AUX, TX, TXNS, C, S>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    /// Bytes of the input used (feed the rest again after draining, as for
    /// [`Connection::handle_input`]).
    pub fn used(&self) -> usize {
        self.used
    }

    /// The next event, as [`Connection::poll_event`]; a frame's aux data may borrow the
    /// input.
    #[must_use = "events must be handled"]
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.conn.poll_event_from(self.input)
    }

    /// The connection, for commands (the answer to an event). Aux data still lent is copied
    /// in first.
    pub fn conn(&mut self) -> &mut Connection<RX, AUX, TX, TXNS, C, S> {
        self.conn.take_in_lent_aux(self.input);
        self.conn
    }
}

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S> Drop
    for LentInput<'_, '_, RX, AUX, TX, TXNS, C, S>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    fn drop(&mut self) {
        self.conn.take_in_lent_aux(self.input);
    }
}
