"""POST /v1/messages (+ count_tokens) driven by the official `anthropic` SDK against the real service
and the `local` simulator (SPEC §13): unary, streamed, a tool round trip with tool_result, usage
records, count_tokens, and errors in Anthropic's shape.

The gateway is served by uvicorn on a loopback socket (the SDK opens its own connections) over both
gateway links: a real gRPC channel and the in-process one `raven serve` uses.
"""

from __future__ import annotations

import json

import anthropic
import jsonschema
import pytest
from tests_support import usage_records

CHAT = "raven/local-chat"

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}


def sdk(rest, key: str | None = None, **kw) -> anthropic.AsyncAnthropic:
    return rest.anthropic(key, **kw)


async def test_create_message_text_and_generation_record(rest):
    client = sdk(rest)
    raw = await client.messages.with_raw_response.create(
        model=CHAT, max_tokens=64, messages=[{"role": "user", "content": "echo: hello from claude"}]
    )
    msg = await raw.parse()
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == CHAT
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "hello from claude"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.output_tokens == 3  # "hello", " from", " claude", as the local tokenizer counts
    assert msg.usage.input_tokens > 0
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens == 0
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    # the id is the generation id: the usage record is there, counted as the reply says
    r = await rest.http.get("/v1/generation", params={"id": msg.id}, headers=rest.auth())
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["provider"] == "local" and data["status"] == "completed"
    assert data["prompt_tokens"] == msg.usage.input_tokens
    assert data["completion_tokens"] == msg.usage.output_tokens


async def test_system_blocks_max_tokens_and_stop_sequences(rest):
    client = sdk(rest)
    prompt = [{"role": "user", "content": "Write a long essay about rivers."}]
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    full = await client.messages.create(
        model=CHAT, max_tokens=4000, system=system, messages=prompt, extra_body={"temperature": 0}
    )
    text = full.content[0].text
    assert full.stop_reason == "end_turn"
    cut = await client.messages.create(
        model=CHAT, max_tokens=12, system=system, messages=prompt, extra_body={"temperature": 0}
    )
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 12
    assert text.startswith(cut.content[0].text)
    word = text.split()[20]
    stopped = await client.messages.create(
        model=CHAT,
        max_tokens=4000,
        system=system,
        messages=prompt,
        stop_sequences=[word],
        extra_body={"temperature": 0},
    )
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", word)
    assert text.startswith(stopped.content[0].text) and word not in stopped.content[0].text
    async with client.messages.stream(
        model=CHAT,
        max_tokens=4000,
        system=system,
        messages=prompt,
        stop_sequences=["zzz-never", word],
        extra_body={"temperature": 0},
    ) as s:
        streamed = await s.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", word)
    assert streamed.content[0].text == stopped.content[0].text
    assert (full.stop_sequence, cut.stop_sequence) == (None, None)


async def test_stream_events_and_final_message(rest):
    client = sdk(rest)
    kinds: list[str] = []
    async with client.messages.stream(
        model=CHAT,
        max_tokens=4000,
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Tell me a story about a fox."}],
    ) as s:
        async for event in s:
            kinds.append(event.type)
            if event.type == "message_start":
                started = event.message.usage.input_tokens
        final = await s.get_final_message()
    unary = await client.messages.create(
        model=CHAT,
        max_tokens=4000,
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Tell me a story about a fox."}],
    )
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    # message_start carries Raven's count up front (Claude Code shows it); the local simulator
    # counts the same way, so here it is also the final figure
    assert started == final.usage.input_tokens
    assert kinds[1] == "content_block_start" and "message_delta" in kinds
    assert kinds.count("content_block_start") == 1 and kinds.count("content_block_stop") == 1
    assert final.id.startswith("msg_") and final.stop_reason == unary.stop_reason == "end_turn"
    assert final.content[0].text == unary.content[0].text  # same seed material, same text
    assert final.usage.output_tokens == unary.usage.output_tokens
    assert final.usage.input_tokens == unary.usage.input_tokens > 0


async def test_tool_use_round_trip_streamed_and_unary(rest):
    client = sdk(rest)
    question = {"role": "user", "content": "What is the weather in Paris? Use get_weather."}
    async with client.messages.stream(model=CHAT, max_tokens=300, tools=[WEATHER], messages=[question]) as s:
        async for _ in s:
            pass
        first = await s.get_final_message()
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id.startswith("call_")
    jsonschema.validate(uses[0].input, WEATHER["input_schema"])
    history = [
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 degrees"}],
        },
    ]
    answer = await client.messages.create(model=CHAT, max_tokens=300, tools=[WEATHER], messages=history)
    assert answer.stop_reason == "end_turn" and [b.type for b in answer.content] == ["text"]
    assert "Sunny, 21 degrees" in answer.content[0].text  # the simulator quotes the tool's result
    forced = await client.messages.create(
        model=CHAT,
        max_tokens=300,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "hi"}],
    )
    assert forced.stop_reason == "tool_use" and forced.content[-1].type == "tool_use"
    none = await client.messages.create(
        # room for the simulator's longest answer (its length varies): the stop must be its own, not the cap
        model=CHAT, max_tokens=300, tools=[WEATHER], tool_choice={"type": "none"}, messages=[question]
    )
    assert none.stop_reason == "end_turn" and [b.type for b in none.content] == ["text"]
    records = await usage_records(rest.svc.services)
    assert len(records) == 4 and {r.status for r in records} == {"completed"}
    assert sorted(r.finish_reason for r in records) == ["stop", "stop", "tool_calls", "tool_calls"]
    assert all(r.id.startswith("msg_") for r in records)


async def test_claude_code_shaped_request_is_tolerated(rest):
    """What Claude Code sends: beta header and ?beta=true, system blocks with cache_control, adaptive
    thinking, output_config, context_management, metadata.user_id, deferred tools, a role:system
    entry in messages, thinking + tool_use history with signatures."""
    body = {
        "model": CHAT,
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "medium"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_abc_account__session_1"},
        "tools": [
            dict(WEATHER, cache_control={"type": "ephemeral"}),
            {
                "name": "Read",
                "description": "Read a file",
                "defer_loading": True,
                "input_schema": {
                    "type": "object",
                    "properties": {"file_path": {"type": "string"}},
                    "required": ["file_path"],
                },
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "messages": [
            {"role": "system", "content": "Extra system text."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo? use get_weather"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should call the tool.", "signature": "EqQBCkYIBxgCKkB"},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A",
                        "name": "get_weather",
                        "input": {"city": "Oslo", "unit": "celsius"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01A",
                        "content": [{"type": "text", "text": "Snow"}],
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
    }
    headers = {
        "x-api-key": rest.svc.user,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
    }
    r = await rest.http.post("/v1/messages?beta=true", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert "Snow" in text  # after a tool result the simulator answers in text, quoting it
    # unsupported by the local model: dropped and reported, never an error
    assert r.headers["x-raven-dropped-params"] == "context_management,output_config,thinking"


async def test_count_tokens_matches_admission_count(rest):
    client = sdk(rest)
    messages = [{"role": "user", "content": "echo: count these words please"}]
    counted = await client.messages.count_tokens(model=CHAT, messages=messages, tools=[WEATHER], system="Be brief.")
    created = await client.messages.create(
        model=CHAT, max_tokens=20, messages=messages, tools=[WEATHER], system="Be brief."
    )
    assert counted.input_tokens == created.usage.input_tokens > 0
    plain = await client.messages.count_tokens(model=CHAT, messages=messages)
    assert 0 < plain.input_tokens < counted.input_tokens  # the tool definition counts
    assert len(await usage_records(rest.svc.services)) == 1  # count_tokens records nothing
    # an unknown model is a 400 on every route (SPEC §3), in Anthropic's shape here
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.count_tokens(model="no/such-model", messages=messages)
    assert err.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "The model 'no/such-model' does not exist. See GET /v1/models.",
    }


async def test_errors_in_anthropic_shape(rest):
    with pytest.raises(anthropic.AuthenticationError) as err:
        await sdk(rest, key="rk-not-a-real-key-000000000000000000000").messages.create(
            model=CHAT, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 401
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "authentication_error"
    client = sdk(rest)
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(
            model=CHAT, max_tokens=10, extra_body={"temperature": 5.0}, messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in err.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(model=CHAT, max_tokens=10, messages=[{"role": "robot", "content": "hi"}])
    assert "messages[0].role" in err.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(model="no/such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert err.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "The model 'no/such-model' does not exist. See GET /v1/models.",
    }
    # max_tokens is required; wrong JSON types are 400s (no lenient coercion), bad keys before bodies
    r = await rest.http.post(
        "/v1/messages",
        headers={"x-api-key": rest.svc.user},
        json={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Missing required parameter: 'max_tokens'."},
        "request_id": r.json()["request_id"],
    }
    r = await rest.http.post(
        "/v1/messages", headers={"x-api-key": rest.svc.user}, json={"model": CHAT, "max_tokens": "10", "messages": []}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = await rest.http.post("/v1/messages", headers={"x-api-key": "rk-bad"}, content=b"{not json")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await rest.http.post(
        "/v1/messages",
        headers={"x-api-key": rest.svc.user},
        json={"model": CHAT, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    )
    assert r.status_code == 400 and "messages[0].content[0].text" in r.json()["error"]["message"]
    assert len(await usage_records(rest.svc.services)) == 0  # bad requests never reach a model


async def test_rate_limit_is_429_rate_limit_error(tmp_path):
    from messages_support import live_rest

    from raven_service.policy.auth import create_key

    async with live_rest(tmp_path) as rest:
        _, key = await create_key(rest.svc.services.store, name="slow", rpm=1, concurrency=10)
        client = sdk(rest, key=key)
        await client.messages.create(model=CHAT, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.RateLimitError) as err:
            await client.messages.create(model=CHAT, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert err.value.body["error"]["type"] == "rate_limit_error"
        assert int(err.value.response.headers["retry-after"]) >= 1


async def test_bearer_auth_token_works_too(rest):
    client = rest.anthropic(auth_token=rest.svc.user)
    msg = await client.messages.create(model=CHAT, max_tokens=10, messages=[{"role": "user", "content": "echo: ok"}])
    assert msg.content[0].text == "ok"


async def test_count_tokens_checks_the_key_allow_list_and_scope(tmp_path):
    """count_tokens answers only for a model the key may call, as create does (403 permission_error)."""
    from messages_support import live_rest

    from raven_service.core.types import KeyPatch
    from raven_service.policy.auth import create_key

    async with live_rest(tmp_path) as rest:
        store = rest.svc.services.store
        _, embed_only = await create_key(
            store, name="embed", rpm=100, concurrency=10, patch=KeyPatch(models=("raven/local-embed",))
        )
        _, admin_only = await create_key(store, name="ops", rpm=100, concurrency=10, admin=True, scopes=("admin",))
        messages = [{"role": "user", "content": "hi"}]
        for key, text in (
            (embed_only, "This API key may not use the model 'raven/local-chat'."),
            (admin_only, "This API key has no 'inference' scope: it may not call models."),
        ):
            client = rest.anthropic(key)
            with pytest.raises(anthropic.PermissionDeniedError) as err:
                await client.messages.count_tokens(model=CHAT, messages=messages)
            assert err.value.body["error"] == {"type": "permission_error", "message": text}
            with pytest.raises(anthropic.PermissionDeniedError) as err:
                await client.messages.create(model=CHAT, max_tokens=5, messages=messages)
            assert err.value.body["error"] == {"type": "permission_error", "message": text}
        allowed = await rest.anthropic().messages.count_tokens(model=CHAT, messages=messages)
        assert allowed.input_tokens > 0
        assert await usage_records(rest.svc.services) == []


async def test_service_400s_name_the_field_as_the_messages_body_spells_it(rest):
    """The service validates the chat shape; the client reads the names of its own request."""
    client = sdk(rest)
    hi = [{"role": "user", "content": "hi"}]
    cases = [
        (
            {"messages": hi, "tools": [{"name": "bad name!", "input_schema": {"type": "object"}}]},
            "'tools[0].name' must be 1-64 characters of a-z, A-Z, 0-9, _ or -.",
        ),
        (
            {"messages": hi, "tools": [WEATHER, {"name": "f", "input_schema": {"type": "string", "minLength": 10**6}}]},
            "'tools[1].input_schema' exceeds a JSON Schema limit: minLength is 1e+06 (at most 10,000).",
        ),
        (
            {"messages": hi, "stop_sequences": ["a", "b", "c", "d", "e"]},
            "'stop_sequences' accepts at most 4 sequences.",
        ),
        # system first, then a user turn split at its tool_result: chat message 3 is messages[1].content[1]
        (
            {
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "tool_result", "tool_use_id": "", "content": "x"},
                        ],
                    },
                ],
            },
            "'messages[1].content[1].tool_use_id' is required for tool messages.",
        ),
    ]
    for body, message in cases:
        with pytest.raises(anthropic.BadRequestError) as err:
            await client.messages.create(model=CHAT, max_tokens=10, **body)
        assert err.value.body["error"] == {"type": "invalid_request_error", "message": message}
        with pytest.raises(anthropic.BadRequestError) as err:  # the stream's 400 before any event
            async with client.messages.stream(model=CHAT, max_tokens=10, **body) as s:
                await s.get_final_message()
        assert err.value.body["error"] == {"type": "invalid_request_error", "message": message}
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.count_tokens(model=CHAT, **cases[0][0])
    assert err.value.body["error"]["message"] == cases[0][1]
    assert len(await usage_records(rest.svc.services)) == 0
