"""Helpers shared by the test tiers (tests/ is on sys.path through the rootdir conftest)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import httpx
import openai

from raven_service.config import load_settings
from raven_service.policy.auth import create_key
from raven_service.server import Services, build_services, create_server, mark_serving


@dataclass
class Svc:
    services: Services
    port: int
    admin: str  # admin secret
    user: str  # normal key secret

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def meta(self, secret: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {secret or self.user}"),)


async def start_service(tmp_path, **overrides) -> tuple[Svc, grpc.aio.Server]:
    """A real raven_service gRPC server on 127.0.0.1:0 over a fresh SQLite store, with two keys."""
    settings = load_settings(None, {"data_dir": str(tmp_path / "data"), "local_tokens_per_second": 0.0,
                                    "usage_flush_interval": 0.01, **overrides}, environ={})
    services = await build_services(settings)
    server, port = create_server(services, "127.0.0.1:0")
    await server.start()
    await mark_serving(server)
    _, admin = await create_key(services.store, name="admin", rpm=10000, concurrency=100, admin=True)
    _, user = await create_key(services.store, name="user", rpm=10000, concurrency=100)
    return Svc(services=services, port=port, admin=admin, user=user), server


@contextlib.asynccontextmanager
async def service(tmp_path, **overrides) -> AsyncIterator[Svc]:
    s, server = await start_service(tmp_path, **overrides)
    try:
        yield s
    finally:
        await server.stop(0)
        await s.services.close()


async def usage_records(services) -> list:
    """Every usage record written so far (after flushing the ledger queue)."""
    await services.usage.flush()
    return [r async for r in services.store.export_usage()]


@dataclass
class Rest:
    svc: Svc
    http: httpx.AsyncClient  # raw access, base http://raven.test
    base: str

    def sdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base + "/v1", api_key=key or self.svc.user, max_retries=0,
                                  http_client=self.http)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.svc.user}"}


@contextlib.asynccontextmanager
async def make_rest(tmp_path, link: str = "grpc", **overrides) -> AsyncIterator[Rest]:
    """The official SDK's view: gateway app (in-process ASGI) -> the service, over a real gRPC
    channel (`link="grpc"`) or the in-process channel `raven serve` uses (`link="inprocess"`)."""
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
        transport = httpx.ASGITransport(app=app)  # same event loop as the grpc channel; no lifespan needed
        async with httpx.AsyncClient(transport=transport, base_url="http://raven.test", timeout=30) as http:
            yield Rest(svc=svc, http=http, base="http://raven.test")


def backend_missing(reason: str, env_var: str) -> None:
    """A scale-out backend is unreachable: FAIL when the environment says it is there (CI sets
    RAVEN_TEST_DATABASE_URL / RAVEN_TEST_REDIS_URL, because this machine runs both), skip with the
    reason otherwise (a bare developer machine)."""
    import os

    import pytest

    if os.environ.get(env_var):
        pytest.fail(f"{reason} although {env_var} is set", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def left_for_the_collector() -> Iterator[set[str]]:
    """Runs the block with the cycle collector off, then collects (DEBUG_SAVEALL): the set gets the
    types (``module.qualname``) of what only the collector could free. The server collects rarely
    (raven_service.server.GC_THRESHOLDS), so a request must leave nothing there. The objects
    themselves are freed before the set is read."""
    found: set[str] = set()
    gc.collect()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.update(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        gc.collect()
