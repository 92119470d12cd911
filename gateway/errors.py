"""The one place where errors become HTTP: gRPC status -> HTTP status + OpenAI error body.

Every error the gateway answers has the body ``{"error": {"message", "type", "code", "param"}}``
with all four keys present. Sources, each translated exactly once here:

- ``grpc.aio.AioRpcError`` from the service: the code picks the HTTP status (``HTTP_STATUS_BY_CODE``),
  the ``google.rpc.Status`` details refine it: ``ErrorInfo.reason`` is the OpenAI ``code`` (lower
  case) and may override the status (``HTTP_STATUS_BY_REASON``), ``BadRequest`` gives ``param``,
  ``RetryInfo`` gives ``Retry-After``. ``x-ratelimit-*`` / ``x-raven-*`` metadata become headers.
- ``ApiError`` raised by the gateway itself (malformed JSON, wrong JSON types).
- Litestar's own exceptions (404 unknown route, 405, 413 body too large, query validation).
- Anything else: a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import msgspec
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from litestar.types import ExceptionHandlersMap

from gateway.encoding import encode

__all__ = [
    "EXCEPTION_HANDLERS",
    "HTTP_STATUS_BY_CODE",
    "HTTP_STATUS_BY_REASON",
    "ApiError",
    "ErrorDetail",
    "ErrorResponse",
    "as_api_error",
    "error_type_for",
    "forwarded_headers",
    "status_error_code",
]

logger = logging.getLogger("raven.gateway")

#: gRPC status code -> HTTP status (google/rpc/code.proto, plus 502 for upstream failures).
HTTP_STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 502,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

#: ``ErrorInfo.reason`` values that override the status chosen by the gRPC code.
HTTP_STATUS_BY_REASON: dict[str, int] = {
    "INSUFFICIENT_CREDITS": 402,
    "BUDGET_EXHAUSTED": 402,
    "PAYLOAD_TOO_LARGE": 413,
    "RAVEN_UNAVAILABLE": 503,  # Raven's own store or limiter is down: not an upstream's 502
}

#: OpenAI error ``type`` by HTTP status; other 4xx are invalid_request_error, 5xx api_error.
_TYPE_BY_STATUS: dict[int, str] = {
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    429: "rate_limit_error",
}

#: ``code`` when the service sent no ErrorInfo.
_DEFAULT_CODE: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAUTHENTICATED: "invalid_api_key",
    grpc.StatusCode.PERMISSION_DENIED: "permission_denied",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limit_exceeded",
    grpc.StatusCode.UNAVAILABLE: "service_unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.UNIMPLEMENTED: "not_implemented",
}

#: Messages used for server-side failures whose text must not reach clients.
_GENERIC_MESSAGE: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "The service is temporarily unavailable. Please retry.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The request timed out.",
    grpc.StatusCode.UNIMPLEMENTED: "This operation is not supported.",
    grpc.StatusCode.CANCELLED: "The request was cancelled.",
}
_INTERNAL_MESSAGE = "The server had an error while processing your request."

#: Metadata key prefixes copied from gRPC metadata to HTTP response headers.
FORWARDED_PREFIXES = ("x-ratelimit-", "x-raven-")


class ErrorDetail(msgspec.Struct):
    """The ``error`` object of an OpenAI error body."""

    message: str
    type: str
    code: str | None
    param: str | None


class ErrorResponse(msgspec.Struct):
    """An OpenAI error body: ``{"error": {"message", "type", "code", "param"}}``."""

    error: ErrorDetail


def error_type_for(status_code: int) -> str:
    """The OpenAI error ``type`` for an HTTP status."""
    if status_code >= 500:
        return "api_error"
    return _TYPE_BY_STATUS.get(status_code, "invalid_request_error")


def forwarded_headers(*metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """HTTP headers from the ``x-ratelimit-*`` / ``x-raven-*`` entries of gRPC metadata."""
    headers: dict[str, str] = {}
    for entries in metadata:
        if not entries:
            continue
        for key, value in entries:
            if key.startswith(FORWARDED_PREFIXES) and isinstance(value, str):
                headers[key] = value
    return headers


class ApiError(Exception):
    """An error answered in OpenAI shape. Raised by routes, built from gRPC errors here."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Create the error.

        Args:
            status_code: The HTTP status.
            message: Human-readable text (never internals).
            code: The OpenAI error code (snake_case) or None.
            param: The request field at fault or None.
            headers: Extra response headers (Retry-After, rate-limit headers).
        """
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def type(self) -> str:
        """The OpenAI error ``type``."""
        return error_type_for(self.status_code)

    def detail(self) -> ErrorDetail:
        """The ``error`` object."""
        return ErrorDetail(message=self.message, type=self.type, code=self.code, param=self.param)

    def to_response(self) -> Response[bytes]:
        """The HTTP response (its body the encoded ErrorResponse)."""
        return Response(
            content=encode(ErrorResponse(error=self.detail())),
            status_code=self.status_code,
            headers=self.headers,
            media_type="application/json",
        )

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> ApiError:
        """Translate a failed gRPC call (status, rich details, metadata)."""
        code = exc.code()
        status = _rich_status(exc)
        info = bad_request = retry = None
        if status is not None:
            info, bad_request, retry = _unpack_details(status)
        reason = info.reason if info is not None else ""
        http_status = HTTP_STATUS_BY_REASON.get(reason) or HTTP_STATUS_BY_CODE.get(code, 500)
        if status is None and code == grpc.StatusCode.UNAVAILABLE:
            http_status = 503  # the gRPC library's own UNAVAILABLE: the service itself is unreachable
        headers = forwarded_headers(exc.initial_metadata(), exc.trailing_metadata())
        delay = _retry_after(retry)
        if delay is None and http_status in (429, 503):
            delay = 1
        if delay is not None:
            headers["retry-after"] = str(delay)
        param = None
        if bad_request is not None and bad_request.field_violations:
            param = bad_request.field_violations[0].field or None
        return cls(
            http_status,
            _client_message(code, http_status, exc.details(), rich=status is not None),
            code=reason.lower() if reason else _DEFAULT_CODE.get(code, _fallback_code(http_status)),
            param=param,
            headers=headers,
        )


def status_error_code(status: status_pb2.Status) -> str | None:
    """The OpenAI-style code of a ``google.rpc.Status`` held in a resource (e.g. a failed task).

    ``ErrorInfo.reason`` in lower case when present, else the canonical code name
    (``"deadline_exceeded"``), None for OK.
    """
    info, _, _ = _unpack_details(status)
    if info is not None and info.reason:
        return info.reason.lower()
    if status.code == 0:
        return None
    try:
        return code_pb2.Code.Name(status.code).lower()
    except ValueError:
        return "unknown"


def _fallback_code(http_status: int) -> str | None:
    return "internal_error" if http_status >= 500 else None


def _rich_status(exc: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` of the call, or None when the service sent none."""
    try:
        return rpc_status.from_call(exc)
    except (ValueError, TypeError):
        return None


def _unpack_details(
    status: status_pb2.Status,
) -> tuple[error_details_pb2.ErrorInfo | None, error_details_pb2.BadRequest | None, error_details_pb2.RetryInfo | None]:
    """The ErrorInfo, BadRequest and RetryInfo details (first of each), if present."""
    info = bad_request = retry = None
    for detail in status.details:
        if info is None and detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif bad_request is None and detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
        elif retry is None and detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    return info, bad_request, retry


def _retry_after(retry: error_details_pb2.RetryInfo | None) -> int | None:
    """Whole seconds to wait (rounded up, at least 1) from a RetryInfo."""
    if retry is None or not retry.HasField("retry_delay"):
        return None
    seconds = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return max(1, math.ceil(seconds))


def _client_message(code: grpc.StatusCode, http_status: int, details: str | None, *, rich: bool) -> str:
    """The message shown to the client: the service's own text unless it could leak internals.

    Client errors carry the service's message. Server errors carry it only when the service sent a
    rich status (its deliberate answer); errors raised by the gRPC library itself (connection
    refused, ...) and 500s get a generic message.
    """
    if http_status < 500 and http_status != 499 and details:
        return details
    if http_status == 500:
        return _INTERNAL_MESSAGE
    if rich and details:
        return details
    return _GENERIC_MESSAGE.get(code, _INTERNAL_MESSAGE)


# --------------------------------------------------------------------------- Litestar handlers

_QUOTED = re.compile(r"'([^']+)'")


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> ApiError:
    """A Litestar validation failure (path/query parameters) as a 400."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else {}
    param = first.get("key")
    if param is None and (match := _QUOTED.search(exc.detail or "")):
        param = match.group(1)
    if param == "data":  # the body itself: only an empty body gets this far (see gateway.body)
        return ApiError(400, "The request body is empty; a JSON object is required.", code="invalid_json")
    detail = exc.detail or "Invalid request."
    if detail.startswith("Missing required"):
        return ApiError(400, detail, code="missing_required_parameter", param=param)
    if text := str(first.get("message") or ""):
        text = text[0].lower() + text[1:]
        detail = f"Invalid value for '{param}': {text}." if param else text
    return ApiError(400, detail, code="invalid_value", param=param)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> ApiError:
    """Litestar HTTP exceptions (routing, body size, validation) in OpenAI shape."""
    if isinstance(exc, ValidationException):
        return _validation_error(request, exc)
    if isinstance(exc, NotFoundException):
        return ApiError(404, f"Invalid URL ({request.method} {request.url.path})", code="unknown_url")
    if isinstance(exc, MethodNotAllowedException):
        return ApiError(405, f"Method {request.method} is not allowed on {request.url.path}", code="method_not_allowed",
                        headers=exc.headers)  # carries Allow (RFC 9110)
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        return ApiError(413, "The request body is too large.", code="payload_too_large")
    if exc.status_code >= 500:
        return ApiError(exc.status_code, _INTERNAL_MESSAGE, code="internal_error")
    return ApiError(exc.status_code, exc.detail or "Invalid request.", headers=exc.headers)


def handle_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    """Exception handler for ApiError."""
    return exc.to_response()


def handle_rpc_error(request: Request[Any, Any, Any], exc: grpc.aio.AioRpcError) -> Response[bytes]:
    """Exception handler for a gRPC call that failed (the service's answer or a transport failure)."""
    error = ApiError.from_rpc_error(exc)
    if error.status_code >= 500 and exc.code() != grpc.StatusCode.UNAVAILABLE:
        logger.warning("gRPC call failed on %s: %s", request.url.path, exc.code().name)
    return error.to_response()


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Exception handler for Litestar's HTTP exceptions."""
    return _http_error(request, exc).to_response()


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Exception handler of last resort: a generic 500 (the traceback goes to the log only)."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApiError(500, _INTERNAL_MESSAGE, code="internal_error").to_response()


def as_api_error(request: Request[Any, Any, Any], exc: Exception) -> ApiError:
    """Any exception a route raised, as the ApiError the handlers above would answer (for routes
    that render errors in another dialect's shape, e.g. Anthropic's in gateway.messages)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        error = ApiError.from_rpc_error(exc)
        if error.status_code >= 500 and exc.code() != grpc.StatusCode.UNAVAILABLE:
            logger.warning("gRPC call failed on %s: %s", request.url.path, exc.code().name)
        return error
    if isinstance(exc, HTTPException):
        return _http_error(request, exc)
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApiError(500, _INTERNAL_MESSAGE, code="internal_error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ApiError: handle_api_error,
    grpc.aio.AioRpcError: handle_rpc_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
