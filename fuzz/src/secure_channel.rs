//! The `secure_channel` target: the secure channel's receive path under arbitrary bytes.
//!
//! Input: `[mode, chunk, rest...]`. `chunk` (1..=256) is the size of the pieces the
//! ciphertext is fed in.
//! - mode % 3 == 0: `rest` is raw input to a fresh responder (handshake message 1 parser).
//! - mode % 3 == 1: `rest` is raw input to an established channel (record parser).
//! - mode % 3 == 2: `rest` = `[split, ...]`: the first `split * 16` bytes are plaintext the
//!   peer sends (as records of up to 300 bytes, then an authenticated close); the remaining
//!   bytes are XORed over that genuine ciphertext from its start.
//!
//! Invariants (any violation panics): `handle_input` never reports more than it was given;
//! raw bytes never produce plaintext, never complete a handshake; in mode 2 exactly the
//! plaintext of the records before the first altered byte is delivered, and the channel
//! ends with an error (or a clean close when nothing was altered); after an error every call
//! returns that same error.
//!
//! Included by `tests/tests/secure_fuzz.rs` with `#[path]`, so stable CI replays it too.

use dmsg_core::secure::rand_core::{CryptoRng, RngCore};
use dmsg_core::secure::{Keypair, SecureChannel, SecureConfig, SecureError, SecureEvent};
use dmsg_core::time::Instant;

/// Deterministic RNG for the target (fuzzing needs repeatable runs).
struct FuzzRng(u64);

impl RngCore for FuzzRng {
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

impl CryptoRng for FuzzRng {}

const T0: Instant = Instant::ZERO;

fn transmit(ch: &mut SecureChannel) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 997];
    loop {
        let n = ch
            .poll_transmit(&mut buf)
            .expect("healthy channel transmits");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A freshly handshaken initiator/responder pair (deterministic keys and RNG).
fn handshaken_pair() -> (SecureChannel, SecureChannel) {
    let mut rng = FuzzRng(3);
    let (a, b) = (Keypair::from_secret([1; 32]), Keypair::from_secret([2; 32]));
    let cfg = SecureConfig {
        rekey_after: 3,
        ..SecureConfig::default()
    };
    let mut i = SecureChannel::initiator(cfg, a, b.public(), T0, &mut rng).unwrap();
    let mut r = SecureChannel::responder(cfg, b, T0, &mut rng).unwrap();
    let m1 = transmit(&mut i);
    assert_eq!(r.handle_input(T0, &m1), Ok(m1.len()));
    r.accept(T0).unwrap();
    let m2 = transmit(&mut r);
    assert_eq!(i.handle_input(T0, &m2), Ok(m2.len()));
    (i, r)
}

/// A fresh responder that has seen nothing (deterministic keys and RNG).
fn fresh_responder() -> SecureChannel {
    SecureChannel::responder(
        SecureConfig::default(),
        Keypair::from_secret([2; 32]),
        T0,
        &mut FuzzRng(9),
    )
    .unwrap()
}

// Under cargo-fuzz (`--cfg fuzzing`) the channel state is `Clone`: the handshakes run once
// per process and every input starts from a copy, so an input costs its own parsing and
// cipher work, not four X25519 operations (about 40x more executions per second). The
// stable replay (`tests/tests/secure_fuzz.rs`) handshakes per input; the states are equal.
#[cfg(fuzzing)]
fn pair() -> (SecureChannel, SecureChannel) {
    static PAIR: std::sync::OnceLock<(SecureChannel, SecureChannel)> = std::sync::OnceLock::new();
    PAIR.get_or_init(handshaken_pair).clone()
}

#[cfg(not(fuzzing))]
fn pair() -> (SecureChannel, SecureChannel) {
    handshaken_pair()
}

#[cfg(fuzzing)]
fn responder() -> SecureChannel {
    static FRESH: std::sync::OnceLock<SecureChannel> = std::sync::OnceLock::new();
    FRESH.get_or_init(fresh_responder).clone()
}

#[cfg(not(fuzzing))]
fn responder() -> SecureChannel {
    fresh_responder()
}

/// Feeds `wire` in `chunk`-sized pieces; returns delivered plaintext and the first error.
fn feed(ch: &mut SecureChannel, wire: &[u8], chunk: usize) -> (Vec<u8>, Option<SecureError>) {
    let mut plain = Vec::new();
    for piece in wire.chunks(chunk) {
        let mut rest = piece;
        loop {
            match ch.handle_input(T0, rest) {
                Ok(n) => {
                    assert!(n <= rest.len(), "consumed more than given");
                    rest = &rest[n..];
                    let p = ch.plaintext().to_vec();
                    ch.consume(p.len());
                    plain.extend_from_slice(&p);
                    if n == 0 && p.is_empty() {
                        break;
                    }
                }
                Err(e) => {
                    assert_sticky(ch, e);
                    return (plain, Some(e));
                }
            }
        }
        // Input is always taken, except by a responder waiting for accept/refuse, which
        // no input in this target can reach without a genuine message 1.
        assert!(rest.is_empty(), "{} bytes left untaken", rest.len());
    }
    match ch.handle_eof() {
        Ok(()) => (plain, None),
        Err(e) => {
            assert_sticky(ch, e);
            (plain, Some(e))
        }
    }
}

fn assert_sticky(ch: &mut SecureChannel, e: SecureError) {
    assert_eq!(ch.error(), Some(e));
    assert_eq!(ch.handle_input(T0, b"x"), Err(e));
    assert_eq!(ch.send(b"x"), Err(e));
    assert!(ch.plaintext().is_empty());
    assert_eq!(ch.stats().failures.total(), 1);
}

/// Runs one input (see the module documentation).
pub fn check_secure_channel(data: &[u8]) {
    let [mode, chunk, rest @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk) + 1;
    match mode % 3 {
        0 => {
            let mut r = responder();
            let (plain, _) = feed(&mut r, rest, chunk);
            assert!(plain.is_empty());
            assert!(!r.is_established());
            assert!(
                !matches!(r.poll_event(), Some(SecureEvent::Established { .. })),
                "raw bytes completed a handshake"
            );
        }
        1 => {
            let (_, mut r) = pair();
            let (plain, err) = feed(&mut r, rest, chunk);
            assert!(plain.is_empty(), "raw bytes decrypted to {plain:?}");
            if !rest.is_empty() {
                assert!(err.is_some(), "raw bytes accepted");
            }
            assert_eq!(r.stats().records_in, 0);
        }
        _ => {
            let Some((split, rest)) = rest.split_first() else {
                return;
            };
            let n = (usize::from(*split) * 16).min(rest.len());
            let (msg, mask) = rest.split_at(n);
            let (mut i, mut r) = pair();
            let mut wire = Vec::new();
            let mut intact_ends = Vec::new(); // (wire end, plaintext end) per record
            for (k, piece) in msg.chunks(300).enumerate() {
                assert_eq!(i.send(piece), Ok(piece.len()));
                wire.extend(transmit(&mut i));
                intact_ends.push((wire.len(), (k * 300 + piece.len()).min(msg.len())));
            }
            i.close().unwrap();
            wire.extend(transmit(&mut i));
            let mut bad = wire.clone();
            for (b, m) in bad.iter_mut().zip(mask) {
                *b ^= m;
            }
            let first = bad.iter().zip(&wire).position(|(a, b)| a != b);
            let (plain, err) = feed(&mut r, &bad, chunk);
            match first {
                None => {
                    assert_eq!(err, None);
                    assert_eq!(plain, msg);
                }
                Some(d) => {
                    assert!(err.is_some(), "altered stream accepted");
                    let allowed = intact_ends
                        .iter()
                        .filter(|(end, _)| *end <= d)
                        .map(|(_, p)| *p)
                        .max()
                        .unwrap_or(0);
                    assert_eq!(
                        plain,
                        &msg[..allowed],
                        "delivered beyond the intact records"
                    );
                }
            }
        }
    }
}
