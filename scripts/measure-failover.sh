#!/usr/bin/env bash
# Time from killing a node to the first successful call of a CLI client in a given region,
# against a running `keyquorum dev --data-dir DIR --wan-latency-ms N` cluster.
#   scripts/measure-failover.sh DIR REGION_INDEX NODE_ID
# REGION_INDEX is 1 for region-a, 2 for region-b, ...; node NODE_ID is killed (kill -9)
# after 3 s of calls. Each call is a fresh `keyquorum encrypt` (process start included).
set -euo pipefail
dir=$1 i=$2 n=$3
cd "$(dirname "$0")/.."
k=target/debug/keyquorum
export KEYQUORUM_TLS_CA=$dir/tls/ca.pem KEYQUORUM_TLS_CERT=$dir/tls/admin.pem KEYQUORUM_TLS_KEY=$dir/tls/admin.key
export KEYQUORUM_ENDPOINTS=$(ls -d "$dir"/node-* | sed 's|.*node-||' | sort -n | awk '{printf "%s127.0.%d.1:%d", (NR>1?",":""), $1, 7400+$1}')
export KEYQUORUM_REGION=region-$(printf "\\x$(printf %x $((96 + i)))") KEYQUORUM_SOURCE_IP=127.0.$i.200
pid=$(pgrep -f "$dir/node-$n/config.toml" | head -1)
[ -n "$pid" ] || { echo "node $n is not running" >&2; exit 1; }
$k key create --alias "failover-$$" > /dev/null
plain=$(mktemp); echo -n probe > "$plain"
start=$(date +%s.%N) killed=""
while true; do
  if [ -z "$killed" ] && [ "$(echo "$(date +%s.%N) - $start > 3" | bc)" = 1 ]; then
    kill -9 "$pid"; killed=$(date +%s.%N); echo "killed node $n ($KEYQUORUM_REGION client)"
  fi
  if $k encrypt --key "alias/failover-$$" --in "$plain" > /dev/null 2>&1 && [ -n "$killed" ]; then
    echo "first success $(echo "$(date +%s.%N) - $killed" | bc) s after the kill"; break
  fi
done
rm -f "$plain"
