"""Every RPC over a real grpc.aio channel against the real service (local provider, SQLite)."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from raven.v1 import (
    chat_pb2,
    chat_service_pb2_grpc,
    file_service_pb2,
    file_service_pb2_grpc,
    image_service_pb2,
    image_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
    video_pb2,
    video_service_pb2,
    video_service_pb2_grpc,
)
from raven.v1 import (
    chat_service_pb2 as cs,
)

CHAT = "raven/local-chat"


def user(text: str) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(role="user", content=text)


def details(err: grpc.aio.AioRpcError) -> dict[str, object]:
    """google.rpc.Status details of an error, by type."""
    status = rpc_status.from_call(err)
    assert status is not None, "error carries no google.rpc.Status"
    out: dict[str, object] = {}
    for d in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo,
                    error_details_pb2.QuotaFailure):
            if d.Is(cls.DESCRIPTOR):
                msg = cls()
                d.Unpack(msg)
                out[cls.__name__] = msg
    return out


async def test_unary_chat_and_generation_record(svc, channel):
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    call = chat.CreateChatCompletion(
        cs.CreateChatCompletionRequest(model=CHAT, messages=[user("echo: hello there")], seed=7),
        metadata=svc.meta())
    resp = await call
    assert resp.choices[0].message.content == "hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert float(resp.usage.cost) > 0
    meta = dict(await call.trailing_metadata())
    assert int(meta["x-ratelimit-limit-requests"]) == 10000
    assert int(meta["x-ratelimit-remaining-requests"]) == 9999
    usage = usage_service_pb2_grpc.UsageServiceStub(channel)
    req = usage_service_pb2.GetGenerationRequest(id=resp.id)
    gen = (await usage.GetGeneration(req, metadata=svc.meta())).generation
    assert gen.id == resp.id and gen.provider == "local" and gen.status == "completed"
    assert gen.prompt_tokens == resp.usage.prompt_tokens and gen.total_cost == resp.usage.cost
    # another key cannot read it
    key = key_service_pb2_grpc.KeyServiceStub(channel)
    other = await key.CreateKey(key_service_pb2.CreateKeyRequest(name="other"), metadata=svc.meta(svc.admin))
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await usage.GetGeneration(usage_service_pb2.GetGenerationRequest(id=resp.id), metadata=svc.meta(other.secret))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_chat_role_first_usage_last(svc, channel):
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    msgs = [m async for m in chat.StreamChatCompletion(
        cs.StreamChatCompletionRequest(model=CHAT, messages=[user("echo: one two three four")]), metadata=svc.meta())]
    assert msgs[0].choices[0].delta.role == "assistant"
    assert msgs[0].provider == "local"
    text = "".join(c.delta.content for m in msgs for c in m.choices)
    assert text == "one two three four"
    assert msgs[-1].HasField("usage") and not msgs[-1].choices
    assert msgs[-2].choices[0].finish_reason == "stop"
    assert len({m.id for m in msgs}) == 1
    assert msgs[-1].usage.completion_tokens >= 4


async def test_stream_tool_calls(svc, channel):
    params = struct_pb2.Struct()
    params.update({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer",
                   "minimum": 1, "maximum": 7}}, "required": ["city", "days"]})
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    req = cs.StreamChatCompletionRequest(
        model=CHAT, messages=[user("weather in Paris?")],
        tools=[chat_pb2.Tool(type="function", name="get_weather", parameters=params)],
        tool_choice=chat_pb2.ToolChoice(mode="required"))
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for m in chat.StreamChatCompletion(req, metadata=svc.meta()):
        for c in m.choices:
            for tc in c.delta.tool_calls:
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += tc.id
                entry["name"] += tc.name
                entry["arguments"] += tc.arguments
            if c.HasField("finish_reason"):
                finish = c.finish_reason
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    args = json.loads(calls[0]["arguments"])
    assert isinstance(args["city"], str) and 1 <= args["days"] <= 7


async def test_unauthenticated_without_metadata_and_revoked(svc, channel):
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await models.ListModels(model_service_pb2.ListModelsRequest())
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(ei.value)["ErrorInfo"].reason == "INVALID_API_KEY"
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    made = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="tmp"), metadata=svc.meta(svc.admin))
    assert made.secret.startswith("rk-") and len(made.secret) >= 35
    await models.ListModels(model_service_pb2.ListModelsRequest(), metadata=svc.meta(made.secret))
    await keys.RevokeKey(key_service_pb2.RevokeKeyRequest(id=made.key.id), metadata=svc.meta(svc.admin))
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await models.ListModels(model_service_pb2.ListModelsRequest(), metadata=svc.meta(made.secret))
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_models(svc, channel):
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    listed = (await models.ListModels(model_service_pb2.ListModelsRequest(), metadata=svc.meta())).models
    ids = {m.id for m in listed}
    assert {"raven/local-chat", "raven/local-image", "raven/local-video"} <= ids
    m = (await models.GetModel(model_service_pb2.GetModelRequest(id=CHAT), metadata=svc.meta())).model
    assert set(m.capabilities) >= {"chat", "tools", "json"} and m.context_length > 0
    assert float(m.pricing.prompt) > 0 and "temperature" in m.supported_parameters
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await models.GetModel(model_service_pb2.GetModelRequest(id="nope/nope"), metadata=svc.meta())
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("mutate", "param"),
    [
        (lambda r: setattr(r, "temperature", 2.5), "temperature"),
        (lambda r: setattr(r, "top_p", 0.0), "top_p"),
        (lambda r: setattr(r, "max_tokens", -1), "max_tokens"),
        (lambda r: setattr(r, "model", "no/such-model"), "model"),
        (lambda r: r.messages.add(role="wizard", content="x"), "messages[1].role"),
        (lambda r: r.ClearField("messages"), "messages"),
    ],
)
async def test_bad_input_invalid_argument_with_field_violation(svc, channel, mutate, param):
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    req = cs.CreateChatCompletionRequest(model=CHAT, messages=[user("hi")])
    mutate(req)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await chat.CreateChatCompletion(req, metadata=svc.meta())
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    d = details(ei.value)
    assert d["BadRequest"].field_violations[0].field == param
    assert "x-ratelimit-limit-requests" in dict(ei.value.trailing_metadata())


async def test_rate_limit_retry_info_and_concurrency(svc, channel):
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    made = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="rpm2", rpm=2), metadata=svc.meta(svc.admin))
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    req = cs.CreateChatCompletionRequest(model=CHAT, messages=[user("echo: x")])
    for _ in range(2):
        await chat.CreateChatCompletion(req, metadata=svc.meta(made.secret))
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await chat.CreateChatCompletion(req, metadata=svc.meta(made.secret))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    d = details(ei.value)
    assert d["ErrorInfo"].reason == "RATE_LIMIT_EXCEEDED"
    assert d["RetryInfo"].retry_delay.seconds >= 1
    assert "QuotaFailure" in d
    assert dict(ei.value.trailing_metadata())["x-ratelimit-remaining-requests"] == "0"


async def test_credits_exhausted_is_distinct_reason(svc, channel):
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    made = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="poor", credits="0.0000001"),
                                metadata=svc.meta(svc.admin))
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await chat.CreateChatCompletion(cs.CreateChatCompletionRequest(model=CHAT, messages=[user("hi")]),
                                        metadata=svc.meta(made.secret))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(ei.value)["ErrorInfo"].reason == "INSUFFICIENT_CREDITS"


async def test_credits_settle_to_actual_cost(svc, channel):
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    made = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="budget", credits="1"),
                                metadata=svc.meta(svc.admin))
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    resp = await chat.CreateChatCompletion(
        cs.CreateChatCompletionRequest(model=CHAT, messages=[user("echo: a b c")], max_tokens=50),
        metadata=svc.meta(made.secret))
    await svc.services.admitter.drain()
    await svc.services.usage.flush()
    key = await svc.services.store.get_key(made.key.id)
    from decimal import Decimal

    assert key.credits_used == Decimal(resp.usage.cost)
    assert key.credits_reserved == 0


async def test_keys_admin_only(svc, channel):
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await keys.ListKeys(key_service_pb2.ListKeysRequest(), metadata=svc.meta())
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await keys.ListKeys(key_service_pb2.ListKeysRequest(), metadata=svc.meta(svc.admin))
    assert {k.name for k in listed.keys} >= {"admin", "user"}
    assert all(not k.prefix.endswith("=") for k in listed.keys)
    up = await keys.UpdateKey(key_service_pb2.UpdateKeyRequest(id=listed.keys[0].id, rpm=5),
                              metadata=svc.meta(svc.admin))
    assert up.key.rpm == 5


async def test_images_b64_and_url_download(svc, channel):
    images = image_service_pb2_grpc.ImageServiceStub(channel)
    out = await images.GenerateImages(image_service_pb2.GenerateImagesRequest(
        model="raven/local-image", prompt="a red fox", n=2, size="256x256"), metadata=svc.meta())
    import base64

    assert len(out.data) == 2
    assert base64.b64decode(out.data[0].b64_json)[:8] == b"\x89PNG\r\n\x1a\n"
    out = await images.GenerateImages(image_service_pb2.GenerateImagesRequest(
        model="raven/local-image", prompt="a fox", size="256x256", response_format="url"), metadata=svc.meta())
    url = out.data[0].url
    assert url.startswith("/v1/files/") and url.endswith("/content")
    file_id = url.split("/")[3]
    files = file_service_pb2_grpc.FileServiceStub(channel)
    parts = [p async for p in files.DownloadFile(file_service_pb2.DownloadFileRequest(id=file_id), metadata=svc.meta())]
    assert parts[0].mime_type == "image/png"
    assert b"".join(p.data for p in parts)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        req = file_service_pb2.DownloadFileRequest(id=file_id)
        async for _ in files.DownloadFile(req, metadata=svc.meta(svc.admin)):
            pass
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


async def test_video_lifecycle_and_idempotency(svc, channel):
    videos = video_service_pb2_grpc.VideoServiceStub(channel)
    req = video_service_pb2.CreateVideoGenerationRequest(model="raven/local-video", prompt="waves", seconds=1,
                                                         size="160x96", request_id="req-1")
    created = (await videos.CreateVideoGeneration(req, metadata=svc.meta())).video_generation
    again = (await videos.CreateVideoGeneration(req, metadata=svc.meta())).video_generation
    assert again.id == created.id
    assert created.state in (video_pb2.VideoGeneration.STATE_QUEUED, video_pb2.VideoGeneration.STATE_RUNNING)
    for _ in range(300):
        got = (await videos.GetVideoGeneration(video_service_pb2.GetVideoGenerationRequest(id=created.id),
                                               metadata=svc.meta())).video_generation
        if got.state in (video_pb2.VideoGeneration.STATE_SUCCEEDED, video_pb2.VideoGeneration.STATE_FAILED):
            break
        await asyncio.sleep(0.1)
    assert got.state == video_pb2.VideoGeneration.STATE_SUCCEEDED, got.error.message
    assert got.progress == 100 and got.outputs[0].mime_type == "video/mp4"
    files = file_service_pb2_grpc.FileServiceStub(channel)
    fid = got.outputs[0].url.split("/")[3]
    data = b"".join([p.data async for p in files.DownloadFile(file_service_pb2.DownloadFileRequest(id=fid),
                                                               metadata=svc.meta())])
    assert data[4:8] == b"ftyp"
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await videos.GetVideoGeneration(video_service_pb2.GetVideoGenerationRequest(id=created.id),
                                        metadata=svc.meta(svc.admin))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await videos.ListVideoGenerations(video_service_pb2.ListVideoGenerationsRequest(), metadata=svc.meta())
    assert [v.id for v in listed.video_generations] == [created.id]


async def test_cancelled_stream_records_usage_so_far(tmp_path):
    from tests_support import service

    async with service(tmp_path, local_tokens_per_second=200.0) as svc, grpc.aio.insecure_channel(svc.target) as ch:
        chat = chat_service_pb2_grpc.ChatServiceStub(ch)
        call = chat.StreamChatCompletion(cs.StreamChatCompletionRequest(
            model=CHAT, messages=[user("write a long story about the sea")]), metadata=svc.meta())
        got = [await call.read() for _ in range(5)]
        call.cancel()
        usage = usage_service_pb2_grpc.UsageServiceStub(ch)
        gen = None
        for _ in range(100):
            try:
                gen = (await usage.GetGeneration(usage_service_pb2.GetGenerationRequest(id=got[0].id),
                                                 metadata=svc.meta())).generation
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        assert gen is not None
        assert gen.status == "cancelled" and gen.streamed
        assert 4 <= gen.completion_tokens < 100  # what was generated before the cancel, not the whole story
        assert gen.prompt_tokens > 0 and float(gen.total_cost) > 0


async def test_usage_summary(svc, channel):
    chat = chat_service_pb2_grpc.ChatServiceStub(channel)
    for _ in range(3):
        await chat.CreateChatCompletion(cs.CreateChatCompletionRequest(model=CHAT, messages=[user("echo: z")]),
                                        metadata=svc.meta())
    usage = usage_service_pb2_grpc.UsageServiceStub(channel)
    out = await usage.GetUsage(usage_service_pb2.GetUsageRequest(), metadata=svc.meta())
    assert out.requests == 3 and out.models[0].model == CHAT
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await usage.GetUsage(usage_service_pb2.GetUsageRequest(key_id="key_other"), metadata=svc.meta())
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND  # another key's id: 404, as for no such key


async def test_concurrency_limit_holds_while_a_stream_is_open(tmp_path):
    from tests_support import service

    async with service(tmp_path, local_tokens_per_second=100.0) as svc, grpc.aio.insecure_channel(svc.target) as ch:
        keys = key_service_pb2_grpc.KeyServiceStub(ch)
        made = await keys.CreateKey(key_service_pb2.CreateKeyRequest(name="one", concurrency=1),
                                    metadata=svc.meta(svc.admin))
        chat = chat_service_pb2_grpc.ChatServiceStub(ch)
        call = chat.StreamChatCompletion(cs.StreamChatCompletionRequest(
            model=CHAT, messages=[user("write a long story")]), metadata=svc.meta(made.secret))
        await call.read()
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await chat.CreateChatCompletion(cs.CreateChatCompletionRequest(model=CHAT, messages=[user("echo: b")]),
                                            metadata=svc.meta(made.secret))
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(ei.value)["ErrorInfo"].reason == "CONCURRENCY_LIMIT_EXCEEDED"
        call.cancel()
        for _ in range(50):  # the slot comes back once the stream is gone
            try:
                await chat.CreateChatCompletion(cs.CreateChatCompletionRequest(
                    model=CHAT, messages=[user("echo: c")]), metadata=svc.meta(made.secret))
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the concurrency slot was never released")
