//! Proof that a reconnecting peer resumes the same reliable session (`spec/SECURE.md`).

use zeroize::Zeroize;

use super::noise::{mac, Role};

/// A per-session secret both ends derive from the handshake that created the session
/// ([`SecureChannel::resume_secret`](super::SecureChannel::resume_secret)); zeroized on drop.
///
/// On a reconnect, a fresh handshake runs (new keys, new handshake hash); each side sends
/// [`proof`](Self::proof) of the *new* handshake hash under the *old* secret, labelled with
/// its role on the new connection, and the other side checks it with
/// [`verify`](Self::verify). Only a peer that took part in the original handshake holds the
/// secret; the proof is bound to this one connection (it cannot be replayed on another) and
/// to its sender's role (it cannot be reflected back).
///
/// ```
/// use dmsg_core::secure::{ResumeSecret, Role};
/// let s = ResumeSecret::new([5; 32]);
/// let p = s.proof(&[1; 32], Role::Initiator);
/// assert!(s.verify(&[1; 32], Role::Initiator, &p));
/// assert!(!s.verify(&[2; 32], Role::Initiator, &p));
/// assert!(!s.verify(&[1; 32], Role::Responder, &p));
/// ```
#[derive(Clone)]
pub struct ResumeSecret([u8; 32]);

const PROOF_LABEL: &[u8] = b"dmsg-rs resume proof v1";

impl ResumeSecret {
    /// Wraps raw secret bytes (as stored by a session that must survive a reconnect).
    pub const fn new(bytes: [u8; 32]) -> ResumeSecret {
        ResumeSecret(bytes)
    }

    /// The proof sent by the side playing `sender` on the connection whose handshake hash is
    /// `handshake_hash`.
    pub fn proof(&self, handshake_hash: &[u8; 32], sender: Role) -> [u8; 32] {
        let role = match sender {
            Role::Initiator => [b'I'],
            Role::Responder => [b'R'],
        };
        mac(&self.0, &[PROOF_LABEL, &role, handshake_hash])
    }

    /// Whether `proof` is the one `sender` must send for `handshake_hash` (constant-time
    /// comparison).
    pub fn verify(&self, handshake_hash: &[u8; 32], sender: Role, proof: &[u8; 32]) -> bool {
        let mut want = self.proof(handshake_hash, sender);
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
