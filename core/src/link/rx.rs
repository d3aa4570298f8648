//! The receive path: which table a frame belongs to, and the answer to every bad sequence.
//!
//! Routing of a received frame (see `spec/LINK.md` for the reasoning):
//! 1. One-way LNK_PAD is ignored; one-way LNK_PING is answered with LNK_PING|REPLY; a
//!    LNK_PING|REPLY is counted (the bytes already refreshed the keepalive).
//! 2. Frames of the two LNK_CONN transactions are handled by the link itself.
//! 3. REPLY or REVTRANS set: the msgid is in *our* table (the newest revision sets REVTRANS
//!    on answers; a peer setting only REPLY is matched the same way). Otherwise: the peer's.
//! 4. Without CREATE, DELETE and ABORT a frame belongs to a transaction only if its msgid
//!    (non-zero) names an open one; otherwise it is a one-way message.
//! 5. Transactional frames go through [`step`](super::txn::step); frames for msgids that are
//!    not open get the answers of the table in the spec, are counted, and never stop the link.

use crate::crc::Crc32c;
use crate::errcode::txn as err;
use crate::time::Instant;
use crate::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};

use super::event::Notice;
use super::txn::{self, Actor, Dir, Slot, Step, TxnEnd, Violation};
use super::{
    CloseReason, ConnTxn, Connection, Phase, RxEvent, RxKind, SessionSlot, Side, TxnId, TxnState,
};

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S>
    Connection<RX, AUX, TX, TXNS, C, S>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    /// Handles one verified frame. Its body is already in `self.rx_body` and its aux data in
    /// `self.aux[..aux_len]`.
    pub(super) fn on_frame(&mut self, now: Instant, hdr: HeaderRepr, aux_len: usize) {
        self.stats.frames_in += 1;
        let flags = hdr.cmd.flags();
        let side = if flags.intersects(Flags::REPLY | Flags::REVTRANS) {
            Side::Ours
        } else {
            Side::Theirs
        };
        let one_way = hdr.cmd.is_one_way();
        if one_way {
            match hdr.cmd.command() {
                Command::LnkPad => {
                    self.stats.ignored += 1;
                    return;
                }
                Command::LnkPing => {
                    if flags.contains(Flags::REPLY) {
                        self.stats.ping_replies_in += 1;
                    } else {
                        self.stats.pings_in += 1;
                        let cmd = Cmd::new(Command::LnkPing, Flags::REPLY);
                        self.send_ctl(now, cmd, hdr.msgid, 0);
                    }
                    return;
                }
                _ => {}
            }
        }
        if self.on_conn_frame(now, side, &hdr) {
            return;
        }
        if one_way {
            self.on_one_way(side, hdr, aux_len);
            return;
        }
        match side {
            Side::Theirs => self.on_opener_frame(now, hdr, aux_len),
            Side::Ours => self.on_reply_frame(now, hdr, aux_len),
        }
    }

    fn violation(&mut self, v: Violation) {
        self.stats.violations.count(v);
        if self.stats.violations.total() > self.max_violations {
            self.die(CloseReason::ProtocolError);
        }
    }

    fn set_rx(&mut self, kind: RxKind, header: HeaderRepr, aux_len: usize) {
        debug_assert!(self.rx.is_none(), "input is gated on pending events");
        self.rx = Some(RxEvent { kind, header });
        self.rx_delivered = false;
        self.aux_len = aux_len;
    }

    /// Answers a peer's frame in a transaction we do not hold (a refused CREATE, or a frame
    /// for an unknown msgid) with a complete reply direction: LNK_ERROR|CREATE|DELETE|REPLY|
    /// REVTRANS carrying `error`. If the peer's direction is still open its DELETE will
    /// follow; the msgid is remembered so that DELETE is absorbed, not answered again.
    fn refuse(&mut self, now: Instant, msgid: MsgId, error: u32, peer_closed: bool) {
        let flags = Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::REVTRANS;
        self.send_ctl(now, Cmd::new(Command::LnkError, flags), msgid, error);
        self.stats.error_answers_out += 1;
        if !peer_closed && msgid.0 != 0 && self.tombstones.push(msgid) {
            self.stats.tombstone_evictions += 1;
        }
    }

    fn on_one_way(&mut self, side: Side, hdr: HeaderRepr, aux: usize) {
        if hdr.msgid.0 != 0 {
            if let Some(i) = self.table(side).find_live(hdr.msgid) {
                self.on_txn_frame(side, i, hdr, aux);
                return;
            }
            if side == Side::Theirs && self.tombstones.contains(hdr.msgid) {
                self.stats.absorbed += 1;
                return;
            }
        }
        self.stats.one_way_in += 1;
        self.set_rx(RxKind::OneWay, hdr, aux);
    }

    /// A frame in a live transaction, judged by the state machine.
    fn on_txn_frame(&mut self, side: Side, i: usize, hdr: HeaderRepr, aux_len: usize) {
        let Some(slot) = self.table(side).get(i).copied() else {
            debug_assert!(false, "index from find_live");
            return;
        };
        let flags = hdr.cmd.flags();
        match txn::step(slot.state, Actor::Remote, flags) {
            Step::Accept(next) => {
                let mut s = slot;
                s.state = next;
                if flags.contains(Flags::DELETE) {
                    s.error = hdr.error;
                    s.aborted |= flags.contains(Flags::ABORT);
                }
                if next.is_finished() {
                    s.end = Some(if s.aborted {
                        TxnEnd::Aborted
                    } else {
                        TxnEnd::Completed
                    });
                }
                self.table_mut(side).replace(i, s);
                let txn = TxnId::new(side, s.msgid, s.serial);
                self.set_rx(RxKind::Message(txn), hdr, aux_len);
                self.check_clean_close();
            }
            Step::Discard => self.stats.late_aborts += 1,
            Step::Violation(v) => self.violation(v),
            Step::AlreadyClosed => self.violation(Violation::AfterDelete),
        }
    }

    /// A transactional frame in the peer's msgid space (the peer is the opener).
    fn on_opener_frame(&mut self, now: Instant, hdr: HeaderRepr, aux_len: usize) {
        let msgid = hdr.msgid;
        if let Some(i) = self.theirs.find_live(msgid) {
            self.on_txn_frame(Side::Theirs, i, hdr, aux_len);
            return;
        }
        let flags = hdr.cmd.flags();
        let create = flags.contains(Flags::CREATE);
        let delete = flags.contains(Flags::DELETE);
        let abort = flags.contains(Flags::ABORT);
        if create {
            self.on_peer_create(now, hdr, aux_len);
            return;
        }
        if self.tombstones.contains(msgid) {
            self.stats.absorbed += 1;
            if delete {
                self.tombstones.remove(msgid);
            }
            return;
        }
        if abort && delete {
            // Abort-after-DELETE racing the full close: discard silently.
            self.stats.late_aborts += 1;
            return;
        }
        self.violation(Violation::UnknownTxn);
        self.refuse(now, msgid, err::PARAM, delete);
    }

    /// CREATE from the peer for a msgid it has no live transaction with.
    fn on_peer_create(&mut self, now: Instant, hdr: HeaderRepr, aux_len: usize) {
        let msgid = hdr.msgid;
        let flags = hdr.cmd.flags();
        let delete = flags.contains(Flags::DELETE);
        if msgid.0 == 0 {
            self.violation(Violation::BadMsgId);
            self.refuse(now, msgid, err::PARAM, delete);
            return;
        }
        if matches!(self.phase, Phase::Closing { .. }) {
            self.stats.closing_refusals += 1;
            self.refuse(now, msgid, err::LOSTLINK, delete);
            return;
        }
        if self.theirs.is_full() {
            self.stats.capacity_refusals += 1;
            self.refuse(now, msgid, err::PARAM, delete);
            return;
        }
        let Step::Accept(state) = txn::step(TxnState::NEW, Actor::Remote, flags) else {
            debug_assert!(false, "a new transaction accepts any first frame");
            return;
        };
        // A CREATE for a remembered msgid: the peer is done with the refused one.
        self.tombstones.remove(msgid);
        let serial = self.take_serial();
        let peer_revcirc = flags.contains(Flags::REVCIRC);
        let slot = Slot {
            msgid,
            serial,
            command: hdr.cmd.command(),
            circuit: hdr.circuit,
            // The circuit is whoever's the peer did not say it is ours: flip REVCIRC.
            revcirc: hdr.circuit.0 != 0 && !peer_revcirc,
            state,
            aborted: delete && flags.contains(Flags::ABORT),
            error: if delete { hdr.error } else { 0 },
            end: None,
            tag: 0,
        };
        if self.theirs.insert(slot).is_none() {
            debug_assert!(false, "checked is_full");
            return;
        }
        let txn = TxnId::new(Side::Theirs, msgid, serial);
        self.set_rx(RxKind::Opened(txn), hdr, aux_len);
    }

    /// A transactional frame in our msgid space (the peer answers a transaction of ours).
    fn on_reply_frame(&mut self, now: Instant, hdr: HeaderRepr, aux_len: usize) {
        let msgid = hdr.msgid;
        if let Some(i) = self.ours.find_live(msgid) {
            self.on_txn_frame(Side::Ours, i, hdr, aux_len);
            return;
        }
        let flags = hdr.cmd.flags();
        let late_abort =
            flags.contains(Flags::ABORT | Flags::DELETE) && !flags.contains(Flags::CREATE);
        if late_abort {
            self.stats.late_aborts += 1;
            return;
        }
        // An answer for a transaction we never opened (or that is finished). Answering a
        // reply with another reply could bounce between two confused ends, so the answer is
        // ABORT|DELETE in our (opener) direction: a peer holding reply state for that msgid
        // closes it; a peer holding none discards it (abort-after-DELETE rule).
        self.violation(Violation::UnknownTxn);
        let cmd = Cmd::new(Command::LnkError, Flags::ABORT | Flags::DELETE);
        self.send_ctl(now, cmd, msgid, err::PARAM);
        self.stats.error_answers_out += 1;
    }

    /// Frames of the LNK_CONN transactions. Returns true when the frame was one.
    fn on_conn_frame(&mut self, now: Instant, side: Side, hdr: &HeaderRepr) -> bool {
        let msgid = hdr.msgid;
        match side {
            Side::Ours => {
                if msgid == self.our_conn.msgid && !self.our_conn.state.is_finished() {
                    self.on_our_conn_answer(now, hdr);
                    return true;
                }
                false
            }
            Side::Theirs => {
                if let Some(pc) = self.peer_conn {
                    if pc.msgid == msgid && !pc.state.is_finished() {
                        self.on_peer_conn_frame(now, pc, hdr);
                        return true;
                    }
                }
                let flags = hdr.cmd.flags();
                if flags.contains(Flags::CREATE)
                    && hdr.cmd.command() == Command::LnkConn
                    && !self.theirs.contains_live_msgid(msgid)
                {
                    self.on_peer_conn_open(now, hdr);
                    return true;
                }
                false
            }
        }
    }

    /// The peer's frames in the reply direction of our LNK_CONN.
    fn on_our_conn_answer(&mut self, now: Instant, hdr: &HeaderRepr) {
        let prev = self.our_conn.state;
        match txn::step(prev, Actor::Remote, hdr.cmd.flags()) {
            Step::Accept(next) => {
                self.our_conn.state = next;
                if prev.remote == Dir::Idle {
                    let queued = self.notices.push(Notice::ConnAnswered(hdr.error));
                    debug_assert!(queued);
                }
                if next.remote == Dir::Closed && prev.remote != Dir::Closed {
                    if prev.remote == Dir::Idle {
                        // Refused (or closed) in its first answer, as DragonFly's shell client
                        // does: close our side too and keep the link for other traffic.
                        self.close_our_conn(now);
                        self.check_clean_close();
                    } else {
                        self.begin_shutdown(now, Side::Theirs);
                    }
                } else if prev.remote != Dir::Idle {
                    self.stats.ignored += 1;
                }
            }
            Step::Discard => self.stats.late_aborts += 1,
            Step::Violation(v) => self.violation(v),
            Step::AlreadyClosed => self.violation(Violation::AfterDelete),
        }
    }

    /// The peer's further frames in its own LNK_CONN transaction.
    fn on_peer_conn_frame(&mut self, now: Instant, mut pc: ConnTxn, hdr: &HeaderRepr) {
        let prev = pc.state;
        match txn::step(prev, Actor::Remote, hdr.cmd.flags()) {
            Step::Accept(next) => {
                pc.state = next;
                self.peer_conn = Some(pc);
                if next.remote == Dir::Closed && prev.remote == Dir::Open {
                    self.begin_shutdown(now, Side::Theirs);
                } else {
                    // E.g. LNK_VOLCONF on the LNK_CONN transaction: not ours to interpret.
                    self.stats.ignored += 1;
                }
                self.check_clean_close();
            }
            Step::Discard => self.stats.late_aborts += 1,
            Step::Violation(v) => self.violation(v),
            Step::AlreadyClosed => self.violation(Violation::AfterDelete),
        }
    }

    /// The peer opens its LNK_CONN: report it and accept it the way DragonFly does
    /// (LNK_ERROR|CREATE|REPLY|REVTRANS, error 0), closing our side too if it closed its own.
    fn on_peer_conn_open(&mut self, now: Instant, hdr: &HeaderRepr) {
        let msgid = hdr.msgid;
        let flags = hdr.cmd.flags();
        let delete = flags.contains(Flags::DELETE);
        if self.peer_conn.is_some_and(|p| !p.state.is_finished()) {
            self.violation(Violation::DuplicateConn);
            self.refuse(now, msgid, err::NOSUPP, delete);
            return;
        }
        if msgid.0 == 0 {
            self.violation(Violation::BadMsgId);
            self.refuse(now, msgid, err::PARAM, delete);
            return;
        }
        if matches!(self.phase, Phase::Closing { .. }) {
            self.stats.closing_refusals += 1;
            self.refuse(now, msgid, err::LOSTLINK, delete);
            return;
        }
        let Step::Accept(mut state) = txn::step(TxnState::NEW, Actor::Remote, flags) else {
            return;
        };
        let conn = match &self.rx_body {
            Body::Conn(c) => *c,
            _ => Default::default(),
        };
        self.peer_conn_repr = conn;
        self.extensions = Some(self.offer.negotiate(conn.ext_offer));
        let mut answer = Flags::CREATE | Flags::REPLY | Flags::REVTRANS;
        if delete {
            answer |= Flags::DELETE;
        }
        self.send_ctl(now, Cmd::new(Command::LnkError, answer), msgid, err::OK);
        if let Step::Accept(s) = txn::step(state, Actor::Local, answer) {
            state = s;
        }
        self.peer_conn = Some(ConnTxn { msgid, state });
        let queued = self.notices.push(Notice::PeerConn);
        debug_assert!(queued);
    }
}
