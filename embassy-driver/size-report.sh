#!/usr/bin/env bash
# Size report of the firmware examples (release: opt-level "s", fat LTO, one codegen unit).
#
# Builds both boards with and without their `dmsg` feature (without it, the same firmware is
# a plain TCP client over the same network bring-up), measures them with arm-none-eabi-size,
# and prints: flash (text+data), static RAM (data+bss), and dmsg's share (with - without).
# The RP2040 leaf is also built with its `secure` feature: the crypto's own cost is the
# difference to the same leaf without it.
# The RP2040 leaf's share is checked against the budget (one link, 8 open transactions per
# side, 1 KiB max aux): PASS or FAIL is printed, and where the flash goes, by crate.
#
# Exit status: 0, unless the build fails, or SIZE_BUDGET_STRICT=1 and the budget is missed.
# Environment: FLASH_BUDGET and RAM_BUDGET (bytes) override the budget.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)
export CARGO_TARGET_DIR="$here/target"
out="$CARGO_TARGET_DIR/size-report"
mkdir -p "$out"

FLASH_BUDGET=${FLASH_BUDGET:-24576}
RAM_BUDGET=${RAM_BUDGET:-8192}

if ! command -v arm-none-eabi-size >/dev/null 2>&1; then
  echo "size-report: installing binutils-arm-none-eabi"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq binutils-arm-none-eabi >/dev/null
fi

# build EXAMPLE TRIPLE BINARY LABEL [cargo args...]
build() {
  local ex=$1 triple=$2 bin=$3 label=$4
  shift 4
  (cd "examples/$ex" && cargo build --release --quiet "$@")
  cp "$CARGO_TARGET_DIR/$triple/release/$bin" "$out/$label.elf"
}

build rp2040-w5500 thumbv6m-none-eabi dmsg-leaf-rp2040-w5500 rp2040
build rp2040-w5500 thumbv6m-none-eabi dmsg-leaf-rp2040-w5500 rp2040-plain --no-default-features
build rp2040-w5500 thumbv6m-none-eabi dmsg-leaf-rp2040-w5500 rp2040-secure --features secure
build stm32-eth thumbv7em-none-eabihf dmsg-leaf-stm32-eth stm32
build stm32-eth thumbv7em-none-eabihf dmsg-leaf-stm32-eth stm32-plain --no-default-features

# flash and static RAM of an ELF: "text+data data+bss"
sizes() {
  arm-none-eabi-size "$1" | awk 'NR == 2 { print $1 + $2, $2 + $3 }'
}

read -r rp_flash rp_ram < <(sizes "$out/rp2040.elf")
read -r rp0_flash rp0_ram < <(sizes "$out/rp2040-plain.elf")
read -r rps_flash rps_ram < <(sizes "$out/rp2040-secure.elf")
read -r st_flash st_ram < <(sizes "$out/stm32.elf")
read -r st0_flash st0_ram < <(sizes "$out/stm32-plain.elf")

echo
echo "Firmware sizes (bytes; flash = text+data, static RAM = data+bss)"
printf '%-30s %10s %12s %14s %14s\n' "board" "flash" "static RAM" "dmsg flash" "dmsg RAM"
printf '%-30s %10s %12s %14s %14s\n' "------------------------------" "----------" "------------" "--------------" "--------------"
printf '%-30s %10d %12d %14d %14d\n' "rp2040-w5500 (dmsg leaf)" "$rp_flash" "$rp_ram" $((rp_flash - rp0_flash)) $((rp_ram - rp0_ram))
printf '%-30s %10d %12d %14s %14s\n' "rp2040-w5500 (plain TCP)" "$rp0_flash" "$rp0_ram" "-" "-"
printf '%-30s %10d %12d %14d %14d\n' "rp2040-w5500 (leaf, secure)" "$rps_flash" "$rps_ram" $((rps_flash - rp0_flash)) $((rps_ram - rp0_ram))
printf '%-30s %10d %12d %14d %14d\n' "stm32-eth (dmsg leaf)" "$st_flash" "$st_ram" $((st_flash - st0_flash)) $((st_ram - st0_ram))
printf '%-30s %10d %12d %14s %14s\n' "stm32-eth (plain TCP)" "$st0_flash" "$st0_ram" "-" "-"

share_flash=$((rp_flash - rp0_flash))
share_ram=$((rp_ram - rp0_ram))
verdict() { if [ "$1" -le "$2" ]; then echo PASS; else echo FAIL; fi; }
flash_verdict=$(verdict "$share_flash" "$FLASH_BUDGET")
ram_verdict=$(verdict "$share_ram" "$RAM_BUDGET")
echo
echo "Budget, dmsg's share of the RP2040 leaf (1 link, 8 transactions, 1 KiB aux):"
printf '  flash      %6d <= %6d  %s\n' "$share_flash" "$FLASH_BUDGET" "$flash_verdict"
printf '  static RAM %6d <= %6d  %s\n' "$share_ram" "$RAM_BUDGET" "$ram_verdict"

echo
echo "Crypto feature on its own (rp2040-w5500 leaf built with and without \`secure\`:"
echo "Noise IK handshake, X25519, ChaCha20-Poly1305, BLAKE2s, the record layer and its buffers):"
printf '  flash      %6d\n' $((rps_flash - rp_flash))
printf '  static RAM %6d\n' $((rps_ram - rp_ram))

# Where dmsg's flash and RAM go, by symbol (arm-none-eabi-nm --size-sort -S), RP2040.
if command -v python3 >/dev/null 2>&1; then
  python3 - "$out/rp2040.elf" "$out/rp2040-plain.elf" <<'PY'
import collections, subprocess, sys

def syms(path):
    text, ram = collections.Counter(), collections.Counter()
    nm = subprocess.run(["arm-none-eabi-nm", "--size-sort", "-S", "-C", path],
                        capture_output=True, text=True, check=True).stdout
    for line in nm.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            kind = parts[2].lower()
            (text if kind in "tr" else ram if kind in "bd" else collections.Counter())[parts[3]] += int(parts[1], 16)
    return text, ram

def group(name):
    if "dmsg_core" in name:
        return "dmsg-core (the link: decoder, encoder, transactions)"
    if "dmsg_embassy::binding" in name or "dmsg_embassy::types" in name:
        return "dmsg-embassy binding (leaf logic, event copies)"
    if "dmsg_embassy" in name:
        return "dmsg-embassy runner (out-of-line parts)"
    if "TaskStorage" in name:
        return "async state machines (runner loop, app loop)"
    return "other (channels, smoltcp, defmt, libcore)"

(wt, wr), (pt, pr) = syms(sys.argv[1]), syms(sys.argv[2])
groups = collections.Counter()
for name in set(wt) | set(pt):
    groups[group(name)] += wt.get(name, 0) - pt.get(name, 0)
print("\nRP2040 flash added by dmsg, by symbol group (named symbols; the rest is anonymous")
print("rodata: panic locations, constants):")
for g, n in groups.most_common():
    print(f"  {n:7d}  {g}")
print("Largest dmsg symbols (flash):")
top = sorted(((wt[n] - pt.get(n, 0), n) for n in wt if "dmsg" in n), reverse=True)[:12]
for n, name in top:
    print(f"  {n:7d}  {name[:110]}")
print("Static RAM added by dmsg:")
for n, name in sorted(((wr[n] - pr.get(n, 0), n) for n in set(wr) | set(pr)), reverse=True):
    if n:
        print(f"  {n:7d}  {name[:110]}")
PY
fi

if [ "${SIZE_BUDGET_STRICT:-0}" = 1 ] && { [ "$flash_verdict" = FAIL ] || [ "$ram_verdict" = FAIL ]; }; then
  exit 1
fi
