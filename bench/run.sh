#!/usr/bin/env bash
# Raven against the shared gateway-overhead harness (../shared/bench), plus the gRPC path.
#
#   make bench                                  # direct floor + Raven (SQLite, and PostgreSQL+Redis if reachable)
#   make bench ARGS="--quick"                   # smoke run
#   PEERS=direct,litellm,portkey make bench     # also re-measure the peers in the same run (installs them under /tmp)
#
# Raven runs with keys, limits and usage accounting ON, pinned to CPU 0 like the peers, pointed at the
# fake upstream (bench/raven-bench.toml). Results: bench/results.md + bench/results/*.json (REST, from the
# shared harness) and bench/results/grpc-*.jsonl (gRPC path: bench/grpc_h2load.py for unary calls,
# bench/grpc_stream.py for streams; both C clients on nghttp2).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SHARED="${RAVEN_SHARED:-$ROOT/../shared}/bench"
PY="$ROOT/.venv/bin/python"
RAVEN="$ROOT/.venv/bin/raven"
DATA="$(mktemp -d /tmp/raven-bench.XXXXXX)"
PEERS="${PEERS:-direct}"
PG_URL="${RAVEN_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/raven_bench}"
REDIS_URL="${RAVEN_BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}"
mkdir -p "$HERE/results"
export RAVEN_BENCH_UPSTREAM_KEY=dummy
# SPEC §7: the benchmark's key is credit-limited (RPM, concurrency, credits and usage all on); an
# unlimited key is the second row, for comparison.
KEY="$("$RAVEN" keys create --name bench --rpm 100000000 --concurrency 100000 --credits 1000000 --data-dir "$DATA" \
      --config "$HERE/raven-bench.toml" 2>/dev/null)"
UKEY="$("$RAVEN" keys create --name bench-unlimited --rpm 100000000 --concurrency 100000 --data-dir "$DATA" \
      --config "$HERE/raven-bench.toml" 2>/dev/null)"
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  if [ "$PEERS" != "direct" ]; then bash "$SHARED/setup_peers.sh" >&2
  else command -v wrk >/dev/null || bash "$SHARED/setup_peers.sh" >&2; fi
fi
targets=(--target "name=raven,url=http://127.0.0.1:18000/v1,model=gpt-4o-mini,key=$KEY,ready_timeout=30,cmd=$RAVEN serve --config $HERE/raven-bench.toml --data-dir $DATA --http-port 18000 --grpc-port 18051"
         --target "name=raven-unlimited-key,url=http://127.0.0.1:18000/v1,model=gpt-4o-mini,key=$UKEY,ready_timeout=30,cmd=$RAVEN serve --config $HERE/raven-bench.toml --data-dir $DATA --http-port 18000 --grpc-port 18051")
# Second row: the scale-out backends (PostgreSQL + Redis), when both are reachable.
if "$PY" - "$PG_URL" <<'PYEOF' 2>/dev/null; then
import asyncio, sys
from urllib.parse import urlsplit
import asyncpg
url = urlsplit(sys.argv[1]); name = url.path.lstrip("/")
async def main():
    conn = await asyncpg.connect(url._replace(path="/postgres").geturl(), timeout=2)
    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
asyncio.run(main())
PYEOF
  export RAVEN_DATABASE_URL="$PG_URL" RAVEN_REDIS_URL="$REDIS_URL" RAVEN_REDIS_PREFIX="raven-bench:"
  "$RAVEN" db upgrade >/dev/null
  PGKEY="$("$RAVEN" keys create --name bench --rpm 100000000 --concurrency 100000 --credits 1000000 2>/dev/null)"
  unset RAVEN_DATABASE_URL RAVEN_REDIS_URL RAVEN_REDIS_PREFIX
  targets+=(--target "name=raven-pg-redis,url=http://127.0.0.1:18002/v1,model=gpt-4o-mini,key=$PGKEY,ready_timeout=30,cmd=env RAVEN_DATABASE_URL=$PG_URL RAVEN_REDIS_URL=$REDIS_URL RAVEN_REDIS_PREFIX=raven-bench: $RAVEN serve --config $HERE/raven-bench.toml --data-dir $DATA/pg --http-port 18002 --grpc-port 18053")
fi
stamp="$(date +%Y%m%d-%H%M%S)"
python3 "$SHARED/run_peers.py" --targets "$PEERS" --out "$HERE/results.md" --json-dir "$HERE/results" \
  "${targets[@]}" "$@"

# gRPC path: the same fake upstream and config, Raven pinned to CPU 0, the load client on CPU 1.
taskset -c 1 python3 "$SHARED/fake_upstream.py" --host 127.0.0.1 --port 18080 --chunks 20 --chunk-delay-ms 5 \
  --ttft-ms 50 >/dev/null 2>&1 & UP=$!
taskset -c 0 "$RAVEN" serve --config "$HERE/raven-bench.toml" --data-dir "$DATA" --http-port 18000 \
  --grpc-port 18051 >/dev/null 2>&1 & GW=$!
trap 'kill $UP $GW 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:18000/healthz >/dev/null && break; sleep 0.1; done
# (streams: a count per level, about `dur` seconds each at the fake upstream's ~160 ms per stream)
dur=10 streams=60,960; case " $* " in *" --quick "*) dur=2 streams=12,192 ;; esac
# Unary: h2load (C, nghttp2) posting a framed CreateChatCompletion; each level is checked against the
# fake upstream's request counter (bench/grpc_h2load.py). Streams: a C probe on libnghttp2 times
# ttfb/TTFT/total and reads grpc-status (bench/grpc_stream.py builds bench/grpc_stream_probe.c with gcc).
need=(); command -v h2load >/dev/null || need+=(nghttp2-client)
[ -e /usr/include/nghttp2/nghttp2.h ] || need+=(libnghttp2-dev)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || \
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; }
fi
taskset -c 1 "$PY" "$HERE/grpc_h2load.py" --target 127.0.0.1:18051 --key "$KEY" -c 1,16,64 -d "$dur" \
  --upstream-stats http://127.0.0.1:18080/stats | tee "$HERE/results/grpc-$stamp.jsonl"
taskset -c 1 "$PY" "$HERE/grpc_stream.py" --target 127.0.0.1:18051 --key "$KEY" -c 1,16 -n "$streams" \
  | tee -a "$HERE/results/grpc-$stamp.jsonl"
