"""Pure parts of usage aggregation: the histogram layout, percentile estimates, range plans."""

from __future__ import annotations

import itertools

from raven_service.core.latency import BOUNDS_MS, BUCKETS, bucket_of, estimate_percentile, exact_percentile, histogram
from raven_service.storage.rollup import DAY, HOUR, plan

T0 = 1_790_000_000 - 1_790_000_000 % DAY  # a UTC midnight


def test_buckets_cover_every_value_with_bounded_width() -> None:
    assert BUCKETS == 53 and BOUNDS_MS[:6] == (0, 5, 10, 12, 15, 20) and BOUNDS_MS[-1] == 1_000_000
    assert [bucket_of(v) for v in (-3, 0, 4, 5, 11, 12, 999_999, 1_000_000, 10**9)] == [0, 0, 0, 1, 2, 3, 51, 52, 52]
    assert all(hi <= lo * 4 / 3 for lo, hi in itertools.pairwise(BOUNDS_MS[2:]))


def test_percentile_estimates_interpolate_inside_the_bucket() -> None:
    assert estimate_percentile([0] * BUCKETS, 0.5) is None
    counts = histogram([100] * 4)  # all in [100, 120)
    assert estimate_percentile(counts, 0.5) == 110 and estimate_percentile(counts, 1.0) == 120
    counts = histogram([10] * 50 + [1000] * 50)
    assert estimate_percentile(counts, 0.5) == 12  # the top of [10, 12): rank 50 of 50 in it
    assert estimate_percentile(counts, 0.95) == 1180  # [1000, 1200), rank 45 of 50
    assert estimate_percentile(histogram([5_000_000]), 0.5) == 1_000_000  # the open last bucket


def test_exact_percentile_is_nearest_rank() -> None:
    assert exact_percentile([], 0.5) is None
    assert exact_percentile([40, 10, 30, 20], 0.5) == 20
    assert exact_percentile(list(range(1, 101)), 0.95) == 95
    assert exact_percentile([7], 0.95) == 7


def test_plans_split_ranges_into_days_hours_and_partial_hours() -> None:
    assert plan(None, None) == ([(None, None)], [], [])
    assert plan(T0, T0 + DAY) == ([(T0, T0 + DAY)], [], [])
    assert plan(T0 + 100, T0 + 200) == ([], [], [(T0 + 100, T0 + 200)])
    assert plan(T0 + 3000, T0 + 4000) == ([], [], [(T0 + 3000, T0 + 4000)])
    assert plan(T0 + 10, T0 + 3 * HOUR + 5) == ([], [(T0 + HOUR, T0 + 3 * HOUR)],
                                                 [(T0 + 10, T0 + HOUR), (T0 + 3 * HOUR, T0 + 3 * HOUR + 5)])
    assert plan(T0 + 5 * HOUR + 1, T0 + 2 * DAY + 7) == (
        [(T0 + DAY, T0 + 2 * DAY)], [(T0 + 6 * HOUR, T0 + DAY)],
        [(T0 + 5 * HOUR + 1, T0 + 6 * HOUR), (T0 + 2 * DAY, T0 + 2 * DAY + 7)])
    assert plan(None, T0 + DAY + HOUR) == ([(None, T0 + DAY)], [(T0 + DAY, T0 + DAY + HOUR)], [])
    assert plan(T0 + 500, T0 + 500) == ([], [], [])
