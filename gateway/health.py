"""``/healthz``: the gateway is ready when the service's gRPC health check says SERVING."""

from __future__ import annotations

from typing import Literal

import grpc
import msgspec
from grpc_health.v1 import health_pb2
from litestar import get
from litestar.datastructures import State
from litestar.response import Response

from gateway.backend import Backend

__all__ = ["HealthStatus", "healthz"]

_CHECK_TIMEOUT = 2.0
_OVERALL = health_pb2.HealthCheckRequest(service="")


class HealthStatus(msgspec.Struct):
    """Liveness + readiness."""

    status: Literal["ok", "unavailable"]


@get("/healthz", operation_id="GetHealth", tags=["operations"])
async def healthz(state: State) -> Response[HealthStatus]:
    """200 ``{"status": "ok"}`` when the gRPC service reports SERVING, else 503."""
    backend: Backend | None = getattr(state, "backend", None)
    serving = False
    if backend is not None:
        try:
            reply = await backend.health.Check(_OVERALL, timeout=_CHECK_TIMEOUT)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
    if serving:
        return Response(HealthStatus(status="ok"))
    return Response(HealthStatus(status="unavailable"), status_code=503)
