"""The gRPC counterpart of /v1/messages/count_tokens (ChatService.CountTokens) over a real channel:
the same count the REST route gives, the key's allow-list, and bad input named."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from messages_support import live_rest

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc
from raven_service.core.types import KeyPatch
from raven_service.policy.auth import create_key

CHAT = "raven/local-chat"
WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def reason(err: grpc.aio.AioRpcError) -> str:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


async def test_count_tokens_over_grpc_matches_rest(tmp_path):
    async with live_rest(tmp_path) as rest, grpc.aio.insecure_channel(rest.svc.target) as channel:
        stub = chat_service_pb2_grpc.ChatServiceStub(channel)
        tool = chat_pb2.Tool(type="function", name=WEATHER["name"], description=WEATHER["description"])
        tool.parameters.update(WEATHER["input_schema"])
        request = chat_service_pb2.CountTokensRequest(
            model=CHAT,
            messages=[
                chat_pb2.ChatMessage(role="system", content="Be brief."),
                chat_pb2.ChatMessage(role="user", content="What is the weather in Oslo?"),
            ],
            tools=[tool],
        )
        reply = await stub.CountTokens(request, metadata=rest.svc.meta())
        counted = await rest.anthropic().messages.count_tokens(
            model=CHAT,
            system="Be brief.",
            tools=[WEATHER],
            messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        )
        assert reply.model == CHAT and reply.input_tokens == counted.input_tokens > 0

        _, embed_only = await create_key(
            rest.svc.services.store,
            name="embed",
            rpm=100,
            concurrency=10,
            patch=KeyPatch(models=("raven/local-embed",)),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CountTokens(request, metadata=rest.svc.meta(embed_only))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and reason(err.value) == "MODEL_NOT_ALLOWED"

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CountTokens(chat_service_pb2.CountTokensRequest(model=CHAT), metadata=rest.svc.meta())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "messages" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CountTokens(request, metadata=rest.svc.meta("rk-not-a-key-0000000000000000000000"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
