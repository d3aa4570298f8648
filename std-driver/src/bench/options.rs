//! The options of `dmsg bench`.

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::{parse_duration, Arg, ArgReader, UsageError};

use super::engine::AUX_MAX;

/// Help of `dmsg bench`.
pub const HELP: &str = "\
dmsg bench: DMSG against raw TCP over loopback, in one run, printed as ratios

Usage: dmsg bench [OPTIONS]

Runs in this process, with threads on 127.0.0.1 (two cores are enough):
- one-way throughput: a stream of DMSG one-way messages (DBG_SHELL, the payload as aux
  data) against a raw-TCP stream of the same payloads with a 4-byte length prefix;
  messages/s and MB/s of payload, best round of several, the kinds taking turns;
- round trips: a DMSG transaction (CREATE|DELETE request, REPLY|DELETE answer carrying the
  same payload) against a raw-TCP ping-pong of one length-prefixed frame each way;
  p50/p99 of every round trip, the kinds taking turns in blocks of 20.
Each is also run with the reliable session on (dmsg+session) unless --no-session, and
inside the secure channel (dmsg+secure, compared with plain DMSG) unless --no-secure;
then the secure handshake is timed too (200 handshakes, 20 with --quick).
Both sides use the same batching: one write per 256 KiB of frames, one read per 256 KiB.

Options:
      --quick              a few seconds (for CI): 2 rounds of 40ms, 1000 round trips
      --sizes LIST         one-way payload sizes in bytes (default 8,64,4096; at most 65536)
      --latency-sizes LIST round-trip payload sizes (default 64,4096)
      --rounds N           throughput rounds per kind and size (default 5)
      --round-time DUR     length of a throughput round (default 400ms)
      --messages N         messages per throughput round, instead of --round-time
      --round-trips N      round trips per kind and size (default 20000)
      --no-session         leave out the reliable-session variant
      --no-secure          leave out the secure-channel variant (dmsg+secure: plain DMSG in
                           Noise IK records) and the handshake time
      --no-throughput      leave out the one-way throughput part
      --no-latency         leave out the round-trip part
      --copy-input         feed input with handle_input (payloads copied into the link)
                           instead of handle_input_lent, to see what lending saves
      --json               print the results as one JSON object instead of tables
  -q, --quiet              no progress on standard error
  -h, --help               show this help

Exit: 0 done, 2 usage, 3 a link failed during the run.
";

/// Parsed options.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// One-way payload sizes (empty: no throughput part).
    pub sizes: Vec<usize>,
    /// Round-trip payload sizes (empty: no round-trip part).
    pub latency_sizes: Vec<usize>,
    /// Throughput rounds per kind and size.
    pub rounds: u32,
    /// Length of a throughput round (the message count is calibrated to it).
    pub round_time: Duration,
    /// Fixed message count per throughput round (no calibration).
    pub messages: Option<u64>,
    /// Round trips per kind and size.
    pub round_trips: u64,
    /// Include the reliable-session variant.
    pub session: bool,
    /// Include the secure-channel variant (`dmsg+secure`) and the handshake time.
    pub secure: bool,
    /// Handshakes timed (secure variant).
    pub handshakes: usize,
    /// JSON output.
    pub json: bool,
    /// No progress output.
    pub quiet: bool,
    /// `--quick` was given.
    pub quick: bool,
    /// `--copy-input`: feed input with `handle_input` instead of `handle_input_lent`.
    pub copy_input: bool,
}

impl Options {
    /// The full run's defaults.
    pub fn full() -> Options {
        Options {
            sizes: vec![8, 64, 4096],
            latency_sizes: vec![64, 4096],
            rounds: 5,
            round_time: Duration::from_millis(400),
            messages: None,
            round_trips: 20_000,
            session: true,
            secure: true,
            handshakes: 200,
            json: false,
            quiet: false,
            quick: false,
            copy_input: false,
        }
    }

    /// The `--quick` defaults.
    pub fn quick() -> Options {
        Options {
            rounds: 2,
            round_time: Duration::from_millis(40),
            round_trips: 1_000,
            handshakes: 20,
            quick: true,
            ..Options::full()
        }
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// Run with these options.
    Run(Options),
    /// Show the help.
    Help,
}

/// Parses the arguments after `bench`. Explicit options win over `--quick` in any order.
pub fn parse(args: &[OsString]) -> Result<Parsed, UsageError> {
    let mut r = ArgReader::new("bench", args);
    let mut quick = false;
    let mut sizes = None;
    let mut latency_sizes = None;
    let mut rounds = None;
    let mut round_time = None;
    let mut messages = None;
    let mut round_trips = None;
    let (mut session, mut throughput, mut latency, mut json, mut quiet) =
        (true, true, true, false, false);
    let mut secure = true;
    let mut copy_input = false;
    while let Some(arg) = r.next_arg() {
        match arg {
            Arg::Option(name, inline) => match name {
                "-h" | "--help" => return Ok(Parsed::Help),
                "--quick" => {
                    r.no_value(name, inline)?;
                    quick = true;
                }
                "--sizes" => {
                    let v = r.value(name, inline)?;
                    sizes = Some(size_list(&r, name, v)?);
                }
                "--latency-sizes" => {
                    let v = r.value(name, inline)?;
                    latency_sizes = Some(size_list(&r, name, v)?);
                }
                "--rounds" => {
                    let v = r.value(name, inline)?;
                    let v = count(&r, name, v)?;
                    rounds = Some(u32::try_from(v).map_err(|_| r.error("--rounds is too big"))?)
                }
                "--round-time" => {
                    let v = r.value(name, inline)?;
                    let d = parse_duration(v).map_err(|e| r.error(format!("--round-time: {e}")))?;
                    if d.is_zero() {
                        return Err(r.error("--round-time must be more than zero"));
                    }
                    round_time = Some(d);
                }
                "--messages" => {
                    let v = r.value(name, inline)?;
                    messages = Some(count(&r, name, v)?);
                }
                "--round-trips" => {
                    let v = r.value(name, inline)?;
                    round_trips = Some(count(&r, name, v)?);
                }
                "--no-session" => {
                    r.no_value(name, inline)?;
                    session = false;
                }
                "--no-secure" => {
                    r.no_value(name, inline)?;
                    secure = false;
                }
                "--no-throughput" => {
                    r.no_value(name, inline)?;
                    throughput = false;
                }
                "--no-latency" => {
                    r.no_value(name, inline)?;
                    latency = false;
                }
                "--json" => {
                    r.no_value(name, inline)?;
                    json = true;
                }
                "--copy-input" => {
                    r.no_value(name, inline)?;
                    copy_input = true;
                }
                "-q" | "--quiet" => {
                    r.no_value(name, inline)?;
                    quiet = true;
                }
                _ => return Err(r.error(format!("unknown option {name}"))),
            },
            Arg::Positional(p) => {
                return Err(r.error(format!(
                    "unexpected argument '{}': bench takes options only",
                    p.to_string_lossy()
                )))
            }
        }
    }
    let mut o = if quick {
        Options::quick()
    } else {
        Options::full()
    };
    o.sizes = sizes.unwrap_or(o.sizes);
    o.latency_sizes = latency_sizes.unwrap_or(o.latency_sizes);
    o.rounds = rounds.unwrap_or(o.rounds);
    o.round_time = round_time.unwrap_or(o.round_time);
    o.messages = messages;
    o.round_trips = round_trips.unwrap_or(o.round_trips);
    o.session = session;
    o.secure = secure;
    o.json = json;
    o.quiet = quiet;
    o.copy_input = copy_input;
    if !throughput {
        o.sizes.clear();
    }
    if !latency {
        o.latency_sizes.clear();
    }
    if o.sizes.is_empty() && o.latency_sizes.is_empty() {
        return Err(r.error("nothing to measure: both parts are left out"));
    }
    Ok(Parsed::Run(o))
}

fn count(r: &ArgReader<'_>, name: &str, v: &str) -> Result<u64, UsageError> {
    match v.trim().replace('_', "").parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(r.error(format!(
            "{name} needs a whole number above zero (got '{v}')"
        ))),
    }
}

fn size_list(r: &ArgReader<'_>, name: &str, v: &str) -> Result<Vec<usize>, UsageError> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n = parse_size(part).ok_or_else(|| {
            r.error(format!(
                "{name}: '{part}' is not a size in bytes (such as 64, 4096 or 4k)"
            ))
        })?;
        if n > AUX_MAX {
            return Err(r.error(format!(
                "{name}: {n} bytes is more than the {AUX_MAX} the benchmark links accept"
            )));
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err(r.error(format!("{name} needs at least one size")));
    }
    Ok(out)
}

/// A size in bytes: a number, optionally with `k`/`K`/`KiB` (x1024).
fn parse_size(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let (num, scale) = match lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix('k'))
    {
        Some(n) => (n.to_string(), 1024),
        None => (lower.strip_suffix('b').unwrap_or(&lower).to_string(), 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Parsed, UsageError> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }

    #[test]
    fn explicit_options_win_over_quick_in_any_order() {
        let Ok(Parsed::Run(o)) = parse_strs(&["--rounds", "7", "--quick", "--sizes=8,4k"]) else {
            panic!("should parse");
        };
        assert!(o.quick);
        assert_eq!(o.rounds, 7);
        assert_eq!(o.sizes, vec![8, 4096]);
        assert_eq!(o.round_trips, Options::quick().round_trips);
    }

    #[test]
    fn bad_values_are_usage_errors_that_name_the_option() {
        for (args, needle) in [
            (&["--sizes", "x"][..], "--sizes"),
            (&["--sizes", "1000000"][..], "65536"),
            (&["--rounds", "0"][..], "--rounds"),
            (&["--round-time", "0s"][..], "--round-time"),
            (&["--frobnicate"][..], "unknown option"),
            (
                &["--no-throughput", "--no-latency"][..],
                "nothing to measure",
            ),
            (&["extra"][..], "unexpected argument"),
        ] {
            let e = parse_strs(args).unwrap_err();
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn sizes_take_k_suffixes() {
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("4KiB"), Some(4096));
        assert_eq!(parse_size("64"), Some(64));
        assert_eq!(parse_size("64B"), Some(64));
        assert_eq!(parse_size("-1"), None);
    }
}
