//! The scale run (ignored in the normal test run; run it in release):
//! `cargo test -p dmsg-tests --release --test sim_scale -- --ignored scale --nocapture`.
//! Random connected meshes of 100 to 1,000 nodes (degree at most 4), no faults: virtual
//! time to converge, messages per node, memory per node, and every invariant checked.

use dmsg_core::node::Node;
use dmsg_tests::sim::scale::{run_scale, ScaleReport};

/// Node types sized for each run. With at most 4 links, a node holds at most 2 spans per
/// origin per link (8 per origin) and relays at most 2 per origin per link, and each link
/// carries at most 2 per origin each way: SPANS and RELAYS of 8 x n, TXNS of 2 x n plus
/// headroom for relays closing while their replacements open.
type N100 = Node<4, 1024, 1280, 4, { 8 * 64 + 256 }, 256, 8192, 320>;
type N200 = Node<4, 2048, 2560, 4, { 8 * 64 + 256 }, 256, 8192, 640>;
type N500 = Node<4, 4096, 6144, 4, { 8 * 64 + 256 }, 256, 8192, 1280>;
type N1000 = Node<4, 8192, 12288, 4, { 8 * 64 + 256 }, 256, 8192, 2560>;

fn print(r: &ScaleReport) {
    println!(
        "n={:5} edges={:5} maxdeg={} converge={:6} ms  frames/node={:8.0}  bytes/node={:10.0}  spans/node={:7.0}  spans_max={:6} relays_max={:6} link_txns_max={:5}  node={:9} B  used_max={:9} B  wall={:6.1} s",
        r.n,
        r.edges,
        r.max_degree,
        r.converge_ms,
        r.frames_per_node,
        r.bytes_per_node,
        r.spans_per_node,
        r.spans_max,
        r.relays_max,
        r.link_txns_max,
        r.node_bytes,
        r.used_bytes_max,
        r.wall_s
    );
}

fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
#[ignore]
fn scale() {
    let sizes: Vec<usize> = std::env::var("SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 200, 500, 1000]);
    for n in sizes {
        let r = on_big_stack(move || match n {
            0..=100 => run_scale::<N100>(n, 4, 1),
            101..=200 => run_scale::<N200>(n, 4, 1),
            201..=500 => run_scale::<N500>(n, 4, 1),
            _ => run_scale::<N1000>(n, 4, 1),
        });
        print(&r);
    }
}
