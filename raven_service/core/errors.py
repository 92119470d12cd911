"""The domain error family. Each transport edge translates these exactly once.

RavenError
 ├── InvalidArgument(param)          bad request: never reaches an upstream
 ├── Unauthenticated                 missing / invalid / revoked key
 ├── PermissionDenied                key may not do this (e.g. not admin)
 ├── NotFound                        unknown model, task, file, generation
 ├── RateLimited(retry_after)        RPM or concurrency limit
 ├── InsufficientCredits             credits exhausted (HTTP 402)
 │    └── BudgetExhausted(resets_in)  the key's day/week/month budget is spent (HTTP 402)
 ├── PayloadTooLarge                 request too big
 ├── UpstreamError(provider, status, kind, retryable, retry_after)
 │    └── UpstreamTimeout            connect / first byte / idle timeout
 └── Unavailable                     Raven itself cannot serve (shutting down, no route)
      └── StoreUnavailable           Raven's own store or limiter is unreachable (503 + Retry-After)
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


class BudgetExhausted(InsufficientCredits):
    """The key's budget window is spent; `resets_in` seconds until the next window starts."""

    code = "budget_exhausted"

    def __init__(self, message: str, *, resets_in: float) -> None:
        super().__init__(message)
        self.resets_in = resets_in


class PayloadTooLarge(RavenError):
    code = "payload_too_large"


#: How an upstream failure is classified, by the adapter that saw it (providers/_http.py):
#:   "rejected"  the upstream refused this request itself (its 400/413/422): the caller's 4xx,
#:               never retried, no other route tried;
#:   "broken"    this route cannot serve anyone (our upstream key refused or unset, the upstream
#:               model missing, a malformed reply): not retried on this route, the next route is tried;
#:   "transient" connect error, timeout, 429, 5xx: retried with backoff, then the next route.
REJECTED, BROKEN, TRANSIENT = "rejected", "broken", "transient"
UPSTREAM_KINDS = (REJECTED, BROKEN, TRANSIENT)
#: Upstream HTTP statuses that mean "this request is wrong" (when not retryable).
REJECTED_STATUSES = frozenset({400, 413, 415, 422})

#: Client-facing texts per class: they name the class of failure, never a host, port, env var or
#: upstream excerpt (those stay in `detail`, for the log and the usage record).
PUBLIC_MESSAGES = {
    REJECTED: "The upstream rejected the request.",
    BROKEN: "The route to the upstream is misconfigured or unusable; try another model or contact the operator.",
    TRANSIENT: "The upstream could not be reached or is temporarily unavailable. Please retry.",
}


class UpstreamError(RavenError):
    """An upstream failed. `kind` (rejected / broken / transient) is the one classification the
    router and the gRPC edge act on; `retryable` is kept equal to ``kind == "transient"`` at
    construction (a stream that already emitted may clear it later).

    `message` is the client-facing text (see PUBLIC_MESSAGES, or `public` when the adapter passes
    a safe, short upstream reason for a rejected request); `detail` and ``str(exc)`` are the
    internal description for logs and usage records."""

    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        kind: str | None = None,
        public: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        if kind is None:
            kind = TRANSIENT if retryable else REJECTED if status in REJECTED_STATUSES else BROKEN
        elif kind not in UPSTREAM_KINDS:
            raise ValueError(f"unknown upstream error kind {kind!r}")
        self.kind = kind
        self.detail = message
        self.message = public or self.public_default()
        self.provider = provider
        self.status = status
        self.retryable = (kind == TRANSIENT) if retryable is None else retryable
        self.retry_after = retry_after

    def public_default(self) -> str:
        return PUBLIC_MESSAGES[self.kind]


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"

    def __init__(self, message: str, *, provider: str = "", code: str | None = None) -> None:
        super().__init__(message, provider=provider, retryable=True, code=code, kind=TRANSIENT,
                         public="The upstream did not answer in time. Please retry.")


class Unavailable(RavenError):
    code = "unavailable"


class StoreUnavailable(Unavailable):
    """Raven's own state (database, Redis) cannot be reached: the caller's 503, never an upstream's 502.

    The message is generic on purpose: hosts, ports and driver errors go to the log only."""

    code = "raven_unavailable"

    def __init__(self, message: str = "Raven is temporarily unavailable. Please retry.", *,
                 retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
