"""Embeddings adapters against fake upstreams on real loopback sockets speaking each wire format:
OpenAI-compatible ``POST /embeddings`` and Gemini ``embedContent`` / ``batchEmbedContents``; and
the local simulator's deterministic vectors."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import gemini_upstream as gem
from fakes.openai_upstream import FakeOpenAI, Scenario, error_body

from raven_service.config import ProviderConfig
from raven_service.core.errors import UpstreamError
from raven_service.core.ports import EmbeddingProvider
from raven_service.core.types import EmbeddingRequest
from raven_service.providers import gemini, openai_compat
from raven_service.providers.local import LocalProvider

pytestmark = pytest.mark.timeout(30)

ENV = "RAVEN_TEST_EMBED_KEY"
SECRET = "sk-embed-0123456789abcdef"


def openai_embeddings(vectors: list[list[float]], prompt_tokens: int | None = 8, *, reverse: bool = False
                      ) -> dict[str, Any]:
    """OpenAI's embeddings response object (API reference: "The embedding object")."""
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    if reverse:
        data.reverse()  # the index, not the position, says which input a vector belongs to
    out: dict[str, Any] = {"object": "list", "data": data, "model": "text-embedding-3-small"}
    if prompt_tokens is not None:
        out["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return out


@pytest.fixture
async def oa(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]]:
    monkeypatch.setenv(ENV, SECRET)
    async with FakeOpenAI(api_key=SECRET) as fake:
        p = openai_compat.create("up", ProviderConfig(kind="openai", base_url=fake.base_url, api_key_env=ENV))
        try:
            yield fake, p
        finally:
            await p.aclose()


async def test_openai_embeddings_request_and_order(oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]) -> None:
    fake, p = oa
    assert isinstance(p, EmbeddingProvider)
    fake.script(Scenario.json(openai_embeddings([[0.1, 0.2], [0.3, 0.4]], 11, reverse=True)))
    result = await p.embed("text-embedding-3-small",
                           EmbeddingRequest(model="m", texts=("a", "b"), dimensions=2, user="u-1"))
    assert fake.last.path == "/v1/embeddings" and fake.last.method == "POST"
    assert fake.last.headers["authorization"] == f"Bearer {SECRET}"
    assert fake.last.json == {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float",
                              "dimensions": 2, "user": "u-1"}
    assert result.vectors == ((0.1, 0.2), (0.3, 0.4))
    assert (result.prompt_tokens, result.usage_estimated) == (11, False)


async def test_openai_token_arrays_and_estimated_usage(
    oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]
) -> None:
    fake, p = oa
    fake.script(Scenario.json(openai_embeddings([[1.0]], None)))  # e.g. a llama.cpp server without usage
    result = await p.embed("e5", EmbeddingRequest(model="m", token_arrays=((1, 2, 3),)))
    assert fake.last.json["input"] == [[1, 2, 3]]
    assert (result.prompt_tokens, result.usage_estimated) == (3, True)


async def test_openai_embeddings_400_is_rejected(oa: tuple[FakeOpenAI, openai_compat.OpenAICompatProvider]) -> None:
    fake, p = oa
    fake.script(Scenario.json(error_body("This model's maximum context length is 8192 tokens", param="input"),
                              status=400))
    with pytest.raises(UpstreamError) as info:
        await p.embed("text-embedding-3-small", EmbeddingRequest(model="m", texts=("x",)))
    assert info.value.kind == "rejected" and info.value.status == 400


@pytest.fixture
async def gm(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[gem.FakeGemini, gemini.GeminiProvider]]:
    monkeypatch.setenv(ENV, SECRET)
    async with gem.FakeGemini(api_key=SECRET) as fake:
        p = gemini.create("gem", ProviderConfig(kind="gemini", base_url=fake.base_url, api_key_env=ENV))
        try:
            yield fake, p
        finally:
            await p.aclose()


async def test_gemini_embed_content_for_one_text(gm: tuple[gem.FakeGemini, gemini.GeminiProvider]) -> None:
    fake, p = gm
    assert isinstance(p, EmbeddingProvider)
    fake.script(Scenario.json({"embedding": {"values": [0.5, -0.5, 0.25]}}))
    result = await p.embed("gemini-embedding-001", EmbeddingRequest(model="m", texts=("What is life?",),
                                                                    dimensions=3))
    assert fake.last.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert fake.last.headers["x-goog-api-key"] == SECRET
    assert fake.last.json == {"content": {"parts": [{"text": "What is life?"}]}, "outputDimensionality": 3}
    assert result.vectors == ((0.5, -0.5, 0.25),) and result.usage_estimated is True and result.prompt_tokens > 0


async def test_gemini_batch_embed_contents_for_several(gm: tuple[gem.FakeGemini, gemini.GeminiProvider]) -> None:
    fake, p = gm
    fake.script(Scenario.json({"embeddings": [{"values": [1.0, 0.0]}, {"values": [0.0, 1.0]}]}))
    result = await p.embed("gemini-embedding-001", EmbeddingRequest(model="m", texts=("a", "b")))
    assert fake.last.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert fake.last.json == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}},
    ]}
    assert result.vectors == ((1.0, 0.0), (0.0, 1.0))


async def test_gemini_refuses_token_arrays_without_a_request(gm: tuple[gem.FakeGemini, gemini.GeminiProvider]) -> None:
    fake, p = gm
    with pytest.raises(UpstreamError) as info:
        await p.embed("gemini-embedding-001", EmbeddingRequest(model="m", token_arrays=((1, 2),)))
    assert info.value.kind == "rejected" and info.value.status == 400
    assert fake.requests == []


async def test_local_vectors_are_unit_length_deterministic_and_sized() -> None:
    local = LocalProvider("local", tokens_per_second=0)
    a = await local.embed("local-embed", EmbeddingRequest(model="m", texts=("red apples", "red apples", "tax law")))
    assert a.vectors[0] == a.vectors[1] and a.vectors[0] != a.vectors[2]
    assert all(len(v) == 384 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-9 for v in a.vectors)
    short = await local.embed("local-embed", EmbeddingRequest(model="m", texts=("red apples",), dimensions=8))
    assert len(short.vectors[0]) == 8
    tokens = await local.embed("local-embed", EmbeddingRequest(model="m", token_arrays=((5, 6, 7),)))
    assert tokens.prompt_tokens == 3 and len(tokens.vectors[0]) == 384
