//! Property test of the secure channel under a DMSG link: two `Connection`s talk through a
//! pair of `SecureChannel`s, and the ciphertext from one to the other is corrupted (a flipped
//! bit, deleted, inserted, duplicated or swapped bytes, a truncation).
//!
//! The invariant, at the link level (`secure_props.rs` checks the channel on its own): any
//! corruption of the encrypted stream ends the link (a typed `SecureError`, then the driver
//! reports the transport closed and the link closes with `TransportClosed`), and the
//! receiving `Connection` sees exactly the events that the plaintext of the records wholly
//! before the first altered byte produces - no forged or altered frame, no decode error, no
//! protocol violation.

#[path = "link_util.rs"]
mod link_util;
#[path = "secure_util.rs"]
mod secure_util;

use dmsg_core::link::{CloseReason, Outgoing, SendError};
use dmsg_core::secure::{SecureChannel, SecureConfig, SecureError};
use dmsg_core::wire::body::peer_type;
use dmsg_core::wire::{Command, Flags};
use link_util::{config, feed as feed_link, flush, Ev, Link};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use secure_util::{apply, corruption, established, records, seal_all, take_wire, T0};

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    }
}

/// What the sending link writes: a one-way message, or a one-frame transaction.
#[derive(Clone, Debug)]
struct Msg {
    open: bool,
    aux: Vec<u8>,
}

fn msg() -> impl Strategy<Value = Msg> {
    (any::<bool>(), vec(any::<u8>(), 0..700)).prop_map(|(open, aux)| Msg { open, aux })
}

/// The genuine stream: link A's plaintext (its LNK_CONN, then `msgs`), sealed by the
/// initiator of a fresh established channel pair in pieces of `piece` bytes, then the
/// authenticated close. Returns (ciphertext, plaintext, per record (wire end, plaintext end)).
fn genuine(msgs: &[Msg], piece: usize) -> (Vec<u8>, Vec<u8>, Vec<(usize, usize)>) {
    let (mut i, _) = established(SecureConfig::default());
    let mut a =
        Box::new(Link::new(T0, &config(peer_type::ROUTER, "a"), Default::default()).unwrap());
    let mut plain = Vec::new();
    let mut events = Vec::new();
    flush(&mut *a, T0, &mut plain, &mut events);
    for m in msgs {
        let out = Outgoing::new(Command::DbgShell).with_aux(&m.aux);
        let r = if m.open {
            a.open(T0, &out, Flags::DELETE, None).map(|_| ())
        } else {
            Err(SendError::TableFull)
        };
        if r.is_err() {
            a.send_one_way(T0, &out, false, None).unwrap();
        }
        flush(&mut *a, T0, &mut plain, &mut events);
    }
    let mut wire = Vec::new();
    let mut ends = Vec::new();
    let mut sealed = 0;
    for chunk in plain.chunks(piece) {
        let w = seal_all(&mut i, chunk);
        // seal_all may cut a chunk into several records (2048-byte bound).
        for rec in records(&w) {
            let p = rec.len() - 2 - 16;
            wire.extend_from_slice(&rec);
            sealed += p;
            ends.push((wire.len(), sealed));
        }
    }
    i.close().unwrap();
    wire.extend(take_wire(&mut i));
    (wire, plain, ends)
}

/// The events link B reports for `plain` (fed in one piece), its output discarded.
fn events_for(plain: &[u8]) -> (Box<Link>, Vec<Ev>) {
    let mut b =
        Box::new(Link::new(T0, &config(peer_type::HAMMER2, "b"), Default::default()).unwrap());
    let (mut out, mut events) = (Vec::new(), Vec::new());
    flush(&mut *b, T0, &mut out, &mut events);
    let mut pipe = plain.to_vec();
    feed_link(&mut *b, T0, &mut pipe, &mut out, &mut events);
    (b, events)
}

/// Link B behind the responder of a fresh established pair receives `wire` in pieces of
/// the given sizes. On a channel error the driver reports the transport closed. Returns
/// B's events, the channel error and B.
fn receive(wire: &[u8], chunks: &[usize]) -> (Vec<Ev>, Option<SecureError>, Box<Link>) {
    let (_, mut r): (_, Box<SecureChannel>) = established(SecureConfig::default());
    let mut b =
        Box::new(Link::new(T0, &config(peer_type::HAMMER2, "b"), Default::default()).unwrap());
    let (mut out, mut events) = (Vec::new(), Vec::new());
    flush(&mut *b, T0, &mut out, &mut events);
    let mut at = 0;
    let mut k = 0;
    let mut err = None;
    'outer: while at < wire.len() {
        let end = (at + chunks[k % chunks.len()]).min(wire.len());
        k += 1;
        let mut rest = &wire[at..end];
        loop {
            match r.handle_input(T0, rest) {
                Ok(n) => {
                    rest = &rest[n..];
                    let mut p = r.plaintext().to_vec();
                    r.consume(p.len());
                    let got = !p.is_empty();
                    feed_link(&mut *b, T0, &mut p, &mut out, &mut events);
                    if n == 0 && !got {
                        break;
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break 'outer;
                }
            }
        }
        at = end;
    }
    if err.is_none() {
        err = r.handle_eof().err();
    }
    if err.is_some() {
        // The driver closes the socket and tells the link.
        b.handle_close();
        flush(&mut *b, T0, &mut out, &mut events);
    }
    (events, err, b)
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn any_corruption_of_the_encrypted_stream_ends_the_link_without_a_forged_frame(
        msgs in vec(msg(), 1..12),
        piece in 50usize..3000,
        c in corruption(),
        chunks in vec(1usize..3000, 1..6),
    ) {
        let (wire, plain, ends) = genuine(&msgs, piece);
        // Untouched, the stream carries every frame and closes cleanly.
        let (clean, err, _) = receive(&wire, &chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&clean, &events_for(&plain).1);

        let bad = apply(&c, &wire);
        prop_assume!(bad != wire);
        let first = wire.iter().zip(&bad).position(|(x, y)| x != y).unwrap_or(wire.len().min(bad.len()));
        // Plaintext of the records wholly before the first altered byte.
        let intact = ends.iter().filter(|(w, _)| *w <= first).map(|(_, p)| *p).max().unwrap_or(0);
        let want = events_for(&plain[..intact]).1;

        let (got, err, b) = receive(&bad, &chunks);
        prop_assert!(err.is_some(), "corrupted stream accepted: {:?}", c);
        // Exactly the events of the intact prefix, then the link ends: every transaction
        // B still had open is closed as lost, and the link closes, transport gone.
        prop_assert!(got.len() > want.len(), "the link did not end");
        prop_assert_eq!(&got[..want.len()], &want[..], "events beyond the intact records");
        for ev in &got[want.len()..got.len() - 1] {
            prop_assert!(matches!(ev, Ev::Closed(_, 0x21, _)), "after the error only lost transactions close: {:?}", ev);
        }
        prop_assert_eq!(got.last(), Some(&Ev::LinkClosed(CloseReason::TransportClosed)));
        prop_assert_eq!(b.stats().violations.total(), 0, "no forged frame reached the link");
    }
}
