"""Per-call helpers: authentication from metadata and metadata output."""

from __future__ import annotations

import grpc

from raven_service.api.errors import abort, rate_metadata
from raven_service.core.errors import RavenError
from raven_service.core.types import Principal
from raven_service.policy.auth import Authenticator


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value
    return None


async def authenticate(auth: Authenticator, context: grpc.aio.ServicerContext) -> Principal:
    """The caller's principal, or an UNAUTHENTICATED abort."""
    try:
        return await auth.authenticate(_authorization(context))
    except RavenError as exc:
        await abort(context, exc)
        raise AssertionError("unreachable") from exc


async def send_rate(context: grpc.aio.ServicerContext, rate, extra: tuple[tuple[str, str], ...] = ()) -> None:
    await context.send_initial_metadata(rate_metadata(rate) + extra)


def set_rate_trailer(context: grpc.aio.ServicerContext, rate, extra: tuple[tuple[str, str], ...] = ()) -> None:
    """Unary calls: the same metadata as trailers, which ride on the status frame (no extra write)."""
    context.set_trailing_metadata(rate_metadata(rate) + extra)
