#!/usr/bin/env bash
# CI for the firmware side of dmsg-embassy: cross-builds both firmware examples in release,
# runs the size report, and runs dmsg-core on an emulated Cortex-M (QEMU, semihosting): two
# links exchanging LNK_CONN, a LNK_SPAN, transactions with aux data and a clean shutdown, plain
# and with the reliable session across a cut transport. A failed check fails CI.
# (The crate's host tests, clippy and docs run with the workspace.)
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="$(pwd)/target"
start=$(date +%s)

rustup target add thumbv6m-none-eabi thumbv7em-none-eabihf

echo "==> rp2040-w5500 (thumbv6m-none-eabi, release)"
(cd examples/rp2040-w5500 && cargo build --release)
echo "==> stm32-eth (thumbv7em-none-eabihf, release)"
(cd examples/stm32-eth && cargo build --release)
echo "==> stm32-eth with the secure feature (the rp2040 one is built by the size report)"
(cd examples/stm32-eth && cargo build --release --features secure)

echo "==> size report"
./size-report.sh

echo "==> emulated MCU: dmsg-core self-test on QEMU mps2-an385 (thumbv6m code, semihosting)"
if ! command -v qemu-system-arm >/dev/null 2>&1; then
  echo "installing qemu-system-arm"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-system-arm >/dev/null
fi
selftest_log=$(mktemp)
# The exit code is the firmware's (semihosting): non-zero on any failed check or a panic.
(cd examples/qemu-selftest && timeout 300 cargo run --release) 2>&1 | tee "$selftest_log"
summary=$(grep -E '^[0-9]+ checks passed, [0-9]+ failed$' "$selftest_log" || echo "no summary")
echo "emulated MCU self-test: $summary"

echo
echo "embassy-driver CI: $(($(date +%s) - start)) s"
