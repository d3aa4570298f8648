//! Errors of the link's commands and construction.

use core::fmt;

use crate::decode;
use crate::encode::EncodeError;

use super::txn::TxnId;

/// Why a command was refused. Nothing was queued and no state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendError {
    /// The output queue has no room now: drain
    /// [`poll_transmit`](super::Connection::poll_transmit) and retry.
    WouldBlock {
        /// Bytes the command needs.
        needed: usize,
        /// Bytes available to the application now.
        available: usize,
    },
    /// The frame is larger than the output queue can ever hold for the application.
    TooLarge {
        /// Bytes the frame needs.
        needed: usize,
        /// Largest frame the application can queue.
        max: usize,
    },
    /// Our table of transactions is full (or holds finished transactions whose
    /// [`Event::Closed`](super::Event::Closed) was not polled yet).
    TableFull,
    /// The handle names no open transaction (finished, lost, or never valid).
    UnknownTxn(TxnId),
    /// Our direction of the transaction already sent DELETE (only `abort` may follow).
    AlreadyClosed(TxnId),
    /// Flags other than DELETE and ABORT were given (the connection sets the rest).
    BadFlags,
    /// The link is shutting down: no new transactions.
    Closing,
    /// The link is closed.
    Closed,
    /// The frame is malformed (the body does not match the command).
    Encode(EncodeError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::WouldBlock { needed, available } => write!(
                f,
                "output queue full: {needed} bytes needed, {available} available; drain poll_transmit"
            ),
            SendError::TooLarge { needed, max } => {
                write!(f, "frame of {needed} bytes exceeds the output queue's {max}")
            }
            SendError::TableFull => f.write_str("transaction table full"),
            SendError::UnknownTxn(t) => write!(f, "no open transaction {}", t.msgid()),
            SendError::AlreadyClosed(t) => {
                write!(f, "transaction {} already closed in our direction", t.msgid())
            }
            SendError::BadFlags => f.write_str("only DELETE and ABORT may be given"),
            SendError::Closing => f.write_str("link is shutting down"),
            SendError::Closed => f.write_str("link is closed"),
            SendError::Encode(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SendError {}

/// A configuration a connection cannot run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// The decoder refused its limits.
    Decoder(decode::ConfigError),
    /// `conn_msgid` is 0.
    ZeroConnMsgId,
    /// Our LNK_CONN could not be encoded.
    Encode(EncodeError),
    /// [`LinkConfig::session`](super::LinkConfig::session) is set on a connection without
    /// session storage (use a [`ReliableConnection`](super::ReliableConnection)).
    SessionUnsupported,
    /// [`SessionOffer::id`](super::SessionOffer::id) is 0.
    ZeroSessionId,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Decoder(e) => write!(f, "decoder: {e}"),
            ConfigError::ZeroConnMsgId => f.write_str("conn_msgid must not be 0"),
            ConfigError::Encode(e) => write!(f, "LNK_CONN: {e}"),
            ConfigError::SessionUnsupported => {
                f.write_str("this connection type has no storage for the reliable session")
            }
            ConfigError::ZeroSessionId => f.write_str("session id must not be 0"),
        }
    }
}

impl core::error::Error for ConfigError {}
