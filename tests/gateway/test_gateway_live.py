"""Socket-level streaming behaviour on a real uvicorn server (in-process transports buffer).

Keepalive comments before and between chunks, and a client disconnect cancelling the gRPC call.
Times are short and bounds generous: nothing here measures performance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from gateway_fakes import RATE_METADATA, FakeService, abort, chunk, text_stream
from litestar import Litestar
from tests_support import left_for_the_collector

from gateway import GatewaySettings, create_app

KEEPALIVE = 0.2
BODY = {"model": "raven/local-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
AUTH = {"Authorization": "Bearer rk-test"}



@pytest.fixture
def channel(both_channels: grpc.aio.Channel) -> grpc.aio.Channel:
    """Every test here runs over a real gRPC channel and over the in-process one."""
    return both_channels

@pytest.fixture
def app(channel: grpc.aio.Channel) -> Litestar:
    return create_app(GatewaySettings(keepalive_interval=KEEPALIVE), channel=channel)


@pytest.mark.timeout(30)
async def test_keepalive_comments_before_and_between_chunks(
    app: Litestar, fake: FakeService, live_gateway: Any
) -> None:
    async def slow(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.send_initial_metadata(RATE_METADATA)
        await asyncio.sleep(5 * KEEPALIVE)
        messages = text_stream("slow", " reply")
        yield messages[0]
        await asyncio.sleep(3 * KEEPALIVE)
        for message in messages[1:]:
            yield message

    fake.chat.stream = slow
    async with (
        live_gateway(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json=BODY, headers=AUTH) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        # Headers went out at the first keepalive, long before the first chunk; the rate-limit
        # metadata the service sent up front is in them.
        assert response.headers["x-ratelimit-limit-requests"] == "60"
        lines = [line async for line in response.aiter_lines()]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    before = [line for line in lines[:first_data] if line]
    assert len(before) >= 2
    assert set(before) == {": RAVEN PROCESSING"}
    between = [line for line in lines[first_data + 1 :] if line.startswith(":")]
    assert between and set(between) == {": RAVEN PROCESSING"}
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "slow reply"


@pytest.mark.timeout(30)
async def test_fast_first_chunk_sends_no_comment(channel: grpc.aio.Channel, live_gateway: Any) -> None:
    patient = create_app(GatewaySettings(keepalive_interval=10.0), channel=channel)
    async with live_gateway(patient) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post("/v1/chat/completions", json=BODY, headers=AUTH)
    assert response.status_code == 200
    assert ": RAVEN PROCESSING" not in response.text
    assert response.text.endswith("data: [DONE]\n\n")


async def _endless(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    yield chunk(role="assistant", content="")
    while True:
        yield chunk(content="tok")
        await asyncio.sleep(0.01)


async def _stream_until(base: str, events: int) -> tuple[bytes, asyncio.StreamWriter]:
    """A chat stream over a raw socket, read until `events` data events came; what came and the writer."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(BODY).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer rk-test\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )
    await writer.drain()
    received = b""
    while received.count(b"data: ") < events:
        received += await asyncio.wait_for(reader.read(4096), timeout=5)
    return received, writer


@pytest.mark.timeout(30)
async def test_client_disconnect_cancels_grpc_call(app: Litestar, fake: FakeService, live_gateway: Any) -> None:
    fake.chat.stream = _endless
    async with live_gateway(app) as base:
        received, writer = await _stream_until(base, 3)
        assert received.startswith(b"HTTP/1.1 200")
        assert not fake.chat.cancelled.is_set()
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(fake.chat.cancelled.wait(), timeout=3)


@pytest.mark.timeout(30)
async def test_a_disconnected_stream_leaves_no_cycles_of_the_gateway(app: Litestar, fake: FakeService,
                                                                    live_gateway: Any) -> None:
    """The server collects rarely (raven_service.server.GC_THRESHOLDS), so a client gone mid-stream
    must not leave the request in a reference cycle: Litestar's streaming response did (anyio's
    task group keeps the CancelledError in a frame of its traceback), holding the stream's objects."""
    fake.chat.stream = _endless
    async with live_gateway(app) as base:

        async def abandoned() -> None:
            fake.chat.cancelled.clear()
            _, writer = await _stream_until(base, 2)
            writer.close()
            await writer.wait_closed()
            await asyncio.wait_for(fake.chat.cancelled.wait(), timeout=3)
            await asyncio.sleep(0.05)  # the response's own unwinding

        await abandoned()
        with left_for_the_collector() as left:
            for _ in range(3):
                await abandoned()
    assert {k for k in left if k.startswith("gateway")} == set()


@pytest.mark.timeout(30)
async def test_error_before_headers_with_slow_start_is_http_status(
    app: Litestar, fake: FakeService, live_gateway: Any
) -> None:
    async def refuses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await asyncio.sleep(KEEPALIVE / 4)
        await abort(
            context, grpc.StatusCode.RESOURCE_EXHAUSTED, "Slow down.", reason="RATE_LIMIT_EXCEEDED", retry_after=1
        )
        yield chunk()  # pragma: no cover

    fake.chat.stream = refuses
    async with live_gateway(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post("/v1/chat/completions", json=BODY, headers=AUTH)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
