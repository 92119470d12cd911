"""Auth first (SPEC §10): a missing, invalid, expired or revoked key is a 401 before the body counts.

The gateway does not authenticate by itself (keys live in the service), and asking the service on
every request would add a round trip to the hot path. So the `/v1` routes' ``before_request`` hook
decodes the body itself: when it is fine, the request goes on as usual (the decoded body is handed
to `StrictJSON`, so it is decoded once) and the service authenticates the real call first. Only when
the body is bad (malformed, wrong types, too deep, too large) does the hook ask the service whether
the key is good, with the cheapest authenticated call there is (ListModels for a capability no model
has): a bad key then answers 401 (or the failed-authentication 429), a good one gets the body's 400.
"""

from __future__ import annotations

from typing import Any

import grpc
from litestar import Request
from litestar.exceptions import HTTPException

from gateway.backend import DEADLINE, backend_of, call_metadata
from gateway.body import PARSED_BODY_STATE_KEY, parse_body
from gateway.errors import ApiError
from raven.v1 import model_service_pb2

__all__ = ["auth_first"]

#: A capability no model has: the probe's answer is empty, its cost one authentication.
_PROBE = model_service_pb2.ListModelsRequest(capability="-auth-probe-")
#: gRPC codes whose answer to the probe wins over the body's error.
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED,
               grpc.StatusCode.PERMISSION_DENIED)


async def _probe(request: Request[Any, Any, Any]) -> None:
    """Raises the service's 401 / 429 when the request's key is not good; returns otherwise."""
    try:
        backend = backend_of(request)
        await backend.models.ListModels(_PROBE, metadata=call_metadata(request), timeout=DEADLINE[0])
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _AUTH_CODES:
            raise ApiError.from_rpc_error(exc) from None
    except ApiError:
        pass  # no channel: the body's error stands


def _has_credential(request: Request[Any, Any, Any]) -> bool:
    headers = request.headers
    return bool(headers.get("authorization") or headers.get("x-api-key"))


async def auth_first(request: Request[Any, Any, Any]) -> None:
    """The ``before_request`` hook of the `/v1` router (see the module docstring)."""
    if not _has_credential(request):
        # No credential at all: the service's 401 comes first (one probe, only for callers that
        # could not have succeeded anyway), never a 400 about the query or the body. A present
        # but wrong key on a bodyless route whose query is malformed gets the query's 400: the
        # query's rules are public (openapi.json), and probing every GET would double its calls.
        await _probe(request)
    dto = request.route_handler.resolve_data_dto()
    model_type = getattr(dto, "model_type", None) if dto is not None else None
    if model_type is None:
        return
    try:
        raw = await request.body()
        request.scope["state"][PARSED_BODY_STATE_KEY] = parse_body(raw, model_type)
    except (ApiError, HTTPException):
        await _probe(request)
        raise
