//! The dmsg-embassy leaf for real: embassy-net on a TAP device in a network namespace of
//! its own, against the `dmsg hub` binary on the Linux side of the TAP, with link flaps.
//!
//! The test creates `dmsg-tap-<pid>-leaf` (`ip netns add`) with a TAP device `dmsgtap0` at
//! 10.77.0.1/24 for the Linux side and runs, all inside it (`ip netns exec`): `dmsg hub
//! --listen 10.77.0.1:987`, the `dmsg-tap-leaf` binary (the embassy stack at 10.77.0.2,
//! static) and, in threads that entered the namespace, a `dmsg-std` node runtime as the
//! hub's client (`support/client.rs`), which opens transactions to the leaf routed through
//! the hub. Every address stays inside the namespace. It checks, printing each check:
//!
//! 1. the leaf connects and advertises its span, and the span appears on the hub (`dmsg
//!    tree`, the hub's shell `tree` as the leaf asks, and the client learning the leaf
//!    through the hub's relay);
//! 2. transactions round-trip: echo and READ from the client to the leaf through the hub,
//!    NOSUPP for an unknown command;
//! 3. a short link flap (`ip link set dmsgtap0 down`, 1 s, `up`) while transactions stream:
//!    the link survives (TCP retransmits under the DMSG keepalive) and every transaction
//!    completes with its data: nothing lost;
//! 4. a long flap (longer than the leaf's 6 s keepalive) with a plain-DMSG leaf: the leaf
//!    declares the link dead, reconnects with backoff and re-advertises; the transactions
//!    in flight end exactly once with LOSTLINK (none hangs, none vanishes); new ones
//!    succeed;
//! 5. the same long flap with a second leaf on the reliable session (`--session`,
//!    `ReliableMcuConnection`; `dmsg hub` offers the session): the leaf suspends, resumes
//!    on its next connection, the transactions the client opened while the TAP was down
//!    all complete with their data, and the leaf is never unreachable: nothing lost.
//!
//! A second test (`dmsg-tap-<pid>-sec`) runs the link encrypted: `dmsg hub --keys DIR` with
//! key pairs from `dmsg keygen`; a leaf whose key the hub does not hold is refused
//! (`secure-failed`, never a LNK_CONN); the admitted leaf (`--key`, `--hub-key`: dmsg-embassy's
//! `secure` feature, Noise IK) comes up through the secure channel, its span shows in the
//! hub's shell, and the hub's client's echoes and a READ round-trip to it.
//!
//! Needs root (network namespaces, TAP devices), `ip` from iproute2, and the `dmsg` binary
//! of `dmsg-std` next to this test's executable (`cargo test --workspace` builds it; alone:
//! `cargo build -p dmsg-std`). Without root or namespaces the test says so LOUDLY and
//! passes, unless `DMSG_TAP_REQUIRED=1` (CI sets it), where that is a failure. The
//! namespace is deleted on every way out (a drop guard), and stale ones of killed runs are
//! swept at the start.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use dmsg_core::errcode::txn as errcode;
use dmsg_core::node::NodeAddr;
use dmsg_core::wire::{Command, Uuid};
use dmsg_embassy_tap::netns::Netns;
use dmsg_embassy_tap::READ;
use dmsg_std::node::uuid_of;

use support::client::{Client, TxnResult};

const TAP: &str = "dmsgtap0";
const HUB_CIDR: &str = "10.77.0.1/24";
const HUB_ADDR: &str = "10.77.0.1:987";
const LEAF_CIDR: &str = "10.77.0.2/24";
const CLUSTER: &str = "tap-cluster";
/// The plain leaf's node label (checks 1 to 4) and the session leaf's (check 5).
const PLAIN_LEAF: &str = "tap-sensor";
const SESSION_LEAF: &str = "tap-sensor-s";
/// The leaf's keepalive: a LNK_PING every 500 ms, dead after 6 s of silence (the hub keeps
/// its defaults, 1 s and 10 s).
const PING_MS: u64 = 500;
const IDLE_MS: u64 = 6_000;
/// Shorter than the idle timeout, with room for TCP's retransmission backoff (smoltcp's
/// minimum RTO is 1 s) on a loaded machine.
const SHORT_FLAP: StdDuration = StdDuration::from_millis(1_000);
/// Longer than the leaf's idle timeout.
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

fn cluster() -> Uuid {
    uuid_of(CLUSTER)
}

fn node_of(label: &str) -> NodeAddr {
    NodeAddr {
        peer_id: cluster(),
        pfs_id: uuid_of(label),
    }
}

/// The `dmsg` binary of dmsg-std, next to this test's executable (`target/<profile>/`).
fn dmsg_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("dmsg");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p dmsg-std`; `cargo test --workspace` does)",
        bin.display()
    );
    bin
}

/// A process inside the namespace whose output is echoed with a prefix; killed on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dmsg hub` in the namespace and waits for its "listening" line.
fn start_hub(ns: &Netns, extra: &[&str]) -> Proc {
    let mut child = ns
        .command(dmsg_bin().to_str().expect("utf-8 path"))
        .args(["hub", "--listen", HUB_ADDR, "--label", "tap-hub"])
        .args(extra)
        .args(["--cluster", CLUSTER, "--stats", "0", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dmsg hub");
    let start = StdInstant::now();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            say(format!(
                "  hub  {:>6.2}s | {line}",
                start.elapsed().as_secs_f64()
            ));
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            say(format!(
                "  hub  {:>6.2}s ! {line}",
                start.elapsed().as_secs_f64()
            ));
        }
    });
    let deadline = StdInstant::now() + StdDuration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(StdInstant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => break,
            Ok(_) => {}
            Err(_) => panic!("dmsg hub did not start listening on {HUB_ADDR}"),
        }
    }
    Proc { child }
}

/// `dmsg tree HUB_ADDR` in the namespace.
fn dmsg_tree(ns: &Netns) -> String {
    let out = ns
        .command(dmsg_bin().to_str().expect("utf-8 path"))
        .args(["tree", HUB_ADDR])
        .output()
        .expect("run dmsg tree");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_result(rx: &Receiver<Result<TxnResult, String>>, timeout: StdDuration) -> TxnResult {
    match rx.recv_timeout(timeout) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("the client could not open the transaction: {e}"),
        Err(_) => panic!("a transaction did not finish within {timeout:?}"),
    }
}

/// Opens `n` echo transactions to `to` tagged `tag-k`, `gap` apart.
fn echoes(
    client: &Client,
    to: NodeAddr,
    tag: &str,
    n: usize,
    gap: StdDuration,
) -> Vec<(String, Receiver<Result<TxnResult, String>>)> {
    (0..n)
        .map(|k| {
            let aux = format!("{tag}-{k}");
            let rx = client.open(to, Command::DbgShell, aux.as_bytes());
            std::thread::sleep(gap);
            (aux, rx)
        })
        .collect()
}

fn expect_echoed(pending: &[(String, Receiver<Result<TxnResult, String>>)], timeout: StdDuration) {
    for (aux, rx) in pending {
        let r = wait_result(rx, timeout);
        assert_eq!(r.error, 0, "echo {aux}: {r:?}");
        assert_eq!(r.replies, vec![aux.as_bytes().to_vec()], "echo {aux}");
    }
}

#[test]
fn leaf_on_tap_against_dmsg_hub_survives_link_flaps() {
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
        "namespace {} with TAP {TAP} {HUB_CIDR}; `dmsg hub` at {HUB_ADDR}; leaf (embassy-net) at {LEAF_CIDR}",
        ns.name()
    ));
    let hub = start_hub(&ns, &[]);
    let client = Client::start(ns.path(), HUB_ADDR, cluster()).expect("the hub's client");
    let plain = node_of(PLAIN_LEAF);
    let mut leaf = spawn_leaf(&ns, PLAIN_LEAF, &[]);

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
    let tree = dmsg_tree(&ns);
    for line in tree.lines() {
        say(format!("  dmsg tree | {line}"));
    }
    assert!(
        tree.contains(PLAIN_LEAF),
        "`dmsg tree` lacks the leaf:\n{tree}"
    );
    let mark = leaf.seen.len();
    leaf.send("shell tree");
    leaf.wait_for(
        mark,
        "the hub's tree naming the leaf's span",
        StdDuration::from_secs(5),
        |l| l.starts_with("shell-reply") && l.contains(PLAIN_LEAF),
    );
    eventually(
        "the client learns the leaf through the hub",
        StdDuration::from_secs(10),
        || client.reachable(&plain),
    );
    say("  ok: in `dmsg tree`, in the hub's shell `tree`, relayed to the hub's client");

    // 2. Round trips.
    say("check 2: transactions round-trip, client -> hub -> leaf over the leaf's span");
    expect_echoed(
        &echoes(&client, plain, "echo", 20, StdDuration::ZERO),
        StdDuration::from_secs(10),
    );
    for _ in 0..3 {
        let r = wait_result(&client.open(plain, READ, b""), StdDuration::from_secs(10));
        assert_eq!(r.error, 0, "READ: {r:?}");
        let value = String::from_utf8(r.replies.concat()).expect("ASCII reading");
        let millideg: i64 = value.parse().expect("a number");
        assert!((20_000..22_000).contains(&millideg), "reading {value}");
    }
    let unknown = Command::from_parts(3, 0x7ff);
    let r = wait_result(
        &client.open(plain, unknown, b"?"),
        StdDuration::from_secs(10),
    );
    assert_eq!(r.error, errcode::NOSUPP, "unknown command: {r:?}");
    say("  ok: 20 echoes, 3 READs, 1 NOSUPP");

    // 3. Short flap while transactions stream.
    say(format!(
        "check 3: short flap ({} ms down, leaf idle timeout {IDLE_MS} ms) while transactions stream: nothing lost",
        SHORT_FLAP.as_millis()
    ));
    leaf.drain();
    let mark = leaf.seen.len();
    let gap = StdDuration::from_millis(50);
    let mut pending = echoes(&client, plain, "before", 5, gap);
    ns.set_link(TAP, false).expect("ip link set down");
    say("  tap down");
    pending.extend(echoes(
        &client,
        plain,
        "during",
        (SHORT_FLAP.as_millis() / 50) as usize,
        gap,
    ));
    ns.set_link(TAP, true).expect("ip link set up");
    say("  tap up");
    pending.extend(echoes(&client, plain, "after", 10, gap));
    expect_echoed(&pending, StdDuration::from_secs(15));
    leaf.drain();
    assert_eq!(
        leaf.count(mark, |l| l.starts_with("down")),
        0,
        "the leaf's link went down during the short flap"
    );
    assert_eq!(
        client.unreachable_count(&plain),
        0,
        "the leaf became unreachable"
    );
    say(format!(
        "  ok: {} transactions opened before, during and after the flap all completed with their data; no reconnect",
        pending.len()
    ));

    // 4. Long flap, plain DMSG.
    say(format!(
        "check 4: long flap ({} ms down > leaf idle timeout {IDLE_MS} ms), plain DMSG: the leaf reconnects and re-advertises, in-flight transactions end with LOSTLINK",
        LONG_FLAP.as_millis()
    ));
    leaf.drain();
    let mark = leaf.seen.len();
    ns.set_link(TAP, false).expect("ip link set down");
    say("  tap down");
    let in_flight = echoes(&client, plain, "lost", 5, StdDuration::ZERO);
    std::thread::sleep(LONG_FLAP);
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
    // The hub's old link dies when its pings meet the leaf's stack (no such connection:
    // RST) or at its own keepalive (10 s): its routed transactions end then.
    for (aux, rx) in &in_flight {
        let r = wait_result(rx, StdDuration::from_secs(15));
        assert_eq!(r.error, errcode::LOSTLINK, "{aux}: {r:?}");
        // (The hub ends a routed transaction whose route died with an empty LOSTLINK frame.)
        assert!(r.replies.iter().all(|a| a.is_empty()), "{aux}: {r:?}");
        assert!(rx.try_recv().is_err(), "{aux} reported twice");
    }
    eventually(
        "the client reaches the leaf again",
        StdDuration::from_secs(10),
        || client.reachable(&plain),
    );
    expect_echoed(
        &echoes(&client, plain, "again", 10, StdDuration::ZERO),
        StdDuration::from_secs(10),
    );
    say("  ok: 5 in-flight transactions ended once with LOSTLINK (a plain link cannot resume), leaf reconnected and re-advertised, 10 new echoes completed");
    leaf.send("stats");
    let i = leaf.wait_for(0, "stats", StdDuration::from_secs(5), |l| {
        l.starts_with("stats ")
    });
    say(format!("  leaf TAP counters: {}", &leaf.seen[i]));
    drop(leaf);

    // 5. The reliable session.
    say(format!(
        "check 5: a leaf on the reliable session (--session, ReliableMcuConnection; the hub offers it): long flap ({} ms) resumed with nothing lost",
        LONG_FLAP.as_millis()
    ));
    let session = node_of(SESSION_LEAF);
    let mut leaf = spawn_leaf(&ns, SESSION_LEAF, &["--session"]);
    let i = leaf.wait_for(0, "up", StdDuration::from_secs(15), |l| l == "up");
    leaf.wait_for(i, "span-advertised", StdDuration::from_secs(5), |l| {
        l == "span-advertised"
    });
    eventually(
        "the client learns the session leaf",
        StdDuration::from_secs(10),
        || client.reachable(&session),
    );
    expect_echoed(
        &echoes(&client, session, "session", 5, StdDuration::ZERO),
        StdDuration::from_secs(10),
    );
    leaf.drain();
    let mark = leaf.seen.len();
    ns.set_link(TAP, false).expect("ip link set down");
    say("  tap down");
    let held = echoes(&client, session, "held", 5, StdDuration::ZERO);
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
    expect_echoed(&held, StdDuration::from_secs(10));
    leaf.drain();
    // (`down connect-timeout` lines are the reconnect attempts while the TAP was down.)
    assert_eq!(
        leaf.count(mark, |l| l.starts_with("down link-closed")),
        0,
        "the leaf's link closed instead of suspending"
    );
    assert_eq!(
        leaf.count(mark, |l| l == "span-advertised"),
        0,
        "the leaf advertised again: its link was new, not resumed"
    );
    assert_eq!(
        client.unreachable_count(&session),
        0,
        "the session leaf became unreachable"
    );
    assert!(client.links_down().is_empty(), "{:?}", client.links_down());
    say("  ok: the leaf suspended and resumed, the 5 transactions opened while the TAP was down completed with their data, the leaf never became unreachable");

    drop(leaf);
    drop(client);
    drop(hub);
    drop(ns);
    say(format!(
        "TAP test passed in {:.1} s: span on dmsg hub, round trips, short flap lossless, long flap reconnect, session resume lossless",
        t0.elapsed().as_secs_f64()
    ));
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

/// `dmsg keygen --dir DIR --name NAME` (the key files the hub and the leaf read).
fn keygen(dir: &std::path::Path, name: &str) {
    let out = std::process::Command::new(dmsg_bin())
        .args([
            "keygen",
            "--dir",
            dir.to_str().expect("utf-8 path"),
            "--name",
            name,
        ])
        .output()
        .expect("run dmsg keygen");
    assert!(out.status.success(), "dmsg keygen: {out:?}");
}

#[test]
fn encrypted_leaf_on_tap_against_dmsg_hub_with_keys() {
    if !is_root() {
        loud_skip("not running as root");
        return;
    }
    let ns = match Netns::create("sec") {
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
    // The hub's keys directory holds its own key pair and the leaf's public key; the rogue
    // leaf's key pair lives elsewhere (the hub has never seen its key).
    let base = std::env::temp_dir().join(format!("dmsg-tap-keys-{}", std::process::id()));
    let (keys, rogue) = (base.join("hub"), base.join("rogue"));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&keys).expect("keys dir");
    std::fs::create_dir_all(&rogue).expect("rogue dir");
    keygen(&keys, "tap-hub");
    keygen(&keys, "tap-leaf");
    keygen(&rogue, "rogue");
    // The hub's own client in this test connects from the hub's address, in the clear.
    let hub_ip = HUB_ADDR.split(':').next().expect("address");
    std::fs::write(keys.join(format!("{hub_ip}.none")), b"").expect("write .none");
    let path = |d: &std::path::Path, f: &str| d.join(f).to_str().expect("utf-8").to_string();
    say(format!(
        "secure: `dmsg hub --keys {}`, an admitted leaf and a rogue one over the TAP",
        keys.display()
    ));
    let _hub = start_hub(&ns, &["--keys", keys.to_str().expect("utf-8 path")]);

    // A leaf whose key the hub does not hold: refused, never a LNK_CONN, a typed error.
    let (key, hub_key) = (path(&rogue, "rogue.key"), path(&keys, "tap-hub.pub"));
    let mut intruder = spawn_leaf(&ns, "tap-rogue", &["--key", &key, "--hub-key", &hub_key]);
    intruder.wait_for(0, "secure-failed", StdDuration::from_secs(20), |l| {
        l.starts_with("secure-failed")
    });
    assert_eq!(
        intruder.count(0, |l| l == "peer-conn" || l == "span-advertised"),
        0,
        "the rogue leaf got in: {:?}",
        intruder.seen
    );
    // One process per TAP device: the rogue goes before the admitted leaf comes.
    drop(intruder);
    say("  ok: the rogue leaf refused (secure-failed, no LNK_CONN)");

    // An admitted leaf: the link runs through the secure channel both ways.
    let (key, hub_key) = (path(&keys, "tap-leaf.key"), path(&keys, "tap-hub.pub"));
    let mut leaf = spawn_leaf(&ns, "tap-secure", &["--key", &key, "--hub-key", &hub_key]);
    let i = leaf.wait_for(0, "up", StdDuration::from_secs(15), |l| l == "up");
    let i = leaf.wait_for(i, "peer-conn", StdDuration::from_secs(10), |l| {
        l == "peer-conn"
    });
    leaf.wait_for(i, "span-advertised", StdDuration::from_secs(5), |l| {
        l == "span-advertised"
    });
    let mark = leaf.seen.len();
    leaf.send("shell tree");
    leaf.wait_for(
        mark,
        "the hub's tree naming the encrypted leaf's span",
        StdDuration::from_secs(5),
        |l| l.starts_with("shell-reply") && l.contains("tap-secure"),
    );
    // Transactions from the hub's client (plaintext: `<its address>.none`) to the leaf,
    // echoed by it over the encrypted link, and READs answered by its application.
    let client = Client::start(ns.path(), HUB_ADDR, cluster()).expect("the hub's client");
    let secure_leaf = node_of("tap-secure");
    eventually(
        "the client learns the encrypted leaf through the hub",
        StdDuration::from_secs(10),
        || client.reachable(&secure_leaf),
    );
    expect_echoed(
        &echoes(&client, secure_leaf, "sec", 20, StdDuration::ZERO),
        StdDuration::from_secs(10),
    );
    let r = wait_result(
        &client.open(secure_leaf, READ, b""),
        StdDuration::from_secs(10),
    );
    assert_eq!(r.error, 0, "READ: {r:?}");
    assert_eq!(
        leaf.count(0, |l| l.starts_with("secure-failed")
            || l.starts_with("down")),
        0,
        "the encrypted link stayed up: {:?}",
        leaf.seen
    );
    say("  ok: encrypted link up, span on the hub, its shell, 20 echoes and a READ from the hub's client");

    let _ = std::fs::remove_dir_all(&base);
}

fn spawn_leaf(ns: &Netns, label: &str, extra: &[&str]) -> Leaf {
    let exe = env!("CARGO_BIN_EXE_dmsg-tap-leaf");
    let mut child = ns
        .command(exe)
        .args(["--tap", TAP, "--address", LEAF_CIDR, "--hub", HUB_ADDR])
        .args(extra)
        .args(["--label", label, "--pfs-label", label])
        .args([
            "--cluster",
            &hex(&cluster().0),
            "--node",
            &hex(&uuid_of(label).0),
        ])
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
