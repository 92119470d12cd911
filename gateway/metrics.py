"""Prometheus metrics and the per-request middleware (request id, request counter, latency).

Labels are the route *template* (``/v1/models/{model_id:path}``), the method and the status: never
a key, a model id or anything else a client controls.
"""

from __future__ import annotations

import json
import logging
import os
import time
from time import perf_counter
from typing import Any, Final

from litestar import get
from litestar.datastructures import State
from litestar.response import Response
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from gateway.backend import REQUEST_ID_STATE_KEY, safe_request_id

__all__ = ["GatewayMetrics", "metrics_endpoint"]

_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: One JSON object per line; the service's lines for the same request share its request id.
_ACCESS_LOG: Final = logging.getLogger("raven.access")


class GatewayMetrics:
    """The gateway's metrics, in a registry of their own (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, exposition: CollectorRegistry | None = None,
                 access_log: bool = False) -> None:
        """Create the metrics in ``registry`` (a new one by default, with process metrics);
        `/metrics` serves ``exposition`` (default: ``registry``)."""
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = registry
        self.exposition = exposition or registry
        self.access_log = access_log
        self.requests = Counter(
            "raven_gateway_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "raven_gateway_request_duration_seconds",
            "Time from request to the end of the response (whole stream for SSE).",
            ("route", "method"),
            buckets=_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware factory: sets the request id (header in and out) and records metrics."""

        async def observe_request(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request_id = safe_request_id(_header(scope["headers"], b"x-request-id"))
            scope["state"][REQUEST_ID_STATE_KEY] = request_id
            id_header = (b"x-request-id", request_id.encode("ascii"))
            status = 500
            start = perf_counter()

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = message.get("headers")
                    if isinstance(headers, list):
                        headers.append(id_header)
                    else:
                        message["headers"] = [*(headers or ()), id_header]
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                # Litestar types scope["type"] as a ScopeType enum literal: `!= "http"` does not narrow.
                method = scope["method"] if scope["method"] in _METHODS else "OTHER"  # type: ignore[typeddict-item]
                route = scope.get("path_template") or "unmatched"
                elapsed = perf_counter() - start
                self.observe(route, method, status, elapsed)
                if self.access_log:
                    _ACCESS_LOG.info(json.dumps({
                        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "log": "http",
                        "request_id": request_id, "method": method, "route": route, "status": status,
                        "latency_ms": round(elapsed * 1000, 3), "pid": os.getpid(),
                    }, separators=(",", ":")))

        return observe_request


def _header(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


@get("/metrics", operation_id="GetMetrics", tags=["operations"], sync_to_thread=False, media_type="text/plain")
def metrics_endpoint(state: State) -> Response[bytes]:
    """Prometheus metrics in the text exposition format."""
    metrics: GatewayMetrics = state.metrics
    return Response(generate_latest(metrics.exposition), headers={"content-type": CONTENT_TYPE_LATEST})
