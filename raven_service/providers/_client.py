"""Picks the transport for an upstream: the one place that knows the HTTP clients.

`_h1` (httptools, HTTP/1.1 keep-alive; the default, handing multipart bodies and redirects to its
aiohttp base class `_http.UpstreamClient`) and `_http2` (httpx + h2, with ``http2 = true``) each
know only themselves and the shared error mapping in `_http`; adapters call `upstream_client` and
never choose.
"""

from __future__ import annotations

from typing import Any

from raven_service.providers._h1 import H1UpstreamClient
from raven_service.providers._http import UpstreamClient
from raven_service.providers.settings import UpstreamSettings

__all__ = ["upstream_client"]


def upstream_client(provider: str, cfg: UpstreamSettings, **kwargs: Any) -> UpstreamClient:
    """A client with `cfg`'s connect / first-byte / idle timeouts: HTTP/2 when ``cfg.http2``."""
    if cfg.http2:
        from raven_service.providers._http2 import H2UpstreamClient  # lazy: httpx/h2 only when used

        return H2UpstreamClient.from_config(provider, cfg, **kwargs)
    return H1UpstreamClient.from_config(provider, cfg, **kwargs)
