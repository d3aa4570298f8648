//! `dmsg decode` run as a program on DragonFly's own captures and on broken variants of them.
//!
//! Frame counts, offsets, commands and msgids are cross-checked against the independent
//! frame walks in `tests/data/dragonfly/*.decoded.txt`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dmsg_core::crc::DefaultCrc;
use dmsg_core::encode::Encoder;
use dmsg_core::wire::body::SpanRepr;
use dmsg_core::wire::{Body, ByteOrder, Cmd, Command as DmsgCommand, Flags, HeaderRepr, Label};
use dmsg_core::wire::{MsgId, Uuid};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/dragonfly")
}

/// Runs `dmsg` with `args`, feeding `stdin`.
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
    // A separate thread, so a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for dmsg");
    writer.join().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "dmsg panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dmsg_file(args: &[&str], file: &Path) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.push(file.to_str().unwrap());
    dmsg(&all, b"")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

/// Writes `contents` to a fresh file under the test's temporary directory.
fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    // Per process, so concurrent runs of this binary do not rewrite each other's files.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("decode_cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// One frame line of a `*.decoded.txt` walk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WalkFrame {
    index: u64,
    offset: u64,
    /// e.g. `LNK_ERROR|CREATE|REPLY|REVTRANS`.
    cmd: String,
    cmd_word: u64,
    msgid: u64,
}

/// One `== stream ...: N bytes` section of a walk.
#[derive(Debug)]
struct WalkStream {
    bytes: usize,
    frames: Vec<WalkFrame>,
}

fn parse_walk(text: &str) -> Vec<WalkStream> {
    let mut streams: Vec<WalkStream> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("== stream ") {
            let bytes = rest
                .rsplit(": ")
                .next()
                .and_then(|s| s.strip_suffix(" bytes"))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad stream line {line:?}"));
            streams.push(WalkStream {
                bytes,
                frames: Vec::new(),
            });
            continue;
        }
        if !(line.starts_with("C->S") || line.starts_with("S->C")) {
            continue;
        }
        let tok: Vec<&str> = line.split_whitespace().collect();
        let field = |prefix: &str| {
            tok.iter()
                .find_map(|t| t.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {line:?}"))
        };
        assert!(
            line.contains("hdr_crc=") && !line.contains("[BAD"),
            "{line}"
        );
        streams
            .last_mut()
            .expect("frame before any stream header")
            .frames
            .push(WalkFrame {
                index: tok[1].strip_prefix('#').unwrap().parse().unwrap(),
                offset: tok[2].strip_prefix('@').unwrap().parse().unwrap(),
                cmd: tok[4].to_string(),
                cmd_word: u64::from_str_radix(field("cmd="), 16).unwrap(),
                msgid: u64::from_str_radix(field("msgid="), 16).unwrap(),
            });
    }
    streams
}

struct Capture {
    name: String,
    path: PathBuf,
    bytes: Vec<u8>,
    walk: Vec<WalkFrame>,
}

/// Every `*.bin` with its section of the matching walk. A walk lists, per connection (in the
/// sorted order of the part of the name between the walk's prefix and `_to_`/`_from_`), first
/// the stream to the service, then the stream from it.
fn captures() -> Vec<Capture> {
    let dir = data_dir();
    let mut walks = Vec::new();
    let mut bins = Vec::new();
    for e in std::fs::read_dir(&dir).expect("tests/data/dragonfly exists") {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".decoded.txt") {
            walks.push(stem.to_string());
        } else if name.ends_with(".bin") {
            bins.push(name);
        }
    }
    bins.sort();
    assert_eq!(bins.len(), 16, "expected 16 captures");
    let mut out = Vec::new();
    for stem in &walks {
        let streams =
            parse_walk(&std::fs::read_to_string(dir.join(format!("{stem}.decoded.txt"))).unwrap());
        let mine: Vec<&String> = bins
            .iter()
            .filter(|b| b.starts_with(&format!("{stem}_")))
            .collect();
        let conn_of = |b: &str| {
            let rest = &b[stem.len() + 1..];
            let (conn, dir) = rest
                .strip_suffix("_to_service.bin")
                .map(|c| (c.to_string(), 0))
                .or_else(|| {
                    rest.strip_suffix("_from_service.bin")
                        .map(|c| (c.to_string(), 1))
                })
                .unwrap_or_else(|| panic!("unexpected capture name {b}"));
            (conn, dir)
        };
        let mut conns: Vec<String> = mine.iter().map(|b| conn_of(b).0).collect();
        conns.sort();
        conns.dedup();
        assert_eq!(
            streams.len(),
            conns.len() * 2,
            "{stem}: streams in the walk"
        );
        for b in mine {
            let (conn, d) = conn_of(b);
            let i = conns.iter().position(|c| *c == conn).unwrap() * 2 + d;
            let path = dir.join(b);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                bytes.len(),
                streams[i].bytes,
                "{b}: length vs its walk section"
            );
            out.push(Capture {
                name: b.clone(),
                path,
                bytes,
                walk: streams[i].frames.clone(),
            });
        }
    }
    assert_eq!(out.len(), bins.len(), "every capture has a walk");
    out
}

fn flags_joined(v: &Value) -> String {
    let mut s = v["cmd"].as_str().unwrap().to_string();
    for f in v["flags"].as_array().unwrap() {
        s.push('|');
        s.push_str(f.as_str().unwrap());
    }
    s
}

#[test]
fn every_capture_decodes_in_text_mode_as_its_walk_says() {
    for c in captures() {
        let o = dmsg_file(&["decode"], &c.path);
        assert_eq!(o.status.code(), Some(0), "{}: {}", c.name, stderr(&o));
        let lines: Vec<String> = stdout(&o)
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), c.walk.len(), "{}: frame count", c.name);
        for (line, w) in lines.iter().zip(&c.walk) {
            let head = format!(
                "#{} @{} {} msgid={:016x} ",
                w.index, w.offset, w.cmd, w.msgid
            );
            assert!(line.starts_with(&head), "{}: {line:?} vs {head:?}", c.name);
            assert!(line.contains(" hdr_crc=") && line.contains(" ok"), "{line}");
            assert!(!line.contains("BAD") && !line.ends_with(" be"), "{line}");
        }
        let summary = format!("{} frames, {} bytes, ", c.walk.len(), c.bytes.len());
        assert!(stderr(&o).contains(&summary), "{}: {}", c.name, stderr(&o));
    }
}

#[test]
fn every_capture_decodes_in_json_mode_with_every_crc_ok() {
    for c in captures() {
        let o = dmsg_file(&["decode", "--json"], &c.path);
        assert_eq!(o.status.code(), Some(0), "{}: {}", c.name, stderr(&o));
        assert!(
            o.stderr.is_empty(),
            "{}: JSON mode is quiet on stderr",
            c.name
        );
        let frames = json_lines(&o);
        assert_eq!(frames.len(), c.walk.len(), "{}: frame count", c.name);
        for (v, w) in frames.iter().zip(&c.walk) {
            // A frame's `error` is its transaction error number; only a failure line has an
            // object there.
            assert!(v["error"].is_u64(), "{v}");
            assert_eq!(v["index"], w.index);
            assert_eq!(v["offset"], w.offset);
            assert_eq!(flags_joined(v), w.cmd);
            assert_eq!(v["cmd_word"], w.cmd_word);
            assert_eq!(v["msgid"], w.msgid);
            assert_eq!(v["circuit"], 0);
            assert_eq!(v["hdr_crc_ok"], true, "{}: {v}", c.name);
            assert_eq!(v["aux_crc_ok"], true, "{}: {v}", c.name);
            assert_eq!(v["byte_order"], "le");
            assert!(v["aux_bytes"].is_u64());
        }
    }
}

#[test]
fn json_carries_span_and_shell_contents() {
    let path = data_dir().join("03_plain_span_conn0_to_service.bin");
    let v = json_lines(&dmsg_file(&["decode", "--json"], &path));
    let span = &v[2]["body"];
    assert_eq!(span["kind"], "span");
    assert_eq!(span["peer_id"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(span["pfs_id"], "66666666-7777-8888-9999-aaaaaaaaaaaa");
    assert_eq!(span["peer_label"], "cpeer-cluster");
    assert_eq!(span["pfs_label"], "cpeer-pfs");
    assert_eq!(span["peer_type"], 3);
    assert_eq!(span["dist"], 0);
    assert_eq!(v[0]["body"]["kind"], "conn");
    assert_eq!(v[0]["body"]["peer_mask"], u64::MAX);
    assert_eq!(v[3]["cmd"], "DBG_SHELL");
    assert_eq!(v[3]["text"], "tree");
    assert_eq!(v[3]["aux_bytes"], 5);

    let text = stdout(&dmsg_file(&["decode"], &path));
    assert!(text.contains("    span peer_id=11111111-2222-3333-4444-555555555555"));
    assert!(text.contains("peer_label=\"cpeer-cluster\" pfs_label=\"cpeer-pfs\""));
    assert!(text.contains("    text \"tree\""));

    let shell = data_dir().join("03_plain_span_conn1_from_service.bin");
    let text = stdout(&dmsg_file(&["decode"], &shell));
    assert!(text.contains("    text \"\\tSLink msgid 00007f0ea0001840 dist=0 via 4\\n\""));
}

/// `bytes` as hex text: mixed case, spaces, LF and CRLF line ends, a trailing blank line.
fn to_hex_text(bytes: &[u8]) -> Vec<u8> {
    let mut s = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i % 3 == 0 {
            s.push_str(&format!("{b:02X}"));
        } else {
            s.push_str(&format!("{b:02x}"));
        }
        match i % 32 {
            31 if i % 64 == 63 => s.push_str("\r\n"),
            31 => s.push('\n'),
            7 | 15 | 23 => s.push_str(" \t"),
            _ => {}
        }
    }
    s.push_str("\n\n");
    s.into_bytes()
}

#[test]
fn hex_input_gives_the_same_json_as_raw() {
    for c in captures() {
        let raw = dmsg_file(&["decode", "--json"], &c.path);
        let hex_path = temp_file(&format!("{}.hex", c.name), &to_hex_text(&c.bytes));
        let hex = dmsg_file(&["decode", "--json"], &hex_path);
        assert_eq!(hex.status.code(), Some(0), "{}: {}", c.name, stderr(&hex));
        assert_eq!(stdout(&hex), stdout(&raw), "{}", c.name);
        let forced = dmsg_file(&["decode", "--json", "--hex"], &hex_path);
        assert_eq!(stdout(&forced), stdout(&raw), "{}", c.name);
    }
    // Text mode says the input was hex.
    let c = &captures()[0];
    let hex_path = temp_file("summary.hex", &to_hex_text(&c.bytes));
    assert!(stderr(&dmsg_file(&["decode"], &hex_path)).contains("(read as hex text)"));
}

#[test]
fn standard_input_works_with_and_without_a_dash() {
    let c = &captures()[0];
    let file = stdout(&dmsg_file(&["decode", "--json"], &c.path));
    for args in [&["decode", "--json"][..], &["decode", "--json", "-"]] {
        let o = dmsg(args, &c.bytes);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), file);
    }
    let o = dmsg(&["decode", "-"], &to_hex_text(&c.bytes));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o).lines().filter(|l| l.starts_with('#')).count(),
        c.walk.len()
    );
}

fn span_capture() -> Vec<u8> {
    std::fs::read(data_dir().join("03_plain_span_conn0_to_service.bin")).unwrap()
}

/// Runs `--json` on `bytes` from stdin; returns the exit code, the frames and the error object.
fn json_failure(bytes: &[u8], extra: &[&str]) -> (Option<i32>, Vec<Value>, Value) {
    let mut args = vec!["decode", "--json"];
    args.extend_from_slice(extra);
    let o = dmsg(&args, bytes);
    let mut lines = json_lines(&o);
    let last = lines.pop().expect("an error line");
    let err = last["error"].clone();
    assert!(err.is_object(), "no error object in {last}");
    (o.status.code(), lines, err)
}

#[test]
fn a_corrupted_header_byte_is_an_xcrc_error_at_the_frame() {
    let mut b = span_capture();
    b[448 + 8] ^= 0x01; // msgid of frame #2 (LNK_SPAN|CREATE at offset 448)
    let (code, frames, err) = json_failure(&b, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(frames.len(), 2);
    assert_eq!(err["class"], "XCRC");
    assert_eq!(err["code"], 6);
    assert_eq!(err["offset"], 448);
    assert_eq!(err["frames_before"], 2);
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("header CRC mismatch"));
    assert_eq!(err["rejected"]["hdr_crc_ok"], false);
    assert_eq!(err["rejected"]["cmd"], "LNK_SPAN");
    assert_eq!(err["rejected"]["msgid"], 0x0000_7f0e_a000_1841u64);

    let o = dmsg(&["decode"], &b);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("XCRC (6)") && e.contains("offset 448"), "{e}");
    assert!(e.contains("2 good frames before it"), "{e}");
    assert!(
        e.contains("rejected: #2 @448 LNK_SPAN|CREATE msgid=00007f0ea0001841")
            && e.contains("hdr_crc=38880cdb BAD"),
        "{e}"
    );
    assert!(e.contains("hint: "), "{e}");
    assert!(e.contains("2 frames, 1536 bytes, 0 with aux"), "{e}");
    assert_eq!(stdout(&o).lines().filter(|l| l.starts_with('#')).count(), 2);
}

#[test]
fn a_corrupted_aux_byte_is_an_acrc_error() {
    let mut b = span_capture();
    b[896 + 64] ^= 0x20; // first aux byte of the DBG_SHELL "tree" at offset 896
    let (code, frames, err) = json_failure(&b, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(frames.len(), 3);
    assert_eq!(err["class"], "ACRC");
    assert_eq!(err["code"], 7);
    assert_eq!(err["offset"], 896);
    assert_eq!(err["rejected"]["hdr_crc_ok"], true);
    assert_eq!(err["rejected"]["aux_crc_ok"], false);
    let e = stderr(&dmsg(&["decode"], &b));
    assert!(e.contains("aux_crc=b1e3ffe0 BAD"), "{e}");
}

#[test]
fn garbage_is_a_sync_error_that_says_what_to_do() {
    let garbage = [0x12u8, 0x34, 0x56, 0x78].repeat(40);
    let (code, frames, err) = json_failure(&garbage, &[]);
    assert_eq!(code, Some(1));
    assert!(frames.is_empty());
    assert_eq!(err["class"], "SYNC");
    assert_eq!(err["code"], 1);
    assert_eq!(err["offset"], 0);
    assert_eq!(err["frames_before"], 0);
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("bad magic 0x3412 at offset 0"), "{msg}");
    assert!(err["hint"].as_str().unwrap().contains("32 48"));

    // Text that is not plain hex (an xxd-style dump) gets a hint about the hex format.
    let dump = b"00000000: 3248 0000 0067 458b 1011 00a0 0e7f 0000  2H...gE.........\n".repeat(3);
    let o = dmsg(&["decode"], &dump);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("SYNC (1)") && e.contains("no 0x prefixes, offsets"),
        "{e}"
    );

    // Bad magic after good frames: the stream lost sync.
    let mut b = span_capture();
    b.extend_from_slice(&garbage);
    let (code, frames, err) = json_failure(&b, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(frames.len(), 6);
    assert_eq!(
        (err["class"].as_str(), err["offset"].as_u64()),
        (Some("SYNC"), Some(1536))
    );
}

#[test]
fn truncated_input_is_reported_with_its_offset() {
    let b = span_capture();
    let o = dmsg(&["decode"], &b[..1000]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("truncated: 104 bytes of an incomplete frame at offset 896"),
        "{e}"
    );
    assert!(e.contains("3 frames, 1000 bytes"), "{e}");

    let (code, frames, err) = json_failure(&b[..1000], &[]);
    assert_eq!(code, Some(1));
    assert_eq!(frames.len(), 3);
    assert_eq!(err["kind"], "truncated");
    assert_eq!(err["class"], "EOF");
    assert_eq!(err["offset"], 896);
    assert_eq!(err["bytes"], 104);
    assert_eq!(err["announced"], 128);
    assert_eq!(err["frames_before"], 3);

    // Shorter than one base header.
    let o = dmsg(&["decode"], &b[..10]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("truncated: 10 bytes of an incomplete frame at offset 0"));
}

#[test]
fn a_dropped_frame_is_a_sequence_error_unless_no_seq() {
    let b = span_capture();
    let dropped = [&b[..384], &b[448..]].concat(); // without frame #1 (64 bytes)
    let (code, frames, err) = json_failure(&dropped, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(frames.len(), 1);
    assert_eq!(err["class"], "MSGSEQ");
    assert_eq!(err["code"], 15);
    assert_eq!(err["offset"], 384);
    assert_eq!(err["rejected"]["seq"], 2);
    assert_eq!(err["rejected"]["seq_expected"], 1);
    let e = stderr(&dmsg(&["decode"], &dropped));
    assert!(
        e.contains("seq=2 BAD(expected 1)") && e.contains("--no-seq"),
        "{e}"
    );

    let o = dmsg(&["decode", "--json", "--no-seq"], &dropped);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json_lines(&o).len(), 5);
}

#[test]
fn max_aux_limits_the_aux_payload() {
    let b = span_capture();
    let (code, frames, err) = json_failure(&b, &["--max-aux", "4"]);
    assert_eq!(code, Some(1));
    assert_eq!(frames.len(), 3);
    assert_eq!(err["class"], "FIELD");
    assert_eq!(err["code"], 4);
    assert!(err["hint"].as_str().unwrap().contains("--max-aux"));
    let o = dmsg(&["decode", "--max-aux=5"], &b);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn big_endian_frames_are_decoded_and_marked() {
    let crc = DefaultCrc::default();
    let mut enc = Encoder::with_byte_order(0xabcd_ef00, ByteOrder::Big);
    let mut wire = vec![0u8; 1024];
    let span = SpanRepr {
        peer_id: Uuid([0x11; 16]),
        pfs_id: Uuid([0x22; 16]),
        peer_type: 2,
        dist: 3,
        peer_label: Label::new("be-cluster").unwrap(),
        pfs_label: Label::new("be-pfs").unwrap(),
        ..SpanRepr::default()
    };
    let hdr = HeaderRepr::new(Cmd::new(DmsgCommand::LnkSpan, Flags::CREATE), MsgId(0x1234));
    let mut n = enc
        .encode(&crc, &hdr, &Body::Span(span), &[], &mut wire)
        .unwrap();
    let mut shell = HeaderRepr::new(Cmd::new(DmsgCommand::DbgShell, Flags::REPLY), MsgId(0));
    shell.error = 0x20;
    n += enc
        .encode(
            &crc,
            &shell,
            &Body::None,
            b"line\x01\"q\"\n\0",
            &mut wire[n..],
        )
        .unwrap();
    wire.truncate(n);

    let o = dmsg(&["decode"], &wire);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("#0 @0 LNK_SPAN|CREATE msgid=0000000000001234 "),
        "{text}"
    );
    assert!(lines[0].ends_with(" be"), "{text}");
    assert!(lines[1].contains("peer_type=2(BLOCK) dist=3"), "{text}");
    assert!(
        lines[1].contains("peer_label=\"be-cluster\" pfs_label=\"be-pfs\""),
        "{text}"
    );
    assert!(lines[2].contains("DBG_SHELL|REPLY") && lines[2].contains("err=0x20(NOSUPP)"));
    // Not printable (a control byte): shown as hex.
    assert!(
        lines[3].starts_with("    aux 10 bytes (not text): 6c 69 6e 65 01"),
        "{text}"
    );

    let v = json_lines(&dmsg(&["decode", "--json"], &wire));
    assert_eq!(v[0]["byte_order"], "be");
    assert_eq!(v[0]["msgid"], 0x1234);
    assert_eq!(v[0]["body"]["pfs_label"], "be-pfs");
    assert_eq!(v[1]["error"], 0x20);
    assert_eq!(v[1]["error_name"], "NOSUPP");
    assert_eq!(v[1]["text"], "line\u{1}\"q\"\n");
}

#[test]
fn usage_and_input_errors_exit_2() {
    let odd = temp_file("odd.hex", b"3248 0000\n0");
    let o = dmsg_file(&["decode"], &odd);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("odd number of hex digits (9"),
        "{}",
        stderr(&o)
    );

    let binary = data_dir().join("03_plain_span_conn0_to_service.bin");
    let o = dmsg_file(&["decode", "--hex"], &binary);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a hex digit"), "{}", stderr(&o));

    let missing = data_dir().join("no-such-capture.bin");
    let o = dmsg_file(&["decode"], &missing);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("no-such-capture.bin") && e.contains("check the path"),
        "{e}"
    );

    let o = dmsg_file(&["decode"], &data_dir());
    assert_eq!(o.status.code(), Some(2));

    for args in [
        &["decode", "--bogus"][..],
        &["decode", "--hex", "--raw"],
        &["decode", "a.bin", "b.bin"],
        &["decode", "--max-aux"],
        &["decode", "--max-aux", "2M"],
        &["nosuchcommand"],
        &[],
    ] {
        let o = dmsg(args, b"");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn help_lists_decode() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let o = dmsg(args, b"");
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains("  decode  "), "{}", stdout(&o));
    }
    for args in [&["decode", "--help"][..], &["help", "decode"]] {
        let o = dmsg(args, b"");
        assert_eq!(o.status.code(), Some(0));
        let h = stdout(&o);
        assert!(
            h.contains("Usage: dmsg decode") && h.contains("--max-aux"),
            "{h}"
        );
    }
    let o = dmsg(&["--version"], b"");
    assert!(stdout(&o).starts_with("dmsg "));
}

#[test]
fn mangled_captures_never_crash_the_program() {
    let base = span_capture();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..40 {
        let mut b = base.clone();
        for _ in 0..(1 + next() % 3) {
            let i = next() as usize % b.len();
            b[i] = next() as u8;
        }
        let cut = next() as usize % (b.len() + 1);
        let o = dmsg(&["decode", "--json"], &b[..cut]);
        let code = o.status.code();
        assert!(matches!(code, Some(0 | 1)), "{code:?}: {}", stderr(&o));
        let lines = json_lines(&o);
        if code == Some(1) {
            assert!(lines.last().unwrap()["error"].is_object());
        }
    }
}
