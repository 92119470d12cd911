"""Stored Responses API responses (`store` + `previous_response_id`): per key, for 30 days.

The generation behind a response is a chat completion and goes through the chat use case (its
admission, routing, limits, usage and credits); this use case only keeps what later requests need.
Rules it holds: a response belongs to the key that stored it (any other key gets NOT_FOUND, and
cannot overwrite it); it expires `ttl` seconds after it was stored (expired ones are NOT_FOUND and
are deleted by a sweep that runs at most once per `sweep_every` seconds, on a later put); ids are
`resp_` plus letters and digits; `body` is a JSON object text and `input_items` a JSON array text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from raven_service.core.errors import InvalidArgument, NotFound, PermissionDenied
from raven_service.core.ports import ResponseStore
from raven_service.core.types import Principal, StoredResponse

__all__ = ["RESPONSE_TTL", "InputItemsPage", "ResponseUseCase"]

#: How long a stored response lives (SPEC §13: 30 days).
RESPONSE_TTL = 30 * 86400.0
_ID = re.compile(r"resp_[A-Za-z0-9]{1,64}")
_MAX_MODEL = 256
#: Input items per page: OpenAI's default and bounds for GET /v1/responses/{id}/input_items.
DEFAULT_PAGE, MAX_PAGE = 20, 100


@dataclass(frozen=True, slots=True)
class InputItemsPage:
    items: list[bytes]  # each a JSON object text, as stored
    first_id: str
    last_id: str
    has_more: bool


def _not_found(response_id: str) -> NotFound:
    shown = response_id if len(response_id) <= 80 else response_id[:80] + "..."
    return NotFound(f"Response with id '{shown}' not found.", param="response_id", code="not_found")


def _check_json(text: str, kind: type, param: str) -> None:
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        value = None
    if not isinstance(value, kind):
        what = "a JSON object" if kind is dict else "a JSON array"
        raise InvalidArgument(f"'{param}' must be {what} text.", param=param, code="invalid_value")


class ResponseUseCase:
    def __init__(self, store: ResponseStore, *, ttl: float = RESPONSE_TTL, sweep_every: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._ttl = ttl
        self._sweep_every = sweep_every
        self._clock = clock
        self._last_sweep = float("-inf")

    @staticmethod
    def _check_scope(principal: Principal) -> None:
        if not principal.inference:
            raise PermissionDenied("This key may not call models (it lacks the 'inference' scope).",
                                   code="insufficient_scope")

    async def put(self, principal: Principal, response: StoredResponse) -> StoredResponse:
        """Stores `response` for the caller (its key_id and expiry are set here)."""
        self._check_scope(principal)
        if not _ID.fullmatch(response.id):
            raise InvalidArgument("'response.id' must be 'resp_' followed by 1 to 64 letters or digits.",
                                  param="response.id", code="invalid_value")
        if not response.model or len(response.model) > _MAX_MODEL:
            raise InvalidArgument(f"'response.model' must be 1 to {_MAX_MODEL} characters.",
                                  param="response.model", code="invalid_value")
        _check_json(response.body, dict, "response.body")
        _check_json(response.input_items, list, "response.input_items")
        now = self._clock()
        created = response.created_at or now
        stored = msgspec.structs.replace(response, key_id=principal.key_id, created_at=created,
                                         expires_at=now + self._ttl)
        if not await self._store.put_response(stored):
            raise InvalidArgument("This response id is already in use.", param="response.id", code="id_in_use")
        if now - self._last_sweep >= self._sweep_every:
            self._last_sweep = now
            await self._store.delete_expired_responses(now)
        return stored

    async def get(self, principal: Principal, response_id: str) -> StoredResponse:
        """The caller's stored response; NotFound for unknown, expired and other keys' ids."""
        self._check_scope(principal)
        if not _ID.fullmatch(response_id):
            raise _not_found(response_id)
        found = await self._store.get_response(response_id, principal.key_id, self._clock())
        if found is None:
            raise _not_found(response_id)
        return found

    async def delete(self, principal: Principal, response_id: str) -> None:
        """Deletes the caller's stored response; NotFound for unknown, expired and other keys' ids."""
        self._check_scope(principal)
        if not _ID.fullmatch(response_id) or not await self._store.delete_response(
                response_id, principal.key_id, self._clock()):
            raise _not_found(response_id)

    async def input_items(self, principal: Principal, response_id: str, *, limit: int = 0, order: str = "",
                          after: str = "") -> InputItemsPage:
        """A page of the response's input items in `order` ("desc", the default, or "asc"),
        starting after the item whose id is `after`."""
        limit = limit or DEFAULT_PAGE
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"'limit' must be between 1 and {MAX_PAGE}.", param="limit", code="invalid_value")
        order = order or "desc"
        if order not in ("asc", "desc"):
            raise InvalidArgument("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
        found = await self.get(principal, response_id)
        items = msgspec.json.decode(found.input_items)  # checked to be a JSON array when it was stored
        if order == "desc":
            items.reverse()
        start = 0
        if after:
            ids = [item.get("id") if isinstance(item, dict) else None for item in items]
            if after not in ids:
                raise InvalidArgument(f"No input item with id '{after[:80]}' in this response.", param="after",
                                      code="invalid_value")
            start = ids.index(after) + 1
        page = items[start:start + limit]

        def item_id(item: object) -> str:
            value = item.get("id") if isinstance(item, dict) else None
            return value if isinstance(value, str) else ""

        return InputItemsPage(items=[msgspec.json.encode(item) for item in page],
                              first_id=item_id(page[0]) if page else "", last_id=item_id(page[-1]) if page else "",
                              has_more=start + limit < len(items))
