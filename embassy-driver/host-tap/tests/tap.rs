//! The dmsg-embassy leaf for real: embassy-net on a TAP device in a network namespace of
//! its own, against a hub on the Linux side of the TAP, with link flaps.
//!
//! The test creates `dmsg-tap-<pid>-leaf` (`ip netns add`) with a TAP device `dmsgtap0`
//! at 10.77.0.1/24 for the Linux side, runs the `dmsg-tap-leaf` binary inside it
//! (`ip netns exec`; the embassy stack is 10.77.0.2, static) and a hub (a core `Node` over
//! std TCP, `support/hub.rs`) in threads that entered the namespace, so every address stays
//! inside it. It checks, printing each check:
//!
//! 1. the leaf connects and advertises its span, and the span appears on the hub (the
//!    hub's span table, its reachability, and the hub's own shell `tree` as the leaf asks);
//! 2. transactions round-trip both ways: echo and READ from the hub to the leaf (routed
//!    over the leaf's span), NOSUPP for an unknown command, an echo the leaf opens;
//! 3. a short link flap (`ip link set dmsgtap0 down`, 1 s, `up`) while transactions stream:
//!    the link survives (TCP retransmits under the DMSG keepalive) and every transaction
//!    completes with its data: nothing lost;
//! 4. a long flap (longer than the keepalive's idle timeout): both ends declare the link
//!    dead, every transaction in flight ends exactly once with LOSTLINK (none hangs, none
//!    vanishes), the leaf reconnects with backoff and re-advertises, the span is back on
//!    the hub and new transactions succeed. (Resuming across it needs the reliable
//!    session on both sides; the core `Node` has none yet, hence check 5.)
//! 5. the same long flap with the leaf on the reliable session (`--session`,
//!    `ReliableMcuConnection`) against a session-capable peer (`support/session_peer.rs`,
//!    a core `ReliableConnection` that routes new streams with `classify_stream`): both
//!    ends suspend, the leaf resumes on its next connection, the transactions the peer
//!    opened while the TAP was down all complete with their data, the span never closes:
//!    nothing lost.
//!
//! Needs root (network namespaces, TAP devices) and `ip` from iproute2. Without them the
//! test says so LOUDLY and passes, unless `DMSG_TAP_REQUIRED=1` (CI sets it), where that
//! is a failure. The namespace is deleted on every way out (a drop guard), and stale ones
//! of killed runs are swept at the start.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use dmsg_core::errcode::txn as errcode;
use dmsg_core::node::NodeAddr;
use dmsg_core::time::Duration;
use dmsg_core::wire::{Command, Uuid};
use dmsg_embassy_tap::netns::Netns;
use dmsg_embassy_tap::READ;

use support::hub::{Hub, HubTimers, TxnResult};
use support::session_peer::SessionPeer;

const TAP: &str = "dmsgtap0";
const HUB_CIDR: &str = "10.77.0.1/24";
const HUB_ADDR: &str = "10.77.0.1:987";
/// The session-capable peer (check 5).
const SESSION_ADDR: &str = "10.77.0.1:988";
const LEAF_CIDR: &str = "10.77.0.2/24";
const CLUSTER: Uuid = Uuid([0x5a; 16]);
const LEAF_NODE: Uuid = Uuid([0x01; 16]);
const LEAF_PFS_LABEL: &str = "tap-sensor";
/// Keepalive of both ends: a LNK_PING every 500 ms, dead after 6 s of silence.
const PING_MS: u64 = 500;
const IDLE_MS: u64 = 6_000;
/// Shorter than the idle timeout, with room for TCP's retransmission backoff (smoltcp's
/// minimum RTO is 1 s) on a loaded machine.
const SHORT_FLAP: StdDuration = StdDuration::from_millis(1_000);
/// Longer than the idle timeout.
const LONG_FLAP: StdDuration = StdDuration::from_millis(IDLE_MS + 2_500);

/// Prints straight to stderr (not captured by the test harness), so CI logs show the
/// checks even when the test passes.
fn say(msg: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[tap] {}", msg.as_ref());
}

fn loud_skip(why: &str) {
    let required = std::env::var("DMSG_TAP_REQUIRED").is_ok_and(|v| v == "1");
    let bar = "!".repeat(78);
    say(&bar);
    say(format!("!!! TAP TEST NOT RUN: {why}"));
    say("!!! it needs root (network namespaces, TAP devices) and `ip` (iproute2)");
    say(&bar);
    assert!(
        !required,
        "DMSG_TAP_REQUIRED=1 but the TAP test cannot run: {why}"
    );
}

fn leaf_addr() -> NodeAddr {
    NodeAddr {
        peer_id: CLUSTER,
        pfs_id: LEAF_NODE,
    }
}

/// The leaf process and its output.
struct Leaf {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<(StdInstant, String)>,
    /// Every line seen so far.
    seen: Vec<String>,
}

impl Leaf {
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("leaf stdin");
        self.stdin.flush().expect("leaf stdin");
    }

    /// Waits for a line `pred` accepts (lines seen since the last wait are searched too,
    /// from `from` on); returns its index in `seen`.
    fn wait_for(
        &mut self,
        from: usize,
        what: &str,
        timeout: StdDuration,
        pred: impl Fn(&str) -> bool,
    ) -> usize {
        let deadline = StdInstant::now() + timeout;
        let mut i = from;
        loop {
            while i < self.seen.len() {
                if pred(&self.seen[i]) {
                    return i;
                }
                i += 1;
            }
            let left = deadline.saturating_duration_since(StdInstant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) => self.seen.push(line),
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for the leaf to print {what}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Takes what the leaf printed so far without waiting.
    fn drain(&mut self) {
        while let Ok((_, line)) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    fn count(&self, from: usize, pred: impl Fn(&str) -> bool) -> usize {
        self.seen[from..].iter().filter(|l| pred(l)).count()
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_leaf(ns: &Netns, hub: &str, extra: &[&str]) -> Leaf {
    let exe = env!("CARGO_BIN_EXE_dmsg-tap-leaf");
    let mut child = ns
        .command(exe)
        .args(["--tap", TAP, "--address", LEAF_CIDR, "--hub", hub])
        .args(extra)
        .args(["--label", "tap-leaf", "--pfs-label", LEAF_PFS_LABEL])
        .args(["--cluster", &hex(&CLUSTER.0), "--node", &hex(&LEAF_NODE.0)])
        .args(["--ping-ms", &PING_MS.to_string()])
        .args(["--idle-ms", &IDLE_MS.to_string()])
        .args(["--connect-ms", "1000", "--backoff-ms", "200,1000"])
        .env(
            "DMSG_LOG",
            std::env::var("DMSG_TAP_LEAF_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the leaf");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    let start = StdInstant::now();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            say(format!(
                "  leaf {:>6.2}s | {line}",
                start.elapsed().as_secs_f64()
            ));
            if tx.send((StdInstant::now(), line)).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            say(format!(
                "  leaf {:>6.2}s ! {line}",
                start.elapsed().as_secs_f64()
            ));
        }
    });
    Leaf {
        child,
        stdin,
        lines,
        seen: Vec::new(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Waits until `f` holds, polling; panics with `what` after `timeout`.
fn eventually(what: &str, timeout: StdDuration, mut f: impl FnMut() -> bool) {
    let deadline = StdInstant::now() + timeout;
    while !f() {
        assert!(
            StdInstant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(StdDuration::from_millis(50));
    }
}

fn wait_result(rx: &Receiver<Result<TxnResult, String>>, timeout: StdDuration) -> TxnResult {
    match rx.recv_timeout(timeout) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("the hub could not open the transaction: {e}"),
        Err(_) => panic!("a transaction did not finish within {timeout:?}"),
    }
}

/// Binds the hub's listener from a thread that entered the namespace (sockets keep the
/// namespace they were made in, whichever thread uses them later).
fn listen_in(ns: &Netns, addr: &'static str) -> std::io::Result<TcpListener> {
    let path = ns.path();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path)?;
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        TcpListener::bind(addr)
    })
    .join()
    .map_err(|_| std::io::Error::other("the listener thread panicked"))?
}

#[test]
fn leaf_on_tap_against_hub_survives_link_flaps() {
    let t0 = StdInstant::now();
    if !is_root() {
        loud_skip("not running as root");
        return;
    }
    let ns = match Netns::create("leaf") {
        Ok(ns) => ns,
        Err(e) => {
            loud_skip(&format!("cannot create a network namespace: {e}"));
            return;
        }
    };
    if let Err(e) = ns.add_tap(TAP, HUB_CIDR) {
        loud_skip(&format!("cannot create a TAP device: {e}"));
        return;
    }
    say(format!(
        "namespace {} with TAP {TAP} {HUB_CIDR}; leaf (embassy-net) at {LEAF_CIDR}; hub at {HUB_ADDR}",
        ns.name()
    ));

    let listener = listen_in(&ns, HUB_ADDR).expect("hub listener in the namespace");
    let hub = Hub::start(
        listener,
        CLUSTER,
        HubTimers {
            ping: Duration::from_millis(PING_MS),
            idle: Duration::from_millis(IDLE_MS),
        },
    );
    let mut leaf = spawn_leaf(&ns, HUB_ADDR, &[]);

    // 1. Connect, advertise, the span on the hub.
    say("check 1: the leaf connects over the TAP and advertises its span");
    let i = leaf.wait_for(0, "up", StdDuration::from_secs(15), |l| l == "up");
    let i = leaf.wait_for(i, "peer-conn", StdDuration::from_secs(5), |l| {
        l == "peer-conn"
    });
    leaf.wait_for(i, "span-advertised", StdDuration::from_secs(5), |l| {
        l == "span-advertised"
    });
    say("check 1: the leaf's span appears on the hub");
    eventually(
        "the hub holds the leaf's span",
        StdDuration::from_secs(5),
        || {
            let s = hub.status();
            s.reachable.contains(&leaf_addr()) && s.span_labels.iter().any(|l| l == LEAF_PFS_LABEL)
        },
    );
    let mark = leaf.seen.len();
    leaf.send("shell tree");
    leaf.wait_for(
        mark,
        "the hub's tree naming the leaf's span",
        StdDuration::from_secs(5),
        |l| l.starts_with("shell-reply") && l.contains(LEAF_PFS_LABEL),
    );
    say("  ok: reachable on the hub, in its span table and in its shell's `tree`");

    // 2. Round trips.
    say("check 2: transactions round-trip (hub -> leaf over the leaf's span, and leaf -> hub)");
    let echoes: Vec<_> = (0..20)
        .map(|k| {
            let aux = format!("echo-{k}");
            (
                aux.clone(),
                hub.open(leaf_addr(), Command::DbgShell, aux.as_bytes()),
            )
        })
        .collect();
    for (aux, rx) in &echoes {
        let r = wait_result(rx, StdDuration::from_secs(10));
        assert_eq!(r.error, 0, "echo {aux}: {r:?}");
        assert_eq!(r.replies, vec![aux.as_bytes().to_vec()], "echo {aux}");
    }
    for _ in 0..3 {
        let r = wait_result(
            &hub.open(leaf_addr(), READ, b""),
            StdDuration::from_secs(10),
        );
        assert_eq!(r.error, 0, "READ: {r:?}");
        let value = String::from_utf8(r.replies.concat()).expect("ASCII reading");
        let millideg: i64 = value.parse().expect("a number");
        assert!((20_000..22_000).contains(&millideg), "reading {value}");
    }
    let unknown = Command::from_parts(3, 0x7ff);
    let r = wait_result(
        &hub.open(leaf_addr(), unknown, b"?"),
        StdDuration::from_secs(10),
    );
    assert_eq!(r.error, errcode::NOSUPP, "unknown command: {r:?}");
    let mark = leaf.seen.len();
    leaf.send("open 1 hello-hub");
    let i = leaf.wait_for(mark, "reply 1", StdDuration::from_secs(5), |l| {
        l.starts_with("reply 1 ")
    });
    assert_eq!(leaf.seen[i], "reply 1 hello-hub");
    leaf.wait_for(mark, "closed 1", StdDuration::from_secs(5), |l| {
        l.starts_with("closed 1 ")
    });
    assert!(leaf.seen[mark..].contains(&"closed 1 error=0".to_string()));
    assert_eq!(
        hub.status().answered,
        1,
        "the hub answered the leaf's transaction"
    );
    say("  ok: 20 echoes, 3 READs, 1 NOSUPP from the hub; 1 echo opened by the leaf");

    // 3. Short flap while transactions stream.
    say(format!(
        "check 3: short flap ({} ms down, idle timeout {IDLE_MS} ms) while transactions stream: nothing lost",
        SHORT_FLAP.as_millis()
    ));
    leaf.drain();
    let mark = leaf.seen.len();
    let links_before = hub.status();
    let mut pending = Vec::new();
    let stream_for = |pending: &mut Vec<_>, n: usize, tag: &str| {
        for k in 0..n {
            let aux = format!("{tag}-{k}");
            pending.push((
                aux.clone(),
                hub.open(leaf_addr(), Command::DbgShell, aux.as_bytes()),
            ));
            std::thread::sleep(StdDuration::from_millis(50));
        }
    };
    stream_for(&mut pending, 5, "before");
    ns.set_link(TAP, false).expect("ip link set down");
    say("  tap down");
    stream_for(
        &mut pending,
        (SHORT_FLAP.as_millis() / 50) as usize,
        "during",
    );
    ns.set_link(TAP, true).expect("ip link set up");
    say("  tap up");
    stream_for(&mut pending, 10, "after");
    for (aux, rx) in &pending {
        let r = wait_result(rx, StdDuration::from_secs(15));
        assert_eq!(r.error, 0, "{aux} across the short flap: {r:?}");
        assert_eq!(r.replies, vec![aux.as_bytes().to_vec()], "{aux}");
    }
    leaf.drain();
    assert_eq!(
        leaf.count(mark, |l| l.starts_with("down")),
        0,
        "the leaf's link went down during the short flap"
    );
    let after = hub.status();
    assert_eq!(
        after.links_down.len(),
        links_before.links_down.len(),
        "the hub's link went down during the short flap: {:?}",
        after.links_down
    );
    say(format!(
        "  ok: {} transactions opened before, during and after the flap all completed with their data; no reconnect",
        pending.len()
    ));

    // 4. Long flap.
    say(format!(
        "check 4: long flap ({} ms down > idle timeout {IDLE_MS} ms): link dies, leaf reconnects and re-advertises",
        LONG_FLAP.as_millis()
    ));
    leaf.drain();
    let mark = leaf.seen.len();
    let ups_before = hub.status().links_up;
    ns.set_link(TAP, false).expect("ip link set down");
    say("  tap down");
    let in_flight: Vec<_> = (0..5)
        .map(|k| {
            let aux = format!("lost-{k}");
            (
                aux.clone(),
                hub.open(leaf_addr(), Command::DbgShell, aux.as_bytes()),
            )
        })
        .collect();
    std::thread::sleep(LONG_FLAP);
    // Both ends gave up on the link while it was down.
    for (aux, rx) in &in_flight {
        let r = wait_result(rx, StdDuration::from_secs(1));
        assert_eq!(r.error, errcode::LOSTLINK, "{aux}: {r:?}");
        assert!(r.replies.is_empty(), "{aux}: {r:?}");
        assert!(rx.try_recv().is_err(), "{aux} reported twice");
    }
    leaf.drain();
    assert!(
        leaf.count(mark, |l| l.starts_with("down link-closed")) >= 1,
        "the leaf did not notice the dead link"
    );
    ns.set_link(TAP, true).expect("ip link set up");
    say("  tap up");
    let i = leaf.wait_for(mark, "up again", StdDuration::from_secs(10), |l| l == "up");
    leaf.wait_for(i, "span-advertised again", StdDuration::from_secs(5), |l| {
        l == "span-advertised"
    });
    eventually(
        "the hub holds the leaf's span again",
        StdDuration::from_secs(5),
        || {
            let s = hub.status();
            s.links_up > ups_before && s.reachable.contains(&leaf_addr())
        },
    );
    eventually(
        "the hub dropped the dead link and kept the new one",
        StdDuration::from_secs(5),
        || hub.status().links == 1,
    );
    for k in 0..10 {
        let aux = format!("again-{k}");
        let r = wait_result(
            &hub.open(leaf_addr(), Command::DbgShell, aux.as_bytes()),
            StdDuration::from_secs(10),
        );
        assert_eq!(r.error, 0, "{aux}: {r:?}");
        assert_eq!(r.replies, vec![aux.into_bytes()]);
    }
    let s = hub.status();
    say(format!(
        "  ok: 5 in-flight transactions ended once with LOSTLINK (no session resume: the hub's Node has none), \
         leaf reconnected (hub links up {} -> {}), span back, 10 new echoes completed",
        ups_before, s.links_up
    ));
    leaf.send("stats");
    let i = leaf.wait_for(0, "stats", StdDuration::from_secs(5), |l| {
        l.starts_with("stats ")
    });
    say(format!("  leaf TAP counters: {}", &leaf.seen[i]));

    drop(leaf);
    drop(hub);

    // 5. The reliable session: the long flap again, resumed with nothing lost.
    say(format!(
        "check 5: reliable session (leaf --session, ReliableMcuConnection) against a session-capable peer at {SESSION_ADDR}: \
         long flap ({} ms) resumed with nothing lost",
        LONG_FLAP.as_millis()
    ));
    let listener = listen_in(&ns, SESSION_ADDR).expect("peer listener in the namespace");
    let peer = SessionPeer::start(
        listener,
        CLUSTER,
        Duration::from_millis(PING_MS),
        Duration::from_millis(IDLE_MS),
    );
    let mut leaf = spawn_leaf(&ns, SESSION_ADDR, &["--session"]);
    let i = leaf.wait_for(0, "up", StdDuration::from_secs(15), |l| l == "up");
    leaf.wait_for(i, "span-advertised", StdDuration::from_secs(5), |l| {
        l == "span-advertised"
    });
    eventually(
        "the session runs and the peer holds the leaf's span",
        StdDuration::from_secs(5),
        || {
            let s = peer.status();
            s.session_running && s.span_opens == 1
        },
    );
    for k in 0..5 {
        let aux = format!("session-{k}");
        let r = wait_result(
            &peer.open(Command::DbgShell, aux.as_bytes()),
            StdDuration::from_secs(10),
        );
        assert_eq!((r.error, r.replies), (0, vec![aux.into_bytes()]));
    }
    leaf.drain();
    let mark = leaf.seen.len();
    ns.set_link(TAP, false).expect("ip link set down");
    say("  tap down");
    let held: Vec<_> = (0..5)
        .map(|k| {
            let aux = format!("held-{k}");
            (aux.clone(), peer.open(Command::DbgShell, aux.as_bytes()))
        })
        .collect();
    std::thread::sleep(LONG_FLAP);
    leaf.drain();
    assert!(
        leaf.count(mark, |l| l.starts_with("suspended")) >= 1,
        "the leaf's session did not suspend during the long flap"
    );
    ns.set_link(TAP, true).expect("ip link set up");
    say("  tap up");
    leaf.wait_for(mark, "resumed", StdDuration::from_secs(10), |l| {
        l.starts_with("resumed")
    });
    for (aux, rx) in &held {
        let r = match rx.recv_timeout(StdDuration::from_secs(10)) {
            Ok(Ok(r)) => r,
            other => panic!(
                "{aux} did not finish after the resume ({other:?}); peer: {:?}",
                peer.status()
            ),
        };
        assert_eq!(r.error, 0, "{aux} across the resumed flap: {r:?}");
        assert_eq!(r.replies, vec![aux.as_bytes().to_vec()], "{aux}");
    }
    leaf.drain();
    let s = peer.status();
    // (`down connect-timeout` lines are the reconnect attempts while the TAP was down.)
    assert_eq!(
        leaf.count(mark, |l| l.starts_with("down link-closed")),
        0,
        "the leaf's link closed instead of suspending"
    );
    assert_eq!(
        leaf.count(mark, |l| l == "span-advertised"),
        0,
        "re-advertised"
    );
    assert_eq!((s.fresh_links, s.resumed_streams), (1, 1), "{s:?}");
    assert!(s.suspensions >= 1 && s.resumes >= 1, "{s:?}");
    assert_eq!(s.span_closes, 0, "the span closed on the peer: {s:?}");
    assert!(s.link_closed.is_empty(), "{s:?}");
    say(format!(
        "  ok: suspended on both ends, one stream resumed by RESUME, the 5 transactions sent while down \
         completed with their data, the span never closed ({} suspension(s), {} resume(s) on the peer)",
        s.suspensions, s.resumes
    ));
    drop(leaf);
    drop(peer);
    drop(ns);
    say(format!(
        "TAP test passed in {:.1} s: span on hub, round trips, short flap lossless, long flap reconnect, \
         session resume lossless",
        t0.elapsed().as_secs_f64()
    ));
}

/// True when running as root (uid 0), read from /proc (no unsafe `getuid`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
