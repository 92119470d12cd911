"""Key administration and usage lookups."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from raven_service.accounting.ledger import Ledger
from raven_service.core.errors import InvalidArgument, NotFound, PermissionDenied
from raven_service.core.ports import KeyStore, UsageStore
from raven_service.core.types import ApiKey, Principal, UsageRecord, UsageSummary
from raven_service.policy.auth import Authenticator, create_key


def parse_credits(value: str, param: str = "credits") -> Decimal | None:
    """'' means unlimited; otherwise a non-negative decimal."""
    if value == "":
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidArgument(f"'{param}' must be a decimal number, got '{value}'.", param=param) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidArgument(f"'{param}' must be a non-negative number.", param=param)
    return amount


def _limit(value: int | None, param: str) -> None:
    if value is not None and value < 0:
        raise InvalidArgument(f"'{param}' must be >= 0 (0 = unlimited).", param=param)


class KeyAdmin:
    def __init__(self, store: KeyStore, auth: Authenticator, *, default_rpm: int, default_concurrency: int) -> None:
        self._store = store
        self._auth = auth
        self._default_rpm = default_rpm
        self._default_concurrency = default_concurrency

    @staticmethod
    def _require_admin(principal: Principal) -> None:
        if not principal.admin:
            raise PermissionDenied("This operation needs an admin key.")

    async def create(self, principal: Principal, *, name: str, rpm: int | None, concurrency: int | None,
                     credits: str | None, admin: bool) -> tuple[ApiKey, str]:
        self._require_admin(principal)
        if not name.strip():
            raise InvalidArgument("'name' is required.", param="name")
        _limit(rpm, "rpm")
        _limit(concurrency, "concurrency")
        return await create_key(
            self._store, name=name, rpm=self._default_rpm if rpm is None else rpm,
            concurrency=self._default_concurrency if concurrency is None else concurrency,
            credits=parse_credits(credits) if credits is not None else None, admin=admin,
        )

    async def list(self, principal: Principal, include_revoked: bool) -> list[ApiKey]:
        self._require_admin(principal)
        return await self._store.list_keys(include_revoked)

    async def revoke(self, principal: Principal, key_id: str) -> ApiKey:
        self._require_admin(principal)
        key = await self._store.update_key(key_id, revoked=True)
        if key is None:
            raise NotFound(f"No key with id '{key_id}'.", param="id", code="key_not_found")
        self._auth.invalidate(key_id)
        return key

    async def update(self, principal: Principal, key_id: str, *, name: str | None, rpm: int | None,
                     concurrency: int | None, credits: str | None) -> ApiKey:
        self._require_admin(principal)
        _limit(rpm, "rpm")
        _limit(concurrency, "concurrency")
        amount = parse_credits(credits) if credits is not None else None
        key = await self._store.update_key(
            key_id, name=name, rpm=rpm, concurrency=concurrency, credits=amount,
            clear_credits=credits == "",
        )
        if key is None:
            raise NotFound(f"No key with id '{key_id}'.", param="id", code="key_not_found")
        self._auth.invalidate(key_id)
        return key


class UsageQueries:
    def __init__(self, store: UsageStore, writer: Ledger, *, flush_timeout: float = 2.0) -> None:
        self._store = store
        self._writer = writer
        self._flush_timeout = flush_timeout

    async def generation(self, principal: Principal, record_id: str) -> UsageRecord:
        if not record_id:
            raise InvalidArgument("'id' is required.", param="id", code="missing_required_parameter")
        rec = self._writer.pending(record_id) or await self._store.get_usage(record_id)
        if rec is None or (rec.key_id != principal.key_id and not principal.admin):
            raise NotFound(f"No generation with id '{record_id}'.", param="id", code="generation_not_found")
        return rec

    async def summary(self, principal: Principal, key_id: str, start: float | None,
                      end: float | None) -> tuple[str, list[UsageSummary]]:
        target = key_id or principal.key_id
        if target != principal.key_id and not principal.admin:
            raise PermissionDenied("Only admin keys may read another key's usage.")
        # What was settled before this call is counted; a flush never waits on later traffic, and a
        # store that does not take it within the timeout leaves the newest records out.
        await self._writer.flush(self._flush_timeout)
        return target, await self._store.summarize_usage(target, start, end)
