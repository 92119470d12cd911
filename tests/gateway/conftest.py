"""Fixtures: a fake gRPC service on loopback, the gateway on a real channel to it, and clients.

``client`` is the official OpenAI SDK and ``http`` a plain httpx client, both driving the app
in-process through ``httpx.ASGITransport`` (which buffers whole responses: fine for correctness).
``live_gateway`` serves the app with uvicorn on 127.0.0.1 for tests that need real socket timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import httpx
import openai
import pytest
import uvicorn
from gateway_fakes import FakeService, start_fake_service
from litestar import Litestar

from gateway import GatewaySettings, create_app

BASE = "http://testserver"
AUTH = {"Authorization": "Bearer rk-test"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeService]:
    """The scripted fake service."""
    service = await start_fake_service()
    try:
        yield service
    finally:
        await service.server.stop(None)


@pytest.fixture
async def channel(fake: FakeService) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the fake."""
    chan = grpc.aio.insecure_channel(fake.target)
    try:
        yield chan
    finally:
        await chan.close()


def inprocess_channel(fake: FakeService) -> grpc.aio.Channel:
    """The in-process channel `raven serve` gives its gateway, dispatching to the same fakes (its
    stream calls hand their queue to the gateway's reader instead of being pumped)."""
    from gateway_fakes import add_fakes

    from raven.v1 import embeddings_service_pb2_grpc, key_service_pb2_grpc, response_service_pb2_grpc
    from raven_service.api.inproc import HandlerRegistry, InProcessChannel

    registry = HandlerRegistry()
    add_fakes(fake, registry)
    # services the fakes do not script: the generated base classes (UNIMPLEMENTED)
    embeddings_service_pb2_grpc.add_EmbeddingsServiceServicer_to_server(
        embeddings_service_pb2_grpc.EmbeddingsServiceServicer(), registry)
    key_service_pb2_grpc.add_KeyServiceServicer_to_server(key_service_pb2_grpc.KeyServiceServicer(), registry)
    response_service_pb2_grpc.add_ResponseServiceServicer_to_server(
        response_service_pb2_grpc.ResponseServiceServicer(), registry)
    return InProcessChannel(registry)  # type: ignore[return-value]


@pytest.fixture(params=["grpc", "inprocess"])
async def both_channels(request: pytest.FixtureRequest, fake: FakeService) -> AsyncIterator[grpc.aio.Channel]:
    """A real channel to the fake, then the in-process one (for the streaming tests)."""
    if request.param == "inprocess":
        yield inprocess_channel(fake)
        return
    chan = grpc.aio.insecure_channel(fake.target)
    try:
        yield chan
    finally:
        await chan.close()


@pytest.fixture
def settings() -> GatewaySettings:
    """Gateway settings (tests may override this fixture)."""
    return GatewaySettings(keepalive_interval=5.0)


@pytest.fixture
def app(settings: GatewaySettings, channel: grpc.aio.Channel) -> Litestar:
    """The gateway on the injected channel."""
    return create_app(settings, channel=channel)


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the app (authenticated by default)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, headers=AUTH) as c:
        yield c


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI SDK against the app."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http_client:
        sdk = openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key="rk-test", max_retries=0, http_client=http_client)
        yield sdk


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:<ephemeral>; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture
def live_gateway() -> Callable[[Litestar], object]:
    """``async with live_gateway(app) as base_url: ...`` serves the app on loopback."""
    return serve
