"""Latency histograms: the fixed bucket layout of the usage rollup and percentiles from it.

The rollup (storage) keeps, per (hour or day, key, model, provider, tags), how many requests
fell into each latency bucket and each time-to-first-token bucket. Bucket `i` holds values in
`[BOUNDS_MS[i], BOUNDS_MS[i + 1])` milliseconds; the last one everything from `BOUNDS_MS[-1]`
up. The edges follow a 1-1.2-1.5-2-2.5-3-4-5-6-8 series, so a bucket is at most a third wider
than its lower edge. The layout is part of the storage schema (migration 5 builds columns from
it): never change it in place, add a new rollup instead.

Percentiles from a histogram are estimates, interpolated linearly inside the bucket that holds
the wanted rank (the way Prometheus' `histogram_quantile` does): the error is bounded by that
bucket's width (at most 33 % of its lower edge, usually far less). `exact_percentile` is the
nearest-rank percentile of raw values, used when a query covers few records.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

_SERIES = (10, 12, 15, 20, 25, 30, 40, 50, 60, 80)

#: Lower edges of the buckets in milliseconds: 0, 5, 10, 12, 15, ... 800000, 1000000.
BOUNDS_MS: tuple[int, ...] = (0, 5, *(s * 10**d for d in range(5) for s in _SERIES), 1_000_000)
BUCKETS = len(BOUNDS_MS)


def bucket_of(ms: int) -> int:
    """The index of the bucket holding `ms` (negative values count as 0)."""
    return max(0, bisect.bisect_right(BOUNDS_MS, ms) - 1)


def histogram(values: Sequence[int]) -> list[int]:
    """The bucket counts of `values`."""
    counts = [0] * BUCKETS
    for v in values:
        counts[bucket_of(v)] += 1
    return counts


def estimate_percentile(counts: Sequence[int], q: float) -> int | None:
    """The `q` quantile (0 < q <= 1) of the values counted in `counts`, interpolated inside its
    bucket; None when the histogram is empty. The open last bucket answers its lower edge."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            low = BOUNDS_MS[i]
            if i + 1 == BUCKETS:
                return low
            high = BOUNDS_MS[i + 1]
            return round(low + (high - low) * (rank - seen) / n)
        seen += n
    return BOUNDS_MS[-1]  # unreachable for q <= 1


def exact_percentile(values: Sequence[int], q: float) -> int | None:
    """The nearest-rank `q` quantile of `values` (an observed value); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
