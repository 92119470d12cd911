"""POST /v1/embeddings end to end (issue 12): the official openai SDK over REST (float and its
default base64), token-array inputs, bad input as 400s naming the field, the gRPC
EmbeddingsService over a real channel, usage records of kind "embedding" and credits."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import openai
import pytest
from tests_support import Rest, make_rest, usage_records

from raven.v1 import embeddings_service_pb2, embeddings_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc
from raven_service.policy.auth import create_key
from raven_service.providers.local._embed import embed_text

pytestmark = pytest.mark.timeout(30)

MODEL = "raven/local-embed"


@pytest.fixture(params=["grpc", "inprocess"])
async def rest(tmp_path, request) -> AsyncIterator[Rest]:
    async with make_rest(tmp_path, link=request.param) as r:
        yield r


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_sdk_float_vectors_are_deterministic_unit_vectors(rest: Rest) -> None:
    sdk = rest.sdk()
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew by ten percent"]
    reply = await sdk.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert reply.object == "list" and reply.model == MODEL
    assert [d.index for d in reply.data] == [0, 1, 2]
    vectors = [d.embedding for d in reply.data]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-5 for v in vectors)
    assert vectors[0] == pytest.approx(list(embed_text(texts[0])), abs=1e-6)  # float32 on the wire
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    again = await sdk.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.embedding for d in again.data] == vectors
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 0


async def test_sdk_default_base64_decodes_to_the_same_vectors(rest: Rest) -> None:
    sdk = rest.sdk()
    # the SDK asks for encoding_format=base64 by default and decodes it itself
    decoded = await sdk.embeddings.create(model=MODEL, input="hello world", dimensions=64)
    floats = await sdk.embeddings.create(model=MODEL, input="hello world", dimensions=64, encoding_format="float")
    assert len(decoded.data[0].embedding) == 64
    assert decoded.data[0].embedding == floats.data[0].embedding
    raw = await rest.http.post("/v1/embeddings", headers=rest.auth(),
                               json={"model": MODEL, "input": "hello world", "dimensions": 64,
                                     "encoding_format": "base64"})
    assert raw.status_code == 200, raw.text
    b64 = raw.json()["data"][0]["embedding"]
    assert isinstance(b64, str)
    unpacked = struct.unpack("<64f", base64.b64decode(b64))
    assert list(unpacked) == pytest.approx(floats.data[0].embedding, abs=0)


async def test_token_array_inputs(rest: Rest) -> None:
    sdk = rest.sdk()
    one = await sdk.embeddings.create(model=MODEL, input=[15339, 1917], encoding_format="float")
    many = await sdk.embeddings.create(model=MODEL, input=[[15339, 1917], [40, 1093, 499]], encoding_format="float")
    assert len(one.data) == 1 and len(many.data) == 2
    assert many.data[0].embedding == one.data[0].embedding
    assert many.usage.prompt_tokens == 5


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "input": ""}, "input[0]"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ["ok", ""]}, "input[1]"),
        ({"model": MODEL, "input": [[]]}, "input[0]"),
        ({"model": MODEL, "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": MODEL, "input": "x", "dimensions": 100000}, "dimensions"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": 42}, "input"),
        ({"model": MODEL, "input": ["a", 1]}, "input"),
        ({"model": "raven/local-chat", "input": "x"}, "model"),
        ({"model": "nope/nope", "input": "x"}, "model"),
        ({"input": "x"}, "model"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(rest: Rest, body: dict, param: str) -> None:
    reply = await rest.http.post("/v1/embeddings", headers=rest.auth(), json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["param"] == param, error


async def test_usage_record_and_credits(rest: Rest) -> None:
    svc = rest.svc
    _, secret = await create_key(svc.services.store, name="metered", rpm=1000, concurrency=10,
                                 credits=Decimal("1"))
    reply = await rest.sdk(secret).embeddings.create(model=MODEL, input=["alpha beta", "gamma"],
                                                     encoding_format="float")
    records = [r for r in await usage_records(svc.services) if r.kind == "embedding"]
    assert len(records) == 1
    rec = records[0]
    assert (rec.model, rec.provider, rec.upstream_model, rec.status) == (MODEL, "local", "local-embed", "completed")
    assert rec.prompt_tokens == reply.usage.prompt_tokens and rec.completion_tokens == 0
    assert rec.cost == Decimal("0.02") * rec.prompt_tokens / 1_000_000
    generation = await rest.http.get("/v1/generation", params={"id": reply.id}, headers=rest.auth(secret))
    assert generation.status_code == 200, generation.text
    await svc.services.admitter.drain()  # returns this instance's idle credit slice (app/slices.py)
    key = next(k for k in await svc.services.store.list_keys() if k.name == "metered")
    assert key.credits_used == rec.cost and key.credits_reserved == 0


async def test_grpc_create_embeddings_and_catalogue(rest: Rest) -> None:
    svc = rest.svc
    async with grpc.aio.insecure_channel(svc.target) as channel:
        stub = embeddings_service_pb2_grpc.EmbeddingsServiceStub(channel)
        reply = await stub.CreateEmbeddings(
            embeddings_service_pb2.CreateEmbeddingsRequest(model=MODEL, input=["hello world"], dimensions=16),
            metadata=svc.meta())
        assert reply.model == MODEL and reply.provider == "local" and reply.id.startswith("emb-")
        assert len(reply.data) == 1 and len(reply.data[0].embedding) == 16
        assert list(reply.data[0].embedding) == pytest.approx(list(embed_text("hello world", 16)), abs=1e-6)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateEmbeddings(embeddings_service_pb2.CreateEmbeddingsRequest(model=MODEL),
                                        metadata=svc.meta())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateEmbeddings(embeddings_service_pb2.CreateEmbeddingsRequest(model=MODEL, input=["x"]))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        listed = await models.ListModels(model_service_pb2.ListModelsRequest(capability="embeddings"),
                                         metadata=svc.meta())
        assert [m.id for m in listed.models] == [MODEL]
        assert listed.models[0].embedding_dimensions == 384 and listed.models[0].pricing.prompt == "0.02"


async def test_sdk_errors_keep_openai_shape(rest: Rest) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await rest.sdk().embeddings.create(model=MODEL, input="x", dimensions=-1)
    assert info.value.status_code == 400
