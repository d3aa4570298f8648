//! Encrypted links (`SimConfig::with_encryption`): every simulated transport runs through a
//! pair of core [`SecureChannel`]s, as a driver with keys would run it (spec/SECURE.md).
//!
//! - Every node has a static key pair derived from the simulation seed; every node knows
//!   every node's public key (the keys directory of a cluster).
//! - The dialing end of a transport (`Conn::ends[0]`) is the Noise IK initiator and names the
//!   key of the node it dials; the accepting end is the responder and accepts the
//!   initiator's static key only if it is one of the keys it knows.
//! - The nodes' plaintext byte streams go into the channels; only ciphertext crosses the
//!   virtual link. Node output written before the handshake completes waits in an outbox.
//! - A channel error (a corrupted byte, a refused key, a handshake timeout) ends the
//!   transport: the driver closes the socket, both nodes see `handle_close`, and the nodes
//!   recover through their normal link-down (or, with sessions, suspend and resume) path.
//!
//! Every plaintext byte a channel delivers is checked against the bytes the other node
//! wrote (`SecureLink::expect`): a byte that differs would be a forged byte reaching the frame
//! decoder, and is counted in `SimCounters::forged_bytes` (the invariants want 0).

use std::collections::VecDeque;

use dmsg_core::secure::rand_core::{CryptoRng, RngCore};
use dmsg_core::secure::{Keypair, PublicKey, SecureChannel, SecureConfig, SecureError};
use dmsg_core::time::Instant;

/// SplitMix64, seeded from the simulation's PRNG, so a seed replays the same handshakes.
/// Marked `CryptoRng` for the simulation only (a driver passes an operating-system RNG).
pub struct SimCryptoRng(pub u64);

impl RngCore for SimCryptoRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl CryptoRng for SimCryptoRng {}

/// The static key pair of node `i` in the run of `seed`.
pub fn node_keypair(seed: u64, i: usize) -> Keypair {
    let mut rng = SimCryptoRng(seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    Keypair::generate(&mut rng)
}

/// A key pair no node knows (an impostor dialing with its own key).
pub fn impostor_keypair(seed: u64) -> Keypair {
    let mut rng = SimCryptoRng(!seed ^ 0x1BAD_5EED);
    Keypair::generate(&mut rng)
}

/// The two channels of one encrypted transport and what the simulator tracks about them.
pub struct SecureLink {
    /// `[initiator (dialing end, ends[0]), responder (accepting end, ends[1])]`.
    pub ch: [SecureChannel; 2],
    /// Plaintext the node at each end wrote that its channel has not taken yet (the
    /// handshake is still running, or a sealed record waits).
    pub outbox: [Vec<u8>; 2],
    /// Plaintext each end wrote that the other end has not received yet: what the other
    /// end's channel may deliver, byte for byte.
    pub expect: [VecDeque<u8>; 2],
    /// A byte of this transport's ciphertext was altered in flight.
    pub corrupted: bool,
    /// The initiator dialed with a key nobody knows.
    pub impostor: bool,
}

impl SecureLink {
    /// A new pair: the initiator holds `local` and names `remote` (the accepting node's
    /// key); the responder holds `responder`. Handshake message 1 is queued at once.
    pub fn new(
        now: Instant,
        initiator: Keypair,
        remote: PublicKey,
        responder: Keypair,
        rng: &mut SimCryptoRng,
        impostor: bool,
    ) -> Result<SecureLink, SecureError> {
        let cfg = SecureConfig::default();
        let i = SecureChannel::initiator(cfg, initiator, remote, now, rng)?;
        let r = SecureChannel::responder(cfg, responder, now, rng)?;
        Ok(SecureLink {
            ch: [i, r],
            outbox: [Vec::new(), Vec::new()],
            expect: [VecDeque::new(), VecDeque::new()],
            corrupted: false,
            impostor,
        })
    }

    /// Moves end `k`'s outbox into its channel as far as it takes it and returns the
    /// ciphertext the channel has to send (handshake messages and records).
    pub fn pump(&mut self, k: usize) -> Result<Vec<u8>, SecureError> {
        let mut wire = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut progress = false;
            if !self.outbox[k].is_empty() {
                let n = self.ch[k].send(&self.outbox[k])?;
                if n > 0 {
                    self.outbox[k].drain(..n);
                    progress = true;
                }
            }
            let n = self.ch[k].poll_transmit(&mut buf)?;
            if n > 0 {
                wire.extend_from_slice(&buf[..n]);
                progress = true;
            }
            if !progress {
                return Ok(wire);
            }
        }
    }

    /// True when both channels are established and nothing waits in an outbox.
    pub fn settled(&self) -> bool {
        self.ch.iter().all(|c| c.is_established())
            && self.outbox.iter().all(|o| o.is_empty())
            && self.ch.iter().all(|c| !c.wants_transmit())
    }
}
