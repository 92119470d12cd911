"""The ``anthropic`` provider kind against a fake Messages API upstream on a real loopback socket."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest
from fakes.anthropic_upstream import (
    ANTHROPIC_VERSION,
    DEFAULT_TEXT,
    FakeAnthropic,
    Scenario,
    content_block_start,
    content_block_stop,
    error,
    error_event,
    input_json_delta,
    message,
    message_delta,
    message_start,
    message_stop,
    payload,
    ping,
    stream,
    text_delta,
    text_stream,
    tool_use_stream,
)

from raven_service.config import ProviderConfig, load_settings
from raven_service.core.errors import UpstreamError, UpstreamTimeout
from raven_service.core.ports import ChatProvider
from raven_service.core.tokens import count_message_tokens, count_tokens
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    ContentPart,
    Finish,
    Message,
    ProviderChatRequest,
    ReasoningDelta,
    ResponseFormat,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    UsageReport,
)
from raven_service.providers.anthropic import AnthropicProvider, create, messages_body
from raven_service.wiring import build_providers

pytestmark = pytest.mark.timeout(30)

ENV = "RAVEN_TEST_ANTHROPIC_KEY"
SECRET = "sk-ant-api03-S3CR3T-do-not-leak-0123456789abcdefABCDEF"
MODEL = "claude-sonnet-4-20250514"
HELLO = [TextDelta(text="Hello"), TextDelta(text="!"), Finish(reason="stop", native="end_turn"),
         UsageReport(prompt_tokens=25, completion_tokens=15)]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key=SECRET) as f:  # the fake itself rejects a wrong x-api-key
        yield f


def make(base_url: str, **cfg: Any) -> AnthropicProvider:
    options: dict[str, Any] = {
        "api_key_env": ENV,
        "headers": {"anthropic-beta": "token-efficient-tools-2025-02-19"},
        "connect_timeout": 2.0,
        "first_byte_timeout": 5.0,
        "idle_timeout": 5.0,
    }
    options.update(cfg)
    return create("claude", ProviderConfig(kind="anthropic", base_url=base_url, **options))


@pytest.fixture
async def provider(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AnthropicProvider]:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url)
    yield p
    await p.aclose()


@pytest.fixture
async def quick(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AnthropicProvider]:
    """A provider with tiny first-byte and idle timeouts."""
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, first_byte_timeout=0.3, idle_timeout=0.2)
    yield p
    await p.aclose()


def chat(text: str = "Hi", *, messages: Sequence[Message] = (), **params: Any) -> ProviderChatRequest:
    msgs = tuple(messages) or (Message(role="user", content=text),)
    return ProviderChatRequest(upstream_model=MODEL, request=ChatRequest(model="m", messages=msgs, **params))


async def collect(p: AnthropicProvider, req: ProviderChatRequest | None = None) -> list[ChatEvent]:
    return [e async for e in p.stream(req or chat())]


async def collect_until_error(
    p: AnthropicProvider, req: ProviderChatRequest | None = None
) -> tuple[list[ChatEvent], UpstreamError]:
    events: list[ChatEvent] = []
    with pytest.raises(UpstreamError) as info:
        async for e in p.stream(req or chat()):
            events.append(e)
    return events, info.value


def assembled(events: Sequence[ChatEvent]) -> dict[int, tuple[str, str, str]]:
    """Tool calls reassembled by index, as an OpenAI client does: (id, name, arguments)."""
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            call = calls.setdefault(e.index, ["", "", ""])
            if e.id is not None:
                assert not call[0], "id sent twice for one index"
                call[0] = e.id
            if e.name is not None:
                call[1] = e.name
            call[2] += e.arguments
    return {i: (c[0], c[1], c[2]) for i, c in calls.items()}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ unary
async def test_complete_text_sends_a_messages_request(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(payload("message")))
    result = await provider.complete(chat("Hi"))
    assert result == ChatResult(content="Hi! My name is Claude.", finish_reason="stop", native_finish_reason="end_turn",
                                prompt_tokens=2095, completion_tokens=503, usage_estimated=False)
    rec = fake.last
    assert (rec.method, rec.path) == ("POST", "/v1/messages")
    assert rec.headers["x-api-key"] == SECRET
    assert rec.headers["anthropic-version"] == "2023-06-01" == ANTHROPIC_VERSION
    assert rec.headers["content-type"] == "application/json"
    assert rec.headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"
    assert "authorization" not in rec.headers
    assert rec.json == {"model": MODEL, "max_tokens": 4096,
                        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}


async def test_complete_tool_use_becomes_openai_tool_calls(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(payload("message_tool_use")))
    result = await provider.complete(chat("Weather in SF?"))
    assert result.content == "I'll check the current weather in San Francisco for you."
    (call,) = result.tool_calls
    assert (call.id, call.name) == ("toolu_01A09q90qw90lq917835lq9", "get_weather")
    assert json.loads(call.arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    assert (result.finish_reason, result.native_finish_reason) == ("tool_calls", "tool_use")
    assert (result.prompt_tokens, result.completion_tokens, result.usage_estimated) == (384, 75, False)


async def test_complete_only_tool_use_has_null_content_and_cache_tokens_count_as_prompt(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 3000,
             "output_tokens": 40}
    fake.script(Scenario.json(message(None, tool_uses=[("toolu_1", "f", {})], stop_reason="tool_use", usage=usage)))
    result = await provider.complete(chat())
    assert result.content is None
    assert result.tool_calls == (ToolCall(id="toolu_1", name="f", arguments="{}"),)
    assert (result.prompt_tokens, result.completion_tokens) == (3210, 40)


async def test_complete_estimates_usage_when_upstream_reports_none(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(message("Four score and seven years ago", usage={})))
    req = chat("Recite it")
    result = await provider.complete(req)
    assert result.usage_estimated is True
    assert result.prompt_tokens == count_message_tokens(req.request.messages) > 0
    assert result.completion_tokens == count_tokens("Four score and seven years ago") > 0


async def test_complete_error_body_in_a_200(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(payload("error_overloaded")))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert (info.value.retryable, info.value.status) == (True, 529)
    assert "Overloaded" in str(info.value)


# ------------------------------------------------------------------------------------ request body
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def conversation() -> tuple[Message, ...]:
    return (
        Message(role="system", content="Be brief."),
        Message(role="user", parts=(
            ContentPart(type="text", text="What is in these?"),
            ContentPart(type="image_url", image_url=f"data:image/png;base64,{PNG_B64}", detail="low"),
            ContentPart(type="image_url", image_url="https://example.com/cat.jpg"),
        ), name="alice"),
        Message(role="user", content="Then call the tools."),  # consecutive user turns merge
        Message(role="assistant", content="", tool_calls=(
            ToolCall(id="toolu_A", name="lookup", arguments='{"city": "Paris"}'),
            ToolCall(id="toolu_B", name="lookup", arguments="not json"),
            ToolCall(id="toolu_C", name="now", arguments=""),
        )),
        Message(role="tool", content='{"temp": 21}', tool_call_id="toolu_A"),
        Message(role="tool", content="error: bad args", tool_call_id="toolu_B"),
        Message(role="tool", content="", tool_call_id="toolu_C"),
        Message(role="developer", content="Answer in French."),  # hoisted, wherever it sits
        Message(role="user", content="Summarise."),  # joins the tool results' user turn, after them
        Message(role="assistant", content="Il fait"),
        Message(role="assistant", content=" beau."),
        Message(role="user", content="   "),  # whitespace-only: Anthropic rejects it, dropped
        Message(role="user", content="Merci"),
    )


def full_request(**overrides: Any) -> ProviderChatRequest:
    params: dict[str, Any] = dict(
        max_tokens=300, temperature=1.7, top_p=0.9, stop=("END", "STOP"), seed=7, frequency_penalty=0.5,
        presence_penalty=0.1, user="user-42",
        tools=(Tool(name="lookup", description="Look a city up", parameters=SCHEMA, strict=True), Tool(name="now")),
        tool_choice=ToolChoice(mode="function", name="lookup"),
    )
    params.update(overrides)
    return chat(messages=conversation(), **params)


EXPECTED_BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 300,
    "system": "Be brief.\n\nAnswer in French.",
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "Then call the tools."},
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_A", "name": "lookup", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_B", "name": "lookup", "input": {"_raw": "not json"}},
            {"type": "tool_use", "id": "toolu_C", "name": "now", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_A", "content": '{"temp": 21}'},
            {"type": "tool_result", "tool_use_id": "toolu_B", "content": "error: bad args"},
            {"type": "tool_result", "tool_use_id": "toolu_C"},
            {"type": "text", "text": "Summarise."},
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": "Il fait"}, {"type": "text", "text": " beau."}]},
        {"role": "user", "content": [{"type": "text", "text": "Merci"}]},
    ],
    "temperature": 1.0,  # clamped to Anthropic's 0..1
    "top_p": 0.9,
    "stop_sequences": ["END", "STOP"],
    "tools": [
        {"name": "lookup", "description": "Look a city up", "input_schema": SCHEMA},
        {"name": "now", "input_schema": {"type": "object"}},
    ],
    "tool_choice": {"type": "tool", "name": "lookup"},
    "metadata": {"user_id": "user-42"},
}


async def test_request_translation_unary(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(message()))
    await provider.complete(full_request())
    assert fake.last.json == EXPECTED_BODY  # seed and the penalties have no Anthropic equivalent
    roles = [m["role"] for m in fake.last.json["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles))  # strict alternation


async def test_request_translation_stream_adds_stream(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(stream(text_stream()))
    await collect(provider, full_request())
    assert fake.last.json == {**EXPECTED_BODY, "stream": True}
    assert fake.last.headers["accept"] == "text/event-stream"
    assert fake.last.headers["anthropic-version"] == ANTHROPIC_VERSION


def test_tool_results_open_the_user_turn_whatever_the_order() -> None:
    msgs = (
        Message(role="user", content="q"),
        Message(role="assistant", tool_calls=(ToolCall(id="toolu_1", name="f", arguments="{}"),)),
        Message(role="user", content="note first"),
        Message(role="tool", content="r", tool_call_id="toolu_1"),
    )
    body = messages_body(MODEL, ChatRequest(model="m", messages=msgs), stream=False)
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}, {"type": "text", "text": "note first"}]}


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (ToolChoice(mode="auto"), {"type": "auto"}),
        (ToolChoice(mode="required"), {"type": "any"}),
        (ToolChoice(mode="function", name="f"), {"type": "tool", "name": "f"}),
        (ToolChoice(mode="none"), {"type": "none"}),
    ],
)
async def test_tool_choice_mapping(
    fake: FakeAnthropic, provider: AnthropicProvider, choice: ToolChoice, wire: dict[str, str]
) -> None:
    fake.script(Scenario.json(message()))
    await provider.complete(chat(tools=(Tool(name="f"),), tool_choice=choice))
    assert fake.last.json["tool_choice"] == wire
    assert fake.last.json["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]


async def test_max_tokens_default_and_explicit(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    p = AnthropicProvider("claude", ProviderConfig(kind="anthropic", base_url=fake.base_url, api_key_env=ENV),
                          default_max_tokens=1234)
    try:
        await p.complete(chat())  # the fake answers 400 "max_tokens: Field required" without it
        await p.complete(chat(max_tokens=7))
    finally:
        await p.aclose()
    assert [r.json["max_tokens"] for r in fake.requests] == [1234, 7]
    assert messages_body(MODEL, chat().request, stream=False)["max_tokens"] == 4096


async def test_only_set_parameters_are_sent_and_temperature_in_range_passes(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(message()))
    await provider.complete(chat(temperature=0.3))
    assert fake.last.json == {"model": MODEL, "max_tokens": 4096, "temperature": 0.3,
                              "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}


@pytest.mark.parametrize(
    ("fmt", "needle", "version"),
    [
        (ResponseFormat(type="json_object"), "single valid JSON object", ""),
        # json_schema is native (output_config.format) from 2023-06-01 on: see test_anthropic_fidelity
        (ResponseFormat(type="json_schema", name="city", schema=SCHEMA), json.dumps(SCHEMA, separators=(",", ":")),
         "2023-01-01"),
    ],
)
async def test_response_format_becomes_a_system_instruction(
    fake: FakeAnthropic, provider: AnthropicProvider, fmt: ResponseFormat, needle: str, version: str
) -> None:
    provider.native_structured_outputs = not version
    fake.script(Scenario.json(message('{"city": "Paris"}')))
    msgs = (Message(role="system", content="You extract cities."), Message(role="user", content="Paris!"))
    await provider.complete(chat(messages=msgs, response_format=fmt))
    system = fake.last.json["system"]
    assert system.startswith("You extract cities.\n\n") and needle in system
    assert "response_format" not in fake.last.json


async def test_extra_passes_only_anthropic_fields(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(message()))
    extra = {"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 2048}, "logit_bias": {"1": -100},
             "metadata": {"tenant": "t1"}, "parallel_tool_calls": False, "stream": True}
    await provider.complete(chat(extra=extra, user="u1", tools=(Tool(name="f"),)))
    body = fake.last.json
    assert body["top_k"] == 5 and body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["metadata"] == {"tenant": "t1", "user_id": "u1"}
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "logit_bias" not in body and "parallel_tool_calls" not in body and "stream" not in body


# ------------------------------------------------------------------------------------ streaming
async def test_stream_text_from_the_recorded_stream(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(stream(payload("stream_text")))  # includes a ping
    assert await collect(provider) == HELLO


@pytest.mark.parametrize(
    "scenario",
    [
        stream(payload("stream_text")).split_writes("mid_line"),
        stream(payload("stream_text")).split_writes(7, pause=0.001),
        stream(payload("stream_text"), line_ending="\r\n").split_writes("mid_line"),
    ],
    ids=["mid-line", "7-byte-writes", "crlf-split"],
)
async def test_stream_survives_adversarial_framing(
    fake: FakeAnthropic, provider: AnthropicProvider, scenario: Scenario
) -> None:
    fake.script(scenario)
    assert await collect(provider) == HELLO
    await fake.last.wait_ended()
    assert fake.last.completed


async def test_stream_tool_use_becomes_openai_tool_call_fragments(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(stream(payload("stream_tool_use")).split_writes("mid_line"))
    events = await collect(provider)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    calls = assembled(events)
    assert list(calls) == [0]  # index = tool-call ordinal, not Anthropic's block index (1)
    call_id, name, arguments = calls[0]
    assert (call_id, name) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    fragments = [e for e in events if isinstance(e, ToolCallDelta)]
    assert fragments[0] == ToolCallDelta(index=0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather")
    assert all(f.arguments for f in fragments[1:])  # the empty input_json_delta is not forwarded
    assert events[-2:] == [Finish(reason="tool_calls", native="tool_use"),
                           UsageReport(prompt_tokens=472, completion_tokens=89)]


async def test_stream_multiple_tool_calls(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    calls = [("toolu_01", "get_weather", ['{"city":', ' "Paris"}']), ("toolu_02", "get_time", []),
             ("toolu_03", "get_weather", ['{"city": "Rome"}'])]
    fake.script(stream(tool_use_stream(calls, text=["Checking", "."])))
    events = await collect(provider)
    assert assembled(events) == {
        0: ("toolu_01", "get_weather", '{"city": "Paris"}'),
        1: ("toolu_02", "get_time", "{}"),  # no input at all: "{}", never "" (clients json.loads it)
        2: ("toolu_03", "get_weather", '{"city": "Rome"}'),
    }
    assert [e.index for e in events if isinstance(e, ToolCallDelta) and e.id] == [0, 1, 2]
    assert events[0] == TextDelta(text="Checking")
    assert events[-2] == Finish(reason="tool_calls", native="tool_use")


@pytest.mark.parametrize(
    ("native", "reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
     ("some_future_reason", "stop")],
)
async def test_stop_reason_mapping_keeps_native(
    fake: FakeAnthropic, provider: AnthropicProvider, native: str, reason: str
) -> None:
    fake.script(stream(text_stream(["x"], stop_reason=native)), Scenario.json(message("x", stop_reason=native)))
    events = await collect(provider)
    assert [e for e in events if isinstance(e, Finish)] == [Finish(reason=reason, native=native)]
    assert isinstance(events[-1], UsageReport)
    result = await provider.complete(chat())
    assert (result.finish_reason, result.native_finish_reason) == (reason, native)


async def test_stream_usage_from_message_start_and_cumulative_message_delta(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(stream([
        message_start(100, 1, cache_creation=20, cache_read=30),
        content_block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "a"),
        message_delta(None, 5),  # an intermediate count ...
        text_delta(0, "b"),
        content_block_stop(0),
        message_delta("end_turn", 9),  # ... the last cumulative count wins
        message_stop(),
    ]))
    events = await collect(provider)
    assert events == [TextDelta(text="a"), TextDelta(text="b"), Finish(reason="stop", native="end_turn"),
                      UsageReport(prompt_tokens=150, completion_tokens=9, cached_tokens=30, cache_creation_tokens=20)]


async def test_message_delta_input_tokens_update_the_prompt(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    events = text_stream(["x"], usage=(0, 3))
    events[-2] = message_delta("end_turn", 3, input_tokens=42)
    fake.script(stream(events))
    assert (await collect(provider))[-1] == UsageReport(prompt_tokens=42, completion_tokens=3)


async def test_stream_usage_estimated_when_upstream_sends_none(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(stream(text_stream(["Once", " upon", " a time"], usage=None)))
    req = chat("Tell me a story")
    events = await collect(provider, req)
    assert events[-2:] == [Finish(reason="stop", native="end_turn"), UsageReport(
        prompt_tokens=count_message_tokens(req.request.messages), completion_tokens=count_tokens("Once upon a time"),
        estimated=True)]


async def test_unknown_events_and_blocks_are_ignored(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(stream([
        message_start(10, 1),
        content_block_start(0, {"type": "thinking", "thinking": ""}),
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
        content_block_stop(0),
        ping(),
        {"type": "some_new_event", "payload": {"x": 1}},
        content_block_start(1, {"type": "some_new_block", "x": 1}),
        {"type": "content_block_delta", "index": 1, "delta": {"type": "some_new_delta", "y": 2}},
        content_block_stop(1),
        content_block_start(2, {"type": "text", "text": ""}),
        text_delta(2, "answer"),
        content_block_stop(2),
        message_delta("end_turn", 4),
        message_stop(),
    ]))
    # thinking is reasoning now (issue 12); unknown events, blocks and deltas are skipped
    assert await collect(provider) == [ReasoningDelta(index=0, text="hmm"), ReasoningDelta(index=0, signature="EqQB"),
                                       TextDelta(text="answer"), Finish(reason="stop", native="end_turn"),
                                       UsageReport(prompt_tokens=10, completion_tokens=4)]


async def test_json_answer_to_a_stream_request_becomes_events(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(payload("message_tool_use")))
    assert await collect(provider) == [
        TextDelta(text="I'll check the current weather in San Francisco for you."),
        ToolCallDelta(index=0, id="toolu_01A09q90qw90lq917835lq9", name="get_weather",
                      arguments='{"location":"San Francisco, CA","unit":"celsius"}'),
        Finish(reason="tool_calls", native="tool_use"),
        UsageReport(prompt_tokens=384, completion_tokens=75),
    ]


async def test_connection_is_reused(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(message()), stream(payload("stream_text")), stream(payload("stream_text")),
                Scenario.json(message()))
    await provider.complete(chat())
    assert await collect(provider) == HELLO
    assert await collect(provider) == HELLO
    await provider.complete(chat())
    assert len({r.peer for r in fake.requests}) == 1
    assert all(r.completed and not r.disconnected for r in fake.requests)


# ------------------------------------------------------------------------------------ HTTP errors
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_529_overloaded_is_retryable(fake: FakeAnthropic, provider: AnthropicProvider, mode: str) -> None:
    fake.script(Scenario.json(payload("error_overloaded"), status=529, headers={"retry-after": "2"}))
    with pytest.raises(UpstreamError) as info:
        if mode == "complete":
            await provider.complete(chat())
        else:
            await collect(provider)
    exc = info.value
    assert (exc.retryable, exc.status, exc.retry_after, exc.provider) == (True, 529, 2.0, "claude")
    assert not isinstance(exc, UpstreamTimeout)
    assert "Overloaded" in str(exc)


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_429_is_retryable_with_retry_after(fake: FakeAnthropic, provider: AnthropicProvider, mode: str) -> None:
    fake.script(Scenario.json(payload("error_rate_limit"), status=429, headers={"retry-after": "17"}))
    with pytest.raises(UpstreamError) as info:
        if mode == "complete":
            await provider.complete(chat())
        else:
            await collect(provider)
    exc = info.value
    assert (exc.retryable, exc.status, exc.retry_after, exc.code) == (True, 429, 17.0, "upstream_rate_limited")
    assert "would exceed the rate limit for your organization" in str(exc)


async def test_500_api_error_is_retryable(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(Scenario.json(payload("error_api"), status=500))
    _, exc = await collect_until_error(provider)
    assert (exc.retryable, exc.status) == (True, 500) and "Internal server error" in str(exc)


async def test_400_is_not_retryable_and_carries_the_upstream_message(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(Scenario.json(payload("error_invalid_request"), status=400))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    exc = info.value
    assert (exc.retryable, exc.status, exc.retry_after) == (False, 400, None)
    assert "Each `tool_result` block must have a corresponding `tool_use` block" in exc.message


async def test_wrong_key_is_401_not_retryable(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "sk-ant-wrong-key-000")
    p = make(fake.base_url)
    try:
        with pytest.raises(UpstreamError) as info:
            await p.complete(chat())
    finally:
        await p.aclose()
    assert (info.value.retryable, info.value.status) == (False, 401)
    assert "invalid x-api-key" in str(info.value)


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_missing_api_key_env_var(
    fake: FakeAnthropic, provider: AnthropicProvider, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(UpstreamError) as info:
        if mode == "complete":
            await provider.complete(chat())
        else:
            await collect(provider)
    assert info.value.retryable is False and ENV in str(info.value)
    assert fake.requests == []  # nothing was sent


# ------------------------------------------------------------------------------------ broken streams
async def test_error_event_mid_stream(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    events = text_stream(["partial"], stop_reason=None, stop=False)
    fake.script(stream([*events[:-1], error_event("overloaded_error", "Overloaded")]).held_open(5))
    got, exc = await collect_until_error(provider)
    assert got == [TextDelta(text="partial")]
    assert "Overloaded" in str(exc) and exc.status == 529
    assert exc.retryable is False  # content went out: the router may no longer switch routes
    await fake.last.wait_ended()
    assert fake.last.disconnected  # we stopped reading and closed the connection


async def test_error_event_before_any_content(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(
        stream([message_start(), ping(), error_event("overloaded_error", "Overloaded")]),
        stream([message_start(), error_event("invalid_request_error", "prompt is too long: 210000 tokens")]),
        stream([message_start(), error_event("timeout_error", "Request timed out")]),
        stream([b"event: error\ndata: upstream exploded\n\n"]),
    )
    got, exc = await collect_until_error(provider)
    assert got == [] and (exc.retryable, exc.status) == (True, 529)
    got, exc = await collect_until_error(provider)
    assert (exc.retryable, exc.status) == (False, 400) and "prompt is too long" in str(exc)
    _, exc = await collect_until_error(provider)
    assert (exc.retryable, exc.status) == (True, 504)
    _, exc = await collect_until_error(provider)
    assert "upstream exploded" in str(exc)


async def test_reset_mid_stream(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(stream(payload("stream_text")).reset(after=4), stream(payload("stream_text")).reset(after=0))
    got, exc = await collect_until_error(provider)
    assert got == [TextDelta(text="Hello")]
    assert exc.retryable is False and not isinstance(exc, UpstreamTimeout)
    assert fake.last.reset
    got, exc = await collect_until_error(provider)
    assert got == [] and exc.retryable is True


async def test_stream_ending_before_it_finished(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(
        stream(text_stream(["cut"], stop_reason=None, stop=False)),
        stream([message_start(), ping()]),
    )
    got, exc = await collect_until_error(provider)
    assert got == [TextDelta(text="cut")]
    assert exc.retryable is False and "before it finished" in str(exc)
    got, exc = await collect_until_error(provider)
    assert got == [] and exc.retryable is True


async def test_lost_message_stop_still_finishes(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    # Every block and the stop reason arrived; only message_stop is missing.
    fake.script(stream(text_stream(["done"], stop=False)).reset(after=6))
    assert await collect(provider) == [TextDelta(text="done"), Finish(reason="stop", native="end_turn"),
                                       UsageReport(prompt_tokens=25, completion_tokens=15)]


async def test_malformed_event(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.script(stream([message_start(), content_block_start(0, {"type": "text", "text": ""}), text_delta(0, "a"),
                        b"event: content_block_delta\ndata: {not json\n\n", text_delta(0, "b")]))
    got, exc = await collect_until_error(provider)
    assert got == [TextDelta(text="a")]
    assert "malformed" in str(exc) and exc.retryable is False


async def test_input_json_delta_without_a_tool_use_block_is_skipped(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    """A server_tool_use block (or one we do not know) streams input_json_delta too: skipped, and
    the stream goes on (it used to end with "not a tool_use block")."""
    fake.script(stream([message_start(), input_json_delta(3, '{"a":1}'), content_block_start(4, {"type": "text"}),
                        text_delta(4, "still here"), message_delta("end_turn", 3), message_stop()]))
    assert await collect(provider) == [TextDelta(text="still here"), Finish(reason="stop", native="end_turn"),
                                       UsageReport(prompt_tokens=25, completion_tokens=3)]


# ------------------------------------------------------------------------------------ timeouts
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_slow_first_byte_times_out(fake: FakeAnthropic, quick: AnthropicProvider, mode: str) -> None:
    fake.script(stream(payload("stream_text")).slow_first_byte(3) if mode == "stream"
                else Scenario.json(message()).slow_first_byte(3))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        if mode == "complete":
            await quick.complete(chat())
        else:
            await collect(quick)
    assert time.monotonic() - started < 2
    assert info.value.retryable and "first byte" in str(info.value)
    await fake.last.wait_ended()
    assert fake.last.disconnected


async def test_stall_between_events_times_out(fake: FakeAnthropic, quick: AnthropicProvider) -> None:
    fake.script(stream(payload("stream_text")).stall(after=4, seconds=3))
    got, exc = await collect_until_error(quick)
    assert got == [TextDelta(text="Hello")]
    assert isinstance(exc, UpstreamTimeout) and "idle" in str(exc)


# ------------------------------------------------------------------------------------ cancellation
async def test_aclose_mid_stream_closes_the_upstream_connection(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(stream(text_stream(["tok"] * 200)).paced(0.02))
    events = provider.stream(chat())
    assert await anext(events) == TextDelta(text="tok")
    await events.aclose()  # type: ignore[attr-defined]
    await fake.last.wait_ended(within=2)
    assert fake.last.disconnected and not fake.last.completed


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.script(stream(text_stream(["tok"] * 200)).paced(0.02))
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(chat()):
            got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.last.wait_ended(within=2)
    assert fake.last.disconnected and not fake.last.completed


# ------------------------------------------------------------------------------------ secrets
async def test_api_key_never_appears_in_error_messages(fake: FakeAnthropic, quick: AnthropicProvider) -> None:
    echo = f"invalid x-api-key: {SECRET}"
    fake.script(
        error(401, "authentication_error", echo),
        error(429, "rate_limit_error", echo, headers={"retry-after": "1"}),
        error(529, "overloaded_error", echo),
        Scenario.raw(f"bad key {SECRET}".encode(), status=500),
        stream([message_start(), content_block_start(0, {"type": "text", "text": ""}), text_delta(0, "x"),
                error_event("api_error", echo)]),
        stream([error_event("overloaded_error", echo)]),
        stream([f"event: error\ndata: {SECRET}\n\n".encode()]),
        stream([f"event: message_start\ndata: {{{SECRET}\n\n".encode()]),
        Scenario.json(error_body_with(echo)),
        stream(payload("stream_text")).slow_first_byte(2),
        stream(payload("stream_text")).stall(after=1, seconds=2),
        stream(payload("stream_text")).reset(after=1),
    )
    errors: list[UpstreamError] = []
    for _ in range(12):
        _, exc = await collect_until_error(quick)
        errors.append(exc)
    refused = make(f"http://127.0.0.1:{closed_port()}")
    try:
        _, exc = await collect_until_error(refused)
        errors.append(exc)
    finally:
        await refused.aclose()
    assert len(errors) == 13
    assert "[redacted]" in str(errors[0])  # the echo was there, and was blanked
    for exc in errors:
        assert SECRET not in str(exc) and SECRET not in repr(exc.args) and SECRET not in exc.message
        assert SECRET not in repr(exc.__cause__) and SECRET not in repr(exc.__context__)


def error_body_with(message_text: str) -> dict[str, Any]:
    body = payload("error_api")
    body["error"]["message"] = message_text
    return body


# ------------------------------------------------------------------------------------ wiring
async def test_built_by_the_registry_and_talks_to_the_default_fake(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    settings = load_settings(None, {"providers": {"claude": {
        "kind": "anthropic", "base_url": fake.base_url, "api_key_env": ENV}}}, environ={})
    built = build_providers(settings)
    adapter = built.chat["claude"]
    try:
        assert isinstance(adapter, AnthropicProvider) and isinstance(adapter, ChatProvider)
        assert adapter.name == "claude" and "claude" not in built.image
        words = DEFAULT_TEXT.split(" ")
        result = await adapter.complete(chat())
        assert (result.content, result.prompt_tokens, result.completion_tokens) == (DEFAULT_TEXT, 12, len(words))
        events = await collect(adapter, chat())  # the default fake streams too
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == DEFAULT_TEXT
        assert events[-2:] == [Finish(reason="stop", native="end_turn"),
                               UsageReport(prompt_tokens=12, completion_tokens=len(words))]
    finally:
        for close in built.closers:
            await close()
    assert adapter._http._session is None  # closed by the registry's closer


async def test_fake_enforces_the_real_api_front_door(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        url = f"{fake.base_url}/v1/messages"
        async with session.post(url, json=body, headers={"x-api-key": SECRET}) as r:
            assert r.status == 400 and "anthropic-version" in (await r.json())["error"]["message"]
        async with session.post(url, json=body, headers={"anthropic-version": ANTHROPIC_VERSION}) as r:
            assert r.status == 401 and (await r.json())["error"]["type"] == "authentication_error"
        headers = {"anthropic-version": ANTHROPIC_VERSION, "x-api-key": SECRET}
        async with session.post(url, json=body, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["message"] == "max_tokens: Field required"
        async with session.post(url, json={**body, "max_tokens": 5, "stream": True}, headers=headers) as r:
            text = await r.text()
            assert r.headers["content-type"].startswith("text/event-stream")
            assert text.startswith("event: message_start\ndata: ") and text.endswith(
                'event: message_stop\ndata: {"type":"message_stop"}\n\n')
            assert "event: ping\n" in text and "[DONE]" not in text
