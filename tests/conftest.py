"""Shared fixtures: a real raven_service gRPC server on 127.0.0.1:0 over a fresh SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

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
    settings = load_settings(None, {"data_dir": str(tmp_path / "data"), "local_tokens_per_second": 0.0,
                                    "usage_flush_interval": 0.01, **overrides}, environ={})
    services = await build_services(settings)
    server, port = create_server(services, "127.0.0.1:0")
    await server.start()
    await mark_serving(server)
    _, admin = await create_key(services.store, name="admin", rpm=10000, concurrency=100, admin=True)
    _, user = await create_key(services.store, name="user", rpm=10000, concurrency=100)
    return Svc(services=services, port=port, admin=admin, user=user), server


@pytest.fixture
async def svc(tmp_path) -> AsyncIterator[Svc]:
    s, server = await start_service(tmp_path)
    try:
        yield s
    finally:
        await server.stop(0)
        await s.services.close()


@pytest.fixture
async def channel(svc: Svc) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(svc.target) as ch:
        yield ch
