//! Node and per-link counters of the cluster layer.

/// Counters of the whole node. High-water marks say how close each table came to its bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeStats {
    /// LNK_SPANs accepted into the span table.
    pub spans_accepted: u64,
    /// LNK_SPANs refused because the span table was full (answered with error PARAM).
    pub spans_refused_full: u64,
    /// LNK_SPANs refused because they carried no span body (answered with error PARAM).
    pub spans_refused_bad: u64,
    /// Spans removed (their transaction closed or their link went away).
    pub spans_removed: u64,
    /// Updates of open spans (a LNK_SPAN frame inside an open span transaction).
    pub span_updates: u64,
    /// Relays opened (LNK_SPAN transactions we started).
    pub relays_opened: u64,
    /// Relays we closed (no longer wanted: a better link, or the span went away).
    pub relays_closed: u64,
    /// Relays the peer closed while we wanted them (e.g. its table was full).
    pub relays_refused: u64,
    /// Relay opens postponed because the relay table was full.
    pub relay_table_full: u64,
    /// Relay opens or closes postponed because the link's output or table had no room
    /// (retried when it frees up).
    pub relay_retries: u64,
    /// Transactions relayed between two links (routes created at this hop).
    pub routes_relayed: u64,
    /// Application transactions opened over a circuit (by us or to us).
    pub routes_app: u64,
    /// Routes ended because their circuit or link was lost (LOSTLINK sent).
    pub routes_lost: u64,
    /// Frames forwarded along routes.
    pub frames_relayed: u64,
    /// Bytes of aux data forwarded along routes.
    pub aux_bytes_relayed: u64,
    /// CREATEs over a circuit that does not exist (or is closing), answered with CANTCIRC.
    pub cantcirc_sent: u64,
    /// CREATEs over a circuit refused for lack of room (route table, the next link's
    /// transaction table, a frame too large for it), answered with error PARAM.
    pub route_refusals: u64,
    /// Frames of refused or dying transactions, dropped on purpose.
    pub frames_dropped: u64,
    /// One-way frames over a circuit that could not be routed (dropped).
    pub one_way_unroutable: u64,
    /// Times a link's next frame had to wait for room elsewhere (backpressure).
    pub stalls: u64,
    /// DBG_SHELL commands answered.
    pub shell_commands: u64,
    /// Most spans held at once.
    pub spans_high_water: u64,
    /// Most relays held at once.
    pub relays_high_water: u64,
    /// Most routes held at once.
    pub routes_high_water: u64,
}

/// Counters of one link, as seen by the cluster layer (the link's own counters are in
/// [`LinkStats`](crate::link::LinkStats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkNodeStats {
    /// LNK_SPANs received and accepted on this link.
    pub spans_in: u64,
    /// LNK_SPANs refused on this link (table full or malformed).
    pub spans_refused: u64,
    /// Relays opened on this link.
    pub relays_out: u64,
    /// Frames received on this link and forwarded elsewhere.
    pub frames_relayed_in: u64,
    /// Frames forwarded out on this link.
    pub frames_relayed_out: u64,
    /// Times this link's next frame waited for room elsewhere.
    pub stalls: u64,
    /// DBG_SHELL commands answered on this link.
    pub shell_commands: u64,
}
