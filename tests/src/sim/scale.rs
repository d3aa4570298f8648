//! The scale run: one random connected mesh of `n` nodes, no faults, run until quiet; how
//! long it took in virtual time, how many messages each node sent, and how much memory a
//! node needs.

use dmsg_core::time::Duration;

use super::check::{check, Checks};
use super::node::SimNode;
use super::rng::Rng;
use super::topo::Topology;
use super::world::{Sim, SimConfig};

/// What one scale run measured.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// Nodes.
    pub n: usize,
    /// Edges and largest degree.
    pub edges: usize,
    /// Largest degree.
    pub max_degree: usize,
    /// Virtual time from start to the last change of any span or relay, milliseconds.
    pub converge_ms: u64,
    /// Frames sent per node (mean) until quiet.
    pub frames_per_node: f64,
    /// Bytes sent per node (mean) until quiet.
    pub bytes_per_node: f64,
    /// LNK_SPANs accepted per node (mean).
    pub spans_per_node: f64,
    /// Most spans any node held.
    pub spans_max: u64,
    /// Most relays any node held.
    pub relays_max: u64,
    /// Most open transactions on any one link (both tables).
    pub link_txns_max: usize,
    /// `size_of` the node type (its fixed capacity, what a node costs).
    pub node_bytes: usize,
    /// What the largest node actually used of its tables: spans x 470 + relays x 120 +
    /// open transactions x 40 (bytes).
    pub used_bytes_max: u64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
}

/// Runs one mesh of `n` nodes (degree at most `max_deg`, `n / 4` extra edges) until
/// quiet and checks every invariant.
pub fn run_scale<N: SimNode>(n: usize, max_deg: usize, seed: u64) -> ScaleReport {
    let t0 = std::time::Instant::now();
    let mut rng = Rng::new(seed);
    let topo = Topology::bounded_mesh(n, n / 4, max_deg, &mut rng);
    let (edges, max_degree) = (topo.edges.len(), topo.max_degree());
    let mut cfg = SimConfig::new(seed);
    cfg.trace = 0;
    let mut sim: Sim<N> = Sim::new(topo, cfg);
    let last = sim
        .run_until_quiet_step(Duration::from_secs(600), Duration::from_millis(10))
        .unwrap_or_else(|| panic!("n={n} seed={seed}: did not converge"));
    if let Err(e) = check(&sim, Checks::default()) {
        panic!("n={n} seed={seed}: {}", &e[..e.len().min(2000)]);
    }
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut spans = 0u64;
    let mut spans_max = 0;
    let mut relays_max = 0;
    let mut link_txns_max = 0;
    let mut used_max = 0;
    for s in &sim.nodes {
        let node = &s.node;
        let st = node.stats();
        spans += st.spans_accepted;
        spans_max = spans_max.max(st.spans_high_water);
        relays_max = relays_max.max(st.relays_high_water);
        let mut txns = 0;
        for l in node.link_ids() {
            if let Some(ls) = node.link_stats(l) {
                frames += ls.frames_out;
                bytes += ls.bytes_out;
            }
            let t = node.link_open_txns(l, dmsg_core::link::Side::Ours)
                + node.link_open_txns(l, dmsg_core::link::Side::Theirs);
            link_txns_max = link_txns_max.max(t);
            txns += t as u64;
        }
        let used = st.spans_high_water * 470 + st.relays_high_water * 120 + txns * 40;
        used_max = used_max.max(used);
    }
    ScaleReport {
        n,
        edges,
        max_degree,
        converge_ms: last.as_micros() / 1000,
        frames_per_node: frames as f64 / n as f64,
        bytes_per_node: bytes as f64 / n as f64,
        spans_per_node: spans as f64 / n as f64,
        spans_max,
        relays_max,
        link_txns_max,
        node_bytes: N::size_bytes(),
        used_bytes_max: used_max,
        wall_s: t0.elapsed().as_secs_f64(),
    }
}
