"""The ``openai`` provider kind against a fake OpenAI upstream on a real loopback socket."""

from __future__ import annotations

import asyncio
import email.utils
import io
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from fakes.openai_upstream import (
    DEFAULT_TEXT,
    FakeOpenAI,
    Scenario,
    chat_completion,
    chunk,
    error_body,
    images_response,
    payload,
    png_bytes,
    text_chunks,
    tool_call_chunks,
    usage_chunk,
    video_job,
)
from PIL import Image

from raven_service.config import ProviderConfig, load_settings
from raven_service.core.errors import UpstreamError, UpstreamTimeout
from raven_service.core.ports import ChatProvider, ImageProvider, VideoProvider
from raven_service.core.tokens import count_message_tokens, count_tokens
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    ContentPart,
    Finish,
    ImageRequest,
    Message,
    ProviderChatRequest,
    ResponseFormat,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    UsageReport,
    VideoRequest,
    VideoState,
)
from raven_service.providers.openai_compat import OpenAICompatProvider, create
from raven_service.wiring import build_providers

pytestmark = pytest.mark.timeout(30)

ENV = "RAVEN_TEST_OPENAI_KEY"
SECRET = "sk-proj-S3CR3T-do-not-leak-0123456789abcdefABCDEF"
UPSTREAM_MODEL = "gpt-upstream-1"
MINTED_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")
STREAM_EVENTS = [
    TextDelta(text="Hello"),
    TextDelta(text="!"),
    TextDelta(text=" How can I assist you today?"),
    Finish(reason="stop", native="stop"),
    UsageReport(prompt_tokens=9, completion_tokens=12),
]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as f:
        yield f


def make(base_url: str, **cfg: Any) -> OpenAICompatProvider:
    options: dict[str, Any] = {
        "api_key_env": ENV,
        "headers": {"OpenAI-Organization": "org-raven"},
        "connect_timeout": 2.0,
        "first_byte_timeout": 5.0,
        "idle_timeout": 5.0,
    }
    options.update(cfg)
    return create("up", ProviderConfig(kind="openai", base_url=base_url, **options))


@pytest.fixture
async def provider(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAICompatProvider]:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url)
    yield p
    await p.aclose()


@pytest.fixture
async def quick(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAICompatProvider]:
    """A provider with tiny first-byte and idle timeouts."""
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, first_byte_timeout=0.3, idle_timeout=0.2)
    yield p
    await p.aclose()


def chat(text: str = "Hi", *, messages: Sequence[Message] = (), **params: Any) -> ProviderChatRequest:
    msgs = tuple(messages) or (Message(role="user", content=text),)
    return ProviderChatRequest(upstream_model=UPSTREAM_MODEL, request=ChatRequest(model="m", messages=msgs, **params))


async def collect(p: OpenAICompatProvider, req: ProviderChatRequest | None = None) -> list[ChatEvent]:
    return [e async for e in p.stream(req or chat())]


async def collect_until_error(p: OpenAICompatProvider, req: ProviderChatRequest | None = None):
    events: list[ChatEvent] = []
    with pytest.raises(UpstreamError) as info:
        async for e in p.stream(req or chat()):
            events.append(e)
    return events, info.value


def assembled(events: Sequence[ChatEvent]) -> dict[int, tuple[str, str, str]]:
    """Tool calls reassembled by index: (id, name, arguments)."""
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


# ------------------------------------------------------------------------------------ unary chat
async def test_complete_text_sends_openai_request(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(chat_completion()))
    result = await provider.complete(chat("Hi"))
    assert result == ChatResult(
        content=DEFAULT_TEXT, finish_reason="stop", native_finish_reason="stop", prompt_tokens=19,
        completion_tokens=10, usage_estimated=False,
    )
    rec = fake.last
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.headers["authorization"] == f"Bearer {SECRET}"
    assert rec.headers["openai-organization"] == "org-raven"
    assert rec.headers["content-type"] == "application/json"
    assert rec.json == {"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": "Hi"}]}


async def test_complete_tool_calls_with_null_content(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(payload("chat_completion_tool_calls")))
    result = await provider.complete(chat("Weather in Boston?"))
    assert result.content is None
    assert result.tool_calls == (
        ToolCall(id="call_abc123", name="get_current_weather", arguments='{\n"location": "Boston, MA"\n}'),
    )
    assert (result.finish_reason, result.native_finish_reason) == ("tool_calls", "tool_calls")
    assert (result.prompt_tokens, result.completion_tokens, result.usage_estimated) == (82, 17, False)


async def test_complete_estimates_usage_when_upstream_reports_none(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(Scenario.json(chat_completion("Four score and seven years ago", usage=None)))
    req = chat("Recite it")
    result = await provider.complete(req)
    assert result.usage_estimated is True
    assert result.prompt_tokens == count_message_tokens(req.request.messages) > 0
    assert result.completion_tokens == count_tokens("Four score and seven years ago") > 0


async def test_complete_error_object_in_a_200_body(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(error_body("Model is overloaded", type="server_error")))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert "Model is overloaded" in str(info.value)
    assert info.value.retryable is True


# ------------------------------------------------------------------------------------ request body
def full_request(**overrides: Any) -> ProviderChatRequest:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    messages = (
        Message(role="system", content="Be brief."),
        Message(role="user", parts=(
            ContentPart(type="text", text="What is this?"),
            ContentPart(type="image_url", image_url="https://example.com/a.png", detail="low"),
        ), name="alice"),
        Message(role="assistant", content="", tool_calls=(ToolCall(id="call_1", name="lookup", arguments='{"q":1}'),)),
        Message(role="tool", content='{"ok":true}', tool_call_id="call_1"),
    )
    params: dict[str, Any] = dict(
        max_tokens=50, temperature=0.2, top_p=0.9, stop=("END",), seed=7,
        tools=(Tool(name="lookup", description="Look it up", parameters=schema, strict=True),),
        tool_choice=ToolChoice(mode="function", name="lookup"),
        response_format=ResponseFormat(type="json_schema", name="city", schema=schema, strict=True),
        frequency_penalty=0.5, presence_penalty=-0.5, user="u-1",
    )
    params.update(overrides)
    return chat(messages=messages, **params)


EXPECTED_BODY = {
    "model": UPSTREAM_MODEL,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "alice", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        ]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":1}'}}]},
        {"role": "tool", "content": '{"ok":true}', "tool_call_id": "call_1"},
    ],
    "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "seed": 7,
    "tools": [{"type": "function", "function": {
        "name": "lookup", "description": "Look it up", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "response_format": {"type": "json_schema", "json_schema": {
        "name": "city", "strict": True,
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    "frequency_penalty": 0.5, "presence_penalty": -0.5, "user": "u-1",
}


async def test_request_translation_unary(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(chat_completion()))
    await provider.complete(full_request())
    assert fake.last.json == EXPECTED_BODY


async def test_request_translation_stream_adds_stream_and_include_usage(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(Scenario.chat_stream())
    await collect(provider, full_request())
    assert fake.last.json == {**EXPECTED_BODY, "stream": True, "stream_options": {"include_usage": True}}
    assert fake.last.headers["accept"] == "text/event-stream"


@pytest.mark.parametrize(
    ("choice", "wire"),
    [(ToolChoice(mode="none"), "none"), (ToolChoice(mode="auto"), "auto"), (ToolChoice(mode="required"), "required")],
)
async def test_tool_choice_modes(
    fake: FakeOpenAI, provider: OpenAICompatProvider, choice: ToolChoice, wire: str
) -> None:
    fake.script(Scenario.json(chat_completion()))
    await provider.complete(chat(tools=(Tool(name="f"),), tool_choice=choice))
    assert fake.last.json["tool_choice"] == wire
    assert fake.last.json["tools"] == [{"type": "function", "function": {"name": "f"}}]


async def test_json_object_response_format(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(chat_completion('{"a": 1}')))
    await provider.complete(chat(response_format=ResponseFormat(type="json_object")))
    assert fake.last.json["response_format"] == {"type": "json_object"}


async def test_only_set_parameters_are_sent(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(chat_completion()))
    await provider.complete(chat(temperature=0.0))
    assert fake.last.json == {"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": "Hi"}],
                              "temperature": 0.0}


async def test_extra_is_passed_through_and_include_usage_always_wins(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    extra = {
        "logit_bias": {"50256": -100},
        "reasoning_effort": "low",
        "stream_options": {"include_usage": False, "continuous_usage_stats": True},
        "stream": False,
    }
    fake.script(Scenario.chat_stream(), Scenario.json(chat_completion()))
    await collect(provider, chat(extra=extra))
    body = fake.requests[0].json
    assert body["logit_bias"] == {"50256": -100} and body["reasoning_effort"] == "low"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}

    await provider.complete(chat(extra=extra))
    body = fake.requests[1].json
    assert body["logit_bias"] == {"50256": -100} and body["reasoning_effort"] == "low"
    assert "stream" not in body and "stream_options" not in body  # unary: no stream keys at all


# ------------------------------------------------------------------------------------ streaming
async def test_stream_text(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream())
    assert await collect(provider) == STREAM_EVENTS


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario.chat_stream().split_writes("mid_line"),
        Scenario.chat_stream().split_writes(5, pause=0.001),
        Scenario.chat_stream(comments=True),
        Scenario.chat_stream(line_ending="\r\n").split_writes("mid_line"),
        Scenario.chat_stream(line_ending="\r", comments=True).split_writes("mid_line"),
    ],
    ids=["mid-line", "5-byte-writes", "comments", "crlf-split", "cr-comments-split"],
)
async def test_stream_survives_adversarial_framing(
    fake: FakeOpenAI, provider: OpenAICompatProvider, scenario: Scenario
) -> None:
    fake.script(scenario)
    assert await collect(provider) == STREAM_EVENTS
    await fake.last.wait_ended()
    assert fake.last.completed


async def test_stream_tool_calls_reassembled_by_index_with_upstream_ids(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    # Recorded shape: two parallel calls, index 0's last fragment arriving after index 1 started.
    fake.script(Scenario.sse(payload("chat_stream_tool_calls")).split_writes("mid_line"))
    events = await collect(provider)
    assert assembled(events) == {
        0: ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", '{"location":"Paris, France"}'),
        1: ("call_LmNoPqRsTuVwXyZ012345678", "get_time", '{"timezone": "Europe/Paris"}'),
    }
    first = [e for e in events if isinstance(e, ToolCallDelta) and e.id is not None]
    assert [(e.index, e.name) for e in first] == [(0, "get_weather"), (1, "get_time")]
    assert events[-2:] == [Finish(reason="tool_calls", native="tool_calls"),
                           UsageReport(prompt_tokens=85, completion_tokens=42)]
    assert not any(isinstance(e, TextDelta) for e in events)


async def test_stream_mints_call_ids_only_where_missing(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    calls = [(None, "first", ["{}"]), ("call_fromupstream", "second", ['{"x":', "1}"])]
    fake.script(Scenario.sse(tool_call_chunks(calls)))
    calls = assembled(await collect(provider))
    assert MINTED_ID.match(calls[0][0]) and calls[0][1:] == ("first", "{}")
    assert calls[1] == ("call_fromupstream", "second", '{"x":1}')


async def test_stream_usage_estimated_when_upstream_sends_none(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(
        Scenario.chat_stream(["Once", " upon", " a time"], usage=None),
        Scenario.sse(tool_call_chunks([("call_1", "f", ['{"city":', ' "Paris"}'])], usage=None)),
    )
    req = chat("Tell me a story")
    events = await collect(provider, req)
    prompt = count_message_tokens(req.request.messages)
    assert events[-1] == UsageReport(prompt_tokens=prompt, completion_tokens=count_tokens("Once upon a time"),
                                     estimated=True)
    events = await collect(provider, req)
    assert events[-1] == UsageReport(prompt_tokens=prompt, completion_tokens=count_tokens('{"city": "Paris"}'),
                                     estimated=True)


async def test_exactly_one_finish_then_usage_whatever_the_upstream_order(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    both = chunk({}, "length")
    both["usage"] = usage_chunk(3, 4)["usage"]
    fake.script(
        # usage before finish, then finish and usage repeated in one chunk
        Scenario.sse([chunk({"content": "a"}), usage_chunk(1, 2), chunk({"content": "b"}), both]),
    )
    events = await collect(provider)
    assert events == [TextDelta(text="a"), TextDelta(text="b"), Finish(reason="length", native="length"),
                      UsageReport(prompt_tokens=3, completion_tokens=4)]


@pytest.mark.parametrize(
    ("native", "reason"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"), ("content_filter", "content_filter"),
     ("function_call", "tool_calls"), ("eos", "stop"), ("end_turn", "stop")],
)
async def test_finish_reason_mapping_keeps_native(
    fake: FakeOpenAI, provider: OpenAICompatProvider, native: str, reason: str
) -> None:
    fake.script(
        Scenario.chat_stream(["x"], finish_reason=native), Scenario.json(chat_completion("x", finish_reason=native))
    )
    events = await collect(provider)
    assert events[-2] == Finish(reason=reason, native=native)
    result = await provider.complete(chat())
    assert (result.finish_reason, result.native_finish_reason) == (reason, native)


async def test_tool_calls_with_native_stop_finish_as_tool_calls(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(
        Scenario.sse(tool_call_chunks([("call_9", "f", ["{}"])], finish_reason="stop")),
        Scenario.json(chat_completion(None, tool_calls=[("call_9", "f", "{}")], finish_reason="stop")),
    )
    assert (await collect(provider))[-2] == Finish(reason="tool_calls", native="stop")
    result = await provider.complete(chat())
    assert (result.finish_reason, result.native_finish_reason) == ("tool_calls", "stop")


async def test_done_without_finish_reason_finishes_stop(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.sse([chunk({"content": "hi"}), usage_chunk(2, 1)]))
    assert await collect(provider) == [TextDelta(text="hi"), Finish(reason="stop", native=""),
                                       UsageReport(prompt_tokens=2, completion_tokens=1)]


async def test_json_answer_to_a_stream_request_becomes_events(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(Scenario.json(chat_completion("whole")))
    assert await collect(provider) == [TextDelta(text="whole"), Finish(reason="stop", native="stop"),
                                       UsageReport(prompt_tokens=19, completion_tokens=10)]


async def test_connection_is_reused(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(
        Scenario.json(chat_completion()),
        Scenario.chat_stream(),
        Scenario.chat_stream().split_writes("mid_line"),
        Scenario.chat_stream().held_open(0.03),  # the body ends a little after [DONE]
        Scenario.json(chat_completion()),
    )
    await provider.complete(chat())
    for _ in range(3):
        assert await collect(provider) == STREAM_EVENTS
    await provider.complete(chat())
    assert len({r.peer for r in fake.requests}) == 1
    assert all(r.completed and not r.disconnected for r in fake.requests)


# ------------------------------------------------------------------------------------ HTTP errors
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_429_is_retryable_with_retry_after_seconds(
    fake: FakeOpenAI, provider: OpenAICompatProvider, mode: str
) -> None:
    fake.script(Scenario.json(payload("error_rate_limit"), status=429, headers={"Retry-After": "7"}))
    with pytest.raises(UpstreamError) as info:
        if mode == "complete":
            await provider.complete(chat())
        else:
            await collect(provider)
    exc = info.value
    assert (exc.retryable, exc.retry_after, exc.status, exc.provider) == (True, 7.0, 429, "up")
    assert exc.code == "upstream_rate_limited"
    assert "Rate limit reached for gpt-4o-mini" in str(exc)


async def test_429_retry_after_http_date(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake.script(Scenario.error(429, "slow down", headers={"Retry-After": when}))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert info.value.retryable
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


@pytest.mark.parametrize("status", [500, 502, 503, 529, 408, 409])
async def test_server_errors_are_retryable(fake: FakeOpenAI, provider: OpenAICompatProvider, status: int) -> None:
    fake.script(Scenario.json(payload("error_server"), status=status, headers={"Retry-After": "1"}))
    _, exc = await collect_until_error(provider)
    assert (exc.retryable, exc.status, exc.retry_after) == (True, status, 1.0)
    assert not isinstance(exc, UpstreamTimeout)
    assert "The server had an error" in str(exc)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retryable_and_carry_upstream_message(
    fake: FakeOpenAI, provider: OpenAICompatProvider, status: int
) -> None:
    fake.script(Scenario.json(payload("error_invalid_request"), status=status))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    exc = info.value
    assert (exc.retryable, exc.status, exc.retry_after) == (False, status, None)
    assert "Invalid value for 'temperature': must be between 0 and 2." in exc.detail


async def test_non_json_error_body(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(
        Scenario.raw(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"),
        Scenario.raw(b"model 'llama9' not found, try pulling it first", status=404),
        Scenario.json({"error": "plain string error"}, status=400),
    )
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert info.value.retryable and "<html>" not in str(info.value) and "502" in str(info.value)
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert not info.value.retryable and "try pulling it first" in str(info.value)
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert "plain string error" in str(info.value)


@pytest.mark.parametrize("call", ["complete", "stream", "images", "video"])
async def test_missing_api_key_env_var(
    fake: FakeOpenAI, provider: OpenAICompatProvider, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(UpstreamError) as info:
        if call == "complete":
            await provider.complete(chat())
        elif call == "stream":
            await collect(provider)
        elif call == "images":
            await provider.generate_images("dall-e-3", ImageRequest(model="m", prompt="p"))
        else:
            await provider.submit_video("sora-2", VideoRequest(model="m", prompt="p"), "t1")
    assert info.value.retryable is False
    assert ENV in str(info.value)
    assert fake.requests == []  # nothing was sent


async def test_no_api_key_env_configured_sends_no_authorization(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make(fake.base_url, api_key_env="")  # e.g. a local vLLM / Ollama without auth
    try:
        await p.complete(chat())
    finally:
        await p.aclose()
    assert "authorization" not in fake.last.headers


async def test_connection_refused_is_retryable() -> None:
    p = make(f"http://127.0.0.1:{closed_port()}/v1", api_key_env="")
    try:
        with pytest.raises(UpstreamError) as info:
            await p.complete(chat())
        assert info.value.retryable and not isinstance(info.value, UpstreamTimeout)
        _, exc = await collect_until_error(p)
        assert exc.retryable
    finally:
        await p.aclose()


# ------------------------------------------------------------------------------------ timeouts
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_slow_first_byte_times_out(fake: FakeOpenAI, quick: OpenAICompatProvider, mode: str) -> None:
    fake.script(Scenario.chat_stream().slow_first_byte(3) if mode == "stream"
                else Scenario.json(chat_completion()).slow_first_byte(3))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        if mode == "complete":
            await quick.complete(chat())
        else:
            await collect(quick)
    assert time.monotonic() - started < 2
    assert info.value.retryable and "first byte" in str(info.value)
    await fake.last.wait_ended()
    assert fake.last.disconnected  # we hung up; the upstream saw it


async def test_headers_then_slow_body_times_out_on_first_byte(
    fake: FakeOpenAI, quick: OpenAICompatProvider
) -> None:
    fake.script(Scenario.chat_stream().slow_body(3))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await collect(quick)
    assert time.monotonic() - started < 2


async def test_first_body_byte_may_take_longer_than_idle(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prompt processing before the first token is bounded by first_byte_timeout, not idle_timeout.
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, first_byte_timeout=3.0, idle_timeout=0.2)
    fake.script(Scenario.chat_stream().slow_body(0.5))
    try:
        assert await collect(p) == STREAM_EVENTS
    finally:
        await p.aclose()


async def test_stall_between_chunks_times_out(fake: FakeOpenAI, quick: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream().stall(after=2, seconds=3))
    started = time.monotonic()
    events, exc = await collect_until_error(quick)
    assert time.monotonic() - started < 2
    assert isinstance(exc, UpstreamTimeout) and "idle" in str(exc)
    assert events == [TextDelta(text="Hello")]
    await fake.last.wait_ended()
    assert fake.last.disconnected


async def test_slow_but_steady_stream_does_not_time_out(fake: FakeOpenAI, quick: OpenAICompatProvider) -> None:
    # Each gap (0.05 s) is under the idle timeout (0.2 s) although the whole stream takes longer.
    fake.script(Scenario.chat_stream(["a"] * 8).paced(0.05))
    events = await collect(quick)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "a" * 8


# ------------------------------------------------------------------------------------ broken streams
async def test_reset_mid_stream(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream().reset(after=3))
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="Hello"), TextDelta(text="!")]
    assert not isinstance(exc, UpstreamTimeout)
    assert exc.retryable is False  # events went out: the route is committed
    assert fake.last.reset


async def test_reset_before_any_event_is_retryable(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream().reset(after=0))
    events, exc = await collect_until_error(provider)
    assert events == [] and exc.retryable is True


async def test_malformed_data_line(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.sse([chunk({"content": "a"}), b"data: {not json\n\n", chunk({"content": "b"})]))
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="a")]
    assert "malformed" in str(exc) and exc.retryable is False


async def test_error_payload_mid_stream(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.sse([chunk({"content": "partial"}), payload("error_server")], done=False).held_open(5))
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="partial")]
    assert "The server had an error while processing your request" in str(exc)
    assert exc.retryable is False
    await fake.last.wait_ended()
    assert fake.last.disconnected  # we stopped reading and closed the connection


async def test_error_payload_before_any_event_is_retryable_when_the_server_failed(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(
        Scenario.sse([payload("error_server")], done=False),
        Scenario.sse([error_body("context length exceeded", code="context_length_exceeded")], done=False),
        Scenario.sse([b'event: error\ndata: {"message": "overloaded", "type": "overloaded_error"}\n\n'], done=False),
    )
    _, exc = await collect_until_error(provider)
    assert exc.retryable is True
    _, exc = await collect_until_error(provider)
    assert exc.retryable is False and "context length exceeded" in str(exc)
    _, exc = await collect_until_error(provider)
    assert exc.retryable is True and "overloaded" in str(exc)


async def test_stream_ending_without_done_or_finish(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(
        Scenario.sse([chunk({"role": "assistant", "content": ""}), chunk({"content": "cut"})], done=False),
        Scenario.sse([], done=False),
    )
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="cut")]
    assert exc.retryable is False and "before it finished" in str(exc)
    events, exc = await collect_until_error(provider)
    assert events == [] and exc.retryable is True


async def test_connection_lost_after_finish_still_finishes(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    # All content and the finish_reason arrived; only the usage chunk and [DONE] are missing.
    fake.script(Scenario.sse(text_chunks(["done"], usage=None), done=False).reset(after=3))
    events = await collect(provider)
    assert events[:2] == [TextDelta(text="done"), Finish(reason="stop", native="stop")]
    assert isinstance(events[2], UsageReport) and events[2].estimated


# ------------------------------------------------------------------------------------ cancellation
async def test_aclose_mid_stream_closes_the_upstream_connection(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(Scenario.chat_stream(["tok"] * 200).paced(0.02))
    events = provider.stream(chat())
    assert await anext(events) == TextDelta(text="tok")
    assert await anext(events) == TextDelta(text="tok")
    await events.aclose()  # type: ignore[attr-defined]
    await fake.last.wait_ended(within=2)
    assert fake.last.disconnected and not fake.last.completed


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    fake.script(Scenario.chat_stream(["tok"] * 200).paced(0.02))
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


# ------------------------------------------------------------------------------------ images
def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", data[16:24])


async def test_images_b64_to_png(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    images = await provider.generate_images(
        "dall-e-3", ImageRequest(model="m", prompt="a red fox", n=2, width=256, height=256, quality="hd")
    )
    assert len(images) == 2
    assert all(png_size(img.png) == (256, 256) for img in images)
    rec = fake.last
    assert rec.path == "/v1/images/generations"
    assert rec.headers["authorization"] == f"Bearer {SECRET}"
    assert rec.json == {"model": "dall-e-3", "prompt": "a red fox", "n": 2, "size": "256x256",
                        "response_format": "b64_json", "quality": "hd"}


async def test_images_other_formats_become_png_and_revised_prompt_kept(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (255, 0, 0)).save(buf, format="JPEG")
    fake.script(Scenario.json(images_response([buf.getvalue()], revised_prompt="A fox, red.")))
    (image,) = await provider.generate_images("gpt-image-1", ImageRequest(model="m", prompt="fox"))
    assert png_size(image.png) == (32, 16)
    assert image.revised_prompt == "A fox, red."
    assert "response_format" not in fake.last.json  # gpt-image models reject it


async def test_images_url_answer_is_downloaded_without_credentials(
    fake: FakeOpenAI, provider: OpenAICompatProvider
) -> None:
    async with FakeOpenAI() as cdn:
        png = png_bytes(4, 4)
        signed = f"http://127.0.0.1:{cdn.port}/signed/1.png?sig=abc"
        cdn.script(Scenario.raw(b"", status=302, headers={"Location": signed}),
                   Scenario.raw(png, content_type="image/png"))
        fake.script(Scenario.json({"created": 1, "data": [{"url": f"http://127.0.0.1:{cdn.port}/img/1.png"}]}))
        (image,) = await provider.generate_images("dall-e-2", ImageRequest(model="m", prompt="p"))
        assert image.png == png
        assert [r.path for r in cdn.requests] == ["/img/1.png", "/signed/1.png"]  # CDN redirects are followed
        assert all("authorization" not in r.headers for r in cdn.requests)  # the key never goes to another host


async def test_images_upstream_error(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.error(400, "Your request was rejected by the safety system.", code="content_policy_violation"))
    with pytest.raises(UpstreamError) as info:
        await provider.generate_images("dall-e-3", ImageRequest(model="m", prompt="p"))
    assert not info.value.retryable and "safety system" in str(info.value)


# ------------------------------------------------------------------------------------ video
async def test_video_job_submit_poll_fetch(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    req = VideoRequest(model="m", prompt="a cat surfing", seconds=4, width=640, height=360)
    job_id = await provider.submit_video("sora-2", req, "task-1")
    assert job_id.startswith("video_")
    submit = fake.last
    assert (submit.method, submit.path) == ("POST", "/v1/videos")
    assert submit.json == {"model": "sora-2", "prompt": "a cat surfing", "seconds": "4", "size": "640x360"}

    first = await provider.poll_video("sora-2", req, job_id)
    assert (first.state, first.progress, first.error) == (VideoState.RUNNING, 50, "")
    assert fake.last.path == f"/v1/videos/{job_id}" and fake.last.method == "GET"
    second = await provider.poll_video("sora-2", req, job_id)
    assert (second.state, second.progress) == (VideoState.SUCCEEDED, 100)

    result = await provider.fetch_video(job_id)
    assert result.data == fake.video_bytes and result.mime_type == "video/mp4"
    assert fake.last.path == f"/v1/videos/{job_id}/content"
    assert fake.last.headers["authorization"] == f"Bearer {SECRET}"


async def test_video_states_and_failure(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    req = VideoRequest(model="m", prompt="p")
    fake.script(
        Scenario.json(video_job("video_q", "queued", 0)),
        Scenario.json(video_job("video_f", "failed", 30, error={"code": "moderation_blocked",
                                                                 "message": "Your request was blocked."})),
    )
    queued = await provider.poll_video("sora-2", req, "video_q")
    assert (queued.state, queued.progress) == (VideoState.QUEUED, 0)
    failed = await provider.poll_video("sora-2", req, "video_f")
    assert failed.state == VideoState.FAILED and "Your request was blocked." in failed.error


async def test_video_with_first_frame_is_multipart(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    frame = png_bytes(4, 4)
    req = VideoRequest(model="m", prompt="animate", seconds=8, width=1280, height=720, image=frame)
    await provider.submit_video("sora-2", req, "task-2")
    rec = fake.last
    assert rec.headers["content-type"].startswith("multipart/form-data")
    assert b'name="input_reference"' in rec.body and frame in rec.body
    assert b'name="seconds"\r\n' in rec.body and b"\r\n\r\n8\r\n" in rec.body
    assert b"1280x720" in rec.body


async def test_video_content_not_ready(fake: FakeOpenAI, provider: OpenAICompatProvider) -> None:
    job_id = await provider.submit_video("sora-2", VideoRequest(model="m", prompt="p"), "t")
    with pytest.raises(UpstreamError) as info:
        await provider.fetch_video(job_id)
    assert info.value.status == 409


# ------------------------------------------------------------------------------------ secrets
async def test_api_key_never_appears_in_error_messages(fake: FakeOpenAI, quick: OpenAICompatProvider) -> None:
    echo = f"Incorrect API key provided: {SECRET}. You can find your API key at https://platform.openai.com."
    fake.script(
        Scenario.error(401, echo, code="invalid_api_key"),
        Scenario.error(429, echo, headers={"Retry-After": "1"}),
        Scenario.raw(f"bad key {SECRET}".encode(), status=500),
        Scenario.sse([chunk({"content": "x"}), error_body(echo, type="server_error")], done=False),
        Scenario.sse([f"data: {{{SECRET}\n\n".encode()]),
        Scenario.json({"error": echo}),
        Scenario.chat_stream().slow_first_byte(2),
        Scenario.chat_stream().stall(after=1, seconds=2),
        Scenario.chat_stream().reset(after=1),
    )
    errors: list[UpstreamError] = []
    for _ in range(9):
        _, exc = await collect_until_error(quick)
        errors.append(exc)
    refused = make(f"http://127.0.0.1:{closed_port()}/v1")
    try:
        _, exc = await collect_until_error(refused)
        errors.append(exc)
    finally:
        await refused.aclose()
    assert len(errors) == 10
    assert "[redacted]" in str(errors[0])  # the echo was there, and was blanked
    for exc in errors:
        assert SECRET not in str(exc) and SECRET not in repr(exc.args) and SECRET not in exc.message
        assert SECRET not in repr(exc.__cause__) and SECRET not in repr(exc.__context__)


# ------------------------------------------------------------------------------------ wiring
async def test_implements_the_ports_and_is_built_by_the_registry(fake: FakeOpenAI) -> None:
    settings = load_settings(None, {"providers": {"oai": {"kind": "openai", "base_url": fake.base_url}}}, environ={})
    built = build_providers(settings)
    adapter = built.chat["oai"]
    try:
        assert isinstance(adapter, OpenAICompatProvider) and adapter.name == "oai"
        assert built.image["oai"] is adapter and built.video["oai"] is adapter
        assert isinstance(adapter, ChatProvider) and isinstance(adapter, ImageProvider)
        assert isinstance(adapter, VideoProvider)
        assert await adapter.complete(chat()) == ChatResult(
            content=DEFAULT_TEXT, finish_reason="stop", native_finish_reason="stop", prompt_tokens=19,
            completion_tokens=10,
        )
    finally:
        for close in built.closers:
            await close()
    assert adapter._http._session is None  # closed by the registry's closer


def test_fake_upstream_runs_in_a_thread_for_sync_tests() -> None:
    import httpx

    with FakeOpenAI.in_thread(api_key="sk-fake") as fake:
        fake.script(Scenario.chat_stream())
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        ok = httpx.post(f"{fake.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-fake"})
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/event-stream")
        assert ok.text.endswith("data: [DONE]\n\n") and '"content":"Hello"' in ok.text
        denied = httpx.post(f"{fake.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer no"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert [r.json["stream"] for r in fake.requests] == [True, True]
