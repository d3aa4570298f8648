//! `dmsg bench` run as a program with tiny counts: it completes, every kind of link delivers
//! every message, and the numbers are sane (positive, finite, ordered). No timing thresholds:
//! speed claims come from the full run, not from tests.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dmsg"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run dmsg bench");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dmsg bench failed: {stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    (json, stderr)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn quick_run_with_tiny_counts_reports_every_kind_with_sane_numbers() {
    let (json, stderr) = bench(&[
        "--quick",
        "--json",
        "--sizes",
        "8,4096",
        "--latency-sizes",
        "64",
        "--rounds",
        "2",
        "--messages",
        "300",
        "--round-trips",
        "40",
    ]);
    // Progress went to standard error, one line per round and per kind of round trips.
    assert!(
        stderr.contains("bench: one-way 8 B raw round 1/2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bench: round trips 64 B dmsg+session: 40/40"),
        "{stderr}"
    );

    let tp = json["throughput"].as_array().expect("throughput list");
    assert_eq!(
        tp.len(),
        2 * 4,
        "two sizes times raw, dmsg, dmsg+secure, dmsg+session"
    );
    for t in tp {
        let size = num(t, "size");
        assert_eq!(num(t, "messages_per_round"), 300.0);
        assert_eq!(t["round_rates"].as_array().map(Vec::len), Some(2));
        let rate = num(t, "msgs_per_s");
        assert!(rate > 0.0 && rate.is_finite(), "{t}");
        assert!(
            num(t, "median_msgs_per_s") <= rate,
            "best round is at least the median: {t}"
        );
        assert!(
            (num(t, "mb_per_s") - rate * size / 1e6).abs() <= 0.01 * rate.max(1.0),
            "{t}"
        );
        // (The secure variant in a debug build can be over 1000x slower than raw TCP: its
        // ratio may print as 0.000.)
        assert!(num(t, "ratio_to_raw") >= 0.0, "{t}");
        // CPU time per message, where the kernel reports thread CPU time (its accounting
        // lags by up to a scheduler tick, so tiny rounds may read zero): never negative, and
        // the projection follows from it.
        if !t["send_cpu_ns_per_msg"].is_null() {
            let (s, r) = (num(t, "send_cpu_ns_per_msg"), num(t, "recv_cpu_ns_per_msg"));
            assert!(s >= 0.0 && r >= 0.0, "{t}");
            if s.max(r) > 0.0 {
                let bound = num(t, "cpu_bound_msgs_per_s");
                assert!((bound - 1e9 / s.max(r)).abs() <= 0.01 * bound, "{t}");
            }
        }
        // Framing overhead per message: 4 bytes raw; DMSG a 64-byte header plus the payload
        // padded to 64.
        let wire = num(t, "wire_bytes_per_msg");
        let expect = match t["kind"].as_str() {
            Some("raw") => size + 4.0,
            Some("dmsg") => 64.0 + (size / 64.0).ceil() * 64.0,
            // The session adds nothing per data frame; its acks travel the other way.
            Some("dmsg+session") => 64.0 + (size / 64.0).ceil() * 64.0,
            // Records of at most 2048 bytes, 18 bytes each of header and tag: at least that
            // share, at most one record per message (a batch of one).
            Some("dmsg+secure") => {
                let frame = 64.0 + (size / 64.0).ceil() * 64.0;
                let least = frame * (1.0 + 18.0 / 2048.0);
                let most = frame + 18.0 * (frame / 2048.0).ceil();
                assert!(
                    wire >= least - 0.01 && wire <= most + 2.0,
                    "{t}: wire {wire}"
                );
                continue;
            }
            k => panic!("unexpected kind {k:?}"),
        };
        // A keepalive or session control frame may ride along on a slow machine: allow a
        // few per round (2 B per message is 600 B per round of 300).
        assert!(
            wire >= expect - 0.01 && wire <= expect + 2.0,
            "{t}: wire {wire}, expected {expect}"
        );
    }
    let raw8 = tp
        .iter()
        .find(|t| t["kind"] == "raw" && t["size"] == 8)
        .unwrap();
    assert_eq!(num(raw8, "ratio_to_raw"), 1.0);

    let lat = json["latency"].as_array().expect("latency list");
    assert_eq!(lat.len(), 4);
    for l in lat {
        assert_eq!(num(l, "samples"), 40.0);
        let (p50, p99) = (num(l, "p50_us"), num(l, "p99_us"));
        assert!(p50 > 0.0 && p50 <= p99 && p99.is_finite(), "{l}");
        assert!(num(l, "mean_us") > 0.0, "{l}");
        if !l["cpu_ns_per_round_trip"].is_null() {
            assert!(num(l, "cpu_ns_per_round_trip") >= 0.0, "{l}");
        }
    }
    // The targets this run can check are listed with a verdict each.
    let targets = json["targets"].as_array().expect("targets list");
    // Four measured, two for the secure channel; up to two more CPU-bound projections where
    // thread CPU time was measured (tiny rounds may read none: the kernel's figure lags by
    // a tick).
    assert!((6..=8).contains(&targets.len()), "{targets:?}");
    // The secure handshake was timed.
    let hs = &json["handshake"];
    assert_eq!(num(hs, "samples"), 20.0, "{hs}");
    assert!(
        num(hs, "p50_us") > 0.0 && num(hs, "p50_us") <= num(hs, "p99_us"),
        "{hs}"
    );
    assert!(targets.iter().all(|t| t["met"].is_boolean()));
}

#[test]
fn text_output_has_both_tables_and_the_targets() {
    let out = Command::new(env!("CARGO_BIN_EXE_dmsg"))
        .args([
            "bench",
            "--quick",
            "--no-session",
            "--sizes",
            "64",
            "--latency-sizes",
            "64",
            "--messages",
            "200",
            "--round-trips",
            "20",
            "--rounds",
            "1",
            "-q",
        ])
        .output()
        .expect("run dmsg bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "--quiet prints no progress");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "one-way throughput",
        "round trips",
        "raw",
        "dmsg",
        "x raw",
        "dmsg+secure",
        "secure handshake (Noise IK, X25519)",
        "encrypted RTT 64 B, p50 vs dmsg",
        "targets",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains("dmsg+session"),
        "--no-session leaves the session out"
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_to_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_dmsg"))
        .args(["bench", "--sizes", "2M"])
        .output()
        .expect("run dmsg bench");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--sizes") && err.contains("see dmsg bench --help"),
        "{err}"
    );
}
