#!/usr/bin/env bash
# A campaign of Jepsen runs with every workload and fault: `scripts/jepsen-runs.sh RUNS SECONDS
# [DIR]` runs RUNS runs of SECONDS each (seeds 1..RUNS) into DIR (default jepsen-runs/campaign-
# <unix time>), one after the other, and prints each run's summary line. Exits non-zero if any
# run was not valid.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
seconds=${2:-300}
dir=${3:-jepsen-runs/campaign-$(date +%s)}
cargo build -p cli --bin keyquorum -p jepsen
bin="${CARGO_TARGET_DIR:-target}/debug"
mkdir -p "$dir"
status=0
for seed in $(seq 1 "$runs"); do
  start=$(date +%s)
  rc=0
  "$bin/jepsen" test --time-limit "$seconds" --seed "$seed" --out "$dir/run-$seed" >"$dir/run-$seed.log" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || status=1
  line=$(grep '^summary:' "$dir/run-$seed.log" || tail -1 "$dir/run-$seed.log")
  echo "run $seed (exit $rc, $(( $(date +%s) - start )) s): $line"
done
exit "$status"
