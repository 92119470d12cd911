"""The bad-input table over both protocols: documented status, OpenAI error body, never an upstream call."""

from __future__ import annotations

import grpc
import pytest
from tests_support import usage_records

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc

CHAT = "raven/local-chat"
MSG = [{"role": "user", "content": "hi"}]

# (name, json body or raw bytes, expected HTTP status, expected param or None)
REST_CASES = [
    ("malformed json", b'{"model": "raven/local-chat", "messages": [', 400, None),
    ("not an object", b"[1, 2, 3]", 400, None),
    ("stream not bool", {"model": CHAT, "messages": MSG, "stream": "yes"}, 400, "stream"),
    ("temperature type", {"model": CHAT, "messages": MSG, "temperature": "hot"}, 400, "temperature"),
    ("temperature range", {"model": CHAT, "messages": MSG, "temperature": 2.5}, 400, "temperature"),
    ("top_p zero", {"model": CHAT, "messages": MSG, "top_p": 0}, 400, "top_p"),
    ("top_p above one", {"model": CHAT, "messages": MSG, "top_p": 1.5}, 400, "top_p"),
    ("negative max_tokens", {"model": CHAT, "messages": MSG, "max_tokens": -5}, 400, "max_tokens"),
    ("fractional max_tokens", {"model": CHAT, "messages": MSG, "max_tokens": 1.5}, 400, "max_tokens"),
    ("unknown role", {"model": CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ("missing messages", {"model": CHAT}, 400, "messages"),
    ("messages not list", {"model": CHAT, "messages": "hi"}, 400, "messages"),
    ("unknown model", {"model": "nope/nope", "messages": MSG}, 400, "model"),
    ("missing model", {"messages": MSG}, 400, "model"),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), REST_CASES, ids=[c[0] for c in REST_CASES])
async def test_rest_bad_input(rest, name, body, status, param):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = await rest.http.post("/v1/chat/completions", headers={**rest.auth(), "Content-Type": "application/json"},
                             **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["type"] == "invalid_request_error" and err["message"]
    if param is not None:
        assert err["param"] == param
    if name == "unknown model":
        assert err["code"] == "model_not_found"
    # nothing reached a provider: no completion was attempted, so no usage record exists
    assert await usage_records(rest.svc.services) == []


async def test_auth_errors(rest):
    r = await rest.http.post("/v1/chat/completions", json={"model": CHAT, "messages": MSG})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "code", "param"}
    r = await rest.http.post("/v1/chat/completions", json={"model": CHAT, "messages": MSG},
                             headers={"Authorization": "Bearer rk-wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await rest.http.get("/v1/models", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


async def test_oversized_body_413(rest):
    big = {"model": CHAT, "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    r = await rest.http.post("/v1/chat/completions", json=big, headers=rest.auth())
    assert r.status_code == 413
    assert set(r.json()["error"]) == {"message", "type", "code", "param"}


async def test_unknown_task_404(rest):
    r = await rest.http.get("/v1/video/generations/vid-doesnotexist", headers=rest.auth())
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "code", "param"}
    r = await rest.http.get("/v1/generation", params={"id": "chatcmpl-nope"}, headers=rest.auth())
    assert r.status_code == 404


GRPC_CASES = [
    ("temperature range", {"temperature": 2.5}, "temperature"),
    ("top_p zero", {"top_p": 0.0}, "top_p"),
    ("negative max_tokens", {"max_tokens": -5}, "max_tokens"),
    ("unknown model", {"model": "nope/nope"}, "model"),
    ("unknown role", {"messages": [chat_pb2.ChatMessage(role="wizard", content="x")]}, "messages[0].role"),
    ("no messages", {"messages": []}, "messages"),
    ("bad tool_choice", {"tool_choice": chat_pb2.ToolChoice(mode="sometimes")}, "tool_choice"),
]


@pytest.mark.parametrize(("name", "fields", "param"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
@pytest.mark.parametrize("rpc", ["CreateChatCompletion", "StreamChatCompletion"])
async def test_grpc_bad_input(svc, channel, name, fields, param, rpc):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    base = {"model": CHAT, "messages": [chat_pb2.ChatMessage(role="user", content="hi")]}
    base.update(fields)
    stub = chat_service_pb2_grpc.ChatServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        if rpc == "CreateChatCompletion":
            await stub.CreateChatCompletion(chat_service_pb2.CreateChatCompletionRequest(**base), metadata=svc.meta())
        else:
            async for _ in stub.StreamChatCompletion(chat_service_pb2.StreamChatCompletionRequest(**base),
                                                     metadata=svc.meta()):
                pass
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(ei.value)
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    assert bad.field_violations[0].field == param
    assert await usage_records(svc.services) == []
