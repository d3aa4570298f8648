//! Runs the `connection` fuzz target's invariants (`fuzz/src/connection.rs`, the very code
//! cargo-fuzz runs) on deterministic pseudo-random scripts and on every saved regression input
//! in `tests/data/fuzz-regressions/connection/`.

#[path = "../../fuzz/src/connection.rs"]
mod connection;

use connection::check_connection;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_scripts_keep_every_connection_invariant() {
    let cases = if cfg!(miri) { 4 } else { 3000 };
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00d3_5eed);
    for case in 0..cases {
        let mut state = seed ^ (case as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let len = (xorshift(&mut state) % 600) as usize;
        let script: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
        let result = std::panic::catch_unwind(|| check_connection(&script));
        if result.is_err() {
            panic!("connection invariant broke: SEED={seed} case {case}, script {script:02x?}");
        }
    }
}

#[test]
fn saved_regressions_replay() {
    let dir = dmsg_tests::repo_root().join("tests/data/fuzz-regressions/connection");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let data = std::fs::read(e.path()).unwrap();
        check_connection(&data);
    }
}
