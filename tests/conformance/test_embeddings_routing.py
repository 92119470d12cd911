"""Embeddings routed by chat's rules (SPEC §5, §13 "one domain under all of them"), through both
protocols against two fake OpenAI upstreams on real sockets: a transient failure is retried then
falls back, Retry-After is honoured on the same route, a rejected request is neither retried nor
sent elsewhere, a route that miscounts its vectors is broken (next route, no retry), the circuit
breaker opens and skips the route, and the request timeout bounds the whole. Every case checks
what each upstream received and the usage record's attempts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import openai
import pytest
from conformance_support import HTTP_OF_GRPC, PROTOCOLS, Env, api_key, environment, key_env, new_fake, provider
from fakes.openai_upstream import FakeOpenAI, Scenario, embeddings_response
from tests_support import usage_records

from raven.v1 import embeddings_service_pb2 as es
from raven.v1 import embeddings_service_pb2_grpc as es_grpc

pytestmark = pytest.mark.timeout(15)

TEXTS = ["alpha", "beta"]
TIMED_OUT = "The upstream did not answer in time. Please retry."  # UpstreamTimeout's public message


@dataclass
class Routes:
    env: Env
    a: FakeOpenAI
    b: FakeOpenAI


class Failed(Exception):
    def __init__(self, status: int) -> None:  # the REST status, or the gRPC code's REST equivalent
        super().__init__(status)
        self.status = status


@contextlib.asynccontextmanager
async def two_routes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, *, a_options: dict[str, Any] | None = None,
                     **settings: Any) -> AsyncIterator[Routes]:
    """Model ``e`` embeds on provider ``a`` (upstream model ``a-e``), then ``b`` (``b-e``)."""
    monkeypatch.setenv(key_env("openai"), api_key("openai"))
    async with new_fake("openai") as a, new_fake("openai") as b:
        providers = {"a": provider("openai", a, **(a_options or {})), "b": provider("openai", b)}
        models = {"e": {"routes": [{"provider": "a", "model": "a-e"}, {"provider": "b", "model": "b-e"}],
                        "capabilities": ["embeddings"], "price_input_per_mtok": 1, "embedding_dimensions": 8}}
        async with environment(tmp_path, providers=providers, models=models, **settings) as env:
            yield Routes(env=env, a=a, b=b)


async def embed(env: Env, protocol: str) -> tuple[str, list[list[float]]]:
    """(generation id, vectors) of embedding TEXTS with model ``e``; Failed on an error."""
    if protocol == "rest":
        sdk = openai.AsyncOpenAI(base_url="http://raven.test/v1", api_key=env.svc.user, max_retries=0,
                                 http_client=env.http)
        try:
            reply = await sdk.embeddings.create(model="e", input=TEXTS, encoding_format="float")
        except openai.APIStatusError as exc:
            raise Failed(exc.status_code) from None
        return str(getattr(reply, "id", "")), [d.embedding for d in reply.data]
    stub = es_grpc.EmbeddingsServiceStub(env.channel)
    try:
        answer = await stub.CreateEmbeddings(es.CreateEmbeddingsRequest(model="e", input=TEXTS),
                                             metadata=env.svc.meta())
    except grpc.aio.AioRpcError as exc:
        raise Failed(HTTP_OF_GRPC.get(exc.code(), 500)) from None
    return answer.id, [list(d.embedding) for d in answer.data]


def _fail(status: int, headers: dict[str, str] | None = None) -> Scenario:
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    return Scenario.error(status, "boom", type=kind, headers=headers)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_transient_failure_is_retried_then_falls_back(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch) as r:
        r.a.on_model("a-e", _fail(503))
        gen_id, vectors = await embed(r.env, protocol)
        assert vectors == [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]  # b's answer (the fake's default)
        assert len(r.a.requests) == 2 and len(r.b.requests) == 1  # the attempt, its retry, then b
        assert r.b.last.json["model"] == "b-e" and r.b.last.json["input"] == TEXTS
        rec = await r.env.usage(gen_id)
        assert (rec.kind, rec.status, rec.provider, rec.upstream_model) == ("embedding", "completed", "b", "b-e")
        assert rec.attempts == ("a/a-e:upstream_error", "a/a-e:upstream_error", "b/b-e:ok")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_retry_after_is_honoured_on_the_same_route(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"retry_max_delay": 4.0}) as r:
        r.a.script(_fail(429, {"retry-after-ms": "300"}))
        start = time.monotonic()
        gen_id, _ = await embed(r.env, protocol)
        assert time.monotonic() - start >= 0.28  # waited as the upstream asked, not the tests' tiny backoff
        assert len(r.a.requests) == 2 and not r.b.requests
        rec = await r.env.usage(gen_id)
        assert rec.attempts == ("a/a-e:upstream_rate_limited", "a/a-e:ok")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_rejected_request_is_not_retried_nor_sent_elsewhere(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 2}) as r:
        r.a.on_model("a-e", _fail(400))
        with pytest.raises(Failed) as info:
            await embed(r.env, protocol)
        assert info.value.status == 400
        assert len(r.a.requests) == 1 and not r.b.requests


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_route_that_miscounts_vectors_is_broken(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 2}) as r:
        r.a.on_model("a-e", Scenario.json(embeddings_response([[0.5, 0.5]])))  # one vector for two inputs
        gen_id, vectors = await embed(r.env, protocol)
        assert len(vectors) == 2
        assert len(r.a.requests) == 1 and len(r.b.requests) == 1  # broken: no retry, next route
        rec = await r.env.usage(gen_id)
        assert rec.attempts == ("a/a-e:bad_response", "b/b-e:ok") and rec.provider == "b"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_breaker_opens_and_skips_the_route(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 0}, breaker_threshold=2,
                          breaker_cooldown_seconds=30) as r:
        r.a.on_model("a-e", _fail(500))
        for n in (1, 2):
            await embed(r.env, protocol)
            assert len(r.a.requests) == n
        gen_id, _ = await embed(r.env, protocol)
        assert len(r.a.requests) == 2 and len(r.b.requests) == 3  # a skipped: its circuit is open
        rec = await r.env.usage(gen_id)
        assert rec.attempts == ("a/a-e:circuit_open", "b/b-e:ok")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_request_timeout_bounds_the_whole_and_is_recorded(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, request_timeout=0.5) as r:
        r.a.on_model("a-e", Scenario.json(embeddings_response([[1.0], [2.0]])).slow_first_byte(3))
        start = time.monotonic()
        with pytest.raises(Failed) as info:
            await embed(r.env, protocol)
        assert time.monotonic() - start < 2.5
        assert info.value.status == 504
        assert len(r.a.requests) == 1 and not r.b.requests
        records = [x for x in await usage_records(r.env.svc.services) if x.kind == "embedding"]
        assert [(x.status, x.error) for x in records] == [("failed", TIMED_OUT)]
