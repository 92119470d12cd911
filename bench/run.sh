#!/usr/bin/env bash
# Raven against the shared gateway-overhead harness (../shared/bench), plus the gRPC path.
#
#   make bench                       # direct floor + Raven (REST), then the gRPC path; ~4 min
#   make bench ARGS="--quick"        # smoke run
#   PEERS=direct,litellm,portkey make bench   # also re-measure the peers (installs them under /tmp)
#
# Raven runs with keys, limits and usage accounting ON (embedded SQLite), pinned to CPU 0 like the
# peers, pointed at the fake upstream (bench/raven-bench.toml). Results: bench/results.md and
# bench/results/*.json (REST), bench/results/grpc-*.jsonl (gRPC).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SHARED="${RAVEN_SHARED:-$ROOT/../shared}/bench"
PY="$ROOT/.venv/bin/python"
RAVEN="$ROOT/.venv/bin/raven"
DATA="$(mktemp -d /tmp/raven-bench.XXXXXX)"
PEERS="${PEERS:-direct}"
mkdir -p "$HERE/results"
export RAVEN_BENCH_UPSTREAM_KEY=dummy
KEY="$("$RAVEN" keys create --name bench --rpm 100000000 --concurrency 100000 --data-dir "$DATA" \
      --config "$HERE/raven-bench.toml" 2>/dev/null)"
if [ "$PEERS" != "direct" ] || [ "${SKIP_SETUP:-0}" != 1 ]; then
  command -v wrk >/dev/null || bash "$SHARED/setup_peers.sh" >&2
fi
stamp="$(date +%Y%m%d-%H%M%S)"
python3 "$SHARED/run_peers.py" --targets "$PEERS" --out "$HERE/results.md" --json-dir "$HERE/results" \
  --target "name=raven,url=http://127.0.0.1:18000/v1,model=gpt-4o-mini,key=$KEY,ready_timeout=30,cmd=$RAVEN serve --config $HERE/raven-bench.toml --data-dir $DATA --http-port 18000 --grpc-port 18051" \
  "$@"

# gRPC path: the same fake upstream and config, Raven pinned to CPU 0, the load client on CPU 1.
python3 "$SHARED/fake_upstream.py" --host 127.0.0.1 --port 18080 --chunks 20 --chunk-delay-ms 5 --ttft-ms 50 \
  >/dev/null 2>&1 & UP=$!
taskset -c 0 "$RAVEN" serve --config "$HERE/raven-bench.toml" --data-dir "$DATA" --http-port 18000 \
  --grpc-port 18051 >/dev/null 2>&1 & GW=$!
trap 'kill $UP $GW 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:18000/healthz >/dev/null && break; sleep 0.1; done
dur=10; case " $* " in *" --quick "*) dur=2 ;; esac
taskset -c 1 "$PY" "$HERE/grpc_load.py" --target 127.0.0.1:18051 --key "$KEY" -c 1,16,64 -d "$dur" \
  | tee "$HERE/results/grpc-$stamp.jsonl"
taskset -c 1 "$PY" "$HERE/grpc_load.py" --target 127.0.0.1:18051 --key "$KEY" -c 1,16 -d "$dur" --stream \
  | tee -a "$HERE/results/grpc-$stamp.jsonl"
