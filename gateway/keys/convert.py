"""Key JSON <-> proto: field by field, no rules (the service validates every value)."""

from __future__ import annotations

from datetime import UTC

from google.protobuf import timestamp_pb2
from msgspec import UNSET

from gateway.keys.schemas import BudgetOut, CreditsOut, KeyCreate, KeyObject, KeySelf, KeyUpdate
from raven.v1 import key_service_pb2

__all__ = ["create_request", "key_object", "key_self", "rfc3339", "update_request"]


def rfc3339(ts: timestamp_pb2.Timestamp) -> str:
    """A Timestamp as RFC 3339 UTC (`2027-01-01T00:00:00Z`)."""
    text = ts.ToDatetime(tzinfo=UTC).isoformat(timespec="microseconds" if ts.nanos else "seconds")
    return text.replace("+00:00", "Z")


def _budget(k: key_service_pb2.ApiKey) -> BudgetOut | None:
    if not k.HasField("budget"):
        return None
    b = k.budget
    return BudgetOut(amount=b.amount, period=b.period, used=b.used, remaining=b.remaining,
                     resets_at=rfc3339(b.resets_at) if b.HasField("resets_at") else None)


def key_object(k: key_service_pb2.ApiKey) -> KeyObject:
    c = k.credit_status
    return KeyObject(
        id=k.id, name=k.name, prefix=k.prefix, scopes=list(k.scopes), admin=k.admin, models=list(k.models),
        expires_at=rfc3339(k.expires_at) if k.HasField("expires_at") else None,
        rpm=k.rpm, concurrency=k.concurrency, tpm=k.tpm, credits=k.credits or None, credits_used=k.credits_used,
        credits_remaining=c.remaining or None, budget=_budget(k), metadata=dict(k.metadata),
        alert_webhook=k.alert_webhook or None, alert_thresholds=list(k.alert_thresholds), revoked=k.revoked,
        created_at=rfc3339(k.create_time),
    )


def key_self(k: key_service_pb2.ApiKey) -> KeySelf:
    c = k.credit_status
    return KeySelf(
        id=k.id, name=k.name, prefix=k.prefix, scopes=list(k.scopes), models=list(k.models),
        expires_at=rfc3339(k.expires_at) if k.HasField("expires_at") else None,
        rpm=k.rpm, concurrency=k.concurrency, tpm=k.tpm,
        credits=CreditsOut(limit=c.limit or None, used=c.used, remaining=c.remaining or None),
        budget=_budget(k), metadata=dict(k.metadata), created_at=rfc3339(k.create_time),
    )


def create_request(body: KeyCreate) -> key_service_pb2.CreateKeyRequest:
    msg = key_service_pb2.CreateKeyRequest(name=body.name, admin=body.admin)
    for name in ("rpm", "concurrency", "tpm"):
        if (value := getattr(body, name)) is not UNSET:
            setattr(msg, name, value)
    if body.credits is not UNSET and body.credits is not None:
        msg.credits = body.credits
    if body.budget is not UNSET and body.budget is not None:
        msg.budget.CopyFrom(key_service_pb2.BudgetLimit(amount=body.budget.amount, period=body.budget.period))
    if body.models is not UNSET:
        msg.models.extend(body.models)
    if body.expires_at is not UNSET and body.expires_at is not None:
        msg.expires_at = body.expires_at
    if body.expires_in is not UNSET:
        msg.expires_in = body.expires_in
    if body.scopes is not UNSET:
        msg.scopes.extend(body.scopes)
    if body.metadata is not UNSET:
        msg.metadata.update(body.metadata)
    if body.alert_webhook is not UNSET and body.alert_webhook is not None:
        msg.alert_webhook = body.alert_webhook
    if body.alert_thresholds is not UNSET:
        msg.alert_thresholds.extend(body.alert_thresholds)
    return msg


def update_request(key_id: str, body: KeyUpdate) -> key_service_pb2.UpdateKeyRequest:
    msg = key_service_pb2.UpdateKeyRequest(id=key_id)
    for name in ("name", "rpm", "concurrency", "tpm", "expires_in"):
        if (value := getattr(body, name)) is not UNSET:
            setattr(msg, name, value)
    if body.credits is not UNSET:
        msg.credits = body.credits or ""  # null: unlimited
    if body.budget is None:
        msg.clear_budget = True
    elif body.budget is not UNSET:
        msg.budget.CopyFrom(key_service_pb2.BudgetLimit(amount=body.budget.amount, period=body.budget.period))
    if body.models is not UNSET:
        msg.models.CopyFrom(key_service_pb2.StringList(values=body.models))
    if body.scopes is not UNSET:
        msg.scopes.CopyFrom(key_service_pb2.StringList(values=body.scopes))
    if body.metadata is not UNSET:
        msg.metadata.CopyFrom(key_service_pb2.StringMap(values=body.metadata))
    if body.expires_at is not UNSET:
        msg.expires_at = body.expires_at or ""  # null: never
    if body.alert_webhook is not UNSET:
        msg.alert_webhook = body.alert_webhook or ""
    if body.alert_thresholds is not UNSET:
        msg.alert_thresholds.CopyFrom(key_service_pb2.IntList(values=body.alert_thresholds))
    return msg
