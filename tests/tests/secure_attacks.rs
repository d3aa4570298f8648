//! The secure channel under attack: each case asserts the typed error, the counter, that the
//! channel ended visibly and that nothing was delivered from a record that failed.

#[path = "secure_util.rs"]
mod secure_util;

use dmsg_core::secure::{
    Keypair, Role, SecureChannel, SecureConfig, SecureError, SecureEvent, MAX_RECORD_PLAINTEXT,
    RECORD_FIN,
};
use dmsg_core::time::{Duration, Instant};
use secure_util::*;

fn cfg() -> SecureConfig {
    SecureConfig::default()
}

fn initiator(local: Keypair, remote: &Keypair, seed: u64) -> SecureChannel {
    SecureChannel::initiator(cfg(), local, remote.public(), T0, &mut TestRng(seed)).unwrap()
}

fn responder(local: Keypair, seed: u64) -> SecureChannel {
    SecureChannel::responder(cfg(), local, T0, &mut TestRng(seed)).unwrap()
}

/// The channel has failed with `e`: every call returns it, nothing is pending.
fn assert_dead(ch: &mut SecureChannel, e: SecureError) {
    assert_eq!(ch.error(), Some(e));
    assert!(!ch.is_established());
    assert!(ch.plaintext().is_empty());
    assert_eq!(ch.handle_input(T0, b"more"), Err(e));
    assert_eq!(ch.send(b"x"), Err(e));
    assert_eq!(ch.poll_transmit(&mut [0u8; 64]), Err(e));
    assert_eq!(ch.handle_eof(), Err(e));
    assert!(ch.handshake_hash().is_none() && ch.resume_secret().is_none());
    assert_eq!(
        ch.stats().failures.total(),
        1,
        "exactly one failure counted"
    );
}

#[test]
fn wrong_responder_key_fails_at_the_responder_with_handshake_auth() {
    let (ik, rk, other) = (keys(1), keys(2), keys(3));
    let mut i = initiator(ik, &other, 1); // believes the hub's key is `other`'s
    let mut r = responder(rk, 2);
    let (plain, err) = feed(&mut r, T0, &take_wire(&mut i));
    assert_eq!((plain, err), (vec![], Some(SecureError::HandshakeAuth)));
    assert_eq!(
        r.poll_event(),
        None,
        "no PeerHello for a message that did not verify"
    );
    assert_eq!(r.stats().failures.handshake_auth, 1);
    assert_dead(&mut r, SecureError::HandshakeAuth);
}

#[test]
fn unknown_initiator_key_is_refused_by_policy_and_nothing_is_sent() {
    let (intruder, rk) = (keys(9), keys(2));
    let intruder_pub = intruder.public();
    let mut i = initiator(intruder, &rk, 1);
    let mut r = responder(rk, 2);
    assert_eq!(feed(&mut r, T0, &take_wire(&mut i)), (vec![], None));
    // The responder learns who it is before sending anything, and policy says no.
    assert_eq!(
        r.poll_event(),
        Some(SecureEvent::PeerHello { peer: intruder_pub })
    );
    assert_eq!(r.peer_static(), Some(intruder_pub));
    assert_eq!(r.refuse(), SecureError::PeerRefused);
    assert_eq!(r.stats().failures.peer_refused, 1);
    assert_dead(&mut r, SecureError::PeerRefused);
    // The initiator never gets message 2 and times out.
    assert_eq!(
        i.handle_timeout(T0 + Duration::from_secs(10)),
        Err(SecureError::HandshakeTimeout)
    );
}

#[test]
fn man_in_the_middle_with_its_own_key_cannot_complete_either_side() {
    let (ik, rk, mk) = (keys(1), keys(2), keys(66));
    let ik_pub = ik.public();
    let mut i = initiator(ik.clone(), &rk, 1);
    let msg1 = take_wire(&mut i);

    // 1. The MITM answers as responder with its own key: it cannot read message 1.
    let mut m_as_r = responder(mk.clone(), 5);
    assert_eq!(
        feed(&mut m_as_r, T0, &msg1).1,
        Some(SecureError::HandshakeAuth)
    );

    // 2. It forwards message 1 to the real hub, then forges message 2 from a handshake it
    //    completed itself (its own key, a victim-lookalike initiator that trusts it).
    let mut real_r = responder(rk.clone(), 2);
    assert_eq!(feed(&mut real_r, T0, &msg1), (vec![], None));
    assert_eq!(
        real_r.poll_event(),
        Some(SecureEvent::PeerHello { peer: ik_pub })
    );
    let mut lookalike = initiator(ik, &mk, 7);
    let mut m_resp = responder(mk.clone(), 8);
    feed(&mut m_resp, T0, &take_wire(&mut lookalike));
    m_resp.accept(T0).unwrap();
    let forged_msg2 = take_wire(&mut m_resp);
    let (plain, err) = feed(&mut i, T0, &forged_msg2);
    assert_eq!((plain, err), (vec![], Some(SecureError::HandshakeAuth)));
    assert_eq!(i.stats().failures.handshake_auth, 1);
    assert_dead(&mut i, SecureError::HandshakeAuth);

    // 3. Toward the hub with its own static key it is just an unknown peer (refused).
    let mut m_as_i = initiator(mk.clone(), &rk, 11);
    let mut r2 = responder(rk, 12);
    feed(&mut r2, T0, &take_wire(&mut m_as_i));
    assert_eq!(
        r2.poll_event(),
        Some(SecureEvent::PeerHello { peer: mk.public() })
    );
}

#[test]
fn replayed_handshake_yields_no_plaintext_and_ends_in_record_auth() {
    // A real session A, recorded by an attacker.
    let (ik, rk) = (keys(1), keys(2));
    let mut i = initiator(ik.clone(), &rk, 1);
    let mut r = responder(rk.clone(), 2);
    let msg1 = take_wire(&mut i);
    feed(&mut r, T0, &msg1);
    r.accept(T0).unwrap();
    let msg2 = take_wire(&mut r);
    feed(&mut i, T0, &msg2);
    let rec = seal_all(&mut i, b"LNK_CONN from the real leaf");
    assert_eq!(feed(&mut r, T0, &rec).0, b"LNK_CONN from the real leaf");

    // Replay of message 1 to a fresh hub: IK lets message 1 replay (no responder
    // contribution yet), so the hub answers, but under a new ephemeral key; the replayed
    // records then fail and deliver nothing.
    let mut r2 = responder(rk, 99);
    assert_eq!(feed(&mut r2, T0, &msg1), (vec![], None));
    r2.accept(T0).unwrap();
    assert!(
        take_wire(&mut r2) != msg2,
        "fresh ephemeral, fresh message 2"
    );
    let (plain, err) = feed(&mut r2, T0, &rec);
    assert_eq!((plain, err), (vec![], Some(SecureError::RecordAuth)));
    assert_eq!(r2.stats().failures.record_auth, 1);
    assert_eq!(r2.stats().records_in, 0);
    assert_dead(&mut r2, SecureError::RecordAuth);

    // Replay of message 2 to a fresh initiator: it does not authenticate.
    let mut i2 = initiator(ik, &keys(2), 77);
    let _ = take_wire(&mut i2);
    assert_eq!(feed(&mut i2, T0, &msg2).1, Some(SecureError::HandshakeAuth));
}

/// Three records a, b, c from the initiator, plus a responder ready to read them.
fn three_records() -> (Box<SecureChannel>, Vec<Vec<u8>>) {
    let (mut i, r) = established(cfg());
    let mut recs = Vec::new();
    for m in [&b"record a"[..], b"record b", b"record c"] {
        recs.push(seal_all(&mut i, m));
    }
    (r, recs)
}

#[test]
fn replayed_record_fails_and_delivers_only_the_original() {
    let (mut r, recs) = three_records();
    assert_eq!(feed(&mut r, T0, &recs[0]), (b"record a".to_vec(), None));
    assert_eq!(
        feed(&mut r, T0, &recs[0]),
        (vec![], Some(SecureError::RecordAuth))
    );
    assert_eq!(r.stats().records_in, 1);
    assert_dead(&mut r, SecureError::RecordAuth);
}

#[test]
fn reordered_record_fails_and_delivers_nothing() {
    let (mut r, recs) = three_records();
    assert_eq!(
        feed(&mut r, T0, &recs[1]),
        (vec![], Some(SecureError::RecordAuth))
    );
    assert_eq!(r.stats().plaintext_in, 0);
    assert_dead(&mut r, SecureError::RecordAuth);
}

#[test]
fn dropped_record_fails_the_next_one() {
    let (mut r, recs) = three_records();
    let mut wire = recs[0].clone();
    wire.extend_from_slice(&recs[2]);
    assert_eq!(
        feed(&mut r, T0, &wire),
        (b"record a".to_vec(), Some(SecureError::RecordAuth))
    );
    assert_dead(&mut r, SecureError::RecordAuth);
}

#[test]
fn truncated_stream_is_a_typed_error_not_a_clean_close() {
    let (mut r, recs) = three_records();
    let cut = &recs[0][..recs[0].len() - 3];
    assert_eq!(feed(&mut r, T0, cut), (vec![], None));
    assert_eq!(r.handle_eof(), Err(SecureError::Truncated));
    assert_eq!(r.stats().failures.truncated, 1);
    assert_dead(&mut r, SecureError::Truncated);

    // Cut at a record boundary, without the peer's FIN: also truncated.
    let (mut r, recs) = three_records();
    assert_eq!(feed(&mut r, T0, &recs[0]).0, b"record a");
    assert_eq!(r.handle_eof(), Err(SecureError::Truncated));
}

#[test]
fn every_single_bit_flip_in_a_record_ends_the_channel_without_delivery() {
    let (_, recs) = three_records();
    let rec = &recs[0];
    for bit in 0..rec.len() * 8 {
        let (mut r, recs) = three_records();
        let mut bad = recs[0].clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let (plain, err) = feed(&mut r, T0, &bad);
        assert!(plain.is_empty(), "bit {bit}: delivered {plain:?}");
        let err = match err {
            Some(e) => e,
            // A length flipped upward leaves the record incomplete: the stream then ends.
            None => r.handle_eof().unwrap_err(),
        };
        assert!(
            matches!(
                err,
                SecureError::RecordAuth
                    | SecureError::RecordTooLarge { .. }
                    | SecureError::RecordMalformed
                    | SecureError::Truncated
            ),
            "bit {bit}: {err:?}"
        );
        assert_eq!(r.stats().records_in, 0);
        assert_eq!(r.stats().failures.total(), 1);
    }
}

#[test]
fn record_from_another_connection_between_the_same_peers_is_rejected() {
    let (_, mut r) = established(cfg());
    // The same two static keys, a second handshake (fresh ephemeral keys).
    let mut rng = TestRng(4242);
    let mut i2 = SecureChannel::initiator(cfg(), keys(1), keys(2).public(), T0, &mut rng).unwrap();
    let mut r2 = SecureChannel::responder(cfg(), keys(2), T0, &mut rng).unwrap();
    feed(&mut r2, T0, &take_wire(&mut i2));
    r2.accept(T0).unwrap();
    feed(&mut i2, T0, &take_wire(&mut r2));
    let spliced = seal_all(&mut i2, b"from session 2");
    assert_eq!(
        feed(&mut r, T0, &spliced),
        (vec![], Some(SecureError::RecordAuth))
    );
    assert_dead(&mut r, SecureError::RecordAuth);
}

#[test]
fn oversize_record_header_is_refused_before_its_body_is_read() {
    let (_, mut r) = established(cfg());
    let too_big = (MAX_RECORD_PLAINTEXT + 16 + 1) as u16;
    let hdr = too_big.to_be_bytes();
    assert_eq!(
        r.handle_input(T0, &hdr),
        Err(SecureError::RecordTooLarge { len: too_big })
    );
    assert_eq!(r.stats().failures.record_too_large, 1);
    assert_dead(&mut r, SecureError::RecordTooLarge { len: too_big });

    // A header shorter than a tag is malformed.
    let (_, mut r) = established(cfg());
    assert_eq!(
        r.handle_input(T0, &[0, 15]),
        Err(SecureError::RecordMalformed)
    );
}

#[test]
fn a_record_of_exactly_the_bound_passes() {
    let (mut i, mut r) = established(cfg());
    let data: Vec<u8> = (0..MAX_RECORD_PLAINTEXT).map(|k| k as u8).collect();
    let wire = seal_all(&mut i, &data);
    assert_eq!(records(&wire).len(), 1);
    assert_eq!(feed(&mut r, T0, &wire), (data, None));
}

#[test]
fn handshake_that_never_finishes_times_out_on_both_sides() {
    let (ik, rk) = (keys(1), keys(2));
    let mut i = initiator(ik, &rk, 1);
    let mut r = responder(rk.clone(), 2);
    let deadline = T0 + Duration::from_secs(10);
    assert_eq!(i.poll_timeout(), Some(deadline));
    assert_eq!(r.poll_timeout(), Some(deadline));
    let just_before = Instant::from_micros(deadline.as_micros() - 1);
    assert_eq!(i.handle_timeout(just_before), Ok(()));
    assert_eq!(
        i.handle_timeout(deadline),
        Err(SecureError::HandshakeTimeout)
    );
    assert_eq!(i.stats().failures.handshake_timeout, 1);
    assert_eq!(i.poll_timeout(), None);
    // Input after the deadline is refused the same way.
    assert_eq!(
        r.handle_input(deadline, &[0]),
        Err(SecureError::HandshakeTimeout)
    );
    assert_eq!(r.stats().failures.handshake_timeout, 1);

    // A responder that never decides (accept/refuse) times out as well.
    let mut i = initiator(keys(1), &rk, 3);
    let mut r = responder(rk, 4);
    feed(&mut r, T0, &take_wire(&mut i));
    assert!(r.poll_event().is_some());
    assert_eq!(r.accept(deadline), Err(SecureError::HandshakeTimeout));
}

#[test]
fn malformed_and_weak_handshake_messages_are_typed_errors() {
    let mut r = responder(keys(2), 2);
    // Wrong length for message 1.
    assert_eq!(
        r.handle_input(T0, &[0, 95]),
        Err(SecureError::HandshakeMalformed)
    );
    // The FIN bit is not allowed in a handshake message.
    let mut r = responder(keys(2), 2);
    assert_eq!(
        r.handle_input(T0, &(RECORD_FIN | 96).to_be_bytes()),
        Err(SecureError::HandshakeMalformed)
    );
    // An all-zero (low-order) ephemeral key.
    let mut r = responder(keys(2), 2);
    let mut msg = vec![0, 96];
    msg.extend_from_slice(&[0u8; 96]);
    assert_eq!(feed(&mut r, T0, &msg).1, Some(SecureError::WeakKey));
    assert_eq!(r.stats().failures.weak_key, 1);
}

#[test]
fn rekeying_keeps_both_sides_in_step_and_never_repeats_a_keystream() {
    let cfg = SecureConfig {
        rekey_after: 3,
        ..cfg()
    };
    let (mut i, mut r) = established(cfg);
    let mut seen = std::collections::HashSet::new();
    for k in 0..20 {
        let wire = seal_all(&mut i, b"same plaintext every time");
        assert!(
            seen.insert(wire.clone()),
            "record {k} repeats an earlier ciphertext"
        );
        assert_eq!(
            feed(&mut r, T0, &wire),
            (b"same plaintext every time".to_vec(), None)
        );
    }
    // Rekeys before records 4, 7, 10, 13, 16 and 19.
    assert_eq!(i.stats().rekeys_out, 6);
    assert_eq!(r.stats().rekeys_in, 6);

    // A receiver that rekeys at a different point cannot read on: the rekey is real.
    let (mut i, _) = established(cfg);
    let (_, mut r) = established(SecureConfig {
        rekey_after: 4,
        ..cfg
    });
    for k in 0..4 {
        let wire = seal_all(&mut i, b"x");
        let (_, err) = feed(&mut r, T0, &wire);
        if k < 3 {
            assert_eq!(err, None);
        } else {
            assert_eq!(err, Some(SecureError::RecordAuth));
        }
    }
}

#[test]
fn a_low_order_configured_hub_key_is_refused_at_construction() {
    let zero = dmsg_core::secure::PublicKey([0; 32]);
    assert_eq!(
        SecureChannel::initiator(cfg(), keys(1), zero, T0, &mut TestRng(1)).unwrap_err(),
        SecureError::WeakKey
    );
}

#[test]
fn invalid_rekey_interval_is_refused() {
    let bad = SecureConfig {
        rekey_after: 0,
        ..cfg()
    };
    assert_eq!(
        SecureChannel::responder(bad, keys(2), T0, &mut TestRng(1)).unwrap_err(),
        SecureError::InvalidConfig
    );
}

#[test]
fn clean_close_is_authenticated_and_data_after_it_is_refused() {
    let (mut i, mut r) = established(cfg());
    i.send(b"last words").unwrap();
    i.close().unwrap();
    assert_eq!(i.send(b"more"), Err(SecureError::Closed));
    let wire = take_wire(&mut i);
    assert_eq!(
        records(&wire).len(),
        1,
        "data and FIN share the final record"
    );
    assert_eq!(feed(&mut r, T0, &wire), (b"last words".to_vec(), None));
    assert_eq!(r.poll_event(), Some(SecureEvent::PeerClosed));
    assert_eq!(r.handle_eof(), Ok(()));
    // The other direction still works after a half close.
    let back = seal_all(&mut r, b"ack");
    assert_eq!(feed(&mut i, T0, &back).0, b"ack");
    // Anything after the FIN is an error.
    assert_eq!(
        r.handle_input(T0, &[1, 2, 3]),
        Err(SecureError::DataAfterClose)
    );
    assert_eq!(r.stats().failures.data_after_close, 1);
}

#[test]
fn one_channel_failing_leaves_another_untouched() {
    let (mut i1, mut r1) = established(cfg());
    let (mut i2, mut r2) = established(cfg());
    let mut bad = seal_all(&mut i1, b"one");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(feed(&mut r1, T0, &bad).1, Some(SecureError::RecordAuth));
    assert_eq!(
        feed(&mut r2, T0, &seal_all(&mut i2, b"two")),
        (b"two".to_vec(), None)
    );
    assert_eq!(r2.stats().failures.total(), 0);
}

#[test]
fn resumed_session_proves_it_holds_the_original_handshake_secret() {
    // Session created on connection A.
    let (ia, ra) = established(cfg());
    let (si, sr) = (ia.resume_secret().unwrap(), ra.resume_secret().unwrap());
    // Reconnect: a fresh handshake B between the same peers.
    let mut rng = TestRng(31337);
    let mut ib = SecureChannel::initiator(cfg(), keys(1), keys(2).public(), T0, &mut rng).unwrap();
    let mut rb = SecureChannel::responder(cfg(), keys(2), T0, &mut rng).unwrap();
    feed(&mut rb, T0, &take_wire(&mut ib));
    rb.accept(T0).unwrap();
    feed(&mut ib, T0, &take_wire(&mut rb));
    let hb = ib.handshake_hash().unwrap();
    assert_eq!(Some(hb), rb.handshake_hash());
    assert_ne!(Some(hb), ia.handshake_hash());
    // Each side proves B under A's secret, labelled with its role on B; the other checks.
    let proof = si.proof(&hb, Role::Initiator);
    assert!(sr.verify(&hb, Role::Initiator, &proof));
    let answer = sr.proof(&hb, Role::Responder);
    assert!(si.verify(&hb, Role::Responder, &answer));
    // Bound to B: it does not verify for another connection.
    assert!(!sr.verify(&ia.handshake_hash().unwrap(), Role::Initiator, &proof));
    // Bound to its sender: reflecting the initiator's proof back does not pass as an answer.
    assert!(!si.verify(&hb, Role::Responder, &proof));
    // A peer with the same static key but without A's secret (e.g. restarted) cannot prove.
    let imposter = ib.resume_secret().unwrap();
    assert!(!sr.verify(&hb, Role::Initiator, &imposter.proof(&hb, Role::Initiator)));
}

#[test]
fn consume_and_recv_clamp_to_what_is_there() {
    let (mut i, mut r) = established(cfg());
    let wire = seal_all(&mut i, b"abcdef");
    assert_eq!(r.handle_input(T0, &wire), Ok(wire.len()));
    let mut two = [0u8; 2];
    assert_eq!(r.recv(&mut two), 2);
    assert_eq!(&two, b"ab");
    r.consume(usize::MAX);
    assert!(r.plaintext().is_empty());
    let wire = seal_all(&mut i, b"next");
    assert_eq!(feed(&mut r, T0, &wire), (b"next".to_vec(), None));
}
