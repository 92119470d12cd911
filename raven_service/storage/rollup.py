"""The usage rollup shared by both backends: what `settle` adds to it and how a query splits.

`usage_rollup` (migration 5) holds, per (grain, bucket, key, model, provider, tags), the
request, error, token and cost totals and the latency / time-to-first-token histograms
(`core.latency`) of the usage records in that bucket. Two grains: hours (3600) and UTC days
(86400). `settle` adds every new record to its hour row and its day row in the same transaction
as the record itself, so the rollup never drifts from the ledger.

A query over [start, end) reads whole days from day rows, whole hours at the edges of the days
from hour rows, and the partial hours at the very edges from the records themselves
(`plan`): at most ~2 days of hour rows and 2 hours of records, whatever the range, and the sums
stay exact for any start and end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from raven_service.core.latency import BUCKETS, bucket_of
from raven_service.core.types import UsageAggregate

HOUR = 3600
DAY = 86400
GRAINS = (HOUR, DAY)

LATENCY_COLUMNS = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
TTFT_COLUMNS = tuple(f"ttft_{i:02d}" for i in range(BUCKETS))
HIST_COLUMNS = LATENCY_COLUMNS + TTFT_COLUMNS
KEY_COLUMNS = ("grain", "bucket", "key_id", "model", "provider", "tags")
SUM_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost")
ROLLUP_COLUMNS = KEY_COLUMNS + SUM_COLUMNS + HIST_COLUMNS

#: The dimension -> column of the rollup (`day` is computed from the bucket).
DIMENSION_COLUMNS = {"model": "model", "key": "key_id", "provider": "provider", "tags": "tags"}
DIMENSION_ORDER = ("day", "model", "key", "provider", "tags")

_ENCODER = msgspec.json.Encoder()


def encode_tags(tags: Iterable[tuple[str, str]]) -> str:
    """The canonical JSON text of a tag set (an object with sorted names): '{}' for none."""
    return _ENCODER.encode(dict(sorted(tags))).decode()


def decode_tags(text: str) -> tuple[tuple[str, str], ...]:
    value = msgspec.json.decode(text or "{}", type=dict[str, str])
    return tuple(sorted(value.items()))


class Delta:
    """What a batch of new records adds to one rollup row."""

    __slots__ = ("completion_tokens", "cost", "errors", "hist", "prompt_tokens", "requests")

    def __init__(self, zero_cost: Any) -> None:
        self.requests = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = zero_cost
        self.hist = [0] * (2 * BUCKETS)

    def params(self) -> tuple[Any, ...]:
        return (self.requests, self.errors, self.prompt_tokens, self.completion_tokens, self.cost, *self.hist)


RowKey = tuple[int, int, str, str, str, str]


def column_index(columns: str) -> dict[str, int]:
    """Position of each name in a comma-separated column list (the insert's parameter order)."""
    return {name.strip(): i for i, name in enumerate(columns.split(","))}


def accumulate(deltas: dict[RowKey, Delta], index: dict[str, int], params: Sequence[Any], zero_cost: Any) -> None:
    """Adds one just-inserted record (its insert parameters, named through `index`; tags already
    encoded, cost in the backend's storage form) to its hour row and its day row."""
    created_at = params[index["created_at"]]
    latency, ttft = params[index["latency_ms"]], params[index["ttft_ms"]]
    ident = (params[index["key_id"]], params[index["model"]], params[index["provider"]], params[index["tags"]])
    for grain in GRAINS:
        key = (grain, math.floor(created_at / grain) * grain, *ident)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = Delta(zero_cost)
        delta.requests += 1
        delta.errors += params[index["status"]] == "failed"
        delta.prompt_tokens += params[index["prompt_tokens"]]
        delta.completion_tokens += params[index["completion_tokens"]]
        delta.cost += params[index["cost"]]
        delta.hist[bucket_of(latency)] += 1
        if ttft > 0:
            delta.hist[BUCKETS + bucket_of(ttft)] += 1


def upsert_rows(deltas: dict[RowKey, Delta]) -> list[tuple[Any, ...]]:
    """The upsert parameters, in primary-key order (a fixed lock order across transactions)."""
    return [(*key, *deltas[key].params()) for key in sorted(deltas)]


def upsert_sql(placeholders: Sequence[str]) -> str:
    """INSERT ... ON CONFLICT DO UPDATE adding every total and bucket (placeholders per column)."""
    added = ", ".join(f"{c} = usage_rollup.{c} + excluded.{c}" for c in SUM_COLUMNS + HIST_COLUMNS)
    return (
        f"INSERT INTO usage_rollup ({', '.join(ROLLUP_COLUMNS)}) VALUES ({', '.join(placeholders)}) "
        f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {added}"
    )


Range = tuple[float | None, float | None]  # [start, end), None = open


class Plan(NamedTuple):
    """Which parts of [start, end) come from day rows, hour rows and raw records."""

    days: list[Range]
    hours: list[Range]
    raw: list[Range]


def _ceil(t: float, grain: int) -> int:
    return math.ceil(t / grain) * grain


def _floor(t: float, grain: int) -> int:
    return math.floor(t / grain) * grain


def plan(start: float | None, end: float | None) -> Plan:
    """Splits [start, end) into whole days, whole hours and partial hours (see the module doc)."""
    if start is not None and end is not None and end <= start:
        return Plan([], [], [])
    h0 = None if start is None else _ceil(start, HOUR)
    h1 = None if end is None else _floor(end, HOUR)
    if h0 is not None and h1 is not None and h0 >= h1:
        return Plan([], [], [(start, end)])
    raw: list[Range] = []
    if start is not None and h0 is not None and h0 > start:
        raw.append((start, h0))
    if end is not None and h1 is not None and h1 < end:
        raw.append((h1, end))
    d0 = None if h0 is None else _ceil(h0, DAY)
    d1 = None if h1 is None else _floor(h1, DAY)
    if d0 is not None and d1 is not None and d0 >= d1:
        return Plan([], [(h0, h1)], raw)
    hours: list[Range] = []
    if h0 is not None and d0 is not None and d0 > h0:
        hours.append((h0, d0))
    if h1 is not None and d1 is not None and h1 > d1:
        hours.append((d1, h1))
    return Plan([(d0, d1)], hours, raw)


def merge_into(groups: dict[tuple[Any, ...], UsageAggregate], group_by: frozenset[str], *, day: int | None,
               model: str, key_id: str, provider: str, tags: str, totals: Sequence[Any], cost: Decimal) -> None:
    """Adds one row of totals (requests, errors, prompt, completion, then the 2 * BUCKETS bucket
    counts; `cost` already a Decimal) to its group."""
    key = (
        day if "day" in group_by else None,
        model if "model" in group_by else None,
        key_id if "key" in group_by else None,
        provider if "provider" in group_by else None,
        tags if "tags" in group_by else None,
    )
    agg = groups.get(key)
    if agg is None:
        agg = groups[key] = UsageAggregate(
            day=key[0], model=key[1], key_id=key[2], provider=key[3],
            tags=None if key[4] is None else decode_tags(key[4]),
            latency_hist=[0] * BUCKETS, ttft_hist=[0] * BUCKETS,
        )
    agg.requests += int(totals[0])
    agg.errors += int(totals[1])
    agg.prompt_tokens += int(totals[2])
    agg.completion_tokens += int(totals[3])
    agg.cost += cost
    hist = totals[4:]
    lat, ttft = agg.latency_hist, agg.ttft_hist
    for i in range(BUCKETS):
        lat[i] += int(hist[i] or 0)
        ttft[i] += int(hist[BUCKETS + i] or 0)


def sorted_groups(groups: dict[tuple[Any, ...], UsageAggregate]) -> list[UsageAggregate]:
    """The groups in (day, model, key, provider, tags) order."""
    def order(a: UsageAggregate) -> tuple[Any, ...]:
        # within one position every group is None or none is (a dimension is grouped or not)
        return tuple(0 if v is None else v for v in (a.day, a.model, a.key_id, a.provider, a.tags))

    return sorted(groups.values(), key=order)


def raw_group_totals(record_row: Sequence[Any]) -> list[int]:
    """Totals of one raw record row (status, prompt, completion, latency, ttft) in the rollup's
    shape: [1, errors, prompt, completion, *latency buckets, *ttft buckets]."""
    status, prompt, completion, latency, ttft = record_row
    totals = [1, int(status == "failed"), prompt, completion] + [0] * (2 * BUCKETS)
    totals[4 + bucket_of(latency)] = 1
    if ttft > 0:
        totals[4 + BUCKETS + bucket_of(ttft)] = 1
    return totals


# ------------------------------------------------------------------------- query builders
# Both backends number their placeholders (SQLite ?N, PostgreSQL $N), so one builder serves both.
Placeholder = Callable[[int], str]

_DAY_OF_BUCKET = f"bucket - bucket % {DAY}"
_ROLLUP_DIMENSIONS = (("day", _DAY_OF_BUCKET), ("model", "model"), ("key", "key_id"), ("provider", "provider"),
                      ("tags", "tags"))
_SAMPLE_COLUMNS = "key_id, model, provider, tags, created_at, latency_ms, ttft_ms"
_RAW_COLUMNS = (
    "key_id, model, provider, tags, created_at, status, prompt_tokens, completion_tokens, latency_ms, ttft_ms, cost"
)


class _Args:
    def __init__(self, placeholder: Placeholder) -> None:
        self.values: list[Any] = []
        self._placeholder = placeholder

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self._placeholder(len(self.values))


def _bounds(column: str, lo: float | None, hi: float | None, arg: _Args) -> list[str]:
    """`lo <= column < hi` (open ends left out); times go out as floats (DOUBLE PRECISION)."""
    cast = int if column == "bucket" else float
    parts = []
    if lo is not None:
        parts.append(f"{column} >= {arg(cast(lo))}")
    if hi is not None:
        parts.append(f"{column} < {arg(cast(hi))}")
    return parts


def rollup_query(key_id: str | None, p: Plan, group_by: frozenset[str],
                 placeholder: Placeholder) -> tuple[str, list[Any], list[str]] | None:
    """The rollup part of a query: (sql, params, grouped dimensions in column order), or None
    when the plan needs no rollup rows. Each result row: the dimensions, then the totals."""
    arg = _Args(placeholder)
    conditions = []
    for grain, ranges in ((DAY, p.days), (HOUR, p.hours)):
        for lo, hi in ranges:
            parts = [f"grain = {grain}", *_bounds("bucket", lo, hi, arg)]
            conditions.append("(" + " AND ".join(parts) + ")")
    if not conditions:
        return None
    where = "(" + " OR ".join(conditions) + ")"
    if key_id is not None:
        where = f"key_id = {arg(key_id)} AND {where}"
    dims = [(name, expr) for name, expr in _ROLLUP_DIMENSIONS if name in group_by]
    sums = ", ".join(f"SUM({c})" for c in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost",
                                             *HIST_COLUMNS))
    select = ", ".join([expr for _, expr in dims] + [sums])
    sql = f"SELECT {select} FROM usage_rollup WHERE {where}"
    if dims:
        sql += " GROUP BY " + ", ".join(expr for _, expr in dims)
    return sql, arg.values, [name for name, _ in dims]


def raw_query(key_id: str | None, ranges: Sequence[Range], placeholder: Placeholder) -> tuple[str, list[Any]]:
    """The records of the partial hours (bounded ranges): key_id, model, provider, tags,
    created_at, status, prompt, completion, latency, ttft, cost."""
    arg = _Args(placeholder)
    spans = " OR ".join("(" + " AND ".join(_bounds("created_at", lo, hi, arg)) + ")" for lo, hi in ranges)
    where = f"({spans})"
    if key_id is not None:
        where = f"key_id = {arg(key_id)} AND {where}"
    return f"SELECT {_RAW_COLUMNS} FROM usage_records WHERE {where}", arg.values


def sample_query(key_id: str | None, start: float | None, end: float | None, limit: int,
                 placeholder: Placeholder) -> tuple[str, list[Any]]:
    arg = _Args(placeholder)
    where = _bounds("created_at", start, end, arg)
    if key_id is not None:
        where.append(f"key_id = {arg(key_id)}")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_SAMPLE_COLUMNS} FROM usage_records{clause} LIMIT {arg(limit)}", arg.values


def list_query(columns: str, key_id: str | None, *, model: str | None, status: str | None, since: float | None,
               until: float | None, before: tuple[float, str] | None, limit: int,
               placeholder: Placeholder) -> tuple[str, list[Any]]:
    """Records newest first ((created_at, id) descending), strictly before the keyset cursor."""
    arg = _Args(placeholder)
    where = []
    if key_id is not None:
        where.append(f"key_id = {arg(key_id)}")
    if model is not None:
        where.append(f"model = {arg(model)}")
    if status is not None:
        where.append(f"status = {arg(status)}")
    where += _bounds("created_at", since, until, arg)
    if before is not None:
        where.append(f"(created_at, id) < ({arg(before[0])}, {arg(before[1])})")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return (f"SELECT {columns} FROM usage_records{clause} ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}",
            arg.values)


def merge_rollup_rows(groups: dict[tuple[Any, ...], UsageAggregate], group_by: frozenset[str], dims: list[str],
                      rows: Iterable[Sequence[Any]], money: Callable[[Any], Decimal]) -> None:
    """Adds the rows of `rollup_query` to their groups (`money` turns a stored cost sum into a Decimal)."""
    n = len(dims)
    for row in rows:
        if not row[n]:  # no rollup row matched (an aggregate without GROUP BY still answers one row)
            continue
        values = dict(zip(dims, row[:n], strict=True))
        totals = row[n:]
        merge_into(groups, group_by, day=None if values.get("day") is None else int(values["day"]),
                   model=values.get("model", ""), key_id=values.get("key", ""), provider=values.get("provider", ""),
                   tags=values.get("tags", "{}"), totals=[totals[0], totals[1], totals[2], totals[3], *totals[5:]],
                   cost=money(totals[4]))


def merge_raw_rows(groups: dict[tuple[Any, ...], UsageAggregate], group_by: frozenset[str],
                   rows: Iterable[Sequence[Any]], money: Callable[[Any], Decimal]) -> None:
    """Adds the records of `raw_query` to their groups."""
    for key_id, model, provider, tags, created_at, status, prompt, completion, latency, ttft, cost in rows:
        merge_into(groups, group_by, day=math.floor(created_at / DAY) * DAY, model=model, key_id=key_id,
                   provider=provider, tags=tags, totals=raw_group_totals((status, prompt, completion, latency, ttft)),
                   cost=money(cost))
