#!/usr/bin/env bash
# What authorizing and recording every call costs: warm Encrypt (1 KiB, linearizable)
# throughput at 32 and 128 concurrent callers on a 3-node dev cluster (loopback, mTLS, RocksDB,
# fsync on), with authorization and the audit log on (as in production) and with both skipped.
# They can be skipped only in a build with failpoints (node::skip-authorization and
# node::skip-audit), so both sides run that one binary. The sides alternate, twice each, each on
# a fresh cluster, and the script prints every figure and the ratio of the best of each side.
# WARM=N sets the calls per point (default 20000); CONNECTIONS=N spreads the callers over N client
# connections (default 1: every caller multiplexed over one).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -p cli --bin keyquorum --features failpoints
bin="${CARGO_TARGET_DIR:-target}/debug"
exe="$bin/keyquorum-bench"
cp "$bin/keyquorum" "$exe"
warm="${WARM:-20000}"
connections="${CONNECTIONS:-1}"
work=$(mktemp -d)
dev_pid=""
cleanup() {
  if [ -n "$dev_pid" ]; then kill "$dev_pid" 2>/dev/null || true; wait "$dev_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# $1: side name, $2: FAILPOINTS, $3: round. Prints one JSON line per client count.
side() {
  local dir="$work/$1-$3"
  FAILPOINTS="$2" "$exe" dev --data-dir "$dir" --base-port 7601 > "$work/dev.log" 2>&1 &
  dev_pid=$!
  for _ in $(seq 1 120); do
    grep -q '^ready:' "$work/dev.log" && break
    kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.log"; exit 1; }
    sleep 1
  done
  grep -q '^ready:' "$work/dev.log" || { echo "the dev cluster did not come up"; cat "$work/dev.log"; exit 1; }
  for clients in 32 128; do
    FAILPOINTS= "$exe" bench --cold 0 --warm "$warm" --clients "$clients" --connections "$connections" --output json \
      --endpoints 127.0.0.1:7601,127.0.0.1:7602 \
      --tls-ca "$dir/tls/ca.pem" --tls-cert "$dir/tls/client.pem" --tls-key "$dir/tls/client.key" |
      python3 -c "import json,sys; f=json.load(sys.stdin); w=f['warm_encrypt']; print(json.dumps({'side': '$1', 'round': $3, 'clients': f['clients'], 'connections': f['connections'], 'per_second': round(w['per_second']), 'p50_ms': round(w['p50_ms'], 2), 'p99_ms': round(w['p99_ms'], 2)}))"
  done
  kill "$dev_pid"; wait "$dev_pid" 2>/dev/null || true; dev_pid=""
}

results="$work/results.jsonl"
for round in 1 2; do
  side off "node::skip-authorization=return;node::skip-audit=return" "$round" | tee -a "$results"
  side on "" "$round" | tee -a "$results"
done
python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for clients in (32, 128):
    best = {s: max(r['per_second'] for r in rows if r['side'] == s and r['clients'] == clients) for s in ('on', 'off')}
    print(f"{clients} clients: authorization + audit on {best['on']}/s, off {best['off']}/s, ratio {best['on'] / best['off']:.2f}")
EOF
