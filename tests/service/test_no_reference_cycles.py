"""The server runs with rare full collections (`raven_service.server.GC_THRESHOLDS`): whatever a
request leaves in a reference cycle stays in memory until one runs, minutes apart under load. A
stream through the in-process channel `raven serve` uses did (its context held a method of its
call); these requests must be freed by reference counting alone."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from tests_support import left_for_the_collector, make_rest, service, usage_records

from raven.v1 import chat_pb2, chat_service_pb2_grpc
from raven.v1 import chat_service_pb2 as cs

pytestmark = pytest.mark.timeout(60)

CHAT = "raven/local-chat"


def _ours(kinds: set[str]) -> set[str]:
    """Our types among `kinds` (and asyncio tasks, whose coroutines hold whole requests)."""
    return {k for k in kinds
            if k.startswith(("raven_service", "gateway")) or k in ("_asyncio.Task", "builtins.coroutine")}


def _the_servers(kinds: set[str]) -> set[str]:
    """The server's types among `kinds` (grpc's own client, in this process too, keeps cycles of its own)."""
    return {k for k in kinds if k.startswith("raven_service")}


async def test_rest_requests_through_the_in_process_channel_leave_no_cycles(tmp_path):
    """Chat unary and stream, Messages and Responses (both ways), embeddings, models, and two errors."""
    async with make_rest(tmp_path, link="inprocess") as rest:
        body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

        async def round_of_requests() -> None:
            for stream in (False, True) * 5:
                async with rest.http.stream("POST", "/v1/chat/completions", json=body | {"stream": stream},
                                            headers=rest.auth()) as resp:
                    assert resp.status_code == 200
                    await resp.aread()
            for stream in (False, True):
                for path, payload in (("/v1/messages", body), ("/v1/responses", {"model": CHAT, "input": "hi"})):
                    async with rest.http.stream("POST", path, json=payload | {"stream": stream},
                                                headers=rest.auth()) as resp:
                        assert resp.status_code == 200, path
                        await resp.aread()
            embedded = await rest.http.post("/v1/embeddings", json={"model": "raven/local-embed", "input": ["a", "b"]},
                                            headers=rest.auth())
            assert embedded.status_code == 200
            assert (await rest.http.get("/v1/models", headers=rest.auth())).status_code == 200
            bad = await rest.http.post("/v1/chat/completions", json={"model": "nope", "messages": []},
                                       headers=rest.auth())
            assert bad.status_code in (400, 404)
            denied = await rest.http.post("/v1/chat/completions", json=body, headers=rest.auth("rk-wrong"))
            assert denied.status_code == 401

        await round_of_requests()  # first use: lazily built caches, compiled types
        with left_for_the_collector() as left:
            await round_of_requests()
    assert _ours(left) == set()


async def test_grpc_calls_on_the_served_port_leave_no_cycles_of_ours(tmp_path):
    """The real servicers behind the in-loop HTTP/2 server (grpc's own client, in this process too,
    keeps cycles of its own: only the server's types count here)."""
    async with service(tmp_path) as svc, grpc.aio.insecure_channel(svc.target) as channel:
        chat = chat_service_pb2_grpc.ChatServiceStub(channel)
        msgs = [chat_pb2.ChatMessage(role="user", content="hi")]

        async def round_of_calls() -> None:
            for _ in range(5):
                done = await chat.CreateChatCompletion(cs.CreateChatCompletionRequest(model=CHAT, messages=msgs),
                                                       metadata=svc.meta())
                assert done.choices
                parts = [m async for m in chat.StreamChatCompletion(
                    cs.StreamChatCompletionRequest(model=CHAT, messages=msgs), metadata=svc.meta())]
                assert parts
            with pytest.raises(grpc.aio.AioRpcError):
                await chat.CreateChatCompletion(cs.CreateChatCompletionRequest(model=CHAT, messages=msgs),
                                                metadata=svc.meta("rk-wrong"))

        await round_of_calls()
        with left_for_the_collector() as left:
            await round_of_calls()
    assert _the_servers(left) == set()


async def test_a_stream_cancelled_mid_way_on_the_in_process_channel_leaves_no_cycles(tmp_path):
    """A client gone mid-stream cancels the servicer's task. The cancelled task keeps its
    CancelledError and so the traceback's frames: none of them may hold the call (which holds the
    task). This is the service's side alone; the gateway's is in tests/gateway/test_gateway_live.py."""
    from raven_service.api.inproc import HandlerRegistry, InProcessChannel
    from raven_service.server import register_servicers

    async with service(tmp_path, local_tokens_per_second=200.0) as svc:
        registry = HandlerRegistry()
        register_servicers(svc.services, registry)
        chat = chat_service_pb2_grpc.ChatServiceStub(InProcessChannel(registry))
        req = cs.StreamChatCompletionRequest(model=CHAT, max_tokens=200,
                                             messages=[chat_pb2.ChatMessage(role="user", content="a long story")])

        async def cancelled_streams() -> None:
            for _ in range(5):
                call = chat.StreamChatCompletion(req, metadata=svc.meta())
                first = await call.read()
                assert first.id
                assert call.cancel()
                for _ in range(200):
                    if call.done():
                        break
                    await asyncio.sleep(0.005)
                assert call.done()

        await cancelled_streams()
        await asyncio.sleep(0.05)  # the cancelled requests settle
        with left_for_the_collector() as left:
            await cancelled_streams()
            await asyncio.sleep(0.05)
    assert _the_servers(left) == set()


async def test_a_grpc_stream_cancelled_by_its_client_leaves_no_cycles_of_ours(tmp_path):
    """The same on the served port: the client resets the stream, the server cancels the call's task."""
    async with service(tmp_path, local_tokens_per_second=200.0) as svc, \
            grpc.aio.insecure_channel(svc.target) as channel:
        chat = chat_service_pb2_grpc.ChatServiceStub(channel)
        req = cs.StreamChatCompletionRequest(model=CHAT, max_tokens=200,
                                             messages=[chat_pb2.ChatMessage(role="user", content="a long story")])

        async def cancelled_streams(settled: int) -> None:
            for _ in range(5):
                call = chat.StreamChatCompletion(req, metadata=svc.meta())
                assert (await call.read()).id
                call.cancel()
            for _ in range(400):  # each cancelled call settles (one usage record each)
                if len(await usage_records(svc.services)) >= settled:
                    break
                await asyncio.sleep(0.005)
            assert len(await usage_records(svc.services)) == settled

        await cancelled_streams(5)
        with left_for_the_collector() as left:
            await cancelled_streams(10)
            await asyncio.sleep(0.05)
    assert _the_servers(left) == set()
