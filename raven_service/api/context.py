"""Per-call helpers: authentication from metadata and metadata output."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from raven_service.api.errors import abort, rate_metadata
from raven_service.api.observe import note_principal
from raven_service.core.errors import RavenError
from raven_service.core.types import Principal
from raven_service.policy.auth import Authenticator

#: Metadata the co-located REST gateway sets to the HTTP client's address. Trusted only on the
#: in-process channel and the private unix socket (`TRUSTED_PEERS`); on the public gRPC port the
#: caller's own address (`context.peer()`) is used, whatever the metadata says.
CLIENT_ADDR_KEY = "x-raven-client-addr"
TRUSTED_PEERS = ("inprocess", "unix:")


def _peer_host(peer: str) -> str:
    """The address part of a grpc peer string: "ipv4:1.2.3.4:5" -> "1.2.3.4", "ipv6:[::1]:5" -> "::1"."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] or rest
        return host.strip("[]")
    return peer


def client_address(context: grpc.aio.ServicerContext, metadata) -> str:
    """The caller's address for the failed-authentication limit (see CLIENT_ADDR_KEY)."""
    try:
        peer = context.peer() or ""
    except Exception:  # a context without a peer (tests): treat as local
        peer = "inprocess"
    if peer.startswith(TRUSTED_PEERS):
        for key, value in metadata:
            if key == CLIENT_ADDR_KEY and value:
                return value
        return peer
    return _peer_host(peer)


def _authorization(metadata) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            return value
    return None


async def authenticate(auth: Authenticator, context: grpc.aio.ServicerContext) -> Principal:
    """The caller's principal, or an UNAUTHENTICATED (RESOURCE_EXHAUSTED past the failed-auth
    limit) abort."""
    metadata = context.invocation_metadata() or ()
    try:
        principal = await auth.authenticate(_authorization(metadata), client_address(context, metadata))
    except RavenError as exc:
        await abort(context, exc)
        raise AssertionError("unreachable") from exc
    note_principal(principal)  # the key id of this call's span and access-log line (api/observe.py)
    return principal


async def send_rate(context: grpc.aio.ServicerContext, rate, extra: tuple[tuple[str, str], ...] = ()) -> None:
    await context.send_initial_metadata(rate_metadata(rate) + extra)


def set_rate_trailer(context: grpc.aio.ServicerContext, rate, extra: tuple[tuple[str, str], ...] = ()) -> None:
    """Unary calls: the same metadata as trailers, which ride on the status frame (no extra write)."""
    context.set_trailing_metadata(rate_metadata(rate) + extra)


class _Edge(Protocol):
    _auth: Authenticator
    _admitter: Any  # app.admission.Admitter (peek / attach_rate)


S = TypeVar("S", bound=_Edge)
R = TypeVar("R")


def unary_call(
    method: Callable[[S, Any, grpc.aio.ServicerContext, Principal], Awaitable[R]],
) -> Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    """The edge of every unary RPC, once: authenticate the caller, run `method(self, request,
    context, principal)`, and answer with the caller's x-ratelimit-* trailers, whether it
    succeeded or failed (a RavenError becomes the rich status via `abort`, with the rate state
    attached). The servicer holds `_auth` and `_admitter`."""

    @functools.wraps(method)
    async def call(self: S, request: Any, context: grpc.aio.ServicerContext) -> R:
        principal = await authenticate(self._auth, context)
        try:
            response = await method(self, request, context, principal)
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            await abort(context, exc)
            raise
        set_rate_trailer(context, await self._admitter.peek(principal))
        return response

    return call
