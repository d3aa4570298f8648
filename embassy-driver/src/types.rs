//! What the application and the runner exchange: settings, commands, events, channels.
//!
//! Everything here is plain owned data with compile-time sizes: `A` bounds the aux data a
//! command or event carries (a `heapless::Vec<u8, A>`), `NC` and `NE` the depths of the two
//! channels. An event is a copy of the core's borrowed event, so the application holds it as
//! long as it likes while the runner goes on.

use dmsg_core::link::{CloseReason, SendError, TxnEnd, TxnId};
use dmsg_core::time::Duration;
use dmsg_core::wire::body::peer_type;
use dmsg_core::wire::{Circuit, Command, Flags, Uuid, DEFAULT_PORT};
use embassy_net::IpEndpoint;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::channel::Channel;
use heapless::Vec;

use crate::backoff::BackoffConfig;

/// Settings of a leaf: the hub to reach, the identity it announces, and its timers.
///
/// Every field is plain data and [`LeafConfig::new`] is a `const fn`, so a configuration can
/// be a `static` in flash:
///
/// ```
/// use dmsg_embassy::{BackoffConfig, LeafConfig};
/// use dmsg_core::wire::{Command, Uuid};
/// use embassy_net::{IpAddress, IpEndpoint, Ipv4Address};
///
/// static CONFIG: LeafConfig<'static> = LeafConfig {
///     pfs_id: Uuid([7; 16]),
///     pfs_label: "temp-sensor",
///     echo: Some(Command::DbgShell),
///     backoff: BackoffConfig::new(0x1234_5678),
///     ..LeafConfig::new(
///         IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(192, 168, 1, 10)), 987),
///         "leaf-07",
///     )
/// };
/// assert_eq!(CONFIG.hub.port, 987);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafConfig<'a> {
    /// The hub's address and port (DMSG's port is [`DEFAULT_PORT`], 987).
    pub hub: IpEndpoint,
    /// `peer_label` of our LNK_CONN and LNK_SPAN (at most 127 bytes, no NUL).
    pub peer_label: &'a str,
    /// `pfs_label` of our LNK_SPAN (at most 127 bytes, no NUL).
    pub pfs_label: &'a str,
    /// `peer_id` (cluster id) of our LNK_CONN and LNK_SPAN.
    pub peer_id: Uuid,
    /// `pfs_id` (node id) of our LNK_SPAN.
    pub pfs_id: Uuid,
    /// `media_id` of our LNK_CONN.
    pub media_id: Uuid,
    /// Our peer type, in LNK_CONN and LNK_SPAN (default [`peer_type::CLIENT`]).
    pub peer_type: u8,
    /// `pfs_type` of our LNK_SPAN (default 0).
    pub pfs_type: u8,
    /// Span types we want the hub to relay to us (`1 << peer_type` bits). Default 0: a leaf
    /// wants no spans, so the hub sends none and the transaction table stays free.
    pub peer_mask: u64,
    /// Open our LNK_SPAN once the hub's LNK_CONN arrived, and keep it open (default true).
    pub advertise_span: bool,
    /// `proto_version` of our LNK_SPAN (default 1, the current span protocol).
    pub span_proto_version: u16,
    /// Answer transactions (and one-way messages) of this command by sending their aux data
    /// back: a transaction gets one frame of the same command with the same aux and DELETE,
    /// a one-way message a one-way REPLY. Such traffic never reaches the application.
    /// Default `None`.
    pub echo: Option<Command>,
    /// Keepalive: LNK_PING after this long without sending (default 1 s).
    pub ping_interval: Duration,
    /// The link is dead after this long without receiving (default 10 s).
    pub idle_timeout: Duration,
    /// Longest clean shutdown (default 10 s).
    pub close_timeout: Duration,
    /// Protocol violations tolerated before the link is cut (default 256).
    pub max_violations: u64,
    /// Longest TCP connect (default 5 s).
    pub connect_timeout: Duration,
    /// Reconnect delays (the runner replaces the seed with the one it is given).
    pub backoff: BackoffConfig,
}

impl<'a> LeafConfig<'a> {
    /// A leaf called `peer_label` that reaches the hub at `hub`, with the defaults listed on
    /// each field.
    pub const fn new(hub: IpEndpoint, peer_label: &'a str) -> Self {
        LeafConfig {
            hub,
            peer_label,
            pfs_label: "",
            peer_id: Uuid::NIL,
            pfs_id: Uuid::NIL,
            media_id: Uuid::NIL,
            peer_type: peer_type::CLIENT,
            pfs_type: 0,
            peer_mask: 0,
            advertise_span: true,
            span_proto_version: 1,
            echo: None,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            max_violations: 256,
            connect_timeout: Duration::from_secs(5),
            backoff: BackoffConfig::new(0),
        }
    }

    /// The hub at `addr`, DMSG's default port.
    pub const fn hub_at(addr: embassy_net::IpAddress) -> IpEndpoint {
        IpEndpoint::new(addr, DEFAULT_PORT)
    }
}

/// Aux data of a command or event, at most `A` bytes.
pub type Aux<const A: usize> = Vec<u8, A>;

/// A received frame, copied out of the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Msg<const A: usize> {
    /// The command.
    pub command: Command,
    /// Its flags (CREATE, DELETE, REPLY, ABORT, ...).
    pub flags: Flags,
    /// The `circuit` header field as received (0: the link itself).
    pub circuit: Circuit,
    /// The `error` header field.
    pub error: u32,
    /// The first `A` bytes of the aux data.
    pub aux: Aux<A>,
    /// Length of the aux data as received; larger than `aux.len()` when it was cut.
    pub aux_len: u32,
}

impl<const A: usize> Msg<A> {
    /// True when the aux data was longer than `A` and only its beginning is in `aux`.
    pub fn is_truncated(&self) -> bool {
        self.aux_len as usize > self.aux.len()
    }
}

/// Why the runner is not connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Down {
    /// The TCP connect failed.
    Connect(embassy_net::tcp::ConnectError),
    /// The TCP connect did not finish within [`LeafConfig::connect_timeout`].
    ConnectTimeout,
    /// The link closed (keepalive, the hub closed it, the stream broke, ...).
    Link(CloseReason),
}

/// What the runner tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LeafEvent<const A: usize> {
    /// TCP is connected and our LNK_CONN is on its way.
    Up,
    /// The hub's LNK_CONN arrived (and was accepted): the link is established.
    PeerConn {
        /// The hub's peer type.
        peer_type: u8,
        /// The hub's peer id.
        peer_id: Uuid,
    },
    /// The hub's first answer to our LNK_CONN (0: accepted).
    ConnAnswered {
        /// The `error` field of the answer.
        error: u32,
    },
    /// Our LNK_SPAN was sent; it stays open while the link lives. Transactions can be
    /// stacked on it (`circuit: Some(txn)`).
    SpanAdvertised {
        /// The span's transaction.
        txn: TxnId,
    },
    /// Our LNK_SPAN could not be sent.
    SpanFailed {
        /// Why.
        error: SendError,
    },
    /// Our LNK_SPAN ended: the hub closed it (the runner closed its side too), or the link
    /// died (error LOSTLINK). It is advertised again on the next connection.
    SpanClosed {
        /// The hub's error code.
        error: u32,
    },
    /// The hub opened a transaction. Answer it with [`LeafCommand::Send`] /
    /// [`LeafCommand::Reply`].
    Request {
        /// The transaction.
        txn: TxnId,
        /// Its first frame.
        msg: Msg<A>,
    },
    /// A further frame in an open transaction (answers to ours, more of the hub's).
    Message {
        /// The transaction.
        txn: TxnId,
        /// The frame.
        msg: Msg<A>,
    },
    /// A one-way message.
    OneWay {
        /// The frame.
        msg: Msg<A>,
    },
    /// A transaction finished (both sides closed it, or the link died: error LOSTLINK).
    Closed {
        /// The transaction; its handle is now stale.
        txn: TxnId,
        /// The hub's closing error code, or LOSTLINK.
        error: u32,
        /// How it ended.
        end: TxnEnd,
    },
    /// The outcome of [`LeafCommand::Open`].
    OpenResult {
        /// The command's tag.
        tag: u32,
        /// The new transaction, or why nothing was sent.
        result: Result<TxnId, SendError>,
    },
    /// A command other than `Open` was refused; nothing was sent.
    Refused {
        /// The transaction it named (`None` for a one-way message).
        txn: Option<TxnId>,
        /// Why.
        error: SendError,
    },
    /// The connection is gone; the runner reconnects after a backoff. Every open transaction
    /// was reported [`LeafEvent::Closed`] first.
    Down(Down),
    /// Feature `secure`: the connection's secure channel failed (handshake refused, timed out
    /// or not authentic, a record that did not verify, the stream cut without the hub's
    /// authenticated close, ...). Nothing from a failed record reached the link; the link's
    /// `Down` follows, and the runner reconnects after a backoff.
    #[cfg(feature = "secure")]
    SecureFailed(dmsg_core::secure::SecureError),
    /// Reliable session only: the transport was lost but the link lives on (open
    /// transactions and our span stay open); the runner reconnects and resumes it.
    /// Commands are refused until [`LeafEvent::Resumed`]. If the session dies instead, its
    /// transactions are reported [`LeafEvent::Closed`] and [`LeafEvent::Down`] follows.
    Suspended {
        /// Why the transport was given up.
        reason: CloseReason,
    },
    /// Reliable session only: the link runs again on a new transport; every frame the hub
    /// had not acknowledged is sent again, nothing lost or duplicated.
    Resumed {
        /// How long the transport was away.
        outage: Duration,
    },
}

/// What the application asks of the runner. Commands given while the link is down are
/// refused with [`SendError::Closed`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LeafCommand<const A: usize> {
    /// Open a transaction (CREATE). Answered with [`LeafEvent::OpenResult`] with `tag`.
    Open {
        /// Any value; comes back in the result.
        tag: u32,
        /// The command.
        command: Command,
        /// Aux data.
        aux: Aux<A>,
        /// Also DELETE: a one-frame request.
        delete: bool,
        /// The open transaction to stack it on (e.g. our span); `None` for circuit 0.
        circuit: Option<TxnId>,
    },
    /// Send a frame in an open transaction (a reply in the hub's transactions).
    Send {
        /// The transaction.
        txn: TxnId,
        /// The command.
        command: Command,
        /// Aux data.
        aux: Aux<A>,
        /// The `error` field.
        error: u32,
        /// Close our direction with this frame.
        delete: bool,
    },
    /// Answer and close our direction: LNK_ERROR with `error` and DELETE.
    Reply {
        /// The transaction.
        txn: TxnId,
        /// The result code.
        error: u32,
    },
    /// Close our direction (LNK_ERROR|DELETE, error 0).
    Delete {
        /// The transaction.
        txn: TxnId,
    },
    /// Abort (LNK_ERROR|ABORT|DELETE).
    Abort {
        /// The transaction.
        txn: TxnId,
    },
    /// A one-way message (msgid 0).
    OneWay {
        /// The command.
        command: Command,
        /// Aux data.
        aux: Aux<A>,
        /// Mark it as a response (REPLY).
        reply: bool,
        /// The open transaction to send it on; `None` for circuit 0.
        circuit: Option<TxnId>,
    },
}

impl<const A: usize> LeafCommand<A> {
    /// The transaction the command names, if any.
    pub fn txn(&self) -> Option<TxnId> {
        match *self {
            LeafCommand::Send { txn, .. }
            | LeafCommand::Reply { txn, .. }
            | LeafCommand::Delete { txn }
            | LeafCommand::Abort { txn } => Some(txn),
            LeafCommand::Open { .. } | LeafCommand::OneWay { .. } => None,
        }
    }

    /// The event that reports `result`, the outcome of this command: always one for `Open`,
    /// one for the others only when they were refused.
    pub fn outcome(&self, result: Result<Option<TxnId>, SendError>) -> Option<LeafEvent<A>> {
        match (self, result) {
            (LeafCommand::Open { tag, .. }, Ok(Some(txn))) => Some(LeafEvent::OpenResult {
                tag: *tag,
                result: Ok(txn),
            }),
            (LeafCommand::Open { tag, .. }, Ok(None)) => Some(LeafEvent::OpenResult {
                tag: *tag,
                result: Err(SendError::Closed),
            }),
            (LeafCommand::Open { tag, .. }, Err(e)) => Some(LeafEvent::OpenResult {
                tag: *tag,
                result: Err(e),
            }),
            (_, Ok(_)) => None,
            (cmd, Err(error)) => Some(LeafEvent::Refused {
                txn: cmd.txn(),
                error,
            }),
        }
    }
}

/// The two channels between the application and the runner: commands in, events out.
///
/// - `A`: aux bytes a command or event carries (larger received aux data is cut, see
///   [`Msg::is_truncated`]; an echo of more than `A` bytes is answered with PARAM);
/// - `NC`, `NE`: channel depths.
///
/// Memory: about `NC * (A + 40) + NE * (A + 48)` bytes plus a few wakers.
pub struct Channels<M: RawMutex, const A: usize, const NC: usize, const NE: usize> {
    /// Commands from the application.
    pub commands: Channel<M, LeafCommand<A>, NC>,
    /// Events for the application. Keep receiving them: the runner waits (and stops reading
    /// the socket) while this channel is full.
    pub events: Channel<M, LeafEvent<A>, NE>,
}

impl<M: RawMutex, const A: usize, const NC: usize, const NE: usize> Channels<M, A, NC, NE> {
    /// Empty channels.
    pub const fn new() -> Self {
        Channels {
            commands: Channel::new(),
            events: Channel::new(),
        }
    }
}

impl<M: RawMutex, const A: usize, const NC: usize, const NE: usize> Default
    for Channels<M, A, NC, NE>
{
    fn default() -> Self {
        Self::new()
    }
}
