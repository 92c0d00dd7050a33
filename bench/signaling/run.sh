#!/usr/bin/env bash
# Huddle's signaling against Node socket.io 4.8, side by side (see run.mjs).
#   bench/signaling/run.sh                  # defaults: 2000 msg/s, 10 s phases, 5000 connections
#   PHASE_SECONDS=20 ECHO_RATE=4000 bench/signaling/run.sh
set -euo pipefail
cd "$(dirname "$0")"
(cd ../.. && cargo build --release --quiet --bin huddle)
[ -d node_modules/socket.io ] || npm ci --no-audit --no-fund --silent
ulimit -n 65536 2>/dev/null || true
HUDDLE_BIN="$(cd ../.. && pwd)/target/release/huddle" exec node run.mjs
