"""Usage lookups: one generation, the generation list, and usage aggregated by dimension.

Visibility: a key sees its own records. An admin key may name any key (`key_id`), and without
one sees every key. A non-admin naming another key's id gets 404 `key_not_found`, the same
answer as for an id that does not exist, so ids cannot be probed (SPEC §11: "another key's id ->
404"; 403 `insufficient_scope` is for the admin-only routes).

Aggregates (`usage`): sums (requests, errors, tokens, cost) are exact for any range; they come
from the store's rollup. Percentiles are exact (nearest rank) when the range holds at most
`exact_limit` records; above that they are estimated from the rollup's latency histograms
(`core.latency`: interpolated inside a bucket at most a third wider than its lower edge), which
keeps a query over millions of records well under a second. `errors` counts failed requests;
cancelled ones are requests, not errors. TTFT percentiles cover requests that had a first token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from raven_service.accounting.ledger import Ledger
from raven_service.core.errors import InvalidArgument, NotFound
from raven_service.core.latency import BUCKETS, estimate_percentile, exact_percentile
from raven_service.core.ports import KeyStore, UsageStore
from raven_service.core.types import Principal, UsageAggregate, UsageRecord

#: The `group_by` dimensions besides `tag:<name>`, in output order.
GROUP_DIMENSIONS = ("day", "model", "key", "provider")
STATUSES = ("completed", "failed", "cancelled")
DEFAULT_PAGE = 20
MAX_PAGE = 100
EXACT_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class Grouping:
    """A validated `group_by`: plain dimensions and at most one tag name."""

    dimensions: frozenset[str] = frozenset()
    tag: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The grouping in canonical order, as the caller spells it (`tag:<name>` last)."""
        plain = tuple(d for d in GROUP_DIMENSIONS if d in self.dimensions)
        return plain + ((f"tag:{self.tag}",) if self.tag is not None else ())


@dataclass(slots=True)
class UsageRow:
    """One row of GET /v1/usage; a dimension that is not grouped is None (so is `tag` for keys
    without that tag)."""

    day: str | None = None
    model: str | None = None
    key_id: str | None = None
    provider: str | None = None
    tag: str | None = None
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_ms_p50: int | None = None
    latency_ms_p95: int | None = None
    ttft_ms_p50: int | None = None
    #: Whether the percentiles are exact (False: estimated from the histograms).
    exact: bool = True
    latency_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    ttft_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)


@dataclass(frozen=True, slots=True)
class GenerationPage:
    records: list[UsageRecord]
    has_more: bool
    next: str  # '' when there is no next page


def parse_group_by(items: Sequence[str]) -> Grouping:
    """`day`, `model`, `key`, `provider`, `tag:<name>` (at most one tag); repeats are ignored."""
    dims: set[str] = set()
    tag: str | None = None
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if item in GROUP_DIMENSIONS:
            dims.add(item)
        elif item.startswith("tag:") and item[4:].strip():
            name = item[4:].strip()
            if tag is not None and tag != name:
                raise InvalidArgument("'group_by' takes at most one tag:<name>.", param="group_by")
            tag = name
        else:
            raise InvalidArgument(
                f"Unknown 'group_by' value '{item[:64]}': use day, model, key, provider or tag:<name>.",
                param="group_by")
    return Grouping(frozenset(dims), tag)


def encode_cursor(record: UsageRecord) -> str:
    raw = f"{record.created_at!r}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, sep, record_id = raw.partition("|")
        value = float(stamp)
        if not sep or not record_id or value != value:  # NaN
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("'after' is not a cursor returned by this API.", param="after") from None
    return value, record_id


def _check_range(start: float | None, end: float | None, start_name: str, end_name: str) -> None:
    if start is not None and end is not None and end < start:
        raise InvalidArgument(f"'{end_name}' must not be before '{start_name}'.", param=end_name)


def _day(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


class UsageQueries:
    def __init__(self, store: UsageStore, keys: KeyStore, writer: Ledger, *, flush_timeout: float = 2.0,
                 exact_limit: int = EXACT_LIMIT) -> None:
        self._store = store
        self._keys = keys
        self._writer = writer
        self._flush_timeout = flush_timeout
        self._exact_limit = exact_limit

    async def generation(self, principal: Principal, record_id: str) -> UsageRecord:
        if not record_id:
            raise InvalidArgument("'id' is required.", param="id", code="missing_required_parameter")
        rec = self._writer.pending(record_id) or await self._store.get_usage(record_id)
        if rec is None or (rec.key_id != principal.key_id and not principal.admin):
            raise NotFound(f"No generation with id '{record_id}'.", param="id", code="generation_not_found")
        return rec

    async def _scope(self, principal: Principal, key_id: str, *, all_for_admin: bool = True) -> str | None:
        """The key whose records the caller reads (None = every key: an admin naming none)."""
        if not key_id:
            return None if principal.admin and all_for_admin else principal.key_id
        if key_id == principal.key_id:
            return key_id
        if not principal.admin or await self._keys.get_key(key_id) is None:
            raise NotFound(f"No key with id '{key_id[:64]}'.", param="key_id", code="key_not_found")
        return key_id

    async def _settled(self) -> None:
        # What was settled before this call is counted; a flush never waits on later traffic, and a
        # store that does not take it within the timeout leaves the newest records out.
        await self._writer.flush(self._flush_timeout)

    async def summary(self, principal: Principal, key_id: str, start: float | None,
                      end: float | None) -> tuple[str, list[UsageAggregate]]:
        """Per-model totals of one key (GetUsage): the caller's own unless an admin names one."""
        _check_range(start, end, "start_time", "end_time")
        target = await self._scope(principal, key_id, all_for_admin=False) or principal.key_id
        await self._settled()
        return target, await self._store.aggregate_usage(target, start, end, frozenset({"model"}))

    async def usage(self, principal: Principal, *, key_id: str, start: float | None, end: float | None,
                    group_by: Sequence[str]) -> tuple[Grouping, list[UsageRow]]:
        """GET /v1/usage: totals and percentiles per group (see the module doc)."""
        grouping = parse_group_by(group_by)
        _check_range(start, end, "start", "end")
        scope = await self._scope(principal, key_id)
        await self._settled()
        store_dims = set(grouping.dimensions) | ({"tags"} if grouping.tag is not None else set())
        aggregates = await self._store.aggregate_usage(scope, start, end, frozenset(store_dims))
        rows: dict[tuple[Any, ...], UsageRow] = {}
        for agg in aggregates:
            key = self._row_key(grouping, agg.day, agg.model, agg.key_id, agg.provider, agg.tags)
            row = rows.get(key)
            if row is None:
                row = rows[key] = UsageRow(day=key[0], model=key[1], key_id=key[2], provider=key[3], tag=key[4])
            row.requests += agg.requests
            row.errors += agg.errors
            row.prompt_tokens += agg.prompt_tokens
            row.completion_tokens += agg.completion_tokens
            row.cost += agg.cost
            for i, n in enumerate(agg.latency_hist):
                row.latency_hist[i] += n
            for i, n in enumerate(agg.ttft_hist):
                row.ttft_hist[i] += n
        total = sum(r.requests for r in rows.values())
        exact = await self._exact_timings(grouping, scope, start, end) if 0 < total <= self._exact_limit else None
        for key, row in rows.items():
            if exact is not None and key in exact:
                latencies, ttfts = exact[key]
                row.latency_ms_p50 = exact_percentile(latencies, 0.5)
                row.latency_ms_p95 = exact_percentile(latencies, 0.95)
                row.ttft_ms_p50 = exact_percentile(ttfts, 0.5)
            else:
                row.exact = False
                row.latency_ms_p50 = estimate_percentile(row.latency_hist, 0.5)
                row.latency_ms_p95 = estimate_percentile(row.latency_hist, 0.95)
                row.ttft_ms_p50 = estimate_percentile(row.ttft_hist, 0.5)
        ordered = sorted(rows, key=lambda k: tuple("" if v is None else v for v in k))
        return grouping, [rows[k] for k in ordered]

    async def _exact_timings(self, grouping: Grouping, scope: str | None, start: float | None,
                             end: float | None) -> dict[tuple[Any, ...], tuple[list[int], list[int]]] | None:
        samples = await self._store.usage_samples(scope, start, end, self._exact_limit + 1)
        if len(samples) > self._exact_limit:
            return None
        out: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
        for s in samples:
            day = int(s.created_at // 86400) * 86400
            key = self._row_key(grouping, day, s.model, s.key_id, s.provider, s.tags)
            latencies, ttfts = out.setdefault(key, ([], []))
            latencies.append(s.latency_ms)
            if s.ttft_ms > 0:
                ttfts.append(s.ttft_ms)
        return out

    @staticmethod
    def _row_key(grouping: Grouping, day: int | None, model: str | None, key_id: str | None,
                 provider: str | None, tags: tuple[tuple[str, str], ...] | None) -> tuple[Any, ...]:
        dims = grouping.dimensions
        tag = None
        if grouping.tag is not None:
            tag = dict(tags or ()).get(grouping.tag)
        return (
            _day(day) if "day" in dims and day is not None else None,
            model if "model" in dims else None,
            key_id if "key" in dims else None,
            provider if "provider" in dims else None,
            tag,
        )

    async def generations(self, principal: Principal, *, key_id: str, model: str, status: str,
                          since: float | None, until: float | None, limit: int, after: str) -> GenerationPage:
        """GET /v1/generations: newest first, keyset-paged (`after` is the previous page's `next`)."""
        if status and status not in STATUSES:
            raise InvalidArgument(f"'status' must be one of {', '.join(STATUSES)}.", param="status")
        if limit < 0 or limit > MAX_PAGE:
            raise InvalidArgument(f"'limit' must be between 1 and {MAX_PAGE}.", param="limit")
        _check_range(since, until, "since", "until")
        before = decode_cursor(after) if after else None
        scope = await self._scope(principal, key_id)
        size = limit or DEFAULT_PAGE
        await self._settled()
        records = await self._store.list_usage(scope, model=model or None, status=status or None, since=since,
                                               until=until, before=before, limit=size + 1)
        has_more = len(records) > size
        records = records[:size]
        return GenerationPage(records, has_more, encode_cursor(records[-1]) if has_more else "")
