#!/usr/bin/env bash
# CI for the firmware side of dmsg-embassy: cross-builds both firmware examples in release and
# runs the size report. (The crate's host tests, clippy and docs run with the workspace.)
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="$(pwd)/target"
start=$(date +%s)

rustup target add thumbv6m-none-eabi thumbv7em-none-eabihf

echo "==> rp2040-w5500 (thumbv6m-none-eabi, release)"
(cd examples/rp2040-w5500 && cargo build --release)
echo "==> stm32-eth (thumbv7em-none-eabihf, release)"
(cd examples/stm32-eth && cargo build --release)

echo "==> size report"
./size-report.sh

echo
echo "embassy-driver CI: $(($(date +%s) - start)) s"
