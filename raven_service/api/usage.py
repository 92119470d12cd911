"""UsageService servicer: generation records, their list and aggregated usage (rules in app.usage)."""

from __future__ import annotations

from decimal import Decimal

from raven.v1 import usage_service_pb2, usage_service_pb2_grpc
from raven_service.accounting.pricing import fmt
from raven_service.api import convert
from raven_service.api.context import authenticate, set_rate_trailer
from raven_service.api.errors import abort
from raven_service.app.admission import Admitter
from raven_service.app.usage import UsageQueries, UsageRow
from raven_service.core.errors import RavenError
from raven_service.policy.auth import Authenticator


def _seconds(message, name: str) -> float | None:
    return getattr(message, name).ToNanoseconds() / 1e9 if message.HasField(name) else None


def usage_row(r: UsageRow) -> usage_service_pb2.UsageRow:
    return usage_service_pb2.UsageRow(
        day=r.day, model=r.model, key_id=r.key_id, provider=r.provider, tag=r.tag, requests=r.requests,
        errors=r.errors, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, cost=fmt(r.cost),
        latency_ms_p50=r.latency_ms_p50, latency_ms_p95=r.latency_ms_p95, ttft_ms_p50=r.ttft_ms_p50,
        exact_percentiles=r.exact,
    )


class UsageServicer(usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(self, auth: Authenticator, usage: UsageQueries, admitter: Admitter) -> None:
        self._auth = auth
        self._usage = usage
        self._admitter = admitter

    async def _fail(self, context, exc: RavenError, principal) -> None:
        await self._admitter.attach_rate(exc, principal)
        await abort(context, exc)

    async def GetGeneration(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            rec = await self._usage.generation(principal, request.id)
        except RavenError as exc:
            await self._fail(context, exc, principal)
            raise
        set_rate_trailer(context, await self._admitter.peek(principal))
        return usage_service_pb2.GetGenerationResponse(generation=convert.generation(rec))

    async def GetUsage(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            key_id, rows = await self._usage.summary(principal, request.key_id, _seconds(request, "start_time"),
                                                     _seconds(request, "end_time"))
        except RavenError as exc:
            await self._fail(context, exc, principal)
            raise
        set_rate_trailer(context, await self._admitter.peek(principal))
        return usage_service_pb2.GetUsageResponse(
            key_id=key_id,
            requests=sum(r.requests for r in rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
            total_cost=fmt(sum((r.cost for r in rows), start=Decimal(0))),
            models=[usage_service_pb2.ModelUsage(model=r.model or "", requests=r.requests,
                                                 prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                                                 total_cost=fmt(r.cost))
                    for r in rows],
        )

    async def QueryUsage(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            grouping, rows = await self._usage.usage(
                principal, key_id=request.key_id, start=_seconds(request, "start_time"),
                end=_seconds(request, "end_time"), group_by=list(request.group_by))
        except RavenError as exc:
            await self._fail(context, exc, principal)
            raise
        set_rate_trailer(context, await self._admitter.peek(principal))
        return usage_service_pb2.QueryUsageResponse(rows=[usage_row(r) for r in rows], group_by=grouping.names)

    async def ListGenerations(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            page = await self._usage.generations(
                principal, key_id=request.key_id, model=request.model, status=request.status,
                since=_seconds(request, "since_time"), until=_seconds(request, "until_time"), limit=request.limit,
                after=request.after)
        except RavenError as exc:
            await self._fail(context, exc, principal)
            raise
        set_rate_trailer(context, await self._admitter.peek(principal))
        return usage_service_pb2.ListGenerationsResponse(
            generations=[convert.generation(r) for r in page.records], has_more=page.has_more, next=page.next)
