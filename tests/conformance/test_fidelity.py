"""Fidelity through the whole service (issue 12): the official openai SDK -> gateway -> gRPC ->
fake upstreams on loopback. max_completion_tokens arrives under its own name, cached / reasoning
token details reach the client and the usage record, and cached prompt tokens are priced at the
cached rate; an Anthropic stream with thinking and server-tool blocks completes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from conformance_support import Env, api_key, body_of, environment, key_env, model, new_fake, provider
from fakes import anthropic_upstream as ant
from fakes.openai_upstream import FakeOpenAI, Scenario, chat_completion

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def world(tmp_path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Env, FakeOpenAI, FakeOpenAI]]:
    for kind in ("openai", "anthropic"):
        monkeypatch.setenv(key_env(kind), api_key(kind))
    async with new_fake("openai") as oa, new_fake("anthropic") as an:
        settings = {
            "providers": {"oa": provider("openai", oa), "an": provider("anthropic", an)},
            "models": {
                "oa/gpt-5": model(("oa", "gpt-5"), price_input_per_mtok="1.25", price_output_per_mtok="10",
                                  price_cached_input_per_mtok="0.125"),
                "an/claude": model(("an", "claude-sonnet-4-5"), price_input_per_mtok="3",
                                   price_output_per_mtok="15", price_cached_input_per_mtok="0.30",
                                   price_cache_write_per_mtok="3.75"),
            },
        }
        async with environment(tmp_path, **settings) as env:
            yield env, oa, an


async def test_max_completion_tokens_and_cached_pricing_end_to_end(world: tuple[Env, FakeOpenAI, FakeOpenAI]) -> None:
    env, oa, _ = world
    body = chat_completion("Blue light scatters more.", usage=(2000, 300))
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 1600}
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": 200}
    body["choices"][0]["message"]["reasoning_content"] = "Rayleigh."
    oa.script(Scenario.json(body))
    sdk = env.client("rest").sdk  # type: ignore[attr-defined]
    reply = await sdk.chat.completions.create(model="oa/gpt-5", max_completion_tokens=500,
                                              messages=[{"role": "user", "content": "Why is the sky blue?"}])
    sent = body_of(oa.requests[0])
    assert sent["max_completion_tokens"] == 500 and "max_tokens" not in sent
    assert reply.usage.prompt_tokens_details.cached_tokens == 1600
    assert reply.usage.completion_tokens_details.reasoning_tokens == 200
    assert reply.choices[0].message.model_extra["reasoning_content"] == "Rayleigh."
    rec = await env.usage(reply.id)
    assert (rec.cached_tokens, rec.reasoning_tokens, rec.cache_creation_tokens) == (1600, 200, 0)
    # 400 plain input at 1.25, 1600 cached at 0.125, 300 output at 10 (per 1M)
    assert rec.cost == (Decimal("1.25") * 400 + Decimal("0.125") * 1600 + Decimal(10) * 300) / 1_000_000


async def test_anthropic_stream_with_thinking_and_server_tools_end_to_end(
    world: tuple[Env, FakeOpenAI, FakeOpenAI]
) -> None:
    env, _, an = world
    an.script(ant.stream(ant.payload("stream_thinking_server_tool")))
    sdk = env.client("rest").sdk  # type: ignore[attr-defined]
    stream = await sdk.chat.completions.create(model="an/claude", stream=True,
                                               messages=[{"role": "user", "content": "Weather in Paris?"}])
    text, reasoning, usage, finish = [], [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            reasoning.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == "I'll check the current weather in Paris.It is 18 degrees and sunny in Paris."
    assert "".join(reasoning) == "The user asks about today's weather; I should search the web."
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens == 2679 + 1024 + 8192 and usage.completion_tokens == 510
    assert usage.prompt_tokens_details.cached_tokens == 8192
    assert usage.prompt_tokens_details.model_extra["cache_creation_tokens"] == 1024
    rec = (await env.records())[-1]
    assert (rec.cached_tokens, rec.cache_creation_tokens, rec.status) == (8192, 1024, "completed")
    assert rec.cost == (Decimal(3) * 2679 + Decimal("0.30") * 8192 + Decimal("3.75") * 1024
                        + Decimal(15) * 510) / 1_000_000
