//! Property tests of the secure channel's record stream.
//!
//! The invariants: an untouched stream, cut into any pieces, delivers exactly what was sent;
//! and any corruption of the encrypted stream (a flipped bit, deleted, inserted, duplicated or
//! swapped bytes, a truncation) ends the channel with a typed error while delivering only
//! the plaintext of the records wholly before the first altered byte, so no forged or altered
//! byte, and hence no forged frame, ever reaches the frame decoder.

#[path = "secure_util.rs"]
mod secure_util;

use dmsg_core::secure::{SecureChannel, SecureConfig, SecureError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use secure_util::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    }
}

/// Seals `msgs` one `send` call each; returns the stream and, per record, its wire end and
/// plaintext length.
fn seal(i: &mut SecureChannel, msgs: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut plain = Vec::new();
    for m in msgs {
        wire.extend(seal_all(i, m));
        plain.extend_from_slice(m);
    }
    (wire, plain)
}

/// Feeds `wire` in pieces of the given sizes (cycled), then signals end of stream.
fn feed_chunked(
    r: &mut SecureChannel,
    wire: &[u8],
    chunks: &[usize],
) -> (Vec<u8>, Option<SecureError>) {
    let mut plain = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < wire.len() {
        let end = (at + chunks[k % chunks.len()]).min(wire.len());
        k += 1;
        let (p, e) = feed(r, T0, &wire[at..end]);
        plain.extend(p);
        if e.is_some() {
            return (plain, e);
        }
        at = end;
    }
    (plain, r.handle_eof().err())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn untouched_stream_in_any_pieces_delivers_exactly_what_was_sent(
        msgs in vec(vec(any::<u8>(), 1..5000), 1..6),
        chunks in vec(1usize..3000, 1..8),
        rekey_after in 1u64..5,
    ) {
        let (mut i, mut r) = established(SecureConfig { rekey_after, ..SecureConfig::default() });
        let (mut wire, plain) = seal(&mut i, &msgs);
        i.close().unwrap();
        wire.extend(take_wire(&mut i));
        let (got, err) = feed_chunked(&mut r, &wire, &chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, plain);
    }

    #[test]
    fn any_corruption_ends_the_channel_and_delivers_only_intact_records(
        msgs in vec(vec(any::<u8>(), 1..3000), 1..5),
        c in corruption(),
        chunks in vec(1usize..3000, 1..8),
    ) {
        let (mut i, mut r) = established(SecureConfig::default());
        let (mut wire, _) = seal(&mut i, &msgs);
        i.close().unwrap();
        wire.extend(take_wire(&mut i));
        let bad = apply(&c, &wire);
        prop_assume!(bad != wire);
        // Plaintext of the records that end before the first altered byte.
        let first_diff = wire.iter().zip(&bad).position(|(a, b)| a != b).unwrap_or(wire.len().min(bad.len()));
        let mut allowed = Vec::new();
        let mut end = 0;
        for (rec, m) in records(&wire).iter().zip(msgs.iter().flat_map(|m| m.chunks(2048))) {
            end += rec.len();
            if end <= first_diff {
                allowed.extend_from_slice(m);
            }
        }
        let (got, err) = feed_chunked(&mut r, &bad, &chunks);
        prop_assert!(err.is_some(), "corrupted stream accepted: {:?}", c);
        prop_assert_eq!(got, allowed, "exactly the intact records, nothing past the corruption");
        prop_assert_eq!(r.stats().failures.total(), 1);
    }
}
