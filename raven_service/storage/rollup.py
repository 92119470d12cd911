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
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from raven_service.core.latency import BUCKETS, bucket_of
from raven_service.core.types import UsageAggregate, UsageRecord

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

    def add(self, record: UsageRecord, cost: Any) -> None:
        self.requests += 1
        self.errors += record.status == "failed"
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.cost += cost
        self.hist[bucket_of(record.latency_ms)] += 1
        if record.ttft_ms > 0:
            self.hist[BUCKETS + bucket_of(record.ttft_ms)] += 1

    def params(self) -> tuple[Any, ...]:
        return (self.requests, self.errors, self.prompt_tokens, self.completion_tokens, self.cost, *self.hist)


RowKey = tuple[int, int, str, str, str, str]


def accumulate(deltas: dict[RowKey, Delta], record: UsageRecord, cost: Any, zero_cost: Any) -> None:
    """Adds `record` (with its cost in the backend's storage form) to its hour and day rows."""
    tags = encode_tags(record.tags)
    for grain in GRAINS:
        key = (grain, math.floor(record.created_at / grain) * grain, record.key_id, record.model, record.provider, tags)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = Delta(zero_cost)
        delta.add(record, cost)


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
    return [groups[k] for k in sorted(groups, key=lambda k: tuple("" if v is None else v for v in k))]


def raw_group_totals(record_row: Sequence[Any]) -> list[int]:
    """Totals of one raw record row (status, prompt, completion, latency, ttft) in the rollup's
    shape: [1, errors, prompt, completion, *latency buckets, *ttft buckets]."""
    status, prompt, completion, latency, ttft = record_row
    totals = [1, int(status == "failed"), prompt, completion] + [0] * (2 * BUCKETS)
    totals[4 + bucket_of(latency)] = 1
    if ttft > 0:
        totals[4 + BUCKETS + bucket_of(ttft)] = 1
    return totals
