"""Gateway settings: where the gRPC service is and how the REST edge behaves."""

from __future__ import annotations

import msgspec

__all__ = ["GatewaySettings"]

MIB = 1024 * 1024


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of the REST + SSE gateway.

    Attributes:
        grpc_target: The raven.v1 gRPC service, as a grpc target string
            (``"127.0.0.1:50051"``, ``"dns:///raven:50051"`` or ``"unix:///run/raven.sock"``).
        max_body_bytes: Request bodies larger than this get 413 in the OpenAI error shape.
        keepalive_interval: Seconds between ``: RAVEN PROCESSING`` SSE comments while a stream
            waits for its next message (also the wait for the first message before HTTP headers
            are sent).
        public_base_url: The externally visible base URL (``https://api.example.com``) used to make
            file URLs absolute; ``None`` uses the scheme, host and port of each request.
        call_deadline: Seconds any one gateway->service call may take (a stream: to its end); the
            service's own ``request_timeout`` plus a margin, so the service times out first.
        access_log: Log one JSON line per HTTP request (logger ``raven.access``): request id, method,
            route template, status, latency. Never a header, a query string or a body.
    """

    grpc_target: str = "127.0.0.1:50051"
    max_body_bytes: int = 10 * MIB
    keepalive_interval: float = 10.0
    public_base_url: str | None = None
    call_deadline: float = 660.0
    access_log: bool = False
