"""The embeddings use case: validate, admit, route, account (one usage record of kind "embedding"
per request, whatever its outcome), through the same admission scope as chat."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from decimal import Decimal

from raven_service.accounting.pricing import embedding_cost
from raven_service.app.admission import Admitter, Ticket
from raven_service.core.deadline import within
from raven_service.core.errors import BROKEN, InvalidArgument, RavenError, UpstreamError, UpstreamTimeout
from raven_service.core.ports import EmbeddingProvider
from raven_service.core.tokens import count_tokens
from raven_service.core.types import EmbeddingRequest, EmbeddingResult, Principal, Route, UsageRecord
from raven_service.routing.catalogue import Catalogue
from raven_service.routing.router import RouteOnly, Router

#: OpenAI's limits: at most 2048 inputs per request, each non-empty; dimensions up to 8192 here.
MAX_INPUTS = 2048
MAX_INPUT_CHARS = 256 * 1024
MAX_DIMENSIONS = 8192
ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True, slots=True)
class EmbeddingsDone:
    id: str
    model: str
    provider: str
    result: EmbeddingResult
    cost: Decimal


def validate_embeddings(req: EmbeddingRequest, encoding_format: str | None) -> None:
    """Every bad embeddings request is a 400 naming the field; none reaches an upstream."""
    if req.texts and req.token_arrays:
        raise InvalidArgument("'input' must be text or token arrays, not both.", param="input", code="invalid_value")
    n = req.count
    if n == 0:
        raise InvalidArgument("'input' must not be empty.", param="input", code="invalid_value")
    if n > MAX_INPUTS:
        raise InvalidArgument(f"'input' accepts at most {MAX_INPUTS} items.", param="input", code="invalid_value")
    for i, text in enumerate(req.texts):
        if not text:
            raise InvalidArgument(f"'input[{i}]' must not be an empty string.", param=f"input[{i}]",
                                  code="invalid_value")
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidArgument(f"'input[{i}]' is too long (at most {MAX_INPUT_CHARS} characters).",
                                  param=f"input[{i}]", code="invalid_value")
    for i, tokens in enumerate(req.token_arrays):
        if not tokens:
            raise InvalidArgument(f"'input[{i}]' must not be an empty token array.", param=f"input[{i}]",
                                  code="invalid_value")
        if len(tokens) > MAX_INPUT_CHARS or any(t < 0 for t in tokens):
            raise InvalidArgument(f"'input[{i}]' must hold non-negative token ids.", param=f"input[{i}]",
                                  code="invalid_value")
    if req.dimensions is not None and not 1 <= req.dimensions <= MAX_DIMENSIONS:
        raise InvalidArgument(f"'dimensions' must be between 1 and {MAX_DIMENSIONS}.", param="dimensions",
                              code="invalid_value")
    if encoding_format is not None and encoding_format not in ENCODING_FORMATS:
        raise InvalidArgument("'encoding_format' must be 'float' or 'base64'.", param="encoding_format",
                              code="invalid_value")


def estimate_tokens(req: EmbeddingRequest) -> int:
    return sum(count_tokens(t) for t in req.texts) + sum(len(t) for t in req.token_arrays)


class EmbeddingsUseCase:
    """Routes over the model's ordered routes by chat's rules (routing/router.py): transient failures
    retried with backoff, then the next route; a broken route skipped; a rejected request is the
    caller's; each route's circuit breaker consulted and told; the whole within `request_timeout`."""

    def __init__(self, catalogue: Catalogue, providers: dict[str, EmbeddingProvider], admitter: Admitter,
                 router: Router, *, request_timeout: float = 600.0) -> None:
        self._catalogue = catalogue
        self._providers = providers
        self._admitter = admitter
        self._router = router
        self._request_timeout = request_timeout

    async def create(self, principal: Principal, req: EmbeddingRequest, *,
                     encoding_format: str | None = None) -> EmbeddingsDone:
        try:
            validate_embeddings(req, encoding_format)
            model = self._catalogue.resolve(req.model, "embeddings")
            routes = [r for r in model.routes if r.provider in self._providers]
            if not routes:
                raise InvalidArgument(f"The model '{req.model}' has no embeddings route.", param="model",
                                      code="model_not_supported")
            most = model.embedding_dimensions
            if req.dimensions is not None and most and req.dimensions > most:
                raise InvalidArgument(f"'dimensions' must be at most {model.embedding_dimensions} for this model.",
                                      param="dimensions", code="invalid_value")
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            raise
        estimate = estimate_tokens(req)
        gen_id = "emb-" + os.urandom(16).hex()
        attempts: list[str] = []
        served: list[Route] = []

        def record(ticket: Ticket, status: str, error: str, result: EmbeddingResult | None = None) -> UsageRecord:
            route = served[0] if served else None
            tokens = result.prompt_tokens if result is not None else (estimate if status == "cancelled" else 0)
            return UsageRecord(
                id=gen_id, key_id=principal.key_id, kind="embedding", model=model.id,
                provider=route.provider if route else "", upstream_model=route.model if route else "",
                prompt_tokens=tokens, cost=embedding_cost(model, tokens), status=status, error=error,
                usage_estimated=result.usage_estimated if result is not None else True,
                latency_ms=int((time.monotonic() - ticket.started) * 1000), created_at=ticket.created,
                attempts=tuple(attempts), tags=principal.metadata,
            )

        async with self._admitter.admitted(principal, embedding_cost(model, estimate), record_id=gen_id,
                                           fallback=record, models=(model.id,), tokens=estimate) as ticket:
            try:
                result = await self._route(routes, req, attempts, served)
            except RavenError as exc:
                exc.rate = ticket.rate
                raise
            rec = ticket.record = record(ticket, "completed", "", result)
            return EmbeddingsDone(id=gen_id, model=model.id, provider=served[0].provider, result=result,
                                  cost=rec.cost)

    async def _route(self, routes: list[Route], req: EmbeddingRequest, attempts: list[str],
                     served: list[Route]) -> EmbeddingResult:
        async def attempt(target: RouteOnly) -> EmbeddingResult:
            route = target.route
            result = await self._providers[route.provider].embed(route.model, req)
            if len(result.vectors) != req.count:  # a route that miscounts serves nobody: the next one
                raise UpstreamError(f"upstream {route.provider!r} returned {len(result.vectors)} vectors for "
                                    f"{req.count} inputs", provider=route.provider, kind=BROKEN,
                                    code="bad_response")
            return result

        try:
            async with within(self._request_timeout):
                target, result = await self._router.call([RouteOnly(r) for r in routes], attempt, attempts)
        except TimeoutError:
            raise UpstreamTimeout(f"The request did not finish within {self._request_timeout:g}s.",
                                  code="request_timeout") from None
        served.append(target.route)
        return result
