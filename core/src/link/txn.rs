//! Transaction tables and the per-transaction state machine.
//!
//! A transaction has two directions, each `Idle` (not started), `Open` (CREATE seen) or
//! `Closed` (DELETE seen). Every transition of either direction, for frames we send and frames
//! we receive, is decided by [`step`] in one `match`. A transaction is finished when both
//! directions are `Closed`; only then is its slot released (after the application has been
//! told, see [`Event::Closed`](super::Event::Closed)).

use crate::wire::{Circuit, Command, Flags, MsgId};

use super::index::{mix64, PosIndex};

/// Who opened a transaction, which is also the table it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Side {
    /// We opened it (our msgid space; the peer's frames in it carry REPLY/REVTRANS).
    Ours,
    /// The peer opened it (its msgid space; our frames in it carry REPLY|REVTRANS).
    Theirs,
}

/// Handle of one transaction on one link.
///
/// Besides the msgid it carries a per-link serial number, so a handle kept after its
/// transaction finished never reaches a later transaction that reuses the msgid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TxnId {
    side: Side,
    msgid: MsgId,
    serial: u32,
}

impl TxnId {
    pub(crate) const fn new(side: Side, msgid: MsgId, serial: u32) -> TxnId {
        TxnId {
            side,
            msgid,
            serial,
        }
    }

    /// Which table: opened by us or by the peer.
    pub const fn side(&self) -> Side {
        self.side
    }

    /// The msgid on the wire.
    pub const fn msgid(&self) -> MsgId {
        self.msgid
    }

    pub(crate) const fn serial(&self) -> u32 {
        self.serial
    }
}

/// State of one direction of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dir {
    /// No frame sent in this direction yet.
    Idle,
    /// Opened (CREATE sent), not closed.
    Open,
    /// Closed (DELETE sent); only ABORT|DELETE may follow.
    Closed,
}

/// Both directions of a transaction, from this end's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TxnState {
    /// The direction we send in.
    pub local: Dir,
    /// The direction the peer sends in.
    pub remote: Dir,
}

impl TxnState {
    /// Neither direction started.
    pub const NEW: TxnState = TxnState {
        local: Dir::Idle,
        remote: Dir::Idle,
    };

    /// True once both directions sent DELETE.
    pub const fn is_finished(&self) -> bool {
        matches!(self.local, Dir::Closed) && matches!(self.remote, Dir::Closed)
    }

    const fn dir(&self, actor: Actor) -> Dir {
        match actor {
            Actor::Local => self.local,
            Actor::Remote => self.remote,
        }
    }

    const fn with(self, actor: Actor, dir: Dir) -> TxnState {
        match actor {
            Actor::Local => TxnState { local: dir, ..self },
            Actor::Remote => TxnState {
                remote: dir,
                ..self
            },
        }
    }
}

/// Who sends the frame being judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Actor {
    /// This end (the application or the connection itself).
    Local,
    /// The peer.
    Remote,
}

/// A rule a peer's frame broke. Counted in [`Violations`](super::Violations); never fatal by
/// itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Violation {
    /// A transactional frame (DELETE, ABORT, REPLY...) for a msgid that is not open.
    UnknownTxn,
    /// CREATE for a direction that is already open (or closed but not yet finished).
    DuplicateCreate,
    /// DELETE (without ABORT) for a direction that already sent DELETE.
    DeleteOnClosed,
    /// A frame other than ABORT|DELETE after its direction sent DELETE.
    AfterDelete,
    /// CREATE with msgid 0 (reserved for one-way messages).
    BadMsgId,
    /// A second LNK_CONN while the first is open.
    DuplicateConn,
}

/// Verdict of [`step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Step {
    /// The frame is valid; the transaction moves to this state.
    Accept(TxnState),
    /// A late ABORT|DELETE after DELETE: valid, discarded without effect.
    Discard,
    /// The peer broke a rule; drop the frame.
    Violation(Violation),
    /// We tried to send after our DELETE (other than ABORT|DELETE).
    AlreadyClosed,
}

/// The per-transaction state machine: every transition, for both actors, in one `match`.
///
/// `flags` are the frame's flags; for [`Actor::Local`] the caller sets CREATE itself on the
/// first frame of a direction, so it is ignored here.
///
/// ```
/// use dmsg_core::link::txn::{step, Actor, Dir, Step, TxnState};
/// use dmsg_core::wire::Flags;
/// // The peer opens and closes its direction in one frame; ours is still idle.
/// let s = match step(TxnState::NEW, Actor::Remote, Flags::CREATE | Flags::DELETE) {
///     Step::Accept(s) => s,
///     other => panic!("{other:?}"),
/// };
/// assert_eq!(s, TxnState { local: Dir::Idle, remote: Dir::Closed });
/// // A late ABORT|DELETE from the peer is discarded.
/// assert_eq!(step(s, Actor::Remote, Flags::ABORT | Flags::DELETE), Step::Discard);
/// ```
pub fn step(state: TxnState, actor: Actor, flags: Flags) -> Step {
    let create = flags.contains(Flags::CREATE);
    let delete = flags.contains(Flags::DELETE);
    let abort = flags.contains(Flags::ABORT);
    let to = if delete { Dir::Closed } else { Dir::Open };
    match (actor, state.dir(actor), create, delete, abort) {
        // The peer's first frame in its direction. CREATE is expected; a reply direction that
        // starts without it is accepted (be liberal in what you accept).
        (Actor::Remote, Dir::Idle, _, _, _) => Step::Accept(state.with(actor, to)),
        (Actor::Remote, Dir::Open, true, _, _) => Step::Violation(Violation::DuplicateCreate),
        (Actor::Remote, Dir::Open, false, _, _) => Step::Accept(state.with(actor, to)),
        (Actor::Remote, Dir::Closed, true, _, _) => Step::Violation(Violation::DuplicateCreate),
        // Abort-after-DELETE (a relay tearing down a half-closed transaction): discarded.
        (Actor::Remote, Dir::Closed, false, true, true) => Step::Discard,
        (Actor::Remote, Dir::Closed, false, true, false) => {
            Step::Violation(Violation::DeleteOnClosed)
        }
        (Actor::Remote, Dir::Closed, false, false, _) => Step::Violation(Violation::AfterDelete),
        // Our frames; the first one of our direction gets CREATE from the connection.
        (Actor::Local, Dir::Idle | Dir::Open, _, _, _) => Step::Accept(state.with(actor, to)),
        // Abort-after-DELETE is allowed while the transaction is not finished.
        (Actor::Local, Dir::Closed, _, true, true) => Step::Accept(state),
        (Actor::Local, Dir::Closed, _, _, _) => Step::AlreadyClosed,
    }
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TxnEnd {
    /// Both sides sent DELETE.
    Completed,
    /// Both sides sent DELETE and at least one of them was ABORT|DELETE.
    Aborted,
    /// The link died first; the error is LOSTLINK.
    LinkLost,
}

/// One open transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    pub msgid: MsgId,
    pub serial: u32,
    pub command: Command,
    pub circuit: Circuit,
    /// REVCIRC as we must send it (our view of whose msgid `circuit` is).
    pub revcirc: bool,
    pub state: TxnState,
    pub aborted: bool,
    /// `error` of the peer's frame that closed its direction.
    pub error: u32,
    /// Set when finished (or lost) and not yet reported to the application.
    pub end: Option<TxnEnd>,
    /// Opaque byte of the layer above (`Connection::set_txn_tag`).
    pub tag: u8,
}

impl Slot {
    pub const fn is_live(&self) -> bool {
        self.end.is_none()
    }
}

/// A fixed-capacity table of transactions, keyed by msgid among live slots.
///
/// A hash index over msgids (`4 * N` bytes) and counts of taken and finished entries make
/// every lookup O(1) expected, so a hub link carrying thousands of LNK_SPANs does not scan
/// its table for every frame. Slots never move. A slot's `msgid` and `end` change only
/// through [`insert`](Self::insert), [`replace`](Self::replace), [`take_ended`](Self::take_ended)
/// and [`lose_all`](Self::lose_all), which keep the index and the counts in step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Table<const N: usize> {
    slots: [Option<Slot>; N],
    index: PosIndex<N>,
    /// Taken entries (live plus finished-but-unreported).
    used: usize,
    /// Finished-but-unreported entries.
    ended: usize,
    /// Where the search for a free entry starts.
    free_hint: usize,
}

fn msgid_hash(m: MsgId) -> u64 {
    mix64(m.0 ^ 0x7a61_b1e5)
}

impl<const N: usize> Table<N> {
    pub const fn new() -> Self {
        Table {
            slots: [None; N],
            index: PosIndex::new(),
            used: 0,
            ended: 0,
            free_hint: 0,
        }
    }

    /// Index of the first slot for `msgid` for which `is` holds.
    fn find_by(&self, msgid: MsgId, is: impl Fn(&Slot) -> bool) -> Option<usize> {
        self.index.find(
            msgid_hash(msgid),
            |i| matches!(self.slots.get(i), Some(Some(s)) if s.msgid == msgid && is(s)),
        )
    }

    /// Index of the live slot for `msgid`.
    pub fn find_live(&self, msgid: MsgId) -> Option<usize> {
        self.find_by(msgid, |s| s.is_live())
    }

    /// Index of the live slot a handle names.
    pub fn find_handle(&self, msgid: MsgId, serial: u32) -> Option<usize> {
        self.find_by(msgid, |s| s.is_live() && s.serial == serial)
    }

    /// Index of the slot a handle names, live or finished-but-unreported.
    pub fn find_any(&self, msgid: MsgId, serial: u32) -> Option<usize> {
        self.find_by(msgid, |s| s.serial == serial)
    }

    /// The first finished slot (the one `take_ended` would return).
    pub fn first_ended(&self) -> Option<&Slot> {
        if self.ended == 0 {
            return None;
        }
        self.slots.iter().flatten().find(|s| !s.is_live())
    }

    pub fn get(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i).and_then(|s| s.as_ref())
    }

    /// The slot at `i`, for changes that keep its `msgid` and `end` (e.g. its tag); use
    /// [`replace`](Self::replace) for the rest.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.slots.get_mut(i).and_then(|s| s.as_mut())
    }

    /// Stores a new state of the slot at `i` (same msgid), counting a newly finished one.
    pub fn replace(&mut self, i: usize, slot: Slot) {
        let Some(Some(old)) = self.slots.get(i) else {
            debug_assert!(false, "replacing an empty slot");
            return;
        };
        debug_assert_eq!(old.msgid, slot.msgid, "a slot keeps its msgid");
        match (old.is_live(), slot.is_live()) {
            (true, false) => self.ended += 1,
            (false, true) => self.ended -= 1,
            _ => {}
        }
        self.slots[i] = Some(slot);
    }

    /// Stores `slot` in a free entry; `None` when every entry is taken (live or waiting to be
    /// reported).
    pub fn insert(&mut self, slot: Slot) -> Option<usize> {
        if self.used == N {
            return None;
        }
        let i = (0..N)
            .map(|k| (self.free_hint + k) % N)
            .find(|&k| self.slots[k].is_none())?;
        self.slots[i] = Some(slot);
        let ok = self.index.insert(msgid_hash(slot.msgid), i);
        debug_assert!(ok, "index has a slot per entry");
        self.used += 1;
        if !slot.is_live() {
            self.ended += 1;
        }
        self.free_hint = (i + 1) % N;
        debug_assert!(self.used <= N);
        Some(i)
    }

    pub fn is_full(&self) -> bool {
        self.used == N
    }

    /// Entries taken (live plus finished-but-unreported).
    pub fn occupied(&self) -> usize {
        self.used
    }

    /// Live transactions.
    pub fn live(&self) -> usize {
        self.used - self.ended
    }

    pub fn has_ended(&self) -> bool {
        self.ended > 0
    }

    /// Frees the first finished slot and returns it.
    pub fn take_ended(&mut self) -> Option<Slot> {
        if self.ended == 0 {
            return None;
        }
        let i = self
            .slots
            .iter()
            .position(|s| matches!(s, Some(s) if !s.is_live()))?;
        let slot = self.slots[i]?;
        let slots = &self.slots;
        self.index.remove(msgid_hash(slot.msgid), i, |q| {
            slots
                .get(q)
                .and_then(|s| s.as_ref())
                .map_or(0, |s| msgid_hash(s.msgid))
        });
        self.slots[i] = None;
        self.used -= 1;
        self.ended -= 1;
        self.free_hint = i;
        Some(slot)
    }

    /// Marks every live transaction as lost with the link.
    pub fn lose_all(&mut self) {
        for s in self.slots.iter_mut().flatten() {
            if s.is_live() {
                s.end = Some(TxnEnd::LinkLost);
                self.ended += 1;
            }
        }
        debug_assert_eq!(self.ended, self.used);
    }

    pub fn contains_live_msgid(&self, msgid: MsgId) -> bool {
        self.find_live(msgid).is_some()
    }

    /// True when any entry, live or waiting to be reported, uses `msgid`.
    pub fn holds_msgid(&self, msgid: MsgId) -> bool {
        self.find_by(msgid, |_| true).is_some()
    }
}

/// Peer msgids we refused (capacity, closing) or answered as unknown while the peer's
/// direction was still open: the peer will close it with a DELETE (and may send frames before
/// it sees our answer), which must be absorbed silently instead of being answered again.
/// A small FIFO; when full the oldest entry is dropped (counted), after which a late frame for
/// it is merely answered once more as unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tombstones {
    ids: [MsgId; TOMBSTONES],
    len: usize,
}

/// Capacity of [`Tombstones`].
pub(crate) const TOMBSTONES: usize = 8;

impl Tombstones {
    pub const fn new() -> Self {
        Tombstones {
            ids: [MsgId(0); TOMBSTONES],
            len: 0,
        }
    }

    /// Remembers `msgid`; returns true when an older entry had to be dropped.
    pub fn push(&mut self, msgid: MsgId) -> bool {
        if self.contains(msgid) {
            return false;
        }
        let evicted = self.len == TOMBSTONES;
        if evicted {
            self.ids.copy_within(1.., 0);
            self.len -= 1;
        }
        self.ids[self.len] = msgid;
        self.len += 1;
        evicted
    }

    pub fn contains(&self, msgid: MsgId) -> bool {
        self.ids[..self.len].contains(&msgid)
    }

    pub fn remove(&mut self, msgid: MsgId) {
        if let Some(i) = self.ids[..self.len].iter().position(|m| *m == msgid) {
            self.ids.copy_within(i + 1..self.len, i);
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRS: [Dir; 3] = [Dir::Idle, Dir::Open, Dir::Closed];

    #[test]
    fn every_state_and_flag_combination_has_a_verdict_and_never_reopens() {
        for local in DIRS {
            for remote in DIRS {
                for bits in 0..16u32 {
                    let flags = Flags::from_bits_truncate(bits << 28);
                    for actor in [Actor::Local, Actor::Remote] {
                        let s = TxnState { local, remote };
                        if let Step::Accept(n) = step(s, actor, flags) {
                            // A closed direction never opens again.
                            assert!(s.local != Dir::Closed || n.local == Dir::Closed);
                            assert!(s.remote != Dir::Closed || n.remote == Dir::Closed);
                            // Only the actor's direction moves.
                            match actor {
                                Actor::Local => assert_eq!(n.remote, s.remote),
                                Actor::Remote => assert_eq!(n.local, s.local),
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tombstones_are_a_bounded_fifo() {
        let mut t = Tombstones::new();
        for i in 1..=TOMBSTONES as u64 {
            assert!(!t.push(MsgId(i)));
        }
        assert!(t.push(MsgId(100)));
        assert!(!t.contains(MsgId(1)));
        assert!(t.contains(MsgId(100)));
        t.remove(MsgId(5));
        assert!(!t.contains(MsgId(5)));
        assert!(t.contains(MsgId(6)));
    }
}
