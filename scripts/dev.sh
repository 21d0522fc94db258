#!/usr/bin/env bash
# The run command: set up what is missing, build, start a 3-node, 3-region dev cluster.
# Extra arguments go to `keyquorum dev` (e.g. --data-dir DIR --nodes 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -p cli
exec target/debug/keyquorum dev "$@"
