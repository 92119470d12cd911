"""The router: tries a request's routes in order with retries, backoff and circuit breaking.

Rules (SPEC §5, §10): the router acts on the adapter's classification of a failure only
(`UpstreamError.kind`, see core/errors.py), never on HTTP statuses:
- transient (connect error, timeout, 5xx, 429 before the first byte): retry the route with
  exponential backoff and jitter (honouring Retry-After), then fall back to the next route;
- broken (this route cannot serve anyone: upstream key refused or unset, model missing, malformed
  reply): no retry on this route, the next route is tried;
- rejected (the upstream refused the request itself): the caller's error, no other route tried.
Transient and broken failures count against the route's circuit breaker. Once a stream has
produced its first event the route is committed: later failures surface to the caller, never a
switch of route.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from raven_service.core.errors import BROKEN, REJECTED, TRANSIENT, UpstreamError
from raven_service.core.ports import ChatProvider
from raven_service.core.types import ChatEvent, ChatResult, ModelInfo, ProviderChatRequest, Route


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.25
    max_delay: float = 4.0


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class CircuitBreakers:
    """Per-route breakers: `threshold` consecutive failures open a route for `cooldown` seconds;
    then one probe is let through (half-open); its success closes the breaker."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._state: dict[tuple[str, str], _Breaker] = {}

    def allow(self, route: Route) -> bool:
        b = self._state.get((route.provider, route.model))
        if b is None or b.failures < self.threshold:
            return True
        if self._clock() < b.open_until or b.probing:
            return False
        b.probing = True  # half-open: this caller is the probe
        return True

    def success(self, route: Route) -> None:
        self._state.pop((route.provider, route.model), None)

    def release(self, route: Route) -> None:
        """An attempt ended without a verdict on the route's health (the upstream refused the request
        itself, or the caller went away): if it was the half-open probe, the next request probes."""
        b = self._state.get((route.provider, route.model))
        if b is not None:
            b.probing = False

    def failure(self, route: Route) -> None:
        b = self._state.setdefault((route.provider, route.model), _Breaker())
        b.failures += 1
        b.probing = False
        if b.failures >= self.threshold:
            b.open_until = self._clock() + self.cooldown

    def is_open(self, route: Route) -> bool:
        b = self._state.get((route.provider, route.model))
        return b is not None and b.failures >= self.threshold and self._clock() < b.open_until


class Routed(Protocol):
    """What the router needs of a target: the route it would take."""

    @property
    def route(self) -> Route: ...


T = TypeVar("T", bound=Routed)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RouteOnly:
    """A target that is its route alone (the request is the same on every route: embeddings)."""

    route: Route


@dataclass(frozen=True, slots=True)
class Target:
    """One model of the plan with the request as that model gets it."""

    model: ModelInfo
    route: Route
    request: ProviderChatRequest


@dataclass(slots=True)
class Outcome:
    """What the router did: the route that served (if any) and every attempt."""

    served: Target | None = None
    attempts: list[str] = field(default_factory=list)


class NoRouteAvailable(UpstreamError):
    code = "no_route_available"


class Router:
    def __init__(
        self,
        providers: dict[str, ChatProvider],
        policies: dict[str, RetryPolicy] | None = None,
        breakers: CircuitBreakers | None = None,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._providers = providers
        self._policies = policies or {}
        self.breakers = breakers or CircuitBreakers()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def provider(self, name: str) -> ChatProvider:
        return self._providers[name]

    def _delay(self, policy: RetryPolicy, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, policy.max_delay)
        backoff = min(policy.max_delay, policy.base_delay * (2**attempt))
        return backoff * (0.5 + self._rng.random() / 2)  # jitter

    async def _attempts(self, targets: Sequence[Routed], outcome: Outcome):
        """Yields (target, try_number) for every allowed attempt, sleeping between retries."""
        last_error: UpstreamError | None = None
        for target in targets:
            if not self.breakers.allow(target.route):
                outcome.attempts.append(f"{target.route.provider}/{target.route.model}:circuit_open")
                continue
            policy = self._policies.get(target.route.provider, RetryPolicy())
            for n in range(policy.max_retries + 1):
                error = yield target, n
                if error is None:
                    return
                last_error = error
                if error.kind == REJECTED:
                    raise error
                if error.kind == BROKEN:
                    break  # this route cannot serve anyone: no retry, but the next route may
                if error.retry_after is not None and error.retry_after > policy.max_delay:
                    break  # the upstream asks for a longer pause than we may wait: try the next route
                if n < policy.max_retries:
                    await self._sleep(self._delay(policy, n, error.retry_after))
        if last_error is not None:
            raise last_error
        raise NoRouteAvailable("No route is available for this model right now (all circuits open).",
                               kind=TRANSIENT, public="No route is available for this model right now. Please retry.")

    def _note(self, outcome: Outcome, target: Routed, result: str) -> None:
        outcome.attempts.append(f"{target.route.provider}/{target.route.model}:{result}")

    def _failed(self, outcome: Outcome, target: Routed, exc: UpstreamError) -> None:
        """Notes a failed attempt; failures of the route (not of the request) count against its breaker."""
        self._note(outcome, target, exc.code)
        if exc.kind in (TRANSIENT, BROKEN):
            self.breakers.failure(target.route)
        else:
            self.breakers.release(target.route)

    async def complete(self, targets: list[Target], outcome: Outcome) -> ChatResult:
        async def attempt(target: Target) -> ChatResult:
            return await self._providers[target.route.provider].complete(target.request)

        served, result = await self.call(targets, attempt, outcome.attempts)
        outcome.served = served
        return result

    async def call(self, targets: Sequence[T], attempt: Callable[[T], Awaitable[R]], attempts: list[str]
                   ) -> tuple[T, R]:
        """One-shot upstream work (a completion, an embeddings batch) under the rules above: each
        target (anything with a `.route`) in order, retried, its breaker consulted and told.
        Returns the target that served and its result; every attempt is noted in `attempts`."""
        outcome = Outcome(attempts=attempts)
        gen = self._attempts(list(targets), outcome)
        try:
            step = await gen.__anext__()
            while True:
                target, _ = step
                try:
                    result = await attempt(target)
                except UpstreamError as exc:
                    self._failed(outcome, target, exc)
                    step = await gen.asend(exc)
                    continue
                except BaseException:  # cancelled (or a bug): no verdict on the route
                    self.breakers.release(target.route)
                    raise
                self._note(outcome, target, "ok")
                self.breakers.success(target.route)
                return target, result
        finally:
            await gen.aclose()

    async def stream(self, targets: list[Target], outcome: Outcome) -> AsyncGenerator[ChatEvent, None]:
        """Streams from the first route that produces an event; fails over only before that."""
        gen = self._attempts(targets, outcome)
        try:
            step = await gen.__anext__()
            while True:
                target, _ = step
                events = self._providers[target.route.provider].stream(target.request)
                try:
                    first = await events.__anext__()
                except UpstreamError as exc:
                    await events.aclose()
                    self._failed(outcome, target, exc)
                    step = await gen.asend(exc)
                    continue
                except StopAsyncIteration:
                    first = None
                except BaseException:  # cancelled before the first event (or a bug): no verdict
                    self.breakers.release(target.route)
                    await events.aclose()
                    raise
                outcome.served = target
                self._note(outcome, target, "ok")
                self.breakers.success(target.route)
                break
        finally:
            await gen.aclose()
        try:
            if first is not None:
                yield first
                async for event in events:
                    yield event
        finally:
            await events.aclose()
