"""KeyService and UsageService servicers."""

from __future__ import annotations

from raven.v1 import key_service_pb2, key_service_pb2_grpc, usage_service_pb2, usage_service_pb2_grpc
from raven_service.accounting.pricing import fmt
from raven_service.api import convert
from raven_service.api.context import authenticate, set_rate_trailer
from raven_service.api.errors import abort
from raven_service.app.accounts import KeyAdmin, UsageQueries
from raven_service.app.admission import Admitter
from raven_service.core.errors import RavenError
from raven_service.policy.auth import Authenticator


class KeyServicer(key_service_pb2_grpc.KeyServiceServicer):
    def __init__(self, auth: Authenticator, keys: KeyAdmin) -> None:
        self._auth = auth
        self._keys = keys

    async def CreateKey(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            key, secret = await self._keys.create(
                principal, name=request.name,
                rpm=request.rpm if request.HasField("rpm") else None,
                concurrency=request.concurrency if request.HasField("concurrency") else None,
                credits=request.credits if request.HasField("credits") else None, admin=request.admin)
        except RavenError as exc:
            await abort(context, exc)
            raise
        return key_service_pb2.CreateKeyResponse(key=convert.api_key(key), secret=secret)

    async def ListKeys(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            keys = await self._keys.list(principal, request.include_revoked)
        except RavenError as exc:
            await abort(context, exc)
            raise
        return key_service_pb2.ListKeysResponse(keys=[convert.api_key(k) for k in keys])

    async def RevokeKey(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            key = await self._keys.revoke(principal, request.id)
        except RavenError as exc:
            await abort(context, exc)
            raise
        return key_service_pb2.RevokeKeyResponse(key=convert.api_key(key))

    async def UpdateKey(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            key = await self._keys.update(
                principal, request.id,
                name=request.name if request.HasField("name") else None,
                rpm=request.rpm if request.HasField("rpm") else None,
                concurrency=request.concurrency if request.HasField("concurrency") else None,
                credits=request.credits if request.HasField("credits") else None)
        except RavenError as exc:
            await abort(context, exc)
            raise
        return key_service_pb2.UpdateKeyResponse(key=convert.api_key(key))


class UsageServicer(usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(self, auth: Authenticator, usage: UsageQueries, admitter: Admitter) -> None:
        self._auth = auth
        self._usage = usage
        self._admitter = admitter

    async def GetGeneration(self, request, context):
        principal = await authenticate(self._auth, context)
        try:
            rec = await self._usage.generation(principal, request.id)
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            await abort(context, exc)
            raise
        set_rate_trailer(context, await self._admitter.peek(principal))
        return usage_service_pb2.GetGenerationResponse(generation=convert.generation(rec))

    async def GetUsage(self, request, context):
        principal = await authenticate(self._auth, context)
        start = request.start_time.ToNanoseconds() / 1e9 if request.HasField("start_time") else None
        end = request.end_time.ToNanoseconds() / 1e9 if request.HasField("end_time") else None
        try:
            key_id, rows = await self._usage.summary(principal, request.key_id, start, end)
        except RavenError as exc:
            await abort(context, exc)
            raise
        total = sum((r.cost for r in rows), start=convert.Decimal(0))
        return usage_service_pb2.GetUsageResponse(
            key_id=key_id,
            requests=sum(r.requests for r in rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
            total_cost=fmt(total),
            models=[usage_service_pb2.ModelUsage(model=r.model, requests=r.requests, prompt_tokens=r.prompt_tokens,
                                                 completion_tokens=r.completion_tokens, total_cost=fmt(r.cost))
                    for r in rows],
        )
