"""OpenAI-compatible and Gemini fidelity (issue 12), against fake upstreams on real loopback sockets:
``max_completion_tokens`` reaches the upstream under that name, reasoning content and effort, and
cached / reasoning token counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import gemini_upstream as gem
from fakes.openai_upstream import FakeOpenAI, Scenario, chat_completion, chunk, usage_chunk

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
    TextDelta,
    UsageReport,
)
from raven_service.providers import gemini, openai_compat

pytestmark = pytest.mark.timeout(30)

ENV = "RAVEN_TEST_FIDELITY_KEY"
SECRET = "sk-fidelity-0123456789abcdef"


def chat(model: str = "gpt-5", **params: Any) -> ProviderChatRequest:
    return ProviderChatRequest(upstream_model=model, request=ChatRequest(
        model="m", messages=(Message(role="user", content="Why is the sky blue?"),), **params))


# ------------------------------------------------------------------------------------ openai
@pytest.fixture
async def oa(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]]:
    monkeypatch.setenv(ENV, SECRET)
    async with FakeOpenAI(api_key=SECRET) as fake:
        p = openai_compat.create("up", ProviderConfig(kind="openai", base_url=fake.base_url, api_key_env=ENV))
        try:
            yield fake, p
        finally:
            await p.aclose()


@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_max_completion_tokens_reaches_the_upstream_under_its_own_name(
    oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider], mode: str
) -> None:
    fake, p = oa
    req = chat(max_tokens=50, max_tokens_name="max_completion_tokens")
    if mode == "complete":
        await p.complete(req)
    else:
        [e async for e in p.stream(req)]
    body = fake.last.json
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body  # gpt-5 / o-series answer 400 unsupported_parameter to it


async def test_max_tokens_stays_max_tokens(oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]) -> None:
    fake, p = oa
    await p.complete(chat(max_tokens=7))
    assert fake.last.json["max_tokens"] == 7 and "max_completion_tokens" not in fake.last.json


async def test_reasoning_effort_is_sent(oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]) -> None:
    fake, p = oa
    await p.complete(chat(reasoning=ReasoningConfig(effort="low")))
    assert fake.last.json["reasoning_effort"] == "low"


async def test_unary_cached_and_reasoning_token_details_and_reasoning_content(
    oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]
) -> None:
    fake, p = oa
    body = chat_completion("Rayleigh scattering.", usage=(2006, 300))
    body["choices"][0]["message"]["reasoning_content"] = "Short wavelengths scatter more."
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 1920, "audio_tokens": 0}
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": 256, "audio_tokens": 0,
                                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    fake.script(Scenario.json(body))
    result = await p.complete(chat())
    assert result.content == "Rayleigh scattering."
    assert result.reasoning == (ReasoningPart(text="Short wavelengths scatter more."),)
    assert (result.prompt_tokens, result.completion_tokens) == (2006, 300)
    assert (result.cached_tokens, result.reasoning_tokens, result.cache_creation_tokens) == (1920, 256, 0)


async def test_deepseek_cache_hit_tokens_count_as_cached(
    oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]
) -> None:
    fake, p = oa
    body = chat_completion("ok", usage=(100, 5))
    body["usage"].update(prompt_cache_hit_tokens=64, prompt_cache_miss_tokens=36)
    fake.script(Scenario.json(body))
    assert (await p.complete(chat())).cached_tokens == 64


async def test_stream_reasoning_content_deltas_and_usage_details(
    oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]
) -> None:
    fake, p = oa
    last = usage_chunk(40, 25)
    last["usage"]["prompt_tokens_details"] = {"cached_tokens": 32}
    last["usage"]["completion_tokens_details"] = {"reasoning_tokens": 20}
    fake.script(Scenario.sse([
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Hmm, "}),
        chunk({"reasoning_content": "scattering."}),
        chunk({"reasoning": "(OpenRouter's name)"}),
        chunk({"content": "Rayleigh."}),
        chunk({}, "stop"),
        last,
    ]))
    events: list[ChatEvent] = [e async for e in p.stream(chat())]
    assert events == [
        ReasoningDelta(index=0, text="Hmm, "), ReasoningDelta(index=0, text="scattering."),
        ReasoningDelta(index=0, text="(OpenRouter's name)"), TextDelta(text="Rayleigh."),
        Finish(reason="stop", native="stop"),
        UsageReport(prompt_tokens=40, completion_tokens=25, cached_tokens=32, reasoning_tokens=20),
    ]


# ------------------------------------------------------------------------------------ gemini
@pytest.fixture
async def gm(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[gem.FakeGemini, gemini.GeminiProvider]]:
    monkeypatch.setenv(ENV, SECRET)
    async with gem.FakeGemini(api_key=SECRET) as fake:
        p = gemini.create("gem", ProviderConfig(kind="gemini", base_url=fake.base_url, api_key_env=ENV))
        try:
            yield fake, p
        finally:
            await p.aclose()


async def test_gemini_thoughts_reasoning_and_cached_tokens_unary(
    gm: tuple[gem.FakeGemini, gemini.GeminiProvider]
) -> None:
    fake, p = gm
    body = gem.response([gem.text_part("Consider wavelengths.", thought=True, signature="c2lnbmF0dXJl"),
                         gem.text_part("Rayleigh scattering.")], usage=None)
    body["usageMetadata"] = gem.usage_metadata(1200, 9, thoughts=140, cached=1024)
    fake.script(Scenario.json(body))
    result = await p.complete(chat("gemini-2.5-pro"))
    assert result.content == "Rayleigh scattering."
    assert result.reasoning == (ReasoningPart(text="Consider wavelengths.", signature="c2lnbmF0dXJl"),)
    assert (result.prompt_tokens, result.completion_tokens) == (1200, 9 + 140)
    assert (result.cached_tokens, result.reasoning_tokens) == (1024, 140)


async def test_gemini_stream_thoughts_and_usage(gm: tuple[gem.FakeGemini, gemini.GeminiProvider]) -> None:
    fake, p = gm
    chunks = gem.stream_chunks([gem.text_part("Thinking...", thought=True), "Blue"], usage=(30, 2), thoughts=50)
    chunks[-1]["usageMetadata"] = gem.usage_metadata(30, 2, thoughts=50, cached=16)
    fake.script(Scenario.sse(chunks, done=False))
    events = [e async for e in p.stream(chat("gemini-2.5-flash"))]
    assert events == [ReasoningDelta(index=0, text="Thinking..."), TextDelta(text="Blue"),
                      Finish(reason="stop", native="STOP"),
                      UsageReport(prompt_tokens=30, completion_tokens=52, cached_tokens=16, reasoning_tokens=50)]


@pytest.mark.parametrize(
    ("reasoning", "thinking"),
    [
        (ReasoningConfig(effort="high"), {"includeThoughts": True, "thinkingBudget": 24576}),
        (ReasoningConfig(budget_tokens=2000), {"includeThoughts": True, "thinkingBudget": 2000}),
        (ReasoningConfig(effort="none"), {"includeThoughts": False, "thinkingBudget": 0}),
    ],
)
async def test_gemini_reasoning_config_becomes_thinking_config(
    gm: tuple[gem.FakeGemini, gemini.GeminiProvider], reasoning: ReasoningConfig, thinking: dict[str, Any]
) -> None:
    fake, p = gm
    await p.complete(chat("gemini-2.5-flash", reasoning=reasoning))
    assert fake.last.json["generationConfig"]["thinkingConfig"] == thinking
