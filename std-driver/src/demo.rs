//! `dmsg demo`: a hub and several leaves on loopback in one process. Shows the span tree
//! converging, request/reply transactions leaf to leaf through the hub, a TCP connection cut
//! in the middle of a stream and what becomes of the stream, and a summary.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmsg_core::errcode;
use dmsg_core::link::{SendError, TxnEnd};
use dmsg_core::node::{NodeAddr, NodeError};
use dmsg_core::secure::Keypair;
use dmsg_core::wire::{Command, Flags};
use rand_core::{OsRng, TryRngCore};

use crate::cli::{print_or_usage, Arg, ArgReader, Io, UsageError};
use crate::exit;
use crate::keys::write_keypair;
use crate::link::Message;
use crate::net::Addr;
use crate::node::{addr_of, NodeEvent, NodeEvents, NodeHandle, RtError};
use crate::node_cmd::{cluster, parse_listen, start_hub, start_leaf, HUB_LABEL, LEAF_NAMES};
use crate::secure::SecureSetup;

const HELP: &str = "\
dmsg demo: a hub and several leaves on loopback, in one process

Usage: dmsg demo [--leaves N] [--requests N] [--stream N] [--listen ADDR] [--no-session]
                 [--plaintext] [-v]

Shows the span tree converging, request/reply transactions from every leaf to every other
through the hub (with latencies), a leaf's TCP connection cut in the middle of a stream of
transactions, and a summary of frames, transactions, reconnects and timings. Every link
runs the secure channel (Noise IK, spec/SECURE.md): the demo writes fresh key pairs for the
hub and the leaves into a temporary keys directory (removed at the end) and says where.

Options:
  --leaves N       leaves to start, 2..16 (default 4)
  --requests N     request/reply transactions per ordered pair of leaves (default 25)
  --stream N       frames in the stream that is cut in the middle (default 200)
  --listen ADDR    where the hub listens (default 127.0.0.1:0, a free port)
  --no-session     plain DMSG links: the cut stream ends with LOSTLINK instead of resuming
  --plaintext      no secure channel: unencrypted, unauthenticated links
  -v, -vv          log the links' life (-v) and more (-vv) to standard error
  -h, --help       show this help

Exit: 0 done, 2 usage, 3 the hub could not start, 4 something did not happen in time.
";

/// Longest any step waits.
const STEP: Duration = Duration::from_secs(15);

struct Args {
    leaves: usize,
    requests: usize,
    stream: usize,
    listen: SocketAddr,
    sessions: bool,
    secure: bool,
    verbose: u8,
}

fn parse(args: &[OsString]) -> Result<Option<Args>, UsageError> {
    let mut r = ArgReader::new("demo", args);
    let mut a = Args {
        leaves: 4,
        requests: 25,
        stream: 200,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sessions: true,
        secure: true,
        verbose: 0,
    };
    let num = |r: &ArgReader<'_>, name: &str, v: &str, lo: usize, hi: usize| {
        v.parse::<usize>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| {
                r.error(format!(
                    "{name} takes a number from {lo} to {hi} (got '{v}')"
                ))
            })
    };
    while let Some(arg) = r.next_arg() {
        match arg {
            Arg::Option("-h" | "--help", _) => return Ok(None),
            Arg::Option(v @ ("-v" | "-vv" | "-vvv"), None) => {
                a.verbose = a.verbose.saturating_add(v.len() as u8 - 1)
            }
            Arg::Option("--leaves", inline) => {
                let v = r.value("--leaves", inline)?;
                a.leaves = num(&r, "--leaves", v, 2, LEAF_NAMES.len())?;
            }
            Arg::Option("--requests", inline) => {
                let v = r.value("--requests", inline)?;
                a.requests = num(&r, "--requests", v, 1, 100_000)?;
            }
            Arg::Option("--stream", inline) => {
                let v = r.value("--stream", inline)?;
                a.stream = num(&r, "--stream", v, 4, 1_000_000)?;
            }
            Arg::Option("--no-session", inline) => {
                r.no_value("--no-session", inline)?;
                a.sessions = false;
            }
            Arg::Option("--plaintext", inline) => {
                r.no_value("--plaintext", inline)?;
                a.secure = false;
            }
            Arg::Option("--listen", inline) => {
                let v = r.value("--listen", inline)?;
                a.listen = parse_listen(v).map_err(|e| r.error(format!("--listen: {e}")))?;
            }
            Arg::Option(name, _) => return Err(r.error(format!("unknown option {name}"))),
            Arg::Positional(p) => {
                return Err(r.error(format!("unexpected argument '{}'", p.to_string_lossy())))
            }
        }
    }
    Ok(Some(a))
}

/// Why the demo stopped early.
struct Failed {
    code: u8,
    message: String,
}

fn timeout(what: impl Into<String>) -> Failed {
    Failed {
        code: exit::TIMEOUT,
        message: format!(
            "{} did not happen within {} s; run with -v to see the links' life",
            what.into(),
            STEP.as_secs()
        ),
    }
}

fn rt(what: &str) -> impl Fn(RtError) -> Failed + '_ {
    move |e| Failed {
        code: exit::NETWORK,
        message: format!("{what}: {e}"),
    }
}

/// `dmsg demo ARGS`.
pub fn main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let a = match parse(args) {
        Ok(Some(a)) => a,
        Ok(None) => return print_or_usage(io, HELP),
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            return exit::USAGE;
        }
    };
    crate::logging::init(a.verbose);
    match run(&a, io) {
        Ok(()) => exit::OK,
        Err(f) => {
            let _ = writeln!(io.stderr, "dmsg demo: {}", f.message);
            f.code
        }
    }
}

struct Leaf {
    name: &'static str,
    handle: NodeHandle,
    events: NodeEvents,
}

/// Counts of what the demo did, for the summary.
#[derive(Default)]
struct Tally {
    txns_ok: u64,
    txns_failed: u64,
    txns_lost: u64,
    latencies: Vec<Duration>,
}

/// A temporary keys directory with a key pair for the hub and each leaf; removed on drop.
struct DemoKeys(PathBuf);

impl DemoKeys {
    fn create(names: &[&str]) -> Result<DemoKeys, String> {
        let dir = std::env::temp_dir().join(format!("dmsg-demo-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let keys = DemoKeys(dir);
        for name in names {
            let mut secret = [0u8; 32];
            OsRng
                .try_fill_bytes(&mut secret)
                .map_err(|e| format!("no operating-system randomness: {e}"))?;
            let kp = Keypair::from_secret(secret);
            secret.fill(0);
            write_keypair(&keys.0, name, &kp, true).map_err(|e| e.to_string())?;
        }
        Ok(keys)
    }

    fn setup(&self, name: &str) -> Result<Arc<SecureSetup>, Failed> {
        SecureSetup::load(&self.0, name)
            .map(Arc::new)
            .map_err(|message| Failed {
                code: exit::USAGE,
                message,
            })
    }
}

impl Drop for DemoKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(a: &Args, io: &mut Io<'_>) -> Result<(), Failed> {
    let t_start = Instant::now();
    let cl = cluster();
    let keys = if a.secure {
        let mut names = vec![HUB_LABEL];
        names.extend_from_slice(&LEAF_NAMES[..a.leaves]);
        Some(DemoKeys::create(&names).map_err(|e| Failed {
            code: exit::USAGE,
            message: format!("cannot write the demo's keys: {e}; try --plaintext"),
        })?)
    } else {
        None
    };
    let hub_keys = match &keys {
        Some(k) => Some(k.setup(HUB_LABEL)?),
        None => None,
    };
    let (hub, _hub_events) =
        start_hub(a.listen, HUB_LABEL, cl, a.sessions, hub_keys).map_err(|e| Failed {
            code: exit::NETWORK,
            message: format!("the hub could not start: {e}"),
        })?;
    let hub_addr = hub.local_addr().unwrap_or(a.listen);
    let _ =
        writeln!(
        io.stdout,
        "dmsg demo: a hub on {hub_addr} and {} leaves ({}), each its own node runtime with a real \
         TCP connection to the hub; reliable sessions {}\n",
        a.leaves,
        LEAF_NAMES[..a.leaves].join(", "),
        if a.sessions { "on" } else { "off (--no-session)" }
    );
    match &keys {
        Some(k) => {
            let _ = writeln!(
                io.stdout,
                "secure channel on (Noise IK, X25519 + ChaCha20-Poly1305): fresh key pairs for the hub \
                 and every leaf in {} (removed at the end); each leaf knows hub.pub, the hub admits \
                 the keys of its .pub files. --plaintext turns it off.\n",
                k.0.display()
            );
        }
        None => {
            let _ = writeln!(
                io.stdout,
                "secure channel off (--plaintext): links are neither encrypted nor authenticated\n"
            );
        }
    }
    let _ = io.stdout.flush();

    // 1. Leaves and the span tree.
    let t_tree = Instant::now();
    let mut leaves = Vec::new();
    for &name in &LEAF_NAMES[..a.leaves] {
        let target = Addr::new(hub_addr.ip().to_string(), hub_addr.port());
        let leaf_keys = match &keys {
            Some(k) => Some(k.setup(name)?),
            None => None,
        };
        let (handle, events) = start_leaf(
            target,
            name,
            cl,
            a.sessions,
            leaf_keys,
            Some(HUB_LABEL).filter(|_| a.secure),
        )
        .map_err(rt("a leaf could not start"))?;
        leaves.push(Leaf {
            name,
            handle,
            events,
        });
    }
    wait_converged(&leaves, cl)?;
    let converged = t_tree.elapsed();
    let tree = hub.tree().map_err(rt("the hub's tree"))?;
    let _ = writeln!(
        io.stdout,
        "[1/4] span tree: every leaf knows every other after {:.1} ms. The hub's tree \
         (what `dmsg tree {hub_addr}` prints):",
        ms(converged)
    );
    for line in tree.lines() {
        let _ = writeln!(io.stdout, "      {line}");
    }
    let _ = io.stdout.flush();

    // 2. Request/reply between every ordered pair, through the hub.
    let mut tally = Tally::default();
    let t_rr = Instant::now();
    let pairs = a.leaves * (a.leaves - 1);
    let total = pairs * a.requests;
    let _ = writeln!(
        io.stdout,
        "\n[2/4] request/reply: {} transactions ({} per ordered pair of leaves), each a CREATE \
         routed leaf -> hub -> leaf and its echoed answer back",
        total, a.requests
    );
    let mut done = 0usize;
    let mut shown = Instant::now();
    for (i, from) in leaves.iter().enumerate() {
        for (j, to) in leaves.iter().enumerate() {
            if i == j {
                continue;
            }
            for k in 0..a.requests {
                let body = format!("{} -> {} #{k}", from.name, to.name);
                match request(from, addr_of(cl, to.name), body.as_bytes()) {
                    Ok(d) => {
                        tally.txns_ok += 1;
                        tally.latencies.push(d);
                    }
                    Err(e) => {
                        tally.txns_failed += 1;
                        let _ = writeln!(io.stderr, "      {}: {}", from.name, e.message);
                    }
                }
                done += 1;
                if shown.elapsed() >= Duration::from_secs(1) {
                    let _ = writeln!(io.stdout, "      {done}/{total} ...");
                    let _ = io.stdout.flush();
                    shown = Instant::now();
                }
            }
        }
    }
    let rr_time = t_rr.elapsed();
    let (p50, p99) = percentiles(&mut tally.latencies);
    let _ = writeln!(
        io.stdout,
        "      {} answered, {} failed in {:.0} ms: {:.0} transactions/s, latency p50 {:.3} ms, p99 {:.3} ms",
        tally.txns_ok,
        tally.txns_failed,
        ms(rr_time),
        tally.txns_ok as f64 / rr_time.as_secs_f64().max(1e-9),
        ms(p50),
        ms(p99)
    );
    let _ = io.stdout.flush();

    // 3. A stream cut in the middle.
    let (from, to) = (&leaves[0], &leaves[1]);
    let _ = writeln!(
        io.stdout,
        "\n[3/4] {} streams {} frames to {} in one transaction (each echoed back); after half \
         the echoes its TCP connection to the hub is cut",
        from.name, a.stream, to.name
    );
    let _ = io.stdout.flush();
    let cut = stream_with_cut(from, addr_of(cl, to.name), a.stream)?;
    match cut.outcome {
        StreamEnd::Completed => {
            tally.txns_ok += 1;
            let resumed = match cut.resumed {
                Some(d) => format!(
                    "{} redialled and its session resumed on the new connection {:.1} ms after the cut",
                    from.name,
                    ms(d)
                ),
                None => "the cut came too late to matter".to_string(),
            };
            let _ = writeln!(
                io.stdout,
                "      {resumed}; the stream finished {:.1} ms after the cut with all {} of {} \
                 echoes, in order, none twice, and the transaction closed cleanly",
                ms(cut.recovered.unwrap_or_default()),
                cut.echoes,
                a.stream
            );
        }
        StreamEnd::Lost(error) => {
            tally.txns_lost += 1;
            let _ = writeln!(
                io.stdout,
                "      the transaction ended with {} after {} of {} echoes (in order, none twice): \
                 sessions are off, so frames in flight on the cut connection are gone and the \
                 application must start over",
                errcode::txn::name(error).unwrap_or("an error"),
                cut.echoes,
                a.stream
            );
            match cut.recovered {
                Some(d) => {
                    let _ = writeln!(
                        io.stdout,
                        "      {} redialled the hub and could reach {} again {:.1} ms after the cut",
                        from.name,
                        to.name,
                        ms(d)
                    );
                }
                None => {
                    let _ = writeln!(io.stdout, "      {} did not get back in time", from.name);
                }
            }
        }
    }
    let _ = io.stdout.flush();

    // 4. Summary.
    let st = hub.status().map_err(rt("the hub's status"))?;
    let mut frames_in = 0;
    let mut frames_out = 0;
    for l in &st.links {
        if let Some(s) = l.stats {
            frames_in += s.frames_in;
            frames_out += s.frames_out;
        }
    }
    let mut redials = 0;
    let mut resumes = 0;
    for l in &leaves {
        if let Ok(s) = l.handle.status() {
            redials += s.redials;
            resumes += s.resumes;
        }
    }
    let secure_line = if a.secure {
        let c = st.secure;
        format!(
            "{} handshakes at the hub, {} failures (the cut shows as a truncated stream)",
            c.handshakes,
            c.failures.total()
        )
    } else {
        "off".to_string()
    };
    let _ = writeln!(
        io.stdout,
        "\n[4/4] summary after {:.2} s:\n      \
         hub: {} links, {} spans, {} frames relayed leaf to leaf, {} routed transactions, \
         {} frames in / {} out on its current links\n      \
         transactions: {} answered, {} failed, {} lost to the cut\n      \
         reconnects: {} redials, {} sessions resumed\n      \
         secure channel: {}\n      \
         timings: tree converged in {:.1} ms; request/reply p50 {:.3} ms, p99 {:.3} ms",
        t_start.elapsed().as_secs_f64(),
        st.links.len(),
        st.spans,
        st.stats.frames_relayed,
        st.stats.routes_relayed,
        frames_in,
        frames_out,
        tally.txns_ok,
        tally.txns_failed,
        tally.txns_lost,
        redials,
        resumes,
        secure_line,
        ms(converged),
        ms(p50),
        ms(p99),
    );
    let _ = io.stdout.flush();
    for l in &leaves {
        l.handle.shutdown();
    }
    hub.shutdown();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

fn wait_converged(leaves: &[Leaf], cl: dmsg_core::wire::Uuid) -> Result<(), Failed> {
    let end = Instant::now() + STEP;
    for l in leaves {
        for o in leaves {
            if l.name == o.name {
                continue;
            }
            loop {
                // Drain events so the runtime never waits on us.
                while l.events.try_recv().is_ok() {}
                if l.handle
                    .route_to(addr_of(cl, o.name))
                    .map_err(rt("route"))?
                    .is_some()
                {
                    break;
                }
                if Instant::now() > end {
                    return Err(timeout(format!(
                        "{} learning a route to {}",
                        l.name, o.name
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok(())
}

/// One request (CREATE|DELETE with `body`) and its echo; the time until it closed.
fn request(from: &Leaf, to: NodeAddr, body: &[u8]) -> Result<Duration, Failed> {
    let t = Instant::now();
    let txn = from
        .handle
        .open_waiting(
            to,
            Message::new(Command::DbgShell).with_aux(body),
            Flags::DELETE,
            Duration::from_secs(5),
        )
        .map_err(rt("open"))?;
    let mut answered = false;
    let end = t + STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match from.events.recv_timeout(left) {
            Ok(NodeEvent::Message { txn: x, msg }) if x == txn => {
                if msg.aux != body {
                    return Err(Failed {
                        code: exit::NETWORK,
                        message: "an answer did not echo its request".into(),
                    });
                }
                answered = true;
            }
            Ok(NodeEvent::Closed { txn: x, error, .. }) if x == txn => {
                return if answered && error == 0 {
                    Ok(t.elapsed())
                } else {
                    Err(Failed {
                        code: exit::NETWORK,
                        message: format!(
                            "a request closed with error {error:#x} ({})",
                            errcode::txn::name(error).unwrap_or("?")
                        ),
                    })
                };
            }
            Ok(_) => {}
            Err(_) => return Err(timeout("an answer")),
        }
    }
}

enum StreamEnd {
    /// Every frame was echoed and the transaction closed cleanly.
    Completed,
    /// The transaction ended with this error.
    Lost(u32),
}

struct CutResult {
    outcome: StreamEnd,
    echoes: usize,
    /// From the cut until the session resumed on a new connection.
    resumed: Option<Duration>,
    /// From the cut until the stream finished (resumed) or the leaf was reachable again.
    recovered: Option<Duration>,
}

/// Frames that may be unanswered at once.
const WINDOW: usize = 16;

/// Streams `n` numbered frames to `to` in one transaction, cuts the leaf's connection after
/// half the echoes, and checks the echoes come in order, none twice.
fn stream_with_cut(from: &Leaf, to: NodeAddr, n: usize) -> Result<CutResult, Failed> {
    let frame = |k: usize| format!("frame {k:08}").into_bytes();
    let txn = from
        .handle
        .open_waiting(
            to,
            Message::new(Command::DbgShell).with_aux(frame(0)),
            Flags::empty(),
            Duration::from_secs(5),
        )
        .map_err(rt("open the stream"))?;
    let mut sent = 1usize;
    let mut echoed = 0usize;
    let mut cut_at: Option<Instant> = None;
    let mut send_failed = false;
    let mut resumed = None;
    let end = Instant::now() + STEP;
    loop {
        // Keep the window full.
        while !send_failed && sent < n && sent - echoed < WINDOW {
            let flags = if sent + 1 == n {
                Flags::DELETE
            } else {
                Flags::empty()
            };
            match from.handle.send(
                txn,
                Message::new(Command::DbgShell).with_aux(frame(sent)),
                flags,
            ) {
                Ok(()) => sent += 1,
                Err(RtError::Node(NodeError::Link(SendError::WouldBlock { .. }))) => break,
                // The link is gone (sessions off): the stream is over; its Closed follows.
                Err(_) => send_failed = true,
            }
        }
        if Instant::now() > end {
            return Err(timeout("the end of the stream"));
        }
        match from.events.recv_timeout(Duration::from_millis(5)) {
            Ok(NodeEvent::Message { txn: x, msg }) if x == txn => {
                if msg.aux != frame(echoed) {
                    return Err(Failed {
                        code: exit::NETWORK,
                        message: format!(
                            "echo {} out of order or repeated: got '{}'",
                            echoed,
                            msg.text()
                        ),
                    });
                }
                echoed += 1;
                if cut_at.is_none() && echoed == n / 2 {
                    from.handle
                        .kill_link(txn.link)
                        .map_err(rt("cut the connection"))?;
                    cut_at = Some(Instant::now());
                }
            }
            Ok(NodeEvent::LinkResumed { .. }) => {
                resumed = cut_at.map(|t| t.elapsed());
            }
            Ok(NodeEvent::Closed { txn: x, error, end }) if x == txn => {
                if error == 0 && end == TxnEnd::Completed && echoed == n {
                    return Ok(CutResult {
                        outcome: StreamEnd::Completed,
                        echoes: echoed,
                        resumed,
                        recovered: cut_at.map(|t| t.elapsed()),
                    });
                }
                let recovered = wait_back(from, to, cut_at.unwrap_or_else(Instant::now));
                return Ok(CutResult {
                    outcome: StreamEnd::Lost(error),
                    echoes: echoed,
                    resumed,
                    recovered,
                });
            }
            _ => {}
        }
    }
}

/// Waits until `from` has a route to `to` again; the time since `since`.
fn wait_back(from: &Leaf, to: NodeAddr, since: Instant) -> Option<Duration> {
    let end = Instant::now() + STEP;
    while Instant::now() < end {
        while from.events.try_recv().is_ok() {}
        if let Ok(Some((link, _))) = from.handle.route_to(to) {
            if from
                .handle
                .status()
                .is_ok_and(|s| s.links.iter().any(|l| l.link == link))
            {
                return Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}
