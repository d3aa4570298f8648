//! The results of a run, as tables or as one JSON object, with the ratios to raw TCP and the
//! project's targets.

use std::fmt::Write as _;
use std::time::Duration;

use super::link_kind::Kind;
use super::options::Options;
use super::stats::{Rounds, Samples};
use super::throughput::Round;

/// One-way throughput of one kind of link at one payload size.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputResult {
    /// Payload bytes per message.
    pub size: usize,
    /// The kind of link.
    pub kind: Kind,
    /// Messages per round.
    pub messages_per_round: u64,
    /// The rounds' rates.
    pub rounds: Rounds,
    /// Wire bytes per message (sender to receiver, all rounds).
    pub wire_per_message: f64,
    wire_total: u64,
    messages_total: u64,
    cpu_messages: u64,
    send_cpu: Duration,
    recv_cpu: Duration,
    /// Messages/s of the best round over raw TCP's (set by [`Report::finish`]).
    pub ratio: Option<f64>,
    /// CPU per message (sender plus receiver) over raw TCP's (set by [`Report::finish`]).
    pub cpu_ratio: Option<f64>,
    /// [`cpu_bound_msgs_per_s`](Self::cpu_bound_msgs_per_s) over raw TCP's (set by
    /// [`Report::finish`]).
    pub cpu_bound_ratio: Option<f64>,
}

impl ThroughputResult {
    /// No rounds yet.
    pub fn new(size: usize, kind: Kind, messages_per_round: u64) -> ThroughputResult {
        ThroughputResult {
            size,
            kind,
            messages_per_round,
            rounds: Rounds::default(),
            wire_per_message: 0.0,
            wire_total: 0,
            messages_total: 0,
            cpu_messages: 0,
            send_cpu: Duration::ZERO,
            recv_cpu: Duration::ZERO,
            ratio: None,
            cpu_ratio: None,
            cpu_bound_ratio: None,
        }
    }

    /// Adds a round.
    pub fn add(&mut self, r: &Round) {
        self.rounds.push(r.messages, r.elapsed);
        self.wire_total += r.wire_bytes;
        self.messages_total += r.messages;
        self.wire_per_message = self.wire_total as f64 / self.messages_total.max(1) as f64;
        if let (Some(send), Some(recv)) = (r.send_cpu, r.recv_cpu) {
            self.send_cpu += send;
            self.recv_cpu += recv;
            self.cpu_messages += r.messages;
        }
    }

    /// Messages per second the slower side could handle with a core to itself: 10^9 over
    /// the larger of the two CPU times per message. A projection from CPU cost, not a
    /// measurement: on a loaded machine it shows what the code costs where the measured rate
    /// shows what the machine gave it.
    pub fn cpu_bound_msgs_per_s(&self) -> Option<f64> {
        let (s, r) = self.cpu_ns_per_msg()?;
        let worst = s.max(r);
        (worst > 0.0).then(|| 1e9 / worst)
    }

    /// CPU time per message of the sending and the receiving thread, in ns (all rounds);
    /// `None` where thread CPU time is not measurable.
    pub fn cpu_ns_per_msg(&self) -> Option<(f64, f64)> {
        if self.cpu_messages == 0 {
            return None;
        }
        let per = |d: Duration| d.as_nanos() as f64 / self.cpu_messages as f64;
        Some((per(self.send_cpu), per(self.recv_cpu)))
    }

    /// Messages per second (best round).
    pub fn msgs_per_s(&self) -> f64 {
        self.rounds.best()
    }

    /// Payload MB/s (10^6 bytes) of the best round.
    pub fn mb_per_s(&self) -> f64 {
        self.msgs_per_s() * self.size as f64 / 1e6
    }

    /// Wire MB/s of the best round.
    pub fn wire_mb_per_s(&self) -> f64 {
        self.msgs_per_s() * self.wire_per_message / 1e6
    }
}

/// Round trips of one kind of link at one payload size.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyResult {
    /// Payload bytes each way.
    pub size: usize,
    /// The kind of link.
    pub kind: Kind,
    /// Round trips measured.
    pub samples: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Mean, µs.
    pub mean_us: f64,
    /// p50 over raw TCP's (set by [`Report::finish`]).
    pub p50_ratio: Option<f64>,
    /// p99 over raw TCP's (set by [`Report::finish`]).
    pub p99_ratio: Option<f64>,
    /// CPU time of client and server per round trip, ns.
    pub cpu_ns: Option<f64>,
    /// [`cpu_ns`](Self::cpu_ns) over raw TCP's (set by [`Report::finish`]).
    pub cpu_ratio: Option<f64>,
}

impl LatencyResult {
    /// The percentiles of `samples`, with the CPU time per round trip.
    pub fn new(
        size: usize,
        kind: Kind,
        mut samples: Samples,
        cpu_ns: Option<f64>,
    ) -> LatencyResult {
        LatencyResult {
            size,
            kind,
            samples: samples.len(),
            p50_us: samples.percentile_us(50.0).unwrap_or(0.0),
            p99_us: samples.percentile_us(99.0).unwrap_or(0.0),
            mean_us: samples.mean_us().unwrap_or(0.0),
            p50_ratio: None,
            p99_ratio: None,
            cpu_ns,
            cpu_ratio: None,
        }
    }
}

/// Secure handshakes on the host, timed at the initiator (loopback crossings included).
#[derive(Clone, Debug, PartialEq)]
pub struct HandshakeResult {
    /// Handshakes timed.
    pub samples: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// p99, µs.
    pub p99_us: f64,
}

impl HandshakeResult {
    /// The percentiles of `samples`.
    pub fn new(mut samples: Samples) -> HandshakeResult {
        HandshakeResult {
            samples: samples.len(),
            p50_us: samples.percentile_us(50.0).unwrap_or(0.0),
            p99_us: samples.percentile_us(99.0).unwrap_or(0.0),
        }
    }
}

/// Everything a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Rounds per throughput measurement.
    pub rounds: u32,
    /// Round trips per latency measurement.
    pub round_trips: u64,
    /// `--quick`.
    pub quick: bool,
    /// `--copy-input`.
    pub copy_input: bool,
    /// The machine's 1-minute load average at the start and the end (Linux).
    pub load: (Option<f64>, Option<f64>),
    /// Online CPUs.
    pub cpus: usize,
    /// One-way results.
    pub throughput: Vec<ThroughputResult>,
    /// Round-trip results.
    pub latency: Vec<LatencyResult>,
    /// Secure handshake times (with the secure variant).
    pub handshake: Option<HandshakeResult>,
}

/// The targets of the developers' guide, checked by [`Report::targets`].
pub mod targets {
    /// One-way 8-byte messages per second (twice zenoh's 1.9 M on these machines).
    pub const MSGS_8B: f64 = 3.8e6;
    /// DMSG MB/s over raw TCP's at 4 KiB.
    pub const MB_RATIO_4K: f64 = 0.7;
    /// 64-byte round trip p50 over raw TCP's.
    pub const RTT_P50_RATIO: f64 = 1.5;
    /// Round trip p99 over raw TCP's (issue 5).
    pub const RTT_P99_RATIO: f64 = 2.0;
    /// Encrypted DMSG MB/s over plain DMSG's at 4 KiB (issue 10).
    pub const SECURE_MB_RATIO_4K: f64 = 0.5;
    /// Encrypted 64-byte round trip p50 over plain DMSG's (issue 10).
    pub const SECURE_RTT_RATIO: f64 = 1.2;
}

fn load_average() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

impl Report {
    /// An empty report for a run with `opts`; notes the load now.
    pub fn new(opts: &Options) -> Report {
        Report {
            rounds: opts.rounds,
            round_trips: opts.round_trips,
            quick: opts.quick,
            copy_input: opts.copy_input,
            load: (load_average(), None),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            throughput: Vec::new(),
            latency: Vec::new(),
            handshake: None,
        }
    }

    /// Computes the ratios to raw TCP and notes the load at the end.
    pub fn finish(&mut self) {
        self.load.1 = load_average();
        let raw_rates: Vec<(usize, f64)> = self
            .throughput
            .iter()
            .filter(|t| t.kind == Kind::Raw)
            .map(|t| (t.size, t.msgs_per_s()))
            .collect();
        let raw_cpu: Vec<(usize, f64)> = self
            .throughput
            .iter()
            .filter(|t| t.kind == Kind::Raw)
            .filter_map(|t| t.cpu_ns_per_msg().map(|(s, r)| (t.size, s + r)))
            .collect();
        let raw_bound: Vec<(usize, f64)> = self
            .throughput
            .iter()
            .filter(|t| t.kind == Kind::Raw)
            .filter_map(|t| t.cpu_bound_msgs_per_s().map(|b| (t.size, b)))
            .collect();
        for t in &mut self.throughput {
            t.cpu_bound_ratio = match (
                t.cpu_bound_msgs_per_s(),
                raw_bound.iter().find(|(s, _)| *s == t.size),
            ) {
                (Some(b), Some(&(_, raw))) if raw > 0.0 => Some(b / raw),
                _ => None,
            };
            t.cpu_ratio = match (
                t.cpu_ns_per_msg(),
                raw_cpu.iter().find(|(s, _)| *s == t.size),
            ) {
                (Some((s, r)), Some(&(_, raw))) if raw > 0.0 => Some((s + r) / raw),
                _ => None,
            };
            t.ratio = raw_rates
                .iter()
                .find(|(s, _)| *s == t.size)
                .filter(|(_, r)| *r > 0.0)
                .map(|(_, r)| t.msgs_per_s() / r);
        }
        let raw_lat: Vec<(usize, f64, f64, Option<f64>)> = self
            .latency
            .iter()
            .filter(|l| l.kind == Kind::Raw)
            .map(|l| (l.size, l.p50_us, l.p99_us, l.cpu_ns))
            .collect();
        for l in &mut self.latency {
            if let Some(&(_, p50, p99, cpu)) = raw_lat.iter().find(|r| r.0 == l.size) {
                l.p50_ratio = (p50 > 0.0).then(|| l.p50_us / p50);
                l.p99_ratio = (p99 > 0.0).then(|| l.p99_us / p99);
                l.cpu_ratio = match (l.cpu_ns, cpu) {
                    (Some(mine), Some(raw)) if raw > 0.0 => Some(mine / raw),
                    _ => None,
                };
            }
        }
    }

    fn throughput_of(&self, size: usize, kind: Kind) -> Option<&ThroughputResult> {
        self.throughput
            .iter()
            .find(|t| t.size == size && t.kind == kind)
    }

    fn latency_of(&self, size: usize, kind: Kind) -> Option<&LatencyResult> {
        self.latency
            .iter()
            .find(|l| l.size == size && l.kind == kind)
    }

    /// The targets this run can check: (what, measured, target, met).
    pub fn targets(&self) -> Vec<(String, String, String, bool)> {
        let mut out = Vec::new();
        if let Some(t) = self.throughput_of(8, Kind::Dmsg) {
            out.push((
                "one-way 8 B, msg/s".to_string(),
                format!("{:.2} M", t.msgs_per_s() / 1e6),
                format!(">= {:.1} M (zenoh: 1.9 M)", targets::MSGS_8B / 1e6),
                t.msgs_per_s() >= targets::MSGS_8B,
            ));
        }
        if let Some(b) = self
            .throughput_of(8, Kind::Dmsg)
            .and_then(|t| t.cpu_bound_msgs_per_s())
        {
            out.push((
                "  same, CPU-bound projection".to_string(),
                format!("{:.2} M", b / 1e6),
                format!(">= {:.1} M", targets::MSGS_8B / 1e6),
                b >= targets::MSGS_8B,
            ));
        }
        if let Some(r) = self.throughput_of(4096, Kind::Dmsg).and_then(|t| t.ratio) {
            out.push((
                "one-way 4 KiB, MB/s vs raw".to_string(),
                format!("{r:.3}x"),
                format!(">= {:.1}x (zenoh: 0.32x)", targets::MB_RATIO_4K),
                r >= targets::MB_RATIO_4K,
            ));
        }
        if let Some(r) = self
            .throughput_of(4096, Kind::Dmsg)
            .and_then(|t| t.cpu_bound_ratio)
        {
            out.push((
                "  same, CPU-bound projection".to_string(),
                format!("{r:.3}x"),
                format!(">= {:.1}x", targets::MB_RATIO_4K),
                r >= targets::MB_RATIO_4K,
            ));
        }
        if let Some(l) = self.latency_of(64, Kind::Dmsg) {
            if let Some(r) = l.p50_ratio {
                out.push((
                    "round trip 64 B, p50 vs raw".to_string(),
                    format!("{r:.3}x"),
                    format!("<= {:.1}x (zenoh: 4x)", targets::RTT_P50_RATIO),
                    r <= targets::RTT_P50_RATIO,
                ));
            }
            if let Some(r) = l.p99_ratio {
                out.push((
                    "round trip 64 B, p99 vs raw".to_string(),
                    format!("{r:.3}x"),
                    format!("<= {:.1}x", targets::RTT_P99_RATIO),
                    r <= targets::RTT_P99_RATIO,
                ));
            }
        }
        if let Some(r) = self.secure_mb_ratio(4096) {
            out.push((
                "encrypted 4 KiB, MB/s vs dmsg".to_string(),
                format!("{r:.3}x"),
                format!(">= {:.1}x", targets::SECURE_MB_RATIO_4K),
                r >= targets::SECURE_MB_RATIO_4K,
            ));
        }
        if let Some(r) = self.secure_rtt_ratio(64) {
            out.push((
                "encrypted RTT 64 B, p50 vs dmsg".to_string(),
                format!("{r:.3}x"),
                format!("<= {:.1}x", targets::SECURE_RTT_RATIO),
                r <= targets::SECURE_RTT_RATIO,
            ));
        }
        out
    }

    /// `dmsg+secure` messages/s over plain DMSG's at `size`, in this run.
    pub fn secure_mb_ratio(&self, size: usize) -> Option<f64> {
        let s = self.throughput_of(size, Kind::Secure)?.msgs_per_s();
        let p = self.throughput_of(size, Kind::Dmsg)?.msgs_per_s();
        (p > 0.0).then(|| s / p)
    }

    /// `dmsg+secure` round-trip p50 over plain DMSG's at `size`, in this run.
    pub fn secure_rtt_ratio(&self, size: usize) -> Option<f64> {
        let s = self.latency_of(size, Kind::Secure)?.p50_us;
        let p = self.latency_of(size, Kind::Dmsg)?.p50_us;
        (p > 0.0).then(|| s / p)
    }

    /// The tables.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let load = |l: Option<f64>| l.map_or("unknown".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "dmsg bench{}{}: loopback TCP, one process, {} CPUs, load average {} at start, {} at end",
            if self.quick { " --quick" } else { "" },
            if self.copy_input { " --copy-input" } else { "" },
            self.cpus,
            load(self.load.0),
            load(self.load.1)
        );
        if !self.throughput.is_empty() {
            let _ = writeln!(
                s,
                "\none-way throughput: DMSG one-way DBG_SHELL messages (payload = aux) vs raw TCP \
                 (4-byte length + payload);\nbest of {} rounds, kinds in turns; MB/s = payload \
                 bytes / 10^6 per second;\nsend/recv ns = CPU time per message of the sending/receiving thread (all rounds), \
                 CPU x raw = their sum over raw TCP's;\nCPU-bound/s = 10^9 / the larger of the two (the rate if each side had a core to itself: a \
                 projection, not a measurement)",
                self.rounds
            );
            let _ = writeln!(
                s,
                "{:>6}  {:<13} {:>12} {:>9} {:>7} {:>7}   {:>8} {:>8} {:>9} {:>12} {:>8}",
                "size",
                "kind",
                "msg/s",
                "MB/s",
                "wire B",
                "x raw",
                "send ns",
                "recv ns",
                "CPU x raw",
                "CPU-bound/s",
                "x raw"
            );
            for t in &self.throughput {
                let (send, recv) = match t.cpu_ns_per_msg() {
                    Some((s, r)) => (format!("{s:.0}"), format!("{r:.0}")),
                    None => ("-".into(), "-".into()),
                };
                let _ = writeln!(
                    s,
                    "{:>6}  {:<13} {:>12.0} {:>9.1} {:>7.0} {:>7}   {:>8} {:>8} {:>9} {:>12} {:>8}",
                    t.size,
                    t.kind.name(),
                    t.msgs_per_s(),
                    t.mb_per_s(),
                    t.wire_per_message,
                    t.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    send,
                    recv,
                    t.cpu_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    t.cpu_bound_msgs_per_s()
                        .map_or("-".into(), |r| format!("{r:.0}")),
                    t.cpu_bound_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                );
            }
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "\nround trips: DMSG transaction (CREATE|DELETE request, REPLY|DELETE answer with the \
                 same payload)\nvs raw TCP ping-pong; {} per kind, kinds in turns of {}; CPU us = client + server CPU time per round trip",
                self.round_trips,
                super::latency::BLOCK
            );
            let _ = writeln!(
                s,
                "{:>6}  {:<13} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
                "size",
                "kind",
                "p50 us",
                "p99 us",
                "mean us",
                "p50 x raw",
                "p99 x raw",
                "CPU us",
                "CPU x raw"
            );
            for l in &self.latency {
                let _ = writeln!(
                    s,
                    "{:>6}  {:<13} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>10} {:>9} {:>9}",
                    l.size,
                    l.kind.name(),
                    l.p50_us,
                    l.p99_us,
                    l.mean_us,
                    l.p50_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    l.p99_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                    l.cpu_ns.map_or("-".into(), |c| format!("{:.1}", c / 1e3)),
                    l.cpu_ratio.map_or("-".into(), |r| format!("{r:.2}")),
                );
            }
        }
        if let Some(h) = &self.handshake {
            let _ = writeln!(
                s,
                "\nsecure handshake (Noise IK, X25519): p50 {:.1} us, p99 {:.1} us over {} \
                 handshakes on fresh loopback connections (initiator's view, two crossings)",
                h.p50_us, h.p99_us, h.samples
            );
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(s, "\ntargets:");
            for (what, got, want, met) in targets {
                let _ = writeln!(
                    s,
                    "  {what:<30} {got:>9}  target {want:<26} {}",
                    if met { "met" } else { "NOT met" }
                );
            }
        }
        s
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"quick\":{},\"copy_input\":{},\"cpus\":{},\"load_start\":{},\"load_end\":{},\"rounds\":{},\"round_trips\":{}",
            self.quick,
            self.copy_input,
            self.cpus,
            num(self.load.0),
            num(self.load.1),
            self.rounds,
            self.round_trips
        );
        s.push_str(",\"throughput\":[");
        for (i, t) in self.throughput.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let rates: Vec<String> = t.rounds.rates.iter().map(|&r| num(Some(r))).collect();
            let _ = write!(
                s,
                "{{\"size\":{},\"kind\":\"{}\",\"messages_per_round\":{},\"msgs_per_s\":{},\
                 \"median_msgs_per_s\":{},\"mb_per_s\":{},\"wire_bytes_per_msg\":{},\
                 \"wire_mb_per_s\":{},\"ratio_to_raw\":{},\"send_cpu_ns_per_msg\":{},\
                 \"recv_cpu_ns_per_msg\":{},\"cpu_ratio_to_raw\":{},\"cpu_bound_msgs_per_s\":{},\
                 \"cpu_bound_ratio_to_raw\":{},\"round_rates\":[{}]}}",
                t.size,
                t.kind.name(),
                t.messages_per_round,
                num(Some(t.msgs_per_s())),
                num(Some(t.rounds.median())),
                num(Some(t.mb_per_s())),
                num(Some(t.wire_per_message)),
                num(Some(t.wire_mb_per_s())),
                num(t.ratio),
                num(t.cpu_ns_per_msg().map(|c| c.0)),
                num(t.cpu_ns_per_msg().map(|c| c.1)),
                num(t.cpu_ratio),
                num(t.cpu_bound_msgs_per_s()),
                num(t.cpu_bound_ratio),
                rates.join(",")
            );
        }
        s.push_str("],\"latency\":[");
        for (i, l) in self.latency.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"size\":{},\"kind\":\"{}\",\"samples\":{},\"p50_us\":{},\"p99_us\":{},\
                 \"mean_us\":{},\"p50_ratio_to_raw\":{},\"p99_ratio_to_raw\":{},\
                 \"cpu_ns_per_round_trip\":{},\"cpu_ratio_to_raw\":{}}}",
                l.size,
                l.kind.name(),
                l.samples,
                num(Some(l.p50_us)),
                num(Some(l.p99_us)),
                num(Some(l.mean_us)),
                num(l.p50_ratio),
                num(l.p99_ratio),
                num(l.cpu_ns),
                num(l.cpu_ratio)
            );
        }
        s.push_str("],\"handshake\":");
        match &self.handshake {
            Some(h) => {
                let _ = write!(
                    s,
                    "{{\"samples\":{},\"p50_us\":{},\"p99_us\":{}}}",
                    h.samples,
                    num(Some(h.p50_us)),
                    num(Some(h.p99_us))
                );
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"targets\":[");
        for (i, (what, got, want, met)) in self.targets().into_iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let o = crate::json::Object::new()
                .str("what", &what)
                .str("measured", &got)
                .str("target", &want)
                .bool("met", met);
            s.push_str(&o.finish());
        }
        s.push_str("]}");
        s
    }
}

/// A JSON number (three decimals), or `null` for none or a non-finite value.
fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".to_string(),
    }
}
