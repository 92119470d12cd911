"""Key administration. Usage lookups live in app.usage."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from raven_service.core.errors import InvalidArgument, NotFound, PermissionDenied
from raven_service.core.ports import KeyStore
from raven_service.core.types import ApiKey, Principal
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
