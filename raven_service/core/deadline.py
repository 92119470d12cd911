"""Deadlines for hot paths: `asyncio.timeout`'s behaviour, with loop timers shared between them.

`asyncio.timeout` arms one loop timer per use and cancels it at exit: about 8 µs under uvloop,
and a request met three or four (the in-process call, the request, the upstream's first byte)
plus one per upstream read of a stream. Here deadlines that fall close together share one timer:
a deadline `d` seconds away joins the group that fires at the next multiple of a resolution below
`d / 64` (a power of two between 1 ms and 8 s). It therefore fires at most ~1.6 % of its length
late (and 1 ms for short ones), never early. Entering is a set insertion, leaving a removal; a
group whose members have all left lets its timer fire idle.

Semantics are `asyncio.timeout`'s (Python 3.12's nesting rules): when the deadline passes
inside the block, the task is cancelled, and the resulting `CancelledError` leaves the block as
`TimeoutError`, unless the task was also cancelled from outside, in which case it stays a
`CancelledError`. A deadline of None never fires.
"""

from __future__ import annotations

import asyncio
import math
import threading
from types import TracebackType
from typing import Final

__all__ = ["fire_time", "within", "within_at"]

_MIN_EXP: Final = -10  # 2**-10 s, ~1 ms
_MAX_EXP: Final = 3  # 8 s
#: The resolutions, 2**_MIN_EXP .. 2**_MAX_EXP s; a deadline `d` s away uses 2**(floor(log2 d) - 6).
_STEPS: Final = tuple(math.ldexp(1.0, e) for e in range(_MIN_EXP, _MAX_EXP + 1))
_LAST: Final = len(_STEPS) - 1


def fire_time(now: float, when: float) -> float:
    """When the shared timer of a deadline at `when` (loop time, seen at `now`) fires: the first
    multiple of its group's resolution at or after `when`."""
    # int(d * 1024).bit_length() is floor(log2 d) + 11 (0 below 1/1024 s): the index is that - 7.
    i = int((when - now) * 1024.0).bit_length() - 7 if when > now else 0
    step = _STEPS[0 if i < 0 else _LAST if i > _LAST else i]
    return -(-when // step) * step


class _Timers:
    """One loop's groups: fire time -> the deadlines waiting on it."""

    __slots__ = ("groups", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.groups: dict[float, set[_Deadline]] = {}

    def join(self, deadline: _Deadline, now: float, when: float) -> set[_Deadline]:
        at = fire_time(now, when)
        group = self.groups.get(at)
        if group is None:
            group = self.groups[at] = set()
            self.loop.call_at(at, self._fire, at)
        group.add(deadline)
        return group

    def _fire(self, at: float) -> None:
        group = self.groups.pop(at, None)
        if group:
            for deadline in tuple(group):
                deadline.expire()


_local = threading.local()  # .timers: the groups of the loop this thread ran last


def _timers_of(loop: asyncio.AbstractEventLoop) -> _Timers:
    timers: _Timers | None = getattr(_local, "timers", None)
    if timers is None or timers.loop is not loop:
        timers = _local.timers = _Timers(loop)  # a new loop; the old one's timers still hold their groups
    return timers


class _Deadline:
    __slots__ = ("_cancelling", "_delay", "_expired", "_group", "_task", "_when")

    def __init__(self, when: float | None, delay: float | None = None) -> None:
        self._when = when  # loop time, or None: `_delay` seconds from entering (None: never)
        self._delay = delay
        self._group: set[_Deadline] | None = None
        self._expired = False
        self._cancelling = 0
        self._task: asyncio.Task[object] | None = None

    @property
    def expired(self) -> bool:
        """Whether the deadline passed inside the block."""
        return self._expired

    async def __aenter__(self) -> _Deadline:
        when, delay = self._when, self._delay
        if when is None and delay is None:
            return self
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = task.get_loop()
        now = loop.time()
        if when is None:
            when = self._when = now + delay  # type: ignore[operator]  # delay is set when when is not
        self._group = _timers_of(loop).join(self, now, when)
        return self

    def expire(self) -> None:
        if self._group is not None and self._task is not None:
            self._group = None
            self._expired = True
            self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.discard(self)
        elif (self._expired and self._task is not None  # expired: take back our cancel request
              and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError):
            raise TimeoutError from exc


def within(delay: float | None) -> _Deadline:
    """`async with within(seconds):` like `asyncio.timeout(seconds)` (None: no deadline)."""
    return _Deadline(None, delay)


def within_at(when: float | None) -> _Deadline:
    """`async with within_at(loop_time):` like `asyncio.timeout_at(loop_time)`."""
    return _Deadline(when)
