//! Link configuration and the extension bit set carried in LNK_CONN.

use core::fmt;

use crate::session::SessionConfig;
use crate::time::Duration;
use crate::wire::body::ConnRepr;
use crate::wire::MsgId;

/// A set of link extensions, offered in [`ConnRepr::ext_offer`] (the reserved u32 at 0x8C of
/// LNK_CONN, always zero from DragonFly).
///
/// An extension is on for a link only when *both* LNK_CONNs offer it, so a DragonFly peer,
/// which sends zero and never reads the field, negotiates nothing. Undefined bits are never
/// sent and are ignored on receipt. See `spec/LINK.md`, "Extension negotiation".
///
/// ```
/// use dmsg_core::link::Extensions;
/// let ours = Extensions::RELIABLE_SESSION_V1;
/// assert!(ours.negotiate(0).is_empty()); // DragonFly offers nothing
/// assert_eq!(ours.negotiate(0xFFFF_FFFF), Extensions::RELIABLE_SESSION_V1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Extensions(u32);

impl Extensions {
    /// No extension.
    pub const NONE: Extensions = Extensions(0);
    /// Bit 0: reliable session layer, version 1 (sequence numbers, acks, resume). Defined so it
    /// can be negotiated; the session itself is specified and built separately.
    pub const RELIABLE_SESSION_V1: Extensions = Extensions(1 << 0);
    /// Every bit this implementation defines.
    pub const KNOWN: Extensions = Extensions(1 << 0);

    /// The set with exactly the defined bits of `bits` (undefined bits are dropped).
    pub const fn from_bits_truncate(bits: u32) -> Extensions {
        Extensions(bits & Self::KNOWN.0)
    }

    /// The bits as sent in `ext_offer`.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when no extension is in the set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every extension of `other` is in `self`.
    pub const fn contains(self, other: Extensions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets together.
    pub const fn union(self, other: Extensions) -> Extensions {
        Extensions(self.0 | other.0)
    }

    /// The extensions on for a link where we offered `self` and the peer's LNK_CONN carried
    /// `peer_offer` in `ext_offer`: the defined bits both sides offered.
    pub const fn negotiate(self, peer_offer: u32) -> Extensions {
        Extensions(self.0 & peer_offer & Self::KNOWN.0)
    }
}

impl fmt::Display for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        if self.contains(Extensions::RELIABLE_SESSION_V1) {
            f.write_str("reliable-session-v1")?;
            first = false;
        }
        let unknown = self.0 & !Self::KNOWN.0;
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

/// Settings of one link. Plain data; build one with [`LinkConfig::default`] and change fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkConfig {
    /// Our LNK_CONN: peer_type, peer_mask, peer_id, media_id, label, ... `ext_offer` and
    /// `ext_param` are overwritten from [`LinkConfig::offer`] (and zero), `session_id` from
    /// [`LinkConfig::session`] (zero without it).
    pub conn: ConnRepr,
    /// Extensions we offer (only defined bits are sent).
    pub offer: Extensions,
    /// Send a LNK_PING when nothing was sent for this long (default 1 s; at least 1 ms).
    pub ping_interval: Duration,
    /// Declare the link dead when nothing was received for this long (default 10 s).
    pub idle_timeout: Duration,
    /// Longest a clean shutdown (LNK_CONN DELETE exchange plus closing the open
    /// transactions) may take before the link is cut with LOSTLINK (default 10 s).
    pub close_timeout: Duration,
    /// Protocol violations tolerated before the link is closed with
    /// [`CloseReason::ProtocolError`](super::CloseReason::ProtocolError) (default 256).
    pub max_violations: u64,
    /// Seed of the salt's random bits (any value; should differ between links).
    pub salt_seed: u32,
    /// msgid of our LNK_CONN transaction (default 1; must not be 0).
    pub conn_msgid: MsgId,
    /// First msgid tried for transactions we open (default 2). Allocation counts up from here,
    /// skipping 0 and every msgid still open, so an open msgid is never reused.
    pub msgid_base: u64,
    /// Check the received salt frame counter (default true, as DragonFly does).
    pub check_sequence: bool,
    /// Offer the reliable session (`spec/SESSION.md`; default `None`: plain DMSG, byte for
    /// byte as without this field). Needs a connection with session storage
    /// ([`ReliableConnection`](super::ReliableConnection)); a plain
    /// [`Connection`](super::Connection) refuses it
    /// ([`ConfigError::SessionUnsupported`](super::ConfigError::SessionUnsupported)).
    pub session: Option<SessionOffer>,
}

/// The reliable session a link offers in its LNK_CONN ([`LinkConfig::session`]). It runs when
/// the peer's LNK_CONN offers it too; a DragonFly peer never does, and the link is then plain
/// DMSG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionOffer {
    /// Our session identity: non-zero, random, and fresh for every new connection object (a
    /// restarted node must not reuse one; the identity is how the peer recognises a restart
    /// and how an accepting node routes a resumed transport to its connection).
    pub id: u64,
    /// Timers of the session: grace period, delayed ack, retransmission, FIN close.
    pub config: SessionConfig,
}

impl SessionOffer {
    /// The session with identity `id` and default timers (10 s grace).
    pub const fn new(id: u64) -> SessionOffer {
        SessionOffer {
            id,
            config: SessionConfig::DEFAULT,
        }
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            conn: ConnRepr {
                peer_mask: u64::MAX,
                ..ConnRepr::default()
            },
            offer: Extensions::NONE,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
            max_violations: 256,
            salt_seed: 0x5eed_1234,
            conn_msgid: MsgId(1),
            msgid_base: 2,
            check_sequence: true,
            session: None,
        }
    }
}
