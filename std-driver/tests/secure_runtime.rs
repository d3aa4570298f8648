//! The node runtime with the secure channel (`--keys`) over real loopback TCP: links come up
//! encrypted and carry transactions; wrong keys, men in the middle, stalled handshakes,
//! half-open floods and flipped bits end only the connection concerned, with a typed error
//! and a counter, and nothing of it reaches the application.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmsg_core::link::TxnEnd;
use dmsg_core::node::NodeConfig;
use dmsg_core::secure::{Keypair, SecureError};
use dmsg_core::wire::{Command, Flags, Label};
use dmsg_std::keys::write_keypair;
use dmsg_std::link::Message;
use dmsg_std::net::Addr;
use dmsg_std::node::drive::{HubNode, LeafNode};
use dmsg_std::node::{
    self, addr_of, default_cluster, span_for, NodeEvent, NodeEvents, NodeHandle, NodeOptions,
};
use dmsg_std::secure::SecureSetup;
use rand_core::TryRngCore;

const DEADLINE: Duration = Duration::from_secs(10);

/// A fresh keys directory under the system's temp dir (removed on drop).
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("dmsg-secure-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// Writes a key pair `name` derived from `seed`; returns it.
    fn key(&self, name: &str, seed: u8) -> Keypair {
        let kp = Keypair::from_secret([seed; 32]);
        write_keypair(&self.0, name, &kp, true).unwrap();
        kp
    }

    fn setup(&self, name: &str) -> Arc<SecureSetup> {
        Arc::new(SecureSetup::load(&self.0, name).expect("keys load"))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hub(secure: Arc<SecureSetup>, sessions: bool) -> (NodeHandle, NodeEvents, SocketAddr) {
    let opts = NodeOptions {
        sessions,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        name: "hub".into(),
        node: NodeConfig {
            label: Label::new("hub").unwrap(),
        },
        secure: Some(secure),
        ..NodeOptions::default()
    };
    let (h, ev) = node::spawn::<HubNode>(opts).expect("hub starts");
    let a = h.local_addr().expect("hub listens");
    (h, ev, a)
}

fn leaf(
    name: &str,
    secure: Option<Arc<SecureSetup>>,
    hub: SocketAddr,
    sessions: bool,
) -> (NodeHandle, NodeEvents) {
    let opts = NodeOptions {
        sessions,
        listen: None,
        echo: true,
        name: name.into(),
        node: NodeConfig {
            label: Label::new(name).unwrap(),
        },
        secure,
        ..NodeOptions::default()
    };
    let (h, ev) = node::spawn::<LeafNode>(opts).expect("leaf starts");
    h.advertise(span_for(default_cluster(), name)).unwrap();
    h.connect_peer(Addr::new(hub.ip().to_string(), hub.port()), "hub")
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

/// Every event so far delivered nothing to the application (no LNK_CONN, no frame).
fn assert_nothing_delivered(ev: &NodeEvents, who: &str) {
    while let Ok(e) = ev.recv_timeout(Duration::from_millis(1)) {
        assert!(
            !matches!(
                e,
                NodeEvent::PeerConn { .. }
                    | NodeEvent::Opened { .. }
                    | NodeEvent::Message { .. }
                    | NodeEvent::OneWay { .. }
                    | NodeEvent::LinkUp { .. }
            ),
            "{who}: delivered {e:?}"
        );
    }
}

/// Opens an echo transaction from `from` to the node `to` and waits for its answer.
fn echo_round_trip(from: &NodeHandle, ev: &NodeEvents, to: &str, body: &[u8]) {
    let txn = from
        .open(
            addr_of(default_cluster(), to),
            Message::new(Command::DbgShell).with_aux(body.to_vec()),
            Flags::DELETE,
        )
        .unwrap();
    let mut got = false;
    next_matching(ev, "the echo to close", |e| match e {
        NodeEvent::Message { txn: t, msg } if t == txn => {
            assert_eq!(msg.aux, body);
            got = true;
            None
        }
        NodeEvent::Closed { txn: t, error, end } if t == txn => {
            assert_eq!((error, end), (0, TxnEnd::Completed));
            Some(())
        }
        _ => None,
    });
    assert!(got, "no echo of {body:?}");
}

/// A hub and a leaf that hold each other's keys: the link comes up encrypted and an echo
/// transaction round-trips.
#[test]
fn an_encrypted_link_comes_up_and_carries_a_transaction() {
    let d = Dir::new("basic");
    d.key("hub", 1);
    d.key("alpha", 2);
    let (hub, hub_ev, addr) = hub(d.setup("hub"), true);
    let (a, _a_ev) = leaf("alpha", Some(d.setup("alpha")), addr, true);
    wait_until("the hub to reach alpha", || {
        hub.route_to(addr_of(default_cluster(), "alpha"))
            .unwrap()
            .is_some()
    });
    echo_round_trip(&hub, &hub_ev, "alpha", b"ping over the secure channel");
    let st = hub.status().unwrap();
    assert_eq!(st.secure.handshakes, 1, "{:?}", st.secure);
    assert_eq!(st.secure.failures.total(), 0, "{:?}", st.secure);
    let sa = a.status().unwrap();
    assert_eq!(sa.secure.handshakes, 1, "{:?}", sa.secure);
    a.shutdown();
    hub.shutdown();
}

/// A leaf whose static key is in no `.pub` file of the hub is refused after the handshake
/// proved it (`PeerRefused`); a leaf that expects another hub key fails the hub's check of
/// message 1 (`HandshakeAuth`). Neither delivers anything to either application; a good
/// leaf's link on the same hub keeps working.
#[test]
fn unknown_and_wrong_static_keys_are_refused_with_a_typed_error_and_a_counter() {
    let hd = Dir::new("hub");
    hd.key("hub", 1);
    hd.key("alpha", 2);
    let (hub, hub_ev, addr) = hub(hd.setup("hub"), false);
    let (good, _good_ev) = leaf("alpha", Some(hd.setup("alpha")), addr, false);
    wait_until("alpha's link", || {
        hub.route_to(addr_of(default_cluster(), "alpha"))
            .unwrap()
            .is_some()
    });
    while hub_ev.recv_timeout(Duration::from_millis(50)).is_ok() {}

    // Unknown: mallory knows the hub's real key, the hub does not know mallory's.
    let md = Dir::new("mallory");
    md.key("mallory", 9);
    std::fs::copy(hd.path().join("hub.pub"), md.path().join("hub.pub")).unwrap();
    let (m, m_ev) = leaf("mallory", Some(md.setup("mallory")), addr, false);
    let e = next_matching(&hub_ev, "the hub to refuse mallory", |e| match e {
        NodeEvent::SecureFailed { error, link, .. } => Some((error, link)),
        NodeEvent::PeerConn { .. } | NodeEvent::Opened { .. } | NodeEvent::OneWay { .. } => {
            panic!("delivered {e:?}")
        }
        _ => None,
    });
    assert_eq!(e, (SecureError::PeerRefused, None));
    let e = next_matching(&m_ev, "mallory to see its handshake fail", |e| match e {
        NodeEvent::SecureFailed { error, .. } => Some(error),
        _ => None,
    });
    // The hub closes without answering: a cut handshake.
    assert_eq!(e, SecureError::Truncated);
    m.shutdown();
    assert_nothing_delivered(&m_ev, "mallory");
    assert!(hub.status().unwrap().secure.failures.peer_refused >= 1);

    // Wrong: eve expects a hub key the hub does not hold.
    let ed = Dir::new("eve");
    ed.key("eve", 2); // even with a key the hub admits
    let other = Keypair::from_secret([7; 32]);
    std::fs::write(
        ed.path().join("hub.pub"),
        dmsg_std::keys::format_public(&other.public(), "not the hub"),
    )
    .unwrap();
    let (e_h, e_ev) = leaf("eve", Some(ed.setup("eve")), addr, false);
    let e = next_matching(&hub_ev, "the hub to refuse eve", |e| match e {
        NodeEvent::SecureFailed { error, .. } => Some(error),
        NodeEvent::PeerConn { .. } | NodeEvent::Opened { .. } | NodeEvent::OneWay { .. } => {
            panic!("delivered {e:?}")
        }
        _ => None,
    });
    assert_eq!(e, SecureError::HandshakeAuth);
    e_h.shutdown();
    assert_nothing_delivered(&e_ev, "eve");
    let st = hub.status().unwrap();
    assert!(st.secure.failures.handshake_auth >= 1, "{:?}", st.secure);
    assert_eq!(st.links.len(), 1, "only alpha's link");
    echo_round_trip(&hub, &hub_ev, "alpha", b"still here");
    good.shutdown();
    hub.shutdown();
}

/// Settings with a short handshake deadline and a small half-open bound, for the tests.
fn tight_setup(d: &Dir, name: &str, timeout_ms: u64, half_open: usize) -> Arc<SecureSetup> {
    let mut s = SecureSetup::load(d.path(), name).unwrap();
    s.config.handshake_timeout = dmsg_core::time::Duration::from_millis(timeout_ms);
    s.max_half_open = half_open;
    Arc::new(s)
}

/// A TCP proxy in front of the hub: `flip` flips the last byte of the next chunk from the
/// client to the hub; `cut` ends every connection and refuses the ones that follow.
struct Proxy {
    addr: SocketAddr,
    flip: Arc<std::sync::atomic::AtomicBool>,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Mutex;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let flip = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (f2, c2, k2) = (flip.clone(), cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                if c2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(u) = std::net::TcpStream::connect(to) else {
                    return;
                };
                k2.lock().unwrap().push(c.try_clone().unwrap());
                k2.lock().unwrap().push(u.try_clone().unwrap());
                let (mut c_r, mut u_w) = (c.try_clone().unwrap(), u.try_clone().unwrap());
                let f3 = f2.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        let n = match c_r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if f3.swap(false, Ordering::SeqCst) {
                            buf[n - 1] ^= 0x01;
                        }
                        if u_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = u_w.shutdown(std::net::Shutdown::Write);
                });
                let (mut u_r, mut c_w) = (u, c);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u_r, &mut c_w);
                    let _ = c_w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy {
            addr,
            flip,
            cut,
            conns,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A man in the middle with its own key pair: it cannot read the leaf's message 1 (sealed
/// to the hub's static key: `HandshakeAuth` on its side), the leaf rejects its forged
/// message 2 (`HandshakeAuth`), and the hub refuses it when it dials in with its own key
/// (`PeerRefused`). Nothing reaches any application.
#[test]
fn a_man_in_the_middle_with_its_own_key_is_refused_on_both_sides() {
    use std::io::{Read, Write};
    let d = Dir::new("mitm");
    d.key("hub", 1);
    d.key("alpha", 2);
    let (hub, hub_ev, hub_addr) = hub(d.setup("hub"), false);
    let mallory = Keypair::from_secret([66; 32]);
    let hub_pub = Keypair::from_secret([1; 32]).public();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mitm_addr = l.local_addr().unwrap();
    let m_key = mallory.clone();
    let mitm = std::thread::spawn(move || {
        use dmsg_core::secure::{SecureChannel, SecureConfig};
        let now = dmsg_core::time::Instant::ZERO;
        let mut rng = rand_core::OsRng.unwrap_err();
        let (mut c, _) = l.accept().unwrap();
        let mut msg1 = [0u8; dmsg_core::secure::HANDSHAKE1_WIRE];
        c.read_exact(&mut msg1).unwrap();
        // Posing as the hub: the leaf sealed its static key to the real hub's key.
        let mut as_hub =
            SecureChannel::responder(SecureConfig::default(), m_key.clone(), now, &mut rng)
                .unwrap();
        let posing = as_hub.handle_input(now, &msg1).unwrap_err();
        // A forged message 2 for the leaf.
        let mut msg2 = vec![0x00, 0x30];
        msg2.extend_from_slice(m_key.public().as_bytes());
        msg2.extend_from_slice(&[0u8; 16]);
        c.write_all(&msg2).unwrap();
        // Posing as a leaf to the hub, with its own key.
        let mut as_leaf =
            SecureChannel::initiator(SecureConfig::default(), m_key, hub_pub, now, &mut rng)
                .unwrap();
        let mut u = std::net::TcpStream::connect(hub_addr).unwrap();
        u.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut out = [0u8; 256];
        let n = as_leaf.poll_transmit(&mut out).unwrap();
        u.write_all(&out[..n]).unwrap();
        let mut rest = Vec::new();
        let _ = u.read_to_end(&mut rest);
        let _ = c.read_to_end(&mut Vec::new());
        (posing, rest.len())
    });
    let (a, a_ev) = leaf("alpha", Some(d.setup("alpha")), mitm_addr, false);
    let e = next_matching(
        &a_ev,
        "the leaf to reject the forged message 2",
        |e| match e {
            NodeEvent::SecureFailed { error, .. } => Some(error),
            NodeEvent::PeerConn { .. } | NodeEvent::Opened { .. } => panic!("delivered {e:?}"),
            _ => None,
        },
    );
    assert_eq!(e, SecureError::HandshakeAuth);
    let e = next_matching(&hub_ev, "the hub to refuse mallory", |e| match e {
        NodeEvent::SecureFailed { error, .. } => Some(error),
        NodeEvent::PeerConn { .. } | NodeEvent::Opened { .. } => panic!("delivered {e:?}"),
        _ => None,
    });
    assert_eq!(e, SecureError::PeerRefused);
    a.shutdown();
    let (posing, hub_answer) = mitm.join().unwrap();
    assert_eq!(posing, SecureError::HandshakeAuth);
    assert_eq!(hub_answer, 0, "the hub sends nothing to a refused peer");
    assert_nothing_delivered(&a_ev, "alpha");
    assert_nothing_delivered(&hub_ev, "hub");
    let st = a.status();
    assert!(st.is_err() || st.unwrap().secure.failures.handshake_auth >= 1);
    assert!(hub.status().unwrap().secure.failures.peer_refused >= 1);
    hub.shutdown();
}

/// A connection that never finishes its handshake is closed at the deadline with
/// `HandshakeTimeout`, on the hub (a silent client) and on a leaf (a silent server).
#[test]
fn a_handshake_that_never_finishes_times_out_on_either_side() {
    use std::io::Read;
    let d = Dir::new("timeout");
    d.key("hub", 1);
    d.key("alpha", 2);
    let (hub, hub_ev, addr) = hub(tight_setup(&d, "hub", 300, 64), false);
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let t0 = Instant::now();
    let e = next_matching(&hub_ev, "the hub's handshake deadline", |e| match e {
        NodeEvent::SecureFailed { error, .. } => Some(error),
        _ => None,
    });
    assert_eq!(e, SecureError::HandshakeTimeout);
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let mut sink = Vec::new();
    let r = silent.read_to_end(&mut sink);
    assert!(sink.is_empty(), "the hub sent {sink:?}");
    assert!(r.is_ok() || r.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset));
    assert_eq!(hub.status().unwrap().secure.failures.handshake_timeout, 1);
    assert_eq!(hub.status().unwrap().secure.half_open, 0);
    hub.shutdown();

    // A "hub" that accepts and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute = l.local_addr().unwrap();
    let keep = std::thread::spawn(move || l.accept().map(|(s, _)| s));
    let (a, a_ev) = leaf(
        "alpha",
        Some(tight_setup(&d, "alpha", 300, 64)),
        mute,
        false,
    );
    let e = next_matching(&a_ev, "the leaf's handshake deadline", |e| match e {
        NodeEvent::SecureFailed { error, .. } => Some(error),
        NodeEvent::PeerConn { .. } => panic!("delivered {e:?}"),
        _ => None,
    });
    assert_eq!(e, SecureError::HandshakeTimeout);
    assert!(a.status().unwrap().secure.failures.handshake_timeout >= 1);
    a.shutdown();
    drop(keep.join());
}

/// A flood of connections that never finish their handshake: at most `max_half_open` are
/// held, the rest are closed at accept and counted; the established link goes on working;
/// once the held ones time out, a new leaf gets in.
#[test]
fn a_half_open_flood_is_bounded_and_counted_while_established_links_keep_working() {
    const BOUND: usize = 4;
    const FLOOD: usize = 24;
    let d = Dir::new("flood");
    d.key("hub", 1);
    d.key("alpha", 2);
    d.key("bravo", 3);
    let (hub, hub_ev, addr) = hub(tight_setup(&d, "hub", 1500, BOUND), false);
    let (a, _a_ev) = leaf("alpha", Some(d.setup("alpha")), addr, false);
    wait_until("alpha's link", || {
        hub.route_to(addr_of(default_cluster(), "alpha"))
            .unwrap()
            .is_some()
    });
    let flood: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    wait_until("the hub to refuse the flood beyond the bound", || {
        let s = hub.status().unwrap().secure;
        s.half_open_refused == (FLOOD - BOUND) as u64
    });
    let s = hub.status().unwrap().secure;
    assert_eq!(s.half_open, BOUND, "{s:?}");
    // The established link is unaffected while the flood holds every slot.
    echo_round_trip(&hub, &hub_ev, "alpha", b"during the flood");
    // The held ones time out; then a new leaf gets in.
    wait_until("the held handshakes to time out", || {
        hub.status().unwrap().secure.failures.handshake_timeout == BOUND as u64
    });
    let (b, _b_ev) = leaf("bravo", Some(d.setup("bravo")), addr, false);
    wait_until("bravo's link", || {
        hub.route_to(addr_of(default_cluster(), "bravo"))
            .unwrap()
            .is_some()
    });
    echo_round_trip(&hub, &hub_ev, "bravo", b"after the flood");
    drop(flood);
    assert_eq!(hub.status().unwrap().links.len(), 2);
    a.shutdown();
    b.shutdown();
    hub.shutdown();
}

/// One flipped bit in a record on the socket ends that link with `RecordAuth`: the frame
/// it carried never reaches the hub's application (the transaction closes with LOSTLINK,
/// no answer delivered), and another leaf's link is unaffected.
#[test]
fn a_bit_flipped_record_ends_that_link_only_and_delivers_nothing() {
    let d = Dir::new("flip");
    d.key("hub", 1);
    d.key("alpha", 2);
    d.key("bravo", 3);
    let (hub, hub_ev, addr) = hub(d.setup("hub"), false);
    let proxy = Proxy::start(addr);
    let (a, _a_ev) = leaf("alpha", Some(d.setup("alpha")), proxy.addr, false);
    let (b, _b_ev) = leaf("bravo", Some(d.setup("bravo")), addr, false);
    let cl = default_cluster();
    wait_until("both leaves", || {
        hub.route_to(addr_of(cl, "alpha")).unwrap().is_some()
            && hub.route_to(addr_of(cl, "bravo")).unwrap().is_some()
    });
    echo_round_trip(&hub, &hub_ev, "alpha", b"before the flip");
    // The next chunk from alpha (its echo of this request) gets one bit flipped.
    proxy.flip.store(true, std::sync::atomic::Ordering::SeqCst);
    let txn = hub
        .open(
            addr_of(cl, "alpha"),
            Message::new(Command::DbgShell).with_aux(b"flip me".to_vec()),
            Flags::DELETE,
        )
        .unwrap();
    let mut failed = None;
    let closed = next_matching(
        &hub_ev,
        "the flipped record to end alpha's link",
        |e| match e {
            NodeEvent::SecureFailed { error, link, .. } => {
                failed = Some((error, link.is_some()));
                None
            }
            NodeEvent::Message { txn: t, msg } if t == txn => {
                panic!("delivered {:?} from a failed record", msg.aux)
            }
            NodeEvent::Closed { txn: t, error, end } if t == txn => Some((error, end)),
            _ => None,
        },
    );
    assert_eq!(
        closed,
        (dmsg_core::errcode::txn::LOSTLINK, TxnEnd::LinkLost)
    );
    assert_eq!(failed, Some((SecureError::RecordAuth, true)));
    let st = hub.status().unwrap();
    assert_eq!(st.secure.failures.record_auth, 1, "{:?}", st.secure);
    // Bravo's link never noticed.
    echo_round_trip(&hub, &hub_ev, "bravo", b"unaffected");
    a.shutdown();
    b.shutdown();
    hub.shutdown();
}

/// Ten encrypted leaves on one hub converge: each reaches every other through the hub.
#[test]
fn ten_encrypted_leaves_converge_and_reach_each_other() {
    let d = Dir::new("ten");
    d.key("hub", 1);
    let names: Vec<String> = (0..10).map(|i| format!("leaf-{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        d.key(n, 10 + i as u8);
    }
    let (hub, _hev, addr) = hub(d.setup("hub"), true);
    let leaves: Vec<(NodeHandle, NodeEvents)> = names
        .iter()
        .map(|n| leaf(n, Some(d.setup(n)), addr, true))
        .collect();
    let cl = default_cluster();
    for (i, (h, _)) in leaves.iter().enumerate() {
        wait_until(&format!("{} to know every other leaf", names[i]), || {
            names
                .iter()
                .all(|n| *n == names[i] || h.route_to(addr_of(cl, n)).unwrap().is_some())
        });
    }
    let (h0, ev0) = &leaves[0];
    for n in &names[1..] {
        echo_round_trip(h0, ev0, n, format!("0 -> {n}").as_bytes());
    }
    let st = hub.status().unwrap();
    assert_eq!(st.links.len(), 10);
    assert_eq!(st.secure.handshakes, 10, "{:?}", st.secure);
    assert_eq!(st.secure.failures.total(), 0, "{:?}", st.secure);
    for (h, _) in &leaves {
        h.shutdown();
    }
    hub.shutdown();
}

/// An encrypted session survives forced connection resets (either side cuts the socket):
/// each reconnect runs a full handshake, the session resumes, and the stream goes on with
/// nothing lost, repeated or reordered.
#[test]
fn an_encrypted_session_survives_forced_socket_resets_with_nothing_lost() {
    const N: usize = 300;
    const WINDOW: usize = 16;
    let d = Dir::new("resume");
    d.key("hub", 1);
    d.key("a", 2);
    d.key("b", 3);
    let (hub, _hub_ev, addr) = hub(d.setup("hub"), true);
    let (a, a_ev) = leaf("a", Some(d.setup("a")), addr, true);
    let (_b, _b_ev) = leaf("b", Some(d.setup("b")), addr, true);
    let cl = default_cluster();
    wait_until("a to reach b", || {
        a.route_to(addr_of(cl, "b")).unwrap().is_some()
    });
    let frame = |k: usize| format!("frame {k:06}").into_bytes();
    let txn = a
        .open(
            addr_of(cl, "b"),
            Message::new(Command::DbgShell).with_aux(frame(0)),
            Flags::empty(),
        )
        .unwrap();
    let (mut sent, mut echoed, mut resumed) = (1usize, 0usize, 0);
    let end = Instant::now() + DEADLINE * 2;
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
                Err(dmsg_std::node::RtError::Node(dmsg_core::node::NodeError::Link(
                    dmsg_core::link::SendError::WouldBlock { .. },
                ))) => break,
                Err(e) => panic!("send {sent}: {e}"),
            }
        }
        assert!(Instant::now() < end, "stuck at {echoed}/{N}, {sent} sent");
        match a_ev.recv_timeout(Duration::from_millis(5)) {
            Ok(NodeEvent::Message { txn: t, msg }) if t == txn => {
                assert_eq!(msg.aux, frame(echoed), "echo {echoed} lost or repeated");
                echoed += 1;
                if echoed == N / 4 {
                    a.kill_link(txn.link).unwrap();
                }
                if echoed == N / 2 {
                    let a_local = a.status().unwrap().links[0].local.unwrap();
                    let st = hub.status().unwrap();
                    let la = st.links.iter().find(|l| l.peer == a_local).unwrap();
                    hub.kill_link(la.link).unwrap();
                }
            }
            Ok(NodeEvent::Closed { txn: t, error, end }) if t == txn => {
                assert_eq!((error, end), (0, TxnEnd::Completed));
                break;
            }
            Ok(NodeEvent::LinkResumed { .. }) => resumed += 1,
            Ok(NodeEvent::LinkDown { why, .. }) => panic!("the link went down: {why}"),
            _ => {}
        }
    }
    assert_eq!(echoed, N);
    assert!(resumed >= 2, "resumed {resumed}");
    let st = a.status().unwrap();
    assert!(st.resumes >= 2 && st.secure.handshakes >= 3, "{st:?}");
    assert_eq!(hub.status().unwrap().secure.resume_refused, 0);
    hub.shutdown();
}

/// A peer admitted by the hub, but holding another static key than the one a session was
/// created with, cannot resume that session even with its identities: the hub answers a
/// RESET, counts it, and the session stays suspended for its owner.
#[test]
fn a_resume_from_another_static_key_is_refused_and_the_session_is_unaffected() {
    use dmsg_core::secure::{SecureChannel, SecureConfig, SecureEvent};
    use dmsg_core::session::{ControlFrame, ControlOp};
    use std::io::{Read, Write};
    let d = Dir::new("steal");
    d.key("hub", 1);
    d.key("alpha", 2);
    let mallory = d.key("mallory", 3); // admitted by the hub: mallory.pub is there
    let (hub, hub_ev, addr) = hub(d.setup("hub"), true);
    let proxy = Proxy::start(addr);
    let (a, a_ev) = leaf("alpha", Some(d.setup("alpha")), proxy.addr, true);
    // Learn both session identities (the attacker is assumed to know them).
    let alpha_id = next_matching(&hub_ev, "alpha's LNK_CONN", |e| match e {
        NodeEvent::PeerConn { conn, .. } => Some(conn.session_id),
        _ => None,
    });
    let hub_id = next_matching(&a_ev, "the hub's LNK_CONN", |e| match e {
        NodeEvent::PeerConn { conn, .. } => Some(conn.session_id),
        _ => None,
    });
    assert!(alpha_id != 0 && hub_id != 0);
    // Alpha's connection dies and it cannot come back: the hub holds the suspended session.
    proxy.cut();
    next_matching(&hub_ev, "the hub to suspend alpha's link", |e| {
        matches!(e, NodeEvent::LinkSuspended { .. }).then_some(())
    });
    a.shutdown();

    // Mallory completes a handshake with its own (admitted) key and asks to resume.
    let now = dmsg_core::time::Instant::ZERO;
    let mut rng = rand_core::OsRng.unwrap_err();
    let hub_pub = Keypair::from_secret([1; 32]).public();
    let mut ch =
        SecureChannel::initiator(SecureConfig::default(), mallory, hub_pub, now, &mut rng).unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = [0u8; 4096];
    let n = ch.poll_transmit(&mut out).unwrap();
    s.write_all(&out[..n]).unwrap();
    let mut msg2 = [0u8; dmsg_core::secure::HANDSHAKE2_WIRE];
    s.read_exact(&mut msg2).unwrap();
    ch.handle_input(now, &msg2).unwrap();
    assert!(matches!(
        ch.poll_event(),
        Some(SecureEvent::Established { .. })
    ));
    let resume = ControlFrame {
        op: ControlOp::Resume,
        sender_id: alpha_id,
        receiver_id: hub_id,
        seq: None,
        ack: None,
    };
    let mut frame = [0u8; 64];
    resume.emit(&dmsg_std::crc::HwCrc32c, 0, &mut frame);
    ch.send(&frame).unwrap();
    let n = ch.poll_transmit(&mut out).unwrap();
    s.write_all(&out[..n]).unwrap();
    // The hub answers with a RESET (encrypted) and closes.
    let mut wire = Vec::new();
    let _ = s.read_to_end(&mut wire);
    let mut plain = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let used = ch.handle_input(now, &wire[at..]).unwrap();
        at += used;
        plain.extend_from_slice(ch.plaintext());
        let k = ch.plaintext().len();
        ch.consume(k);
        if used == 0 {
            break;
        }
    }
    assert_eq!(plain.len(), 64, "one RESET frame: {plain:?}");
    let st = hub.status().unwrap();
    assert_eq!(st.secure.resume_refused, 1, "{:?}", st.secure);
    assert_eq!(st.resumes, 0);
    while let Ok(e) = hub_ev.recv_timeout(Duration::from_millis(20)) {
        assert!(
            !matches!(
                e,
                NodeEvent::LinkResumed { .. } | NodeEvent::LinkDown { .. }
            ),
            "{e:?}"
        );
    }
    hub.shutdown();
}
