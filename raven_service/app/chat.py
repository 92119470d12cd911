"""The chat use case: validate, admit, route, account. One usage record per completion, always."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from decimal import Decimal

from raven_service.accounting.pricing import chat_cost
from raven_service.accounting.usage import UsageWriter
from raven_service.app.admission import Admitter, Ticket
from raven_service.app.validation import validate_chat
from raven_service.core.errors import RavenError, UpstreamError
from raven_service.core.tokens import count_message_tokens, count_tokens
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    Finish,
    ModelInfo,
    Principal,
    ProviderChatRequest,
    TextDelta,
    ToolCallDelta,
    UsageRecord,
    UsageReport,
)
from raven_service.routing.catalogue import Catalogue, filter_params
from raven_service.routing.router import Outcome, Router, Target


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


class ChatUseCase:
    def __init__(self, catalogue: Catalogue, router: Router, admitter: Admitter, usage: UsageWriter) -> None:
        self._catalogue = catalogue
        self._router = router
        self._admitter = admitter
        self._usage = usage

    async def admit(self, principal: Principal, req: ChatRequest) -> ChatAdmission:
        """Validates and admits; raises a RavenError carrying the rate state otherwise."""
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
                targets.extend(
                    Target(model=m, route=r, request=ProviderChatRequest(upstream_model=r.model, request=filtered))
                    for r in m.routes
                )
            prompt_tokens = count_message_tokens(req.messages, req.tools)
            max_out = req.max_tokens or model.max_output_tokens
            worst = max(chat_cost(m, prompt_tokens, max_out) for m in chain)
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            raise
        ticket = await self._admitter.admit(principal, worst)
        return ChatAdmission(
            id="chatcmpl-" + uuid.uuid4().hex,
            ticket=ticket,
            model=model,
            targets=targets,
            dropped=dropped,
            prompt_tokens=prompt_tokens,
            stream=req.stream,
        )

    def _finish(
        self,
        adm: ChatAdmission,
        outcome: Outcome,
        *,
        status: str,
        prompt_tokens: int,
        completion_tokens: int,
        estimated: bool,
        finish_reason: str = "",
        native: str = "",
        ttft: float | None = None,
        error: str = "",
    ) -> Decimal:
        served = outcome.served
        model = served.model if served else adm.model
        cost = chat_cost(model, prompt_tokens, completion_tokens)
        now = time.monotonic()
        self._usage.record(
            UsageRecord(
                id=adm.id,
                key_id=adm.ticket.principal.key_id,
                kind="chat",
                model=adm.model.id,
                provider=served.route.provider if served else "",
                upstream_model=served.route.model if served else "",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost=cost,
                latency_ms=int((now - adm.ticket.started) * 1000),
                ttft_ms=int((ttft - adm.ticket.started) * 1000) if ttft else 0,
                status=status,
                finish_reason=finish_reason,
                native_finish_reason=native,
                streamed=adm.stream,
                usage_estimated=estimated,
                attempts=tuple(outcome.attempts),
                error=error,
                created_at=adm.ticket.created,
            )
        )
        self._admitter.finish(adm.ticket, cost)
        return cost

    async def complete(self, adm: ChatAdmission) -> ChatCompletion:
        outcome = Outcome()
        try:
            result = await self._router.complete(adm.targets, outcome)
        except asyncio.CancelledError:
            self._finish(adm, outcome, status="cancelled", prompt_tokens=adm.prompt_tokens,
                         completion_tokens=0, estimated=True)
            raise
        except RavenError as exc:
            self._finish(adm, outcome, status="failed", prompt_tokens=0, completion_tokens=0,
                         estimated=False, finish_reason="error", error=exc.message)
            exc.rate = adm.ticket.rate
            raise
        except BaseException as exc:
            self._finish(adm, outcome, status="failed", prompt_tokens=0, completion_tokens=0,
                         estimated=False, finish_reason="error", error=type(exc).__name__)
            raise
        cost = self._finish(
            adm, outcome, status="completed", prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, estimated=result.usage_estimated,
            finish_reason=result.finish_reason, native=result.native_finish_reason, ttft=time.monotonic(),
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
        The usage record is written however the stream ends, including cancellation."""
        outcome = Outcome()
        completion_tokens = 0
        estimated_text: list[str] = []
        usage: UsageReport | None = None
        finish: Finish | None = None
        ttft: float | None = None
        status = "cancelled"
        error = ""
        try:
            async for event in self._router.stream(adm.targets, outcome):
                if ttft is None:
                    ttft = time.monotonic()
                    yield Served(provider=outcome.served.route.provider if outcome.served else "")
                if type(event) is TextDelta:
                    estimated_text.append(event.text)
                elif type(event) is ToolCallDelta:
                    estimated_text.append(event.arguments)
                elif type(event) is UsageReport:
                    usage = event
                    continue
                elif type(event) is Finish:
                    finish = event
                yield event
            status = "completed"
        except UpstreamError as exc:
            if ttft is None:
                status, error = "failed", exc.message
                exc.rate = adm.ticket.rate
                raise
            status, error = "failed", exc.message
            finish = Finish(reason="error", native=finish.native if finish else "")
            yield StreamFailed(message=exc.message, code=exc.code)
            yield finish
        except RavenError as exc:
            status, error = "failed", exc.message
            exc.rate = adm.ticket.rate
            raise
        finally:
            if usage is not None:
                prompt, completion_tokens, estimated = usage.prompt_tokens, usage.completion_tokens, usage.estimated
            else:
                prompt = adm.prompt_tokens if ttft is not None or status == "cancelled" else 0
                completion_tokens = count_tokens("".join(estimated_text))
                estimated = True
            cost = self._finish(
                adm, outcome, status=status, prompt_tokens=prompt, completion_tokens=completion_tokens,
                estimated=estimated, finish_reason=finish.reason if finish else "",
                native=finish.native if finish else "", ttft=ttft, error=error,
            )
        yield StreamEnd(
            usage=UsageReport(prompt_tokens=prompt, completion_tokens=completion_tokens, estimated=estimated),
            cost=cost,
        )
