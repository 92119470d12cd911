#!/usr/bin/env bash
# `raven serve --workers N` scaling on PostgreSQL + Redis with a credit-limited key (SPEC §7):
#   bash bench/workers.sh [seconds]        # 1 and 2 workers, wrk c=16 and c=64, non-streaming chat
# Raven unpinned on both cores; wrk (1 thread) and the fake upstream share them, so the ratio is a
# lower bound; the last column (bench/cpu_share.py) shows how the two cores were shared. Needs PostgreSQL and Redis on 127.0.0.1 (database raven_bench is created if missing).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
SHARED="${RAVEN_SHARED:-$ROOT/../shared}/bench"
RAVEN="$ROOT/.venv/bin/raven"
SECS="${1:-6}"
export RAVEN_DATABASE_URL="${RAVEN_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/raven_bench}"
export RAVEN_REDIS_URL="${RAVEN_BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}" RAVEN_REDIS_PREFIX="raven-workers:"
export RAVEN_BENCH_UPSTREAM_KEY=dummy
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='raven_bench'" postgres | grep -q 1 || \
  psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE raven_bench" postgres >/dev/null
"$RAVEN" db upgrade >/dev/null
KEY="$("$RAVEN" keys create --name workers --rpm 100000000 --concurrency 100000 --credits 1000000 2>/dev/null)"
DATA="$(mktemp -d /tmp/raven-workers.XXXXXX)"
BODY="$DATA/body.json"
echo '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}' > "$BODY"
python3 "$SHARED/fake_upstream.py" --host 127.0.0.1 --port 18080 >/dev/null 2>&1 & UP=$!
trap 'kill $UP 2>/dev/null || true' EXIT
echo "| workers | RPS c=16 | RPS c=64 | cores used during c=64 |"
echo "|---|---|---|---|"
for n in 1 2; do
  "$RAVEN" serve --config "$HERE/raven-bench.toml" --data-dir "$DATA/w$n" --http-port 18010 --grpc-port 18011 \
    --workers "$n" >"$DATA/w$n.log" 2>&1 & GW=$!
  for _ in $(seq 150); do curl -sf http://127.0.0.1:18010/healthz >/dev/null && break; sleep 0.1; done
  export WRK_BODY_FILE="$BODY" WRK_HEADERS="Authorization: Bearer $KEY"
  wrk -t1 -c16 -d2s -s "$SHARED/wrk_post.lua" http://127.0.0.1:18010/v1/chat/completions >/dev/null
  r16=$(wrk -t1 -c16 -d"${SECS}s" -s "$SHARED/wrk_post.lua" http://127.0.0.1:18010/v1/chat/completions | awk '/Requests\/sec/ {print $2}')
  r64=$(python3 "$HERE/cpu_share.py" run "$SECS" wrk -t1 -c64 -d"${SECS}s" -s "$SHARED/wrk_post.lua" \
        http://127.0.0.1:18010/v1/chat/completions 2>"$DATA/share" | awk '/Requests\/sec/ {print $2}')
  share=$(cat "$DATA/share")
  echo "| $n | $r16 | $r64 | $share |"
  kill "$GW"; wait "$GW" 2>/dev/null || true
done
