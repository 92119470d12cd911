"""The chat use case: validate, admit, route, account. One usage record per completion, always."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from raven_service.accounting.pricing import chat_cost
from raven_service.app.admission import Admitter, Ticket
from raven_service.app.validation import validate_chat
from raven_service.core.deadline import within
from raven_service.core.errors import RavenError, UpstreamError, UpstreamTimeout
from raven_service.core.tokens import count_message_tokens, count_tokens
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    Finish,
    ModelInfo,
    Principal,
    ProviderChatRequest,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UsageRecord,
    UsageReport,
)
from raven_service.policy.governance import check_inference, check_model
from raven_service.routing.catalogue import Catalogue, bound_name, filter_params
from raven_service.routing.router import Outcome, Router, Target

#: Generation id prefix by ingress dialect (the id is the key to GetGeneration either way).
_ID_PREFIX = {"messages": "msg_"}


@dataclass(slots=True)
class ChatAdmission:
    """An admitted chat request."""

    id: str
    ticket: Ticket
    model: ModelInfo
    targets: list[Target]
    dropped: tuple[str, ...]
    prompt_tokens: int
    stream: bool

    @property
    def created(self) -> int:
        return int(self.ticket.created)


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """Emitted (instead of raising) when a stream fails after its first event."""

    message: str
    code: str


@dataclass(frozen=True, slots=True)
class Served:
    """Emitted once, before the first event: the provider whose route is serving the stream."""

    provider: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last item of every stream: final usage and cost."""

    usage: UsageReport
    cost: Decimal


@dataclass(frozen=True, slots=True)
class ChatCompletion:
    id: str
    created: int
    model: str
    provider: str
    result: ChatResult
    cost: Decimal
    dropped: tuple[str, ...]


def _worst_cost(model: ModelInfo, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The most a request can cost (for the credit hold): the whole prompt may be written to a
    prompt cache, which some providers price above plain input."""
    plain = chat_cost(model, prompt_tokens, completion_tokens)
    if model.price_cache_write_per_mtok is None or model.price_cache_write_per_mtok <= model.price_input_per_mtok:
        return plain
    return chat_cost(model, prompt_tokens, completion_tokens, cache_creation_tokens=prompt_tokens)


class _Deadline:
    """A stream's overall deadline: one timer for the whole stream, where `asyncio.timeout_at`
    around each read would create, schedule and cancel a timer per event (measured: about a tenth
    of the CPU a streamed chunk costs). When it fires while the stream waits for its next event
    (`armed`), it cancels the task reading the stream, exactly like `asyncio.timeout` would;
    otherwise the stream ends at its next event (`expired`). The stream is always read by one task
    (the RPC's), the one that created this."""

    __slots__ = ("_base", "_cancelled", "_handle", "_task", "armed", "expired")

    def __init__(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task(loop)
        self.armed = False
        self.expired = False
        self._cancelled = False
        self._base = 0
        self._handle = loop.call_at(loop.time() + seconds, self._fire)

    def _fire(self) -> None:
        self.expired = True
        if self.armed and self._task is not None and not self._task.done():
            self._base = self._task.cancelling()
            self._task.cancel()
            self._cancelled = True

    async def next(self, events: AsyncIterator[Any]) -> Any:
        """The next item of `events`; TimeoutError once the deadline passed."""
        if self.expired:
            raise TimeoutError
        self.armed = True
        try:
            return await anext(events)
        except asyncio.CancelledError:
            if self._expired_here():
                raise TimeoutError from None
            raise
        finally:
            self.armed = False

    def _expired_here(self) -> bool:
        """On a CancelledError out of the read: whether it was this deadline's own cancellation
        (and nothing else asked to cancel the task), which then becomes a timeout."""
        if not self._cancelled or self._task is None:
            return False
        self._cancelled = False
        return self._task.uncancel() <= self._base

    def close(self) -> None:
        """The stream ended. Lets go of the task too: a cancelled task keeps its CancelledError,
        whose traceback keeps the frames holding this deadline, so a deadline still pointing at the
        task would make a reference cycle of every cancelled stream."""
        self._handle.cancel()
        self._task = None


class ChatUseCase:
    def __init__(self, catalogue: Catalogue, router: Router, admitter: Admitter, *,
                 request_timeout: float = 600.0) -> None:
        self._catalogue = catalogue
        self._router = router
        self._admitter = admitter
        self._request_timeout = request_timeout

    def count_tokens(self, principal: Principal, req: ChatRequest) -> tuple[ModelInfo, int]:
        """The model and the prompt tokens of `req`, counted as admission counts them (nothing is
        admitted or recorded: Anthropic's count_tokens). The key must be one that may call the
        model (inference scope, models allow-list), as for the request it prepares."""
        validate_chat(req)
        model = self._catalogue.resolve(req.model, "chat")
        check_inference(principal)
        check_model(principal, model.id)
        return model, count_message_tokens(req.messages, req.tools)

    @contextlib.asynccontextmanager
    async def admitted(self, principal: Principal, req: ChatRequest) -> AsyncIterator[ChatAdmission]:
        """Validates and admits (raising a RavenError carrying the rate state otherwise), then holds
        the request's admission scope: however the body ends, the request settles exactly once."""
        try:
            validate_chat(req)
            model = self._catalogue.resolve(req.model, "chat")
            chain = [model] + [self._catalogue.resolve(m, "chat", "models") for m in req.models if m != req.model]
            targets: list[Target] = []
            dropped: tuple[str, ...] = ()
            for i, m in enumerate(chain):
                filtered, names = filter_params(req, m)
                if i == 0:
                    dropped = names
                if filtered.max_tokens is None:
                    # The hold bounds the spend: an upstream is never left to generate without a cap.
                    filtered = msgspec.structs.replace(filtered, max_tokens=m.max_output_tokens,
                                                       max_tokens_name=bound_name(m.supported_parameters))
                targets.extend(
                    Target(model=m, route=r, request=ProviderChatRequest(upstream_model=r.model, request=filtered))
                    for r in m.routes
                )
            prompt_tokens = count_message_tokens(req.messages, req.tools)
            worst = max(_worst_cost(m, prompt_tokens, req.max_tokens or m.max_output_tokens) for m in chain)
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            raise
        adm_id = _ID_PREFIX.get(req.dialect, "chatcmpl-") + os.urandom(16).hex()

        def fallback(ticket: Ticket, status: str, error: str) -> UsageRecord:
            # Ended before the use case reported anything (e.g. cancelled before the first event):
            # the prompt may have reached an upstream, so a cancellation counts its (estimated) tokens.
            prompt = prompt_tokens if status == "cancelled" else 0
            return self._record(ticket, model, Outcome(), status=status, prompt_tokens=prompt, completion_tokens=0,
                                estimated=True, streamed=req.stream, error=error,
                                finish_reason="error" if status == "failed" else "")

        async with self._admitter.admitted(principal, worst, record_id=adm_id, fallback=fallback,
                                           models=[m.id for m in chain], tokens=prompt_tokens) as ticket:
            yield ChatAdmission(id=adm_id, ticket=ticket, model=model, targets=targets, dropped=dropped,
                                prompt_tokens=prompt_tokens, stream=req.stream)

    @staticmethod
    def _record(ticket: Ticket, model: ModelInfo, outcome: Outcome, *, status: str, prompt_tokens: int,
                completion_tokens: int, estimated: bool, streamed: bool, finish_reason: str = "", native: str = "",
                ttft: float | None = None, error: str = "", cached_tokens: int = 0, cache_creation_tokens: int = 0,
                reasoning_tokens: int = 0) -> UsageRecord:
        served = outcome.served
        priced = served.model if served else model
        return UsageRecord(
            id=ticket.id,
            key_id=ticket.principal.key_id,
            kind="chat",
            model=model.id,
            provider=served.route.provider if served else "",
            upstream_model=served.route.model if served else "",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cache_creation_tokens=cache_creation_tokens,
            reasoning_tokens=reasoning_tokens,
            cost=chat_cost(priced, prompt_tokens, completion_tokens, cached_tokens=cached_tokens,
                           cache_creation_tokens=cache_creation_tokens),
            latency_ms=int((time.monotonic() - ticket.started) * 1000),
            ttft_ms=int((ttft - ticket.started) * 1000) if ttft else 0,
            status=status,
            finish_reason=finish_reason,
            native_finish_reason=native,
            streamed=streamed,
            usage_estimated=estimated,
            attempts=tuple(outcome.attempts),
            error=error,
            created_at=ticket.created,
        )

    def _finish(self, adm: ChatAdmission, outcome: Outcome, **fields: Any) -> Decimal:
        """Reports the outcome to the admission scope (which settles it) and returns the cost."""
        rec = self._record(adm.ticket, adm.model, outcome, streamed=adm.stream, **fields)
        adm.ticket.record = rec
        return rec.cost

    def _timed_out(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"The request did not finish within {self._request_timeout:g}s.",
                               code="request_timeout")

    async def complete(self, adm: ChatAdmission) -> ChatCompletion:
        outcome = Outcome()
        try:
            async with within(self._request_timeout):
                result = await self._router.complete(adm.targets, outcome)
        except asyncio.CancelledError:
            self._finish(adm, outcome, status="cancelled", prompt_tokens=adm.prompt_tokens,
                         completion_tokens=0, estimated=True)
            raise
        except TimeoutError:
            exc = self._timed_out()
            self._finish(adm, outcome, status="failed", prompt_tokens=adm.prompt_tokens, completion_tokens=0,
                         estimated=True, finish_reason="error", error=exc.message)
            exc.rate = adm.ticket.rate
            raise exc from None
        except RavenError as exc:
            self._finish(adm, outcome, status="failed", prompt_tokens=0, completion_tokens=0,
                         estimated=False, finish_reason="error", error=exc.message)
            exc.rate = adm.ticket.rate
            raise
        except Exception as exc:
            self._finish(adm, outcome, status="failed", prompt_tokens=adm.prompt_tokens, completion_tokens=0,
                         estimated=True, finish_reason="error", error=f"internal error ({type(exc).__name__})")
            raise
        cost = self._finish(
            adm, outcome, status="completed", prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, estimated=result.usage_estimated,
            finish_reason=result.finish_reason, native=result.native_finish_reason, ttft=time.monotonic(),
            cached_tokens=result.cached_tokens, cache_creation_tokens=result.cache_creation_tokens,
            reasoning_tokens=result.reasoning_tokens,
        )
        served = outcome.served
        return ChatCompletion(
            id=adm.id,
            created=adm.created,
            model=adm.model.id,
            provider=served.route.provider if served else "",
            result=result,
            cost=cost,
            dropped=adm.dropped,
        )

    async def stream(
        self, adm: ChatAdmission
    ) -> AsyncGenerator[ChatEvent | Served | StreamFailed | StreamEnd, None]:
        """Yields provider events; a failure before the first event raises (the route chain is
        exhausted), a failure after it yields StreamFailed, then Finish('error') and a UsageReport.
        The outcome is reported however the stream ends, including cancellation; the admission
        scope around it settles even if this generator never starts."""
        outcome = Outcome()
        completion_tokens = 0
        estimated_text: list[str] = []
        usage: UsageReport | None = None
        finish: Finish | None = None
        ttft: float | None = None
        status = "cancelled"
        error = ""
        events = self._router.stream(adm.targets, outcome)
        deadline = _Deadline(self._request_timeout)
        try:
            while True:
                try:
                    event = await deadline.next(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._timed_out() from None
                if ttft is None:
                    ttft = time.monotonic()
                    yield Served(provider=outcome.served.route.provider if outcome.served else "")
                if type(event) is TextDelta:
                    estimated_text.append(event.text)
                elif type(event) is ToolCallDelta:
                    estimated_text.append(event.arguments)
                elif type(event) is ReasoningDelta:
                    estimated_text.append(event.text)
                elif type(event) is UsageReport:
                    usage = event
                    continue
                elif type(event) is Finish:
                    finish = event
                yield event
            status = "completed"
        except UpstreamError as exc:
            status, error = "failed", exc.message
            if ttft is None:
                exc.rate = adm.ticket.rate
                raise
            finish = Finish(reason="error", native=finish.native if finish else "")
            yield StreamFailed(message=exc.message, code=exc.code)
            yield finish
        except RavenError as exc:
            status, error = "failed", exc.message
            exc.rate = adm.ticket.rate
            raise
        except Exception as exc:  # a bug (ours or a provider's): failed, never "cancelled"
            status, error = "failed", f"internal error ({type(exc).__name__})"
            raise
        finally:
            deadline.close()
            await events.aclose()
            if usage is not None:
                prompt, completion_tokens, estimated = usage.prompt_tokens, usage.completion_tokens, usage.estimated
            else:
                prompt = adm.prompt_tokens if ttft is not None or status == "cancelled" else 0
                completion_tokens = count_tokens("".join(estimated_text))
                estimated = True
            cached = usage.cached_tokens if usage is not None else 0
            written = usage.cache_creation_tokens if usage is not None else 0
            reasoning = usage.reasoning_tokens if usage is not None else 0
            cost = self._finish(
                adm, outcome, status=status, prompt_tokens=prompt, completion_tokens=completion_tokens,
                estimated=estimated, finish_reason=finish.reason if finish else ("error" if status == "failed" else ""),
                native=finish.native if finish else "", ttft=ttft, error=error, cached_tokens=cached,
                cache_creation_tokens=written, reasoning_tokens=reasoning,
            )
        yield StreamEnd(
            usage=UsageReport(prompt_tokens=prompt, completion_tokens=completion_tokens, estimated=estimated,
                              cached_tokens=cached, cache_creation_tokens=written, reasoning_tokens=reasoning),
            cost=cost,
        )
