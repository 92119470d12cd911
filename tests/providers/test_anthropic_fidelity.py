"""Anthropic fidelity (issue 12): thinking / redacted_thinking with signatures, prompt-cache token
counts, server-tool blocks that must not kill a stream, reasoning config -> thinking, and native
structured outputs -- against the fake Messages API on a real loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes.anthropic_upstream import FakeAnthropic, Scenario, payload, stream

from raven_service.config import ProviderConfig
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    Finish,
    Message,
    ProviderChatRequest,
    ReasoningConfig,
    ReasoningDelta,
    ReasoningPart,
    ResponseFormat,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageReport,
)
from raven_service.providers.anthropic import AnthropicProvider, create

pytestmark = pytest.mark.timeout(30)

ENV = "RAVEN_TEST_ANTHROPIC_KEY"
SECRET = "sk-ant-api03-fidelity-0123456789abcdef"
MODEL = "claude-sonnet-4-5-20250929"
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds4Tf8xS8rHOW0EkR1A6XCb3tnqC0ZQ=="
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=SECRET) as f:
        yield f


def make(base_url: str, **cfg: Any) -> AnthropicProvider:
    return create("claude", ProviderConfig(kind="anthropic", base_url=base_url, api_key_env=ENV, connect_timeout=2.0,
                                           first_byte_timeout=5.0, idle_timeout=5.0, **cfg))


@pytest.fixture
async def provider(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AnthropicProvider]:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url)
    yield p
    await p.aclose()


def chat(*messages: Message, **params: Any) -> ProviderChatRequest:
    msgs = messages or (Message(role="user", content="Weather in Paris?"),)
    return ProviderChatRequest(upstream_model=MODEL, request=ChatRequest(model="m", messages=msgs, **params))


async def collect(p: AnthropicProvider, req: ProviderChatRequest) -> list[ChatEvent]:
    return [e async for e in p.stream(req)]


# ------------------------------------------------------------------------------------ responses
async def test_stream_with_thinking_and_server_tool_blocks_completes_with_the_full_answer(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    """server_tool_use streams input_json_delta and web_search_tool_result / citations follow: none
    of it is a client tool call, and none of it may end the stream (it used to: "input_json_delta
    for block 3, which is not a tool_use block")."""
    fake.script(stream(payload("stream_thinking_server_tool")))
    events = await collect(provider, chat())
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [
        ReasoningDelta(index=0, text="The user asks about today's weather; "),
        ReasoningDelta(index=0, text="I should search the web."),
        ReasoningDelta(index=0, signature=SIGNATURE),
        ReasoningDelta(index=1, encrypted=REDACTED),
    ]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "I'll check the current weather in Paris.It is 18 degrees and sunny in Paris."
    assert not [e for e in events if isinstance(e, ToolCallDelta)]
    assert events[-2:] == [
        Finish(reason="stop", native="end_turn"),
        UsageReport(prompt_tokens=2679 + 1024 + 8192, completion_tokens=510, cached_tokens=8192,
                    cache_creation_tokens=1024),
    ]
    # reasoning comes before the answer, as the upstream sent it
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(i < first_text for i, e in enumerate(events) if isinstance(e, ReasoningDelta))


async def test_stream_tool_use_after_server_tool_use_keeps_ordinals(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    events_in = [
        {"type": "message_start", "message": {"type": "message", "role": "assistant", "content": [],
                                              "usage": {"input_tokens": 10, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "tool_search", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":1}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_search_tool_result", "tool_use_id": "srvtoolu_1", "content": {}}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Paris\"}"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]
    fake.script(stream(events_in))
    events = await collect(provider, chat())
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(index=0, id="toolu_9", name="get_weather", arguments=""),
        ToolCallDelta(index=0, arguments='{"city": "Paris"}'),
    ]
    assert events[-2] == Finish(reason="tool_calls", native="tool_use")


async def test_unary_thinking_blocks_and_cache_counts(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(payload("message_thinking")))
    result = await provider.complete(chat())
    assert result.content == "Yes, there are infinitely many prime numbers such that..."
    assert result.reasoning == (
        ReasoningPart(text="To approach this, let me think about what we know about prime numbers...",
                      signature="WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL...."),
        ReasoningPart(encrypted=REDACTED),
    )
    assert (result.prompt_tokens, result.completion_tokens) == (2095 + 2048 + 4096, 503)
    assert (result.cached_tokens, result.cache_creation_tokens) == (4096, 2048)


async def test_json_body_for_a_stream_request_carries_reasoning_and_cache_counts(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(payload("message_thinking")))
    events = await collect(provider, chat())
    assert events[0] == ReasoningDelta(
        index=0, text="To approach this, let me think about what we know about prime numbers...",
        signature="WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL....")
    assert events[1] == ReasoningDelta(index=1, encrypted=REDACTED)
    assert events[-1] == UsageReport(prompt_tokens=8239, completion_tokens=503, cached_tokens=4096,
                                     cache_creation_tokens=2048)


# ------------------------------------------------------------------------------------ requests
async def test_signed_reasoning_goes_back_as_thinking_blocks_before_the_tool_use(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(payload("message")))
    assistant = Message(
        role="assistant", content=None,
        tool_calls=(ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}'),),
        reasoning=(ReasoningPart(text="I need the weather.", signature=SIGNATURE), ReasoningPart(encrypted=REDACTED),
                   ReasoningPart(text="unsigned thoughts from another provider")),
    )
    await provider.complete(chat(Message(role="user", content="Weather?"), assistant,
                                 Message(role="tool", tool_call_id="toolu_1", content="18C")))
    turns = fake.last.json["messages"]
    assert turns[1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I need the weather.", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": REDACTED},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]}


@pytest.mark.parametrize(
    ("reasoning", "max_tokens", "thinking"),
    [
        (ReasoningConfig(effort="high"), 32000, {"type": "enabled", "budget_tokens": 16384}),
        (ReasoningConfig(effort="low"), 32000, {"type": "enabled", "budget_tokens": 2048}),
        (ReasoningConfig(budget_tokens=5000), 32000, {"type": "enabled", "budget_tokens": 5000}),
        (ReasoningConfig(effort="high"), 4000, {"type": "enabled", "budget_tokens": 3999}),  # below max_tokens
        (ReasoningConfig(effort="none"), 4000, {"type": "disabled"}),
        (ReasoningConfig(effort="high"), 1000, None),  # no room for Anthropic's 1024-token minimum
    ],
)
async def test_reasoning_config_becomes_thinking(
    fake: FakeAnthropic, provider: AnthropicProvider, reasoning: ReasoningConfig, max_tokens: int,
    thinking: dict[str, Any] | None,
) -> None:
    fake.script(Scenario.json(payload("message")))
    await provider.complete(chat(reasoning=reasoning, max_tokens=max_tokens, temperature=0.3))
    body = fake.last.json
    assert body.get("thinking") == thinking
    if thinking is not None and thinking["type"] == "enabled":
        assert "temperature" not in body  # extended thinking takes no temperature
    else:
        assert body["temperature"] == 0.3


async def test_clients_own_thinking_wins_over_the_reasoning_config(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(payload("message")))
    await provider.complete(chat(reasoning=ReasoningConfig(effort="high"), extra={"thinking": {"type": "adaptive"}}))
    assert fake.last.json["thinking"] == {"type": "adaptive"}


TAG = {"type": "object", "properties": {"k": {"type": "string"}}}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "tags": {"type": "array", "items": TAG}},
          "required": ["city"]}
CLOSED = {"type": "object", "additionalProperties": False,
          "properties": {"city": {"type": "string"},
                         "tags": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                             "properties": {"k": {"type": "string"}}}}},
          "required": ["city"]}


async def test_json_schema_goes_native_as_output_config_format(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(payload("message")))
    fmt = ResponseFormat(type="json_schema", name="city", schema=SCHEMA)
    await provider.complete(chat(Message(role="system", content="You extract cities."),
                                 Message(role="user", content="Paris!"), response_format=fmt,
                                 extra={"output_config": {"effort": "medium"}}))
    body = fake.last.json
    assert body["output_config"] == {"effort": "medium", "format": {"type": "json_schema", "schema": CLOSED}}
    assert body["system"] == "You extract cities."  # no emulation instruction
    assert fake.last.headers["anthropic-version"] == "2023-06-01"


async def test_older_anthropic_version_emulates_structured_outputs(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, anthropic_version="2023-01-01")
    try:
        fake.script(Scenario.json(payload("message")))
        fmt = ResponseFormat(type="json_schema", name="city", schema=SCHEMA)
        await p.complete(chat(Message(role="user", content="Paris!"), response_format=fmt))
    finally:
        await p.aclose()
    body = fake.last.json
    assert fake.last.headers["anthropic-version"] == "2023-01-01"
    assert "output_config" not in body
    assert body["system"].startswith("Respond with a single valid JSON value that conforms to the following JSON")


async def test_json_object_stays_emulated(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(payload("message")))
    await provider.complete(chat(response_format=ResponseFormat(type="json_object")))
    assert "output_config" not in fake.last.json
    assert fake.last.json["system"].startswith("Respond with a single valid JSON object")
