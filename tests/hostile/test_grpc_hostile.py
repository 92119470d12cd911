"""Hostile input on the gRPC port (SPEC §10): a real channel to the real service."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tests_support import service

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

CHAT = "raven/local-chat"


@pytest.fixture(params=["h2", "grpcio"])
def grpc_server(request) -> str:
    """Both gRPC servers (the in-loop default and grpc.aio's) answer hostile input the same way."""
    return request.param


@pytest.fixture
async def svc(tmp_path, grpc_server):
    async with service(tmp_path, grpc_server=grpc_server) as s:
        yield s


def _request(**fields) -> chat_service_pb2.CreateChatCompletionRequest:
    base = {"model": CHAT, "messages": [chat_pb2.ChatMessage(role="user", content="hi")]}
    base.update(fields)
    return chat_service_pb2.CreateChatCompletionRequest(**base)


def _details(error: grpc.aio.AioRpcError):
    status = rpc_status.from_call(error)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    found_info = found_bad = False
    for d in status.details if status else ():
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            found_info = d.Unpack(info)
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            found_bad = d.Unpack(bad)
    return (info if found_info else None), (bad if found_bad else None)


async def _fails(stub_call, request, meta) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await stub_call(request, metadata=meta)
    return ei.value


def _with_deep_tool(request, levels: int):
    """Adds a tool whose parameters nest `levels` objects deep (built in place: copying a message
    this deep would already fail in protobuf's own decoder)."""
    value: dict = {"type": "string"}
    for _ in range(levels):
        value = {"type": "object", "properties": {"a": value}}
    tool = request.tools.add(name="f")
    tool.parameters.update(value)
    return request


@pytest.mark.parametrize("levels", [40, 70])
async def test_deep_struct_is_invalid_argument(svc, channel, levels):
    stub = chat_service_pb2_grpc.ChatServiceStub(channel)
    err = await _fails(stub.CreateChatCompletion, _with_deep_tool(_request(), levels), svc.meta())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


async def test_deep_struct_in_a_stream_is_invalid_argument(svc, channel):
    stub = chat_service_pb2_grpc.ChatServiceStub(channel)
    request = _with_deep_tool(
        chat_service_pb2.StreamChatCompletionRequest(
            model=CHAT, messages=[chat_pb2.ChatMessage(role="user", content="hi")]
        ),
        50,
    )
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        async for _ in stub.StreamChatCompletion(request, metadata=svc.meta()):
            pass
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_message_is_invalid_argument_payload_too_large(tmp_path, grpc_server):
    async with (
        service(tmp_path, max_body_bytes=1024 * 1024, grpc_server=grpc_server) as svc,
        grpc.aio.insecure_channel(svc.target, options=[("grpc.max_send_message_length", -1)]) as ch,
    ):
        stub = chat_service_pb2_grpc.ChatServiceStub(ch)
        big = _request(messages=[chat_pb2.ChatMessage(role="user", content="x" * (1536 * 1024))])
        err = await _fails(stub.CreateChatCompletion, big, svc.meta())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        info, _ = _details(err)
        assert info is not None and info.reason == "PAYLOAD_TOO_LARGE"
        ok = await stub.CreateChatCompletion(_request(), metadata=svc.meta())
        assert ok.choices


SCHEMA_CASES = [
    ({"type": "array", "minItems": 200_000}, "minItems"),
    ({"type": "string", "pattern": "a{100000000}"}, "repeat"),
    ({"type": "string", "pattern": "b" * 1001}, "pattern"),
]


@pytest.mark.parametrize(("schema", "words"), SCHEMA_CASES)
async def test_schema_limits_over_grpc(svc, channel, schema, words):
    stub = chat_service_pb2_grpc.ChatServiceStub(channel)
    tool = chat_pb2.Tool(name="f")
    tool.parameters.update({"type": "object", "properties": {"v": schema}})
    err = await _fails(stub.CreateChatCompletion, _request(tools=[tool]), svc.meta())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.details()
    _, bad = _details(err)
    assert bad is not None and bad.field_violations[0].field == "tools[0].function.parameters"


async def test_message_and_tool_counts_over_grpc(svc, channel):
    stub = chat_service_pb2_grpc.ChatServiceStub(channel)
    many = [chat_pb2.ChatMessage(role="user", content="x")] * 10_001
    err = await _fails(stub.CreateChatCompletion, _request(messages=many), svc.meta())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(err)[1].field_violations[0].field == "messages"
    tools = [chat_pb2.Tool(name=f"f{i}") for i in range(513)]
    err = await _fails(stub.CreateChatCompletion, _request(tools=tools), svc.meta())
    assert _details(err)[1].field_violations[0].field == "tools"


async def test_failed_auth_limit_uses_the_peer_not_the_metadata(svc, channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = model_service_pb2.ListModelsRequest()
    for i in range(60):
        # a client cannot escape the limit by claiming another address on the public port
        meta = (("authorization", f"Bearer rk-guess-{i}"), ("x-raven-client-addr", f"10.0.0.{i}"))
        err = await _fails(stub.ListModels, request, meta)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await _fails(stub.ListModels, request, (("authorization", "Bearer rk-guess-x"),))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = _details(err)
    assert info is not None and info.reason == "TOO_MANY_AUTH_FAILURES"


def test_input_images_over_40_megapixels_are_refused_before_decoding():
    import io
    import time

    from PIL import Image

    from raven_service.app.validation import validate_input_image
    from raven_service.core.errors import InvalidArgument

    buf = io.BytesIO()
    Image.new("1", (13_000, 13_000)).save(buf, "PNG")  # 169 Mpx, a few hundred KB compressed
    start = time.perf_counter()
    with pytest.raises(InvalidArgument, match="at most 40,000,000"):
        validate_input_image(buf.getvalue())
    assert time.perf_counter() - start < 0.5  # header only, never decoded
    with pytest.raises(InvalidArgument, match="not a readable"):
        validate_input_image(b"not an image")
    small = io.BytesIO()
    Image.new("RGB", (64, 32)).save(small, "PNG")
    assert validate_input_image(small.getvalue()) == (64, 32)


async def test_video_submit_with_a_decompression_bomb_is_refused_before_any_task(svc, channel):
    import base64
    import io

    from PIL import Image
    from tests_support import usage_records

    from raven.v1 import video_service_pb2, video_service_pb2_grpc

    buf = io.BytesIO()
    Image.new("1", (13_000, 13_000)).save(buf, "PNG")  # 169 Mpx in a few hundred KB
    stub = video_service_pb2_grpc.VideoServiceStub(channel)
    request = video_service_pb2.CreateVideoGenerationRequest(
        model="raven/local-video",
        prompt="a bomb",
        image="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
    )
    err = await _fails(stub.CreateVideoGeneration, request, svc.meta())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad = _details(err)
    assert bad is not None and bad.field_violations[0].field == "image"
    assert "40,000,000" in err.details()
    listed = await stub.ListVideoGenerations(video_service_pb2.ListVideoGenerationsRequest(), metadata=svc.meta())
    assert list(listed.video_generations) == []  # no task was created, nothing was held
    assert await usage_records(svc.services) == []
    assert svc.services.admitter.admitted_count == 0
