#!/usr/bin/env bash
# gRPC unary (h2load) and REST (wrk) alternated on one Raven process, same credit-limited key, c=64,
# to read their RPS ratio through this machine's drift (±15 % within a minute):
#   bash ../shared/bench/setup_peers.sh wrk bench        # once: wrk (and apt-get install nghttp2-client)
#   bash bench/grpc_alternate.sh [rounds] [seconds] [tree...]
# Each tree (default: this checkout) is a source tree run with this checkout's .venv, on a fresh
# process per round, so two versions can be compared in one sitting (e.g. a `git worktree` of the
# previous commit). Raven on CPU 0; the fake upstream, wrk and h2load on CPU 1. Per round and tree:
# REST, gRPC, REST, gRPC, each after a warm-up. h2load cannot read grpc-status: use
# bench/grpc_h2load.py (checked against the upstream's counter) for figures that count.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SHARED="${RAVEN_SHARED:-$ROOT/../shared}/bench"
PY="$ROOT/.venv/bin/python"
ROUNDS="${1:-3}" SECS="${2:-10}"
shift $(( $# < 2 ? $# : 2 ))
TREES=("${@:-$ROOT}")
DATA="$(mktemp -d /tmp/raven-grpc-alternate.XXXXXX)"
export RAVEN_BENCH_UPSTREAM_KEY=dummy
KEY="$("$PY" -m raven_service.cli keys create --name alt --rpm 100000000 --concurrency 100000 --credits 1000000 \
      --data-dir "$DATA" --config "$HERE/raven-bench.toml" 2>/dev/null)"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"max_tokens":64}'
{ echo 'wrk.method = "POST"'; echo "wrk.body = '$BODY'"; echo 'wrk.headers["Content-Type"] = "application/json"'
  echo "wrk.headers[\"Authorization\"] = \"Bearer $KEY\""; } > "$DATA/rest.lua"
(cd "$HERE" && "$PY" -c "from grpc_h2load import body; open('$DATA/grpc.bin', 'wb').write(body('gpt-4o-mini'))")
rest() {
  taskset -c 1 wrk -t1 -c64 -d"$1"s -s "$DATA/rest.lua" http://127.0.0.1:18000/v1/chat/completions \
    | awk '/Non-2xx/ {bad=1} /Requests\/sec/ {r=$2} END {print (bad ? "errors" : r)}'
}
grpc() {
  taskset -c 1 h2load -c4 -m16 -D"$1" -t1 -d "$DATA/grpc.bin" -H "content-type: application/grpc" -H "te: trailers" \
    -H "authorization: Bearer $KEY" http://127.0.0.1:18051/raven.v1.ChatService/CreateChatCompletion 2>/dev/null \
    | awk '/finished in/ {gsub(",", "", $4); r=$4} /status codes:/ && $5 + $7 + $9 != 0 {bad=1}
            /^requests:/ && $10 + $12 != 0 {bad=1} END {print (bad ? "errors" : r)}'
}
wait_for() { for _ in $(seq 150); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
taskset -c 1 python3 "$SHARED/fake_upstream.py" --host 127.0.0.1 --port 18080 >/dev/null 2>&1 & UP=$!
GW=""
trap 'kill $UP $GW 2>/dev/null || true' EXIT
for r in $(seq "$ROUNDS"); do
  for tree in "${TREES[@]}"; do
    (cd "$tree" && PYTHONPATH="$tree" exec taskset -c 0 "$PY" -m raven_service.cli serve --config "$HERE/raven-bench.toml" \
       --data-dir "$DATA" --http-port 18000 --grpc-port 18051 >/dev/null 2>&1) & GW=$!
    wait_for http://127.0.0.1:18000/healthz
    rest 3 >/dev/null; grpc 3 >/dev/null
    a="$(rest "$SECS")"; b="$(grpc "$SECS")"; c="$(rest "$SECS")"; d="$(grpc "$SECS")"
    kill "$GW"; wait "$GW" 2>/dev/null || true
    echo "round $r $tree: REST $a / $c RPS, gRPC $b / $d RPS"
  done
done
