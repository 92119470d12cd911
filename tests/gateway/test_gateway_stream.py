"""Streaming chat: SDK reassembly and exact SSE framing (in-process; timing tests are in *_live)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import openai
import pytest
from gateway_fakes import RATE_METADATA, FakeService, abort, chunk, usage_message

from raven.v1 import chat_pb2, chat_service_pb2

BODY = {"model": "raven/local-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (comments skipped)."""
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            assert all(line.startswith("data: ") for line in lines), block
            events.append("\n".join(line[len("data: ") :] for line in lines))
    return events


async def test_sdk_reassembles_stream(client: openai.AsyncOpenAI, fake: FakeService) -> None:
    stream = await client.chat.completions.create(
        model="raven/local-chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)
    request = fake.chat.received[0].request
    assert isinstance(request, chat_service_pb2.StreamChatCompletionRequest)
    assert request.model == "raven/local-chat"
    assert not request.HasField("extra_body")  # "stream" is a known field, never passed through


async def test_sse_framing(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=BODY)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    for key, value in RATE_METADATA:
        assert response.headers[key] == value
    assert response.headers["x-raven-provider"] == "local"
    assert response.text.endswith("data: [DONE]\n\n")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["choices"][0]["finish_reason"] is None
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hello"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["native_finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8, "cost": 0.0000042,
                                   "prompt_tokens_details": {"cached_tokens": 0},
                                   "completion_tokens_details": {"reasoning_tokens": 0}}
    assert all("usage" not in c for c in chunks[:-1])
    assert {c["id"] for c in chunks} == {"chatcmpl-s"}


async def test_tool_call_deltas(client: openai.AsyncOpenAI, fake: FakeService) -> None:
    async def tool_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        yield chunk(role="assistant")
        opening = chat_pb2.ToolCallDelta(index=0, id="call_9", type="function", name="look", arguments="")
        yield chunk(tool_calls=[opening])
        yield chunk(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments='{"x"')])
        yield chunk(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments=": 1}")])
        yield chunk(finish_reason="tool_calls")
        yield usage_message()

    fake.chat.stream = tool_stream
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for c in stream:
        for choice in c.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                if delta.function is not None:
                    entry["name"] += delta.function.name or ""
                    entry["arguments"] += delta.function.arguments or ""
    assert calls == {0: {"id": "call_9", "name": "look", "arguments": '{"x": 1}'}}
    assert finish == "tool_calls"


async def test_error_message_in_stream_becomes_error_chunk(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, fake: FakeService
) -> None:
    async def failing(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        yield chunk(role="assistant", content="Hel")
        failed = chunk(finish_reason="error")
        failed.error.message, failed.error.type, failed.error.code = "upstream broke", "api_error", "upstream_error"
        yield failed
        yield usage_message()

    fake.chat.stream = failing
    response = await http.post("/v1/chat/completions", json=BODY)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    error_chunk = json.loads(events[1])
    assert error_chunk["choices"][0]["finish_reason"] == "error"
    assert error_chunk["error"] == {"message": "upstream broke", "type": "api_error", "code": "upstream_error"}

    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError) as raised:
        async for _ in stream:
            pass
    assert raised.value.code == "upstream_error"
    assert "upstream broke" in raised.value.message


async def test_grpc_failure_after_first_chunk_ends_with_error_chunk(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, fake: FakeService
) -> None:
    async def dies(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        yield chunk(role="assistant", content="partial")
        await abort(context, grpc.StatusCode.UNAVAILABLE, "Upstream provider failed.", reason="UPSTREAM_ERROR")

    fake.chat.stream = dies
    response = await http.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    first, last = json.loads(events[0]), json.loads(events[-2])
    assert first["choices"][0]["delta"]["content"] == "partial"
    assert last["id"] == "chatcmpl-s"
    assert last["choices"] == [{"index": 0, "delta": {}, "finish_reason": "error"}]
    assert last["error"] == {"message": "Upstream provider failed.", "type": "api_error", "code": "upstream_error"}

    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError) as raised:
        async for _ in stream:
            pass
    assert raised.value.code == "upstream_error"



@pytest.fixture
def channel(both_channels: grpc.aio.Channel) -> grpc.aio.Channel:
    """Every test here runs over a real gRPC channel and over the in-process one."""
    return both_channels

@pytest.mark.parametrize(
    ("code", "reason", "status", "error_class"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED", 429, openai.RateLimitError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "INSUFFICIENT_CREDITS", 402, openai.APIStatusError),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", 400, openai.BadRequestError),
        (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY", 401, openai.AuthenticationError),
        (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR", 502, openai.InternalServerError),
    ],
)
async def test_failure_before_first_chunk_is_a_real_http_status(
    client: openai.AsyncOpenAI,
    fake: FakeService,
    code: grpc.StatusCode,
    reason: str,
    status: int,
    error_class: type[openai.APIStatusError],
) -> None:
    async def refuses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await abort(context, code, "No.", reason=reason, retry_after=2.5 if status == 429 else None)
        yield usage_message()  # pragma: no cover - unreachable, makes this a generator

    fake.chat.stream = refuses
    with pytest.raises(error_class) as raised:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    assert raised.value.status_code == status
    assert raised.value.code == reason.lower()
    headers = raised.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["content-type"] == "application/json"
    if status == 429:
        assert headers["retry-after"] == "3"
