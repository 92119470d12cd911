"""The settings an upstream adapter reads: the providers' own small type.

Adapters depend on `raven_service.core` and on this module only, never on the service's
configuration (`raven_service.config`): the composition root hands each adapter an object with
these attributes (the parsed ``[providers.NAME]`` table satisfies it structurally).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class UpstreamSettings(Protocol):
    """Where an upstream is and how to talk to it."""

    @property
    def kind(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    #: Name of the environment variable holding the upstream API key (read at call time, never logged).
    @property
    def api_key_env(self) -> str: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def first_byte_timeout(self) -> float: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    #: HTTP/2 (httpx + h2) for this upstream; HTTP/1.1 keep-alive (httptools, `_h1`) otherwise.
    @property
    def http2(self) -> bool: ...
