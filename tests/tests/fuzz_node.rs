//! Runs the `node` fuzz target's invariants (`fuzz/src/node.rs`, the very code cargo-fuzz
//! runs) on deterministic pseudo-random scripts and on every saved regression input in
//! `tests/data/fuzz-regressions/node/`.

#[path = "../../fuzz/src/node.rs"]
mod node;

use node::{check_node, NodeRun};

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_scripts_keep_every_node_invariant() {
    let cases = if cfg!(miri) { 1 } else { 300 };
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00d0_de5e);
    let mut total = NodeRun::default();
    for case in 0..cases {
        let mut state = seed ^ (case as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let len = (xorshift(&mut state) % 800) as usize;
        let script: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
        match std::panic::catch_unwind(|| check_node(&script)) {
            Ok(run) => {
                total.spans_accepted += run.spans_accepted;
                total.relays_opened += run.relays_opened;
                total.routes_relayed += run.routes_relayed;
                total.closed += run.closed;
            }
            Err(_) => {
                panic!("node invariant broke: SEED={seed} case {case}, script {script:02x?}")
            }
        }
    }
    eprintln!("SEED={seed}: {cases} scripts, {total:?}");
    if !cfg!(miri) {
        // The scripts reach the paths the invariants are about.
        assert!(total.spans_accepted > 0, "no span accepted: {total:?}");
        assert!(total.relays_opened > 0, "no relay: {total:?}");
        assert!(total.routes_relayed > 0, "no routed transaction: {total:?}");
        assert!(total.closed > 0, "no transaction closed: {total:?}");
    }
}

#[test]
fn saved_regressions_replay() {
    let dir = dmsg_tests::repo_root().join("tests/data/fuzz-regressions/node");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let data = std::fs::read(e.path()).unwrap();
        let _ = check_node(&data);
    }
}

#[test]
fn committed_seeds_replay() {
    let dir = dmsg_tests::repo_root().join("fuzz/seeds/node");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("fuzz/seeds/node").flatten() {
        let data = std::fs::read(e.path()).unwrap();
        let _ = check_node(&data);
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds in {}", dir.display());
}
