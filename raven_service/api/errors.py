"""Domain errors -> google.rpc.Status with ErrorInfo / BadRequest / RetryInfo / QuotaFailure.

The one place where RavenError becomes a gRPC status. The gateway maps the status to HTTP.
"""

from __future__ import annotations

import logging
import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from raven_service.core import errors as e

log = logging.getLogger("raven.api")

DOMAIN = "raven"

# RavenError class -> gRPC code (first match in MRO order wins).
_CODES: list[tuple[type[e.RavenError], int]] = [
    (e.InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (e.Unauthenticated, code_pb2.UNAUTHENTICATED),
    (e.PermissionDenied, code_pb2.PERMISSION_DENIED),
    (e.NotFound, code_pb2.NOT_FOUND),
    (e.RateLimited, code_pb2.RESOURCE_EXHAUSTED),
    (e.InsufficientCredits, code_pb2.RESOURCE_EXHAUSTED),
    (e.PayloadTooLarge, code_pb2.INVALID_ARGUMENT),  # reason PAYLOAD_TOO_LARGE: HTTP 413
    (e.UpstreamTimeout, code_pb2.DEADLINE_EXCEEDED),
    (e.UpstreamError, code_pb2.UNAVAILABLE),
    (e.Unavailable, code_pb2.UNAVAILABLE),
]



def _pack(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def rate_metadata(rate) -> tuple[tuple[str, str], ...]:
    """x-ratelimit-* metadata from a RateInfo (see policy.ratelimit)."""
    if rate is None:
        return ()
    meta: tuple[tuple[str, str], ...] = (
        ("x-ratelimit-limit-requests", str(rate.limit)),
        ("x-ratelimit-remaining-requests", str(rate.remaining)),
        ("x-ratelimit-reset-requests", f"{math.ceil(rate.reset_after)}s"),
    )
    tokens = getattr(rate, "tokens", None)  # app.admission.Rate of a key with a TPM limit
    if tokens is not None and tokens.limit > 0:
        meta += (
            ("x-ratelimit-limit-tokens", str(tokens.limit)),
            ("x-ratelimit-remaining-tokens", str(tokens.remaining)),
            ("x-ratelimit-reset-tokens", f"{math.ceil(tokens.reset_after)}s"),
        )
    return meta


def to_status(exc: BaseException) -> status_pb2.Status:
    if not isinstance(exc, e.RavenError):
        log.error("unexpected error", exc_info=exc)
        return status_pb2.Status(code=code_pb2.INTERNAL, message="Internal error.", details=[
            _pack(error_details_pb2.ErrorInfo(reason="INTERNAL_ERROR", domain=DOMAIN))])
    code = next(c for cls, c in _CODES if isinstance(exc, cls)) if type(exc) is not e.RavenError else code_pb2.INTERNAL
    if isinstance(exc, e.UpstreamError):
        # The adapter's classification is the only thing acted on: a rejected request is the caller's
        # 4xx; a broken route or a transient failure stays UNAVAILABLE (502) / DEADLINE_EXCEEDED (504).
        # exc.message is already the client-facing text; the detail goes to the log only.
        if exc.kind == e.REJECTED:
            code = code_pb2.INVALID_ARGUMENT
        log.warning("upstream %s failure (%s): %s", exc.kind, exc.provider or "-", exc.detail)
    info = error_details_pb2.ErrorInfo(reason=exc.code.upper(), domain=DOMAIN)
    if isinstance(exc, e.UpstreamError) and exc.provider:
        info.metadata["provider"] = exc.provider
    details = [_pack(info)]
    param = getattr(exc, "param", None)
    if isinstance(exc, e.InvalidArgument):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=param or "", description=exc.message)])))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        secs = max(0.0, float(retry_after))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(secs), nanos=int((secs - int(secs)) * 1e9)))))
    if isinstance(exc, e.RateLimited):
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject="api_key", description=exc.message)])))
    return status_pb2.Status(code=code, message=exc.message, details=details)


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Aborts the RPC with the rich status of `exc` and the rate-limit metadata it carries."""
    meta = rate_metadata(getattr(exc, "rate", None))
    if isinstance(exc, e.BudgetExhausted):
        meta += (("x-ratelimit-reset-credits", f"{math.ceil(exc.resets_in)}s"),)
    status = to_status(exc)
    grpc_status = rpc_status.to_status(status)
    await context.abort(grpc_status.code, grpc_status.details, tuple(grpc_status.trailing_metadata) + meta)
