"""The service tier runs against both gRPC servers: the in-loop one (the default, api/h2grpc.py) and
grpc.aio's (`grpc_server = "grpcio"`), so the contract holds whichever one an operator picks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests_support import Svc, service


@pytest.fixture(params=["h2", "grpcio"])
async def svc(tmp_path, request) -> AsyncIterator[Svc]:
    async with service(tmp_path, grpc_server=request.param) as s:
        yield s
