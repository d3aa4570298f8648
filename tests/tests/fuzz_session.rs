//! Runs the `session` fuzz target's invariants (`fuzz/src/session.rs`, the very code
//! cargo-fuzz runs) on deterministic pseudo-random fault schedules and on every saved
//! regression input in `tests/data/fuzz-regressions/session/`.

#[path = "../../fuzz/src/session.rs"]
mod session;

use session::{check_session, SessionRun};

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_fault_schedules_keep_every_session_invariant() {
    let cases = if cfg!(miri) { 2 } else { 400 };
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_5510);
    let mut total = SessionRun::default();
    for case in 0..cases {
        let mut state = seed ^ (case as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let len = (xorshift(&mut state) % 800) as usize;
        let script: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
        match std::panic::catch_unwind(|| check_session(&script)) {
            Ok(run) => {
                total.delivered += run.delivered;
                total.sessions += run.sessions;
                total.resumes += run.resumes;
                total.deaths += run.deaths;
                total.clean += run.clean;
            }
            Err(_) => {
                panic!("session invariant broke: SEED={seed} case {case}, script {script:02x?}")
            }
        }
    }
    eprintln!("SEED={seed}: {cases} schedules, {total:?}");
    if !cfg!(miri) {
        // The schedules reach the paths the invariants are about.
        assert!(total.delivered > 0, "nothing delivered: {total:?}");
        assert!(total.resumes > 0, "no resume: {total:?}");
        assert!(total.deaths > 0, "no session died: {total:?}");
        assert!(total.clean > 0, "no clean close: {total:?}");
    }
}

#[test]
fn saved_regressions_replay() {
    let dir = dmsg_tests::repo_root().join("tests/data/fuzz-regressions/session");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let data = std::fs::read(e.path()).unwrap();
        let _ = check_session(&data);
    }
}

#[test]
fn committed_seeds_replay() {
    let dir = dmsg_tests::repo_root().join("fuzz/seeds/session");
    let mut n = 0;
    for e in std::fs::read_dir(&dir)
        .expect("fuzz/seeds/session")
        .flatten()
    {
        let data = std::fs::read(e.path()).unwrap();
        let _ = check_session(&data);
        n += 1;
    }
    assert!(n >= 5, "only {n} seeds in {}", dir.display());
}
