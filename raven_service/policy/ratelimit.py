"""In-process limits (the embedded default): RPM per fixed 60 s window, concurrency slots."""

from __future__ import annotations

import time
from dataclasses import dataclass

WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The outcome of an RPM check; also what the x-ratelimit-* headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """The outcome of a TPM reservation; what the x-ratelimit-*-tokens headers report. `window`
    identifies the window the tokens were reserved in (settling touches only that window)."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    window: float = 0.0
    reserved: int = 0


class _Slot:
    __slots__ = ("_counts", "_key", "_released")

    def __init__(self, counts: dict[str, int], key: str) -> None:
        self._counts = counts
        self._key = key
        self._released = False

    async def release(self) -> None:
        self.release_now()

    def release_now(self) -> None:
        """Gives the slot back at once (an in-process slot needs no I/O)."""
        if not self._released:
            self._released = True
            left = self._counts.get(self._key, 1) - 1
            if left <= 0:
                self._counts.pop(self._key, None)
            else:
                self._counts[self._key] = left


class InProcessLimiter:
    """Fixed-window RPM (admits up to RPM requests in one burst) and concurrency counters.

    Holds only for one process: with several processes use the Redis limiter.
    """

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._tokens: dict[str, tuple[float, int]] = {}
        self._slots: dict[str, int] = {}

    def _window(self, key_id: str) -> tuple[float, int]:
        now = self._clock()
        start, count = self._windows.get(key_id, (now, 0))
        if now - start >= WINDOW:
            start, count = now, 0
        return start, count

    async def hit_rpm(self, key_id: str, rpm: int) -> RateInfo:
        start, count = self._window(key_id)
        reset = max(0.0, WINDOW - (self._clock() - start))
        if rpm <= 0:
            return RateInfo(True, 0, 0, reset)
        if count >= rpm:
            self._windows[key_id] = (start, count)
            return RateInfo(False, rpm, 0, reset)
        self._windows[key_id] = (start, count + 1)
        return RateInfo(True, rpm, rpm - count - 1, reset)

    async def peek_rpm(self, key_id: str, rpm: int) -> RateInfo:
        start, count = self._window(key_id)
        reset = max(0.0, WINDOW - (self._clock() - start))
        return RateInfo(True, rpm, max(0, rpm - count) if rpm > 0 else 0, reset)

    def _token_window(self, key_id: str) -> tuple[float, int]:
        now = self._clock()
        start, used = self._tokens.get(key_id, (now, 0))
        if now - start >= WINDOW:
            start, used = now, 0
        return start, used

    async def hit_tokens(self, key_id: str, tpm: int, tokens: int) -> TokenInfo:
        """Reserves `tokens` in the key's fixed 60 s token window iff they fit under `tpm`."""
        start, used = self._token_window(key_id)
        reset = max(0.0, WINDOW - (self._clock() - start))
        if tpm <= 0:
            return TokenInfo(True, 0, 0, reset)
        if used + tokens > tpm:
            self._tokens[key_id] = (start, used)
            return TokenInfo(False, tpm, max(0, tpm - used), reset, start)
        self._tokens[key_id] = (start, used + tokens)
        return TokenInfo(True, tpm, tpm - used - tokens, reset, start, tokens)

    async def settle_tokens(self, key_id: str, window: float, delta: int) -> None:
        """Corrects a reservation by `delta` (actual - reserved) if its window is still running."""
        start, used = self._token_window(key_id)
        if start == window and delta:
            self._tokens[key_id] = (start, max(0, used + delta))

    async def peek_tokens(self, key_id: str, tpm: int) -> TokenInfo:
        start, used = self._token_window(key_id)
        reset = max(0.0, WINDOW - (self._clock() - start))
        return TokenInfo(True, tpm, max(0, tpm - used) if tpm > 0 else 0, reset, start)

    async def acquire_slot(self, key_id: str, limit: int) -> _Slot | None:
        return self.acquire_slot_now(key_id, limit)

    def acquire_slot_now(self, key_id: str, limit: int) -> _Slot | None:
        """`acquire_slot` without awaiting: the slots live in this process (see core.ports.LocalSlots)."""
        held = self._slots.get(key_id, 0)
        if limit > 0 and held >= limit:
            return None
        self._slots[key_id] = held + 1
        return _Slot(self._slots, key_id)

    async def close(self) -> None:
        self._windows.clear()
        self._tokens.clear()
