"""core/deadline.py: `asyncio.timeout`'s behaviour with shared loop timers.

Each case checks a behaviour that the request path relies on: a deadline turns into TimeoutError
and never fires early, a cancellation from outside stays a CancelledError, nesting works both
ways, and deadlines close together share one loop timer."""

from __future__ import annotations

import asyncio

import pytest

from raven_service.core.deadline import fire_time, within, within_at

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("span", [0.0, 1e-5, 0.0009, 0.003, 0.05, 0.2, 1.0, 7.5, 60.0, 120.0, 600.0, 86_400.0])
@pytest.mark.parametrize("now", [0.0, 12.345, 98_765.4321])
def test_fire_time_is_never_early_and_late_by_at_most_a_64th(now: float, span: float) -> None:
    at = fire_time(now, now + span)
    assert at >= now + span
    assert at - (now + span) <= max(span / 64, 2**-10) + 1e-9
    assert at - (now + span) <= 8.0


def test_deadlines_of_one_length_share_one_timer() -> None:
    now = 1000.0
    times = {fire_time(now + i * 0.001, now + i * 0.001 + 600.0) for i in range(1000)}  # 1 s of arrivals
    assert len(times) <= 2  # an 8 s resolution: the second's 1,000 deadlines share one or two timers


async def test_a_passed_deadline_raises_timeout_error_not_before_its_time() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with within(0.02) as deadline:
            await asyncio.sleep(5)
    assert deadline.expired
    assert loop.time() - start >= 0.02
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # no cancellation left pending


async def test_a_deadline_in_the_past_fires_at_the_first_await() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with within_at(loop.time() - 1):
            await asyncio.sleep(5)


async def test_a_block_that_ends_in_time_is_untouched() -> None:
    async with within(5) as deadline:
        await asyncio.sleep(0)
        value = 42
    assert value == 42 and not deadline.expired
    async with within(None), within_at(None):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # the group's timer fires idle: nothing is cancelled


async def test_an_outside_cancel_stays_a_cancelled_error() -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with within(5):
            entered.set()
            await asyncio.sleep(5)

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outside_cancel_together_with_the_deadline_stays_a_cancelled_error() -> None:
    with pytest.raises(asyncio.CancelledError):
        async with within(5) as deadline:
            deadline.expire()
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            await asyncio.sleep(0)
    asyncio.current_task().uncancel()  # type: ignore[union-attr]  # (this test's own cancel)


async def test_nested_inner_deadline_is_caught_inside_the_outer() -> None:
    async with within(5) as outer:
        with pytest.raises(TimeoutError):
            async with within(0.01):
                await asyncio.sleep(5)
        await asyncio.sleep(0)  # the outer block goes on
    assert not outer.expired


async def test_nested_outer_deadline_passes_through_the_inner_as_cancellation() -> None:
    seen: list[type[BaseException]] = []
    with pytest.raises(TimeoutError):
        async with within(0.01):
            try:
                async with within(5):
                    await asyncio.sleep(5)
            except BaseException as exc:
                seen.append(type(exc))
                raise
    assert seen == [asyncio.CancelledError]
