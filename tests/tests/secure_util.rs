//! Shared helpers for the `secure_*` tests: a deterministic test RNG, key pairs, a
//! handshaken pair of channels and functions that move bytes between them.
//!
//! Included by the other `secure_*.rs` files with `#[path]`; built on its own it has no tests.
#![allow(dead_code)]

use dmsg_core::secure::{Keypair, SecureChannel, SecureConfig, SecureError, SecureEvent};
use dmsg_core::time::Instant;
use proptest::collection::vec;
use proptest::prelude::*;
use rand_core::{CryptoRng, RngCore};

/// SplitMix64. Deterministic so failures replay; marked `CryptoRng` for tests only (the
/// drivers pass an operating-system or hardware RNG).
pub struct TestRng(pub u64);

impl RngCore for TestRng {
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

impl CryptoRng for TestRng {}

pub fn keys(seed: u8) -> Keypair {
    Keypair::from_secret([seed; 32])
}

pub const T0: Instant = Instant::ZERO;

/// Moves everything `from` wants to send into a byte vector.
pub fn take_wire(from: &mut SecureChannel) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        let n = from.poll_transmit(&mut buf).expect("poll_transmit");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Feeds `bytes` to `to` until all are consumed or it fails; returns the plaintext it
/// delivered and the first error.
pub fn feed(to: &mut SecureChannel, now: Instant, bytes: &[u8]) -> (Vec<u8>, Option<SecureError>) {
    let mut plain = Vec::new();
    let mut rest = bytes;
    loop {
        match to.handle_input(now, rest) {
            Ok(n) => {
                rest = &rest[n..];
                let p = to.plaintext().to_vec();
                to.consume(p.len());
                plain.extend_from_slice(&p);
                if n == 0 && p.is_empty() {
                    return (plain, None);
                }
            }
            Err(e) => return (plain, Some(e)),
        }
    }
}

/// A handshaken pair: (initiator, responder), with the events drained.
pub fn established(cfg: SecureConfig) -> (Box<SecureChannel>, Box<SecureChannel>) {
    let mut rng = TestRng(7);
    let (ik, rk) = (keys(1), keys(2));
    let rpub = rk.public();
    let mut i = Box::new(SecureChannel::initiator(cfg, ik, rpub, T0, &mut rng).unwrap());
    let mut r = Box::new(SecureChannel::responder(cfg, rk, T0, &mut rng).unwrap());
    let m1 = take_wire(&mut i);
    assert_eq!(feed(&mut r, T0, &m1), (vec![], None));
    assert!(matches!(
        r.poll_event(),
        Some(SecureEvent::PeerHello { .. })
    ));
    r.accept(T0).unwrap();
    let m2 = take_wire(&mut r);
    assert_eq!(feed(&mut i, T0, &m2), (vec![], None));
    assert!(i.is_established() && r.is_established());
    while i.poll_event().is_some() {}
    while r.poll_event().is_some() {}
    (i, r)
}

/// Sends `data` from `a` as records and returns the ciphertext.
pub fn seal_all(a: &mut SecureChannel, data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = a.send(rest).unwrap();
        rest = &rest[n..];
        wire.extend(take_wire(a));
    }
    wire
}

/// Splits a ciphertext stream into its records (header + body).
pub fn records(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let len = (u16::from_be_bytes([wire[at], wire[at + 1]]) & 0x7FFF) as usize;
        out.push(wire[at..at + 2 + len].to_vec());
        at += 2 + len;
    }
    out
}

#[derive(Clone, Debug)]
/// One way to alter an encrypted stream (the property tests' adversary).
pub enum Corruption {
    /// One bit flipped.
    Flip { at: usize, bit: u8 },
    /// Bytes deleted.
    Delete { at: usize, len: usize },
    /// Bytes inserted.
    Insert { at: usize, bytes: Vec<u8> },
    /// A run repeated in place.
    Duplicate { at: usize, len: usize },
    /// Two adjacent runs exchanged.
    Swap { at: usize, len: usize },
    /// The stream cut short.
    Truncate { at: usize },
}

/// Any [`Corruption`], positions taken modulo the stream length.
pub fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Corruption::Flip { at, bit }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Corruption::Delete { at, len }),
        (any::<usize>(), vec(any::<u8>(), 1..32))
            .prop_map(|(at, bytes)| Corruption::Insert { at, bytes }),
        (any::<usize>(), 1usize..300).prop_map(|(at, len)| Corruption::Duplicate { at, len }),
        (any::<usize>(), 1usize..300).prop_map(|(at, len)| Corruption::Swap { at, len }),
        any::<usize>().prop_map(|at| Corruption::Truncate { at }),
    ]
}

/// Applies `c` to `wire`; returns the altered stream.
pub fn apply(c: &Corruption, wire: &[u8]) -> Vec<u8> {
    let n = wire.len();
    let mut w = wire.to_vec();
    match c {
        Corruption::Flip { at, bit } => w[at % n] ^= 1 << bit,
        Corruption::Delete { at, len } => {
            let at = at % n;
            w.drain(at..(at + len).min(n));
        }
        Corruption::Insert { at, bytes } => {
            let at = at % (n + 1);
            w.splice(at..at, bytes.iter().copied());
        }
        Corruption::Duplicate { at, len } => {
            let at = at % n;
            let seg = w[at..(at + len).min(n)].to_vec();
            w.splice(at..at, seg);
        }
        Corruption::Swap { at, len } => {
            let at = at % n;
            let len = (*len).min((n - at) / 2);
            if len > 0 {
                let (a, b) = w[at..at + 2 * len].split_at_mut(len);
                a.swap_with_slice(b);
            }
        }
        Corruption::Truncate { at } => w.truncate(at % n),
    }
    w
}
