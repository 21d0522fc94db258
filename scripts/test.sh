#!/usr/bin/env bash
# The test command: set up what is missing, then format check, clippy and every test,
# including the simulator's CI range of seeds and its failpoint self-tests.
# Ends with one summary line over all test binaries: "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The simulator's and the Jepsen harness's self-tests run nodes with injected bugs (failpoints).
cargo clippy -p chaos -p jepsen --features chaos/failpoints,jepsen/failpoints --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# The criterion benchmarks, each run once (test mode): they keep compiling and working.
cargo test -p benches --benches 2>&1 | tee -a "$log" || status=$?
cargo test -p chaos --features failpoints --test failpoints 2>&1 | tee -a "$log" || status=$?
# The Jepsen self-test runs real nodes built with failpoints: `keyquorum-failpoints`, then the
# production binary back in its place.
bin="${CARGO_TARGET_DIR:-target}/debug"
cargo build -p cli --bin keyquorum --features failpoints
cp "$bin/keyquorum" "$bin/keyquorum-failpoints"
cargo build -p cli --bin keyquorum
cargo test -p jepsen --features failpoints --test failpoints 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
