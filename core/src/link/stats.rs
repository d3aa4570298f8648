//! Link counters.

use super::txn::Violation;

/// Protocol violations by kind (see `spec/LINK.md`, "Hostile and malformed sequences").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Violations {
    /// Transactional frames for a msgid that is not open (answered, see the spec).
    pub unknown_txn: u64,
    /// CREATE for a direction already opened (dropped).
    pub duplicate_create: u64,
    /// DELETE (without ABORT) for a direction already closed (dropped).
    pub delete_on_closed: u64,
    /// Other frames after a direction's DELETE (dropped).
    pub after_delete: u64,
    /// CREATE with msgid 0 (refused with PARAM).
    pub bad_msgid: u64,
    /// A second LNK_CONN while one is open (refused with NOSUPP).
    pub duplicate_conn: u64,
}

impl Violations {
    /// Sum over every kind.
    pub const fn total(&self) -> u64 {
        self.unknown_txn
            + self.duplicate_create
            + self.delete_on_closed
            + self.after_delete
            + self.bad_msgid
            + self.duplicate_conn
    }

    pub(crate) fn count(&mut self, v: Violation) {
        let c = match v {
            Violation::UnknownTxn => &mut self.unknown_txn,
            Violation::DuplicateCreate => &mut self.duplicate_create,
            Violation::DeleteOnClosed => &mut self.delete_on_closed,
            Violation::AfterDelete => &mut self.after_delete,
            Violation::BadMsgId => &mut self.bad_msgid,
            Violation::DuplicateConn => &mut self.duplicate_conn,
        };
        *c = c.saturating_add(1);
    }
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkStats {
    /// Frames received (decoded).
    pub frames_in: u64,
    /// Frames queued for sending (application and connection).
    pub frames_out: u64,
    /// Bytes consumed from the input.
    pub bytes_in: u64,
    /// Bytes handed out by `poll_transmit`.
    pub bytes_out: u64,
    /// LNK_PINGs we sent (keepalive).
    pub pings_out: u64,
    /// LNK_PINGs received (each answered with LNK_PING|REPLY).
    pub pings_in: u64,
    /// LNK_PING|REPLY received.
    pub ping_replies_in: u64,
    /// One-way messages delivered to the application.
    pub one_way_in: u64,
    /// One-way messages sent by the application.
    pub one_way_out: u64,
    /// Frames the connection sent by itself (PING replies, LNK_CONN answers and DELETEs,
    /// refusals, error answers).
    pub ctl_out: u64,
    /// Error answers among them (refusals and answers to violations).
    pub error_answers_out: u64,
    /// Protocol violations by kind.
    pub violations: Violations,
    /// Peer CREATEs refused because our table of peer transactions was full (error PARAM).
    pub capacity_refusals: u64,
    /// Peer CREATEs refused because the link is shutting down (error LOSTLINK).
    pub closing_refusals: u64,
    /// ABORT|DELETE for a transaction already finished: discarded, as the protocol says.
    pub late_aborts: u64,
    /// Frames for msgids we refused or answered earlier, absorbed silently.
    pub absorbed: u64,
    /// Remembered refused msgids dropped because the list was full.
    pub tombstone_evictions: u64,
    /// Frames ignored on purpose (LNK_PAD, extra frames on a LNK_CONN transaction).
    pub ignored: u64,
    /// Frames whose extended header was too short for their command (delivered with
    /// [`Body::None`](crate::wire::Body::None)).
    pub bad_bodies: u64,
    /// Queued bytes dropped because the link died (every transaction they belonged to was
    /// reported closed with LOSTLINK).
    pub tx_bytes_discarded: u64,
    /// Input bytes discarded after the link closed.
    pub rx_bytes_discarded: u64,
    /// Connection frames that found no room. Always 0 (the reserve guarantees it); a
    /// non-zero value is a bug.
    pub ctl_dropped: u64,
}
