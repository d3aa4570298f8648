//! `dmsg-tap-leaf`: the dmsg-embassy leaf on a TAP device.
//!
//! ```text
//! dmsg-tap-leaf --tap TAP --address 10.77.0.2/24 --hub 10.77.0.1:987 [options]
//! ```
//!
//! Options: `--label NAME` (peer label), `--pfs-label NAME`, `--cluster HEX32`, `--node HEX32`
//! (peer_id and pfs_id as 32 hex digits), `--mac 02:..`, `--ping-ms N`, `--idle-ms N`,
//! `--connect-ms N`, `--backoff-ms INITIAL,MAX`, `--seed N`, `--session` (offer the reliable
//! session: `ReliableMcuConnection`, resumed across reconnects when the hub offers it too).
//! `--key SECRET_FILE --hub-key PUB_FILE`: run the link through the secure channel (Noise IK)
//! with our `dmsg keygen` secret key and the hub's public key (OS RNG for the handshakes).
//!
//! Commands on stdin and the lines printed on stdout: see `dmsg_embassy_tap::leaf`. Logs go
//! to stderr (`RUST_LOG`-style level in `DMSG_LOG`: error, warn, info, debug, trace).
//! The process ends when stdin closes.

use std::str::FromStr;

use dmsg_core::time::Duration;
use dmsg_core::wire::Uuid;
use dmsg_embassy::BackoffConfig;
use dmsg_embassy_tap::leaf::{self, InputChannel, LeafKeys, LeafOptions};
use embassy_executor::Spawner;
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};

const USAGE: &str = "usage: dmsg-tap-leaf --tap TAP --address A.B.C.D/N --hub A.B.C.D:PORT \
[--label NAME] [--pfs-label NAME] [--cluster HEX32] [--node HEX32] [--mac XX:..] \
[--ping-ms N] [--idle-ms N] [--connect-ms N] [--backoff-ms INITIAL,MAX] [--seed N] [--session] \
[--key SECRET_FILE --hub-key PUB_FILE]";

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(format!("not 32 hex digits: {s}"));
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| format!("not hex: {s}"))?;
    }
    Ok(Uuid(out))
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("not a MAC address: {s}"));
    }
    let mut out = [0u8; 6];
    for (b, p) in out.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("not a MAC address: {s}"))?;
    }
    Ok(out)
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    let (addr, len) = s.split_once('/').ok_or(format!("not A.B.C.D/N: {s}"))?;
    let addr = Ipv4Address::from_str(addr).map_err(|_| format!("bad address: {s}"))?;
    let len: u8 = len.parse().map_err(|_| format!("bad prefix: {s}"))?;
    if len > 32 {
        return Err(format!("bad prefix: {s}"));
    }
    Ok(Ipv4Cidr::new(addr, len))
}

fn parse_endpoint(s: &str) -> Result<IpEndpoint, String> {
    let sa = std::net::SocketAddrV4::from_str(s).map_err(|_| format!("not A.B.C.D:PORT: {s}"))?;
    Ok(IpEndpoint::new(IpAddress::Ipv4(*sa.ip()), sa.port()))
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("not a number of milliseconds: {s}"))
}

fn parse_args(args: &[String]) -> Result<LeafOptions, String> {
    let mut tap = None;
    let mut address = None;
    let mut hub = None;
    let mut opts = LeafOptions {
        tap: String::new(),
        mac: [0x02, 0x00, 0x00, 0x00, 0x00, 0x02],
        address: Ipv4Cidr::new(Ipv4Address::UNSPECIFIED, 0),
        hub: IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::UNSPECIFIED), 0),
        peer_label: "tap-leaf".into(),
        pfs_label: "tap-sensor".into(),
        peer_id: Uuid([0x5a; 16]),
        pfs_id: Uuid([0x01; 16]),
        ping_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        backoff: BackoffConfig::new(0),
        seed: u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15,
        session: false,
        keys: None,
    };
    let (mut key, mut hub_key) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--tap" => tap = Some(value()?.clone()),
            "--address" => address = Some(parse_cidr(value()?)?),
            "--hub" => hub = Some(parse_endpoint(value()?)?),
            "--label" => opts.peer_label = value()?.clone(),
            "--pfs-label" => opts.pfs_label = value()?.clone(),
            "--cluster" => opts.peer_id = parse_uuid(value()?)?,
            "--node" => opts.pfs_id = parse_uuid(value()?)?,
            "--mac" => opts.mac = parse_mac(value()?)?,
            "--ping-ms" => opts.ping_interval = parse_ms(value()?)?,
            "--idle-ms" => opts.idle_timeout = parse_ms(value()?)?,
            "--connect-ms" => opts.connect_timeout = parse_ms(value()?)?,
            "--backoff-ms" => {
                let v = value()?;
                let (a, b) = v.split_once(',').ok_or(format!("not INITIAL,MAX: {v}"))?;
                opts.backoff.initial = parse_ms(a)?;
                opts.backoff.max = parse_ms(b)?;
            }
            "--seed" => {
                let v = value()?;
                opts.seed = v.parse().map_err(|_| format!("not a number: {v}"))?;
            }
            "--session" => opts.session = true,
            "--key" => key = Some(read_key(value()?, "dmsg-x25519-secret")?),
            "--hub-key" => hub_key = Some(read_key(value()?, "dmsg-x25519-pub")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    opts.tap = tap.ok_or("--tap is required")?;
    opts.address = address.ok_or("--address is required")?;
    opts.hub = hub.ok_or("--hub is required")?;
    opts.keys = match (key, hub_key) {
        (Some(secret), Some(hub)) => Some(LeafKeys { secret, hub }),
        (None, None) => None,
        _ => return Err("--key and --hub-key go together".into()),
    };
    Ok(opts)
}

/// The key of a `dmsg keygen` key file: the line `TAG <64 hex digits> [comment]`.
fn read_key(path: &str, tag: &str) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tag))
        .ok_or(format!("{path}: no `{tag}` line"))?;
    let hex = line.split_whitespace().nth(1).unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{path}: the key must be 64 hex digits"));
    }
    Ok(dmsg_embassy::secure::key_from_hex(hex))
}

/// A minimal `log` backend: `LEVEL target: message` on stderr.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }
    fn flush(&self) {}
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("dmsg-tap-leaf: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let level = std::env::var("DMSG_LOG")
        .ok()
        .and_then(|l| log::LevelFilter::from_str(&l).ok())
        .unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
    let input: &'static InputChannel = Box::leak(Box::new(InputChannel::new()));
    match leaf::start(spawner, &opts, input) {
        Ok(stats) => leaf::spawn_stdin_reader(input, stats),
        Err(e) => {
            eprintln!("dmsg-tap-leaf: {e}");
            std::process::exit(1);
        }
    }
}
