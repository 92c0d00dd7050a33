#!/usr/bin/env bash
# Soak: a release huddle driven on 127.0.0.1 for a bounded time (see soak.mjs).
#   bench/soak/run.sh                          # the documented long run: 600 s
#   bench/soak/run.sh --seconds 60             # the short one CI's test makes
#   RATE_LIMIT_REST_PER_USER=100 bench/soak/run.sh     # RATE_LIMIT_* go to the server
#   SOAK_SERVER_ENV="LOG_LEVEL=debug CONNECTION_TIMEOUT=5" bench/soak/run.sh --server-env MAX_CALL_PARTICIPANTS=8
#   HUDDLE_BIN=target/debug/huddle bench/soak/run.sh --seconds 60   # any other build, unbuilt
# Every other argument goes to soak.mjs (--rate, --rooms, --sample, --json FILE,
# --log FILE, --no-turn, --rss-check/--no-rss-check). Exit: 0 every target met,
# 1 a target missed, 2 the run could not be made.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ -z "${HUDDLE_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet -p huddle)
  HUDDLE_BIN="$root/target/release/huddle"
fi
HUDDLE_BIN="$(realpath "$HUDDLE_BIN")"
if [ ! -d "$here/node_modules/@roamhq/wrtc" ] || [ ! -d "$here/node_modules/socket.io-client" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --silent)
fi
ulimit -n 65536 2>/dev/null || true
export HUDDLE_BIN
cd "$here"
# soak.mjs stops the server it started on its every way out; should Node itself die
# hard (a crash in native code), the server it left is stopped here.
SOAK_PID_FILE="$(mktemp)"
export SOAK_PID_FILE
cleanup() {
  local pid
  pid="$(cat "$SOAK_PID_FILE" 2>/dev/null || true)"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = huddle ]; then
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$SOAK_PID_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
node soak.mjs "$@"
