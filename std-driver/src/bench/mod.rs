//! `dmsg bench`: DMSG against raw TCP over loopback, measured in the same run and printed as
//! ratios.
//!
//! The DMSG side drives core connections directly on their sockets ([`engine`]): one thread
//! per link end, batched reads and writes. That measures what the protocol engine costs on
//! top of TCP, and is the runtime design the numbers recommend. The baseline ([`raw`]) sends
//! the same payloads with a 4-byte length prefix through the same kind of socket with the
//! same batching.
//!
//! - [`options`]: the command line.
//! - [`engine`]: a core `Connection` on a `TcpStream`, batched.
//! - [`raw`]: the raw-TCP baseline.
//! - [`secure_link`]: the secure-channel variant (`dmsg+secure`) and the handshake time.
//! - [`link_kind`]: the kinds compared and the loopback socket pairs.
//! - [`throughput`]: one-way streams.
//! - [`latency`]: request/reply round trips.
//! - [`stats`]: percentiles and rounds.
//! - [`cpu`]: CPU time of a thread.
//! - [`report`]: the tables and the JSON.

pub mod cpu;
pub mod engine;
pub mod latency;
pub mod link_kind;
pub mod options;
pub mod raw;
pub mod report;
pub mod secure_link;
pub mod stats;
pub mod throughput;

use std::ffi::OsString;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use crate::cli::{print_or_usage, Io};
use crate::exit;

use link_kind::Kind;
use options::{Options, Parsed};
use report::{LatencyResult, Report, ThroughputResult};

/// Messages in the calibration round that sizes the measured rounds.
const CALIBRATION_MESSAGES: u64 = 5_000;

/// Most messages in one round (bounds the time of a round on a very fast machine).
const MAX_ROUND_MESSAGES: u64 = 100_000_000;

/// Runs `dmsg bench` with the arguments after `bench`; returns the exit code.
pub fn main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let opts = match options::parse(args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => return print_or_usage(io, options::HELP),
        Err(e) => {
            let _ = writeln!(io.stderr, "{e}");
            return exit::USAGE;
        }
    };
    let quiet = opts.quiet;
    let stderr = &mut *io.stderr;
    let mut progress = |line: &str| {
        if !quiet {
            let _ = writeln!(stderr, "bench: {line}");
        }
    };
    match run(&opts, &mut progress) {
        Ok(report) => {
            let text = if opts.json {
                report.json() + "\n"
            } else {
                report.text()
            };
            print_or_usage(io, &text)
        }
        Err(e) => {
            let _ = writeln!(
                io.stderr,
                "dmsg bench: {e} (the run stopped; check that loopback TCP works and retry)"
            );
            exit::NETWORK
        }
    }
}

/// The kinds of link a run compares.
pub fn kinds(opts: &Options) -> Vec<Kind> {
    let mut k = vec![Kind::Raw, Kind::Dmsg];
    if opts.secure {
        k.push(Kind::Secure);
    }
    if opts.session {
        k.push(Kind::Session);
    }
    k
}

/// Runs every measurement `opts` asks for; `progress` gets one line per step (on the
/// calling thread). The work runs on a thread of its own with a large stack (a link is built
/// on the stack, then boxed).
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, String> {
    let (tx, rx) = mpsc::channel::<String>();
    let opts = opts.clone();
    let worker = thread::Builder::new()
        .name("bench".into())
        .stack_size(link_kind::LINK_THREAD_STACK)
        .spawn(move || {
            run_here(&opts, &mut |line: &str| {
                let _ = tx.send(line.to_string());
            })
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    // Ends when the worker is done (its sender is dropped).
    for line in rx {
        progress(&line);
    }
    worker
        .join()
        .map_err(|_| "the benchmark thread panicked".to_string())?
}

fn run_here(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, String> {
    engine::COPY_INPUT.store(opts.copy_input, std::sync::atomic::Ordering::Relaxed);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1: {e}"))?;
    let kinds = kinds(opts);
    let mut report = Report::new(opts);
    for &size in &opts.sizes {
        report
            .throughput
            .extend(measure_throughput(opts, &kinds, &listener, size, progress)?);
    }
    for &size in &opts.latency_sizes {
        let mut turn = |kind: Kind, done: u64| {
            if done == opts.round_trips || done % 5_000 == 0 {
                progress(&format!(
                    "round trips {size} B {kind}: {done}/{}",
                    opts.round_trips
                ))
            }
        };
        for m in latency::measure(&kinds, &listener, size, opts.round_trips, &mut turn)? {
            report.latency.push(LatencyResult::new(
                size,
                m.kind,
                m.samples,
                m.cpu_ns_per_round_trip,
            ));
        }
    }
    if opts.secure && opts.handshakes > 0 {
        let samples = secure_link::handshake_times(&listener, opts.handshakes)?;
        progress(&format!("handshakes: {}", samples.len()));
        report.handshake = Some(report::HandshakeResult::new(samples));
    }
    report.finish();
    Ok(report)
}

fn measure_throughput(
    opts: &Options,
    kinds: &[Kind],
    listener: &TcpListener,
    size: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ThroughputResult>, String> {
    // Size each kind's rounds to the round time from one calibration round (not counted).
    let mut counts = Vec::new();
    for &kind in kinds {
        let n = match opts.messages {
            Some(n) => n,
            None => {
                let r = throughput::round(kind, listener, CALIBRATION_MESSAGES, size)?;
                let rate = r.messages as f64 / r.elapsed.as_secs_f64().max(1e-6);
                ((rate * opts.round_time.as_secs_f64()) as u64)
                    .clamp(CALIBRATION_MESSAGES, MAX_ROUND_MESSAGES)
            }
        };
        counts.push(n);
    }
    let mut results: Vec<ThroughputResult> = kinds
        .iter()
        .zip(&counts)
        .map(|(&kind, &n)| ThroughputResult::new(size, kind, n))
        .collect();
    for round in 1..=opts.rounds {
        for res in results.iter_mut() {
            let r = throughput::round(res.kind, listener, res.messages_per_round, size)?;
            if r.payload_bytes != r.messages * size as u64 {
                return Err(format!(
                    "{} delivered {} payload bytes for {} messages of {size} B",
                    res.kind, r.payload_bytes, r.messages
                ));
            }
            res.add(&r);
            progress(&format!(
                "one-way {size} B {} round {round}/{}: {:.3} M msg/s, {:.1} MB/s",
                res.kind,
                opts.rounds,
                res.rounds.rates.last().copied().unwrap_or(0.0) / 1e6,
                res.rounds.rates.last().copied().unwrap_or(0.0) * size as f64 / 1e6,
            ));
        }
    }
    Ok(results)
}
