"""POST /v1/chat/completions through the official SDK: request translation and unary responses."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import openai
import pytest
from gateway_fakes import RATE_METADATA, FakeService, completion
from google.protobuf import json_format

from raven.v1 import chat_pb2


async def test_unary_completion_round_trip(client: openai.AsyncOpenAI, fake: FakeService) -> None:
    reply = await client.chat.completions.create(
        model="raven/local-chat",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        temperature=0.5,
        max_tokens=64,
        stop="END",
        seed=7,
    )

    assert reply.id == "chatcmpl-1"
    assert reply.object == "chat.completion"
    assert reply.model == "raven/local-chat"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Hello there!"
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (12, 3, 15)
    extra: dict[str, Any] = reply.model_extra or {}
    assert extra["provider"] == "local"
    assert reply.usage.model_extra == {"cost": 0.000123}

    [call] = fake.chat.received
    request = call.request
    assert request.model == "raven/local-chat"
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert request.temperature == 0.5
    assert request.max_tokens == 64
    assert list(request.stop) == ["END"]
    assert request.seed == 7
    assert not request.HasField("top_p")
    assert not request.HasField("extra_body")
    assert call.metadata["authorization"] == "Bearer rk-test"
    assert len(call.metadata["x-request-id"]) == 32


async def test_full_request_shape_is_translated_field_for_field(http: httpx.AsyncClient, fake: FakeService) -> None:
    body = {
        "model": "raven/local-chat",
        "models": ["backup/model"],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"x": 1}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a raven", "name": "look"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "look",
                    "description": "Look at it",
                    "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                "strict": True,
            },
        },
        "stop": ["x", "y"],
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": -0.1,
        "user": "u-1",
        "max_completion_tokens": 10,
        "stream_options": {"include_usage": True},
        "top_k": 40,
        "n": 1,
        "provider": {"order": ["local"]},
    }
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text

    request = fake.chat.received[0].request
    user, assistant, tool = request.messages
    assert not user.HasField("content")
    assert [(p.type, p.text, p.image_url, p.detail) for p in user.content_parts] == [
        ("text", "What is this?", "", ""),
        ("image_url", "", "data:image/png;base64,AAAA", "low"),
    ]
    assert not assistant.HasField("content")
    assert list(assistant.tool_calls) == [
        chat_pb2.ToolCall(id="call_1", type="function", name="look", arguments='{"x": 1}')
    ]
    assert (tool.role, tool.tool_call_id, tool.content, tool.name) == ("tool", "call_1", "a raven", "look")
    [tool_def] = request.tools
    assert (tool_def.type, tool_def.name, tool_def.description) == ("function", "look", "Look at it")
    assert tool_def.strict is True
    assert json_format.MessageToDict(tool_def.parameters) == body["tools"][0]["function"]["parameters"]
    assert request.tool_choice.function_name == "look"
    assert request.response_format.type == "json_schema"
    assert request.response_format.json_schema.name == "answer"
    assert request.response_format.json_schema.strict is True
    schema = json_format.MessageToDict(request.response_format.json_schema.schema)
    assert schema == body["response_format"]["json_schema"]["schema"]  # type: ignore[index]
    assert list(request.stop) == ["x", "y"]
    assert list(request.models) == ["backup/model"]
    assert request.top_p == pytest.approx(0.9)
    assert request.frequency_penalty == pytest.approx(0.1)
    assert request.presence_penalty == pytest.approx(-0.1)
    assert request.user == "u-1"
    # the bound travels under the name the client used (not rewritten to max_tokens)
    assert not request.HasField("max_tokens")
    assert request.max_completion_tokens == 10
    # Unknown keys travel in extra_body; stream_options is dropped (usage is always reported).
    assert json_format.MessageToDict(request.extra_body) == {"top_k": 40, "n": 1, "provider": {"order": ["local"]}}


@pytest.mark.parametrize("choice", ["none", "auto", "required"])
async def test_tool_choice_modes(http: httpx.AsyncClient, fake: FakeService, choice: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": choice}
    assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
    assert fake.chat.received[0].request.tool_choice == chat_pb2.ToolChoice(mode=choice)


async def test_sdk_extra_body_reaches_extra_body_struct(client: openai.AsyncOpenAI, fake: FakeService) -> None:
    await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], extra_body={"top_k": 3, "reasoning": {"effort": "low"}}
    )
    extra = json_format.MessageToDict(fake.chat.received[0].request.extra_body)
    assert extra == {"top_k": 3, "reasoning": {"effort": "low"}}


async def test_tool_call_reply_parses_in_sdk(client: openai.AsyncOpenAI, fake: FakeService) -> None:
    async def tool_reply(request: Any, context: grpc.aio.ServicerContext) -> Any:
        reply = completion(content=None)
        choice = reply.choices[0]
        choice.finish_reason = "tool_calls"
        choice.native_finish_reason = "tool_use"
        choice.message.tool_calls.add(id="toolu_1", type="function", name="look", arguments='{"x": 2}')
        return reply

    fake.chat.unary = tool_reply
    reply = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    message = reply.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    [call] = message.tool_calls
    assert (call.id, call.type, call.function.name) == ("toolu_1", "function", "look")
    assert call.function.arguments == '{"x": 2}'
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (reply.choices[0].model_extra or {})["native_finish_reason"] == "tool_use"


async def test_unary_json_shape(http: httpx.AsyncClient) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    response = await http.post("/v1/chat/completions", json=body)
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "provider", "system_fingerprint"}
    assert body["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Hello there!"},
        "finish_reason": "stop",
        "native_finish_reason": "stop",
        "logprobs": None,
    }
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "cost": 0.000123,
                             "prompt_tokens_details": {"cached_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 0}}
    assert body["system_fingerprint"] is None


async def test_metadata_becomes_headers_and_request_id_round_trips(
    client: openai.AsyncOpenAI, fake: FakeService
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "req-abc"}
    )
    for key, value in RATE_METADATA:
        assert raw.headers[key] == value
    assert raw.headers["x-raven-provider"] == "local"
    assert raw.headers["x-request-id"] == "req-abc"
    assert fake.chat.received[0].metadata["x-request-id"] == "req-abc"
    assert raw.parse().choices[0].message.content == "Hello there!"


async def test_trailing_metadata_is_forwarded_too(http: httpx.AsyncClient, fake: FakeService) -> None:
    async def trailing(request: Any, context: grpc.aio.ServicerContext) -> Any:
        context.set_trailing_metadata((("x-raven-generation-id", "gen-9"), ("x-raven-dropped-params", "top_k")))
        return completion()

    fake.chat.unary = trailing
    response = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.headers["x-raven-generation-id"] == "gen-9"
    assert response.headers["x-raven-dropped-params"] == "top_k"
    assert "x-request-id" in response.headers


async def test_missing_key_is_401_from_the_service(app: Any, fake: FakeService) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as anonymous:
        response = await anonymous.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Invalid API key.",
            "type": "authentication_error",
            "code": "invalid_api_key",
            "param": None,
        }
    }
    # the service's 401 came from the auth-first probe: the chat call itself was never made
    assert fake.chat.received == []
    assert fake.models.received and "authorization" not in fake.models.received[0].metadata


async def test_illegal_authorization_value_is_not_forwarded(http: httpx.AsyncClient, fake: FakeService) -> None:
    response = await http.post(
        "/v1/chat/completions", json={"model": "m", "messages": []}, headers={"Authorization": "Bearer \x01bad"}
    )
    assert response.status_code == 401
    assert "authorization" not in fake.chat.received[0].metadata
