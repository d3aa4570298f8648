//! Dropping every handle of a node runtime joins its thread, with links up and a dial
//! pending. One test in its own binary, so the thread count is not disturbed by others.

use std::time::{Duration, Instant};

use dmsg_std::link::runtime_threads;
use dmsg_std::net::Addr;
use dmsg_std::node::drive::{HubNode, LeafNode};
use dmsg_std::node::{self, NodeEvent, NodeOptions};

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn dropping_every_handle_joins_the_io_thread() {
    let before = os_threads();
    assert_eq!(runtime_threads(), 0);
    let (hub, hub_ev) = node::spawn::<HubNode>(NodeOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..NodeOptions::default()
    })
    .unwrap();
    let port = hub.local_addr().unwrap().port();
    let (leaf, leaf_ev) = node::spawn::<LeafNode>(NodeOptions {
        listen: None,
        ..NodeOptions::default()
    })
    .unwrap();
    leaf.connect(Addr::new("127.0.0.1", port)).unwrap();
    // A dial to a closed port keeps retrying in the background.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    leaf.connect(Addr::new("127.0.0.1", dead)).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while !matches!(
        leaf_ev.recv_timeout(Duration::from_millis(50)),
        Ok(NodeEvent::PeerConn { .. })
    ) {
        assert!(Instant::now() < end, "the leaf never linked");
    }
    assert_eq!(runtime_threads(), 2);
    let clone = leaf.clone();
    drop(leaf);
    assert_eq!(runtime_threads(), 2, "a clone keeps the runtime");
    drop(clone);
    drop(hub);
    assert_eq!(runtime_threads(), 0);
    assert_eq!(os_threads(), before, "every runtime thread was joined");
    // The event streams end after Stopped.
    assert_eq!(leaf_ev.into_iter().last(), Some(NodeEvent::Stopped));
    assert_eq!(hub_ev.into_iter().last(), Some(NodeEvent::Stopped));
}
