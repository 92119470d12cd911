"""GET /v1/usage over a big ledger: query latency on SQLite and PostgreSQL with N usage records.

    .venv/bin/python bench/usage_bench.py [--records 1000000] [--repeat 3]
        [--database-url postgresql://postgres@127.0.0.1:5432/test] [--skip-postgres]

Loads N records (30 days, 50 keys in 5 teams, 8 models, 1-2 providers each) into a temporary
SQLite file and a throw-away PostgreSQL schema, builds the rollup with migration 5's own backfill
statements (the same rows `settle` maintains; the contract suite checks both against the
records), then times `UsageQueries.usage` (the use case behind REST GET /v1/usage and gRPC
QueryUsage: rollup query, partial-hour edges, percentiles) for typical queries, plus a raw GROUP
BY over the records for comparison and the settle cost of the rollup. Prints a markdown table.
Not a test: numbers depend on the machine; docs/performance.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from raven_service.accounting.ledger import Ledger
from raven_service.app.usage import UsageQueries
from raven_service.core.types import Principal, Settlement, UsageRecord
from raven_service.storage import migrations
from raven_service.storage.postgres import PostgresStore
from raven_service.storage.rollup import encode_tags
from raven_service.storage.sqlite import SqliteStore

DAY = 86400
T0 = 1_790_000_000 - 1_790_000_000 % DAY
KEYS = [f"key_{i:02d}" for i in range(50)]
TEAMS = ["search", "ads", "infra", "ml", "web"]
MODELS = {f"vendor/model-{i}": (["p-a", "p-b"] if i % 3 == 0 else [f"p-{i % 4}"]) for i in range(8)}
COLUMNS = ("id", "key_id", "kind", "model", "provider", "upstream_model", "prompt_tokens", "completion_tokens", "cost",
           "latency_ms", "ttft_ms", "status", "finish_reason", "native_finish_reason", "streamed", "usage_estimated",
           "attempts", "error", "created_at", "tags")


def rows(n: int, seed: int = 1):
    rnd = random.Random(seed)
    models = list(MODELS)
    for i in range(n):
        key = rnd.choice(KEYS)
        model = rnd.choice(models)
        status = "failed" if rnd.random() < 0.03 else "completed"
        latency = int(rnd.lognormvariate(6.5, 0.8))
        yield (f"gen-{i:08d}", key, "chat", model, rnd.choice(MODELS[model]), model, rnd.randint(10, 4000),
               rnd.randint(1, 800), rnd.randint(1, 10**7), latency, int(latency * rnd.uniform(0.05, 0.4)), status,
               "stop", "stop", True, False, "p:ok", "", T0 + rnd.random() * 30 * DAY,
               encode_tags([("team", TEAMS[int(key[4:]) % 5])]))


QUERIES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("admin, all time, group_by=model", None, {"start": None, "end": None, "group_by": ["model"]}),
    ("admin, 30 d unaligned, group_by=day,model", None,
     {"start": T0 + 3 * 3600 + 17.5, "end": T0 + 30 * DAY - 1234.0, "group_by": ["day", "model"]}),
    ("admin, 30 d, group_by=key,provider,tag:team", None,
     {"start": T0 + 61.0, "end": T0 + 29 * DAY + 7.0, "group_by": ["key", "provider", "tag:team"]}),
    ("one key, all time, group_by=day", "key_07", {"start": None, "end": None, "group_by": ["day"]}),
    ("admin, 1 d unaligned, group_by=model,provider", None,
     {"start": T0 + 5 * DAY + 999.0, "end": T0 + 6 * DAY + 4321.0, "group_by": ["model", "provider"]}),
]


async def time_queries(store: Any, repeat: int) -> list[tuple[str, float, float, bool]]:
    ledger = Ledger(store)
    usage = UsageQueries(store, store, ledger)
    out = []
    for name, key, q in QUERIES:
        principal = Principal(key_id=key or "admin", name="bench", admin=key is None)
        times = []
        exact = True
        for _ in range(repeat):
            t0 = time.perf_counter()
            _, result = await usage.usage(principal, key_id=key or "", **q)
            times.append(time.perf_counter() - t0)
            exact = all(r.exact for r in result)
        out.append((name, times[0], min(times), exact))
    await ledger.close()
    return out


async def settle_cost(store: Any, n: int = 5000) -> float:
    """Records per second through settle (batches of 100), rollup included."""
    rnd = random.Random(9)
    records = [UsageRecord(id=f"settle-{secrets.token_hex(8)}", key_id=rnd.choice(KEYS), model="vendor/model-1",
                           provider="p-1", cost=Decimal("0.0001"), latency_ms=rnd.randint(50, 5000),
                           created_at=T0 + rnd.random() * DAY, tags=(("team", "ads"),)) for _ in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, 100):
        await store.settle([Settlement(record=r) for r in records[i:i + 100]])
    return n / (time.perf_counter() - t0)


def backfill_sql(bucket_expr: str) -> list[str]:
    return [s for s in migrations._rollup_backfill(bucket_expr).split("\n") if s.strip()]


async def sqlite_run(n: int, repeat: int, tmp: Path) -> tuple[list, float, float, float]:
    path = tmp / "usage.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    t0 = time.perf_counter()
    conn = sqlite3.connect(path)
    placeholders = ", ".join("?" for _ in COLUMNS)
    conn.executemany(f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                     ((*r[:16], f'["{r[16]}"]', *r[17:]) for r in rows(n)))
    for statement in backfill_sql("CAST(created_at / {grain} AS INTEGER) * {grain}"):
        conn.execute(statement)
    conn.commit()
    (rollup_rows,) = conn.execute("SELECT COUNT(*) FROM usage_rollup").fetchone()
    t1 = time.perf_counter()
    raw = time.perf_counter()
    conn.execute("SELECT model, COUNT(*), SUM(prompt_tokens), SUM(cost) FROM usage_records GROUP BY model").fetchall()
    raw = time.perf_counter() - raw
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        results = await time_queries(store, repeat)
        rate = await settle_cost(store)
    finally:
        await store.close()
    print(f"sqlite: loaded {n} records in {t1 - t0:.1f} s; rollup rows: {rollup_rows}")
    return results, raw, rate, rollup_rows


async def postgres_run(url: str, n: int, repeat: int) -> tuple[list, float, float, float]:
    schema = f"usage_bench_{secrets.token_hex(4)}"
    store = PostgresStore(url, schema=schema, auto_upgrade=True)
    await store.open()
    try:
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            t0 = time.perf_counter()
            await conn.copy_records_to_table(
                "usage_records", columns=list(COLUMNS),
                records=((*r[:8], Decimal(r[8]).scaleb(-12), *r[9:16], [r[16]], *r[17:]) for r in rows(n)))
            async with conn.transaction():
                for statement in backfill_sql("(floor(created_at / {grain}) * {grain})::bigint"):
                    await conn.execute(statement)
            await conn.execute("ANALYZE")
            rollup_rows = await conn.fetchval("SELECT COUNT(*) FROM usage_rollup")
            t1 = time.perf_counter()
            raw = time.perf_counter()
            await conn.fetch("SELECT model, COUNT(*), SUM(prompt_tokens), SUM(cost) FROM usage_records GROUP BY model")
            raw = time.perf_counter() - raw
        finally:
            await conn.close()
        print(f"postgres: loaded {n} records in {t1 - t0:.1f} s; rollup rows: {rollup_rows}")
        results = await time_queries(store, repeat)
        rate = await settle_cost(store)
        return results, raw, rate, rollup_rows
    finally:
        await store.close()
        conn = await asyncpg.connect(url)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["SQLite"] = await sqlite_run(args.records, args.repeat, Path(tmp))
    if not args.skip_postgres:
        runs["PostgreSQL"] = await postgres_run(args.database_url, args.records, args.repeat)
    print(f"\n{args.records:,} usage records; UsageQueries.usage, first / best of {args.repeat} (ms)\n")
    names = list(runs)
    print("| query | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, (name, _, _) in enumerate(QUERIES):
        cells = [f"{runs[b][0][i][1] * 1e3:.0f} / {runs[b][0][i][2] * 1e3:.0f}"
                 + ("" if runs[b][0][i][3] else " (hist.)") for b in names]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| raw GROUP BY model over the records (no rollup), for comparison | "
          + " | ".join(f"{runs[b][1] * 1e3:.0f}" for b in names) + " |")
    print("| rollup rows (hour + day) | " + " | ".join(f"{runs[b][3]:,}" for b in names) + " |")
    print("| settle throughput with the rollup, records/s (batches of 100) | "
          + " | ".join(f"{runs[b][2]:,.0f}" for b in names) + " |")


if __name__ == "__main__":
    asyncio.run(main())
