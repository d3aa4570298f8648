//! Dropping every handle of a link (and a reconnecting supervisor) joins all their threads.
//! One test in its own binary, so the process's thread count is not disturbed by others.

mod support;

use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dmsg_std::connector::{Backoff, Connector, Reconnecting, SupervisorEvent};
use dmsg_std::link::{self, runtime_threads, LinkEvent, LinkOptions, TransportEnd};
use dmsg_std::net::Addr;

use support::{accept_within, listener, DEADLINE};

/// Threads of this process, from the kernel.
fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path().join("comm")).unwrap_or_default())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Waits (bounded) until `f()` is true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(
            Instant::now() < end,
            "{what}: threads now {:?}",
            thread_names()
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn dropping_all_handles_joins_every_thread() {
    const LINKS: usize = 3;
    let (l, addr) = listener();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let held: Vec<TcpStream> = (0..LINKS).map(|_| accept_within(&l, DEADLINE)).collect();
        let _ = done_rx.recv_timeout(DEADLINE);
        drop(held);
    });
    let base = os_threads();
    assert_eq!(runtime_threads(), 0);

    let mut links = Vec::new();
    for _ in 0..LINKS {
        let s = TcpStream::connect(addr).unwrap();
        links.push(link::spawn(s, LinkOptions::default()).unwrap());
    }
    assert_eq!(
        runtime_threads(),
        2 * LINKS,
        "a driver and a reader per link"
    );
    assert_eq!(os_threads(), base + 2 * LINKS);

    // Clones used and dropped on other threads keep the links alive.
    for (h, _) in &links {
        let h2 = h.clone();
        thread::spawn(move || {
            h2.status().unwrap();
        })
        .join()
        .unwrap();
    }
    assert_eq!(runtime_threads(), 2 * LINKS);

    // Dropping the last handle shuts the link down and joins its threads before returning.
    let (handles, events): (Vec<_>, Vec<_>) = links.into_iter().unzip();
    drop(handles);
    assert_eq!(runtime_threads(), 0);
    eventually("OS threads back to the baseline", || os_threads() == base);

    // The events that were kept end with the local shutdown, then the stream ends.
    for ev in events {
        let all: Vec<LinkEvent> = ev.collect();
        assert_eq!(all.first(), Some(&LinkEvent::Connected));
        match all.last() {
            Some(LinkEvent::LinkClosed { transport, .. }) => {
                assert_eq!(transport, &Some(TransportEnd::Shutdown))
            }
            e => panic!("{e:?}"),
        }
    }
    done_tx.send(()).unwrap();
    server.join().unwrap();
    let base = os_threads();

    // A reconnecting supervisor that is retrying stops and joins when dropped.
    let (l2, a2) = listener();
    drop(l2);
    let rc = Reconnecting::start(
        Connector::new(Addr::from(a2)).with_backoff(Backoff {
            initial: Duration::from_secs(5),
            ..Backoff::default()
        }),
        LinkOptions::default(),
    )
    .unwrap();
    match rc.recv_timeout(DEADLINE) {
        Ok(SupervisorEvent::Retrying(r)) => assert!(r.reason.contains("refused")),
        e => panic!("{e:?}"),
    }
    assert_eq!(runtime_threads(), 1);
    let t0 = Instant::now();
    drop(rc);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the backoff sleep is interrupted"
    );
    assert_eq!(runtime_threads(), 0);
    eventually("OS threads back to the baseline", || os_threads() == base);
}
