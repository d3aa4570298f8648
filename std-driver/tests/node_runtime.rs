//! The node runtime over real loopback TCP: a hub and leaves converge and route
//! transactions leaf to leaf; a cut connection ends open transactions with LOSTLINK; the
//! leaf redials.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dmsg_core::errcode;
use dmsg_core::link::SendError;
use dmsg_core::link::TxnEnd;
use dmsg_core::node::{NodeConfig, NodeError, NodeTxn};
use dmsg_core::wire::{Command, Flags, Label};
use dmsg_std::link::Message;
use dmsg_std::net::Addr;
use dmsg_std::node::drive::{HubNode, LeafNode};
use dmsg_std::node::{
    self, addr_of, default_cluster, span_for, NodeEvent, NodeEvents, NodeHandle, NodeOptions,
    RtError,
};

const DEADLINE: Duration = Duration::from_secs(8);

fn hub() -> (NodeHandle, NodeEvents, SocketAddr) {
    hub_with(false)
}

fn hub_with(sessions: bool) -> (NodeHandle, NodeEvents, SocketAddr) {
    let opts = NodeOptions {
        sessions,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        name: "hub".into(),
        node: NodeConfig {
            label: Label::new("hub").unwrap(),
        },
        ..NodeOptions::default()
    };
    let (h, ev) = node::spawn::<HubNode>(opts).expect("hub starts");
    let a = h.local_addr().expect("hub listens");
    (h, ev, a)
}

fn leaf(name: &str, hub: SocketAddr) -> (NodeHandle, NodeEvents) {
    leaf_with(name, hub, false)
}

fn leaf_with(name: &str, hub: SocketAddr, sessions: bool) -> (NodeHandle, NodeEvents) {
    let opts = NodeOptions {
        sessions,
        listen: None,
        echo: true,
        name: name.into(),
        node: NodeConfig {
            label: Label::new(name).unwrap(),
        },
        ..NodeOptions::default()
    };
    let (h, ev) = node::spawn::<LeafNode>(opts).expect("leaf starts");
    h.advertise(span_for(default_cluster(), name)).unwrap();
    h.connect(Addr::new(hub.ip().to_string(), hub.port()))
        .unwrap();
    (h, ev)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Takes events until `f` returns `Some`.
fn next_matching<T>(ev: &NodeEvents, what: &str, mut f: impl FnMut(NodeEvent) -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match ev.recv_timeout(left) {
            Ok(e) => {
                if let Some(t) = f(e) {
                    return t;
                }
            }
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn hub_with_ten_leaves_converges_and_every_leaf_reaches_every_other() {
    ten_leaves(false);
}

#[test]
fn with_sessions_a_hub_with_ten_leaves_converges_and_every_leaf_reaches_every_other() {
    ten_leaves(true);
}

fn ten_leaves(sessions: bool) {
    let (hub, _hub_ev, addr) = hub_with(sessions);
    let names: Vec<String> = (0..10).map(|i| format!("leaf-{i}")).collect();
    let leaves: Vec<(NodeHandle, NodeEvents)> =
        names.iter().map(|n| leaf_with(n, addr, sessions)).collect();
    let cluster = default_cluster();
    for (i, (h, _)) in leaves.iter().enumerate() {
        wait_until(&format!("{} to know every other leaf", names[i]), || {
            names
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .all(|(_, n)| h.route_to(addr_of(cluster, n)).unwrap().is_some())
        });
    }
    let tree = hub.tree().unwrap();
    for n in &names {
        assert!(tree.contains(n.as_str()), "hub tree lacks {n}:\n{tree}");
    }
    // Every leaf asks every other one, through the hub; each answer echoes the request.
    for (i, (h, ev)) in leaves.iter().enumerate() {
        let mut open: HashSet<NodeTxn> = HashSet::new();
        let mut want: HashSet<Vec<u8>> = HashSet::new();
        for (j, n) in names.iter().enumerate() {
            if i == j {
                continue;
            }
            let body = format!("{i}->{j}").into_bytes();
            let txn = h
                .open_waiting(
                    addr_of(cluster, n),
                    Message::new(Command::DbgShell).with_aux(body.clone()),
                    Flags::DELETE,
                    Duration::from_secs(5),
                )
                .unwrap();
            open.insert(txn);
            want.insert(body);
        }
        let mut closed = 0;
        while closed < 9 {
            next_matching(ev, "answers", |e| match e {
                NodeEvent::Message { txn, msg } if open.contains(&txn) => {
                    assert!(want.remove(&msg.aux), "unexpected answer {:?}", msg.text());
                    Some(())
                }
                NodeEvent::Closed { txn, error, end } if open.contains(&txn) => {
                    assert_eq!((error, end), (0, TxnEnd::Completed));
                    closed += 1;
                    Some(())
                }
                _ => None,
            });
        }
        assert!(want.is_empty(), "{} got no answer for {want:?}", names[i]);
    }
    let st = hub.status().unwrap();
    assert_eq!(st.links.len(), 10);
    assert!(st.stats.routes_relayed >= 90, "{:?}", st.stats);
    for (h, _) in &leaves {
        h.shutdown();
    }
    hub.shutdown();
}

#[test]
fn without_sessions_a_cut_connection_ends_open_transactions_with_lostlink_and_the_leaf_redials() {
    let (hub, _hub_ev, addr) = hub();
    let (a, a_ev) = leaf("a", addr);
    let (b, _b_ev) = leaf("b", addr);
    let cluster = default_cluster();
    wait_until("a to reach b", || {
        a.route_to(addr_of(cluster, "b")).unwrap().is_some()
    });
    // A transaction left open (no DELETE): b echoes, a keeps it open.
    let txn = a
        .open_waiting(
            addr_of(cluster, "b"),
            Message::new(Command::DbgShell).with_aux(*b"hold"),
            Flags::empty(),
            Duration::from_secs(5),
        )
        .unwrap();
    let echo = next_matching(&a_ev, "the echo", |e| match e {
        NodeEvent::Message { txn: t, msg } if t == txn => Some(msg.aux),
        _ => None,
    });
    assert_eq!(echo, b"hold");
    a.kill_link(txn.link).unwrap();
    let (error, end) = next_matching(&a_ev, "LOSTLINK", |e| match e {
        NodeEvent::Closed { txn: t, error, end } if t == txn => Some((error, end)),
        _ => None,
    });
    assert_eq!(error, errcode::txn::LOSTLINK);
    assert_eq!(end, TxnEnd::LinkLost);
    next_matching(&a_ev, "LinkDown", |e| {
        matches!(e, NodeEvent::LinkDown { .. }).then_some(())
    });
    // The leaf redials and the route comes back.
    next_matching(&a_ev, "a new link", |e| {
        matches!(e, NodeEvent::LinkUp { .. }).then_some(())
    });
    wait_until("a to reach b again", || {
        a.route_to(addr_of(cluster, "b")).unwrap().is_some()
    });
    assert_eq!(a.status().unwrap().redials, 1);
    drop((a, b));
    hub.shutdown();
}

/// With sessions on, one transaction streams `N` numbered frames from leaf a to leaf b (each
/// echoed back) while a's TCP connection is cut twice: once by a, once by the hub. Every
/// echo arrives exactly once and in order, the links are suspended and resumed (never down),
/// and the transaction closes cleanly.
#[test]
fn with_sessions_a_stream_survives_forced_connection_resets_without_loss_or_duplication() {
    const N: usize = 400;
    const WINDOW: usize = 16;
    let (hub, _hub_ev, addr) = hub_with(true);
    let (a, a_ev) = leaf_with("a", addr, true);
    let (_b, _b_ev) = leaf_with("b", addr, true);
    let cluster = default_cluster();
    wait_until("a to reach b", || {
        a.route_to(addr_of(cluster, "b")).unwrap().is_some()
    });
    let frame = |k: usize| format!("frame {k:06}").into_bytes();
    let txn = a
        .open_waiting(
            addr_of(cluster, "b"),
            Message::new(Command::DbgShell).with_aux(frame(0)),
            Flags::empty(),
            Duration::from_secs(5),
        )
        .unwrap();
    let (mut sent, mut echoed) = (1usize, 0usize);
    let (mut suspended, mut resumed) = (0, 0);
    let end = Instant::now() + DEADLINE;
    loop {
        while sent < N && sent - echoed < WINDOW {
            let flags = if sent + 1 == N {
                Flags::DELETE
            } else {
                Flags::empty()
            };
            match a.send(
                txn,
                Message::new(Command::DbgShell).with_aux(frame(sent)),
                flags,
            ) {
                Ok(()) => sent += 1,
                Err(RtError::Node(NodeError::Link(SendError::WouldBlock { .. }))) => break,
                Err(e) => panic!("send {sent}: {e}"),
            }
        }
        assert!(
            Instant::now() < end,
            "stream stuck at {echoed}/{N} echoes, {sent} sent"
        );
        match a_ev.recv_timeout(Duration::from_millis(5)) {
            Ok(NodeEvent::Message { txn: t, msg }) if t == txn => {
                assert_eq!(
                    msg.aux,
                    frame(echoed),
                    "echo {echoed} lost, repeated or out of order"
                );
                echoed += 1;
                if echoed == N / 4 {
                    a.kill_link(txn.link).unwrap();
                }
                if echoed == N / 2 {
                    // The hub cuts its side of a's connection this time.
                    let a_local = a.status().unwrap().links[0].local.unwrap();
                    let st = hub.status().unwrap();
                    let la = st
                        .links
                        .iter()
                        .find(|l| l.peer == a_local)
                        .expect("a's link at the hub");
                    hub.kill_link(la.link).unwrap();
                }
            }
            Ok(NodeEvent::Closed { txn: t, error, end }) if t == txn => {
                assert_eq!((error, end), (0, TxnEnd::Completed));
                break;
            }
            Ok(NodeEvent::LinkSuspended { .. }) => suspended += 1,
            Ok(NodeEvent::LinkResumed { .. }) => resumed += 1,
            Ok(NodeEvent::LinkDown { why, .. }) => panic!("the link went down: {why}"),
            _ => {}
        }
    }
    assert_eq!(echoed, N);
    assert!(
        suspended >= 2 && resumed >= 2,
        "suspended {suspended}, resumed {resumed}"
    );
    assert!(a.status().unwrap().resumes >= 2);
    hub.shutdown();
}

/// Shutting a hub down closes its links cleanly: with sessions on, the leaf sees the peer
/// close (LNK_CONN DELETE and the session's FIN), not a lost connection to resume; it then
/// keeps dialling the hub that is gone.
#[test]
fn hub_shutdown_closes_session_links_cleanly_and_the_leaf_keeps_dialling() {
    let (hub, _hub_ev, addr) = hub_with(true);
    let (a, a_ev) = leaf_with("a", addr, true);
    next_matching(&a_ev, "the hub's LNK_CONN", |e| {
        matches!(e, NodeEvent::PeerConn { .. }).then_some(())
    });
    let t = Instant::now();
    hub.shutdown();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "the clean close took {:?}",
        t.elapsed()
    );
    let reason = next_matching(&a_ev, "LinkDown", |e| match e {
        NodeEvent::LinkSuspended { .. } => panic!("a clean close must not suspend the link"),
        NodeEvent::LinkDown { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(reason, dmsg_core::link::CloseReason::PeerClosed);
    next_matching(&a_ev, "a retry", |e| {
        matches!(e, NodeEvent::Retrying { .. }).then_some(())
    });
    drop(a);
}

/// A leaf whose session waits for a hub that is gone: dropping it abandons the session and
/// returns at once.
#[test]
fn dropping_a_leaf_whose_session_waits_to_resume_returns_promptly() {
    let (hub, _hub_ev, addr) = hub_with(true);
    let (a, a_ev) = leaf_with("a", addr, true);
    next_matching(&a_ev, "the hub's LNK_CONN", |e| {
        matches!(e, NodeEvent::PeerConn { .. }).then_some(())
    });
    let a_local = a.status().unwrap().links[0].local.unwrap();
    let st = hub.status().unwrap();
    let la = st.links.iter().find(|l| l.peer == a_local).unwrap().link;
    hub.kill_link(la).unwrap();
    hub.shutdown();
    next_matching(&a_ev, "LinkSuspended", |e| {
        matches!(e, NodeEvent::LinkSuspended { .. }).then_some(())
    });
    let t = Instant::now();
    drop(a);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "drop took {:?}",
        t.elapsed()
    );
    let last = a_ev.into_iter().last();
    assert_eq!(last, Some(NodeEvent::Stopped));
}

/// A peer that sends garbage loses its connection (with or without sessions: not a DMSG
/// frame, or a decode error on the link); the hub goes on serving others.
#[test]
fn garbage_from_a_peer_ends_only_that_connection() {
    use std::io::{Read, Write};
    for sessions in [false, true] {
        let (hub, _hub_ev, addr) = hub_with(sessions);
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(DEADLINE)).unwrap();
        raw.write_all(&[0xAB; 256]).unwrap();
        // The hub closes it: reads end (EOF or reset) after at most its LNK_CONN.
        let mut sink = Vec::new();
        let r = raw.read_to_end(&mut sink);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "sessions {sessions}: {r:?}"
        );
        wait_until("the hub to drop the garbage link", || {
            hub.status().unwrap().links.is_empty()
        });
        let (a, a_ev) = leaf_with("a", addr, sessions);
        next_matching(&a_ev, "a good link after the bad one", |e| {
            matches!(e, NodeEvent::PeerConn { .. }).then_some(())
        });
        drop(a);
        hub.shutdown();
    }
}

/// A TCP proxy between leaves and the hub whose `cut` ends the leaves' side of every
/// connection but keeps the hub's side open: the hub sees nothing (a half-open connection).
struct HalfOpenProxy {
    addr: SocketAddr,
    clients: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    _uplinks: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl HalfOpenProxy {
    fn start(to: SocketAddr) -> HalfOpenProxy {
        use std::sync::{Arc, Mutex};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let clients = Arc::new(Mutex::new(Vec::new()));
        let uplinks = Arc::new(Mutex::new(Vec::new()));
        let (c2, u2) = (clients.clone(), uplinks.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let Ok(u) = std::net::TcpStream::connect(to) else {
                    return;
                };
                c2.lock().unwrap().push(c.try_clone().unwrap());
                u2.lock().unwrap().push(u.try_clone().unwrap());
                let (mut c_r, mut u_w) = (c.try_clone().unwrap(), u.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_r, &mut u_w);
                });
                let (mut u_r, mut c_w) = (u, c);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_r, &mut c_w);
                });
            }
        });
        HalfOpenProxy {
            addr,
            clients,
            _uplinks: uplinks,
        }
    }

    fn cut(&self) {
        for c in self.clients.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The leaf's connection dies but the hub's side stays open (half-open): the leaf redials,
/// the hub gets a RESUME for a link whose old connection it still holds, drops that one and
/// resumes; the stream goes on with nothing lost or repeated.
#[test]
fn with_sessions_a_resume_over_a_half_open_connection_replaces_it() {
    const N: usize = 200;
    let (hub, _hub_ev, addr) = hub_with(true);
    let proxy = HalfOpenProxy::start(addr);
    let (a, a_ev) = leaf_with("a", proxy.addr, true);
    let (_b, _b_ev) = leaf_with("b", addr, true);
    let cluster = default_cluster();
    wait_until("a to reach b", || {
        a.route_to(addr_of(cluster, "b")).unwrap().is_some()
    });
    let frame = |k: usize| format!("frame {k:06}").into_bytes();
    let txn = a
        .open_waiting(
            addr_of(cluster, "b"),
            Message::new(Command::DbgShell).with_aux(frame(0)),
            Flags::empty(),
            Duration::from_secs(5),
        )
        .unwrap();
    let (mut sent, mut echoed) = (1usize, 0usize);
    let end = Instant::now() + DEADLINE;
    loop {
        while sent < N && sent - echoed < 8 {
            let flags = if sent + 1 == N {
                Flags::DELETE
            } else {
                Flags::empty()
            };
            match a.send(
                txn,
                Message::new(Command::DbgShell).with_aux(frame(sent)),
                flags,
            ) {
                Ok(()) => sent += 1,
                Err(RtError::Node(NodeError::Link(SendError::WouldBlock { .. }))) => break,
                Err(e) => panic!("send {sent}: {e}"),
            }
        }
        assert!(Instant::now() < end, "stream stuck at {echoed}/{N} echoes");
        match a_ev.recv_timeout(Duration::from_millis(5)) {
            Ok(NodeEvent::Message { txn: t, msg }) if t == txn => {
                assert_eq!(
                    msg.aux,
                    frame(echoed),
                    "echo {echoed} lost, repeated or out of order"
                );
                echoed += 1;
                if echoed == N / 2 {
                    proxy.cut();
                }
            }
            Ok(NodeEvent::Closed { txn: t, error, end }) if t == txn => {
                assert_eq!((error, end), (0, TxnEnd::Completed));
                break;
            }
            Ok(NodeEvent::LinkDown { why, .. }) => panic!("the link went down: {why}"),
            _ => {}
        }
    }
    assert_eq!(echoed, N);
    let st = hub.status().unwrap();
    assert!(st.resumes >= 1, "the hub resumed nothing: {st:?}");
    assert_eq!(
        st.links.len(),
        2,
        "the old half-open connection is gone: {:?}",
        st.links
    );
    hub.shutdown();
}
