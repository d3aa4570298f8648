//! Fuzz regressions and a smoke run of the fuzz invariants.
//!
//! The invariants are `fuzz/src/invariants.rs`, the very code the cargo-fuzz targets run,
//! included here so a crash replays under plain `cargo test` (no nightly, no libFuzzer).
//!
//! - Every file in `tests/data/fuzz-regressions/decode_bytes/` (a minimised `decode_bytes`
//!   crash input, added as `fuzz/README.md` describes) is replayed through the `decode_bytes`
//!   invariant. The directory only exists once the fuzzer has found something.
//! - The DragonFly captures and, when present, the spec vectors are replayed the same way
//!   under several chunkings and decoder limits, and their frames are sent again through the
//!   `roundtrip` invariant.
//! - `roundtrip` crashes (structured input) become explicit cases below, written from
//!   `cargo fuzz fmt roundtrip <crash>`.
//! - Bugs the script targets (`connection`, `session`, `node`) found in the library get a
//!   focused test here too; their crash inputs are replayed by `tests/tests/fuzz_<target>.rs`
//!   from `tests/data/fuzz-regressions/<target>/`.

#[allow(dead_code)]
#[path = "../../fuzz/src/invariants.rs"]
mod invariants;

use std::path::Path;

use dmsg_core::decode::DecoderConfig;
use dmsg_tests::{decode_stream, dragonfly_dir, repo_root};
use invariants::{check_decode_bytes, check_roundtrip, RoundtripCase};

/// `(name, bytes)` of every regular file in `dir` whose name passes `keep`, sorted.
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| keep(name) && !name.starts_with('.'))
        .map(|(name, path)| (name, std::fs::read(path).expect("readable")))
        .collect();
    out.sort();
    out
}

fn captures() -> Vec<(String, Vec<u8>)> {
    let out = files(&dragonfly_dir(), |n| n.ends_with(".bin"));
    assert!(!out.is_empty(), "no DragonFly captures");
    out
}

/// The spec vectors that exist and parse as hex (the generator may be mid-run).
fn vectors() -> Vec<(String, Vec<u8>)> {
    files(&repo_root().join("spec/vectors"), |n| n.ends_with(".hex"))
        .into_iter()
        .filter_map(|(name, text)| {
            let hex: Vec<u8> = text
                .into_iter()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes = hex
                .chunks(2)
                .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((name, bytes))
        })
        .collect()
}

/// `[split, config]` prefixes: whole, odd chunks, byte by byte, each with a different limit.
const PREFIXES: [[u8; 2]; 8] = [
    [0, 0],     // whole, 1 MiB / 32 blocks, sequence checked
    [1, 0],     // one byte at a time
    [17, 1],    // chunks of 1..=17, sequence not checked
    [200, 2],   // 4096-byte aux limit
    [64, 0x08], // 8-block header limit
    [3, 0x1E],  // 1-block header limit, no aux at all
    [5, 0x20],  // salts and CRCs recomputed first (a no-op on a good stream)
    [0, 0x21],  // the same, sequence not checked
];

fn replay(name: &str, stream: &[u8]) {
    for prefix in PREFIXES {
        let mut input = prefix.to_vec();
        input.extend_from_slice(stream);
        let r = std::panic::catch_unwind(|| check_decode_bytes(&input));
        assert!(
            r.is_ok(),
            "{name} with prefix {prefix:?} broke an invariant"
        );
    }
}

#[test]
fn fuzz_regressions_replay_clean() {
    let dir = repo_root().join("tests/data/fuzz-regressions/decode_bytes");
    for (name, input) in files(&dir, |_| true) {
        let r = std::panic::catch_unwind(|| check_decode_bytes(&input));
        assert!(r.is_ok(), "fuzz regression {name} broke an invariant");
    }
}

#[test]
fn dragonfly_captures_pass_the_decode_bytes_invariant() {
    for (name, bytes) in captures() {
        replay(&name, &bytes);
        // Truncated anywhere inside the last frame, too.
        for cut in [1, 63, 64, 65] {
            replay(&name, &bytes[..bytes.len().saturating_sub(cut)]);
        }
    }
}

#[test]
fn spec_vectors_pass_the_decode_bytes_invariant() {
    for (name, bytes) in vectors() {
        replay(&name, &bytes);
    }
}

#[test]
fn dragonfly_frames_pass_the_roundtrip_invariant() {
    for (i, (name, bytes)) in captures().into_iter().enumerate() {
        let (frames, err) = decode_stream(&bytes, bytes.len(), DecoderConfig::default());
        assert_eq!(err, None, "{name}");
        let case = RoundtripCase {
            frames: frames
                .into_iter()
                .map(|f| (f.header, f.body.expect("captures parse"), f.aux))
                .collect(),
            big_endian: i % 2 == 1,
            seed: i as u32,
            split: [0, 1, 7, 64][i % 4],
            piece: [0, 1, 13, 200][i % 4],
        };
        check_roundtrip(&case);
    }
}

/// Found by the `session` fuzz target (`tests/data/fuzz-regressions/session/
/// one-way-lost-quiet-tail`): two session links that both queued as many frames as they could
/// before the peer's LNK_CONN arrived started their sessions with their answer to that
/// LNK_CONN on top of the held frames, leaving no room in the window for the answers a
/// received frame may need. Each then refused the other's frames as busy, nothing was ever
/// acknowledged, and the link deadlocked. Held frames now leave room for that answer.
#[test]
fn session_links_that_both_filled_their_held_queue_still_exchange_everything() {
    use dmsg_core::link::{Event, LinkConfig, Outgoing, ReliableConnection, SessionOffer};
    use dmsg_core::time::{Duration, Instant};
    use dmsg_core::wire::Command;

    type L = ReliableConnection<{ 8 * 64 + 256 }, 256, 2048, 4, 8, 2048>;
    let mut now = Instant::ZERO;
    let cfg = |id| LinkConfig {
        session: Some(SessionOffer::new(id)),
        ..LinkConfig::default()
    };
    let mut ends = [
        L::new(now, &cfg(0xA), Default::default()).unwrap(),
        L::new(now, &cfg(0xB), Default::default()).unwrap(),
    ];
    // Both queue one-way messages until refused, before either hears from the other.
    let mut sent = [0usize; 2];
    for (end, sent) in ends.iter_mut().zip(&mut sent) {
        while end
            .send_one_way(
                now,
                &Outgoing::new(Command::DbgShell).with_aux(b"held"),
                false,
                None,
            )
            .is_ok()
        {
            *sent += 1;
        }
        assert!(*sent >= 2, "the held queue takes a few frames");
    }
    let mut got = [0usize; 2];
    let mut wires = [Vec::new(), Vec::new()];
    for _ in 0..200 {
        for i in 0..2 {
            let mut buf = [0u8; 1024];
            loop {
                let n = ends[i].poll_transmit(now, &mut buf);
                if n == 0 {
                    break;
                }
                wires[i].extend_from_slice(&buf[..n]);
            }
            while let Some(ev) = ends[i].poll_event() {
                if let Event::OneWay { msg } = ev {
                    assert_eq!(msg.aux, b"held");
                    got[i] += 1;
                }
            }
        }
        for i in 0..2 {
            let input = std::mem::take(&mut wires[1 - i]);
            let used = ends[i].handle_input(now, &input);
            wires[1 - i] = input[used..].to_vec();
        }
        now = now + Duration::from_millis(50);
        for end in &mut ends {
            end.handle_timeout(now);
        }
    }
    assert_eq!(
        got,
        [sent[1], sent[0]],
        "every held message reached the peer"
    );
    for end in &ends {
        assert!(end.session_running());
        assert_eq!(end.session().in_flight(), 0, "everything acknowledged");
    }
}
