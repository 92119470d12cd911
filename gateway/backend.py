"""The gateway's only link to the service: one grpc.aio channel, its stubs, per-call metadata."""

from __future__ import annotations

import os
from typing import Any, Final, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc
from litestar import Request

from gateway.config import GatewaySettings
from gateway.errors import ApiError, forwarded_headers
from raven.v1 import (
    chat_service_pb2_grpc,
    embeddings_service_pb2_grpc,
    file_service_pb2_grpc,
    image_service_pb2_grpc,
    key_service_pb2_grpc,
    model_service_pb2_grpc,
    response_service_pb2_grpc,
    usage_service_pb2_grpc,
    video_service_pb2_grpc,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "DEADLINE",
    "Backend",
    "backend_of",
    "call_metadata",
    "request_id",
    "settings_of",
    "unary",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")

#: Channel options: no message size cap (image payloads exceed gRPC's 4 MiB default; the REST body
#: limit bounds what we send). No client keepalive pings: the server's default ping policy would
#: answer pings during long silent streams with GOAWAY.
CHANNEL_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)

#: The HTTP client's address, for the service's failed-authentication limit (trusted by the
#: service only on the in-process channel and its private unix socket).
CLIENT_ADDR_KEY: Final = "x-raven-client-addr"

#: Seconds any one gateway->service call may take (set from GatewaySettings.call_deadline by the
#: app; a module value because every route shares it and it is read on the hot path).
DEADLINE: list[float] = [660.0]

#: Where the request-id middleware stores the id in ``scope["state"]``.
REQUEST_ID_STATE_KEY: Final = "raven_request_id"
_MAX_METADATA_VALUE = 4096


class Backend:
    """The channel and one stub per raven.v1 service, created once."""

    __slots__ = ("channel", "chat", "embeddings", "files", "health", "images", "keys", "models", "responses", "usage",
                 "videos")

    def __init__(self, channel: grpc.aio.Channel) -> None:
        """Create the stubs on ``channel``."""
        self.channel = channel
        self.chat = chat_service_pb2_grpc.ChatServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)
        self.images = image_service_pb2_grpc.ImageServiceStub(channel)
        self.embeddings = embeddings_service_pb2_grpc.EmbeddingsServiceStub(channel)
        self.videos = video_service_pb2_grpc.VideoServiceStub(channel)
        self.files = file_service_pb2_grpc.FileServiceStub(channel)
        self.usage = usage_service_pb2_grpc.UsageServiceStub(channel)
        self.keys = key_service_pb2_grpc.KeyServiceStub(channel)
        self.responses = response_service_pb2_grpc.ResponseServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    @classmethod
    def connect(cls, target: str) -> Backend:
        """Open an insecure channel to ``target`` (must run inside the serving event loop)."""
        return cls(grpc.aio.insecure_channel(target, options=list(CHANNEL_OPTIONS)))


def backend_of(request: Request[Any, Any, Any]) -> Backend:
    """The app's Backend (503 while no channel is open).

    Routes call this rather than declaring DI dependencies: Litestar resolves several dependencies
    through an anyio task group per request, measured here at about a third of a unary call's
    gateway overhead.
    """
    backend: Backend | None = request.app.state.backend
    if backend is None:
        raise ApiError(503, "The service is not connected.", code="service_unavailable")
    return backend


def settings_of(request: Request[Any, Any, Any]) -> GatewaySettings:
    """The app's settings."""
    settings: GatewaySettings = request.app.state.settings
    return settings


async def unary(
    method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
    message: Req,
    metadata: tuple[tuple[str, str], ...],
) -> tuple[Resp, dict[str, str]]:
    """Make a unary call; return the reply and the HTTP headers taken from its metadata.

    Raises:
        grpc.aio.AioRpcError: the call failed (the app's exception handler maps it).
    """
    call = method(message, metadata=metadata, timeout=DEADLINE[0])
    reply = await call
    return reply, forwarded_headers(await call.initial_metadata(), await call.trailing_metadata())


def _metadata_safe(value: str) -> bool:
    """Whether ``value`` is a legal gRPC metadata value (printable ASCII, bounded)."""
    return len(value) <= _MAX_METADATA_VALUE and value.isascii() and value.isprintable()


def request_id(scope_state: dict[str, Any]) -> str:
    """The request id chosen by the middleware (or a fresh one)."""
    rid: str | None = scope_state.get(REQUEST_ID_STATE_KEY)
    return rid or os.urandom(16).hex()


def call_metadata(request: Request[Any, Any, Any]) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for a call made on behalf of ``request``.

    The ``Authorization`` header is forwarded verbatim as ``authorization`` (without one, an
    ``x-api-key`` header, as Anthropic clients send it, becomes ``Bearer <key>``); a missing or illegal one
    (non-ASCII, control characters) is left out, so the service answers UNAUTHENTICATED with the
    same body as for a wrong key. ``x-request-id`` and ``x-raven-client-addr`` (the HTTP peer's
    address) are always sent.
    """
    rid = request_id(request.scope["state"])
    client = request.scope.get("client")
    address = client[0] if client else ""
    authorization = request.headers.get("authorization")
    if not authorization and (api_key := request.headers.get("x-api-key")):
        authorization = "Bearer " + api_key  # Anthropic clients' header (ANTHROPIC_API_KEY)
    if authorization and _metadata_safe(authorization):
        return (("authorization", authorization), ("x-request-id", rid), (CLIENT_ADDR_KEY, address))
    return (("x-request-id", rid), (CLIENT_ADDR_KEY, address))


def safe_request_id(raw: bytes | None) -> str:
    """The client's ``x-request-id`` when it is a legal metadata value, else 32 new random hex digits."""
    if raw and len(raw) <= 200:
        value = raw.decode("latin-1")
        if _metadata_safe(value):
            return value
    return os.urandom(16).hex()
