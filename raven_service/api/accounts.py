"""KeyService servicer (UsageService is in api.usage)."""

from __future__ import annotations

from raven.v1 import key_service_pb2, key_service_pb2_grpc
from raven_service.api import convert
from raven_service.api.context import authenticate
from raven_service.api.errors import abort
from raven_service.app.accounts import KeyAdmin
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
