"""Every test in this folder (test_h1.py) runs on both event loops `raven serve` may use: asyncio's
and uvloop's (their transports differ: uvloop's TCP transport is no `asyncio.Transport`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
