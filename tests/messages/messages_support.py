"""The gateway served with uvicorn on a real loopback socket, for the official `anthropic` SDK.

The SDK (1.17+) runs on httpx2 and refuses an ``httpx`` client, so it cannot be pointed at the
in-process ASGI transport: it opens its own connection to ``base`` like any user. ``http`` is a
plain httpx client on the same socket (raw requests) and ``sdk()`` the OpenAI SDK on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anthropic
import grpc
import httpx
import uvicorn
from tests_support import Rest, service


@dataclass
class LiveRest(Rest):
    clients: list[anthropic.AsyncAnthropic] = field(default_factory=list)

    def anthropic(self, key: str | None = None, **kw) -> anthropic.AsyncAnthropic:
        """The official SDK on Raven (``auth_token=`` in ``kw`` sends Bearer instead of x-api-key)."""
        if "auth_token" not in kw:
            kw["api_key"] = key or self.svc.user
        client = anthropic.AsyncAnthropic(base_url=self.base, max_retries=0, timeout=30, **kw)
        self.clients.append(client)
        return client


@contextlib.asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:<ephemeral> in this event loop; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@contextlib.asynccontextmanager
async def live_rest(tmp_path, link: str = "grpc", **overrides) -> AsyncIterator[LiveRest]:
    """The service, the gateway on a real socket in front of it over a real gRPC channel
    (``link="grpc"``) or the in-process channel `raven serve` uses (``link="inprocess"``)."""
    from gateway.app import create_app
    from gateway.config import GatewaySettings
    from raven_service.api.inproc import HandlerRegistry, InProcessChannel
    from raven_service.server import register_servicers

    async with service(tmp_path, **overrides) as svc, grpc.aio.insecure_channel(svc.target) as grpc_channel:
        channel = grpc_channel
        if link == "inprocess":
            registry = HandlerRegistry()
            register_servicers(svc.services, registry)
            channel = InProcessChannel(registry)
        app = create_app(GatewaySettings(grpc_target=svc.target, max_body_bytes=1024 * 1024), channel=channel)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            live = LiveRest(svc=svc, http=http, base=base)
            try:
                yield live
            finally:
                for client in live.clients:
                    await client.close()
