"""The ``gemini`` provider kind against a fake Gemini API on a real loopback socket."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from fakes.gemini_upstream import (
    FakeGemini,
    Scenario,
    blocked_response,
    chunk,
    error_payload,
    function_call,
    google_error,
    payload,
    response,
    stream_chunks,
    text_part,
    text_response,
    usage_metadata,
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
from raven_service.providers.gemini import SKIP_SIGNATURE, GeminiProvider, create
from raven_service.wiring import build_providers

pytestmark = pytest.mark.timeout(30)

ENV = "RAVEN_TEST_GEMINI_KEY"
SECRET = "AIzaSyS3CR3T-do-not-leak-0123456789abcdefAB"
MODEL = "gemini-up-1"
UNARY_PATH = f"/v1beta/models/{MODEL}:generateContent"
STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent"
MINTED_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")
STREAM_EVENTS = [
    TextDelta(text="The"),
    TextDelta(text=" sky is blue because of Rayleigh scattering."),
    Finish(reason="stop", native="STOP"),
    UsageReport(prompt_tokens=9, completion_tokens=10),
]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as f:
        yield f


def make(base_url: str, **cfg: Any) -> GeminiProvider:
    options: dict[str, Any] = {
        "api_key_env": ENV,
        "headers": {"x-goog-user-project": "raven-tests"},
        "connect_timeout": 2.0,
        "first_byte_timeout": 5.0,
        "idle_timeout": 5.0,
    }
    options.update(cfg)
    return create("gem", ProviderConfig(kind="gemini", base_url=base_url, **options))


@pytest.fixture
async def provider(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GeminiProvider]:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url)
    yield p
    await p.aclose()


@pytest.fixture
async def quick(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GeminiProvider]:
    """A provider with tiny first-byte and idle timeouts."""
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, first_byte_timeout=0.3, idle_timeout=0.2)
    yield p
    await p.aclose()


def chat(text: str = "Hi", *, messages: Sequence[Message] = (), **params: Any) -> ProviderChatRequest:
    msgs = tuple(messages) or (Message(role="user", content=text),)
    return ProviderChatRequest(upstream_model=MODEL, request=ChatRequest(model="m", messages=msgs, **params))


def check_ending(events: Sequence[ChatEvent]) -> None:
    """The stream contract: deltas, then exactly one Finish, then exactly one UsageReport."""
    assert isinstance(events[-2], Finish) and isinstance(events[-1], UsageReport)
    assert sum(isinstance(e, Finish) for e in events) == 1
    assert sum(isinstance(e, UsageReport) for e in events) == 1


async def collect(p: GeminiProvider, req: ProviderChatRequest | None = None) -> list[ChatEvent]:
    events = [e async for e in p.stream(req or chat())]
    check_ending(events)
    return events


async def collect_until_error(p: GeminiProvider, req: ProviderChatRequest | None = None):
    events: list[ChatEvent] = []
    with pytest.raises(UpstreamError) as info:
        async for e in p.stream(req or chat()):
            events.append(e)
    assert not any(isinstance(e, (Finish, UsageReport)) for e in events)
    return events, info.value


def assembled(events: Sequence[ChatEvent]) -> dict[int, tuple[str, str, str]]:
    """Tool calls reassembled by index as an OpenAI client does: (id, name, arguments)."""
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            call = calls.setdefault(e.index, ["", "", ""])
            if e.id is not None:
                assert not call[0], "id sent twice for one index"
                assert e.name, "the first fragment carries the name"
                call[0] = e.id
            if e.name is not None:
                call[1] = e.name
            call[2] += e.arguments
    return {i: (c[0], c[1], c[2]) for i, c in calls.items()}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ request: wire
async def test_complete_sends_generate_content_with_key_header(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.json(payload("generate_content_text")))
    result = await provider.complete(chat("Hi"))
    assert result == ChatResult(
        content="AI learns patterns from data to make predictions or decisions without being explicitly "
                "programmed for each case.",
        finish_reason="stop", native_finish_reason="STOP", prompt_tokens=8, completion_tokens=19 + 575,
        reasoning_tokens=575,
    )
    rec = fake.last
    assert (rec.method, rec.path, rec.query) == ("POST", UNARY_PATH, {})
    assert rec.headers["x-goog-api-key"] == SECRET
    assert rec.headers["x-goog-user-project"] == "raven-tests"
    assert rec.headers["content-type"] == "application/json"
    assert "authorization" not in rec.headers
    assert rec.json == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


async def test_stream_uses_stream_generate_content_alt_sse(fake: FakeGemini, provider: GeminiProvider) -> None:
    await collect(provider)
    rec = fake.last
    assert (rec.method, rec.path, rec.query) == ("POST", STREAM_PATH, {"alt": "sse"})
    assert rec.headers["x-goog-api-key"] == SECRET and rec.headers["accept"] == "text/event-stream"
    assert rec.json == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


@pytest.mark.parametrize(
    ("base", "model", "path"),
    [
        ("", "models/gemini-2.5-flash", "/v1beta/models/gemini-2.5-flash:generateContent"),
        ("", "tunedModels/my-tune-7", "/v1beta/tunedModels/my-tune-7:generateContent"),
        ("/v1beta/", "gemini-2.5-pro", "/v1beta/models/gemini-2.5-pro:generateContent"),
    ],
)
async def test_model_and_base_url_forms(
    fake: FakeGemini, monkeypatch: pytest.MonkeyPatch, base: str, model: str, path: str
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url + base)
    try:
        await p.complete(ProviderChatRequest(upstream_model=model, request=chat().request))
    finally:
        await p.aclose()
    assert fake.last.path == path


# ------------------------------------------------------------------------------------ request: body
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/unit"}},
    "required": ["city"],
    "additionalProperties": False,
    "$defs": {"unit": {"type": "string", "enum": ["C", "F"]}},
}
PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgo="


def full_request(**overrides: Any) -> ProviderChatRequest:
    messages = (
        Message(role="system", content="Be brief."),
        Message(role="user", parts=(
            ContentPart(type="text", text="Compare these"),
            ContentPart(type="image_url", image_url=PNG_DATA_URL),
            ContentPart(type="image_url", image_url="https://example.com/photos/cat.png?sig=1", detail="low"),
            ContentPart(type="image_url", image_url="https://example.com/raw/123"),
        ), name="alice"),
        Message(role="developer", content="Answer in French."),
        Message(role="assistant", content="Checking.", tool_calls=(
            ToolCall(id="call_a", name="lookup", arguments='{"q": "Paris", "n": 2}'),
            ToolCall(id="call_b", name="weather", arguments=""),
        )),
        Message(role="tool", content='{"population": 2100000}', tool_call_id="call_a"),
        Message(role="tool", content="sunny, 21C", tool_call_id="call_b"),
        Message(role="user", content="And now?"),
    )
    params: dict[str, Any] = dict(
        max_tokens=50, temperature=0.2, top_p=0.9, stop=("END", "STOP"), seed=7,
        tools=(Tool(name="lookup", description="Look it up", parameters=SCHEMA, strict=True),
               Tool(name="weather")),
        tool_choice=ToolChoice(mode="function", name="lookup"),
        response_format=ResponseFormat(type="json_schema", name="city", schema=SCHEMA, strict=True),
        frequency_penalty=0.5, presence_penalty=-0.5, user="u-1",
    )
    params.update(overrides)
    return chat(messages=messages, **params)


EXPECTED_BODY = {
    "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
    "contents": [
        {"role": "user", "parts": [
            {"text": "Compare these"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/photos/cat.png?sig=1"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/raw/123"}},
        ]},
        {"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "lookup", "args": {"q": "Paris", "n": 2}}, "thoughtSignature": SKIP_SIGNATURE},
            {"functionCall": {"name": "weather", "args": {}}},
        ]},
        {"role": "user", "parts": [  # both tool results and the next user message: one content
            {"functionResponse": {"name": "lookup", "response": {"population": 2100000}}},
            {"functionResponse": {"name": "weather", "response": {"content": "sunny, 21C"}}},
            {"text": "And now?"},
        ]},
    ],
    "tools": [{"functionDeclarations": [
        {"name": "lookup", "description": "Look it up", "parametersJsonSchema": SCHEMA},
        {"name": "weather"},
    ]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}},
    "generationConfig": {
        "maxOutputTokens": 50, "temperature": 0.2, "topP": 0.9, "seed": 7, "frequencyPenalty": 0.5,
        "presencePenalty": -0.5, "stopSequences": ["END", "STOP"], "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
    },
}


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_request_translation(fake: FakeGemini, provider: GeminiProvider, mode: str) -> None:
    if mode == "complete":
        await provider.complete(full_request())
    else:
        await collect(provider, full_request())
    assert fake.last.json == EXPECTED_BODY


async def test_consecutive_same_role_messages_are_merged_and_empty_ones_dropped(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    messages = (
        Message(role="user", content="one"),
        Message(role="user", parts=(ContentPart(type="text", text="two"),)),
        Message(role="assistant", content="three"),
        Message(role="assistant", content=""),
        Message(role="assistant", content="four"),
        Message(role="user", content="five"),
    )
    await provider.complete(chat(messages=messages))
    assert fake.last.json["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "three"}, {"text": "four"}]},
        {"role": "user", "parts": [{"text": "five"}]},
    ]
    assert "systemInstruction" not in fake.last.json


async def test_function_response_name_and_shape(fake: FakeGemini, provider: GeminiProvider) -> None:
    messages = (
        Message(role="user", content="go"),
        Message(role="assistant", tool_calls=(ToolCall(id="c1", name="first", arguments="{}"),
                                              ToolCall(id="c2", name="second", arguments="[1, 2]"))),
        Message(role="tool", content="[1, 2, 3]", tool_call_id="c2"),  # JSON, but not an object
        Message(role="tool", parts=(ContentPart(type="text", text='{"ok": true}'),), tool_call_id="c1"),
        Message(role="tool", content="orphan", tool_call_id="c-unknown", name="named_by_client"),
    )
    await provider.complete(chat(messages=messages))
    contents = fake.last.json["contents"]
    assert contents[1]["parts"][1] == {"functionCall": {"name": "second", "args": {"value": [1, 2]}}}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "second", "response": {"content": "[1, 2, 3]"}}},
        {"functionResponse": {"name": "first", "response": {"ok": True}}},
        {"functionResponse": {"name": "named_by_client", "response": {"content": "orphan"}}},
    ]}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (ToolChoice(mode="none"), {"mode": "NONE"}),
        (ToolChoice(mode="auto"), {"mode": "AUTO"}),
        (ToolChoice(mode="required"), {"mode": "ANY"}),
        (ToolChoice(mode="function", name="f"), {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
async def test_tool_choice_modes(
    fake: FakeGemini, provider: GeminiProvider, choice: ToolChoice, config: dict[str, Any]
) -> None:
    await provider.complete(chat(tools=(Tool(name="f", parameters={}),), tool_choice=choice))
    assert fake.last.json["toolConfig"] == {"functionCallingConfig": config}
    assert fake.last.json["tools"] == [{"functionDeclarations": [{"name": "f"}]}]


@pytest.mark.parametrize(
    ("fmt", "config"),
    [
        (ResponseFormat(type="json_object"), {"responseMimeType": "application/json"}),
        (ResponseFormat(type="json_schema", schema=SCHEMA),
         {"responseMimeType": "application/json", "responseJsonSchema": SCHEMA}),
        (ResponseFormat(type="text"), None),
    ],
)
async def test_response_format(
    fake: FakeGemini, provider: GeminiProvider, fmt: ResponseFormat, config: dict[str, Any] | None
) -> None:
    await provider.complete(chat(response_format=fmt))
    assert fake.last.json.get("generationConfig") == config
    assert "responseSchema" not in str(fake.last.json)  # the OpenAPI-subset field is never used


async def test_only_set_parameters_are_sent(fake: FakeGemini, provider: GeminiProvider) -> None:
    # tool_choice without tools sends no toolConfig; `user` has no Gemini equivalent.
    await provider.complete(chat(temperature=0.0, tool_choice=ToolChoice(mode="auto"), user="u"))
    assert fake.last.json == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                              "generationConfig": {"temperature": 0.0}}


async def test_gemini_specific_extra_keys_are_used_and_others_dropped(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    extra = {
        "top_k": 40,
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}, "temperature": 1.5},
        "safety_settings": safety,
        "cachedContent": "cachedContents/abc",
        "logit_bias": {"1": -100},
    }
    await provider.complete(chat(temperature=0.3, extra=extra))
    assert fake.last.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}, "temperature": 0.3, "topK": 40},
        "safetySettings": safety,
        "cachedContent": "cachedContents/abc",
    }


async def test_thought_signatures_are_sent_back_for_known_calls(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.json(payload("generate_content_function_calls")))
    first = await provider.complete(chat("Temperatures in Paris and London?"))
    history = (
        Message(role="user", content="Temperatures in Paris and London?"),
        Message(role="assistant", tool_calls=first.tool_calls),
        Message(role="tool", content='{"temp": 18}', tool_call_id=first.tool_calls[0].id),
        Message(role="tool", content='{"temp": 14}', tool_call_id=first.tool_calls[1].id),
    )
    await provider.complete(chat(messages=history))
    model_turn = fake.last.json["contents"][1]
    assert model_turn == {"role": "model", "parts": [
        {"functionCall": {"name": "get_current_temperature", "args": {"location": "Paris"}},
         "thoughtSignature": "CiQB0e2Kb5L1ZmVhdHVyZS1zaWduYXR1cmUtZXhhbXBsZS0wMDAx"},
        {"functionCall": {"name": "get_current_temperature", "args": {"location": "London"}}},
    ]}


# ------------------------------------------------------------------------------------ unary responses
async def test_complete_function_calls(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.json(payload("generate_content_function_calls")))
    result = await provider.complete(chat())
    assert result.content is None
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("get_current_temperature", '{"location":"Paris"}'), ("get_current_temperature", '{"location":"London"}')]
    assert all(MINTED_ID.match(c.id) for c in result.tool_calls)
    assert len({c.id for c in result.tool_calls}) == 2
    assert (result.finish_reason, result.native_finish_reason) == ("tool_calls", "STOP")
    assert (result.prompt_tokens, result.completion_tokens, result.usage_estimated) == (72, 36 + 82, False)


async def test_complete_keeps_upstream_call_ids_and_text(fake: FakeGemini, provider: GeminiProvider) -> None:
    parts = [text_part("Let me check."), function_call("f", {"a": [1, {"b": None}]}, id="fc-upstream-1")]
    fake.script(Scenario.json(response(parts)))
    result = await provider.complete(chat())
    assert result.content == "Let me check."
    assert result.tool_calls == (ToolCall(id="fc-upstream-1", name="f", arguments='{"a":[1,{"b":null}]}'),)
    assert result.finish_reason == "tool_calls"


async def test_complete_skips_thoughts_and_counts_them_as_output(fake: FakeGemini, provider: GeminiProvider) -> None:
    parts = [text_part("**Planning** the answer", thought=True), text_part("42"), text_part("", signature="c2ln")]
    fake.script(Scenario.json(response(parts, usage=(5, 1), thoughts=30)))
    result = await provider.complete(chat())
    assert result.content == "42"
    assert (result.prompt_tokens, result.completion_tokens, result.usage_estimated) == (5, 31, False)


async def test_complete_estimates_usage_when_absent(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.json(text_response("Four score and seven years ago", usage=None)))
    req = chat("Recite it")
    result = await provider.complete(req)
    assert result.usage_estimated is True
    assert result.prompt_tokens == count_message_tokens(req.request.messages) > 0
    assert result.completion_tokens == count_tokens("Four score and seven years ago") > 0


async def test_tool_use_prompt_tokens_count_as_prompt(fake: FakeGemini, provider: GeminiProvider) -> None:
    body = text_response("x")
    body["usageMetadata"]["toolUsePromptTokenCount"] = 100
    fake.script(Scenario.json(body))
    result = await provider.complete(chat())
    assert (result.prompt_tokens, result.completion_tokens) == (108, 19)


async def test_complete_error_object_in_a_200_body(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.json(payload("error_unavailable")), Scenario.json({"usageMetadata": {"promptTokenCount": 1}}),
                Scenario.raw(b"not json", content_type="application/json"))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert "The model is overloaded" in str(info.value) and info.value.retryable is True
    with pytest.raises(UpstreamError, match="without candidates"):
        await provider.complete(chat())
    with pytest.raises(UpstreamError, match="malformed"):
        await provider.complete(chat())


# ------------------------------------------------------------------------------------ streaming
async def test_stream_text(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.sse(payload("stream_text"), done=False))
    assert await collect(provider) == STREAM_EVENTS


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario.sse(payload("stream_text"), done=False, line_ending="\r\n").split_writes("mid_line"),
        Scenario.sse(payload("stream_text"), done=False).split_writes(5, pause=0.001),
        Scenario.sse(payload("stream_text"), done=False, line_ending="\r\n", comments=True),
        Scenario.sse(payload("stream_text"), done=False, line_ending="\r").split_writes("mid_line"),
    ],
    ids=["crlf-mid-line", "5-byte-writes", "crlf-comments", "cr-mid-line"],
)
async def test_stream_survives_adversarial_framing(
    fake: FakeGemini, provider: GeminiProvider, scenario: Scenario
) -> None:
    fake.script(scenario)
    assert await collect(provider) == STREAM_EVENTS
    await fake.last.wait_ended()
    assert fake.last.completed


async def test_stream_default_fake_answer(fake: FakeGemini, provider: GeminiProvider) -> None:
    events = await collect(provider)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == fake.text
    assert events[-2:] == [Finish(reason="stop", native="STOP"), UsageReport(prompt_tokens=9, completion_tokens=7)]


async def test_stream_parallel_function_calls_become_openai_fragments(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    chunks = [
        chunk([text_part("Checking both.")], usage=usage_metadata(40)),
        chunk([function_call("get_weather", {"city": "Paris"}, signature="c2lnLTE="),
               function_call("get_weather", {"city": "Tokyo"}, id="fc_upstream")], usage=usage_metadata(40)),
        chunk([function_call("get_time", {})], finish_reason="STOP", usage=usage_metadata(40, 25, thoughts=5)),
    ]
    fake.script(Scenario.sse(chunks, done=False).split_writes("mid_line"))
    events = await collect(provider)
    calls = assembled(events)
    assert [calls[i][1:] for i in range(3)] == [
        ("get_weather", '{"city":"Paris"}'), ("get_weather", '{"city":"Tokyo"}'), ("get_time", "{}")]
    assert MINTED_ID.match(calls[0][0]) and calls[1][0] == "fc_upstream" and MINTED_ID.match(calls[2][0])
    fragments = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(f.index, f.id is not None, f.name, f.arguments) for f in fragments] == [
        (0, True, "get_weather", ""), (0, False, None, '{"city":"Paris"}'),
        (1, True, "get_weather", ""), (1, False, None, '{"city":"Tokyo"}'),
        (2, True, "get_time", ""), (2, False, None, "{}"),
    ]
    assert events[0] == TextDelta(text="Checking both.")
    assert events[-2:] == [Finish(reason="tool_calls", native="STOP"),
                           UsageReport(prompt_tokens=40, completion_tokens=30, reasoning_tokens=5)]
    assert provider.signatures.get(calls[0][0]) == "c2lnLTE="
    assert provider.signatures.get("fc_upstream") is None


async def test_stream_thought_parts_become_reasoning(fake: FakeGemini, provider: GeminiProvider) -> None:
    pieces = [text_part("Let me think about colours", thought=True), "Blue", text_part("", signature="c2ln")]
    fake.script(Scenario.sse(stream_chunks(pieces, usage=(4, 1), thoughts=12), done=False))
    assert await collect(provider) == [ReasoningDelta(index=0, text="Let me think about colours"),
                                       TextDelta(text="Blue"), Finish(reason="stop", native="STOP"),
                                       UsageReport(prompt_tokens=4, completion_tokens=13, reasoning_tokens=12)]


async def test_stream_usage_from_the_last_chunk_that_has_it(fake: FakeGemini, provider: GeminiProvider) -> None:
    chunks = [
        chunk([text_part("a")], usage=usage_metadata(3, 1)),
        chunk([text_part("b")], usage=usage_metadata(3, 2)),
        chunk([text_part("c")], finish_reason="STOP"),  # no usage on the last chunk
    ]
    fake.script(Scenario.sse(chunks, done=False))
    events = await collect(provider)
    assert events[-1] == UsageReport(prompt_tokens=3, completion_tokens=2)


async def test_stream_usage_estimated_when_absent(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(
        Scenario.sse(stream_chunks(["Once", " upon", " a time"], usage=None), done=False),
        Scenario.sse(stream_chunks([function_call("f", {"city": "Paris"})], usage=None), done=False),
    )
    req = chat("Tell me a story")
    prompt = count_message_tokens(req.request.messages)
    events = await collect(provider, req)
    assert events[-1] == UsageReport(prompt_tokens=prompt, completion_tokens=count_tokens("Once upon a time"),
                                     estimated=True)
    events = await collect(provider, req)
    assert events[-1] == UsageReport(prompt_tokens=prompt, completion_tokens=count_tokens('{"city":"Paris"}'),
                                     estimated=True)


FINISH_TABLE = [
    ("STOP", "stop"),
    ("MAX_TOKENS", "length"),
    ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"),
    ("SPII", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"),
    ("LANGUAGE", "stop"),
    ("OTHER", "stop"),
    ("MALFORMED_FUNCTION_CALL", "stop"),
    ("FINISH_REASON_UNSPECIFIED", "stop"),
]


@pytest.mark.parametrize(("native", "reason"), FINISH_TABLE)
async def test_finish_reason_mapping_keeps_native(
    fake: FakeGemini, provider: GeminiProvider, native: str, reason: str
) -> None:
    fake.script(
        Scenario.sse(stream_chunks(["x"], finish_reason=native), done=False),
        Scenario.json(text_response("x", finish_reason=native)),
    )
    assert (await collect(provider))[-2] == Finish(reason=reason, native=native)
    result = await provider.complete(chat())
    assert (result.finish_reason, result.native_finish_reason) == (reason, native)


@pytest.mark.parametrize(("native", "reason"), [("STOP", "tool_calls"), ("MAX_TOKENS", "length"),
                                                ("SAFETY", "content_filter"), ("OTHER", "tool_calls")])
async def test_finish_with_function_calls(fake: FakeGemini, provider: GeminiProvider, native: str, reason: str) -> None:
    fake.script(
        Scenario.sse(stream_chunks([function_call("f")], finish_reason=native), done=False),
        Scenario.json(response([function_call("f")], finish_reason=native)),
    )
    assert (await collect(provider))[-2] == Finish(reason=reason, native=native)
    assert (await provider.complete(chat())).finish_reason == reason


async def test_blocked_prompt_finishes_content_filter(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.sse([blocked_response("PROHIBITED_CONTENT", 11)], done=False),
                Scenario.json(payload("prompt_blocked")))
    assert await collect(provider) == [Finish(reason="content_filter", native="PROHIBITED_CONTENT"),
                                       UsageReport(prompt_tokens=11, completion_tokens=0)]
    result = await provider.complete(chat())
    assert result == ChatResult(content="", finish_reason="content_filter", native_finish_reason="SAFETY",
                                prompt_tokens=11, completion_tokens=0)


async def test_json_array_answer_to_a_stream_request(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.json(payload("stream_text")), Scenario.json(text_response("whole", usage=(2, 1))))
    assert await collect(provider) == STREAM_EVENTS
    assert await collect(provider) == [TextDelta(text="whole"), Finish(reason="stop", native="STOP"),
                                       UsageReport(prompt_tokens=2, completion_tokens=1)]


async def test_connection_is_reused(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(
        Scenario.json(text_response()),
        Scenario.sse(payload("stream_text"), done=False),
        Scenario.sse(payload("stream_text"), done=False).split_writes("mid_line"),
        Scenario.json(text_response()),
    )
    await provider.complete(chat())
    for _ in range(2):
        assert await collect(provider) == STREAM_EVENTS
    await provider.complete(chat())
    assert len({r.peer for r in fake.requests}) == 1
    assert all(r.completed and not r.disconnected for r in fake.requests)


# ------------------------------------------------------------------------------------ HTTP errors
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_429_resource_exhausted_is_retryable(fake: FakeGemini, provider: GeminiProvider, mode: str) -> None:
    fake.script(Scenario.json(payload("error_resource_exhausted"), status=429, headers={"Retry-After": "7"}))
    with pytest.raises(UpstreamError) as info:
        if mode == "complete":
            await provider.complete(chat())
        else:
            await collect(provider)
    exc = info.value
    assert (exc.retryable, exc.retry_after, exc.status, exc.provider) == (True, 7.0, 429, "gem")
    assert exc.code == "upstream_rate_limited"
    assert "You exceeded your current quota" in str(exc)


@pytest.mark.parametrize(("status", "name", "text"), [(500, "error_internal", "An internal error has occurred"),
                                                       (503, "error_unavailable", "The model is overloaded")])
async def test_server_errors_are_retryable(
    fake: FakeGemini, provider: GeminiProvider, status: int, name: str, text: str
) -> None:
    fake.script(Scenario.json(payload(name), status=status))
    events, exc = await collect_until_error(provider)
    assert events == []
    assert (exc.retryable, exc.status) == (True, status)
    assert not isinstance(exc, UpstreamTimeout) and text in str(exc)


@pytest.mark.parametrize(
    ("status", "name", "text"),
    [(400, "error_invalid_argument", "contents is not specified"),
     (400, "error_api_key_invalid", "API key not valid"),
     (403, "error_permission_denied", "unregistered callers"),
     (404, "error_not_found", "is not found for API version v1beta")],
)
async def test_client_errors_are_not_retryable_and_carry_upstream_message(
    fake: FakeGemini, provider: GeminiProvider, status: int, name: str, text: str
) -> None:
    fake.script(Scenario.json(payload(name), status=status), Scenario.json(payload(name), status=status))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    exc = info.value
    assert (exc.retryable, exc.status, exc.retry_after) == (False, status, None)
    assert text in exc.detail
    _, exc = await collect_until_error(provider)
    assert (exc.retryable, exc.status) == (False, status) and text in exc.detail


async def test_the_fake_checks_the_key_like_google(fake: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.api_key = "right-key"
    monkeypatch.setenv(ENV, "wrong-key")
    p = make(fake.base_url)
    try:
        with pytest.raises(UpstreamError, match="API key not valid") as info:
            await p.complete(chat())
        assert info.value.status == 400 and not info.value.retryable
        monkeypatch.setenv(ENV, "right-key")  # a rotated key is read on the next call
        assert (await p.complete(chat())).content == fake.text
    finally:
        await p.aclose()


async def test_missing_api_key_env_var(fake: FakeGemini, provider: GeminiProvider,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert info.value.retryable is False and ENV in str(info.value)
    _, exc = await collect_until_error(provider)
    assert exc.code == "upstream_auth_missing"
    assert fake.requests == []  # nothing was sent


async def test_connection_refused_is_retryable() -> None:
    p = make(f"http://127.0.0.1:{closed_port()}", api_key_env="")
    try:
        _, exc = await collect_until_error(p)
        assert exc.retryable and not isinstance(exc, UpstreamTimeout)
    finally:
        await p.aclose()


# ------------------------------------------------------------------------------------ broken streams
async def test_malformed_line_mid_stream(fake: FakeGemini, provider: GeminiProvider) -> None:
    chunks = stream_chunks(["a", "b"])
    fake.script(Scenario.sse([chunks[0], b"data: {not json\r\n\r\n", chunks[1]], done=False))
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="a")]
    assert "malformed" in str(exc) and exc.retryable is False


async def test_error_payload_mid_stream_is_not_retryable(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.sse([stream_chunks(["partial", "x"])[0], payload("error_internal")], done=False).held_open(5))
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="partial")]
    assert "An internal error has occurred" in str(exc) and exc.retryable is False and exc.status == 500
    await fake.last.wait_ended()
    assert fake.last.disconnected  # we stopped reading and closed the connection


async def test_error_payload_before_any_event(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(
        Scenario.sse([error_payload(503, "The model is overloaded. Please try again later.")], done=False),
        Scenario.sse([error_payload(400, "Request contains an invalid argument.")], done=False),
    )
    _, exc = await collect_until_error(provider)
    assert exc.retryable is True and exc.status == 503
    _, exc = await collect_until_error(provider)
    assert exc.retryable is False and "invalid argument" in str(exc)


async def test_reset_mid_stream(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.sse(stream_chunks(["Hello", "!", " more"]), done=False).reset(after=2))
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="Hello"), TextDelta(text="!")]
    assert exc.retryable is False and not isinstance(exc, UpstreamTimeout)
    assert fake.last.reset


async def test_reset_before_any_event_is_retryable(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.sse(stream_chunks(["Hello"]), done=False).reset(after=0))
    events, exc = await collect_until_error(provider)
    assert events == [] and exc.retryable is True


async def test_stream_ending_without_finish_reason(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(
        Scenario.sse(stream_chunks(["cut", "off"], finish_reason=None), done=False),
        Scenario.sse([], done=False),
    )
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="cut"), TextDelta(text="off")]
    assert exc.retryable is False and "before it finished" in str(exc)
    events, exc = await collect_until_error(provider)
    assert events == [] and exc.retryable is True


async def test_slow_first_byte_times_out_and_hangs_up(fake: FakeGemini, quick: GeminiProvider) -> None:
    fake.script(Scenario.sse(payload("stream_text"), done=False).slow_first_byte(3))
    started = time.monotonic()
    _, exc = await collect_until_error(quick)
    assert time.monotonic() - started < 2
    assert isinstance(exc, UpstreamTimeout) and exc.retryable and "first byte" in str(exc)
    await fake.last.wait_ended()
    assert fake.last.disconnected


async def test_stall_between_chunks_times_out(fake: FakeGemini, quick: GeminiProvider) -> None:
    fake.script(Scenario.sse(stream_chunks(["a", "b"]), done=False).stall(after=1, seconds=3))
    events, exc = await collect_until_error(quick)
    assert isinstance(exc, UpstreamTimeout) and "idle" in str(exc) and events == [TextDelta(text="a")]


# ------------------------------------------------------------------------------------ cancellation
async def test_aclose_mid_stream_closes_the_upstream_connection(fake: FakeGemini, provider: GeminiProvider) -> None:
    fake.script(Scenario.sse(stream_chunks(["tok"] * 200), done=False).paced(0.02))
    events = provider.stream(chat())
    assert await anext(events) == TextDelta(text="tok")
    await events.aclose()  # type: ignore[attr-defined]
    await fake.last.wait_ended(within=2)
    assert fake.last.disconnected and not fake.last.completed


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.script(Scenario.sse(stream_chunks(["tok"] * 200), done=False).paced(0.02))
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
async def test_api_key_never_in_errors_nor_in_the_url(fake: FakeGemini, quick: GeminiProvider) -> None:
    echo = f"API key not valid: {SECRET}. Please pass a valid API key."
    fake.script(
        google_error(400, echo),
        google_error(429, echo, headers={"Retry-After": "1"}),
        Scenario.raw(f"bad key {SECRET}".encode(), status=500),
        Scenario.sse([stream_chunks(["x", "y"])[0], error_payload(500, echo)], done=False),
        Scenario.sse([f"data: {{{SECRET}\r\n\r\n".encode()], done=False),
        Scenario.json({"error": echo}),
        Scenario.sse(payload("stream_text"), done=False).slow_first_byte(2),
        Scenario.sse(stream_chunks(["a", "b"]), done=False).stall(after=1, seconds=2),
        Scenario.sse(stream_chunks(["a", "b"]), done=False).reset(after=1),
    )
    errors: list[UpstreamError] = []
    for _ in range(9):
        _, exc = await collect_until_error(quick)
        errors.append(exc)
    fake.script(google_error(400, echo))
    with pytest.raises(UpstreamError) as info:
        await quick.complete(chat())
    errors.append(info.value)
    assert len(errors) == 10
    assert "[redacted]" in str(errors[0]) and "[redacted]" in str(errors[-1])  # echoed, and blanked
    for exc in errors:
        assert SECRET not in str(exc) and SECRET not in repr(exc.args) and SECRET not in exc.message
        assert SECRET not in repr(exc.__cause__) and SECRET not in repr(exc.__context__)
    assert len(fake.requests) == 10
    for rec in fake.requests:
        assert rec.headers["x-goog-api-key"] == SECRET
        assert SECRET not in rec.path and SECRET not in repr(rec.query) and "key" not in rec.query


# ------------------------------------------------------------------------------------ wiring
async def test_implements_the_port_and_is_built_by_the_registry(fake: FakeGemini) -> None:
    config = {"providers": {"google": {"kind": "gemini", "base_url": fake.base_url}}}
    built = build_providers(load_settings(None, config, environ={}))
    adapter = built.chat["google"]
    try:
        assert isinstance(adapter, GeminiProvider) and isinstance(adapter, ChatProvider)
        assert adapter.name == "google" and "google" not in built.image
        result = await adapter.complete(chat())
        assert (result.content, result.finish_reason) == (fake.text, "stop")
        assert "x-goog-api-key" not in fake.last.headers  # no api_key_env configured
    finally:
        for close in built.closers:
            await close()
    assert adapter._http._session is None  # closed by the registry's closer


def test_fake_runs_in_a_thread_and_speaks_alt_sse_and_json_arrays() -> None:
    import httpx

    with FakeGemini.in_thread(api_key="k-fake") as fake:
        url = f"{fake.base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        sse = httpx.post(url, params={"alt": "sse"}, json=body, headers={"x-goog-api-key": "k-fake"})
        assert sse.status_code == 200 and sse.headers["content-type"].startswith("text/event-stream")
        assert sse.text.startswith("data: {") and sse.text.endswith("\r\n\r\n") and "[DONE]" not in sse.text
        array = httpx.post(url, json=body, headers={"x-goog-api-key": "k-fake"})
        assert isinstance(array.json(), list) and array.json()[-1]["candidates"][0]["finishReason"] == "STOP"
        missing = httpx.post(url, json=body)
        assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
        assert [r.query for r in fake.requests] == [{"alt": "sse"}, {}, {}]
        assert [r.path for r in fake.requests] == ["/v1beta/models/gemini-2.5-flash:streamGenerateContent"] * 3


def test_retry_delay_in_a_google_error_body_is_honoured():
    from raven_service.providers._http import error_from_status

    body = (b'{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",'
            b' "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}')
    err = error_from_status("g", 429, {}, body)
    assert err.retryable and err.retry_after == 37.0
    assert error_from_status("g", 429, {"retry-after": "3"}, body).retry_after == 3.0  # the header wins
    assert error_from_status("g", 429, {}, b'{"error": {"details": [{"@type": "x.RetryInfo"}]}}').retry_after is None
