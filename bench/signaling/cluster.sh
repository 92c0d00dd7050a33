#!/usr/bin/env bash
# Huddle's signaling in cluster mode: one node against three (see cluster.mjs).
# Needs redis-server, redis-cli, psql and a PostgreSQL server at
# postgres://postgres@127.0.0.1:5432 (or TEST_DATABASE_URL), as tests/cluster does.
#   bench/signaling/cluster.sh                      # defaults: 3 rounds, 200 toggles/s, 10 s
#   ROUNDS=5 TOGGLE_RATE=400 bench/signaling/cluster.sh
set -euo pipefail
cd "$(dirname "$0")"
(cd ../.. && cargo build --release --quiet --bin huddle)
# cluster.mjs starts the cluster with the cluster tests' harness (and its client).
for dir in ../../tests/socketio ../../tests/cluster; do
  [ -d "$dir/node_modules/socket.io-client" ] || (cd "$dir" && npm ci --no-audit --no-fund --silent)
done
ulimit -n 65536 2>/dev/null || true
HUDDLE_BIN="$(cd ../.. && pwd)/target/release/huddle" exec node cluster.mjs
