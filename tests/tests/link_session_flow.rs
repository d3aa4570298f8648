//! Flow control and timers of a link running the reliable session: a full retransmit window is
//! `WouldBlock` (nothing queued) while the link's own answers still go out, two ends that both
//! wait for acks never deadlock, commands issued before the peer's LNK_CONN are held and then
//! carried by the session (or sent plain), keepalive pings and session acks do not fight, a
//! corrupted stream suspends the link instead of killing it, and the sizes.

#[path = "link_session_util.rs"]
mod link_session_util;

use dmsg_core::errcode::txn::LOSTLINK;
use dmsg_core::link::{
    CloseReason, Connection, LinkConfig, McuConnection, NoSession, Outgoing,
    ReliableHostConnection, ReliableMcuConnection, SendError, Side, TxnEnd, CTL_RESERVE,
};
use dmsg_core::time::{Duration, Instant};
use dmsg_core::wire::{Command, Flags};
use link_session_util::*;

fn shell(aux: &[u8]) -> Outgoing<'_> {
    Outgoing::new(Command::DbgShell).with_aux(aux)
}

fn ping() -> Outgoing<'static> {
    Outgoing::new(Command::LnkPing)
}

fn tiny_net() -> Net<TinyLink, TinyLink> {
    let mut n = lnet::<TinyLink>(Duration::from_secs(10));
    n.take_a();
    n.take_b();
    assert!(n.a.session_running() && n.b.session_running());
    n
}

#[test]
fn sizes() {
    let mcu = core::mem::size_of::<McuConnection>();
    let rmcu = core::mem::size_of::<ReliableMcuConnection>();
    let rhost = core::mem::size_of::<ReliableHostConnection>();
    println!("size_of::<McuConnection>() = {mcu} bytes (no session storage)");
    println!("size_of::<ReliableMcuConnection>() = {rmcu} bytes (12 frames / 2 KiB window)");
    println!("size_of::<ReliableHostConnection>() = {rhost} bytes (64 frames / 264 KiB window)");
    assert_eq!(core::mem::size_of::<NoSession>(), 0);
    // The session storage is the only difference, and a plain connection carries none.
    type Same =
        Connection<{ 8 * 64 + 1024 }, 1024, 2048, 8, dmsg_core::crc::SoftCrc32c1, NoSession>;
    assert_eq!(core::mem::size_of::<Same>(), mcu);
    assert!(rmcu < mcu + 3 * 1024, "{rmcu}");
}

#[test]
fn a_full_window_is_would_block_and_the_links_answers_still_go_out() {
    let mut n = tiny_net();
    let now = n.now;
    let t =
        n.a.open(now, &shell(&[1; 200]), Flags::empty(), None)
            .unwrap();
    // Fill A's share of the window without delivering anything.
    let mut sent = 1;
    let err = loop {
        match n.a.send(now, t, &shell(&[1; 200]), Flags::empty()) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    let SendError::WouldBlock { needed, available } = err else {
        panic!("{err:?}");
    };
    assert_eq!(needed, 64 + 256);
    assert!(available < needed);
    // Nothing was queued by the refused command, and the transaction is untouched.
    let in_flight = n.a.session().in_flight();
    let state = n.a.txn_state(t);
    assert_eq!(
        n.a.send(now, t, &shell(&[1; 200]), Flags::empty()),
        Err(err)
    );
    assert_eq!(n.a.session().in_flight(), in_flight);
    assert_eq!(n.a.txn_state(t), state);
    assert_eq!(n.a.session().next_seq(), n.a.session().next_seq());
    // B pings A: A answers from the reserve although its application share is full.
    n.b.send_one_way(now, &ping(), false, None).unwrap();
    n.drive();
    assert_eq!(n.a.stats().pings_in, 1);
    assert_eq!(n.b.stats().ping_replies_in, 1);
    assert_eq!(n.a.stats().ctl_dropped, 0);
    // Acks free the window.
    n.advance(Duration::from_millis(50));
    assert_eq!(n.a.session().in_flight(), 0);
    n.a.send(now, t, &shell(&[2; 200]), Flags::DELETE).unwrap();
    n.drive();
    let msgs = n
        .take_b()
        .iter()
        .filter(|e| matches!(e, Ev::Opened(..) | Ev::Message(..)))
        .count();
    assert_eq!(msgs, sent + 1);
    // A frame the window can never hold.
    assert_eq!(
        n.a.send_one_way(now, &shell(&[0; 900]), false, None),
        Err(SendError::TooLarge {
            needed: 64 + 960,
            max: 1024 - CTL_RESERVE
        })
    );
}

#[test]
fn two_ends_that_both_wait_for_acks_never_deadlock() {
    // Both applications flood one-way PINGs, each of which the other link must answer, with
    // 3 application frames in flight: both windows fill with answers nobody has acked, and the
    // links have to refuse frames they cannot answer. Acks keep flowing, so all get through.
    let mut n = tiny_net();
    let target = 300;
    let (mut a_sent, mut b_sent) = (0, 0);
    for _ in 0..100_000 {
        let now = n.now;
        while a_sent < target && n.a.send_one_way(now, &ping(), false, None).is_ok() {
            a_sent += 1;
        }
        while b_sent < target && n.b.send_one_way(now, &ping(), false, None).is_ok() {
            b_sent += 1;
        }
        n.advance(Duration::from_millis(5));
        if n.a.stats().ping_replies_in >= target && n.b.stats().ping_replies_in >= target {
            break;
        }
    }
    n.advance(Duration::from_secs(2));
    let (sa, sb) = (n.a.stats(), n.b.stats());
    println!("A {sa:?}\nB {sb:?}");
    println!("A {:?}\nB {:?}", n.a.session_stats(), n.b.session_stats());
    // Every PING was answered exactly once (keepalive pings come on top).
    assert_eq!(sb.pings_in, a_sent + sa.pings_out);
    assert_eq!(sa.ping_replies_in, a_sent + sa.pings_out);
    assert_eq!(sa.pings_in, b_sent + sb.pings_out);
    assert_eq!(sb.ping_replies_in, b_sent + sb.pings_out);
    assert_eq!(sa.ctl_dropped + sb.ctl_dropped, 0);
    let busy = n.a.session_stats().busy_refused + n.b.session_stats().busy_refused;
    assert!(busy > 0, "the busy path was exercised");
    assert!(n.a.session_running() && n.b.session_running());
}

#[test]
fn commands_before_the_peer_lnk_conn_are_held_then_carried_by_the_session() {
    let now = Instant::ZERO;
    let mut a = RLink::new(now, &offering(0xA, 1), Default::default()).unwrap();
    let t = a.open(now, &shell(b"early"), Flags::empty(), None).unwrap();
    a.send(now, t, &shell(&[7; 500]), Flags::DELETE).unwrap();
    a.send_one_way(now, &shell(b"one-way"), false, None)
        .unwrap();
    // Only our LNK_CONN leaves before the peer's first frame.
    let mut wire = Vec::new();
    let mut evs = Vec::new();
    flush(&mut a, now, Some(&mut wire), &mut evs);
    assert_eq!(wire.len(), 384);
    assert_eq!(a.pending_transmit(), 0);
    // Nothing sits in the held queue that the window could not take at the session's start.
    let room = a.send_capacity();
    assert!(room <= 8192 - CTL_RESERVE - 3 * 64 - 576);
    assert!(matches!(
        a.send_one_way(now, &shell(&vec![0; room + 1]), false, None),
        Err(SendError::WouldBlock { .. }) | Err(SendError::TooLarge { .. })
    ));
    // The peer's LNK_CONN starts the session; the held frames go through it, sequenced.
    let b = RLink::new(now, &offering(0xB, 2), Default::default()).unwrap();
    let mut n = Net::new(a, b);
    n.a_to_b = wire;
    n.drive();
    assert!(n.a.session_running());
    let b = n.take_b();
    let aux: Vec<Vec<u8>> = b
        .iter()
        .filter_map(|e| match e {
            Ev::Opened(_, h, _, aux) | Ev::Message(_, h, _, aux) | Ev::OneWay(h, _, aux) => {
                assert_ne!(h.link_verifier, 0, "sequenced");
                Some(aux.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        aux,
        vec![b"early".to_vec(), vec![7; 500], b"one-way".to_vec()]
    );
    assert_eq!(n.a.reliable_stats().frames_held, 3);
}

#[test]
fn commands_held_for_a_plain_peer_leave_as_plain_dmsg() {
    let now = Instant::ZERO;
    let mut a = RLink::new(now, &offering(0xA, 0x5eed_1234), Default::default()).unwrap();
    let mut p = PLink::new(now, &LinkConfig::default(), Default::default()).unwrap();
    let mut a_out = Vec::new();
    let mut p_out = Vec::new();
    for (c, out) in [
        (&mut a as &mut dyn Endpoint, &mut a_out),
        (&mut p, &mut p_out),
    ] {
        flush(c, now, Some(out), &mut Vec::new());
    }
    let ta = a.open(now, &shell(b"early"), Flags::DELETE, None).unwrap();
    let tp = p.open(now, &shell(b"early"), Flags::DELETE, None).unwrap();
    assert_eq!(ta.msgid(), tp.msgid());
    flush(&mut a, now, Some(&mut a_out), &mut Vec::new());
    flush(&mut p, now, Some(&mut p_out), &mut Vec::new());
    assert_eq!(a_out.len(), 384, "held");
    assert_eq!(p_out.len(), 384 + 128);
    // The peer's (plain) LNK_CONN releases what was held, unchanged.
    let mut peer = PLink::new(now, &LinkConfig::default(), Default::default()).unwrap();
    let mut conn = Vec::new();
    flush(&mut peer, now, Some(&mut conn), &mut Vec::new());
    let mut evs = Vec::new();
    feed(&mut a, now, &mut conn.clone(), Some(&mut a_out), &mut evs);
    feed(
        &mut p,
        now,
        &mut conn.clone(),
        Some(&mut p_out),
        &mut Vec::new(),
    );
    assert!(!a.session_running());
    assert_eq!(a_out[384..], p_out[384..]);
}

#[test]
fn keepalive_pings_and_session_acks_do_not_fight() {
    let mut n = lnet::<RLink>(Duration::from_secs(10));
    n.take_a();
    n.take_b();
    // Idle for a minute: about one PING a second, no retransmission, nothing suspended.
    n.advance(Duration::from_secs(60));
    let (sa, sb) = (*n.a.session_stats(), *n.b.session_stats());
    assert!(n.take_a().is_empty() && n.take_b().is_empty());
    assert_eq!(
        sa.frames_retransmitted + sb.frames_retransmitted,
        0,
        "{sa:?}"
    );
    assert_eq!(sa.rto_expiries + sb.rto_expiries, 0);
    let pings = n.a.stats().pings_out + n.b.stats().pings_out;
    assert!((30..=130).contains(&pings), "{pings}");
    // A steady stream: the data carries the acks, no PING is needed.
    let before = n.a.stats().pings_out + n.b.stats().pings_out;
    let t = n.a.open(n.now, &shell(b"0"), Flags::empty(), None).unwrap();
    for _ in 0..200 {
        n.a.send(n.now, t, &shell(&[3; 100]), Flags::empty())
            .unwrap();
        n.advance(Duration::from_millis(100));
    }
    assert_eq!(n.a.stats().pings_out + n.b.stats().pings_out - before, 0);
    assert_eq!(n.a.session_stats().frames_retransmitted, 0);
}

#[test]
fn a_corrupted_stream_suspends_the_link_and_the_frame_comes_again() {
    let mut n = lnet::<RLink>(Duration::from_secs(10));
    n.take_a();
    n.take_b();
    let now = n.now;
    let t =
        n.a.open(now, &shell(b"intact"), Flags::DELETE, None)
            .unwrap();
    n.flush();
    let last = n.a_to_b.len() - 1;
    n.a_to_b[last - 3] ^= 0x40; // in the aux data: an aux CRC error at B
    n.deliver();
    n.flush();
    let b = n.take_b();
    assert!(
        matches!(b.as_slice(), [Ev::Suspended(CloseReason::Decode(_))]),
        "{b:?}"
    );
    // B's driver closes the socket; A sees EOF.
    n.cut(0, 0, true, false);
    n.advance(Duration::from_millis(200));
    n.reconnect_a();
    n.advance(Duration::from_millis(100));
    let b = n.take_b();
    assert!(
        b.iter()
            .any(|e| matches!(e, Ev::Opened(_, _, _, aux) if aux == b"intact")),
        "{b:?}"
    );
    let bt = b
        .iter()
        .find_map(|e| match e {
            Ev::Opened(t, ..) => Some(*t),
            _ => None,
        })
        .unwrap();
    n.b.reply(n.now, bt, 0).unwrap();
    n.advance(Duration::from_millis(100));
    assert!(n.take_a().contains(&Ev::Closed(t, 0, TxnEnd::Completed)));
}

#[test]
fn a_protocol_error_resets_the_session_at_the_peer_at_once() {
    // A link that dies for its own reasons (here: the close timeout) tells the peer's session
    // with RESET, so the peer does not wait for its grace period.
    let ca = LinkConfig {
        close_timeout: Duration::from_secs(2),
        ..offering(0xA, 1)
    };
    let mut n = rnet_with(ca, offering(0xB, 2));
    n.take_a();
    n.take_b();
    let now = n.now;
    let ta = n.a.open(now, &shell(b"x"), Flags::empty(), None).unwrap();
    n.drive();
    n.a.close(now).unwrap();
    n.drive();
    // B never answers the open transaction: A's close times out after 2 s (B's would after
    // 10 s).
    n.advance(Duration::from_secs(3));
    let a = n.take_a();
    assert!(
        a.contains(&Ev::Closed(ta, LOSTLINK, TxnEnd::LinkLost)),
        "{a:?}"
    );
    assert_eq!(a.last(), Some(&Ev::LinkClosed(CloseReason::CloseTimeout)));
    let b = n.take_b();
    assert_eq!(
        b.last(),
        Some(&Ev::LinkClosed(CloseReason::SessionDied(
            dmsg_core::session::DeathReason::PeerReset
        ))),
        "{b:?}"
    );
    assert_eq!(n.b.open_transactions(Side::Theirs), 0);
}
