//! Why a secure channel ended.

use core::fmt;

/// The typed reason a [`SecureChannel`](super::SecureChannel) failed. Every variant but
/// [`Closed`](Self::Closed) and [`InvalidConfig`](Self::InvalidConfig) is fatal for the
/// channel: once returned, every later call returns the same error, no further plaintext is
/// delivered, nothing more is sent, and the kind is counted in
/// [`SecureFailures`](super::SecureFailures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SecureError {
    /// The handshake did not finish before the deadline.
    HandshakeTimeout,
    /// A handshake message had the wrong length or framing.
    HandshakeMalformed,
    /// A handshake message did not authenticate: the peer does not hold the static key we
    /// expect (wrong key, a man in the middle), or the message was altered, spliced from
    /// another handshake or replayed against a different ephemeral key.
    HandshakeAuth,
    /// The peer sent a low-order public key (a Diffie-Hellman result of all zeros).
    WeakKey,
    /// The peer authenticated, but policy refused its static key
    /// ([`SecureChannel::refuse`](super::SecureChannel::refuse)).
    PeerRefused,
    /// A record header announced more than the bound
    /// ([`MAX_RECORD_PLAINTEXT`](super::MAX_RECORD_PLAINTEXT) + tag).
    RecordTooLarge {
        /// The announced ciphertext length.
        len: u16,
    },
    /// A record header announced less than a tag's worth of bytes.
    RecordMalformed,
    /// A record did not authenticate: a byte was flipped, or a record was dropped,
    /// reordered, replayed or taken from another connection.
    RecordAuth,
    /// The byte stream ended inside a record, or without the peer's authenticated close.
    Truncated,
    /// Bytes arrived after the peer's authenticated close.
    DataAfterClose,
    /// A nonce counter would have wrapped (cannot happen with a valid rekey interval).
    NonceExhausted,
    /// Local misuse, not fatal: sending after [`close`](super::SecureChannel::close),
    /// `accept` when no peer waits for a decision, `close` before the handshake is done.
    Closed,
    /// The configuration was invalid (e.g. a rekey interval of 0).
    InvalidConfig,
}

impl fmt::Display for SecureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecureError::HandshakeTimeout => write!(f, "secure handshake timed out"),
            SecureError::HandshakeMalformed => write!(f, "malformed secure handshake message"),
            SecureError::HandshakeAuth => {
                write!(
                    f,
                    "secure handshake failed to authenticate (wrong or unknown key)"
                )
            }
            SecureError::WeakKey => write!(f, "peer sent a low-order public key"),
            SecureError::PeerRefused => write!(f, "peer's static key refused by policy"),
            SecureError::RecordTooLarge { len } => {
                write!(f, "record of {len} bytes exceeds the bound")
            }
            SecureError::RecordMalformed => write!(f, "malformed record header"),
            SecureError::RecordAuth => write!(f, "record failed authentication"),
            SecureError::Truncated => write!(f, "stream truncated (no authenticated close)"),
            SecureError::DataAfterClose => write!(f, "data after the peer's close"),
            SecureError::NonceExhausted => write!(f, "nonce space exhausted"),
            SecureError::Closed => write!(f, "channel closed"),
            SecureError::InvalidConfig => write!(f, "invalid secure channel configuration"),
        }
    }
}
