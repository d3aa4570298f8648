//! Runs the `secure_channel` fuzz target's invariants (`fuzz/src/secure_channel.rs`, the very
//! code cargo-fuzz runs) on its committed seeds and on deterministic pseudo-random inputs of
//! every mode, so stable CI exercises the receive path without libFuzzer.

#[path = "../../fuzz/src/secure_channel.rs"]
mod secure_channel;

use secure_channel::check_secure_channel;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn committed_seeds_hold_the_invariants() {
    let dir = dmsg_tests::repo_root().join("fuzz/seeds/secure_channel");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory") {
        let path = entry.unwrap().path();
        check_secure_channel(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 5, "seeds found: {n}");
}

#[test]
fn pseudo_random_inputs_of_every_mode_hold_the_invariants() {
    let seed = 0x5EC0_5EC0u64;
    let mut s = seed;
    for case in 0..600u32 {
        let len = (splitmix(&mut s) % 1500) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| splitmix(&mut s) as u8).collect();
        if data.len() >= 3 {
            data[0] = (case % 3) as u8;
            if case % 3 == 2 {
                // Mostly-zero masks, so most cases alter few bytes (or none).
                let split = usize::from(data[2]) * 16 + 3;
                for (k, b) in data.iter_mut().enumerate().skip(split.min(len)) {
                    if k % 97 != 0 {
                        *b = 0;
                    }
                }
            }
        }
        let r = std::panic::catch_unwind(|| check_secure_channel(&data));
        assert!(
            r.is_ok(),
            "seed {seed:#x}, case {case} failed (input {data:02x?})"
        );
    }
}
