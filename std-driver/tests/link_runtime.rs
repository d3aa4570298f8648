//! The link runtime over real loopback TCP: link loss, timers, misbehaving peers, concurrent
//! handles, and reconnect with backoff.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use dmsg_core::errcode::txn::{LOSTLINK, NOSUPP};
use dmsg_core::link::{CloseReason, LinkState, TxnEnd};
use dmsg_core::time::Duration as CoreDuration;
use dmsg_core::wire::body::SpanRepr;
use dmsg_core::wire::{Body, Cmd, Command, Flags};
use dmsg_std::connector::{Backoff, Connector, Reconnecting, SupervisorEvent};
use dmsg_std::link::{self, LinkError, LinkEvent, LinkEvents, LinkHandle, LinkOptions, Message};
use dmsg_std::net::Addr;

use support::{accept_within, listener, FakeOptions, FakeService, Writer, DEADLINE};

/// A link to a fresh loopback server; returns the server's socket too.
fn pair(opts: LinkOptions) -> (LinkHandle, LinkEvents, TcpStream) {
    let (l, addr) = listener();
    let client = TcpStream::connect(addr).unwrap();
    let server = accept_within(&l, DEADLINE);
    let (h, e) = link::spawn(client, opts).unwrap();
    (h, e, server)
}

/// Events until `LinkClosed` (inclusive), within the deadline.
fn until_closed(events: &LinkEvents) -> Vec<LinkEvent> {
    let end = Instant::now() + DEADLINE;
    let mut v = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ev = events
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no LinkClosed ({e:?}); got {v:?}"));
        let last = matches!(ev, LinkEvent::LinkClosed { .. });
        v.push(ev);
        if last {
            return v;
        }
    }
}

/// Reads and decodes what the client sends, until `stop` says so or the deadline.
fn read_frames(
    s: &mut TcpStream,
    mut stop: impl FnMut(&[(u32, u64, u32)]) -> bool,
) -> Vec<(u32, u64, u32)> {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut dec = support::decoder();
    let mut frames = Vec::new();
    let mut buf = [0u8; 8192];
    let end = Instant::now() + DEADLINE;
    while !stop(&frames) {
        assert!(Instant::now() < end, "timed out; frames {frames:x?}");
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("{e}"),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let o = dec.decode(rest).unwrap();
            rest = &rest[o.consumed..];
            if let Some(f) = o.frame {
                let r = f.repr();
                frames.push((r.cmd.0, r.msgid.0, r.error));
            }
        }
    }
    frames
}

#[test]
fn link_loss_ends_open_transactions_with_lostlink_exactly_once() {
    let (h, events, mut server) = pair(LinkOptions::default());
    let span = Message::new(Command::LnkSpan).with_body(Body::Span(SpanRepr::default()));
    let t1 = h.open(span, Flags::empty(), None).unwrap();
    let t2 = h
        .open(
            Message::new(Command::DbgShell).with_aux(*b"x\0"),
            Flags::empty(),
            None,
        )
        .unwrap();
    assert_eq!(h.status().unwrap().open_ours, 2);
    // Let the server take what was sent, then close it: the client sees EOF.
    read_frames(&mut server, |f| f.len() >= 3);
    server.shutdown(Shutdown::Both).unwrap();
    drop(server);

    let evs = until_closed(&events);
    let closes: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Closed { txn, error, end } => Some((*txn, *error, *end)),
            _ => None,
        })
        .collect();
    assert_eq!(closes.len(), 2, "{evs:?}");
    for t in [t1, t2] {
        let mine: Vec<_> = closes.iter().filter(|c| c.0 == t).collect();
        assert_eq!(mine.len(), 1, "exactly once: {evs:?}");
        assert_eq!((mine[0].1, mine[0].2), (LOSTLINK, TxnEnd::LinkLost));
        assert_eq!(LOSTLINK, 0x21);
    }
    match evs.last().unwrap() {
        LinkEvent::LinkClosed { reason, transport } => {
            assert_eq!(*reason, CloseReason::TransportClosed);
            assert!(transport.is_some());
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(evs.first(), Some(&LinkEvent::Connected));
    // Nothing after LinkClosed, and the event stream ends.
    assert_eq!(
        events.recv_timeout(DEADLINE),
        Err(RecvTimeoutError::Disconnected)
    );
    assert_eq!(
        h.send_one_way(Message::new(Command::DbgShell), false, None),
        Err(LinkError::Closed)
    );
    assert!(matches!(h.status(), Err(LinkError::Closed)));
}

#[test]
fn keepalive_pings_and_idle_timeout_come_from_poll_timeout() {
    let mut opts = LinkOptions::default();
    opts.config.ping_interval = CoreDuration::from_millis(30);
    opts.config.idle_timeout = CoreDuration::from_millis(300);
    let (_h, events, mut server) = pair(opts);
    let t0 = Instant::now();
    // The silent server sees our LNK_PINGs (one-way, 0x00000101) ...
    let frames = read_frames(&mut server, |f| {
        f.iter().filter(|x| x.0 == 0x0000_0101).count() >= 3
    });
    assert_eq!(frames[0].0, 0x8000_1106);
    // ... and, answering nothing, the link declares it dead after the idle timeout.
    let evs = until_closed(&events);
    assert!(matches!(
        evs.last(),
        Some(LinkEvent::LinkClosed {
            reason: CloseReason::KeepaliveTimeout,
            ..
        })
    ));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn garbage_ends_only_that_link() {
    let (bad, bad_events, mut bad_server) = pair(LinkOptions::default());
    let (good, _good_events, _good_server) = pair(LinkOptions::default());
    use std::io::Write;
    bad_server
        .write_all(b"this is not DMSG at all, sorry....................................")
        .unwrap();
    let evs = until_closed(&bad_events);
    let why = evs.last().unwrap().close_description().unwrap();
    assert!(why.contains("class SYNC"), "{why}");
    assert!(matches!(bad.status(), Err(LinkError::Closed)));
    // The other link is untouched.
    assert_eq!(good.status().unwrap().state, LinkState::Open);
    good.send_one_way(Message::new(Command::DbgShell), false, None)
        .unwrap();
}

#[test]
fn handles_are_send_sync_clone_and_work_from_many_threads() {
    fn assert_traits<T: Send + Sync + Clone>() {}
    assert_traits::<LinkHandle>();
    let (h, _events, mut server) = pair(LinkOptions::default());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let h = h.clone();
            std::thread::spawn(move || {
                for j in 0..25 {
                    let text = format!("t{i} {j}\0");
                    h.send_one_way(
                        Message::new(Command::DbgShell).with_aux(text.into_bytes()),
                        false,
                        None,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let frames = read_frames(&mut server, |f| {
        f.iter().filter(|x| x.0 == 0x0010_0101).count() >= 100
    });
    assert_eq!(frames.iter().filter(|x| x.0 == 0x0010_0101).count(), 100);
    assert_eq!(h.status().unwrap().stats.one_way_out, 100);
}

#[test]
fn without_an_events_reader_peer_transactions_are_refused() {
    let (h, events, server) = pair(LinkOptions::default());
    drop(events);
    let mut w = Writer::new(server.try_clone().unwrap());
    w.conn();
    w.frame(
        Cmd::new(Command::LnkSpan, Flags::CREATE),
        0xabc,
        0,
        &Body::Span(SpanRepr::default()),
        &[],
    );
    let mut r = server;
    let frames = read_frames(&mut r, |f| f.iter().any(|x| x.1 == 0xabc));
    let answer = frames.iter().find(|x| x.1 == 0xabc).unwrap();
    // LNK_ERROR|CREATE|DELETE|REPLY|REVTRANS, error NOSUPP: a one-frame refusal.
    assert_eq!((answer.0, answer.2), (0xe80f_ff01, NOSUPP));
    // Our direction is closed; the peer's stays open until it sends DELETE.
    assert_eq!(h.status().unwrap().open_theirs, 1);
}

#[test]
fn clean_close_with_the_fake_service() {
    let fake = FakeService::start(FakeOptions::default());
    let s = TcpStream::connect(fake.addr).unwrap();
    let (h, events) = link::spawn(s, LinkOptions::default()).unwrap();
    // Wait for the service's LNK_CONN and its answer to ours.
    let end = Instant::now() + DEADLINE;
    let mut answered = false;
    while !answered {
        match events.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(LinkEvent::ConnAnswered { error }) => {
                assert_eq!(error, 0);
                answered = true;
            }
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    h.close().unwrap();
    let evs = until_closed(&events);
    assert!(
        matches!(
            evs.last(),
            Some(LinkEvent::LinkClosed {
                reason: CloseReason::LocalClose,
                ..
            })
        ),
        "{evs:?}"
    );
    assert_eq!(h.status(), Err(LinkError::Closed));
}

fn next_event(rc: &Reconnecting) -> SupervisorEvent {
    rc.recv_timeout(DEADLINE).expect("supervisor event")
}

#[test]
fn reconnects_with_backoff_after_the_server_drops_us() {
    let (l, addr) = listener();
    let backoff = Backoff {
        initial: Duration::from_millis(40),
        max: Duration::from_millis(200),
        factor: 2,
        jitter_percent: 25,
        max_attempts: Some(20),
        reset_after: Duration::from_secs(60),
    };
    let connector = Connector::new(Addr::from(addr))
        .with_backoff(backoff)
        .with_connect_timeout(Duration::from_secs(1));
    let rc = Reconnecting::start(connector, LinkOptions::default()).unwrap();

    // First connection: accepted, then dropped by the server.
    let s1 = accept_within(&l, DEADLINE);
    let SupervisorEvent::Up { generation: 1, .. } = next_event(&rc) else {
        panic!("first link not up")
    };
    assert!(rc.current().is_some());
    drop(s1);
    let mut lost_at = None;
    let delay = loop {
        match next_event(&rc) {
            SupervisorEvent::Link(ev) if matches!(*ev, LinkEvent::LinkClosed { .. }) => {
                lost_at = Some(Instant::now())
            }
            SupervisorEvent::Link(_) => {}
            SupervisorEvent::Retrying(r) => {
                assert_eq!(r.attempt, 1);
                // EOF or a reset, depending on what the server had left unread.
                assert!(
                    r.reason.contains("closed") || r.reason.contains("broke"),
                    "{}",
                    r.reason
                );
                break r.delay;
            }
            e => panic!("{e:?}"),
        }
    };
    assert!(lost_at.is_some());
    assert!(
        delay >= Duration::from_millis(30) && delay <= Duration::from_millis(40),
        "{delay:?}"
    );

    // Accepted again: a second link, after at least the backoff delay.
    let _s2 = accept_within(&l, DEADLINE);
    let handle = loop {
        match next_event(&rc) {
            SupervisorEvent::Up {
                generation, handle, ..
            } => {
                assert_eq!(generation, 2);
                break handle;
            }
            SupervisorEvent::Link(ev) if *ev == LinkEvent::Connected => {}
            e => panic!("{e:?}"),
        }
    };
    assert!(lost_at.unwrap().elapsed() >= Duration::ZERO);
    assert_eq!(handle.status().unwrap().state, LinkState::Open);
    drop(handle);

    // The listener goes away: refused connects back off, growing.
    drop(_s2);
    drop(l);
    let mut delays = Vec::new();
    while delays.len() < 3 {
        if let SupervisorEvent::Retrying(r) = next_event(&rc) {
            delays.push(r.delay);
        }
    }
    assert!(delays[2] > delays[0], "{delays:?}");
    drop(rc); // stops the supervisor and joins it
}

#[test]
fn shell_accepts_relayed_spans_and_sends_at_label_commands_on_their_circuit() {
    use dmsg_core::wire::Label;
    use dmsg_std::shell::{ShellClient, ShellError};

    let (h, events, server) = pair(LinkOptions::default());
    let mut w = Writer::new(server.try_clone().unwrap());
    w.conn();
    let span = SpanRepr {
        peer_label: Label::new("cpeer-cluster").unwrap(),
        pfs_label: Label::new("cpeer-pfs").unwrap(),
        ..SpanRepr::default()
    };
    w.frame(
        Cmd::new(Command::LnkSpan, Flags::CREATE),
        0x5150,
        0,
        &Body::Span(span),
        &[],
    );
    let mut client = ShellClient::over(h, events, DEADLINE);
    // Take the span in (it is accepted as DragonFly's client does).
    let end = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < end, "span never seen");
        client.linger(Duration::from_millis(10), &mut |_| {});
        match client.shell().send_line("@cpeer-pfs tree") {
            Ok(()) => break,
            Err(ShellError::NoSuchSpan(_)) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(matches!(
        client.shell().send_line("@nope tree"),
        Err(ShellError::NoSuchSpan(l)) if l == "nope"
    ));
    // The server closes its span; the client closes its side.
    w.frame(
        Cmd::new(Command::LnkSpan, Flags::DELETE),
        0x5150,
        0,
        &Body::Span(SpanRepr::default()),
        &[],
    );

    let mut r = server;
    r.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut dec = support::decoder();
    let mut seen: Vec<(u32, u64, u64, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 8192];
    while !seen.iter().any(|f| f.0 == 0x680f_ff01) {
        assert!(Instant::now() < end, "{seen:x?}");
        client.linger(Duration::from_millis(5), &mut |_| {});
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("{e}"),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let o = dec.decode(rest).unwrap();
            rest = &rest[o.consumed..];
            if let Some(f) = o.frame {
                let h = f.repr();
                seen.push((h.cmd.0, h.msgid.0, h.circuit.0, f.aux().to_vec()));
            }
        }
    }
    // Accepted with LNK_ERROR|CREATE|REPLY|REVTRANS, error 0 ...
    assert!(seen.iter().any(|f| f.0 == 0xa80f_ff01 && f.1 == 0x5150));
    // ... the command went on the span's circuit, REVCIRC set (the peer opened it) ...
    let cmd = seen
        .iter()
        .find(|f| f.3 == b"tree\0")
        .expect("the @ command");
    assert_eq!((cmd.0, cmd.1, cmd.2), (0x0410_0101, 0, 0x5150));
    // ... and the span's DELETE was answered with LNK_ERROR|DELETE|REPLY|REVTRANS.
    assert!(seen.iter().any(|f| f.0 == 0x680f_ff01 && f.1 == 0x5150));
}
