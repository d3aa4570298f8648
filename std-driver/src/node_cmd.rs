//! `dmsg hub` and `dmsg leaf`: a node runtime ([`crate::node`]) on the command line, and the
//! settings both (and `dmsg demo`) use.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmsg_core::link::LinkConfig;
use dmsg_core::node::NodeConfig;
use dmsg_core::wire::body::peer_type;
use dmsg_core::wire::{Label, Uuid};

use crate::cli::{parse_duration, print_or_usage, Arg, ArgReader, Io, UsageError};
use crate::exit;
use crate::interrupt::Interrupt;
use crate::net::Addr;
use crate::node::drive::{HubNode, LeafNode, PlainHubNode, PlainLeafNode};
use crate::node::{
    self, default_cluster, span_for, uuid_of, NodeEvent, NodeEvents, NodeHandle, NodeOptions,
};
use crate::secure::SecureSetup;

/// How often the long-running subcommands look at the interrupt flag.
const POLL: Duration = Duration::from_millis(100);

/// The hub's label unless `--label` says otherwise.
pub const HUB_LABEL: &str = "hub";

/// Settings of a hub listening on `listen`.
pub fn hub_options(listen: SocketAddr, label: &str, cluster: Uuid, sessions: bool) -> NodeOptions {
    let mut link = LinkConfig::default();
    link.conn.peer_type = peer_type::ROUTER;
    link.conn.peer_id = cluster;
    link.conn.peer_label = Label::new(label).unwrap_or(Label::EMPTY);
    NodeOptions {
        node: NodeConfig {
            label: Label::new(label).unwrap_or(Label::EMPTY),
        },
        link,
        listen: Some(listen),
        sessions,
        echo: false,
        name: label.to_string(),
        ..NodeOptions::default()
    }
}

/// Settings of a leaf that answers echo transactions.
pub fn leaf_options(label: &str, cluster: Uuid, sessions: bool) -> NodeOptions {
    let mut link = LinkConfig::default();
    link.conn.peer_type = peer_type::HAMMER2;
    link.conn.peer_id = cluster;
    link.conn.peer_label = Label::new(label).unwrap_or(Label::EMPTY);
    NodeOptions {
        node: NodeConfig {
            label: Label::new(label).unwrap_or(Label::EMPTY),
        },
        link,
        listen: None,
        sessions,
        echo: true,
        name: label.to_string(),
        ..NodeOptions::default()
    }
}

/// Starts a hub: listens on `listen` and advertises itself as node `label`. With
/// `sessions`, a [`HubNode`] offering the reliable session on every link; without, a
/// [`PlainHubNode`]. With `secure`, connections run the secure channel per its keys
/// directory.
pub fn start_hub(
    listen: SocketAddr,
    label: &str,
    cluster: Uuid,
    sessions: bool,
    secure: Option<Arc<SecureSetup>>,
) -> Result<(NodeHandle, NodeEvents), node::RtError> {
    let mut opts = hub_options(listen, label, cluster, sessions);
    opts.secure = secure;
    let (h, ev) = if sessions {
        node::spawn::<HubNode>(opts)?
    } else {
        node::spawn::<PlainHubNode>(opts)?
    };
    h.advertise(span_for(cluster, label))?;
    Ok((h, ev))
}

/// Starts a leaf: advertises itself as node `label`, answers echo transactions and keeps a
/// link to `hub` up. With `secure`, the hub is named `peer` in the keys directory (default:
/// the host part of `hub`).
pub fn start_leaf(
    hub: Addr,
    label: &str,
    cluster: Uuid,
    sessions: bool,
    secure: Option<Arc<SecureSetup>>,
    peer: Option<&str>,
) -> Result<(NodeHandle, NodeEvents), node::RtError> {
    let mut opts = leaf_options(label, cluster, sessions);
    opts.secure = secure;
    let (h, ev) = if sessions {
        node::spawn::<LeafNode>(opts)?
    } else {
        node::spawn::<PlainLeafNode>(opts)?
    };
    h.advertise(span_for(cluster, label))?;
    match peer {
        Some(p) => h.connect_peer(hub, p)?,
        None => h.connect(hub)?,
    }
    Ok((h, ev))
}

/// Reads a listen address: `HOST` or `HOST:PORT` (default port 987; port 0 lets the system
/// pick one), resolved to one socket address.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    // `Addr` refuses port 0 (nothing can be dialled there); a listener may ask for it.
    let (addr_text, any_port) = match text.strip_suffix(":0") {
        Some(host) => (format!("{host}:1"), true),
        None => (text.to_string(), false),
    };
    let a: Addr = addr_text
        .parse()
        .map_err(|e: crate::net::AddrError| e.to_string().replace(&addr_text, text))?;
    match a.resolve() {
        Ok(v) if !v.is_empty() => {
            let mut sa = v[0];
            if any_port {
                sa.set_port(0);
            }
            Ok(sa)
        }
        Ok(_) => Err(format!("'{text}' resolves to no address")),
        Err(e) => Err(e.to_string()),
    }
}

fn label_ok(r: &ArgReader<'_>, name: &str) -> Result<(), UsageError> {
    if name.is_empty() || Label::new(name).is_err() {
        return Err(r.error(format!(
            "'{name}' is not a usable label: give 1 to 63 bytes of text"
        )));
    }
    Ok(())
}

const HUB_HELP: &str = "\
dmsg hub: listen for DMSG links and relay between them (spans, transactions, debug shell)

Usage: dmsg hub [--listen ADDR] [--label NAME] [--keys DIR] [--stats INTERVAL] [-v]

Options:
  --listen ADDR        where to listen: HOST or HOST:PORT (default 0.0.0.0:987; port 0 picks
                       a free one, printed at start)
  --label NAME         the hub's name in span trees (default hub)
  --cluster NAME       the cluster the hub advertises itself in (default dmsg-cluster)
  --keys DIR           authenticated, encrypted links (Noise IK, spec/SECURE.md): the hub's
                       key pair is DIR/<label>.key (`dmsg keygen --dir DIR --name hub`); a
                       peer is admitted if its static key is in some DIR/*.pub; a peer
                       address with DIR/<ip>.none stays plaintext (e.g. DragonFly)
  --stats INTERVAL     print links, spans, relayed frames and memory to standard error this
                       often when something changed (default 10s, 0 = never)
  --no-session         do not offer the reliable session (plain DMSG only, less memory);
                       by default it is offered, and peers that do not offer it (DragonFly)
                       get plain DMSG anyway
  -v, -vv              log links coming and going (-v) and more (-vv) to standard error
  -h, --help           show this help

Runs until interrupted (Ctrl-C or SIGTERM: links are closed cleanly; twice: at once).
`dmsg tree ADDR` and `dmsg shell ADDR` talk to it.
Exit: 2 usage, 3 cannot listen.
";

const LEAF_HELP: &str = "\
dmsg leaf: connect to a hub, advertise this node, answer echo transactions

Usage: dmsg leaf --connect ADDR --label NAME [--keys DIR [--peer NAME]] [-v]

Options:
  --connect ADDR       the hub: HOST or HOST:PORT (default port 987); reconnects with
                       backoff after every loss
  --label NAME         this node's name (its span's label; its node id is derived from it)
  --cluster NAME       the cluster to advertise in (default dmsg-cluster)
  --keys DIR           authenticated, encrypted link: this leaf's key pair is
                       DIR/<label>.key (`dmsg keygen --dir DIR --name <label>`); the hub's
                       public key is DIR/<peer>.pub (DIR/<peer>.none: plaintext)
  --peer NAME          the hub's name in DIR (default: the host part of --connect)
  --no-session         do not offer the reliable session: a lost connection then ends the
                       link and its transactions (LOSTLINK) instead of being resumed
  -v, -vv              log the link's life (-v) and more (-vv) to standard error
  -h, --help           show this help

Runs until interrupted (Ctrl-C or SIGTERM closes the link cleanly); every transaction opened to this node is echoed back frame by frame.
Exit: 2 usage.
";

/// `dmsg hub ARGS`.
pub fn hub_main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let mut r = ArgReader::new("hub", args);
    let mut listen = SocketAddr::from(([0, 0, 0, 0], crate::net::DEFAULT_PORT));
    let mut label = HUB_LABEL.to_string();
    let mut cluster = "dmsg-cluster".to_string();
    let mut stats = Duration::from_secs(10);
    let mut sessions = true;
    let mut keys: Option<PathBuf> = None;
    let mut verbose = 0u8;
    let parsed: Result<(), UsageError> = (|| {
        while let Some(a) = r.next_arg() {
            match a {
                Arg::Option("-h" | "--help", _) => return Err(r.error("help")),
                Arg::Option(v @ ("-v" | "-vv" | "-vvv"), None) => {
                    verbose = verbose.saturating_add(v.len() as u8 - 1)
                }
                Arg::Option("--listen", inline) => {
                    let v = r.value("--listen", inline)?;
                    listen = parse_listen(v).map_err(|e| r.error(format!("--listen: {e}")))?;
                }
                Arg::Option("--label", inline) => {
                    label = r.value("--label", inline)?.to_string();
                    label_ok(&r, &label)?;
                }
                Arg::Option("--cluster", inline) => {
                    cluster = r.value("--cluster", inline)?.to_string();
                }
                Arg::Option("--no-session", inline) => {
                    r.no_value("--no-session", inline)?;
                    sessions = false;
                }
                Arg::Option("--keys", inline) => {
                    keys = Some(PathBuf::from(r.value("--keys", inline)?));
                }
                Arg::Option("--stats", inline) => {
                    let v = r.value("--stats", inline)?;
                    stats = parse_duration(v).map_err(|e| r.error(format!("--stats: {e}")))?;
                }
                Arg::Option(name, _) => return Err(r.error(format!("unknown option {name}"))),
                Arg::Positional(p) => {
                    return Err(r.error(format!(
                        "unexpected argument '{}'; give the address with --listen",
                        p.to_string_lossy()
                    )))
                }
            }
        }
        Ok(())
    })();
    match parsed {
        Err(e) if e.message == "help" => return print_or_usage(io, HUB_HELP),
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            return exit::USAGE;
        }
        Ok(()) => {}
    }
    crate::logging::init(verbose);
    let secure = match load_keys(keys.as_deref(), &label) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(io.stderr, "dmsg hub: --keys: {e}");
            return exit::USAGE;
        }
    };
    let keys_note = secure_note(secure.as_deref());
    let interrupt = Interrupt::install();
    let (hub, events) = match start_hub(listen, &label, uuid_of(&cluster), sessions, secure) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(io.stderr, "dmsg hub: {e}");
            return exit::NETWORK;
        }
    };
    let local = hub.local_addr().unwrap_or(listen);
    let st = hub.status().ok();
    let _ = writeln!(
        io.stdout,
        "dmsg hub: listening on {local} as '{label}' (up to {} links, {} KiB frames, sessions {}, node {:.1} MB, {keys_note}); Ctrl-C stops it",
        1024,
        hub.max_aux() / 1024,
        if sessions { "offered" } else { "off" },
        st.map_or(0.0, |s| s.node_bytes as f64 / 1e6),
    );
    let _ = io.stdout.flush();
    run_until_stopped(&hub, &events, stats, io, "hub", &interrupt);
    exit::OK
}

/// Loads `--keys DIR` for the node named `label` (its key pair is `DIR/<label>.key`).
pub fn load_keys(
    dir: Option<&std::path::Path>,
    label: &str,
) -> Result<Option<Arc<SecureSetup>>, String> {
    match dir {
        None => Ok(None),
        Some(d) => SecureSetup::load(d, label).map(|s| Some(Arc::new(s))),
    }
}

/// "encrypted (keys DIR)" or "plaintext", for start-up lines.
fn secure_note(s: Option<&SecureSetup>) -> String {
    match s {
        Some(s) => format!("encrypted, keys in {}", s.keys().path().display()),
        None => "plaintext: no --keys".into(),
    }
}

/// Stops a runtime after an interrupt, saying so.
fn stop_now(h: &NodeHandle, io: &mut Io<'_>, who: &str) {
    let links = h.status().map(|s| s.links.len()).unwrap_or(0);
    let _ = writeln!(
        io.stderr,
        "dmsg {who}: stopping: closing {links} link(s) cleanly (interrupt again to quit at once)"
    );
    h.shutdown();
}

/// Reads events until the runtime stops; prints a status line every `every` when something
/// changed.
fn run_until_stopped(
    h: &NodeHandle,
    events: &NodeEvents,
    every: Duration,
    io: &mut Io<'_>,
    who: &str,
    interrupt: &Interrupt,
) {
    let mut last_line = String::new();
    let mut next = Instant::now() + every;
    loop {
        if interrupt.raised() {
            stop_now(h, io, who);
            return;
        }
        let wait = if every.is_zero() {
            POLL
        } else {
            next.saturating_duration_since(Instant::now()).min(POLL)
        };
        match events.recv_timeout(wait) {
            Ok(NodeEvent::Stopped) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(NodeEvent::GaveUp { addr, error }) => {
                let _ = writeln!(io.stderr, "dmsg {who}: gave up on {addr}: {error}");
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
        }
        if !every.is_zero() && Instant::now() >= next {
            next = Instant::now() + every;
            if let Ok(st) = h.status() {
                let c = st.secure;
                let secure = if c.handshakes + c.failures.total() + c.half_open_refused > 0 {
                    format!(
                        ", {} secure handshakes, {} channel failures, {} refused (half-open bound)",
                        c.handshakes,
                        c.failures.total(),
                        c.half_open_refused
                    )
                } else {
                    String::new()
                };
                let line = format!(
                    "{} links, {} spans, {} frames relayed, {} redials{secure}",
                    st.links.len(),
                    st.spans,
                    st.stats.frames_relayed,
                    st.redials
                );
                if line != last_line {
                    let rss = node::rss_bytes()
                        .map(|b| format!(", rss {:.1} MB", b as f64 / 1e6))
                        .unwrap_or_default();
                    let _ = writeln!(io.stderr, "dmsg {who}: {line}{rss}");
                    last_line = line;
                }
            }
        }
    }
}

/// `dmsg leaf ARGS`.
pub fn leaf_main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let mut r = ArgReader::new("leaf", args);
    let mut connect: Option<Addr> = None;
    let mut label: Option<String> = None;
    let mut cluster = "dmsg-cluster".to_string();
    let mut sessions = true;
    let mut keys: Option<PathBuf> = None;
    let mut peer: Option<String> = None;
    let mut verbose = 0u8;
    let parsed: Result<(), UsageError> = (|| {
        while let Some(a) = r.next_arg() {
            match a {
                Arg::Option("-h" | "--help", _) => return Err(r.error("help")),
                Arg::Option(v @ ("-v" | "-vv" | "-vvv"), None) => {
                    verbose = verbose.saturating_add(v.len() as u8 - 1)
                }
                Arg::Option("--keys", inline) => {
                    keys = Some(PathBuf::from(r.value("--keys", inline)?));
                }
                Arg::Option("--peer", inline) => {
                    peer = Some(r.value("--peer", inline)?.to_string());
                }
                Arg::Option("--no-session", inline) => {
                    r.no_value("--no-session", inline)?;
                    sessions = false;
                }
                Arg::Option("--connect", inline) => {
                    let v = r.value("--connect", inline)?;
                    connect = Some(
                        v.parse()
                            .map_err(|e: crate::net::AddrError| r.error(e.to_string()))?,
                    );
                }
                Arg::Option("--label", inline) => {
                    let v = r.value("--label", inline)?.to_string();
                    label_ok(&r, &v)?;
                    label = Some(v);
                }
                Arg::Option("--cluster", inline) => {
                    cluster = r.value("--cluster", inline)?.to_string();
                }
                Arg::Option(name, _) => return Err(r.error(format!("unknown option {name}"))),
                Arg::Positional(p) => {
                    return Err(r.error(format!(
                        "unexpected argument '{}'; give the hub with --connect",
                        p.to_string_lossy()
                    )))
                }
            }
        }
        if connect.is_none() {
            return Err(r.error("no hub given: dmsg leaf --connect HOST[:PORT] --label NAME"));
        }
        if label.is_none() {
            return Err(r.error("no name given: dmsg leaf --connect HOST[:PORT] --label NAME"));
        }
        if peer.is_some() && keys.is_none() {
            return Err(r.error("--peer names the hub in the keys directory; give --keys DIR too"));
        }
        Ok(())
    })();
    match parsed {
        Err(e) if e.message == "help" => return print_or_usage(io, LEAF_HELP),
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            return exit::USAGE;
        }
        Ok(()) => {}
    }
    let (Some(hub), Some(label)) = (connect, label) else {
        return exit::USAGE;
    };
    crate::logging::init(verbose);
    let secure = match load_keys(keys.as_deref(), &label) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(io.stderr, "dmsg leaf: --keys: {e}");
            return exit::USAGE;
        }
    };
    if let Some(setup) = &secure {
        let name = peer.clone().unwrap_or_else(|| hub.host().to_string());
        if let Err(e) = setup.dial_policy(&name) {
            let _ = writeln!(io.stderr, "dmsg leaf: --keys: hub '{name}': {e}");
            return exit::USAGE;
        }
    }
    let keys_note = secure_note(secure.as_deref());
    let interrupt = Interrupt::install();
    let (h, events) = match start_leaf(
        hub.clone(),
        &label,
        uuid_of(&cluster),
        sessions,
        secure,
        peer.as_deref(),
    ) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(io.stderr, "dmsg leaf: {e}");
            return exit::NETWORK;
        }
    };
    let _ = writeln!(
        io.stdout,
        "dmsg leaf '{label}': connecting to {hub} ({keys_note}); Ctrl-C stops it"
    );
    let _ = io.stdout.flush();
    loop {
        if interrupt.raised() {
            stop_now(&h, io, "leaf");
            return exit::OK;
        }
        let ev = match events.recv_timeout(POLL) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            NodeEvent::PeerConn { conn, .. } => {
                let _ = writeln!(
                    io.stdout,
                    "dmsg leaf '{label}': linked to {hub} ('{}'); answering echo transactions",
                    conn.peer_label.as_str().unwrap_or("?")
                );
            }
            NodeEvent::LinkDown { why, .. } => {
                let _ = writeln!(io.stderr, "dmsg leaf '{label}': link to {hub} lost: {why}");
            }
            NodeEvent::LinkSuspended { .. } => {
                let _ = writeln!(
                    io.stderr,
                    "dmsg leaf '{label}': connection to {hub} lost; the session waits to resume"
                );
            }
            NodeEvent::LinkResumed { .. } => {
                let _ = writeln!(
                    io.stdout,
                    "dmsg leaf '{label}': session resumed, nothing lost"
                );
            }
            NodeEvent::Retrying { retry, .. } if retry.attempt == 1 || retry.attempt % 10 == 0 => {
                let _ = writeln!(io.stderr, "dmsg leaf '{label}': {hub}: {retry}");
            }
            NodeEvent::GaveUp { error, .. } => {
                let _ = writeln!(io.stderr, "dmsg leaf '{label}': gave up on {hub}: {error}");
                break;
            }
            NodeEvent::SecureFailed { error, .. } => {
                let _ = writeln!(
                    io.stderr,
                    "dmsg leaf '{label}': secure channel to {hub} failed: {error}"
                );
            }
            NodeEvent::Stopped => break,
            _ => {}
        }
        let _ = io.stdout.flush();
    }
    drop(h);
    exit::NETWORK
}

/// The labels the `dmsg demo` leaves take, in order.
pub const LEAF_NAMES: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// The cluster id `dmsg` uses unless told otherwise.
pub fn cluster() -> Uuid {
    default_cluster()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_the_default_port_and_port_zero() {
        assert_eq!(
            parse_listen("127.0.0.1").unwrap().port(),
            crate::net::DEFAULT_PORT
        );
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(parse_listen("localhost:0").unwrap().port(), 0);
        assert_eq!(parse_listen("[::1]:1987").unwrap().port(), 1987);
        let e = parse_listen("host:99999").unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
    }
}
