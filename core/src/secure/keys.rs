//! Static X25519 keys: a node's own [`Keypair`] and a peer's [`PublicKey`].

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

/// Length of an X25519 key (public or secret), in bytes.
pub const KEY_LEN: usize = 32;

/// An X25519 public key: who a peer is.
///
/// Plain bytes; comparing two keys is how a driver applies per-peer policy after
/// [`SecureChannel::peer_static`](super::SecureChannel::peer_static).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A static X25519 key pair. The secret half is zeroized when the pair is dropped.
///
/// ```
/// use dmsg_core::secure::Keypair;
/// let kp = Keypair::from_secret([7u8; 32]);
/// assert_eq!(Keypair::from_secret([7u8; 32]).public(), kp.public());
/// ```
#[derive(Clone)]
pub struct Keypair {
    secret: [u8; KEY_LEN],
    public: PublicKey,
}

impl Keypair {
    /// The pair whose secret key is `secret` (clamped by X25519 when used).
    pub fn from_secret(secret: [u8; KEY_LEN]) -> Keypair {
        let public = PublicKey(x25519_dalek::x25519(
            secret,
            x25519_dalek::X25519_BASEPOINT_BYTES,
        ));
        Keypair { secret, public }
    }

    /// A fresh pair from the caller's cryptographic random number generator.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Keypair {
        let mut secret = [0u8; KEY_LEN];
        rng.fill_bytes(&mut secret);
        let kp = Keypair::from_secret(secret);
        secret.zeroize();
        kp
    }

    /// The public half.
    pub const fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret half (for writing a key file; handle with care).
    pub const fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }

    /// X25519 with the peer's public key.
    pub(crate) fn dh(&self, peer: &PublicKey) -> [u8; KEY_LEN] {
        x25519_dalek::x25519(self.secret, peer.0)
    }
}

impl Drop for Keypair {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_rfc7748_vector() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let sk = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let pk = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(Keypair::from_secret(sk).public(), PublicKey(pk));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let kp = Keypair::from_secret([0xAB; 32]);
        let s = std::format!("{kp:?}");
        assert!(!s.contains("abababab"));
        assert!(s.contains("redacted"));
    }

    pub(crate) fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
