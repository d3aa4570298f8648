//! Secure-channel counters.

use super::error::SecureError;

/// Failures by kind (each at most 1 per channel, since every failure ends the channel; a
/// driver sums them over channels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SecureFailures {
    /// [`SecureError::HandshakeTimeout`].
    pub handshake_timeout: u64,
    /// [`SecureError::HandshakeMalformed`].
    pub handshake_malformed: u64,
    /// [`SecureError::HandshakeAuth`].
    pub handshake_auth: u64,
    /// [`SecureError::WeakKey`].
    pub weak_key: u64,
    /// [`SecureError::PeerRefused`].
    pub peer_refused: u64,
    /// [`SecureError::RecordTooLarge`].
    pub record_too_large: u64,
    /// [`SecureError::RecordMalformed`].
    pub record_malformed: u64,
    /// [`SecureError::RecordAuth`].
    pub record_auth: u64,
    /// [`SecureError::Truncated`].
    pub truncated: u64,
    /// [`SecureError::DataAfterClose`].
    pub data_after_close: u64,
    /// [`SecureError::NonceExhausted`].
    pub nonce_exhausted: u64,
}

impl SecureFailures {
    /// Sum over every kind.
    pub const fn total(&self) -> u64 {
        self.handshake_timeout
            + self.handshake_malformed
            + self.handshake_auth
            + self.weak_key
            + self.peer_refused
            + self.record_too_large
            + self.record_malformed
            + self.record_auth
            + self.truncated
            + self.data_after_close
            + self.nonce_exhausted
    }

    pub(crate) fn count(&mut self, e: SecureError) {
        let c = match e {
            SecureError::HandshakeTimeout => &mut self.handshake_timeout,
            SecureError::HandshakeMalformed => &mut self.handshake_malformed,
            SecureError::HandshakeAuth => &mut self.handshake_auth,
            SecureError::WeakKey => &mut self.weak_key,
            SecureError::PeerRefused => &mut self.peer_refused,
            SecureError::RecordTooLarge { .. } => &mut self.record_too_large,
            SecureError::RecordMalformed => &mut self.record_malformed,
            SecureError::RecordAuth => &mut self.record_auth,
            SecureError::Truncated => &mut self.truncated,
            SecureError::DataAfterClose => &mut self.data_after_close,
            SecureError::NonceExhausted => &mut self.nonce_exhausted,
            SecureError::Closed | SecureError::InvalidConfig => return,
        };
        *c = c.saturating_add(1);
    }
}

/// Counters of one secure channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SecureStats {
    /// Handshakes completed (0 or 1).
    pub handshakes: u64,
    /// Records received and authenticated.
    pub records_in: u64,
    /// Records sealed for sending.
    pub records_out: u64,
    /// Plaintext bytes delivered from authenticated records.
    pub plaintext_in: u64,
    /// Plaintext bytes accepted by `send`.
    pub plaintext_out: u64,
    /// Wire bytes consumed by `handle_input`.
    pub wire_in: u64,
    /// Wire bytes handed out by `poll_transmit`.
    pub wire_out: u64,
    /// Receive-direction rekeys.
    pub rekeys_in: u64,
    /// Send-direction rekeys.
    pub rekeys_out: u64,
    /// Why the channel failed, by kind.
    pub failures: SecureFailures,
}
