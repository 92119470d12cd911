"""Anthropic client -> Raven -> Anthropic upstream keeps full fidelity (SPEC §13).

A fake Anthropic Messages API on a real loopback socket records what Raven sends. The official
`anthropic` SDK talks to Raven's /v1/messages; the upstream must receive the client's blocks
unchanged: thinking blocks with their signatures, cache_control on system, messages and tools,
block types Raven does not know, server tools and the client's anthropic-beta values.
"""

from __future__ import annotations

import copy

import anthropic
import pytest
from fakes.anthropic_upstream import (
    FakeAnthropic,
    Scenario,
    content_block_start,
    content_block_stop,
    message,
    message_delta,
    message_start,
    message_stop,
    payload,
    stream,
    text_delta,
)
from messages_support import live_rest
from tests_support import usage_records

KEY_ENV = "RAVEN_TEST_MESSAGES_ANTHROPIC_KEY"
UPSTREAM_KEY = "sk-ant-fidelity-0123456789"
MODEL = "claude-test"
UPSTREAM_MODEL = "claude-sonnet-4-5-20250929"

SYSTEM = [{"type": "text", "text": "You are a careful assistant.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "cache_control": {"type": "ephemeral"},
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {
        "name": "Read",
        "defer_loading": True,
        "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
    },
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"},
]
MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather in Oslo?", "cache_control": {"type": "ephemeral"}},
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "Oslo is in Norway."},
                "title": "Atlas",
                "citations": {"enabled": True},
            },
        ],
    },
    {
        "role": "assistant",
        "content": [
            {
                "type": "thinking",
                "thinking": "The user wants weather; call the tool.",
                "signature": "EqQBCkYIBxgCKkAn0+/signature==",
            },
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"},
            {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "oslo weather"}},
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_01",
                "content": [
                    {
                        "type": "web_search_result",
                        "url": "https://weather.example/oslo",
                        "title": "Oslo",
                        "encrypted_content": "EqgfCioIARgBIiQ3YTU",
                        "page_age": None,
                    }
                ],
            },
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}},
            # a block type no Anthropic release (nor Raven) defines yet: passed on, not refused
            {"type": "future_block_2027", "payload": {"nested": [1, 2, {"deep": True}], "none": None}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A",
                "content": "Snow, -3 C",
                "cache_control": {"type": "ephemeral"},
            },
        ],
    },
]
BETAS = "interleaved-thinking-2025-05-14,context-management-2025-06-27"


@pytest.fixture
async def env(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    async with FakeAnthropic(api_key=UPSTREAM_KEY) as fake:
        providers = {
            "claude": {
                "kind": "anthropic",
                "base_url": fake.base_url,
                "api_key_env": KEY_ENV,
                "max_retries": 0,
                "first_byte_timeout": 5.0,
            }
        }
        models = {
            MODEL: {
                "routes": [{"provider": "claude", "model": UPSTREAM_MODEL}],
                "capabilities": ["chat", "tools", "json"],
                "price_input_per_mtok": 3,
                "price_output_per_mtok": 15,
                "supported_parameters": [
                    "max_tokens",
                    "temperature",
                    "top_p",
                    "top_k",
                    "stop",
                    "tools",
                    "tool_choice",
                    "user",
                    "reasoning",
                    "thinking",
                    "context_management",
                ],
            }
        }
        async with live_rest(tmp_path, providers=providers, models=models) as rest:
            yield rest, fake


def client(rest) -> anthropic.AsyncAnthropic:
    return rest.anthropic()


def assert_verbatim(body: dict) -> None:
    """The upstream got the client's system, messages and tools exactly."""
    assert body["model"] == UPSTREAM_MODEL
    assert body["system"] == SYSTEM
    assert body["messages"] == MESSAGES
    assert body["tools"] == TOOLS


async def test_unary_passes_blocks_signatures_cache_control_and_betas(env):
    rest, fake = env
    fake.script(
        Scenario.json(
            message(
                "It is snowing in Oslo.",
                usage={
                    "input_tokens": 40,
                    "output_tokens": 9,
                    "cache_read_input_tokens": 1200,
                    "cache_creation_input_tokens": 300,
                },
            )
        )
    )
    sent = copy.deepcopy(MESSAGES)
    msg = await client(rest).messages.create(
        model=MODEL,
        max_tokens=2048,
        system=SYSTEM,
        messages=sent,
        tools=TOOLS,
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "user-42"},
        extra_headers={"anthropic-beta": BETAS},
        extra_body={"top_k": 5, "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}},
    )
    rec = fake.last
    assert_verbatim(rec.json)
    assert rec.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert rec.json["top_k"] == 5 and rec.json["max_tokens"] == 2048
    assert rec.json["metadata"] == {"user_id": "user-42"}
    assert rec.json["context_management"] == {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    assert rec.headers["anthropic-beta"] == BETAS
    assert rec.headers["x-api-key"] == UPSTREAM_KEY and rec.headers["anthropic-version"] == "2023-06-01"
    assert msg.content[0].text == "It is snowing in Oslo." and msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 9
    assert msg.usage.input_tokens + msg.usage.cache_read_input_tokens + msg.usage.cache_creation_input_tokens == 1540
    records = await usage_records(rest.svc.services)
    assert [(r.provider, r.upstream_model, r.prompt_tokens, r.completion_tokens) for r in records] == [
        ("claude", UPSTREAM_MODEL, 1540, 9)
    ]


async def test_stream_tool_use_round_trip_verbatim(env):
    rest, fake = env
    fake.script(
        stream(
            [
                message_start(30, 1),
                content_block_start(0, {"type": "text", "text": ""}),
                text_delta(0, "Checking"),
                content_block_stop(0),
                content_block_start(1, {"type": "tool_use", "id": "toolu_02B", "name": "get_weather", "input": {}}),
                {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"city": "Bergen"}'},
                },
                content_block_stop(1),
                message_delta("tool_use", 12),
                message_stop(),
            ]
        )
    )
    async with client(rest).messages.stream(
        model=MODEL,
        max_tokens=1024,
        system=SYSTEM,
        messages=copy.deepcopy(MESSAGES),
        tools=TOOLS,
        extra_headers={"anthropic-beta": BETAS},
    ) as s:
        final = await s.get_final_message()
    assert_verbatim(fake.last.json)
    assert fake.last.json["stream"] is True and fake.last.headers["anthropic-beta"] == BETAS
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Checking"
    assert (final.content[1].id, final.content[1].name, final.content[1].input) == (
        "toolu_02B",
        "get_weather",
        {"city": "Bergen"},
    )
    assert final.usage.output_tokens == 12 and final.usage.input_tokens == 30


async def test_openai_client_on_the_same_upstream_gets_the_translation(env):
    """The other direction stays as it was: an OpenAI-shaped request carries no Anthropic blocks."""
    rest, fake = env
    out = await rest.sdk().chat.completions.create(
        model=MODEL,
        max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
    )
    assert out.choices[0].message.content == "Hi! My name is Claude."
    assert fake.last.json["system"] == "Be brief."
    assert fake.last.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert "anthropic-beta" not in fake.last.headers


async def test_stream_thinking_signatures_and_server_tools_reach_the_client(env):
    """A recorded Anthropic stream with thinking (+ signature_delta), redacted_thinking, a
    server_tool_use with input_json_delta, a web_search_tool_result and a citations_delta: the
    Messages client gets the thinking blocks with their exact signatures and the whole text; the
    server-tool blocks are skipped, never an error."""
    rest, fake = env
    recorded = payload("stream_thinking_server_tool")
    fake.script(stream(recorded))
    kinds: list[str] = []
    async with client(rest).messages.stream(
        model=MODEL,
        max_tokens=4096,
        messages=[{"role": "user", "content": "Weather in Paris today?"}],
        tools=TOOLS[2:3],
        thinking={"type": "enabled", "budget_tokens": 2048},
    ) as s:
        async for event in s:
            kinds.append(event.type)
        final = await s.get_final_message()
    assert fake.last.json["tools"] == TOOLS[2:3]
    assert fake.last.json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "error" not in kinds and kinds[-1] == "message_stop"
    signature = recorded[4]["delta"]["signature"]
    redacted = recorded[6]["content_block"]["data"]
    assert [b.type for b in final.content] == ["thinking", "redacted_thinking", "text"]
    assert final.content[0].thinking == "The user asks about today's weather; I should search the web."
    assert final.content[0].signature == signature
    assert final.content[1].data == redacted
    assert final.content[2].text == "I'll check the current weather in Paris.It is 18 degrees and sunny in Paris."
    assert final.stop_reason == "end_turn"
    usage = recorded[-2]["usage"]
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    )
    assert final.usage.output_tokens == usage["output_tokens"]
    # the signed thinking goes back verbatim on the next turn (what Claude Code does with tools)
    history = [
        {"role": "user", "content": "Weather in Paris today?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
        {"role": "user", "content": "Thanks!"},
    ]
    fake.script(Scenario.json(message("You are welcome.")))
    await client(rest).messages.create(model=MODEL, max_tokens=100, messages=history)
    sent = fake.last.json["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": final.content[0].thinking, "signature": signature}
    assert sent[1] == {"type": "redacted_thinking", "data": redacted}
    records = await usage_records(rest.svc.services)
    assert len(records) == 2 and records[0].cached_tokens == usage["cache_read_input_tokens"]


async def test_stop_sequence_of_the_upstream_reaches_the_client(env):
    rest, fake = env
    body = message("It is snow", stop_reason="stop_sequence")
    body["stop_sequence"] = "ing"
    fake.script(Scenario.json(body))
    unary = await client(rest).messages.create(
        model=MODEL, max_tokens=50, stop_sequences=["ing", "END"], messages=[{"role": "user", "content": "Weather?"}]
    )
    assert fake.last.json["stop_sequences"] == ["ing", "END"]
    assert (unary.stop_reason, unary.stop_sequence, unary.content[0].text) == ("stop_sequence", "ing", "It is snow")
    ending = message_delta("stop_sequence", 3)
    ending["delta"]["stop_sequence"] = "END"
    fake.script(
        stream(
            [
                message_start(10, 1),
                content_block_start(0, {"type": "text", "text": ""}),
                text_delta(0, "Done"),
                content_block_stop(0),
                ending,
                message_stop(),
            ]
        )
    )
    async with client(rest).messages.stream(
        model=MODEL, max_tokens=50, stop_sequences=["ing", "END"], messages=[{"role": "user", "content": "Go"}]
    ) as s:
        final = await s.get_final_message()
    assert (final.stop_reason, final.stop_sequence, final.content[0].text) == ("stop_sequence", "END", "Done")
    records = await usage_records(rest.svc.services)
    assert [(r.finish_reason, r.native_finish_reason) for r in records] == [("stop", "stop_sequence")] * 2
