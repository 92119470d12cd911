"""KeyService servicer (UsageService is in api.usage)."""

from __future__ import annotations

from decimal import Decimal

from raven.v1 import key_service_pb2, key_service_pb2_grpc
from raven_service.accounting.pricing import fmt
from raven_service.api import convert
from raven_service.api.context import unary_call
from raven_service.app.accounts import KeyAdmin, KeySpec, KeyView
from raven_service.app.admission import Admitter
from raven_service.policy.auth import Authenticator


def key_message(view: KeyView) -> key_service_pb2.ApiKey:
    """The proto of a key with its credit and budget status (never a secret)."""
    k = view.key
    msg = key_service_pb2.ApiKey(
        id=k.id, name=k.name, prefix=k.prefix, rpm=k.rpm, concurrency=k.concurrency,
        credits="" if k.credits is None else fmt(k.credits), credits_used=fmt(k.credits_used),
        admin=k.admin, revoked=k.revoked, create_time=convert.timestamp(k.created_at),
        models=list(k.models), tpm=k.tpm, scopes=list(k.scopes), metadata=k.metadata,
        alert_webhook=k.alert_webhook, alert_thresholds=list(k.alert_thresholds),
        credit_status=key_service_pb2.KeyCredits(
            limit="" if k.credits is None else fmt(k.credits), used=fmt(k.credits_used),
            remaining="" if (left := view.credits_remaining) is None else fmt(left)),
    )
    if k.expires_at is not None and (expires := convert.timestamp(k.expires_at)) is not None:
        msg.expires_at.CopyFrom(expires)
    if k.budget is not None:
        msg.budget.CopyFrom(key_service_pb2.KeyBudget(
            amount=fmt(k.budget), period=k.budget_period, used=fmt(view.budget_used),
            remaining=fmt(view.budget_remaining or Decimal(0)),
            resets_at=convert.timestamp(view.budget_resets_at) if view.budget_resets_at else None))
    return msg


def _spec_of_create(request: key_service_pb2.CreateKeyRequest) -> KeySpec:
    spec = KeySpec(name=request.name, admin=request.admin)
    if request.HasField("rpm"):
        spec.rpm = request.rpm
    if request.HasField("concurrency"):
        spec.concurrency = request.concurrency
    if request.HasField("credits"):
        spec.credits = request.credits
    if request.HasField("tpm"):
        spec.tpm = request.tpm
    if request.HasField("budget"):
        spec.budget = (request.budget.amount, request.budget.period)
    if request.models:
        spec.models = list(request.models)
    if request.expires_at:
        spec.expires_at = request.expires_at
    if request.expires_in:
        spec.expires_in = request.expires_in
    if request.scopes:
        spec.scopes = list(request.scopes)
    if request.metadata:
        spec.metadata = dict(request.metadata)
    if request.alert_webhook:
        spec.alert_webhook = request.alert_webhook
    if request.alert_thresholds:
        spec.alert_thresholds = list(request.alert_thresholds)
    return spec


def _spec_of_update(request: key_service_pb2.UpdateKeyRequest) -> KeySpec:
    spec = KeySpec()
    for name in ("name", "rpm", "concurrency", "credits", "tpm", "expires_at", "expires_in", "alert_webhook"):
        if request.HasField(name):
            setattr(spec, name, getattr(request, name))
    if request.HasField("budget"):
        spec.budget = (request.budget.amount, request.budget.period)
    elif request.clear_budget:
        spec.budget = None
    if request.HasField("models"):
        spec.models = list(request.models.values)
    if request.HasField("scopes"):
        spec.scopes = list(request.scopes.values)
    if request.HasField("metadata"):
        spec.metadata = dict(request.metadata.values)
    if request.HasField("alert_thresholds"):
        spec.alert_thresholds = list(request.alert_thresholds.values)
    return spec


class KeyServicer(key_service_pb2_grpc.KeyServiceServicer):
    def __init__(self, auth: Authenticator, keys: KeyAdmin, admitter: Admitter) -> None:
        self._auth = auth
        self._keys = keys
        self._admitter = admitter

    @unary_call
    async def CreateKey(self, request, context, principal):
        created = await self._keys.create(principal, _spec_of_create(request))
        return key_service_pb2.CreateKeyResponse(key=key_message(created.view), secret=created.secret,
                                                 webhook_secret=created.webhook_secret)

    @unary_call
    async def ListKeys(self, request, context, principal):
        views, has_more, cursor = await self._keys.list(principal, request.include_revoked, request.limit,
                                                        request.after)
        return key_service_pb2.ListKeysResponse(keys=[key_message(v) for v in views], has_more=has_more,
                                                next=cursor)

    @unary_call
    async def RevokeKey(self, request, context, principal):
        key = await self._keys.revoke(principal, request.id)
        return key_service_pb2.RevokeKeyResponse(key=key_message(await self._keys.view(key)))

    @unary_call
    async def UpdateKey(self, request, context, principal):
        view = await self._keys.update(principal, request.id, _spec_of_update(request))
        return key_service_pb2.UpdateKeyResponse(key=key_message(view))

    @unary_call
    async def GetKey(self, request, context, principal):
        return key_service_pb2.GetKeyResponse(key=key_message(await self._keys.me(principal)))

    @unary_call
    async def GetKeyById(self, request, context, principal):
        return key_service_pb2.GetKeyByIdResponse(key=key_message(await self._keys.get(principal, request.id)))

    @unary_call
    async def RotateKey(self, request, context, principal):
        view, secret = await self._keys.rotate(
            principal, request.id, request.grace_seconds if request.HasField("grace_seconds") else None,
            request.grace)
        return key_service_pb2.RotateKeyResponse(key=key_message(view), secret=secret)
