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
