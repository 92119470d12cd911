#!/usr/bin/env bash
# Portkey and Raven alternated on fresh processes, same wrk load, to read their RPS ratio through
# this machine's drift (its speed moves by ±15 % within a minute, so one run of each can mislead):
#   bash ../shared/bench/setup_peers.sh wrk bench portkey     # once: wrk and Portkey under /tmp
#   bash bench/alternate.sh [rounds] [seconds]                # default 3 rounds, 10 s, c=64
# Each round: Portkey, then Raven (credit-limited key, as `make bench`), each on CPU 0 with a 4 s
# warm-up; the fake upstream and wrk on CPU 1. Prints one line per round with both RPS and the ratio.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SHARED="${RAVEN_SHARED:-$ROOT/../shared}/bench"
RAVEN="$ROOT/.venv/bin/raven"
PORTKEY_DIR="${PORTKEY_DIR:-/tmp/portkey}"
ROUNDS="${1:-3}" SECS="${2:-10}"
DATA="$(mktemp -d /tmp/raven-alternate.XXXXXX)"
export RAVEN_BENCH_UPSTREAM_KEY=dummy
KEY="$("$RAVEN" keys create --name alt --rpm 100000000 --concurrency 100000 --credits 1000000 --data-dir "$DATA" \
      --config "$HERE/raven-bench.toml" 2>/dev/null)"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":64}'
lua() {  # $1: file, then header lines "Name: value"
  local f="$1"; shift
  { echo 'wrk.method = "POST"'; echo "wrk.body = '$BODY'"; echo 'wrk.headers["Content-Type"] = "application/json"'
    for h in "$@"; do echo "wrk.headers[\"${h%%: *}\"] = \"${h#*: }\""; done; } > "$f"
}
lua "$DATA/raven.lua" "Authorization: Bearer $KEY"
lua "$DATA/portkey.lua" "Authorization: Bearer dummy" "x-portkey-provider: openai" \
    "x-portkey-custom-host: http://127.0.0.1:18080/v1"
rps() {  # $1: lua, $2: url, $3: seconds
  taskset -c 1 wrk -t1 -c64 -d"$3"s -s "$1" "$2" | awk '/Non-2xx/ {bad=1} /Requests\/sec/ {r=$2} END {print (bad ? "errors" : r)}'
}
wait_for() { for _ in $(seq 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
taskset -c 1 python3 "$SHARED/fake_upstream.py" --host 127.0.0.1 --port 18080 >/dev/null 2>&1 & UP=$!
GW=""
trap 'kill $UP $GW 2>/dev/null || true' EXIT
for r in $(seq "$ROUNDS"); do
  (cd "$PORTKEY_DIR" && BIND_HOST=127.0.0.1 exec taskset -c 0 node --require "$SHARED/node_loopback.cjs" \
     node_modules/@portkey-ai/gateway/build/start-server.js --headless --port=8787 >/dev/null 2>&1) & GW=$!
  wait_for http://127.0.0.1:8787/
  rps "$DATA/portkey.lua" http://127.0.0.1:8787/v1/chat/completions 4 >/dev/null
  pk="$(rps "$DATA/portkey.lua" http://127.0.0.1:8787/v1/chat/completions "$SECS")"
  kill "$GW"; wait "$GW" 2>/dev/null || true
  taskset -c 0 "$RAVEN" serve --config "$HERE/raven-bench.toml" --data-dir "$DATA" --http-port 18000 \
    --grpc-port 18051 >/dev/null 2>&1 & GW=$!
  wait_for http://127.0.0.1:18000/healthz
  rps "$DATA/raven.lua" http://127.0.0.1:18000/v1/chat/completions 4 >/dev/null
  rv="$(rps "$DATA/raven.lua" http://127.0.0.1:18000/v1/chat/completions "$SECS")"
  kill "$GW"; wait "$GW" 2>/dev/null || true
  ratio="$(python3 -c 'import sys; print(f"{float(sys.argv[2]) / float(sys.argv[1]):.2f}x")' "$pk" "$rv" 2>/dev/null || echo "n/a")"
  echo "round $r: portkey $pk RPS, raven $rv RPS, $ratio"
done
