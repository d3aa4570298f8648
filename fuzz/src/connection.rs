//! The `connection` target: one `Connection` driven by an arbitrary script of peer frames,
//! raw byte chunks, application commands, time steps and transport loss.
//!
//! Uses only `dmsg_core` and `std` (no `arbitrary`), so `tests/tests/fuzz_connection.rs` can
//! run the very same checks on generated and regression inputs under a plain `cargo test`.
//!
//! Invariants checked after every step, not only "no panic":
//! - every byte the connection sends decodes as a valid DMSG stream (CRCs, salt sequence);
//! - each transaction is reported `Closed` at most once, never after its handle went stale,
//!   and `Opened`/`Message` never name a transaction already closed;
//! - `LinkClosed` is the last event, comes once, and by then every transaction the
//!   application knew about was closed (with LOSTLINK unless it ended normally);
//! - open transactions never exceed the table bound; queued output never exceeds `TX`;
//! - a command refused with an error changes nothing that is observable (no bytes queued).

use std::collections::BTreeSet;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::errcode::txn;
use dmsg_core::link::{Connection, Event, LinkConfig, Outgoing, Side, TxnId};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::SpanRepr;
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};

const TXNS: usize = 4;
const TX: usize = 2048;
type Conn = Connection<{ 8 * 64 + 1024 }, 1024, TX, TXNS>;

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

/// The application's view, checked against what the connection reports.
#[derive(Default)]
struct Model {
    /// Transactions the application knows are live (opened by it, or reported Opened).
    live: BTreeSet<TxnId>,
    /// Transactions reported Closed.
    closed: BTreeSet<TxnId>,
    link_closed: bool,
}

struct Harness {
    conn: Conn,
    peer: Encoder,
    model: Model,
    now: Instant,
    /// Our output, decoded as it is produced.
    out: Decoder<Box<[u8]>, DefaultCrc>,
    pending_input: Vec<u8>,
}

/// Runs one script. Panics (the fuzzer's crash) when an invariant breaks.
pub fn check_connection(data: &[u8]) {
    let now = Instant::from_millis(1);
    let conn = match Conn::new(now, &LinkConfig::default(), DefaultCrc::default()) {
        Ok(c) => c,
        Err(e) => panic!("default config refused: {e:?}"),
    };
    let cfg = DecoderConfig::default();
    let mut h = Harness {
        conn,
        peer: Encoder::new(0x5eed),
        model: Model::default(),
        now,
        out: Decoder::new(
            vec![0u8; cfg.storage_len()].into_boxed_slice(),
            cfg,
            DefaultCrc::default(),
        )
        .expect("decoder config"),
        pending_input: Vec::new(),
    };
    let mut s = Script { data };
    let mut steps = 0;
    while !s.done() && steps < 256 {
        steps += 1;
        h.step(&mut s);
        h.drain();
        h.check_bounds();
    }
    // Finally the transport goes away: everything must end, exactly once.
    h.conn.handle_close();
    h.drain();
    assert!(h.model.link_closed, "no LinkClosed after handle_close");
    assert!(
        h.model.live.is_empty(),
        "transactions left open after link loss: {:?}",
        h.model.live
    );
}

impl Harness {
    fn step(&mut self, s: &mut Script<'_>) {
        match s.byte() % 10 {
            // A well-formed frame from the peer, with msgids from a small set so that
            // collisions, duplicates and stale answers happen.
            0..=3 => {
                let frame = self.peer_frame(s);
                self.pending_input.extend_from_slice(&frame);
                self.feed(s);
            }
            // Raw bytes: usually ends the stream with a decode error.
            4 => {
                let n = s.byte() as usize % 80;
                let raw = s.bytes(n).to_vec();
                self.pending_input.extend_from_slice(&raw);
                self.feed(s);
            }
            5..=7 => self.command(s),
            8 => {
                let ms = u64::from(s.byte()) * 100 + u64::from(s.byte());
                self.now = self.now + Duration::from_millis(ms);
                self.conn.handle_timeout(self.now);
            }
            _ => {
                if s.byte() < 8 {
                    self.conn.handle_close();
                } else {
                    // A spurious timeout must be harmless.
                    self.conn.handle_timeout(self.now);
                }
            }
        }
    }

    fn peer_frame(&mut self, s: &mut Script<'_>) -> Vec<u8> {
        let commands = [
            Command::LnkConn,
            Command::LnkSpan,
            Command::LnkPing,
            Command::LnkError,
            Command::DbgShell,
            Command::BlkRead,
            Command::LnkPad,
        ];
        let command = commands[s.byte() as usize % commands.len()];
        let flags = Flags::from_bits_truncate(u32::from(s.byte()) << 24);
        let msgid = MsgId(u64::from(s.byte() % 6));
        let error = [0, txn::NOSUPP, txn::LOSTLINK, 7][s.byte() as usize % 4];
        let body = match command {
            Command::LnkConn => Body::Conn(Default::default()),
            Command::LnkSpan => Body::Span(SpanRepr::default()),
            Command::BlkRead => Body::BlkIo(Default::default()),
            _ => Body::None,
        };
        let aux_len = s.byte() as usize % 48;
        let aux = s.bytes(aux_len).to_vec();
        let header = HeaderRepr {
            error,
            ..HeaderRepr::new(Cmd::new(command, flags), msgid)
        };
        let mut buf = vec![0u8; 2048 + 64];
        let n = self
            .peer
            .encode(&DefaultCrc::default(), &header, &body, &aux, &mut buf)
            .expect("peer frame encodes");
        buf.truncate(n);
        buf
    }

    /// Feeds pending input in script-chosen chunks, following the drive contract.
    fn feed(&mut self, s: &mut Script<'_>) {
        let chunk = 1 + s.byte() as usize * 3;
        let mut rounds = 0;
        while !self.pending_input.is_empty() && rounds < 10_000 {
            rounds += 1;
            let take = chunk.min(self.pending_input.len());
            let used = self
                .conn
                .handle_input(self.now, &self.pending_input[..take]);
            assert!(used <= take);
            self.pending_input.drain(..used);
            let before = self.pending_input.len();
            self.drain();
            if used == 0 && before == self.pending_input.len() {
                // No progress with events and output drained: the connection must be
                // closed (it ignores input then) or waiting on nothing we can give.
                if self.conn.is_closed() {
                    self.pending_input.clear();
                }
                break;
            }
        }
    }

    fn pick(&self, s: &mut Script<'_>) -> Option<TxnId> {
        if self.model.live.is_empty() && self.model.closed.is_empty() {
            return None;
        }
        let i = s.byte() as usize;
        // Mostly live handles, sometimes stale ones (which must be refused).
        if i % 5 != 0 || self.model.closed.is_empty() {
            self.model
                .live
                .iter()
                .nth(i % self.model.live.len().max(1))
                .copied()
        } else {
            self.model
                .closed
                .iter()
                .nth(i % self.model.closed.len())
                .copied()
        }
    }

    fn command(&mut self, s: &mut Script<'_>) {
        let aux_len = s.byte() as usize % 40;
        let aux = s.bytes(aux_len).to_vec();
        let msg = Outgoing::new(Command::DbgShell).with_aux(&aux);
        let queued = self.conn.pending_transmit();
        let op = s.byte() % 7;
        let target = self.pick(s);
        let result = match (op, target) {
            (0, _) | (_, None) => {
                let flags = if s.byte() & 1 == 0 {
                    Flags::empty()
                } else {
                    Flags::DELETE
                };
                match self.conn.open(self.now, &msg, flags, None) {
                    Ok(txn) => {
                        assert!(self.model.live.insert(txn), "open returned a live handle");
                        assert_eq!(txn.side(), Side::Ours);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            (1, Some(t)) => self.conn.send(self.now, t, &msg, Flags::empty()),
            (2, Some(t)) => self.conn.send(self.now, t, &msg, Flags::DELETE),
            (3, Some(t)) => self.conn.reply(self.now, t, txn::NOSUPP),
            (4, Some(t)) => self.conn.delete(self.now, t),
            (5, Some(t)) => self.conn.abort(self.now, t),
            (_, Some(t)) => self
                .conn
                .send_one_way(self.now, &msg, s.byte() & 1 == 1, Some(t)),
        };
        if result.is_err() {
            assert_eq!(
                self.conn.pending_transmit(),
                queued,
                "a refused command queued bytes: {result:?}"
            );
        }
        if let (1.., Some(t)) = (op, target) {
            if self.model.closed.contains(&t) {
                assert!(
                    result.is_err(),
                    "op {op}: a stale handle {t:?} was accepted"
                );
            }
        }
    }

    /// Steps 1 and 2 of the drive contract, checking every event.
    fn drain(&mut self) {
        let mut buf = [0u8; 300];
        for _ in 0..100_000 {
            let n = self.conn.poll_transmit(self.now, &mut buf);
            if n > 0 {
                self.check_output(&buf[..n]);
                continue;
            }
            let Some(event) = self.conn.poll_event() else {
                return;
            };
            assert!(!self.model.link_closed, "event after LinkClosed: {event:?}");
            match event {
                Event::Opened { txn, .. } => {
                    assert_eq!(txn.side(), Side::Theirs);
                    assert!(self.model.live.insert(txn), "Opened twice: {txn:?}");
                    assert!(!self.model.closed.contains(&txn));
                }
                Event::Message { txn, .. } => {
                    assert!(
                        self.model.live.contains(&txn),
                        "Message on {txn:?} not live"
                    );
                }
                Event::Closed { txn, .. } => {
                    assert!(self.model.live.remove(&txn), "Closed for unknown {txn:?}");
                    assert!(self.model.closed.insert(txn), "Closed twice: {txn:?}");
                }
                Event::LinkClosed { .. } => {
                    assert!(
                        self.model.live.is_empty(),
                        "LinkClosed with live transactions {:?}",
                        self.model.live
                    );
                    self.model.link_closed = true;
                }
                _ => {}
            }
        }
        panic!("drain did not finish");
    }

    fn check_output(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let out = match self.out.decode(bytes) {
                Ok(o) => o,
                Err(e) => panic!("the connection sent an invalid stream: {e}"),
            };
            bytes = &bytes[out.consumed..];
        }
    }

    fn check_bounds(&self) {
        assert!(self.conn.open_transactions(Side::Ours) <= TXNS);
        assert!(self.conn.open_transactions(Side::Theirs) <= TXNS);
        assert!(self.conn.table_entries(Side::Ours) <= TXNS);
        assert!(self.conn.table_entries(Side::Theirs) <= TXNS);
        assert!(self.conn.pending_transmit() <= TX);
    }
}
