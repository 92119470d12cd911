"""The provider conformance matrix: provider kind x case x protocol.

One fake upstream per provider kind (real aiohttp servers on 127.0.0.1:0 speaking the provider's
own wire format, each insisting on its API key), one real raven_service over gRPC, and the REST
gateway in-process; every case runs through the official OpenAI SDK (REST, ``max_retries=0``) and
through a real ``grpc.aio`` channel, and asserts both what the client got and the exact request
the upstream received.

Catalogue, per kind K: ``K/chat`` routes to provider ``K`` (upstream model ``K-m1``) then to
provider ``K-b`` (``K-m2``, the same fake); ``K/slow`` routes to ``K-slow`` (``K-m3``), whose
first-byte timeout is 0.3 s. Every provider retries a route once, with millisecond backoff.

The README's "Providers" table is this file's summary; keep them in step.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from conformance_support import (
    DIALECTS,
    HAS_ANTHROPIC,
    KINDS,
    PROTOCOLS,
    USER_HI,
    CallFailed,
    Env,
    Reply,
    StreamReply,
    api_key,
    body_of,
    environment,
    fakes,
    key_env,
    model,
    provider,
)
from fakes import gemini_upstream as gem
from fakes.openai_upstream import FakeOpenAI, Received, Scenario, chat_completion, chunk, error_body, tool_call_chunks

if HAS_ANTHROPIC:
    from fakes import anthropic_upstream as ant

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(10)]

MODES = ("unary", "stream")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}
#: Tool-call ids in each provider's own style; they must reach the client unchanged.
CALL_IDS = {
    "openai": ("call_Xq3bK9nd7Lm2PzR4vT8wY1aB", "call_Cd5fG7hJ9kL1mN3pQ5rS7tU9"),
    "anthropic": ("toolu_01A09q90qw90lq917835lq9", "toolu_01B19r01rx01mr028946mr0"),
    "gemini": ("fc_7d1e2a", "fc_9b4c3f"),
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number", "minimum": 0}},
    "required": ["answer"],
    "additionalProperties": False,
}

#: (kind, native finish reason, normalised) - SPEC §8.
FINISH_REASONS = [
    ("openai", "stop", "stop"),
    ("openai", "length", "length"),
    ("openai", "tool_calls", "tool_calls"),
    ("openai", "content_filter", "content_filter"),
    ("openai", "function_call", "tool_calls"),
    ("anthropic", "end_turn", "stop"),
    ("anthropic", "stop_sequence", "stop"),
    ("anthropic", "max_tokens", "length"),
    ("anthropic", "tool_use", "tool_calls"),
    ("anthropic", "refusal", "content_filter"),
    ("anthropic", "pause_turn", "stop"),
    ("anthropic", "model_context_window_exceeded", "length"),
    ("gemini", "STOP", "stop"),
    ("gemini", "MAX_TOKENS", "length"),
    ("gemini", "SAFETY", "content_filter"),
    ("gemini", "RECITATION", "content_filter"),
    ("gemini", "BLOCKLIST", "content_filter"),
    ("gemini", "PROHIBITED_CONTENT", "content_filter"),
    ("gemini", "SPII", "content_filter"),
    ("gemini", "OTHER", "stop"),
    ("gemini", "MALFORMED_FUNCTION_CALL", "stop"),
]


@dataclass
class World:
    env: Env
    fakes: dict[str, FakeOpenAI]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    with pytest.MonkeyPatch.context() as mp:
        for kind in KINDS:
            mp.setenv(key_env(kind), api_key(kind))
        async with fakes() as ups:
            providers: dict[str, Any] = {}
            models: dict[str, Any] = {}
            for kind, fake in ups.items():
                providers[kind] = provider(kind, fake)
                providers[f"{kind}-b"] = provider(kind, fake)
                providers[f"{kind}-slow"] = provider(kind, fake, first_byte_timeout=0.3)
                models[f"{kind}/chat"] = model((kind, f"{kind}-m1"), (f"{kind}-b", f"{kind}-m2"))
                models[f"{kind}/slow"] = model((f"{kind}-slow", f"{kind}-m3"))
            # A high breaker threshold: the error cases must not trip each other's breakers.
            async with environment(tmp_path_factory.mktemp("matrix"), providers=providers, models=models,
                                   breaker_threshold=100_000) as env:
                yield World(env=env, fakes=ups)


@pytest.fixture(autouse=True)
def _clean_fakes(world: World) -> None:
    for fake in world.fakes.values():
        fake.clear()


def _setup(world: World, kind: str) -> tuple[FakeOpenAI, Any]:
    if kind not in DIALECTS:
        pytest.skip(f"no {kind} adapter in this build")
    return world.fakes[kind], DIALECTS[kind]


async def _call(world: World, protocol: str, mode: str, **kw: Any) -> Reply | StreamReply:
    client = world.env.client(protocol)
    return await (client.complete(**kw) if mode == "unary" else client.stream(**kw))


def _assert_request(kind: str, rec: Received, *, stream: bool, upstream_model: str) -> None:
    """The upstream got the provider's own request shape, auth and streaming flags."""
    body = body_of(rec)
    if kind == "openai":
        assert rec.method == "POST" and rec.path == "/v1/chat/completions"
        assert rec.headers["authorization"] == f"Bearer {api_key(kind)}"
        assert body["model"] == upstream_model
        assert body["messages"] == [{"role": "user", "content": "hi"}]
        if stream:
            assert body["stream"] is True
            assert body["stream_options"] == {"include_usage": True}
        else:
            assert "stream" not in body and "stream_options" not in body
    elif kind == "anthropic":
        assert rec.method == "POST" and rec.path == "/v1/messages"
        assert rec.headers["anthropic-version"] == "2023-06-01"
        assert rec.headers["x-api-key"] == api_key(kind)
        assert "authorization" not in rec.headers
        assert body["model"] == upstream_model
        assert isinstance(body["max_tokens"], int) and body["max_tokens"] > 0
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        assert body.get("stream", False) is stream
    else:
        method = "streamGenerateContent" if stream else "generateContent"
        assert rec.method == "POST" and rec.path == f"/v1beta/models/{upstream_model}:{method}"
        assert rec.query == ({"alt": "sse"} if stream else {})  # the key is never in the URL
        assert rec.headers["x-goog-api-key"] == api_key(kind)
        assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
        assert "model" not in body


# ------------------------------------------------------------------------------------ text / stream
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_text(world: World, kind: str, protocol: str) -> None:
    fake, d = _setup(world, kind)
    fake.script(d.text("Hello from upstream.", usage=(11, 7)))
    reply = await world.env.client(protocol).complete(model=f"{kind}/chat", messages=USER_HI)
    assert reply.content == "Hello from upstream."
    assert reply.tool_calls == []
    assert (reply.finish_reason, reply.native_finish_reason) == ("stop", d.stop_native)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.estimated) == (11, 7, False)
    assert reply.provider == kind
    assert reply.headers["x-raven-generation-id"] == reply.id
    assert int(reply.headers["x-ratelimit-limit-requests"]) == 10000
    assert len(fake.requests) == 1
    _assert_request(kind, fake.requests[0], stream=False, upstream_model=f"{kind}-m1")
    rec = await world.env.usage(reply.id)
    assert (rec.status, rec.provider, rec.upstream_model) == ("completed", kind, f"{kind}-m1")
    assert rec.model == f"{kind}/chat"
    assert (rec.prompt_tokens, rec.completion_tokens, rec.usage_estimated) == (11, 7, False)
    assert (rec.finish_reason, rec.native_finish_reason, rec.streamed) == ("stop", d.stop_native, False)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_stream(world: World, kind: str, protocol: str) -> None:
    fake, d = _setup(world, kind)
    fake.script(d.text_stream(["Hel", "lo", " there", "!"], usage=(13, 4)).split_writes("mid_line", pause=0))
    reply = await world.env.client(protocol).stream(model=f"{kind}/chat", messages=USER_HI)
    assert reply.error is None
    assert reply.first_role == "assistant"
    assert reply.content == "Hello there!"
    assert (reply.finish_reason, reply.native_finish_reason) == ("stop", d.stop_native)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.estimated) == (13, 4, False)
    assert reply.usage_at == reply.events - 1  # usage rides in the final chunk
    assert reply.headers["x-raven-generation-id"] == reply.id
    assert len(fake.requests) == 1
    _assert_request(kind, fake.requests[0], stream=True, upstream_model=f"{kind}-m1")
    rec = await world.env.usage(reply.id)
    assert (rec.status, rec.provider, rec.streamed) == ("completed", kind, True)
    assert (rec.prompt_tokens, rec.completion_tokens, rec.usage_estimated) == (13, 4, False)


# ------------------------------------------------------------------------------------ tools
def _assert_tools_request(kind: str, rec: Received) -> None:
    body = body_of(rec)
    if kind == "openai":
        assert body["tools"] == [WEATHER, CLOCK]
        assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    elif kind == "anthropic":
        assert body["tools"] == [
            {"name": "get_weather", "description": "Current weather for a city",
             "input_schema": WEATHER["function"]["parameters"]},
            {"name": "get_time", "input_schema": CLOCK["function"]["parameters"]},
        ]
        assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    else:
        assert body["tools"] == [{"functionDeclarations": [
            {"name": "get_weather", "description": "Current weather for a city",
             "parametersJsonSchema": WEATHER["function"]["parameters"]},
            {"name": "get_time", "parametersJsonSchema": CLOCK["function"]["parameters"]},
        ]}]
        assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}


_TOOL_KW: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Weather and time in Paris?"}],
    "tools": [WEATHER, CLOCK],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_tool_calls(world: World, kind: str, protocol: str) -> None:
    fake, d = _setup(world, kind)
    first, second = CALL_IDS[kind]
    fake.script(d.tools([(first, "get_weather", {"city": "Paris"}), (second, "get_time", {"tz": "CET"})]))
    reply = await world.env.client(protocol).complete(model=f"{kind}/chat", **_TOOL_KW)
    assert not reply.content
    assert [(c.id, c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        (first, "get_weather", {"city": "Paris"}), (second, "get_time", {"tz": "CET"})]
    assert (reply.finish_reason, reply.native_finish_reason) == ("tool_calls", d.tool_native)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.estimated) == (40, 12, False)
    _assert_tools_request(kind, fake.requests[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_streamed_tool_calls(world: World, kind: str, protocol: str) -> None:
    fake, d = _setup(world, kind)
    first, second = CALL_IDS[kind]
    fake.script(d.tools_stream([(first, "get_weather", ['{"ci', 'ty": "Pa', 'ris"}']),
                                (second, "get_time", ['{"tz":', ' "CET"}'])]))
    reply = await world.env.client(protocol).stream(model=f"{kind}/chat", **_TOOL_KW)
    assert reply.error is None
    assert reply.first_role == "assistant"
    assert reply.content == ""
    assert [(c.id, c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        (first, "get_weather", {"city": "Paris"}), (second, "get_time", {"tz": "CET"})]
    assert (reply.finish_reason, reply.native_finish_reason) == ("tool_calls", d.tool_native)
    assert reply.usage is not None and not reply.usage.estimated
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (40, 12)
    assert reply.usage_at == reply.events - 1
    _assert_tools_request(kind, fake.requests[0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "anthropic"])  # Anthropic always sends ids
async def test_tool_call_ids_minted_only_when_upstream_gives_none(world: World, kind: str, protocol: str,
                                                                  mode: str) -> None:
    fake, _ = _setup(world, kind)
    if kind == "openai":
        fake.script(Scenario.json(chat_completion(None, tool_calls=[("", "get_weather", '{"city": "Oslo"}')],
                                                  finish_reason="tool_calls")) if mode == "unary"
                    else Scenario.sse(tool_call_chunks([(None, "get_weather", ['{"city": "Oslo"}'])])))
    else:
        parts = [gem.function_call("get_weather", {"city": "Oslo"})]
        fake.script(Scenario.json(gem.response(parts)) if mode == "unary"
                    else Scenario.sse(gem.stream_chunks(parts), done=False, line_ending="\r\n"))
    reply = await _call(world, protocol, mode, model=f"{kind}/chat", **_TOOL_KW)
    [call] = reply.tool_calls
    assert call.id.startswith("call_") and len(call.id) > len("call_") + 8
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    assert reply.finish_reason == "tool_calls"


_HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_hist_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }]},
    {"role": "tool", "tool_call_id": "call_hist_1", "content": '{"temp_c": 21}'},
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_history_and_parameters_are_translated(world: World, kind: str, protocol: str) -> None:
    """A conversation with a system prompt, a tool call and its result, plus the sampling
    parameters, reaches the upstream in its own vocabulary."""
    fake, d = _setup(world, kind)
    fake.script(d.text("21 degrees."))
    reply = await world.env.client(protocol).complete(
        model=f"{kind}/chat", messages=_HISTORY, tools=[WEATHER], max_tokens=64, temperature=0.5, top_p=0.9,
        stop=["END"], seed=3)
    assert reply.content == "21 degrees."
    body = body_of(fake.requests[0])
    if kind == "openai":
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": _HISTORY[2]["tool_calls"]},
            {"role": "tool", "content": '{"temp_c": 21}', "tool_call_id": "call_hist_1"},
        ]
        assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "stop", "seed")} == {
            "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "seed": 3}
    elif kind == "anthropic":
        assert body["system"] == "Be brief."
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_hist_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_hist_1", "content": '{"temp_c": 21}'}]},
        ]
        assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "stop_sequences")} == {
            "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"]}
        assert "seed" not in body  # no Anthropic equivalent
    else:
        assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert body["contents"] == [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                         "thoughtSignature": "skip_thought_signature_validator"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]},
        ]
        assert body["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.5, "topP": 0.9,
                                            "stopSequences": ["END"], "seed": 3}


# ------------------------------------------------------------------------------------ json_schema
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_json_schema(world: World, kind: str, protocol: str, mode: str) -> None:
    fake, d = _setup(world, kind)
    answer = '{"answer": "42", "confidence": 0.9}'
    fake.script(d.text(answer) if mode == "unary" else d.text_stream([answer[:9], answer[9:]]))
    reply = await _call(world, protocol, mode, model=f"{kind}/chat", messages=USER_HI, response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}})
    assert json.loads(reply.content or "") == {"answer": "42", "confidence": 0.9}
    assert reply.finish_reason == "stop"
    body = body_of(fake.requests[0])
    if kind == "openai":
        assert body["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}}
    elif kind == "gemini":
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert body["generationConfig"]["responseJsonSchema"] == ANSWER_SCHEMA
    else:  # native structured outputs (anthropic-version 2023-06-01): output_config.format, no instruction
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": ANSWER_SCHEMA}}
        assert "system" not in body
        assert "response_format" not in body and "output_format" not in body


# ------------------------------------------------------------------------------------ usage
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_usage_estimated_when_upstream_reports_none(world: World, kind: str, protocol: str, mode: str) -> None:
    fake, d = _setup(world, kind)
    text = "Counting these words is up to Raven now."
    fake.script(d.text(text, usage=None) if mode == "unary" else d.text_stream(text.split(" "), usage=None))
    reply = await _call(world, protocol, mode, model=f"{kind}/chat", messages=USER_HI)
    assert reply.usage is not None and reply.usage.estimated is True
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    rec = await world.env.usage(reply.id)
    assert rec.usage_estimated is True and rec.status == "completed"
    assert (rec.prompt_tokens, rec.completion_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert rec.cost > 0


# ------------------------------------------------------------------------------------ finish reasons
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("kind", "native", "expected"), FINISH_REASONS)
async def test_finish_reason(world: World, kind: str, native: str, expected: str, protocol: str, mode: str) -> None:
    fake, d = _setup(world, kind)
    fake.script(d.text("Some text", native=native) if mode == "unary"
                else d.text_stream(["Some", " text"], native=native))
    reply = await _call(world, protocol, mode, model=f"{kind}/chat", messages=USER_HI)
    assert (reply.finish_reason, reply.native_finish_reason) == (expected, native)
    rec = await world.env.usage(reply.id)
    assert (rec.finish_reason, rec.native_finish_reason) == (expected, native)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_gemini_blocked_prompt_is_content_filter(world: World, protocol: str, mode: str) -> None:
    fake, _ = _setup(world, "gemini")
    blocked = gem.blocked_response("PROHIBITED_CONTENT", prompt_tokens=11)
    fake.script(Scenario.json(blocked) if mode == "unary" else Scenario.sse([blocked], done=False))
    reply = await _call(world, protocol, mode, model="gemini/chat", messages=USER_HI)
    assert not reply.content and not reply.tool_calls
    assert (reply.finish_reason, reply.native_finish_reason) == ("content_filter", "PROHIBITED_CONTENT")
    assert reply.usage is not None and reply.usage.prompt_tokens == 11


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_upstream_400_is_client_400_never_retried(world: World, kind: str, protocol: str, mode: str) -> None:
    fake, d = _setup(world, kind)
    fake.script(d.error(400, "messages: bad tool schema"))
    with pytest.raises(CallFailed) as ei:
        await _call(world, protocol, mode, model=f"{kind}/chat", messages=USER_HI)
    assert ei.value.status == 400
    assert "bad tool schema" in ei.value.message
    assert api_key(kind) not in ei.value.message
    assert len(fake.requests) == 1  # neither retried nor sent to the fallback route


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [429, 500, 503, 529])
@pytest.mark.parametrize("kind", KINDS)
async def test_retryable_status_retried_then_502(world: World, kind: str, status: int, protocol: str,
                                                 mode: str) -> None:
    fake, d = _setup(world, kind)
    headers = {"retry-after": "0"} if status == 429 else None
    fake.script(*[d.error(status, f"upstream trouble {status}", headers) for _ in range(4)])
    with pytest.raises(CallFailed) as ei:
        await _call(world, protocol, mode, model=f"{kind}/chat", messages=USER_HI)
    assert ei.value.status == 502
    assert ei.value.code == ("upstream_rate_limited" if status == 429 else "upstream_error")
    assert api_key(kind) not in ei.value.message
    # each of the two routes: the attempt and one retry, in route order
    assert [d.upstream_model(r) for r in fake.requests] == [f"{kind}-m1"] * 2 + [f"{kind}-m2"] * 2
    assert fake.pending == 0
    failed = [r for r in await world.env.records() if r.status == "failed" and r.model == f"{kind}/chat"]
    last = max(failed, key=lambda r: r.created_at)
    code = ei.value.code
    assert last.attempts == (f"{kind}/{kind}-m1:{code}",) * 2 + (f"{kind}-b/{kind}-m2:{code}",) * 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_first_byte_timeout_is_504(world: World, kind: str, protocol: str, mode: str) -> None:
    fake, d = _setup(world, kind)
    late = d.text("late") if mode == "unary" else d.text_stream(["late"])
    fake.script(late.slow_first_byte(5), late.slow_first_byte(5))
    with pytest.raises(CallFailed) as ei:
        await _call(world, protocol, mode, model=f"{kind}/slow", messages=USER_HI)
    assert ei.value.status == 504
    assert ei.value.code == "upstream_timeout"
    assert len(fake.requests) == 2  # retried once
    for rec in fake.requests:
        await rec.wait_ended()
        assert rec.disconnected and not rec.completed  # Raven hung up on the slow upstream


def _broken_stream(kind: str, how: str) -> Any:
    """A stream that delivers "partial" and then fails: a reset connection, or the provider's own
    in-stream error (OpenAI's ``{"error": ...}`` payload, Anthropic's ``error`` event, a Gemini
    chunk carrying ``error``)."""
    d = DIALECTS[kind]
    if how == "reset":
        frames = {"openai": 2, "anthropic": 4, "gemini": 1}[kind]  # up to and including "partial"
        return d.text_stream(["partial", " never", " seen"]).reset(after=frames)
    if kind == "openai":
        return Scenario.sse([chunk({"role": "assistant", "content": ""}), chunk({"content": "partial"}),
                             error_body("The server is overloaded", type="server_error")], done=False)
    if kind == "anthropic":
        return ant.stream([ant.message_start(), ant.content_block_start(0, {"type": "text", "text": ""}),
                           ant.text_delta(0, "partial"), ant.error_event("overloaded_error", "Overloaded")])
    return Scenario.sse([gem.chunk([gem.text_part("partial")]),
                         gem.error_payload(503, "The model is overloaded.")], done=False, line_ending="\r\n")


@pytest.mark.parametrize("how", ["reset", "error event"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_failure_after_first_byte_ends_stream_with_error(world: World, kind: str, protocol: str,
                                                               how: str) -> None:
    fake, _ = _setup(world, kind)
    fake.script(_broken_stream(kind, how))
    reply = await world.env.client(protocol).stream(model=f"{kind}/chat", messages=USER_HI)
    assert reply.content == "partial"
    assert reply.error is not None and reply.error["message"]
    assert reply.finish_reason == "error"
    assert api_key(kind) not in reply.error["message"]
    assert len(fake.requests) == 1  # no retry, no fallback once content went out
    rec = await world.env.usage(reply.id)
    assert (rec.status, rec.finish_reason, rec.provider) == ("failed", "error", kind)
