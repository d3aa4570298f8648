//! Proof that a reconnecting peer resumes the same reliable session (`spec/SECURE.md`).

use zeroize::Zeroize;

use super::noise::mac;

/// A per-session secret both ends derive from the handshake that created the session
/// ([`SecureChannel::resume_secret`](super::SecureChannel::resume_secret)); zeroized on drop.
///
/// On a reconnect, a fresh handshake runs (new keys, new handshake hash); the resuming side
/// sends [`proof`](Self::proof) of the *new* handshake hash under the *old* secret, and the
/// other side checks it with [`verify`](Self::verify). Only a peer that took part in the
/// original handshake holds the secret, and the proof is bound to this one connection, so it
/// cannot be replayed on another.
///
/// ```
/// use dmsg_core::secure::ResumeSecret;
/// let s = ResumeSecret::new([5; 32]);
/// let p = s.proof(&[1; 32]);
/// assert!(s.verify(&[1; 32], &p));
/// assert!(!s.verify(&[2; 32], &p));
/// ```
#[derive(Clone)]
pub struct ResumeSecret([u8; 32]);

const PROOF_LABEL: &[u8] = b"dmsg-rs resume proof v1";

impl ResumeSecret {
    /// Wraps raw secret bytes (as stored by a session that must survive a reconnect).
    pub const fn new(bytes: [u8; 32]) -> ResumeSecret {
        ResumeSecret(bytes)
    }

    /// The proof for the connection whose handshake hash is `handshake_hash`.
    pub fn proof(&self, handshake_hash: &[u8; 32]) -> [u8; 32] {
        mac(&self.0, &[PROOF_LABEL, handshake_hash])
    }

    /// Whether `proof` is right for `handshake_hash` (constant-time comparison).
    pub fn verify(&self, handshake_hash: &[u8; 32], proof: &[u8; 32]) -> bool {
        let mut want = self.proof(handshake_hash);
        let diff = want.iter().zip(proof).fold(0u8, |a, (x, y)| a | (x ^ y));
        want.zeroize();
        diff == 0
    }
}

impl Drop for ResumeSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl core::fmt::Debug for ResumeSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ResumeSecret(<redacted>)")
    }
}
