//! The seeded scenarios: a topology chosen by the seed converges, carries transactions,
//! goes through faults while carrying more, heals, and must converge again; the invariants
//! are checked at every quiet point.

use dmsg_core::node::Node;
use dmsg_core::time::Duration;

use super::check::{check, Checks};
use super::node::SimNode;
use super::rng::Rng;
use super::topo::Topology;
use super::world::{Sim, SimConfig};

/// The node type of the scenarios: up to 16 links (a star's hub), 256 spans, 512 relays,
/// 64 routes; 1 KiB aux, 4 KiB output queue and 64 transactions per link.
pub type SimN = Node<16, 256, 512, 64, { 8 * 64 + 1024 }, 1024, 4096, 64>;

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
    let mut rng = Rng::new(seed ^ 0x005e_ed0f_d15c);
    let topo = topology(seed, &mut rng);
    let mut sim: Sim<SimN> = Sim::new(topo, SimConfig::new(seed));
    let converged = sim
        .run_until_quiet(Duration::from_secs(60))
        .ok_or_else(|| fail(&sim, seed, "first convergence", "did not settle".into()))?;
    check(&sim, Checks::default()).map_err(|e| fail(&sim, seed, "after convergence", e))?;

    // Transactions on a quiet network.
    sim.random_txns(4);
    sim.run_until_quiet(Duration::from_secs(60))
        .ok_or_else(|| fail(&sim, seed, "quiet traffic", "did not settle".into()))?;
    check(&sim, Checks::default()).map_err(|e| fail(&sim, seed, "after quiet traffic", e))?;
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
    for _ in 0..faults {
        sim.random_txns(1 + rng.below(3));
        match rng.below(5) {
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
            _ => {
                let v = rng.below(n);
                sim.restart(v);
            }
        }
        sim.run_for(Duration::from_micros(rng.range(10_000, 2_000_000)));
    }
    sim.heal();
    sim.run_until_quiet(Duration::from_secs(120))
        .ok_or_else(|| fail(&sim, seed, "after faults", "did not settle".into()))?;
    check(&sim, Checks::default()).map_err(|e| fail(&sim, seed, "after faults", e))?;

    // And the healed network carries traffic again.
    let before = sim.txns.len();
    sim.random_txns(3);
    sim.run_until_quiet(Duration::from_secs(60))
        .ok_or_else(|| fail(&sim, seed, "final traffic", "did not settle".into()))?;
    check(&sim, Checks::default()).map_err(|e| fail(&sim, seed, "final traffic", e))?;
    if let Some(t) = sim.txns[before..].iter().find(|t| t.closed != Some(0)) {
        return Err(fail(
            &sim,
            seed,
            "final traffic",
            format!("transaction failed on a healed network: {t:?}"),
        ));
    }
    Ok(Report {
        topo: sim.topo.name.clone(),
        converged_us: converged.as_micros(),
        faults,
        txns: (sim.counters.opened, sim.counters.open_refused),
        txn_errors: sim
            .txns
            .iter()
            .filter(|t| t.closed.is_some_and(|e| e != 0))
            .count(),
    })
}

/// Runs `seeds` (or only `$SEED` when set) on a thread with room for the nodes; panics with
/// the first failure.
pub fn run_seeds(seeds: std::ops::Range<u64>) -> Vec<Report> {
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
                match run_seed(s) {
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
