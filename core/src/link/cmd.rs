//! Application commands. Each one validates everything, checks for room, queues its frame,
//! and only then changes state: a refused command leaves the connection exactly as it was.

use crate::crc::Crc32c;
use crate::encode::EncodeError;
use crate::errcode::txn as err;
use crate::time::Instant;
use crate::wire::{Body, Circuit, Cmd, Command, Flags, HeaderRepr, MsgId, HDR_MAX_BLOCKS};

use super::outq::{wire_len, CTL_RESERVE};
use super::txn::{self, Actor, Dir, Slot, Step, TxnEnd};
use super::{Connection, Outgoing, Phase, SendError, SessionSlot, Side, TxnId, TxnState};

/// The flags an application may give; the connection sets CREATE, REPLY, REVTRANS and
/// REVCIRC itself.
const APP_FLAGS: Flags = Flags::DELETE.union(Flags::ABORT);

fn check_flags(flags: Flags) -> Result<Flags, SendError> {
    if APP_FLAGS.contains(flags) {
        Ok(flags)
    } else {
        Err(SendError::BadFlags)
    }
}

impl<const RX: usize, const AUX: usize, const TX: usize, const TXNS: usize, C, S>
    Connection<RX, AUX, TX, TXNS, C, S>
where
    C: Crc32c + Clone,
    S: SessionSlot<C>,
{
    /// Opens a transaction: sends `msg` with CREATE (plus `flags`: DELETE for a one-frame
    /// request, ABORT for a non-blocking one). `circuit` is the open transaction (typically
    /// a LNK_SPAN) the new one is stacked on; `None` for circuit 0.
    ///
    /// Errors: [`SendError::TableFull`], [`SendError::WouldBlock`], [`SendError::Closing`]...;
    /// on error nothing was queued.
    pub fn open(
        &mut self,
        now: Instant,
        msg: &Outgoing<'_>,
        flags: Flags,
        circuit: Option<TxnId>,
    ) -> Result<TxnId, SendError> {
        match self.phase {
            Phase::Open => {}
            Phase::Closing { .. } => return Err(SendError::Closing),
            Phase::Closed { .. } => return Err(SendError::Closed),
        }
        let flags = check_flags(flags)? | Flags::CREATE;
        let (circuit, revcirc) = self.resolve_circuit(circuit)?;
        if self.ours.is_full() {
            return Err(SendError::TableFull);
        }
        let (msgid, next_msgid) = self.free_msgid();
        let wire_flags = if revcirc {
            flags | Flags::REVCIRC
        } else {
            flags
        };
        let hdr = HeaderRepr {
            circuit,
            error: msg.error,
            ..HeaderRepr::new(Cmd::new(msg.command, wire_flags), msgid)
        };
        self.push_app(now, &hdr, msg)?;
        // Committed: the frame is queued.
        self.next_msgid = next_msgid;
        let Step::Accept(state) = txn::step(TxnState::NEW, Actor::Local, flags) else {
            debug_assert!(false, "a new transaction accepts our first frame");
            return Err(SendError::TableFull);
        };
        let serial = self.take_serial();
        let slot = Slot {
            msgid,
            serial,
            command: msg.command,
            circuit,
            revcirc,
            state,
            aborted: flags.contains(Flags::ABORT | Flags::DELETE),
            error: 0,
            end: None,
            tag: 0,
        };
        if self.ours.insert(slot).is_none() {
            debug_assert!(false, "checked is_full");
        }
        Ok(TxnId::new(Side::Ours, msgid, serial))
    }

    /// Sends `msg` in transaction `txn` with `flags` (DELETE closes our direction; ABORT
    /// alone is a mid-stream abort; ABORT|DELETE aborts, and is allowed even after our
    /// DELETE while the transaction is not finished). In a transaction the peer opened this
    /// is a reply: REPLY|REVTRANS are set, and CREATE on our first frame.
    pub fn send(
        &mut self,
        now: Instant,
        txn: TxnId,
        msg: &Outgoing<'_>,
        flags: Flags,
    ) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let flags = check_flags(flags)?;
        let side = txn.side();
        let table = self.table(side);
        let i = table
            .find_handle(txn.msgid(), txn.serial())
            .ok_or(SendError::UnknownTxn(txn))?;
        let slot = *table.get(i).ok_or(SendError::UnknownTxn(txn))?;
        let next = match txn::step(slot.state, Actor::Local, flags) {
            Step::Accept(next) => next,
            _ => return Err(SendError::AlreadyClosed(txn)),
        };
        let mut wire_flags = flags;
        if slot.state.local == Dir::Idle {
            wire_flags |= Flags::CREATE;
        }
        if side == Side::Theirs {
            wire_flags |= Flags::REPLY | Flags::REVTRANS;
        }
        if slot.revcirc {
            wire_flags |= Flags::REVCIRC;
        }
        let hdr = HeaderRepr {
            circuit: slot.circuit,
            error: msg.error,
            ..HeaderRepr::new(Cmd::new(msg.command, wire_flags), slot.msgid)
        };
        self.push_app(now, &hdr, msg)?;
        // Committed.
        let mut s = slot;
        s.state = next;
        s.aborted |= flags.contains(Flags::ABORT | Flags::DELETE);
        if next.is_finished() {
            s.end = Some(if s.aborted {
                TxnEnd::Aborted
            } else {
                TxnEnd::Completed
            });
        }
        self.table_mut(side).replace(i, s);
        self.check_clean_close();
        Ok(())
    }

    /// Answers and closes our direction in one frame: LNK_ERROR with `error` and DELETE
    /// (with CREATE|REPLY|REVTRANS if it is our first frame in a peer's transaction), the
    /// way DragonFly answers a transaction.
    pub fn reply(&mut self, now: Instant, txn: TxnId, error: u32) -> Result<(), SendError> {
        let msg = Outgoing::new(Command::LnkError).with_error(error);
        self.send(now, txn, &msg, Flags::DELETE)
    }

    /// Closes our direction of `txn` (LNK_ERROR|DELETE, error 0).
    pub fn delete(&mut self, now: Instant, txn: TxnId) -> Result<(), SendError> {
        self.reply(now, txn, err::OK)
    }

    /// Aborts `txn`: LNK_ERROR|ABORT|DELETE. Allowed after our DELETE (abort-after-DELETE)
    /// while the peer has not closed its side.
    pub fn abort(&mut self, now: Instant, txn: TxnId) -> Result<(), SendError> {
        let msg = Outgoing::new(Command::LnkError);
        self.send(now, txn, &msg, Flags::ABORT | Flags::DELETE)
    }

    /// Sends a one-way message (msgid 0, none of CREATE/DELETE/ABORT); `reply` sets REPLY to
    /// mark a response (as DBG_SHELL output does). `circuit` as for [`open`](Self::open).
    pub fn send_one_way(
        &mut self,
        now: Instant,
        msg: &Outgoing<'_>,
        reply: bool,
        circuit: Option<TxnId>,
    ) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let (circuit, revcirc) = self.resolve_circuit(circuit)?;
        let mut flags = Flags::empty();
        if reply {
            flags |= Flags::REPLY;
        }
        if revcirc {
            flags |= Flags::REVCIRC;
        }
        let hdr = HeaderRepr {
            circuit,
            error: msg.error,
            ..HeaderRepr::new(Cmd::new(msg.command, flags), MsgId(0))
        };
        self.push_app(now, &hdr, msg)?;
        self.stats.one_way_out += 1;
        Ok(())
    }

    /// Starts a clean shutdown: DELETEs our LNK_CONN (and our side of the peer's). The peer
    /// answers by closing both LNK_CONNs; open transactions run to their end (no new ones on
    /// either side); then the link reports [`CloseReason::LocalClose`](super::CloseReason).
    /// Idempotent while closing.
    pub fn close(&mut self, now: Instant) -> Result<(), SendError> {
        match self.phase {
            Phase::Open => {}
            Phase::Closing { .. } => return Ok(()),
            Phase::Closed { .. } => return Err(SendError::Closed),
        }
        let mut frames = 0;
        if self.our_conn.state.local == Dir::Open {
            frames += 1;
        }
        if self
            .peer_conn
            .is_some_and(|p| !p.state.is_finished() && p.state.local != Dir::Closed)
        {
            frames += 1;
        }
        let needed = frames * 64;
        let available = self.send_capacity();
        if needed > available {
            return Err(SendError::WouldBlock { needed, available });
        }
        self.begin_shutdown(now, Side::Ours);
        Ok(())
    }

    /// The circuit field and REVCIRC for frames stacked on `circuit`.
    fn resolve_circuit(&self, circuit: Option<TxnId>) -> Result<(Circuit, bool), SendError> {
        let Some(t) = circuit else {
            return Ok((Circuit(0), false));
        };
        if self
            .table(t.side())
            .find_handle(t.msgid(), t.serial())
            .is_none()
        {
            return Err(SendError::UnknownTxn(t));
        }
        // REVCIRC: the circuit is a transaction the receiver (the peer) opened.
        Ok((Circuit(t.msgid().0), t.side() == Side::Theirs))
    }

    /// The next msgid that is not 0, not our LNK_CONN's and not in our table, and the
    /// counter after it. Bounded: at most `TXNS + 2` candidates are excluded.
    fn free_msgid(&self) -> (MsgId, u64) {
        let mut m = self.next_msgid;
        for _ in 0..TXNS + 3 {
            let id = MsgId(m);
            m = m.wrapping_add(1);
            if id.0 != 0 && id != self.our_conn.msgid && !self.ours.holds_msgid(id) {
                return (id, m);
            }
        }
        debug_assert!(false, "msgid search is bounded by the table size");
        (MsgId(m), m.wrapping_add(1))
    }

    /// Queues an application frame, keeping [`CTL_RESERVE`] free. A frame with an opaque
    /// extended header (`msg.ext`) gets the header size that carries it.
    fn push_app(
        &mut self,
        now: Instant,
        hdr: &HeaderRepr,
        msg: &Outgoing<'_>,
    ) -> Result<(), SendError> {
        let (body, aux, ext) = (msg.body, msg.aux, msg.ext);
        let mut hdr = *hdr;
        if !ext.is_empty() {
            let command = hdr.cmd.command();
            let blocks = 1 + ext.len().div_ceil(64);
            if !matches!(body, Body::None)
                || command.struct_len().is_some()
                || blocks > HDR_MAX_BLOCKS as usize
            {
                return Err(SendError::Encode(EncodeError::BodyMismatch));
            }
            hdr.cmd = Cmd::with_size(command, hdr.cmd.flags(), blocks as u8);
        }
        if !body.fits(hdr.cmd.command()) {
            return Err(SendError::Encode(EncodeError::BodyMismatch));
        }
        if self.rel.in_session() {
            return S::push_app(self, now, &hdr, msg);
        }
        let needed = wire_len(&hdr, aux);
        let max = self.rel.max_frame(TX - CTL_RESERVE);
        if needed > max {
            return Err(SendError::TooLarge { needed, max });
        }
        let available = self.send_capacity();
        if needed > available {
            return Err(SendError::WouldBlock { needed, available });
        }
        let n = self
            .out
            .push_with_ext(&mut self.encoder, &self.crc, &hdr, body, ext, aux)
            .map_err(|e| match e {
                EncodeError::BufferTooSmall { needed, available } => {
                    SendError::WouldBlock { needed, available }
                }
                e => SendError::Encode(e),
            })?;
        self.rel.note_queued(n);
        self.stats.frames_out += 1;
        self.last_tx = now;
        Ok(())
    }
}
