"""Scale-out backend micro-benchmarks: usage-ledger throughput and limiter / credit latency.

    .venv/bin/python bench/backends_bench.py [--records 20000] [--ops 3000]
        [--database-url postgresql://postgres@127.0.0.1:5432/test] [--redis-url redis://127.0.0.1:6379/0]

Prints a markdown table. PostgreSQL runs in a throw-away schema, Redis under a throw-away prefix.
Not a test: numbers depend on the machine; see docs/performance.md for recorded figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from raven_service.accounting.ledger import Ledger
from raven_service.core.types import ApiKey, CreditHold, Settlement, UsageRecord
from raven_service.policy.ratelimit import InProcessLimiter


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1e6


def record(i: int, key_id: str) -> UsageRecord:
    return UsageRecord(id=f"gen-{uuid.uuid4().hex}", key_id=key_id, model="m", provider="p", upstream_model="u",
                       prompt_tokens=20, completion_tokens=100, cost=Decimal("0.000123"), latency_ms=10,
                       status="completed", attempts=("p/u:ok",), created_at=time.time())


async def ledger(store, n: int) -> float:
    writer = Ledger(store, max_memory=10000, flush_interval=0.05)
    writer.start()
    t0 = time.perf_counter()
    for i in range(n):
        writer.submit(Settlement(record=record(i, "key_bench")))
        if i % 1000 == 999:
            await asyncio.sleep(0)
    await writer.flush()
    await writer.close()
    return n / (time.perf_counter() - t0)


async def timed(fn, ops: int) -> list[float]:
    out = []
    for _ in range(ops):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def store_rows(store, name: str, args) -> list[str]:
    await store.open()
    key = ApiKey(id="key_bench", name="b", secret_hash=uuid.uuid4().hex, prefix="rk-x", credits=Decimal("1000000"),
                 created_at=time.time())
    await store.insert_key(key)
    rate = await ledger(store, args.records)
    amount = Decimal("0.0001")
    holds = [CreditHold(id=f"hold_{uuid.uuid4().hex}", key_id="key_bench", amount=amount, owner="bench",
                        expires_at=time.time() + 600) for _ in range(args.ops)]
    it = iter(holds)
    reserve = await timed(lambda: store.reserve_hold(next(it)), args.ops)
    it2 = iter(holds)
    settle = await timed(lambda: store.settle([Settlement(record=record(0, "key_bench"), hold_id=next(it2).id)]),
                         args.ops)
    lookup = await timed(lambda: store.get_key_by_hash(key.secret_hash), args.ops)
    await store.close()
    return [
        f"| {name} | usage ledger (batched writer) | {rate:,.0f} records/s | |",
        f"| {name} | reserve a credit hold | p50 {pct(reserve, 50):.0f} µs | p99 {pct(reserve, 99):.0f} µs |",
        f"| {name} | settle a hold + record | p50 {pct(settle, 50):.0f} µs | p99 {pct(settle, 99):.0f} µs |",
        f"| {name} | key lookup by hash | p50 {pct(lookup, 50):.0f} µs | p99 {pct(lookup, 99):.0f} µs |",
    ]


async def limiter_rows(limiter, name: str, ops: int) -> list[str]:
    hits = await timed(lambda: limiter.hit_rpm("key_bench", 10**9), ops)

    async def slot() -> None:
        lease = await limiter.acquire_slot("key_bench", 10**6)
        await lease.release()

    slots = await timed(slot, ops)
    await limiter.close()
    return [
        f"| {name} | RPM hit | p50 {pct(hits, 50):.0f} µs | p99 {pct(hits, 99):.0f} µs |",
        f"| {name} | concurrency acquire + release | p50 {pct(slots, 50):.0f} µs | p99 {pct(slots, 99):.0f} µs |",
    ]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    rows = ["| backend | operation | result | tail |", "|---|---|---|---|"]
    from raven_service.storage.sqlite import SqliteStore

    with tempfile.TemporaryDirectory() as tmp:
        rows += await store_rows(SqliteStore(Path(tmp) / "bench.db"), "SQLite (WAL)", args)
    from raven_service.storage.postgres import PostgresStore

    schema = "raven_bench_" + uuid.uuid4().hex[:8]
    pg = PostgresStore(args.database_url, schema=schema, auto_upgrade=True)
    try:
        rows += await store_rows(pg, "PostgreSQL", args)
    finally:
        import asyncpg

        conn = await asyncpg.connect(args.database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    rows += await limiter_rows(InProcessLimiter(), "in-process", args.ops)
    from raven_service.policy.redis_limits import RedisLimiter

    rows += await limiter_rows(RedisLimiter(args.redis_url, prefix=f"raven-bench-{uuid.uuid4().hex[:6]}:"), "Redis",
                               args.ops)
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
