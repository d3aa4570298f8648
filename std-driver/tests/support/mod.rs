//! Test support: a fake `hammer2 service` built from the captures' behaviour, with the core's
//! plain encoder and decoder (not the link runtime under test), and small helpers.
//!
//! Per connection it does what DragonFly's daemon did in `11_plain_shell` and `03_plain_span`:
//! sends its LNK_CONN|CREATE first; answers the client's LNK_CONN with
//! LNK_ERROR|CREATE|REPLY|REVTRANS (`0xa80fff01`, error 0); answers one-way LNK_PING with
//! LNK_PING|REPLY; prints `ping reply` when a LNK_PING|REPLY arrives; runs DBG_SHELL commands
//! (`help`/`?`, `ping`, `tree`, anything else "Unrecognized command: X"), one DBG_SHELL|REPLY
//! frame per line, then the `debug> ` prompt; and answers a LNK_CONN DELETE by closing both
//! LNK_CONN directions.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{Decoder, DecoderConfig};
use dmsg_core::encode::Encoder;
use dmsg_core::wire::body::ConnRepr;
use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};

/// Everything a test may wait for is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The daemon's LNK_CONN msgid in `11_plain_shell`.
pub const SERVICE_CONN_MSGID: u64 = 0x0000_7f45_bc00_30b0;

/// The `tree` lines of `03_plain_span` (connection 1).
pub const SPAN_TREE: [&str; 4] = [
    "Cluster HAMMER2 11111111-2222-3333-4444-555555555555 (cpeer-cluster)\n",
    "    Node 08 66666666-7777-8888-9999-aaaaaaaaaaaa (cpeer-pfs)\n",
    "\tSLink msgid 00007f0ea0001840 dist=0 via 4\n",
    "\t    Relay-out msgid 00007f5bc80016e0 via 5\n",
];

/// DragonFly's `help` output.
pub const HELP: [&str; 4] = [
    "help            Command help\n",
    "span <host>     Span to target host\n",
    "tree            Dump spanning tree\n",
    "@span <cmd>     Issue via circuit\n",
];

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/dragonfly")
}

/// A frame the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub cmd: u32,
    pub msgid: u64,
    pub error: u32,
    pub aux_bytes: u32,
    pub aux: Vec<u8>,
}

/// How the fake behaves.
#[derive(Clone, Debug, Default)]
pub struct FakeOptions {
    /// What `tree` prints (one frame per line).
    pub tree: Vec<String>,
    /// `Some`: the fake is "one of ours" and `dot` prints this.
    pub dot: Option<String>,
    /// Never answer DBG_SHELL (to test timeouts).
    pub mute: bool,
    /// Close the connection after this many DBG_SHELL commands.
    pub close_after_commands: Option<usize>,
}

pub struct FakeService {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeService {
    pub fn start(opts: FakeOptions) -> FakeService {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + DEADLINE;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                match l.accept() {
                    Ok((s, _)) => serve(s, &opts, &seen2, &stop2, end),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        FakeService {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The encoder side of one fake connection.
pub struct Writer {
    pub stream: TcpStream,
    pub enc: Encoder,
}

impl Writer {
    pub fn new(stream: TcpStream) -> Writer {
        Writer {
            stream,
            enc: Encoder::new(0x1234_5678),
        }
    }

    pub fn frame(&mut self, cmd: Cmd, msgid: u64, error: u32, body: &Body, aux: &[u8]) {
        let hdr = HeaderRepr {
            error,
            ..HeaderRepr::new(cmd, MsgId(msgid))
        };
        let mut buf = vec![0u8; 4096 + aux.len()];
        let n = self
            .enc
            .encode(&DefaultCrc::default(), &hdr, body, aux, &mut buf)
            .unwrap();
        let _ = self.stream.write_all(&buf[..n]);
    }

    pub fn simple(&mut self, command: Command, flags: Flags, msgid: u64, error: u32) {
        self.frame(Cmd::new(command, flags), msgid, error, &Body::None, &[]);
    }

    pub fn line(&mut self, text: &str) {
        let mut aux = text.as_bytes().to_vec();
        aux.push(0);
        self.frame(
            Cmd::new(Command::DbgShell, Flags::REPLY),
            0,
            0,
            &Body::None,
            &aux,
        );
    }

    pub fn conn(&mut self) {
        let conn = ConnRepr {
            peer_mask: u64::MAX,
            peer_type: 1,
            ..ConnRepr::default()
        };
        self.frame(
            Cmd::new(Command::LnkConn, Flags::CREATE),
            SERVICE_CONN_MSGID,
            0,
            &Body::Conn(conn),
            &[],
        );
    }
}

pub fn decoder() -> Decoder<Vec<u8>, DefaultCrc> {
    let cfg = DecoderConfig {
        max_aux_bytes: 65536,
        max_header_blocks: 32,
        check_sequence: true,
    };
    Decoder::new(vec![0u8; cfg.storage_len()], cfg, DefaultCrc::default()).unwrap()
}

fn serve(
    stream: TcpStream,
    opts: &FakeOptions,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
    end: Instant,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut r = stream.try_clone().unwrap();
    let mut w = Writer::new(stream);
    w.conn();
    let mut our_conn_open = true;
    let mut dec = decoder();
    let mut buf = vec![0u8; 65536];
    let mut commands = 0usize;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        let n = match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        };
        let mut input = &buf[..n];
        while !input.is_empty() {
            let Ok(out) = dec.decode(input) else { return };
            input = &input[out.consumed..];
            let Some(f) = out.frame else { continue };
            let h = f.repr();
            let aux = f.aux().to_vec();
            seen.lock().unwrap().push(Seen {
                cmd: h.cmd.0,
                msgid: h.msgid.0,
                error: h.error,
                aux_bytes: h.aux_bytes,
                aux: aux.clone(),
            });
            let flags = h.cmd.flags();
            match h.cmd.command() {
                Command::LnkConn if flags.contains(Flags::CREATE) => w.simple(
                    Command::LnkError,
                    Flags::CREATE | Flags::REPLY | Flags::REVTRANS,
                    h.msgid.0,
                    0,
                ),
                Command::LnkError if flags.contains(Flags::DELETE) => {
                    if h.msgid.0 == SERVICE_CONN_MSGID {
                        // The client closed its answer to our LNK_CONN (or refused it).
                        if our_conn_open {
                            w.simple(Command::LnkError, Flags::DELETE, SERVICE_CONN_MSGID, 0);
                            our_conn_open = false;
                        }
                    } else if !flags.contains(Flags::REPLY) {
                        // The client closed its LNK_CONN: close both directions.
                        w.simple(
                            Command::LnkError,
                            Flags::DELETE | Flags::REPLY | Flags::REVTRANS,
                            h.msgid.0,
                            0,
                        );
                        if our_conn_open {
                            w.simple(Command::LnkError, Flags::DELETE, SERVICE_CONN_MSGID, 0);
                            our_conn_open = false;
                        }
                    }
                }
                Command::LnkPing if flags.contains(Flags::REPLY) => w.line("ping reply\n"),
                Command::LnkPing => w.simple(Command::LnkPing, Flags::REPLY, h.msgid.0, 0),
                Command::DbgShell if !flags.contains(Flags::REPLY) => {
                    commands += 1;
                    if opts.mute {
                        continue;
                    }
                    shell_command(&mut w, opts, &aux);
                    if opts.close_after_commands == Some(commands) {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

fn shell_command(w: &mut Writer, opts: &FakeOptions, aux: &[u8]) {
    let end = aux.iter().position(|&b| b == 0).unwrap_or(aux.len());
    let text = String::from_utf8_lossy(&aux[..end]).into_owned();
    let cmd = text.split([' ', '\t']).next().unwrap_or("");
    match cmd {
        "" => {}
        "ping" => {
            w.line("sending ping\n");
            w.simple(Command::LnkPing, Flags::empty(), 0, 0);
        }
        "tree" => {
            for l in &opts.tree {
                w.line(l);
            }
        }
        "help" | "?" => {
            for l in HELP {
                w.line(l);
            }
        }
        "dot" if opts.dot.is_some() => {
            for l in opts.dot.as_deref().unwrap_or("").split_inclusive('\n') {
                w.line(l);
            }
        }
        other => w.line(&format!("Unrecognized command: {other}\n")),
    }
    w.line("debug> ");
}

/// The aux texts (`b'...'` reprs, unescaped, without the NUL) of the DBG_SHELL|REPLY frames
/// of stream `stream` (e.g. `S->C(987->43422)`) in a `.decoded.txt` walk.
pub fn walk_shell_texts(walk: &str, stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut take_next = false;
    for line in walk.lines() {
        if line.starts_with(stream) {
            take_next = line.contains(" DBG_SHELL|REPLY ");
            continue;
        }
        if let (true, Some(rest)) = (take_next, line.trim_start().strip_prefix("aux: b'")) {
            let body = rest.strip_suffix('\'').unwrap();
            let mut s = unescape(body);
            if s.ends_with('\0') {
                s.pop();
            }
            out.push(s);
        }
        take_next = false;
    }
    out
}

/// Undoes Python's bytes repr escapes used in the walks (`\n`, `\t`, `\\`, `\'`, `\xNN`).
pub fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('\'') => out.push('\''),
            Some('x') => {
                let h: String = it.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&h, 16).unwrap() as char);
            }
            other => panic!("unknown escape {other:?}"),
        }
    }
    out
}

/// A listener on 127.0.0.1 with an ephemeral port.
pub fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Accepts one connection, giving up at the deadline.
pub fn accept_within(l: &TcpListener, within: Duration) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + within;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("no connection within {within:?}: {e}"),
        }
    }
}
