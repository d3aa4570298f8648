//! The deterministic simulation: 200 seeds (in four groups so they run in parallel), each a
//! topology of 3 to 12 nodes through convergence, traffic, faults and healing, with every
//! invariant checked at each quiet point. `SEED=<n> cargo test -p dmsg-tests --test
//! sim_seeds` reruns one seed (its failure message prints the seed and a trace).

use dmsg_tests::sim::scenario::{run_seeds, run_session_seeds};

fn group(range: std::ops::Range<u64>) {
    let reports = run_seeds(range);
    for r in &reports {
        assert!(r.converged_us > 0);
    }
}

#[test]
fn sim_seeds_000_049() {
    group(0..50);
}

#[test]
fn sim_seeds_050_099() {
    group(50..100);
}

#[test]
fn sim_seeds_100_149() {
    group(100..150);
}

#[test]
fn sim_seeds_150_199() {
    group(150..200);
}

/// The same scenarios with the reliable session on every link: transport losses and
/// partitions suspend and resume links, restarts are answered with stateless RESETs; no
/// transaction is seen twice, and none is lost in a seed without restarts.
#[test]
fn sim_session_seeds_000_019() {
    let reports = run_session_seeds(0..20);
    for r in &reports {
        assert!(r.converged_us > 0);
    }
    if std::env::var_os("SEED").is_none() {
        assert!(
            reports.iter().map(|r| r.resumes).sum::<u64>() > 0,
            "links resumed"
        );
        assert!(
            reports.iter().map(|r| r.stateless_resets).sum::<u64>() > 0,
            "restarted nodes reset old sessions"
        );
    }
}

/// More session seeds (ignored), reporting every failing seed: `SEEDS=20..500 cargo test
/// -p dmsg-tests --release --test sim_seeds sim_session_many -- --ignored --nocapture`.
#[test]
#[ignore]
fn sim_session_many() {
    let spec = std::env::var("SEEDS").unwrap_or_else(|_| "20..200".into());
    let (a, b) = spec.split_once("..").expect("SEEDS=a..b");
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    let (reports, failures) = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut reports = Vec::new();
            let mut failures = Vec::new();
            for seed in a..b {
                match dmsg_tests::sim::scenario::run_session_seed(seed) {
                    Ok(r) => reports.push(r),
                    Err(e) => failures.push(e.lines().next().unwrap_or("").to_string()),
                }
            }
            (reports, failures)
        })
        .unwrap()
        .join()
        .unwrap();
    let sum = |f: fn(&dmsg_tests::sim::scenario::Report) -> u64| reports.iter().map(f).sum::<u64>();
    println!(
        "{} seeds passed; {} transactions, {} restarts, {} resumes, {} stateless resets, {} ended with an error",
        reports.len(),
        sum(|r| r.txns.0),
        sum(|r| r.restarts),
        sum(|r| r.resumes),
        sum(|r| r.stateless_resets),
        sum(|r| r.txn_errors as u64),
    );
    for f in &failures {
        println!("FAILED {f}");
    }
    assert!(failures.is_empty(), "{} seeds failed", failures.len());
}

/// Prints what one seed did: `SEED=7 cargo test -p dmsg-tests --test sim_seeds
/// sim_report -- --ignored --nocapture`.
#[test]
#[ignore]
fn sim_report() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for r in run_seeds(seed..seed + 1) {
        println!("{r:?}");
    }
}

/// Times every seed (debug aid): `cargo test -p dmsg-tests --test sim_seeds sim_timing --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn sim_timing() {
    for s in 0..200u64 {
        let t = std::time::Instant::now();
        let r = run_seeds(s..s + 1);
        println!(
            "seed {s}: {:?} {:?}",
            t.elapsed(),
            r.first().map(|r| (&r.topo, r.faults, r.txns))
        );
    }
}

/// A line of 20 nodes: spans travel at most 17 hops (a span is relayed only while its
/// relayed distance is at most 16, and the receiver counts one more).
#[test]
fn line_of_20_stops_spans_beyond_17_hops() {
    use dmsg_core::time::Duration;
    use dmsg_tests::sim::check::{check, Checks};
    use dmsg_tests::sim::node::SimNode;
    use dmsg_tests::sim::scenario::SimN;
    use dmsg_tests::sim::topo::Topology;
    use dmsg_tests::sim::world::{addr_of, Sim, SimConfig};
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let mut sim: Sim<SimN> = Sim::new(Topology::line(20), SimConfig::new(20));
            sim.run_until_quiet(Duration::from_secs(60))
                .expect("converges");
            check(&sim, Checks::default()).unwrap();
            let end = &sim.nodes[0].node;
            assert_eq!(end.route_to(&addr_of(17)).map(|r| r.1), Some(17));
            assert_eq!(end.route_to(&addr_of(18)), None);
            assert_eq!(end.route_to(&addr_of(19)), None);
            let e = end.best_remote(&addr_of(17)).unwrap();
            assert_eq!(e.span.dist, 16, "received at the largest relayed distance");
        })
        .unwrap()
        .join()
        .unwrap();
}

/// More seeds than the normal run (ignored; release recommended):
/// `SEEDS=200..2000 cargo test -p dmsg-tests --release --test sim_seeds sim_many -- --ignored`.
#[test]
#[ignore]
fn sim_many() {
    let spec = std::env::var("SEEDS").unwrap_or_else(|_| "200..1000".into());
    let (a, b) = spec.split_once("..").expect("SEEDS=a..b");
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    let reports = run_seeds(a..b);
    let errors: usize = reports.iter().map(|r| r.txn_errors).sum();
    let opened: u64 = reports.iter().map(|r| r.txns.0).sum();
    println!(
        "{} seeds passed; {opened} transactions, {errors} ended with an error",
        reports.len()
    );
}
