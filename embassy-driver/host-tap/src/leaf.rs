//! The leaf: the embassy-net stack on a [`TapDevice`], the `dmsg-embassy` [`Runner`] on it,
//! and a small application that speaks a line protocol on stdin/stdout (for tests and
//! people at a terminal).
//!
//! The application does what the firmware examples do: the runner echoes DBG_SHELL
//! transactions by itself, [`READ`] transactions get a (simulated) sensor reading, anything
//! else is answered NOSUPP. On top, commands read from stdin ([`Input`]) let a test send
//! shell commands to the hub and open transactions of its own, and every event is printed
//! as one line ([`Line`]).

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::Arc;

use dmsg_core::errcode::txn as errcode;
use dmsg_core::link::{ReliableMcuConnection, TxnId};
use dmsg_core::time::Duration;
use dmsg_core::wire::{Command, Flags, Uuid};
use dmsg_embassy::{BackoffConfig, Channels, Down, LeafCommand, LeafConfig, LeafEvent, Runner};
use embassy_executor::Spawner;
use embassy_futures::select::{select3, Either3};
use embassy_net::{IpEndpoint, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, NoopRawMutex};
use embassy_sync::channel::Channel;

use crate::device::{TapDevice, TapStats};

/// The application's "read a sensor" command, as in the firmware examples (protocol nibble 3
/// is unassigned by DragonFly): the answer carries a reading in ASCII.
pub const READ: Command = Command::from_parts(3, 0x001);

/// Aux bytes an application command or event carries (a host has room; the hub's shell
/// lines are at most 512 bytes).
pub const AUX: usize = 1024;
/// Depth of the command and event channels.
const DEPTH: usize = 4;
/// TCP socket buffers.
const SOCKET_BUFFER: usize = 8192;

/// The leaf's runner on this host (plain DMSG link).
pub type LeafRunner = Runner<'static, NoopRawMutex, AUX, DEPTH, DEPTH>;
/// The leaf's runner with the reliable session (resumes across reconnects when the hub
/// offers the session too).
pub type ReliableLeafRunner =
    Runner<'static, NoopRawMutex, AUX, DEPTH, DEPTH, ReliableMcuConnection>;
type LeafChannels = Channels<NoopRawMutex, AUX, DEPTH, DEPTH>;

/// Lines from stdin, handed from the reader thread to the application task.
pub type InputChannel = Channel<CriticalSectionRawMutex, Input, 8>;

/// Everything the leaf needs to know.
#[derive(Clone, Debug)]
pub struct LeafOptions {
    /// The TAP interface to attach to.
    pub tap: String,
    /// Our Ethernet address (unicast).
    pub mac: [u8; 6],
    /// Our static address and prefix, e.g. 10.77.0.2/24.
    pub address: Ipv4Cidr,
    /// The hub.
    pub hub: IpEndpoint,
    /// `peer_label` of our LNK_CONN and LNK_SPAN.
    pub peer_label: String,
    /// `pfs_label` of our LNK_SPAN.
    pub pfs_label: String,
    /// Our cluster id.
    pub peer_id: Uuid,
    /// Our node id.
    pub pfs_id: Uuid,
    /// LNK_PING after this long without sending.
    pub ping_interval: Duration,
    /// The link is dead after this long without receiving.
    pub idle_timeout: Duration,
    /// Longest TCP connect.
    pub connect_timeout: Duration,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// Seed of the stack's and the backoff's randomness.
    pub seed: u64,
    /// Offer the reliable session (`ReliableMcuConnection`): a lost connection suspends the
    /// link and the next one resumes it, when the hub offers the session too.
    pub session: bool,
    /// Run the link through the secure channel (Noise IK) with these keys.
    pub keys: Option<LeafKeys>,
}

/// The leaf's keys for the secure channel (the key files of `dmsg keygen`).
#[derive(Clone)]
pub struct LeafKeys {
    /// Our X25519 secret key.
    pub secret: [u8; 32],
    /// The hub's X25519 public key.
    pub hub: [u8; 32],
}

impl core::fmt::Debug for LeafKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LeafKeys")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

/// A command read from stdin, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// `shell TEXT`: a one-way DBG_SHELL command to the hub (its answer lines come back as
    /// [`Line::ShellReply`]).
    Shell(String),
    /// `open TAG TEXT`: a one-frame DBG_SHELL transaction (CREATE|DELETE) with aux `TEXT`;
    /// its answers are [`Line::Reply`], its end [`Line::Closed`].
    Open(u32, String),
    /// `read TAG`: a one-frame [`READ`] transaction to the hub.
    Read(u32),
    /// `stats`: print the TAP device's counters.
    Stats,
}

impl Input {
    /// Parses one line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Input> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "shell" => Some(Input::Shell(rest.to_string())),
            "open" => {
                let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(Input::Open(tag.parse().ok()?, text.to_string()))
            }
            "read" => Some(Input::Read(rest.trim().parse().ok()?)),
            "stats" => Some(Input::Stats),
            _ => None,
        }
    }
}

/// What the leaf prints, one line each (see [`Line::render`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// `up`: TCP connected, our LNK_CONN is on its way.
    Up,
    /// `peer-conn`: the hub's LNK_CONN arrived.
    PeerConn,
    /// `span-advertised`: our LNK_SPAN is out.
    SpanAdvertised,
    /// `span-failed ERR`.
    SpanFailed(String),
    /// `span-closed error=N`.
    SpanClosed(u32),
    /// `down REASON`: the connection is gone (the runner reconnects).
    Down(String),
    /// `read-answered VALUE`: a READ transaction from the hub was answered.
    ReadAnswered(String),
    /// `echoed-by-app`: an echo request reached the application (the runner's deferral
    /// queue was full) and the application answered it.
    EchoedByApp,
    /// `request-refused CMD`: a transaction we do not serve was answered NOSUPP.
    RequestRefused(String),
    /// `shell-reply TEXT`: one line of the hub's shell (DBG_SHELL|REPLY, one-way).
    ShellReply(String),
    /// `opened TAG`, `open-failed TAG ERR`.
    Opened(u32, Result<(), String>),
    /// `reply TAG TEXT`: an answer in our transaction `TAG`.
    Reply(u32, String),
    /// `closed TAG error=N`: our transaction `TAG` ended.
    Closed(u32, u32),
    /// `refused ERR`: a command was refused.
    Refused(String),
    /// `stats rx=.. rx_errors=.. tx=.. tx_dropped=..`.
    Stats(u64, u64, u64, u64),
    /// `bad-input LINE`.
    BadInput(String),
    /// `suspended REASON`: the connection is gone, the reliable session waits for the next.
    Suspended(String),
    /// `resumed outage_ms=N`: the session runs again on a new connection.
    Resumed(u64),
    /// `secure-failed ERR`: the connection's secure channel failed (the link goes down).
    SecureFailed(String),
}

impl Line {
    /// The line as printed (no newline). Text is made printable: NULs dropped, other
    /// control characters as `\xNN`.
    pub fn render(&self) -> String {
        match self {
            Line::Up => "up".into(),
            Line::PeerConn => "peer-conn".into(),
            Line::SpanAdvertised => "span-advertised".into(),
            Line::SpanFailed(e) => format!("span-failed {e}"),
            Line::SpanClosed(e) => format!("span-closed error={e}"),
            Line::Down(r) => format!("down {r}"),
            Line::SecureFailed(e) => format!("secure-failed {e}"),
            Line::ReadAnswered(v) => format!("read-answered {v}"),
            Line::EchoedByApp => "echoed-by-app".into(),
            Line::RequestRefused(c) => format!("request-refused {c}"),
            Line::ShellReply(t) => format!("shell-reply {}", printable(t.as_bytes())),
            Line::Opened(tag, Ok(())) => format!("opened {tag}"),
            Line::Opened(tag, Err(e)) => format!("open-failed {tag} {e}"),
            Line::Reply(tag, t) => format!("reply {tag} {}", printable(t.as_bytes())),
            Line::Closed(tag, e) => format!("closed {tag} error={e}"),
            Line::Refused(e) => format!("refused {e}"),
            Line::Stats(a, b, c, d) => {
                format!("stats rx={a} rx_errors={b} tx={c} tx_dropped={d}")
            }
            Line::BadInput(l) => format!("bad-input {}", printable(l.as_bytes())),
            Line::Suspended(r) => format!("suspended {r}"),
            Line::Resumed(ms) => format!("resumed outage_ms={ms}"),
        }
    }
}

/// `bytes` as one printable line: NULs and a trailing newline dropped, other control
/// characters and non-UTF-8 as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.trim_end_matches(['\0', '\n']).chars() {
        match c {
            '\0' => {}
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn emit(line: Line) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the test went away) is not the leaf's problem.
    let _ = writeln!(out, "{}", line.render());
    let _ = out.flush();
}

/// A simulated sensor: a temperature in millidegrees Celsius that drifts with time, in
/// decimal ASCII (the firmware reads the RP2040's sensor here).
fn reading() -> String {
    let t = embassy_time::Instant::now().as_millis();
    format!("{}", 21_000 + (t / 100 % 200) as i64 - 100)
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, TapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn dmsg_task(runner: &'static mut LeafRunner) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn reliable_dmsg_task(runner: &'static mut ReliableLeafRunner) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn app_task(channels: &'static LeafChannels, input: &'static InputChannel) -> ! {
    app(channels, input).await
}

/// Attaches to the TAP device, brings up the stack and spawns the network, runner and
/// application tasks on `spawner`. Lines from `input` are the application's commands.
/// Returns the TAP device's counters.
///
/// Everything is leaked: the leaf lives as long as the process.
pub fn start(
    spawner: Spawner,
    opts: &LeafOptions,
    input: &'static InputChannel,
) -> Result<Arc<TapStats>, String> {
    let device = TapDevice::open(&opts.tap, opts.mac)
        .map_err(|e| format!("cannot attach to TAP device {}: {e}", opts.tap))?;
    let stats = device.stats();
    let net_config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: opts.address,
        gateway: None,
        dns_servers: heapless::Vec::new(),
    });
    let resources: &'static mut StackResources<4> = Box::leak(Box::new(StackResources::new()));
    let (stack, net_runner) = embassy_net::new(device, net_config, resources, opts.seed);
    spawner.spawn(net_task(net_runner).map_err(|e| format!("spawn: {e:?}"))?);

    let peer_label: &'static str = Box::leak(opts.peer_label.clone().into_boxed_str());
    let pfs_label: &'static str = Box::leak(opts.pfs_label.clone().into_boxed_str());
    let config: &'static LeafConfig<'static> = Box::leak(Box::new(LeafConfig {
        pfs_label,
        peer_id: opts.peer_id,
        pfs_id: opts.pfs_id,
        echo: Some(Command::DbgShell),
        ping_interval: opts.ping_interval,
        idle_timeout: opts.idle_timeout,
        connect_timeout: opts.connect_timeout,
        backoff: opts.backoff,
        ..LeafConfig::new(opts.hub, peer_label)
    }));
    let channels: &'static LeafChannels = Box::leak(Box::new(Channels::new()));
    let rx: &'static mut [u8] = Box::leak(vec![0u8; SOCKET_BUFFER].into_boxed_slice());
    let tx: &'static mut [u8] = Box::leak(vec![0u8; SOCKET_BUFFER].into_boxed_slice());
    let seed = opts.seed as u32;
    let refused = |e| format!("leaf settings refused: {e:?}");
    let spawn_err = |e| format!("spawn: {e:?}");
    if let Some(keys) = &opts.keys {
        if opts.session {
            return Err("the secure channel does not run with --session yet".into());
        }
        let rng: &'static mut rand_core::UnwrapErr<rand_core::OsRng> =
            Box::leak(Box::new(rand_core::UnwrapErr(rand_core::OsRng)));
        let runner = LeafRunner::new(stack, config, channels, rx, tx, seed)
            .and_then(|r| {
                r.with_secure(dmsg_embassy::SecureLink {
                    local: dmsg_core::secure::Keypair::from_secret(keys.secret),
                    hub: dmsg_core::secure::PublicKey(keys.hub),
                    config: dmsg_core::secure::SecureConfig::default(),
                    rng,
                })
            })
            .map_err(refused)?;
        spawner.spawn(dmsg_task(Box::leak(Box::new(runner))).map_err(spawn_err)?);
    } else if opts.session {
        let runner =
            ReliableLeafRunner::new(stack, config, channels, rx, tx, seed).map_err(refused)?;
        spawner.spawn(reliable_dmsg_task(Box::leak(Box::new(runner))).map_err(spawn_err)?);
    } else {
        let runner = LeafRunner::new(stack, config, channels, rx, tx, seed).map_err(refused)?;
        spawner.spawn(dmsg_task(Box::leak(Box::new(runner))).map_err(spawn_err)?);
    }
    spawner.spawn(app_task(channels, input).map_err(|e| format!("spawn: {e:?}"))?);
    Ok(stats)
}

/// Reads stdin in a thread of its own and hands each line to `input` (the executor must
/// not block on a read). Ends the process when stdin closes: the test (or the terminal)
/// that drives the leaf is gone.
pub fn spawn_stdin_reader(input: &'static InputChannel, stats: Arc<TapStats>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
            let Some(cmd) = Input::parse(&line) else {
                emit(Line::BadInput(line.clone()));
                continue;
            };
            if cmd == Input::Stats {
                let (a, b, c, d) = stats.snapshot();
                emit(Line::Stats(a, b, c, d));
                continue;
            }
            let mut cmd = cmd;
            loop {
                match input.try_send(cmd) {
                    Ok(()) => break,
                    Err(embassy_sync::channel::TrySendError::Full(c)) => {
                        cmd = c;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }
        }
    });
}

fn aux_of(bytes: &[u8]) -> heapless::Vec<u8, AUX> {
    let n = bytes.len().min(AUX);
    let mut v = heapless::Vec::new();
    // Cannot fail: n <= AUX.
    let _ = v.extend_from_slice(&bytes[..n]);
    v
}

/// The application: answers the hub's requests, carries out stdin commands, prints events.
/// Commands wait in a local queue, so the application never blocks on a full command
/// channel while the runner waits for room in the event channel.
async fn app(channels: &LeafChannels, input: &InputChannel) -> ! {
    let mut queue: VecDeque<LeafCommand<AUX>> = VecDeque::new();
    // Our open transactions: handle -> tag.
    let mut tags: HashMap<TxnId, u32> = HashMap::new();
    loop {
        let next = queue.front().cloned();
        let step = select3(channels.events.receive(), input.receive(), async {
            match next {
                Some(cmd) => channels.commands.send(cmd).await,
                None => core::future::pending().await,
            }
        })
        .await;
        match step {
            Either3::First(ev) => on_event(ev, &mut queue, &mut tags),
            Either3::Second(cmd) => queue.push_back(match cmd {
                Input::Shell(text) => {
                    let mut bytes = text.into_bytes();
                    bytes.push(0);
                    LeafCommand::OneWay {
                        command: Command::DbgShell,
                        aux: aux_of(&bytes),
                        reply: false,
                        circuit: None,
                    }
                }
                Input::Open(tag, text) => LeafCommand::Open {
                    tag,
                    command: Command::DbgShell,
                    aux: aux_of(text.as_bytes()),
                    delete: true,
                    circuit: None,
                },
                Input::Read(tag) => LeafCommand::Open {
                    tag,
                    command: READ,
                    aux: heapless::Vec::new(),
                    delete: true,
                    circuit: None,
                },
                Input::Stats => continue,
            }),
            Either3::Third(()) => {
                queue.pop_front();
            }
        }
    }
}

fn on_event(
    ev: LeafEvent<AUX>,
    queue: &mut VecDeque<LeafCommand<AUX>>,
    tags: &mut HashMap<TxnId, u32>,
) {
    match ev {
        LeafEvent::Up => emit(Line::Up),
        LeafEvent::PeerConn { .. } => emit(Line::PeerConn),
        LeafEvent::ConnAnswered { .. } => {}
        LeafEvent::SpanAdvertised { .. } => emit(Line::SpanAdvertised),
        LeafEvent::SpanFailed { error } => emit(Line::SpanFailed(format!("{error:?}"))),
        LeafEvent::SpanClosed { error } => emit(Line::SpanClosed(error)),
        LeafEvent::Request { txn, msg } if msg.command == READ => {
            let value = reading();
            queue.push_back(LeafCommand::Send {
                txn,
                command: READ,
                aux: aux_of(value.as_bytes()),
                error: 0,
                delete: true,
            });
            emit(Line::ReadAnswered(value));
        }
        LeafEvent::Request { txn, msg } if msg.command == Command::DbgShell => {
            // An echo request the runner could not answer itself (no room in the reliable
            // session's window and its deferral queue full): the application echoes it; the
            // runner holds the answer until the window has room.
            queue.push_back(LeafCommand::Send {
                txn,
                command: msg.command,
                aux: msg.aux,
                error: 0,
                delete: true,
            });
            emit(Line::EchoedByApp);
        }
        LeafEvent::Request { txn, msg } => {
            queue.push_back(LeafCommand::Reply {
                txn,
                error: errcode::NOSUPP,
            });
            emit(Line::RequestRefused(format!("{:?}", msg.command)));
        }
        LeafEvent::Message { txn, msg } => {
            if let Some(&tag) = tags.get(&txn) {
                emit(Line::Reply(tag, String::from_utf8_lossy(&msg.aux).into()));
            }
        }
        LeafEvent::OneWay { msg } => {
            if msg.command == Command::DbgShell && msg.flags.contains(Flags::REPLY) {
                emit(Line::ShellReply(String::from_utf8_lossy(&msg.aux).into()));
            }
        }
        LeafEvent::Closed { txn, error, .. } => {
            if let Some(tag) = tags.remove(&txn) {
                emit(Line::Closed(tag, error));
            }
        }
        LeafEvent::OpenResult { tag, result } => match result {
            Ok(txn) => {
                tags.insert(txn, tag);
                emit(Line::Opened(tag, Ok(())));
            }
            Err(e) => emit(Line::Opened(tag, Err(format!("{e:?}")))),
        },
        LeafEvent::Refused { error, .. } => emit(Line::Refused(format!("{error:?}"))),
        LeafEvent::Suspended { reason } => emit(Line::Suspended(format!("{reason:?}"))),
        LeafEvent::Resumed { outage } => emit(Line::Resumed(outage.as_millis())),
        LeafEvent::SecureFailed(e) => emit(Line::SecureFailed(format!("{e:?}"))),
        LeafEvent::Down(d) => {
            // Every transaction was reported closed first.
            tags.clear();
            emit(Line::Down(match d {
                Down::Connect(e) => format!("connect-failed {e:?}"),
                Down::ConnectTimeout => "connect-timeout".into(),
                Down::Link(r) => format!("link-closed {r:?}"),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_parse_or_are_refused() {
        assert_eq!(
            Input::parse("shell tree\n"),
            Some(Input::Shell("tree".into()))
        );
        assert_eq!(
            Input::parse("open 7 hello world"),
            Some(Input::Open(7, "hello world".into()))
        );
        assert_eq!(Input::parse("read 3"), Some(Input::Read(3)));
        assert_eq!(Input::parse("stats"), Some(Input::Stats));
        assert_eq!(Input::parse("open x hi"), None);
        assert_eq!(Input::parse("read"), None);
        assert_eq!(Input::parse("reboot"), None);
    }

    #[test]
    fn printable_drops_nul_and_escapes_controls() {
        assert_eq!(printable(b"a\tb\n\0"), "a\\x09b");
        assert_eq!(printable(b"debug> \0"), "debug> ");
        assert_eq!(printable(&[0xff, b'x']), "\u{fffd}x");
    }

    #[test]
    fn lines_render_as_documented() {
        assert_eq!(Line::Closed(4, 0).render(), "closed 4 error=0");
        assert_eq!(
            Line::Opened(2, Err("Closed".into())).render(),
            "open-failed 2 Closed"
        );
        assert_eq!(
            Line::Stats(1, 2, 3, 4).render(),
            "stats rx=1 rx_errors=2 tx=3 tx_dropped=4"
        );
    }
}
