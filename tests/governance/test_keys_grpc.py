"""SPEC §11 over gRPC: KeyService and the key rules with the same semantics as REST."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc, key_service_pb2, key_service_pb2_grpc

pytestmark = pytest.mark.timeout(60)
CHAT = "raven/local-chat"


def reason(err: grpc.aio.AioRpcError) -> str:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def chat_request() -> chat_service_pb2.CreateChatCompletionRequest:
    return chat_service_pb2.CreateChatCompletionRequest(
        model=CHAT, messages=[chat_pb2.ChatMessage(role="user", content="echo: hi")], max_tokens=5)


async def test_create_get_rotate_list_over_grpc(svc, channel):
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    admin = svc.meta(svc.admin)
    created = await keys.CreateKey(key_service_pb2.CreateKeyRequest(
        name="g", tpm=1000, models=["raven/local-c*"], expires_in="30d", metadata={"team": "ml"},
        budget=key_service_pb2.BudgetLimit(amount="2", period="month")), metadata=admin)
    assert created.secret.startswith("rk-") and created.webhook_secret.startswith("whsec_")
    assert list(created.key.models) == ["raven/local-c*"] and created.key.budget.period == "month"
    me = await keys.GetKey(key_service_pb2.GetKeyRequest(), metadata=svc.meta(created.secret))
    assert me.key.id == created.key.id and me.key.budget.remaining == "2" and me.key.HasField("expires_at")
    assert dict(me.key.metadata) == {"team": "ml"}

    rotated = await keys.RotateKey(key_service_pb2.RotateKeyRequest(id=created.key.id, grace="2s"), metadata=admin)
    for secret in (created.secret, rotated.secret):
        assert (await keys.GetKey(key_service_pb2.GetKeyRequest(), metadata=svc.meta(secret))).key.id == created.key.id
    svc.services.auth.wall = lambda: time.time() + 3
    svc.services.auth.invalidate(created.key.id)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await keys.GetKey(key_service_pb2.GetKeyRequest(), metadata=svc.meta(created.secret))
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED

    page = await keys.ListKeys(key_service_pb2.ListKeysRequest(limit=2), metadata=admin)
    assert len(page.keys) == 2 and page.has_more and page.next == page.keys[-1].id
    rest = await keys.ListKeys(key_service_pb2.ListKeysRequest(limit=100, after=page.next), metadata=admin)
    assert [k.id for k in rest.keys] == [created.key.id] and not rest.has_more

    upd = await keys.UpdateKey(key_service_pb2.UpdateKeyRequest(
        id=created.key.id, clear_budget=True, models=key_service_pb2.StringList(values=[])), metadata=admin)
    assert not upd.key.HasField("budget") and list(upd.key.models) == []


async def test_rules_over_grpc(svc, channel):
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    admin = svc.meta(svc.admin)

    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="x"), metadata=svc.meta())
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED and reason(ei.value) == "INSUFFICIENT_SCOPE"
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="x", expires_in="soon"), metadata=admin)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_status.from_call(ei.value).details  # BadRequest names the field (checked over REST)

    images = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="i", models=["raven/local-i*"]),
                                  metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await chat.CreateChatCompletion(chat_request(), metadata=svc.meta(images.secret))
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED and reason(ei.value) == "MODEL_NOT_ALLOWED"

    admin_only = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="a", scopes=["admin"]), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        async for _ in chat.StreamChatCompletion(chat_request(), metadata=svc.meta(admin_only.secret)):
            pass
    assert reason(ei.value) == "INSUFFICIENT_SCOPE"

    tpm = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="t", tpm=1), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await chat.CreateChatCompletion(chat_request(), metadata=svc.meta(tpm.secret))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(ei.value.trailing_metadata())
    assert trailers["x-ratelimit-limit-tokens"] == "1" and "x-ratelimit-reset-tokens" in trailers

    broke = await keys.CreateKey(key_service_pb2.CreateKeyRequest(
        name="b", budget=key_service_pb2.BudgetLimit(amount="0", period="day")), metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await chat.CreateChatCompletion(chat_request(), metadata=svc.meta(broke.secret))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and reason(ei.value) == "BUDGET_EXHAUSTED"
    assert dict(ei.value.trailing_metadata())["x-ratelimit-reset-credits"].endswith("s")

    expiring = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="e", expires_in="1m"), metadata=admin)
    await chat.CreateChatCompletion(chat_request(), metadata=svc.meta(expiring.secret))
    svc.services.auth.wall = lambda: time.time() + 120
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await chat.CreateChatCompletion(chat_request(), metadata=svc.meta(expiring.secret))
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED and reason(ei.value) == "KEY_EXPIRED"
