"""Shared fixtures: a real raven_service gRPC server on 127.0.0.1:0 over a fresh SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from tests_support import Rest, Svc, make_rest, service


@pytest.fixture
async def svc(tmp_path) -> AsyncIterator[Svc]:
    async with service(tmp_path) as s:
        yield s


@pytest.fixture
async def channel(svc: Svc) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(svc.target) as ch:
        yield ch


@pytest.fixture(params=["grpc", "inprocess"])
async def rest(tmp_path, request) -> AsyncIterator[Rest]:
    """The REST surface over both gateway links: a real gRPC channel and the in-process one."""
    async with make_rest(tmp_path, link=request.param) as r:
        yield r
