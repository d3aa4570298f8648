//! DragonFly's own bytes replayed to our client, and the tree converter on DragonFly's text.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use dmsg_core::wire::MsgId;
use dmsg_std::net::Addr;
use dmsg_std::shell::{run_script, ScriptStyle, ShellClient, ShellOptions};
use dmsg_std::tree;

use support::{accept_within, data_dir, listener, walk_shell_texts, DEADLINE};

/// The daemon's half of `11_plain_shell` is fed to our client's connection (over loopback)
/// while the client runs the same commands DragonFly's client ran (an empty line, `help`,
/// `ping`, `tree`, `bogus`). The client prints exactly the text of every DBG_SHELL|REPLY frame
/// of the walk, in order, and the peer's frames cause no protocol violation.
#[test]
fn replayed_service_stream_prints_the_walks_lines() {
    let from_service =
        std::fs::read(data_dir().join("11_plain_shell_conn0_from_service.bin")).expect("capture");
    let walk = std::fs::read_to_string(data_dir().join("11_plain_shell.decoded.txt")).unwrap();
    let texts = walk_shell_texts(&walk, "S->C(987->43422)");
    assert_eq!(texts.len(), 13, "{texts:?}");
    assert_eq!(texts.iter().filter(|t| *t == "debug> ").count(), 6);
    let want = texts.concat();

    let (l, addr) = listener();
    let server = std::thread::spawn(move || {
        let mut s = accept_within(&l, DEADLINE);
        s.write_all(&from_service).unwrap();
        // Keep the connection open until the client leaves.
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });

    let mut opts = ShellOptions::default();
    // The msgid DragonFly's client used, which the daemon's LNK_CONN answer refers to.
    opts.link.config.conn_msgid = MsgId(0x0000_7f73_bc00_1070);
    let mut client = ShellClient::connect(&Addr::from(addr), &opts).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run_script(
        &mut client,
        &mut &b"\nhelp\nping\ntree\nbogus\n"[..],
        ScriptStyle::default(),
        Duration::from_millis(50),
        &mut out,
        &mut err,
    )
    .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    let status = client.shell().handle().status().unwrap();
    assert_eq!(status.stats.violations.total(), 0, "{:?}", status.stats);
    assert_eq!(
        status.stats.pings_in, 1,
        "the daemon's LNK_PING was answered"
    );
    drop(client);

    // What our client sent, decoded: LNK_CONN first, then DragonFly's DBG_SHELL framing.
    let sent = server.join().unwrap();
    let mut dec = support::decoder();
    let mut rest = &sent[..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let o = dec.decode(rest).unwrap();
        rest = &rest[o.consumed..];
        if let Some(f) = o.frame {
            frames.push((f.repr().cmd.0, f.aux().to_vec()));
        }
    }
    assert_eq!(frames[0].0, 0x8000_1106);
    let shell: Vec<&[u8]> = frames
        .iter()
        .filter(|f| f.0 == 0x0010_0101)
        .map(|f| &f.1[..])
        .collect();
    assert_eq!(
        shell,
        [&b""[..], b"", b"help\0", b"ping\0", b"tree\0", b"bogus\0"]
    );
    assert!(frames.iter().any(|f| f.0 == 0x2000_0101), "PING|REPLY sent");
}

/// The `tree` text the daemon printed in `03_plain_span` (connection 1), converted to DOT.
#[test]
fn tree_text_from_the_capture_converts_to_dot() {
    let walk = std::fs::read_to_string(data_dir().join("03_plain_span.decoded.txt")).unwrap();
    let texts = walk_shell_texts(&walk, "S->C(987->51316)");
    // prompt, prompt, 4 tree lines, prompt, the same 4 lines, prompt
    let first: Vec<&String> = texts
        .iter()
        .skip(2)
        .take_while(|t| *t != "debug> ")
        .collect();
    assert_eq!(first.len(), 4);
    let text: String = first.into_iter().cloned().collect();
    assert_eq!(text, support::SPAN_TREE.concat());
    let t = tree::parse(&text);
    assert!(t.unparsed.is_empty());
    let dot = tree::to_dot(&t, "127.0.0.1:987");
    let want = r#"digraph dmsg {
  rankdir=LR;
  "self" [label="127.0.0.1:987", shape=box];
  subgraph "cluster_0" {
    label="HAMMER2 11111111-2222-3333-4444-555555555555 (cpeer-cluster)";
    "11111111-2222-3333-4444-555555555555/66666666-7777-8888-9999-aaaaaaaaaaaa" [label="cpeer-pfs\n08 66666666-7777-8888-9999-aaaaaaaaaaaa"];
  }
  "self" -> "11111111-2222-3333-4444-555555555555/66666666-7777-8888-9999-aaaaaaaaaaaa" [label="via link 4 dist 0\nmsgid 00007f0ea0001840"];
  "link 5" [shape=ellipse, style=dashed];
  "11111111-2222-3333-4444-555555555555/66666666-7777-8888-9999-aaaaaaaaaaaa" -> "link 5" [style=dashed, label="relayed\nmsgid 00007f5bc80016e0"];
}
"#;
    assert_eq!(dot, want);
    // Balanced and quoted: every line inside has an even number of unescaped quotes.
    for line in dot.lines() {
        let quotes = line.replace("\\\"", "").matches('"').count();
        assert_eq!(quotes % 2, 0, "{line}");
    }
}
