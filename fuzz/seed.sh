#!/bin/sh
# Builds a seed corpus for the fuzz targets.
#
#   fuzz/seed.sh [OUT]            # default OUT: fuzz/corpus (git-ignored working corpus)
#
# Writes OUT/decode_bytes/ and OUT/roundtrip/ from
#   - tests/data/dragonfly/*.bin   (byte streams captured from DragonFly's C daemon), and
#   - spec/vectors/*.hex           (golden vectors, if present; hex -> binary),
# and copies the committed seeds of the script-driven targets (fuzz/seeds/session/,
# fuzz/seeds/node/, ...: hand-written scripts and picked corpus entries, see
# fuzz/README.md) to OUT/<target>/ as they are.
# A decode_bytes input is [split byte, config byte, stream...] (fuzz/src/invariants.rs); each
# stream becomes two seeds: prefix 00 00 (whole input, 1 MiB aux, 32 blocks, sequence checked)
# and, as NAME.fixup, 07 20 (chunks of 1..=7 bytes, salts and CRCs recomputed before decoding,
# so mutations get past the CRC checks). roundtrip seeds are the raw streams (arbitrary input;
# only a starting point for the mutator).
#
# Environment:
#   SEED_CAPTURES  space-separated capture names (without .bin) to use instead of all of them
#   SEED_VECTORS   0 to leave the spec vectors out
#
# The committed fuzz/seeds/ is
#   SEED_VECTORS=0 SEED_CAPTURES="03_plain_span_conn0_to_service 03_plain_span_conn1_from_service \
#     11_plain_shell_conn0_from_service 21_hostile_txn_b_to_service 21_hostile_txn_d_to_service" \
#     fuzz/seed.sh fuzz/seeds
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/fuzz/corpus"}
mkdir -p "$out/decode_bytes" "$out/roundtrip"

hex_to_bin() {
    if command -v xxd >/dev/null 2>&1; then
        tr -d ' \t\r\n' <"$1" | xxd -r -p
    else
        python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read()))' "$1"
    fi
}

add() { # add NAME FILE_WITH_STREAM
    printf '\000\000' | cat - "$2" >"$out/decode_bytes/$1"
    printf '\007\040' | cat - "$2" >"$out/decode_bytes/$1.fixup"
    cat "$2" >"$out/roundtrip/$1"
}

n=0
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

if [ -n "${SEED_CAPTURES:-}" ]; then
    for name in $SEED_CAPTURES; do
        add "dragonfly-$name" "$root/tests/data/dragonfly/$name.bin"
        n=$((n + 1))
    done
else
    for f in "$root"/tests/data/dragonfly/*.bin; do
        [ -e "$f" ] || continue
        add "dragonfly-$(basename "$f" .bin)" "$f"
        n=$((n + 1))
    done
fi

if [ "${SEED_VECTORS:-1}" != 0 ]; then
    for f in "$root"/spec/vectors/*.hex; do
        [ -e "$f" ] || continue
        if hex_to_bin "$f" >"$tmp" 2>/dev/null && [ -s "$tmp" ]; then
            add "vector-$(basename "$f" .hex)" "$tmp"
            n=$((n + 1))
        else
            echo "seed.sh: skipping $f (not hex)" >&2
        fi
    done
fi

m=0
for d in "$root"/fuzz/seeds/*/; do
    t=$(basename "$d")
    case "$t" in decode_bytes | roundtrip) continue ;; esac
    mkdir -p "$out/$t"
    if [ -n "$(ls -A "$d")" ] && [ "$(cd "$d" && pwd)" != "$(cd "$out/$t" && pwd)" ]; then
        cp "$d"* "$out/$t/"
        m=$((m + $(find "$d" -type f | wc -l)))
    fi
done

echo "seed.sh: $n seeds per codec target and $m script seeds in $out"
