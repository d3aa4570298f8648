//! `dmsg shell` and `dmsg tree` run as programs against the fake `hammer2 service` over
//! loopback TCP.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{FakeOptions, FakeService, HELP, SERVICE_CONN_MSGID, SPAN_TREE};

/// Runs `dmsg` with `args`, feeding `stdin`; killed if it runs past the deadline.
fn dmsg(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmsg"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dmsg");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let end = Instant::now() + support::DEADLINE;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("dmsg {args:?} ran past the deadline");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "dmsg panicked: {err}");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fake_with_tree() -> FakeService {
    FakeService::start(FakeOptions {
        tree: SPAN_TREE.iter().map(|s| s.to_string()).collect(),
        ..FakeOptions::default()
    })
}

const PROMPT: &str = "debug> ";

#[test]
fn scripted_shell_prints_replies_like_dragonfly_client() {
    let fake = fake_with_tree();
    let addr = fake.addr.to_string();
    let o = dmsg(&["shell", &addr], b"help\nping\ntree\nbogus\n");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut want = String::from(PROMPT);
    want += &HELP.concat();
    want += PROMPT;
    want += "sending ping\n";
    want += PROMPT;
    want += "ping reply\n"; // printed by the peer when our link answers its LNK_PING
    want += &SPAN_TREE.concat();
    want += PROMPT;
    want += "Unrecognized command: bogus\n";
    want += PROMPT;
    assert_eq!(stdout(&o), want);

    // What went over the wire, as DragonFly's client sends it.
    let seen = fake.seen();
    assert_eq!(seen[0].cmd, 0x8000_1106, "LNK_CONN|CREATE first");
    let shells: Vec<&support::Seen> = seen.iter().filter(|s| s.cmd == 0x0010_0101).collect();
    assert_eq!(shells[0].aux_bytes, 0, "the first DBG_SHELL is empty");
    let lines: Vec<&[u8]> = shells.iter().map(|s| &s.aux[..]).collect();
    assert_eq!(
        lines,
        [&b""[..], b"help\0", b"ping\0", b"tree\0", b"bogus\0"]
    );
    assert!(seen.iter().all(|s| s.cmd != 0x0010_0101 || s.msgid == 0));
    // Our link accepted the daemon's LNK_CONN the way DragonFly's peers do.
    assert!(seen
        .iter()
        .any(|s| s.cmd == 0xa80f_ff01 && s.msgid == SERVICE_CONN_MSGID && s.error == 0));
    assert!(
        seen.iter().any(|s| s.cmd == 0x2000_0101),
        "LNK_PING answered"
    );
}

#[test]
fn scripted_shell_without_prompts_and_with_echo() {
    let fake = fake_with_tree();
    let addr = fake.addr.to_string();
    let o = dmsg(
        &["shell", "--no-prompt", "--linger", "50ms", &addr],
        b"tree\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), SPAN_TREE.concat());

    let o = dmsg(&["shell", "--echo", &addr], b"\nnope\n");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "debug> \ndebug> nope\nUnrecognized command: nope\ndebug> "
    );
}

#[test]
fn tree_prints_text_and_dot() {
    let fake = fake_with_tree();
    let addr = fake.addr.to_string();
    let o = dmsg(&["tree", &addr], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), SPAN_TREE.concat());

    // DragonFly has no `dot`: converted here.
    let o = dmsg(&["tree", "--dot", &addr], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dot = stdout(&o);
    assert!(dot.starts_with("digraph dmsg {\n"), "{dot}");
    assert!(dot.contains(&format!("\"self\" [label=\"{addr}\", shape=box];")));
    assert!(dot.contains("cpeer-pfs"));
    assert!(dot.ends_with("}\n"));
    let shells: Vec<Vec<u8>> = fake
        .seen()
        .into_iter()
        .filter(|s| s.cmd == 0x0010_0101)
        .map(|s| s.aux)
        .collect();
    assert!(shells.contains(&b"dot\0".to_vec()) && shells.contains(&b"tree\0".to_vec()));
}

#[test]
fn tree_dot_uses_the_peers_own_dot() {
    let theirs = "digraph dmsg {\n  \"self\" [label=\"hub-1\", shape=box];\n}\n";
    let fake = FakeService::start(FakeOptions {
        dot: Some(theirs.into()),
        ..FakeOptions::default()
    });
    let o = dmsg(&["tree", "--dot", &fake.addr.to_string()], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), theirs);
    assert!(!fake.seen().iter().any(|s| s.aux == b"tree\0"));
}

#[test]
fn empty_tree_says_so() {
    let fake = FakeService::start(FakeOptions::default());
    let o = dmsg(&["tree", &fake.addr.to_string()], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("empty"));
}

#[test]
fn refused_connection_says_what_to_check() {
    let (l, addr) = support::listener();
    drop(l);
    let o = dmsg(&["shell", &addr.to_string()], b"help\n");
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("refused") && e.contains("987") && e.contains("firewall"),
        "{e}"
    );
}

#[test]
fn bad_addresses_are_usage_errors() {
    for bad in ["hub:0", "[::1", "a b"] {
        let o = dmsg(&["tree", bad], b"");
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("HOST:PORT"), "{}", stderr(&o));
    }
    let o = dmsg(&["shell"], b"");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no address"));
}

#[test]
fn no_prompt_in_time_is_a_timeout() {
    let fake = FakeService::start(FakeOptions {
        mute: true,
        ..FakeOptions::default()
    });
    let t0 = Instant::now();
    let o = dmsg(
        &["shell", "--timeout", "300ms", &fake.addr.to_string()],
        b"help\n",
    );
    assert_eq!(o.status.code(), Some(4));
    assert!(t0.elapsed() < Duration::from_secs(5));
    let e = stderr(&o);
    assert!(e.contains("no prompt") && e.contains("--timeout"), "{e}");
}

#[test]
fn peer_closing_mid_session_is_reported() {
    let fake = FakeService::start(FakeOptions {
        close_after_commands: Some(2),
        ..FakeOptions::default()
    });
    let o = dmsg(&["shell", &fake.addr.to_string()], b"help\ntree\ntree\n");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("connection lost") && e.contains("closed"), "{e}");
    assert!(stdout(&o).starts_with("debug> help"));
}

#[test]
fn a_peer_that_is_not_plain_dmsg_is_a_protocol_error() {
    let (l, addr) = support::listener();
    let server = std::thread::spawn(move || {
        let mut s = support::accept_within(&l, support::DEADLINE);
        // What an encrypted DragonFly peer would start with: not a DMSG header.
        let _ = s.write_all(&[0x5a; 256]);
        let mut sink = [0u8; 4096];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    let o = dmsg(&["shell", &addr.to_string()], b"help\n");
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("protocol error, class SYNC") && e.contains(".none"),
        "{e}"
    );
    server.join().unwrap();
}

#[test]
fn help_and_verbose_logging() {
    let o = dmsg(&["shell", "--help"], b"");
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("debug> "));
    let o = dmsg(&["help", "tree"], b"");
    assert!(stdout(&o).contains("--dot"));

    let fake = FakeService::start(FakeOptions::default());
    let o = dmsg(&["shell", "-v", &fake.addr.to_string()], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("peer LNK_CONN"), "{}", stderr(&o));
    // Quiet by default.
    let o = dmsg(&["shell", &fake.addr.to_string()], b"");
    assert_eq!(stderr(&o), "");
}
