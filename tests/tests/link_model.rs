//! Model-based test of `link::Connection`: random sequences of application commands, frames
//! from a scripted peer that may misbehave (random flags on a small pool of msgids, so they
//! collide with open transactions), keepalive time steps, shutdowns and transport loss, run
//! against the real connection and a reference model written from `spec/LINK.md`.
//!
//! After every step: the events are exactly the ones the model predicts (kind, transaction,
//! order), the answer frames are exactly the predicted ones, every counter matches, the
//! tables hold exactly the model's open transactions (no leaked slot once both sides sent
//! DELETE) and never more than their bound. Every transaction the application saw opened is
//! closed exactly once; a lost link closes each open one with LOSTLINK before reporting
//! itself closed, once, last.

#[path = "link_util.rs"]
mod link_util;

use std::collections::{BTreeMap, VecDeque};

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::errcode::txn::{LOSTLINK, PARAM};
use dmsg_core::link::{
    CloseReason, Connection, LinkConfig, Outgoing, SendError, Side, TxnEnd, TxnId,
};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::ConnRepr;
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};
use link_util::Ev;
use proptest::prelude::*;

const TXNS: usize = 3;
type M = Connection<{ 8 * 64 + 256 }, 256, 1024, TXNS>;

const OUR_CONN: u64 = 1000;
const PEER_CONN: u64 = 500;
const TOMBSTONES: usize = 8;
const IDLE: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which msgid a peer frame carries, resolved when the step runs.
#[derive(Clone, Debug)]
enum Target {
    /// This msgid.
    Raw(u64),
    /// The n-th open transaction (modulo their number).
    Live(usize),
    /// The n-th recently finished, refused or answered msgid.
    Recent(usize),
}

#[derive(Clone, Debug)]
enum Action {
    /// The application opens a transaction.
    Open { delete: bool, abort: bool, aux: u8 },
    /// The application sends in the `pick`-th open transaction.
    Send {
        pick: usize,
        delete: bool,
        abort: bool,
    },
    /// The peer sends a DBG_SHELL frame with these flags. `target` picks the msgid;
    /// `rbits` (bit 0 REPLY, bit 1 REVTRANS) the table, except that frames aimed at an open
    /// or recent transaction get the bits of its table.
    Peer {
        target: Target,
        rbits: u8,
        create: bool,
        delete: bool,
        abort: bool,
        error: u32,
    },
    /// The peer pings.
    Ping,
    /// Time passes; the peer answers our pings or stays silent.
    Tick { ms: u64, answer: bool },
    /// The application starts a clean shutdown.
    Close,
    /// The peer DELETEs its LNK_CONN (starts a clean shutdown).
    PeerConnDelete,
    /// The transport dies.
    TransportClose,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => (0..16u64).prop_map(Target::Raw),
        2 => any::<usize>().prop_map(Target::Live),
        1 => any::<usize>().prop_map(Target::Recent),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<bool>(), prop::bool::weighted(0.2), any::<u8>())
            .prop_map(|(delete, abort, aux)| Action::Open { delete, abort, aux }),
        4 => (0..4usize, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(pick, delete, abort)| Action::Send { pick, delete, abort }),
        8 => (target(), 0..4u8, any::<bool>(), any::<bool>(),
              prop::bool::weighted(0.3), prop_oneof![Just(0u32), Just(PARAM), Just(7)])
            .prop_map(|(target, rbits, create, delete, abort, error)| {
                Action::Peer { target, rbits, create, delete, abort, error }
            }),
        1 => Just(Action::Ping),
        3 => (0..4_000u64, prop::bool::weighted(0.7))
            .prop_map(|(ms, answer)| Action::Tick { ms, answer }),
        1 => Just(Action::Close),
        1 => Just(Action::PeerConnDelete),
        1 => Just(Action::TransportClose),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum D {
    Idle,
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug)]
struct MTxn {
    id: TxnId,
    local: D,
    remote: D,
    aborted: bool,
    error: u32,
}

impl MTxn {
    fn finished(&self) -> bool {
        self.local == D::Closed && self.remote == D::Closed
    }
    fn end(&self) -> TxnEnd {
        if self.aborted {
            TxnEnd::Aborted
        } else {
            TxnEnd::Completed
        }
    }
}

/// Counters the model predicts (the same names as `LinkStats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    unknown_txn: u64,
    duplicate_create: u64,
    delete_on_closed: u64,
    after_delete: u64,
    bad_msgid: u64,
    late_aborts: u64,
    absorbed: u64,
    capacity_refusals: u64,
    closing_refusals: u64,
    tombstone_evictions: u64,
    one_way_in: u64,
}

/// An event the model expects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Want {
    Opened(u64),
    Message(TxnId),
    OneWay,
    Closed(TxnId, u32, TxnEnd),
}

/// The reference model: the transactions the application knows, and the link's fate.
#[derive(Debug, Default)]
struct Model {
    /// Open transactions by (side, msgid).
    txns: BTreeMap<(Side, u64), MTxn>,
    alive: bool,
    /// When a clean shutdown started, and who started it.
    closing: Option<(Instant, Side)>,
    counts: Counts,
    tomb: VecDeque<u64>,
    /// Recently finished, refused or answered (side, msgid), newest last.
    recent: VecDeque<(Side, u64)>,
}

impl Model {
    fn remember(&mut self, side: Side, m: u64) {
        self.recent.retain(|x| *x != (side, m));
        if self.recent.len() == 8 {
            self.recent.pop_front();
        }
        self.recent.push_back((side, m));
    }

    fn live(&self, side: Side) -> usize {
        self.txns.keys().filter(|(s, _)| *s == side).count()
    }

    fn tomb_push(&mut self, m: u64) {
        if m == 0 || self.tomb.contains(&m) {
            return;
        }
        if self.tomb.len() == TOMBSTONES {
            self.tomb.pop_front();
            self.counts.tombstone_evictions += 1;
        }
        self.tomb.push_back(m);
    }

    fn tomb_remove(&mut self, m: u64) {
        self.tomb.retain(|x| *x != m);
    }

    /// Predicts the effect of a peer frame: the events and our answer frames.
    fn peer_frame(&mut self, f: &PeerFrame) -> (Vec<Want>, Vec<(u32, u64, u32)>) {
        let r = self.predict(f);
        if !r.1.is_empty() {
            let side = if f.reply || f.revtrans {
                Side::Ours
            } else {
                Side::Theirs
            };
            self.remember(side, f.msgid);
        }
        r
    }

    fn predict(&mut self, f: &PeerFrame) -> (Vec<Want>, Vec<(u32, u64, u32)>) {
        let refuse = |err: u32| (0xe80f_ff01u32, f.msgid, err);
        let side = if f.reply || f.revtrans {
            Side::Ours
        } else {
            Side::Theirs
        };
        let one_way = !f.create && !f.delete && !f.abort;
        let key = (side, f.msgid);
        let live = (f.msgid != 0 || !one_way) && self.txns.contains_key(&key);
        if live {
            return (self.txn_frame(key, f), vec![]);
        }
        if one_way {
            if side == Side::Theirs && f.msgid != 0 && self.tomb.contains(&f.msgid) {
                self.counts.absorbed += 1;
                return (vec![], vec![]);
            }
            self.counts.one_way_in += 1;
            return (vec![Want::OneWay], vec![]);
        }
        match side {
            Side::Theirs if f.create => {
                if f.msgid == 0 {
                    self.counts.bad_msgid += 1;
                    (vec![], vec![refuse(PARAM)])
                } else if self.closing.is_some() {
                    self.counts.closing_refusals += 1;
                    if !f.delete {
                        self.tomb_push(f.msgid);
                    }
                    (vec![], vec![refuse(LOSTLINK)])
                } else if self.live(Side::Theirs) == TXNS {
                    self.counts.capacity_refusals += 1;
                    if !f.delete {
                        self.tomb_push(f.msgid);
                    }
                    (vec![], vec![refuse(PARAM)])
                } else {
                    self.tomb_remove(f.msgid);
                    (vec![Want::Opened(f.msgid)], vec![])
                }
            }
            Side::Theirs => {
                if self.tomb.contains(&f.msgid) {
                    self.counts.absorbed += 1;
                    if f.delete {
                        self.tomb_remove(f.msgid);
                    }
                    (vec![], vec![])
                } else if f.abort && f.delete {
                    self.counts.late_aborts += 1;
                    (vec![], vec![])
                } else {
                    self.counts.unknown_txn += 1;
                    if !f.delete {
                        self.tomb_push(f.msgid);
                    }
                    (vec![], vec![refuse(PARAM)])
                }
            }
            Side::Ours => {
                if f.abort && f.delete && !f.create {
                    self.counts.late_aborts += 1;
                    (vec![], vec![])
                } else {
                    self.counts.unknown_txn += 1;
                    (vec![], vec![(0x500f_ff01, f.msgid, PARAM)])
                }
            }
        }
    }

    /// A peer frame in a live transaction (the transaction rules, written out again).
    fn txn_frame(&mut self, key: (Side, u64), f: &PeerFrame) -> Vec<Want> {
        let t = self.txns[&key];
        let accept = match (t.remote, f.create) {
            (D::Idle, _) => true,
            (D::Open, true) | (D::Closed, true) => {
                self.counts.duplicate_create += 1;
                false
            }
            (D::Open, false) => true,
            (D::Closed, false) => {
                if f.abort && f.delete {
                    self.counts.late_aborts += 1;
                } else if f.delete {
                    self.counts.delete_on_closed += 1;
                } else {
                    self.counts.after_delete += 1;
                }
                false
            }
        };
        if !accept {
            return vec![];
        }
        let mut n = t;
        n.remote = if f.delete { D::Closed } else { D::Open };
        if f.delete {
            n.error = f.error;
            n.aborted |= f.abort;
        }
        let mut want = vec![Want::Message(t.id)];
        if n.finished() {
            want.push(Want::Closed(t.id, n.error, n.end()));
            self.txns.remove(&key);
            self.remember(key.0, key.1);
        } else {
            self.txns.insert(key, n);
        }
        want
    }
}

/// A frame the scripted peer sends.
struct PeerFrame {
    msgid: u64,
    reply: bool,
    revtrans: bool,
    create: bool,
    delete: bool,
    abort: bool,
    error: u32,
}

/// The connection under test, the scripted peer and the model.
struct World {
    sut: Box<M>,
    enc: Encoder,
    dec: Decoder<Box<[u8]>, DefaultCrc>,
    now: Instant,
    /// When the connection last consumed input (mirrors its keepalive clock).
    last_rx: Instant,
    model: Model,
    link_closed_seen: bool,
    peer_deleted_its_conn: bool,
    peer_closed_our_conn: bool,
    /// Events of the current step.
    batch: Vec<Ev>,
    /// Our frames the peer read in the current step: (cmd, msgid, error).
    out: Vec<(u32, u64, u32)>,
}

impl World {
    fn new() -> World {
        let cfg = LinkConfig {
            conn_msgid: MsgId(OUR_CONN),
            msgid_base: 1,
            max_violations: u64::MAX,
            idle_timeout: IDLE,
            close_timeout: CLOSE_TIMEOUT,
            ..LinkConfig::default()
        };
        let dcfg = DecoderConfig::default();
        let mut w = World {
            sut: Box::new(M::new(Instant::ZERO, &cfg, Default::default()).unwrap()),
            enc: Encoder::new(99),
            dec: Decoder::new(
                vec![0u8; dcfg.storage_len()].into_boxed_slice(),
                dcfg,
                DefaultCrc::default(),
            )
            .unwrap(),
            now: Instant::ZERO,
            last_rx: Instant::ZERO,
            model: Model {
                alive: true,
                ..Model::default()
            },
            link_closed_seen: false,
            peer_deleted_its_conn: false,
            peer_closed_our_conn: false,
            batch: Vec::new(),
            out: Vec::new(),
        };
        // LNK_CONN exchange.
        let conn = w.encode(
            Cmd::new(Command::LnkConn, Flags::CREATE),
            PEER_CONN,
            0,
            &Body::Conn(ConnRepr::default()),
        );
        w.deliver(conn, false);
        let accept = w.encode(
            Cmd::new(
                Command::LnkError,
                Flags::CREATE | Flags::REPLY | Flags::REVTRANS,
            ),
            OUR_CONN,
            0,
            &Body::None,
        );
        w.deliver(accept, false);
        assert_eq!(w.out[0], (0x8000_1106, OUR_CONN, 0));
        assert_eq!(w.out[1], (0xa80f_ff01, PEER_CONN, 0));
        assert!(matches!(w.batch[0], Ev::Connected));
        w.batch.clear();
        w.out.clear();
        w
    }

    fn encode(&mut self, cmd: Cmd, msgid: u64, error: u32, body: &Body) -> Vec<u8> {
        let hdr = HeaderRepr {
            error,
            ..HeaderRepr::new(cmd, MsgId(msgid))
        };
        let mut buf = vec![0u8; cmd.header_len()];
        let n = self
            .enc
            .encode(&DefaultCrc::default(), &hdr, body, &[], &mut buf)
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// Drains the connection (transmit, events) and lets the peer read and react:
    /// it completes a clean shutdown and, if `answer_pings`, answers our pings.
    fn pump(&mut self, answer_pings: bool) {
        let mut buf = [0u8; 256];
        for _ in 0..1000 {
            let mut bytes = Vec::new();
            loop {
                let n = self.sut.poll_transmit(self.now, &mut buf);
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&buf[..n]);
            }
            while let Some(ev) = self.sut.poll_event() {
                self.batch.push(Ev::from_event(ev));
            }
            if bytes.is_empty() {
                return;
            }
            self.absorb(&bytes, answer_pings);
        }
        panic!("pump did not settle");
    }

    /// Feeds peer bytes following the drive contract.
    fn feed(&mut self, mut bytes: Vec<u8>) {
        let mut guard = 0;
        while !bytes.is_empty() {
            let used = self.sut.handle_input(self.now, &bytes);
            if used > 0 && !self.sut.is_closed() {
                self.last_rx = self.now;
            }
            bytes.drain(..used);
            let mut buf = [0u8; 256];
            // Collect events and output without the peer reacting (it reacts in `pump`).
            while let Some(ev) = self.sut.poll_event() {
                self.batch.push(Ev::from_event(ev));
            }
            let mut out = Vec::new();
            loop {
                let n = self.sut.poll_transmit(self.now, &mut buf);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            self.absorb(&out, false);
            guard += 1;
            assert!(guard < 10_000, "input stalled");
        }
    }

    /// The peer reads our frames and reacts: it completes a clean shutdown (answers our
    /// LNK_CONN DELETE, DELETEs its own once we closed our side of it) and, if
    /// `answer_pings`, answers our pings.
    fn absorb(&mut self, bytes: &[u8], answer_pings: bool) {
        let mut input = bytes;
        let mut responses = Vec::new();
        while !input.is_empty() {
            let d = self.dec.decode(input).expect("our output decodes");
            input = &input[d.consumed..];
            let Some(f) = d.frame else { continue };
            let h = f.repr();
            self.out.push((h.cmd.0, h.msgid.0, h.error));
            let flags = h.cmd.flags();
            let ping = h.cmd.command() == Command::LnkPing && !flags.contains(Flags::REPLY);
            if ping && answer_pings {
                responses.push((Cmd::new(Command::LnkPing, Flags::REPLY), 0));
            } else if h.msgid.0 == OUR_CONN
                && flags.contains(Flags::DELETE)
                && !self.peer_closed_our_conn
            {
                self.peer_closed_our_conn = true;
                let c = Flags::DELETE | Flags::REPLY | Flags::REVTRANS;
                responses.push((Cmd::new(Command::LnkError, c), OUR_CONN));
            } else if h.msgid.0 == PEER_CONN
                && flags.contains(Flags::DELETE)
                && !self.peer_deleted_its_conn
            {
                self.peer_deleted_its_conn = true;
                responses.push((Cmd::new(Command::LnkError, Flags::DELETE), PEER_CONN));
            }
        }
        for (cmd, msgid) in responses {
            let f = self.encode(cmd, msgid, 0, &Body::None);
            self.feed(f);
        }
    }

    fn deliver(&mut self, bytes: Vec<u8>, answer_pings: bool) {
        self.pump(answer_pings);
        self.feed(bytes);
        self.pump(answer_pings);
    }

    // ---------------------------------------------------------------------------------

    fn step(&mut self, a: &Action) -> Result<(), TestCaseError> {
        self.batch.clear();
        self.out.clear();
        match *a {
            Action::Open { delete, abort, aux } => self.open(delete, abort, aux)?,
            Action::Send {
                pick,
                delete,
                abort,
            } => self.send(pick, delete, abort)?,
            Action::Peer {
                ref target,
                rbits,
                create,
                delete,
                abort,
                error,
            } => {
                let (msgid, rbits) = self.resolve(target, rbits);
                self.peer(PeerFrame {
                    msgid,
                    reply: rbits & 1 != 0,
                    revtrans: rbits & 2 != 0,
                    create,
                    delete,
                    abort,
                    error,
                })?
            }
            Action::Ping => {
                let f = self.encode(
                    Cmd::new(Command::LnkPing, Flags::empty()),
                    0,
                    0,
                    &Body::None,
                );
                self.deliver(f, false);
                if self.model.alive {
                    prop_assert_eq!(&self.out, &vec![(0x2000_0101u32, 0u64, 0u32)]);
                }
                self.expect(vec![])?;
            }
            Action::Tick { ms, answer } => self.tick(ms, answer)?,
            Action::Close => self.close()?,
            Action::PeerConnDelete => self.peer_conn_delete()?,
            Action::TransportClose => {
                self.sut.handle_close();
                self.pump(false);
                if self.model.alive {
                    self.expect_death(|r| r == CloseReason::TransportClosed)?;
                } else {
                    self.expect(vec![])?;
                }
            }
        }
        self.check_invariants()
    }

    /// The msgid and table bits a peer frame is aimed with.
    fn resolve(&self, target: &Target, rbits: u8) -> (u64, u8) {
        let bits_for = |side: Side| match side {
            Side::Ours => rbits.max(1),
            Side::Theirs => 0,
        };
        match *target {
            Target::Live(n) if !self.model.txns.is_empty() => {
                let (side, m) = *self
                    .model
                    .txns
                    .keys()
                    .nth(n % self.model.txns.len())
                    .unwrap();
                (m, bits_for(side))
            }
            Target::Recent(n) if !self.model.recent.is_empty() => {
                let (side, m) = self.model.recent[n % self.model.recent.len()];
                (m, bits_for(side))
            }
            Target::Raw(m) => (m, rbits),
            Target::Live(n) | Target::Recent(n) => ((n % 6) as u64, rbits),
        }
    }

    fn open(&mut self, delete: bool, abort: bool, aux: u8) -> Result<(), TestCaseError> {
        let mut flags = Flags::empty();
        if delete {
            flags |= Flags::DELETE;
        }
        if abort {
            flags |= Flags::ABORT;
        }
        let auxv = [aux; 5];
        let msg = Outgoing::new(Command::DbgShell).with_aux(&auxv);
        let r = self.sut.open(self.now, &msg, flags, None);
        self.pump(false);
        let want = if !self.model.alive {
            Err(SendError::Closed)
        } else if self.model.closing.is_some() {
            Err(SendError::Closing)
        } else if self.model.live(Side::Ours) == TXNS {
            Err(SendError::TableFull)
        } else {
            Ok(())
        };
        prop_assert_eq!(r.map(|_| ()), want);
        if let Ok(id) = r {
            prop_assert_eq!(id.side(), Side::Ours);
            prop_assert!(id.msgid().0 != 0 && id.msgid().0 != OUR_CONN);
            prop_assert!(!self.model.txns.contains_key(&(Side::Ours, id.msgid().0)));
            prop_assert_eq!(
                &self.out,
                &vec![(
                    (flags | Flags::CREATE).bits() | 0x0010_0101,
                    id.msgid().0,
                    0
                )]
            );
            let local = if delete { D::Closed } else { D::Open };
            self.model.txns.insert(
                (Side::Ours, id.msgid().0),
                MTxn {
                    id,
                    local,
                    remote: D::Idle,
                    aborted: delete && abort,
                    error: 0,
                },
            );
        } else {
            prop_assert!(self.out.is_empty());
        }
        self.expect(vec![])
    }

    fn send(&mut self, pick: usize, delete: bool, abort: bool) -> Result<(), TestCaseError> {
        let Some((&key, &t)) = self
            .model
            .txns
            .iter()
            .nth(pick % self.model.txns.len().max(1))
        else {
            return Ok(());
        };
        let mut flags = Flags::empty();
        if delete {
            flags |= Flags::DELETE;
        }
        if abort {
            flags |= Flags::ABORT;
        }
        let r = self
            .sut
            .send(self.now, t.id, &Outgoing::new(Command::DbgShell), flags);
        self.pump(false);
        if !self.model.alive {
            prop_assert_eq!(r, Err(SendError::Closed));
            return self.expect(vec![]);
        }
        if t.local == D::Closed && !(abort && delete) {
            prop_assert_eq!(r, Err(SendError::AlreadyClosed(t.id)));
            prop_assert!(self.out.is_empty());
            return self.expect(vec![]);
        }
        prop_assert_eq!(r, Ok(()));
        let mut wire = flags;
        if t.local == D::Idle {
            wire |= Flags::CREATE;
        }
        if key.0 == Side::Theirs {
            wire |= Flags::REPLY | Flags::REVTRANS;
        }
        prop_assert_eq!(&self.out, &vec![(wire.bits() | 0x0010_0101, key.1, 0)]);
        let mut n = t;
        if t.local != D::Closed {
            n.local = if delete { D::Closed } else { D::Open };
        }
        n.aborted |= abort && delete;
        let mut want = vec![];
        if n.finished() {
            want.push(Want::Closed(t.id, n.error, n.end()));
            self.model.txns.remove(&key);
            self.model.remember(key.0, key.1);
        } else {
            self.model.txns.insert(key, n);
        }
        self.check_clean_close()?;
        self.expect(want)
    }

    fn peer(&mut self, f: PeerFrame) -> Result<(), TestCaseError> {
        let mut flags = Flags::empty();
        for (on, bit) in [
            (f.create, Flags::CREATE),
            (f.delete, Flags::DELETE),
            (f.reply, Flags::REPLY),
            (f.abort, Flags::ABORT),
            (f.revtrans, Flags::REVTRANS),
        ] {
            if on {
                flags |= bit;
            }
        }
        let bytes = self.encode(
            Cmd::new(Command::DbgShell, flags),
            f.msgid,
            f.error,
            &Body::None,
        );
        let (want, answers) = if self.model.alive {
            self.model.peer_frame(&f)
        } else {
            (vec![], vec![])
        };
        self.deliver(bytes, false);
        prop_assert_eq!(
            &self.out,
            &answers,
            "answers to {:?} msgid {}",
            flags,
            f.msgid
        );
        self.check_clean_close()?;
        self.expect(want)
    }

    fn tick(&mut self, ms: u64, answer: bool) -> Result<(), TestCaseError> {
        let end = self.now + Duration::from_millis(ms);
        let was_alive = self.model.alive;
        let mut guard = 0;
        while let Some(t) = self.sut.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            self.sut.handle_timeout(self.now);
            self.pump(answer);
            guard += 1;
            prop_assert!(guard < 100_000);
        }
        self.now = end;
        self.sut.handle_timeout(end);
        self.pump(answer);
        if !was_alive {
            return self.expect(vec![]);
        }
        let keepalive_due = self.now >= self.last_rx + IDLE;
        let close_due = self
            .model
            .closing
            .is_some_and(|(since, _)| self.now >= since + CLOSE_TIMEOUT);
        if keepalive_due || close_due {
            self.expect_death(|r| {
                (keepalive_due && r == CloseReason::KeepaliveTimeout)
                    || (close_due && r == CloseReason::CloseTimeout)
            })
        } else {
            self.expect(vec![])
        }
    }

    fn close(&mut self) -> Result<(), TestCaseError> {
        let r = self.sut.close(self.now);
        self.pump(false);
        if !self.model.alive {
            prop_assert_eq!(r, Err(SendError::Closed));
            return self.expect(vec![]);
        }
        prop_assert_eq!(r, Ok(()));
        if self.model.closing.is_none() {
            self.model.closing = Some((self.now, Side::Ours));
        }
        self.check_clean_close()?;
        self.expect(vec![])
    }

    fn peer_conn_delete(&mut self) -> Result<(), TestCaseError> {
        if self.peer_deleted_its_conn {
            return Ok(());
        }
        self.peer_deleted_its_conn = true;
        let f = self.encode(
            Cmd::new(Command::LnkError, Flags::DELETE),
            PEER_CONN,
            0,
            &Body::None,
        );
        self.deliver(f, false);
        if self.model.alive && self.model.closing.is_none() {
            self.model.closing = Some((self.now, Side::Theirs));
        }
        self.check_clean_close()?;
        self.expect(vec![])
    }

    // ---------------------------------------------------------------------------------

    /// A clean shutdown completes as soon as nothing is open (the peer answers at once):
    /// then the step's events end with LinkClosed (taken off here).
    fn check_clean_close(&mut self) -> Result<(), TestCaseError> {
        if !self.model.alive {
            return Ok(());
        }
        match self.model.closing {
            Some((_, who)) if self.model.txns.is_empty() => {
                let reason = match who {
                    Side::Ours => CloseReason::LocalClose,
                    Side::Theirs => CloseReason::PeerClosed,
                };
                prop_assert_eq!(self.batch.last(), Some(&Ev::LinkClosed(reason)));
                self.batch.pop();
                self.note_link_closed()?;
                self.model.alive = false;
                prop_assert!(self.sut.is_closed());
                prop_assert_eq!(self.sut.pending_transmit(), 0);
            }
            _ => prop_assert!(!self.sut.is_closed()),
        }
        Ok(())
    }

    fn note_link_closed(&mut self) -> Result<(), TestCaseError> {
        prop_assert!(!self.link_closed_seen, "LinkClosed reported twice");
        self.link_closed_seen = true;
        Ok(())
    }

    /// The link died: each open transaction closed once with LOSTLINK, then LinkClosed.
    fn expect_death(
        &mut self,
        reason_ok: impl Fn(CloseReason) -> bool,
    ) -> Result<(), TestCaseError> {
        let Some(Ev::LinkClosed(reason)) = self.batch.pop() else {
            return Err(TestCaseError::fail(format!(
                "no LinkClosed in {:?}",
                self.batch
            )));
        };
        prop_assert!(reason_ok(reason), "reason {:?}", reason);
        self.note_link_closed()?;
        let mut want: Vec<_> = self
            .model
            .txns
            .values()
            .map(|t| Ev::Closed(t.id, LOSTLINK, TxnEnd::LinkLost))
            .collect();
        let mut got = std::mem::take(&mut self.batch);
        want.sort_by_key(|e| format!("{e:?}"));
        got.sort_by_key(|e| format!("{e:?}"));
        prop_assert_eq!(got, want);
        self.model.txns.clear();
        self.model.alive = false;
        prop_assert!(self.sut.is_closed());
        Ok(())
    }

    /// The step's events are exactly `want`, in order (consumed from the batch).
    fn expect(&mut self, want: Vec<Want>) -> Result<(), TestCaseError> {
        let got = std::mem::take(&mut self.batch);
        prop_assert_eq!(
            got.len(),
            want.len(),
            "events {:?}, expected {:?}",
            got,
            want
        );
        for (g, w) in got.iter().zip(&want) {
            match (g, w) {
                (Ev::Opened(id, h, ..), Want::Opened(m)) => {
                    prop_assert_eq!(h.msgid.0, *m);
                    prop_assert_eq!(id.side(), Side::Theirs);
                    let remote = if h.cmd.flags().contains(Flags::DELETE) {
                        D::Closed
                    } else {
                        D::Open
                    };
                    let f = h.cmd.flags();
                    self.model.txns.insert(
                        (Side::Theirs, *m),
                        MTxn {
                            id: *id,
                            local: D::Idle,
                            remote,
                            aborted: f.contains(Flags::ABORT | Flags::DELETE),
                            error: if f.contains(Flags::DELETE) {
                                h.error
                            } else {
                                0
                            },
                        },
                    );
                }
                (Ev::Message(id, ..), Want::Message(t)) => prop_assert_eq!(id, t),
                (Ev::OneWay(..), Want::OneWay) => {}
                (Ev::Closed(id, e, end), Want::Closed(t, we, wend)) => {
                    prop_assert_eq!((id, e, end), (t, we, wend));
                }
                _ => return Err(TestCaseError::fail(format!("event {g:?}, expected {w:?}"))),
            }
        }
        Ok(())
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        let st = *self.sut.stats();
        let c = self.model.counts;
        let got = Counts {
            unknown_txn: st.violations.unknown_txn,
            duplicate_create: st.violations.duplicate_create,
            delete_on_closed: st.violations.delete_on_closed,
            after_delete: st.violations.after_delete,
            bad_msgid: st.violations.bad_msgid,
            late_aborts: st.late_aborts,
            absorbed: st.absorbed,
            capacity_refusals: st.capacity_refusals,
            closing_refusals: st.closing_refusals,
            tombstone_evictions: st.tombstone_evictions,
            one_way_in: st.one_way_in,
        };
        prop_assert_eq!(got, c);
        prop_assert_eq!(st.ctl_dropped, 0);
        prop_assert_eq!(st.violations.duplicate_conn, 0);
        for side in [Side::Ours, Side::Theirs] {
            // Exactly the model's open transactions hold a slot: nothing leaks.
            prop_assert_eq!(self.sut.table_entries(side), self.model.live(side));
            prop_assert!(self.sut.table_entries(side) <= TXNS);
        }
        for t in self.model.txns.values() {
            let s = self.sut.txn_state(t.id);
            prop_assert!(s.is_some(), "{:?} open in the model only", t.id);
        }
        prop_assert_eq!(self.sut.is_closed(), !self.model.alive);
        Ok(())
    }
}

fn run(actions: &[Action]) -> Result<(), TestCaseError> {
    let mut w = World::new();
    for a in actions {
        w.step(a)?;
    }
    // In the end the peer falls silent: the link must die (or have closed) and report every
    // open transaction closed, once.
    w.batch.clear();
    w.out.clear();
    w.step(&Action::Tick {
        ms: 25_000,
        answer: false,
    })?;
    prop_assert!(w.sut.is_closed());
    prop_assert!(w.link_closed_seen);
    prop_assert!(w.model.txns.is_empty());
    prop_assert!(w.sut.poll_event().is_none());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The invariant: every transaction the application sees opened is closed exactly once
    /// (by both DELETEs or by LOSTLINK), no slot outlives its transaction, tables stay within
    /// bounds, and events, answers and counters are the ones the reference model predicts.
    #[test]
    fn every_opened_transaction_closes_exactly_once_without_leaks(
        actions in prop::collection::vec(action(), 1..80)
    ) {
        run(&actions)?;
    }

    /// The same with a well-behaved peer that only answers our transactions and opens its
    /// own: link loss at a random point closes everything with LOSTLINK.
    #[test]
    fn link_loss_closes_every_open_transaction_with_lostlink(
        actions in prop::collection::vec(prop_oneof![
            3 => (any::<bool>(), Just(false), any::<u8>())
                .prop_map(|(delete, abort, aux)| Action::Open { delete, abort, aux }),
            3 => (0..4usize, any::<bool>()).prop_map(|(pick, delete)| Action::Send { pick, delete, abort: false }),
            3 => (1..6u64, any::<bool>()).prop_map(|(m, delete)| Action::Peer {
                target: Target::Raw(m), rbits: 0, create: true, delete, abort: false, error: 0 }),
            2 => (0..1_500u64).prop_map(|ms| Action::Tick { ms, answer: true }),
        ], 1..40),
        loss in 0..3u8,
    ) {
        let mut w = World::new();
        for a in &actions {
            w.step(a)?;
        }
        let kill = match loss {
            0 => Action::TransportClose,
            1 => Action::Tick { ms: 11_000, answer: false },
            _ => Action::Tick { ms: 25_000, answer: false },
        };
        w.step(&kill)?;
        prop_assert!(w.sut.is_closed());
        prop_assert!(w.link_closed_seen);
        prop_assert!(w.model.txns.is_empty());
    }
}

#[test]
fn model_sanity_a_scripted_exchange() {
    // A fixed sequence touching every branch once, so a model bug shows up here first.
    let seq = vec![
        Action::Open {
            delete: false,
            abort: false,
            aux: 1,
        },
        Action::Peer {
            target: Target::Raw(1),
            rbits: 3,
            create: true,
            delete: false,
            abort: false,
            error: 0,
        },
        Action::Peer {
            target: Target::Raw(1),
            rbits: 3,
            create: true,
            delete: false,
            abort: false,
            error: 0,
        },
        Action::Peer {
            target: Target::Raw(3),
            rbits: 0,
            create: true,
            delete: false,
            abort: false,
            error: 0,
        },
        Action::Peer {
            target: Target::Raw(3),
            rbits: 0,
            create: false,
            delete: true,
            abort: false,
            error: 7,
        },
        Action::Send {
            pick: 1,
            delete: true,
            abort: false,
        },
        Action::Peer {
            target: Target::Raw(3),
            rbits: 0,
            create: false,
            delete: true,
            abort: true,
            error: 0,
        },
        Action::Peer {
            target: Target::Raw(4),
            rbits: 0,
            create: false,
            delete: false,
            abort: true,
            error: 0,
        },
        Action::Peer {
            target: Target::Raw(4),
            rbits: 0,
            create: false,
            delete: true,
            abort: false,
            error: 0,
        },
        Action::Peer {
            target: Target::Raw(5),
            rbits: 0,
            create: false,
            delete: false,
            abort: false,
            error: 0,
        },
        Action::Ping,
        Action::Close,
        Action::Send {
            pick: 0,
            delete: true,
            abort: false,
        },
        Action::Peer {
            target: Target::Raw(1),
            rbits: 1,
            create: false,
            delete: true,
            abort: false,
            error: 0,
        },
    ];
    run(&seq).unwrap();
}
