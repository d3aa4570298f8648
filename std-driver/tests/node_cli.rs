//! `dmsg demo`, `dmsg hub` and `dmsg leaf` as processes: the demo runs to its summary, and
//! `dmsg tree` against a `dmsg hub` prints the hub's span tree with its leaves.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn dmsg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmsg"))
}

/// Kills the child when dropped (a failed assertion must not leave a process behind).
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_runs_to_its_summary() {
    let out = dmsg()
        .args(["demo", "--leaves", "3", "--requests", "5", "--stream", "40"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "reliable sessions on",
        "secure channel on",
        "4 handshakes at the hub",
        "40 of 40 echoes, in order, none twice",
        "1 sessions resumed",
        "[1/4] span tree",
        "(alpha)",
        "(bravo)",
        "(charlie)",
        "30 answered, 0 failed",
        "[4/4] summary",
        "1 redials",
    ] {
        assert!(text.contains(want), "missing '{want}' in:\n{text}");
    }
}

#[test]
fn demo_without_sessions_shows_the_stream_lost() {
    let out = dmsg()
        .args([
            "demo",
            "--leaves",
            "2",
            "--requests",
            "2",
            "--stream",
            "40",
            "--no-session",
            "--plaintext",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "reliable sessions off",
        "secure channel off (--plaintext)",
        "ended with LOSTLINK",
        "1 lost to the cut",
        "0 sessions resumed",
    ] {
        assert!(text.contains(want), "missing '{want}' in:\n{text}");
    }
}

#[test]
fn tree_against_a_hub_prints_its_leaves() {
    let mut hub = Kill(
        dmsg()
            .args(["hub", "--listen", "127.0.0.1:0", "--stats", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(hub.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in '{line}'"))
        .to_string();
    let _leaves: Vec<Kill> = ["north", "south"]
        .iter()
        .map(|l| {
            Kill(
                dmsg()
                    .args(["leaf", "--connect", &addr, "--label", l])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(8);
    loop {
        let out = dmsg().args(["tree", &addr]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success()
            && text.contains("(north)")
            && text.contains("(south)")
            && text.contains("(hub)")
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "tree never showed both leaves: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn usage_errors_say_what_to_do() {
    let out = dmsg().args(["leaf", "--label", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("dmsg leaf --connect HOST[:PORT] --label NAME"));
    // Port 1 on loopback: privileged or refused, either way a clear message.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = dmsg()
        .args(["hub", "--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("pick another port"),
        "{err}"
    );
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

/// Waits (bounded) for a child to exit; its status.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < end,
            "the process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_hub_and_leaf_closing_their_links_cleanly() {
    let mut hub = Kill(
        dmsg()
            .args(["hub", "--listen", "127.0.0.1:0", "--stats", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(hub.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .to_string();
    let mut leaf = Kill(
        dmsg()
            .args(["leaf", "--connect", &addr, "--label", "west"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(leaf.0.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("linked to") {
        seen.clear();
        assert!(
            out.read_line(&mut seen).unwrap() > 0,
            "the leaf never linked"
        );
    }
    signal(&hub.0, "-INT");
    assert!(exit_within(&mut hub.0, Duration::from_secs(5)).success());
    let mut hub_err = String::new();
    std::io::Read::read_to_string(&mut hub.0.stderr.take().unwrap(), &mut hub_err).unwrap();
    assert!(hub_err.contains("closing 1 link(s) cleanly"), "{hub_err}");
    // The leaf saw a clean close (not a lost connection), then is stopped the same way.
    let mut err = BufReader::new(leaf.0.stderr.take().unwrap());
    let mut l = String::new();
    while !l.contains("lost") {
        l.clear();
        assert!(err.read_line(&mut l).unwrap() > 0, "the leaf said nothing");
    }
    assert!(l.contains("the peer closed the link cleanly"), "{l}");
    signal(&leaf.0, "-TERM");
    assert!(exit_within(&mut leaf.0, Duration::from_secs(5)).success());
}
