#!/usr/bin/env bash
# Fuzzing step for CI: fuzz/ci.sh (from any directory).
#
# Installs cargo-fuzz if absent, builds the seed corpus (fuzz/seed.sh) into a temporary
# directory, runs every target for FUZZ_SECONDS seconds and prints one line per target:
#   fuzz <target>: <N> execs, <M> exec/s, <K> crashes
# Exits non-zero if any target crashed (panic, leak, timeout, OOM) or failed to run; the
# inputs that did it are copied to fuzz/artifacts/<target>/ (for CI to upload) and the end of
# libFuzzer's log is printed.
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_TARGETS    space-separated targets (default: all of `cargo fuzz list`)
#   FUZZ_TOOLCHAIN  toolchain for cargo-fuzz (default nightly)
#   FUZZ_SANITIZER  none (default: dmsg-core is #![forbid(unsafe_code)], and without ASan
#                   the run is about 2x faster), or address
#   FUZZ_JOBS       parallel libFuzzer workers per target (default 1)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
seconds=${FUZZ_SECONDS:-60}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-none}
jobs=${FUZZ_JOBS:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$toolchain" --profile minimal
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/seed.sh" "$work/corpus"

# cargo-fuzz expects to run in the project root, with the fuzz crate in ./fuzz.
cd "$root"
cargo +"$toolchain" fuzz build -s "$sanitizer"
targets=${FUZZ_TARGETS:-$(cargo +"$toolchain" fuzz list)}

status=0
for t in $targets; do
    log="$work/$t.log"
    art="$work/artifacts/$t"
    mkdir -p "$art" "$work/corpus/$t"
    extra=()
    if [ "$jobs" -gt 1 ]; then
        extra=(-jobs="$jobs" -workers="$jobs")
    fi
    set +e
    cargo +"$toolchain" fuzz run -s "$sanitizer" "$t" "$work/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 \
        -print_final_stats=1 -artifact_prefix="$art/" "${extra[@]}" \
        >"$log" 2>&1
    rc=$?
    set -e
    if [ "$jobs" -gt 1 ]; then
        # Workers log to fuzz-<n>.log in the current directory.
        cat fuzz-*.log >>"$log" 2>/dev/null || true
        rm -f fuzz-*.log
    fi
    # libFuzzer's final lines: "Done N runs in S second(s)" and, with -print_final_stats,
    # "stat::number_of_executed_units: N" / "stat::average_exec_per_sec: M" (summed over
    # workers when there are several).
    execs=$(awk '/^stat::number_of_executed_units:/ { n += $2; f = 1 } END { if (f) print n }' "$log")
    if [ -z "$execs" ]; then
        execs=$(awk '/^Done [0-9]+ runs in/ { n += $2; f = 1 } END { if (f) print n }' "$log")
    fi
    rate=$(awk '/^stat::average_exec_per_sec:/ { n += $2 } END { print n + 0 }' "$log")
    if [ "$rate" -eq 0 ]; then
        # Run shorter than a second (e.g. an early crash): "Done N runs in S second(s)", else
        # the last status line's "exec/s: M".
        rate=$(awk '/^Done [0-9]+ runs in/ && $6 > 0 { r += $2 / $6 }
                    / exec\/s: [0-9]+/ { for (i = 1; i < NF; i++) if ($i == "exec/s:") last = $(i + 1) }
                    END { printf "%d", (r > 0 ? r : last + 0) }' "$log")
    fi
    crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    line="fuzz $t: ${execs:-0} execs, ${rate:-0} exec/s, $crashes crashes"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        echo "---- $t failed (exit $rc); last lines of libFuzzer's log:" >&2
        tail -n 60 "$log" >&2
        if [ "$crashes" -ne 0 ]; then
            mkdir -p "$here/artifacts/$t"
            cp "$art"/* "$here/artifacts/$t/"
            echo "---- inputs saved in fuzz/artifacts/$t/:" >&2
            ls -l "$here/artifacts/$t" >&2
            echo "reproduce: cargo +$toolchain fuzz run -s $sanitizer $t fuzz/artifacts/$t/<file>" >&2
        fi
    fi
    echo "$line"
done

exit "$status"
