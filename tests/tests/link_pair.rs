//! Two `link::Connection`s back to back through an in-memory pipe with a virtual clock:
//! LNK_CONN exchange, transactions (multi-frame, both directions, aux data), half-close, every
//! abort case, keepalive and expiry, clean shutdown, backpressure and capacity refusal.

#[path = "link_util.rs"]
mod link_util;

use dmsg_core::errcode::txn::{LOSTLINK, NOSUPP, PARAM};
use dmsg_core::link::{
    CloseReason, Connection, Extensions, LinkConfig, LinkState, Outgoing, SendError, Side, TxnEnd,
    TxnId,
};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::body::{peer_type, SpanRepr};
use dmsg_core::wire::{Body, Command, Flags, Label};
use link_util::*;

fn pair() -> Pair<Link, Link> {
    pair_with(
        config(peer_type::ROUTER, "a"),
        config(peer_type::HAMMER2, "b"),
    )
}

fn pair_with(ca: LinkConfig, cb: LinkConfig) -> Pair<Link, Link> {
    let mut p = Pair::new(
        Link::new(Instant::ZERO, &ca, Default::default()).unwrap(),
        Link::new(Instant::ZERO, &cb, Default::default()).unwrap(),
    );
    p.drive();
    p
}

/// A pair after the LNK_CONN exchange, with the events of it taken out.
fn up() -> Pair<Link, Link> {
    let mut p = pair();
    p.take_a();
    p.take_b();
    p
}

fn shell(aux: &[u8]) -> Outgoing<'_> {
    Outgoing::new(Command::DbgShell).with_aux(aux)
}

fn opened(evs: &[Ev]) -> Vec<TxnId> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Opened(t, ..) => Some(*t),
            _ => None,
        })
        .collect()
}

fn closed(evs: &[Ev]) -> Vec<(TxnId, u32, TxnEnd)> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Closed(t, err, end) => Some((*t, *err, *end)),
            _ => None,
        })
        .collect()
}

fn messages(evs: &[Ev]) -> Vec<(TxnId, Flags, Vec<u8>)> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Message(t, h, _, aux) => Some((*t, h.cmd.flags(), aux.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn conn_exchange_reports_each_side_and_negotiates_extensions() {
    let mut ca = config(peer_type::ROUTER, "hub-1");
    ca.offer = Extensions::RELIABLE_SESSION_V1;
    let mut cb = config(peer_type::HAMMER2, "leaf-7");
    cb.conn.peer_mask = 1 << peer_type::HAMMER2;
    cb.offer = Extensions::RELIABLE_SESSION_V1;
    let mut p = pair_with(ca, cb);
    let a = p.take_a();
    let b = p.take_b();
    assert_eq!(a[0], Ev::Connected);
    assert_eq!(b[0], Ev::Connected);
    match &a[1] {
        Ev::PeerConn(c, ext) => {
            assert_eq!(c.peer_type, peer_type::HAMMER2);
            assert_eq!(c.peer_label.as_str(), Some("leaf-7"));
            assert_eq!(c.peer_mask, 1 << peer_type::HAMMER2);
            assert_eq!(c.ext_offer, 1);
            assert_eq!(*ext, Extensions::RELIABLE_SESSION_V1);
        }
        other => panic!("{other:?}"),
    }
    assert!(a.contains(&Ev::ConnAnswered(0)));
    assert!(matches!(&b[1], Ev::PeerConn(c, _) if c.peer_label.as_str() == Some("hub-1")));
    assert!(b.contains(&Ev::ConnAnswered(0)));
    assert_eq!(p.a.extensions(), Some(Extensions::RELIABLE_SESSION_V1));
    assert_eq!(p.b.extensions(), Some(Extensions::RELIABLE_SESSION_V1));
    assert_eq!(p.a.state(), LinkState::Open);

    // Offered by one side only: off for both.
    let ca = LinkConfig {
        offer: Extensions::RELIABLE_SESSION_V1,
        ..LinkConfig::default()
    };
    let p = pair_with(ca, LinkConfig::default());
    assert_eq!(p.a.extensions(), Some(Extensions::NONE));
    assert_eq!(p.b.extensions(), Some(Extensions::NONE));
}

#[test]
fn the_conn_exchange_is_what_dragonfly_sends() {
    let mut a = Link::new(Instant::ZERO, &LinkConfig::default(), Default::default()).unwrap();
    let mut wire = Vec::new();
    let mut evs = Vec::new();
    flush(&mut a, Instant::ZERO, &mut wire, &mut evs);
    let mut peer = RawPeer::default();
    let frames = peer.read(&wire);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].cmd(), 0x8000_1106); // LNK_CONN|CREATE, 6 blocks
    assert_eq!(frames[0].header.circuit.0, 0);
    // The peer's LNK_CONN is answered with LNK_ERROR|CREATE|REPLY|REVTRANS, error 0.
    let conn = peer.frame(
        dmsg_core::wire::Cmd::new(Command::LnkConn, Flags::CREATE),
        0x7f00_0000_1000,
        0,
        &Body::Conn(Default::default()),
        &[],
    );
    let mut pipe = conn;
    feed(&mut a, Instant::ZERO, &mut pipe, &mut wire, &mut evs);
    let frames = peer.read(&wire[384..]);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].cmd(), 0xa80f_ff01);
    assert_eq!(frames[0].header.msgid.0, 0x7f00_0000_1000);
    assert_eq!(frames[0].header.error, 0);
}

#[test]
fn request_reply_streams_in_both_directions_with_aux() {
    let mut p = up();
    let now = p.now;
    // A -> B: a multi-frame request, then B's multi-frame answer.
    let t =
        p.a.open(now, &shell(b"part-0"), Flags::empty(), None)
            .unwrap();
    p.a.send(now, t, &shell(b"part-1"), Flags::empty()).unwrap();
    p.a.send(now, t, &shell(&[7u8; 3000]), Flags::DELETE)
        .unwrap();
    p.drive();
    let b = p.take_b();
    let bt = opened(&b);
    assert_eq!(bt.len(), 1);
    let bt = bt[0];
    assert_eq!(bt.side(), Side::Theirs);
    assert_eq!(bt.msgid(), t.msgid());
    match &b[0] {
        Ev::Opened(_, h, _, aux) => {
            assert_eq!(h.cmd.flags(), Flags::CREATE);
            assert_eq!(h.cmd.command(), Command::DbgShell);
            assert_eq!(aux, b"part-0");
        }
        other => panic!("{other:?}"),
    }
    let m = messages(&b);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0], (bt, Flags::empty(), b"part-1".to_vec()));
    assert_eq!(m[1], (bt, Flags::DELETE, vec![7u8; 3000]));
    assert!(closed(&b).is_empty(), "B has not closed its direction yet");

    p.b.send(now, bt, &shell(b"answer-0"), Flags::empty())
        .unwrap();
    p.b.send(now, bt, &shell(b"answer-1"), Flags::empty())
        .unwrap();
    p.b.reply(now, bt, 0).unwrap();
    p.drive();
    let a = p.take_a();
    let m = messages(&a);
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].0, t);
    // The first answer opens the reply direction: CREATE|REPLY|REVTRANS.
    assert_eq!(m[0].1, Flags::CREATE | Flags::REPLY | Flags::REVTRANS);
    assert_eq!(m[0].2, b"answer-0");
    assert_eq!(m[1].1, Flags::REPLY | Flags::REVTRANS);
    assert_eq!(m[2].1, Flags::DELETE | Flags::REPLY | Flags::REVTRANS);
    assert_eq!(closed(&a), vec![(t, 0, TxnEnd::Completed)]);
    // B's own Closed came when it sent the last DELETE.
    assert_eq!(closed(&p.take_b()), vec![(bt, 0, TxnEnd::Completed)]);

    // B -> A, with a LNK_SPAN body, answered with an error result.
    let span = Body::Span(SpanRepr {
        dist: 3,
        peer_label: Label::new("cluster").unwrap(),
        ..SpanRepr::default()
    });
    let msg = Outgoing::new(Command::LnkSpan)
        .with_body(&span)
        .with_aux(b"x");
    let bt2 = p.b.open(now, &msg, Flags::empty(), None).unwrap();
    p.drive();
    let a = p.take_a();
    let at2 = opened(&a)[0];
    match &a[0] {
        Ev::Opened(_, h, body, aux) => {
            assert_eq!(h.cmd.command(), Command::LnkSpan);
            assert_eq!(*body, span);
            assert_eq!(aux, b"x");
        }
        other => panic!("{other:?}"),
    }
    p.a.reply(now, at2, NOSUPP).unwrap();
    p.drive();
    let b = p.take_b();
    assert_eq!(
        messages(&b)[0].1,
        Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::REVTRANS
    );
    assert_eq!(
        p.b.txn_state(bt2).unwrap().remote,
        dmsg_core::link::txn::Dir::Closed
    );
    p.b.delete(now, bt2).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_b()), vec![(bt2, NOSUPP, TxnEnd::Completed)]);
    assert_eq!(closed(&p.take_a()), vec![(at2, 0, TxnEnd::Completed)]);
    for c in [&p.a, &p.b] {
        assert_eq!(
            c.table_entries(Side::Ours) + c.table_entries(Side::Theirs),
            0
        );
        assert_eq!(c.stats().violations.total(), 0);
    }
}

#[test]
fn half_closed_transactions_keep_the_other_direction_open() {
    let mut p = up();
    let now = p.now;
    let t = p.a.open(now, &shell(b"req"), Flags::DELETE, None).unwrap();
    p.drive();
    let bt = opened(&p.take_b())[0];
    let s = p.a.txn_state(t).unwrap();
    assert_eq!(s.local, dmsg_core::link::txn::Dir::Closed);
    assert_eq!(
        p.a.send(now, t, &shell(b"more"), Flags::empty()),
        Err(SendError::AlreadyClosed(t))
    );
    for i in 0..5u8 {
        p.b.send(now, bt, &shell(&[i]), Flags::empty()).unwrap();
    }
    p.drive();
    assert_eq!(messages(&p.take_a()).len(), 5);
    assert!(p.a.txn_state(t).is_some());
    p.b.delete(now, bt).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_a()).len(), 1);
    assert_eq!(closed(&p.take_b()).len(), 1);
    assert_eq!(p.a.txn_state(t), None);
    assert_eq!(
        p.b.send(now, bt, &shell(b""), Flags::empty()),
        Err(SendError::UnknownTxn(bt))
    );
}

#[test]
fn aborts_in_every_position() {
    let mut p = up();
    let now = p.now;

    // ABORT with CREATE: a non-blocking command; the transaction still runs.
    let t1 = p.a.open(now, &shell(b"nb"), Flags::ABORT, None).unwrap();
    p.drive();
    let b = p.take_b();
    assert_eq!(b[0].flags(), Some(Flags::CREATE | Flags::ABORT));
    let b1 = opened(&b)[0];

    // Mid-stream ABORT (neither CREATE nor DELETE): delivered, nothing closes.
    p.a.send(now, t1, &shell(b"stop"), Flags::ABORT).unwrap();
    p.drive();
    let b = p.take_b();
    assert_eq!(messages(&b)[0].1, Flags::ABORT);
    assert!(p.b.txn_state(b1).is_some());

    // ABORT|DELETE ends A's direction; B closes its own; both report Aborted.
    p.a.abort(now, t1).unwrap();
    p.drive();
    assert_eq!(messages(&p.take_b())[0].1, Flags::ABORT | Flags::DELETE);
    p.b.delete(now, b1).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_a()), vec![(t1, 0, TxnEnd::Aborted)]);
    assert_eq!(closed(&p.take_b()), vec![(b1, 0, TxnEnd::Aborted)]);

    // Abort-after-DELETE on a half-closed transaction: allowed, and the peer discards it.
    let t2 = p.a.open(now, &shell(b"x"), Flags::DELETE, None).unwrap();
    p.drive();
    let b2 = opened(&p.take_b())[0];
    p.a.abort(now, t2).unwrap();
    p.drive();
    assert!(messages(&p.take_b()).is_empty());
    assert_eq!(p.b.stats().late_aborts, 1);
    p.b.reply(now, b2, 0).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_a()), vec![(t2, 0, TxnEnd::Aborted)]);
    assert_eq!(closed(&p.take_b()), vec![(b2, 0, TxnEnd::Completed)]);

    // Abort-after-DELETE racing the full close: B's DELETE is in flight when A aborts. B
    // gets an ABORT|DELETE for a finished transaction and discards it silently.
    let t3 = p.a.open(now, &shell(b"y"), Flags::DELETE, None).unwrap();
    p.drive();
    let b3 = opened(&p.take_b())[0];
    p.b.delete(now, b3).unwrap();
    p.flush(); // B's DELETE is queued towards A, not delivered
    p.a.abort(now, t3).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_a()), vec![(t3, 0, TxnEnd::Aborted)]);
    assert_eq!(closed(&p.take_b()), vec![(b3, 0, TxnEnd::Completed)]);
    assert_eq!(p.b.stats().late_aborts, 2);

    // An abort by the side that did not open it (the replier).
    let t4 = p.a.open(now, &shell(b"z"), Flags::empty(), None).unwrap();
    p.drive();
    let b4 = opened(&p.take_b())[0];
    p.b.abort(now, b4).unwrap();
    p.drive();
    assert_eq!(
        messages(&p.take_a())[0].1,
        Flags::CREATE | Flags::ABORT | Flags::DELETE | Flags::REPLY | Flags::REVTRANS
    );
    p.a.delete(now, t4).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_a()), vec![(t4, 0, TxnEnd::Aborted)]);
    assert_eq!(closed(&p.take_b()), vec![(b4, 0, TxnEnd::Aborted)]);

    for c in [&p.a, &p.b] {
        assert_eq!(c.stats().violations.total(), 0, "{:?}", c.stats());
        assert_eq!(
            c.table_entries(Side::Ours) + c.table_entries(Side::Theirs),
            0
        );
    }
}

#[test]
fn keepalive_pings_an_idle_link_and_the_answers_keep_it_alive() {
    let mut p = up();
    p.advance(Duration::from_secs(30));
    for c in [&p.a, &p.b] {
        assert_eq!(c.state(), LinkState::Open);
        // 1 ping per second on an idle link, each answered.
        assert!(c.stats().pings_out >= 25, "{:?}", c.stats());
        assert!(c.stats().ping_replies_in >= 25);
        assert!(c.stats().pings_in >= 25);
    }
    assert!(p.take_a().is_empty());

    // A peer that never pings (DragonFly) does not kill us: our own pings' answers count.
    let cb = LinkConfig {
        ping_interval: Duration::from_secs(3600),
        ..LinkConfig::default()
    };
    let mut p = pair_with(LinkConfig::default(), cb);
    p.advance(Duration::from_secs(60));
    assert_eq!(p.a.state(), LinkState::Open);
    assert_eq!(p.b.stats().pings_out, 0);
    assert!(p.a.stats().ping_replies_in >= 55);
}

#[test]
fn keepalive_expiry_closes_every_transaction_with_lostlink_exactly_once() {
    let mut p = up();
    let now = p.now;
    let a1 = p.a.open(now, &shell(b"1"), Flags::empty(), None).unwrap();
    let a2 = p.a.open(now, &shell(b"2"), Flags::DELETE, None).unwrap();
    let b1 = p.b.open(now, &shell(b"3"), Flags::empty(), None).unwrap();
    p.drive();
    let a_theirs = opened(&p.take_a());
    let b_theirs = opened(&p.take_b());
    assert_eq!((a_theirs.len(), b_theirs.len()), (1, 2));
    // A finished transaction is not reported again.
    p.a.reply(now, a_theirs[0], 0).unwrap();
    p.b.delete(now, b1).unwrap();
    p.drive();
    p.take_a();
    p.take_b();

    p.connected = false; // the network goes dark
    p.advance(Duration::from_millis(9_900));
    assert_eq!(p.a.state(), LinkState::Open);
    p.advance(Duration::from_millis(200));
    p.advance(Duration::from_secs(60)); // nothing more may happen

    let a = p.take_a();
    let b = p.take_b();
    let mut a_closed = closed(&a);
    a_closed.sort();
    assert_eq!(
        a_closed,
        vec![
            (a1, LOSTLINK, TxnEnd::LinkLost),
            (a2, LOSTLINK, TxnEnd::LinkLost)
        ]
    );
    assert_eq!(
        a.last(),
        Some(&Ev::LinkClosed(CloseReason::KeepaliveTimeout))
    );
    let mut b_closed = closed(&b);
    b_closed.sort();
    let mut want: Vec<_> = b_theirs
        .iter()
        .map(|t| (*t, LOSTLINK, TxnEnd::LinkLost))
        .collect();
    want.sort();
    assert_eq!(b_closed, want);
    assert_eq!(
        b.last(),
        Some(&Ev::LinkClosed(CloseReason::KeepaliveTimeout))
    );
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    assert!(
        !b_closed.iter().any(|c| c.0 == b1),
        "b1 finished before the loss"
    );
    assert_eq!(
        p.a.open(p.now, &shell(b""), Flags::empty(), None),
        Err(SendError::Closed)
    );
    assert_eq!(p.a.poll_timeout(), None);
}

#[test]
fn handle_close_and_decode_errors_close_everything_with_lostlink() {
    let mut p = up();
    let now = p.now;
    let t = p.a.open(now, &shell(b"1"), Flags::empty(), None).unwrap();
    p.drive();
    p.take_a();
    p.a.handle_close();
    p.flush();
    assert_eq!(
        p.take_a(),
        vec![
            Ev::Closed(t, LOSTLINK, TxnEnd::LinkLost),
            Ev::LinkClosed(CloseReason::TransportClosed)
        ]
    );

    let mut p = up();
    let t = p.b.open(now, &shell(b"1"), Flags::empty(), None).unwrap();
    p.drive();
    let at = opened(&p.take_a())[0];
    let garbage = [0xEEu8; 64];
    let used = p.a.handle_input(now, &garbage);
    assert_eq!(used, 64);
    p.flush();
    let a = p.take_a();
    assert_eq!(a[0], Ev::Closed(at, LOSTLINK, TxnEnd::LinkLost));
    assert!(matches!(
        a[1],
        Ev::LinkClosed(CloseReason::Decode(
            dmsg_core::decode::DecodeError::BadMagic { .. }
        ))
    ));
    let _ = t;
}

#[test]
fn clean_shutdown_waits_for_open_transactions() {
    let mut p = up();
    let now = p.now;
    let t =
        p.a.open(now, &shell(b"long"), Flags::empty(), None)
            .unwrap();
    p.drive();
    let bt = opened(&p.take_b())[0];

    p.a.close(now).unwrap();
    assert_eq!(p.a.state(), LinkState::Closing);
    assert_eq!(
        p.a.open(now, &shell(b""), Flags::empty(), None),
        Err(SendError::Closing)
    );
    p.drive();
    assert_eq!(p.b.state(), LinkState::Closing);
    // New transactions are refused on both sides; the peer's CREATE gets LOSTLINK.
    assert_eq!(
        p.b.open(now, &shell(b""), Flags::empty(), None),
        Err(SendError::Closing)
    );
    // The open transaction still works in both directions.
    p.b.send(now, bt, &shell(b"still here"), Flags::empty())
        .unwrap();
    p.drive();
    assert_eq!(messages(&p.take_a()).len(), 1);
    p.a.delete(now, t).unwrap();
    p.drive();
    assert_eq!(p.a.state(), LinkState::Closing);
    p.b.delete(now, bt).unwrap();
    p.drive();
    let a = p.take_a();
    let b = p.take_b();
    assert_eq!(a.last(), Some(&Ev::LinkClosed(CloseReason::LocalClose)));
    assert_eq!(b.last(), Some(&Ev::LinkClosed(CloseReason::PeerClosed)));
    assert_eq!(closed(&a).len(), 1);
    assert_eq!(closed(&b).len(), 1);
    assert_eq!(p.a.pending_transmit() + p.b.pending_transmit(), 0);
    for c in [&p.a, &p.b] {
        assert!(c.is_closed());
        assert_eq!(c.stats().violations.total(), 0);
    }
}

#[test]
fn clean_shutdown_frame_sequence() {
    // A closes with no transaction open; record every frame each side sends.
    let mut p = up();
    let now = p.now;
    let (a_before, b_before) = (decode_all(&p.a_sent).len(), decode_all(&p.b_sent).len());
    assert_eq!((a_before, b_before), (2, 2)); // LNK_CONN and the answer to the other's
    p.a.close(now).unwrap();
    p.drive();
    let seq = |bytes: &[u8], skip: usize| -> Vec<(u32, u64)> {
        decode_all(bytes)
            .iter()
            .skip(skip)
            .map(|f| (f.cmd(), f.header.msgid.0))
            .collect()
    };
    let a_conn = p.a.conn_msgid().0;
    let b_conn = p.b.conn_msgid().0;
    assert_eq!(a_conn, b_conn, "both use the default conn msgid 1");
    // A: LNK_ERROR|DELETE on its LNK_CONN, then LNK_ERROR|DELETE|REPLY|REVTRANS on B's.
    assert_eq!(
        seq(&p.a_sent, a_before),
        vec![(0x400f_ff01, a_conn), (0x680f_ff01, b_conn)]
    );
    // B: LNK_ERROR|DELETE on its own LNK_CONN, LNK_ERROR|DELETE|REPLY|REVTRANS on A's.
    assert_eq!(
        seq(&p.b_sent, b_before),
        vec![(0x400f_ff01, b_conn), (0x680f_ff01, a_conn)]
    );
    assert_eq!(
        p.take_a().last(),
        Some(&Ev::LinkClosed(CloseReason::LocalClose))
    );
    assert_eq!(
        p.take_b().last(),
        Some(&Ev::LinkClosed(CloseReason::PeerClosed))
    );
}

#[test]
fn shutdown_that_does_not_finish_is_cut_after_the_close_timeout() {
    let mut p = up();
    let now = p.now;
    let t =
        p.a.open(now, &shell(b"never answered"), Flags::empty(), None)
            .unwrap();
    p.drive();
    p.a.close(now).unwrap();
    p.advance(Duration::from_secs(11));
    let a = p.take_a();
    assert!(a.contains(&Ev::Closed(t, LOSTLINK, TxnEnd::LinkLost)));
    assert_eq!(a.last(), Some(&Ev::LinkClosed(CloseReason::CloseTimeout)));
}

#[test]
fn backpressure_refuses_without_queueing_and_recovers_after_draining() {
    let mut p = up();
    let now = p.now;
    let big = vec![0x42u8; 4000]; // 4032 bytes with its header
    let mut sent = 0;
    let err = loop {
        match p.a.send_one_way(now, &shell(&big), false, None) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100);
    };
    assert!(sent >= 3);
    let before = p.a.pending_transmit();
    match err {
        SendError::WouldBlock { needed, available } => {
            assert_eq!(needed, 64 + 4032);
            assert!(available < needed);
            assert_eq!(available, p.a.send_capacity());
        }
        other => panic!("{other:?}"),
    }
    // Refused commands queue nothing.
    assert_eq!(p.a.pending_transmit(), before);
    let t_err = p.a.open(now, &shell(&big), Flags::empty(), None);
    assert!(matches!(t_err, Err(SendError::WouldBlock { .. })));
    assert_eq!(p.a.open_transactions(Side::Ours), 0);
    // The control reserve is still free: A reads and answers B's ping even now, without
    // anything of A's output having been drained.
    p.b.handle_timeout(now + Duration::from_secs(1));
    let mut ping = Vec::new();
    let mut evs = Vec::new();
    flush(&mut *p.b, now, &mut ping, &mut evs);
    assert_eq!(ping.len(), 64);
    assert_eq!(p.a.handle_input(now, &ping), 64);
    assert_eq!(p.a.pending_transmit(), before + 64);
    assert_eq!(p.a.stats().pings_in, 1);
    assert_eq!(p.a.stats().ctl_dropped, 0);
    // Drained: the same command now succeeds.
    assert!(matches!(
        p.a.send_one_way(now, &shell(&big), false, None),
        Err(SendError::WouldBlock { .. })
    ));
    p.drive();
    assert_eq!(p.a.pending_transmit(), 0);
    p.a.send_one_way(now, &shell(&big), false, None).unwrap();
    p.drive();
    let oneways = p
        .take_b()
        .iter()
        .filter(|e| matches!(e, Ev::OneWay(..)))
        .count();
    assert_eq!(oneways, sent + 1, "nothing accepted was lost");
    // A frame that can never fit is TooLarge, not WouldBlock.
    let huge = vec![0u8; 16384];
    assert_eq!(
        p.a.send_one_way(now, &shell(&huge), false, None),
        Err(SendError::TooLarge {
            needed: 64 + 16384,
            max: Link::MAX_FRAME
        })
    );
}

type Small = Connection<{ 8 * 64 + 1024 }, 1024, 4096, 2>;

#[test]
fn peer_over_capacity_is_refused_and_the_link_keeps_working() {
    let mut p = Pair::new(
        Link::new(Instant::ZERO, &LinkConfig::default(), Default::default()).unwrap(),
        Small::new(Instant::ZERO, &LinkConfig::default(), Default::default()).unwrap(),
    );
    p.drive();
    p.take_a();
    p.take_b();
    let now = p.now;
    let t: Vec<_> = (0..3)
        .map(|i| p.a.open(now, &shell(&[i]), Flags::empty(), None).unwrap())
        .collect();
    p.drive();
    let b = p.take_b();
    let bt = opened(&b);
    assert_eq!(bt.len(), 2, "B holds two");
    assert_eq!(p.b.stats().capacity_refusals, 1);
    assert_eq!(p.b.stats().violations.total(), 0);
    // The third got the refusal: an error reply that closes B's side at once.
    let a = p.take_a();
    let m = messages(&a);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, t[2]);
    assert_eq!(
        m[0].1,
        Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::REVTRANS
    );
    // A closes its side; B absorbs that DELETE (it remembered the refused msgid).
    p.a.delete(now, t[2]).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_a()), vec![(t[2], PARAM, TxnEnd::Completed)]);
    assert_eq!(p.b.stats().absorbed, 1);
    assert_eq!(p.b.stats().violations.total(), 0);
    assert!(p.take_b().is_empty());
    // Locally, a full table is a typed error.
    assert_eq!(
        p.b.open(now, &shell(b""), Flags::empty(), None).map(|_| ()),
        Ok(())
    );
    p.b.open(now, &shell(b""), Flags::empty(), None).unwrap();
    assert_eq!(
        p.b.open(now, &shell(b""), Flags::empty(), None),
        Err(SendError::TableFull)
    );
    // Free one of B's slots: a new CREATE from A is accepted again.
    p.drive();
    p.take_a();
    p.b.reply(now, bt[0], 0).unwrap();
    p.a.delete(now, t[0]).unwrap();
    p.drive();
    assert_eq!(closed(&p.take_b()).len(), 1);
    let t4 =
        p.a.open(now, &shell(b"again"), Flags::empty(), None)
            .unwrap();
    p.drive();
    assert_eq!(opened(&p.take_b()).len(), 1);
    assert_eq!(p.b.stats().capacity_refusals, 1);
    let _ = t4;
}

#[test]
fn mcu_config_is_small() {
    let size = std::mem::size_of::<dmsg_core::link::McuConnection>();
    println!("size_of::<McuConnection>() = {size} bytes");
    assert!(size < 8 * 1024, "{size}");
    let host = std::mem::size_of::<dmsg_core::link::HostConnection>();
    println!("size_of::<HostConnection>() = {host} bytes");
    // The MCU link works like any other.
    let c = dmsg_core::link::McuConnection::new(
        Instant::ZERO,
        &LinkConfig::default(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(c.pending_transmit(), 384);
    let h = Box::new(
        dmsg_core::link::HostConnection::new(
            Instant::ZERO,
            &LinkConfig::default(),
            Default::default(),
        )
        .unwrap(),
    );
    assert_eq!(h.pending_transmit(), 384);
}

#[test]
fn stale_handles_never_reach_a_reused_msgid() {
    let mut p = up();
    let now = p.now;
    let t = p.a.open(now, &shell(b""), Flags::DELETE, None).unwrap();
    p.drive();
    let bt = opened(&p.take_b())[0];
    p.b.reply(now, bt, 0).unwrap();
    p.drive();
    p.take_a();
    p.take_b();
    assert_eq!(p.b.reply(now, bt, 0), Err(SendError::UnknownTxn(bt)));
    assert_eq!(p.a.delete(now, t), Err(SendError::UnknownTxn(t)));
    // Circuits must name open transactions.
    assert_eq!(
        p.a.open(now, &shell(b""), Flags::empty(), Some(t)),
        Err(SendError::UnknownTxn(t))
    );
    assert_eq!(
        p.a.send(now, t, &shell(b""), Flags::CREATE),
        Err(SendError::BadFlags)
    );
}

#[test]
fn circuits_set_revcirc_from_the_receivers_point_of_view() {
    let mut p = up();
    let now = p.now;
    let span = Body::Span(SpanRepr::default());
    let s =
        p.b.open(
            now,
            &Outgoing::new(Command::LnkSpan).with_body(&span),
            Flags::empty(),
            None,
        )
        .unwrap();
    p.drive();
    let a_span = opened(&p.take_a())[0];
    // A stacks a transaction on B's span: circuit = span msgid, REVCIRC (B opened it).
    let t =
        p.a.open(now, &shell(b"blk"), Flags::empty(), Some(a_span))
            .unwrap();
    p.drive();
    let b = p.take_b();
    match &b[0] {
        Ev::Opened(_, h, ..) => {
            assert_eq!(h.circuit.0, s.msgid().0);
            assert!(h.cmd.flags().contains(Flags::REVCIRC));
        }
        other => panic!("{other:?}"),
    }
    // B's answer refers to the circuit as A's view: its own span, so no REVCIRC.
    let bt = opened(&b)[0];
    p.b.reply(now, bt, 0).unwrap();
    p.drive();
    let a = p.take_a();
    match &a[0] {
        Ev::Message(_, h, ..) => {
            assert_eq!(h.circuit.0, s.msgid().0);
            assert!(!h.cmd.flags().contains(Flags::REVCIRC));
        }
        other => panic!("{other:?}"),
    }
    let _ = t;
}

#[test]
fn msgid_allocation_skips_zero_and_our_lnk_conn_across_the_wrap() {
    let ca = LinkConfig {
        conn_msgid: dmsg_core::wire::MsgId(1),
        msgid_base: u64::MAX,
        ..LinkConfig::default()
    };
    let mut p = pair_with(ca, LinkConfig::default());
    let now = p.now;
    let t1 = p.a.open(now, &shell(b""), Flags::empty(), None).unwrap();
    let t2 = p.a.open(now, &shell(b""), Flags::empty(), None).unwrap();
    assert_eq!(t1.msgid().0, u64::MAX);
    assert_eq!(
        t2.msgid().0,
        2,
        "0 is for one-way messages, 1 is our LNK_CONN"
    );
    // A refused open does not use up a msgid.
    let tiny = LinkConfig {
        msgid_base: 10,
        ..LinkConfig::default()
    };
    let mut q = pair_with(tiny, LinkConfig::default());
    let huge = vec![0u8; 16300];
    assert!(matches!(
        q.a.open(now, &shell(&huge), Flags::empty(), None),
        Err(SendError::TooLarge { .. })
    ));
    assert_eq!(
        q.a.open(now, &shell(b""), Flags::empty(), None)
            .unwrap()
            .msgid()
            .0,
        10
    );
}

#[test]
fn no_keepalive_ping_while_output_waits_and_death_drops_the_queue() {
    let mut p = up();
    let now = p.now;
    p.a.send_one_way(now, &shell(b"waiting"), false, None)
        .unwrap();
    let queued = p.a.pending_transmit();
    // Not drained for 5 s: the waiting bytes are traffic enough, no PING is added.
    p.a.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(p.a.pending_transmit(), queued);
    assert_eq!(p.a.stats().pings_out, 0);
    // The link dies with bytes queued: they are dropped and counted, nothing comes out.
    p.a.handle_close();
    let mut buf = [0u8; 256];
    assert_eq!(p.a.poll_transmit(now, &mut buf), 0);
    assert_eq!(p.a.stats().tx_bytes_discarded, queued as u64);
}
