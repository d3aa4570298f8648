//! The seeded scenarios: a topology chosen by the seed converges, carries transactions,
//! goes through faults while carrying more, heals, and must converge again; the invariants
//! are checked at every quiet point.

use dmsg_core::crc::DefaultCrc;
use dmsg_core::link::Reliable;
use dmsg_core::node::Node;
use dmsg_core::time::Duration;

use super::check::{check, check_secure, Checks};
use super::node::SimNode;
use super::rng::Rng;
use super::topo::Topology;
use super::world::{Sim, SimConfig};

/// The node type of the scenarios: up to 16 links (a star's hub), 256 spans, 512 relays,
/// 64 routes; 1 KiB aux, 4 KiB output queue and 64 transactions per link.
pub type SimN = Node<16, 256, 512, 64, { 8 * 64 + 1024 }, 1024, 4096, 64>;

/// [`SimN`] with the reliable session on its links (a 32-frame, 16 KiB retransmit window
/// each).
pub type SimRN = Node<
    16,
    256,
    512,
    64,
    { 8 * 64 + 1024 },
    1024,
    4096,
    64,
    DefaultCrc,
    Reliable<DefaultCrc, 32, 16384, 0, 0>,
>;

/// What a seed did.
#[derive(Clone, Debug)]
pub struct Report {
    /// Topology.
    pub topo: String,
    /// Virtual time of the first convergence, microseconds.
    pub converged_us: u64,
    /// Faults injected.
    pub faults: usize,
    /// Transactions opened / refused.
    pub txns: (u64, u64),
    /// Transactions that ended with an error (route lost).
    pub txn_errors: usize,
    /// Node restarts among the faults.
    pub restarts: u64,
    /// Sessions: suspended links resumed over a new transport.
    pub resumes: u64,
    /// Sessions: RESUMEs answered with a stateless RESET (the peer had restarted).
    pub stateless_resets: u64,
    /// Encryption: secure handshakes completed.
    pub handshakes: u64,
    /// Encryption: ciphertext bytes altered in flight.
    pub corruptions: u64,
    /// Encryption: dials with an unknown key.
    pub impostors: u64,
    /// Encryption: transports ended by a secure channel error.
    pub secure_failures: u64,
}

/// The topology of a seed: 3 to 12 nodes of one of five shapes.
pub fn topology(seed: u64, rng: &mut Rng) -> Topology {
    let n = 3 + rng.below(10);
    match seed % 5 {
        0 => Topology::line(n),
        1 => Topology::ring(n),
        2 => Topology::star(n),
        3 => Topology::mesh(n, rng.below(n), rng),
        _ => Topology::two_level(2 + rng.below(2), 1 + rng.below(3), rng),
    }
}

fn fail<N: SimNode>(sim: &Sim<N>, seed: u64, what: &str, err: String) -> String {
    format!(
        "SEED={seed} ({}) {what}: {err}\n--- last actions ---\n{}",
        sim.topo.name,
        sim.trace()
    )
}

/// Runs one seed; `Err` describes the first broken invariant (with the seed and a trace).
pub fn run_seed(seed: u64) -> Result<Report, String> {
    scenario::<SimN>(seed, SimConfig::new(seed)).map(|(r, _)| r)
}

/// [`run_seed`] with every transport encrypted (`super::secure`): the same invariants,
/// plus the secure ones ([`check_secure`]) at every quiet point, with two more faults: a
/// ciphertext byte altered in flight (the link must end with a typed error and the nodes
/// recover through the normal link-down path), and a dial with a key nobody knows (refused).
pub fn run_secure_seed(seed: u64) -> Result<Report, String> {
    scenario::<SimN>(seed, SimConfig::new(seed).encrypted()).map(|(r, _)| r)
}

/// Runs one seed with the reliable session on every link ([`SimRN`]): the same scenario,
/// where a lost link or a partition only suspends the links of an edge until it is
/// dialled again (resume), and a restarted node answers the RESUMEs of its old sessions
/// with a stateless RESET. Besides every invariant of [`run_seed`]: no transaction is seen
/// twice (opened, answered or closed), and in a seed without restarts every transaction
/// completes with error 0: transport loss no longer loses anything.
pub fn run_session_seed(seed: u64) -> Result<Report, String> {
    session_scenario(seed, SimConfig::with_sessions(seed))
}

/// [`run_session_seed`] with every transport encrypted: a corrupted or refused transport
/// suspends the links of its edge, which resume over a new encrypted transport without
/// losing or duplicating a transaction.
pub fn run_secure_session_seed(seed: u64) -> Result<Report, String> {
    session_scenario(seed, SimConfig::with_sessions(seed).encrypted())
}

fn session_scenario(seed: u64, cfg: SimConfig) -> Result<Report, String> {
    let (report, sim) = scenario::<SimRN>(seed, cfg)?;
    let err = |what: String| Err(fail(&sim, seed, "sessions", what));
    if sim.counters.unknown_closes != 0 {
        return err(format!(
            "{} duplicate Closed events",
            sim.counters.unknown_closes
        ));
    }
    for (i, t) in sim.txns.iter().enumerate() {
        if t.answers > 1 || t.delivered > 1 {
            return err(format!("txn {i} seen twice: {t:?}"));
        }
        if t.closed == Some(0) && (t.answers != 1 || t.delivered != 1) {
            return err(format!("txn {i} closed without its exchange: {t:?}"));
        }
        if report.restarts == 0 && t.closed != Some(0) {
            return err(format!("txn {i} lost without a restart: {t:?}"));
        }
    }
    if report.restarts == 0 && sim.counters.node_closes > 0 {
        // Only a session's death takes a link down on its own, and without a restart none
        // dies (outages are shorter than the grace period).
        return err(format!(
            "{} links went down without a restart",
            sim.counters.node_closes
        ));
    }
    Ok(report)
}

/// Every invariant of a quiet world: [`check`], and with encryption [`check_secure`].
fn check_all<N: SimNode>(sim: &Sim<N>) -> Result<(), String> {
    check(sim, Checks::default())?;
    if sim.cfg.secure {
        check_secure(sim)?;
    }
    Ok(())
}

/// Alters a ciphertext byte in flight: lets traffic flow in small steps until some
/// encrypted connection has bytes in flight (keepalives guarantee some within seconds).
fn corrupt<N: SimNode>(sim: &mut Sim<N>, rng: &mut Rng) {
    for _ in 0..2000 {
        sim.run_for(Duration::from_micros(rng.range(100, 5_000)));
        if sim.corrupt_in_flight() {
            return;
        }
    }
}

/// The scenario of a seed on nodes of type `N`.
fn scenario<N: SimNode>(seed: u64, cfg: SimConfig) -> Result<(Report, Sim<N>), String> {
    let mut rng = Rng::new(seed ^ 0x005e_ed0f_d15c);
    let topo = topology(seed, &mut rng);
    let mut sim: Sim<N> = Sim::new(topo, cfg);
    let converged = sim
        .run_until_quiet(Duration::from_secs(60))
        .ok_or_else(|| {
            fail(
                &sim,
                seed,
                "first convergence",
                format!("did not settle: {}", sim.idle_report()),
            )
        })?;
    check_all(&sim).map_err(|e| fail(&sim, seed, "after convergence", e))?;

    // Transactions on a quiet network.
    sim.random_txns(4);
    sim.run_until_quiet(Duration::from_secs(60))
        .ok_or_else(|| {
            fail(
                &sim,
                seed,
                "quiet traffic",
                format!("did not settle: {}", sim.idle_report()),
            )
        })?;
    check_all(&sim).map_err(|e| fail(&sim, seed, "after quiet traffic", e))?;
    if let Some(t) = sim.txns.iter().find(|t| t.closed != Some(0)) {
        return Err(fail(
            &sim,
            seed,
            "quiet traffic",
            format!("transaction failed without faults: {t:?}"),
        ));
    }

    // Faults while traffic flows.
    let n = sim.nodes.len();
    let faults = 2 + rng.below(6);
    // With encryption, three more kinds: two ways to corrupt a byte in flight, an impostor.
    let kinds = if sim.cfg.secure { 8 } else { 5 };
    for _ in 0..faults {
        sim.random_txns(1 + rng.below(3));
        match rng.below(kinds) {
            0 | 1 => {
                let e = rng.below(sim.edges.len());
                sim.lose_link(e);
            }
            2 => {
                // Partition: a random non-empty proper subset, healed below.
                let mut side: Vec<usize> = (0..n).filter(|_| rng.chance(0.4)).collect();
                if side.is_empty() {
                    side.push(rng.below(n));
                }
                if side.len() < n {
                    sim.partition(&side);
                    sim.run_for(Duration::from_micros(rng.range(100_000, 3_000_000)));
                    sim.heal();
                }
            }
            3 => {
                // Swizzle-clog: clog a random subset one by one, unclog in the same order.
                let mut edges: Vec<usize> = (0..sim.edges.len()).collect();
                rng.shuffle(&mut edges);
                edges.truncate(1 + rng.below(edges.len()));
                let k = edges.len() as u64;
                for (j, &e) in edges.iter().enumerate() {
                    // Later clogs start later and last as long: they end in order. All end
                    // well before the 10 s idle timeout.
                    sim.clog(e, Duration::from_millis(2000 + 100 * (k - j as u64)));
                    sim.random_txns(rng.below(2));
                    sim.run_for(Duration::from_millis(100));
                }
            }
            4 => {
                let v = rng.below(n);
                sim.restart(v);
            }
            5 | 6 => corrupt(&mut sim, &mut rng),
            _ => {
                let e = rng.below(sim.edges.len());
                sim.impostor_dial(e);
            }
        }
        sim.run_for(Duration::from_micros(rng.range(10_000, 2_000_000)));
    }
    if sim.cfg.secure && sim.counters.corruptions == 0 {
        // Every encrypted seed corrupts at least one link.
        sim.random_txns(2);
        corrupt(&mut sim, &mut rng);
        sim.run_for(Duration::from_micros(rng.range(10_000, 2_000_000)));
    }
    sim.heal();
    sim.run_until_quiet(Duration::from_secs(120))
        .ok_or_else(|| {
            fail(
                &sim,
                seed,
                "after faults",
                format!("did not settle: {}", sim.idle_report()),
            )
        })?;
    check_all(&sim).map_err(|e| fail(&sim, seed, "after faults", e))?;

    // And the healed network carries traffic again.
    let before = sim.txns.len();
    sim.random_txns(3);
    sim.run_until_quiet(Duration::from_secs(60))
        .ok_or_else(|| {
            fail(
                &sim,
                seed,
                "final traffic",
                format!("did not settle: {}", sim.idle_report()),
            )
        })?;
    check_all(&sim).map_err(|e| fail(&sim, seed, "final traffic", e))?;
    if let Some(t) = sim.txns[before..].iter().find(|t| t.closed != Some(0)) {
        return Err(fail(
            &sim,
            seed,
            "final traffic",
            format!("transaction failed on a healed network: {t:?}"),
        ));
    }
    let report = Report {
        topo: sim.topo.name.clone(),
        converged_us: converged.as_micros(),
        faults,
        txns: (sim.counters.opened, sim.counters.open_refused),
        txn_errors: sim
            .txns
            .iter()
            .filter(|t| t.closed.is_some_and(|e| e != 0))
            .count(),
        restarts: sim.counters.restarts,
        resumes: sim.counters.resumes_routed,
        stateless_resets: sim.counters.stateless_resets,
        handshakes: sim.counters.secure_handshakes,
        corruptions: sim.counters.corruptions,
        impostors: sim.counters.impostors,
        secure_failures: sim.counters.secure_failures,
    };
    Ok((report, sim))
}

/// Runs `seeds` (or only `$SEED` when set) on a thread with room for the nodes; panics with
/// the first failure.
pub fn run_seeds(seeds: std::ops::Range<u64>) -> Vec<Report> {
    run_seeds_with(seeds, run_seed)
}

/// [`run_seeds`] with the reliable session on ([`run_session_seed`]).
pub fn run_session_seeds(seeds: std::ops::Range<u64>) -> Vec<Report> {
    run_seeds_with(seeds, run_session_seed)
}

/// [`run_seeds`] with encryption on ([`run_secure_seed`]).
pub fn run_secure_seeds(seeds: std::ops::Range<u64>) -> Vec<Report> {
    run_seeds_with(seeds, run_secure_seed)
}

/// [`run_seeds`] with sessions and encryption on ([`run_secure_session_seed`]).
pub fn run_secure_session_seeds(seeds: std::ops::Range<u64>) -> Vec<Report> {
    run_seeds_with(seeds, run_secure_session_seed)
}

fn run_seeds_with(
    seeds: std::ops::Range<u64>,
    run: fn(u64) -> Result<Report, String>,
) -> Vec<Report> {
    let seeds: Vec<u64> = match std::env::var("SEED") {
        Ok(s) => {
            let s = s.trim();
            let v = s
                .strip_prefix("0x")
                .map(|h| u64::from_str_radix(h, 16))
                .unwrap_or_else(|| s.parse())
                .expect("SEED must be a number");
            if seeds.contains(&v) {
                vec![v]
            } else {
                Vec::new()
            }
        }
        Err(_) => seeds.collect(),
    };
    let handle = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut out = Vec::new();
            for s in seeds {
                match run(s) {
                    Ok(r) => out.push(r),
                    Err(e) => panic!("{e}"),
                }
            }
            out
        })
        .expect("spawn");
    match handle.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}
