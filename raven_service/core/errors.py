"""The domain error family. Each transport edge translates these exactly once.

RavenError
 ├── InvalidArgument(param)          bad request: never reaches an upstream
 ├── Unauthenticated                 missing / invalid / revoked key
 ├── PermissionDenied                key may not do this (e.g. not admin)
 ├── NotFound                        unknown model, task, file, generation
 ├── RateLimited(retry_after)        RPM or concurrency limit
 ├── InsufficientCredits             credits exhausted (HTTP 402)
 ├── PayloadTooLarge                 request too big
 ├── UpstreamError(provider, status, retryable, retry_after)
 │    └── UpstreamTimeout            connect / first byte / idle timeout
 └── Unavailable                     Raven itself cannot serve (shutting down, no route)
"""

from __future__ import annotations


class RavenError(Exception):
    """Base of all domain errors. `code` is the OpenAI-style error code."""

    code: str = "internal_error"
    #: The caller's rate-limit state when the error happened (policy.ratelimit.RateInfo), so that
    #: error responses carry the same x-ratelimit-* information as successes.
    rate: object | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(RavenError):
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class Unauthenticated(RavenError):
    code = "invalid_api_key"


class PermissionDenied(RavenError):
    code = "permission_denied"


class NotFound(RavenError):
    code = "not_found"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class RateLimited(RavenError):
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class InsufficientCredits(RavenError):
    code = "insufficient_credits"


class PayloadTooLarge(RavenError):
    code = "payload_too_large"


class UpstreamError(RavenError):
    """An upstream failed. `retryable` says whether another attempt may succeed."""

    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.provider = provider
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"

    def __init__(self, message: str, *, provider: str = "", code: str | None = None) -> None:
        super().__init__(message, provider=provider, retryable=True, code=code)


class Unavailable(RavenError):
    code = "unavailable"
