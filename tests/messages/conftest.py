"""``rest`` here is the gateway on a real loopback socket (the anthropic SDK opens its own client)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from messages_support import LiveRest, live_rest


@pytest.fixture(params=["grpc", "inprocess"])
async def rest(tmp_path, request) -> AsyncIterator[LiveRest]:
    """The REST surface over both gateway links: a real gRPC channel and the in-process one."""
    async with live_rest(tmp_path, link=request.param) as r:
        yield r
