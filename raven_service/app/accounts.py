"""Key administration and governance (SPEC §11). Usage lookups live in app.usage."""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import msgspec

from raven_service.core.errors import InvalidArgument, NotFound
from raven_service.core.ports import CreditStore, KeyStore
from raven_service.core.types import (
    BUDGET_PERIODS,
    SCOPES,
    ApiKey,
    KeyPatch,
    Principal,
)
from raven_service.policy.auth import Authenticator, create_key, hash_secret, new_secret
from raven_service.policy.governance import (
    DEFAULT_GRACE,
    budget_window,
    check_admin,
    parse_amount,
    parse_duration,
    parse_time,
    validate_patterns,
    validate_thresholds,
)


def parse_credits(value: str, param: str = "credits") -> Decimal | None:
    """'' means unlimited; otherwise a non-negative decimal."""
    if value == "":
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidArgument(f"'{param}' must be a decimal number, got '{value[:40]}'.", param=param,
                              code="invalid_value") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidArgument(f"'{param}' must be a non-negative number.", param=param, code="invalid_value")
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"'{param}' is above the largest storable amount ({MAX_AMOUNT}).", param=param,
                              code="invalid_value")
    return amount


#: The largest credit or budget amount both stores hold exactly.
MAX_AMOUNT = Decimal("9000000")
#: The largest rpm / concurrency / tpm (far beyond any real limit; fits the proto int32).
MAX_COUNT = 1_000_000_000
MAX_PAGE = 100
MAX_TAGS = 50
_TAG_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_LOOPBACK_HOSTS = ("localhost",)


def _limit(value: int | None, param: str) -> None:
    if value is not None and not 0 <= value <= MAX_COUNT:
        raise InvalidArgument(f"'{param}' must be between 0 and {MAX_COUNT} (0 = unlimited).", param=param,
                              code="invalid_value")


class KeySpec(msgspec.Struct, kw_only=True):
    """What a create or update asks for, as the transports received it (strings unparsed, so the
    rules and their 400s live here). UNSET = not given (update: unchanged); None = clear."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    rpm: int | msgspec.UnsetType = msgspec.UNSET
    concurrency: int | msgspec.UnsetType = msgspec.UNSET
    tpm: int | msgspec.UnsetType = msgspec.UNSET
    credits: str | msgspec.UnsetType = msgspec.UNSET  # "" = unlimited
    budget: tuple[str, str] | msgspec.UnsetType | None = msgspec.UNSET  # (amount, period)
    models: list[str] | msgspec.UnsetType = msgspec.UNSET
    expires_at: str | msgspec.UnsetType = msgspec.UNSET  # RFC 3339; "" = never
    expires_in: str | msgspec.UnsetType = msgspec.UNSET  # duration from now
    scopes: list[str] | msgspec.UnsetType = msgspec.UNSET
    admin: bool = False  # shortcut for scopes admin + inference (create)
    metadata: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    alert_webhook: str | msgspec.UnsetType = msgspec.UNSET  # "" = none
    alert_thresholds: list[int] | msgspec.UnsetType = msgspec.UNSET


@dataclass(frozen=True, slots=True)
class KeyView:
    """A key with its credit and budget status (what GET /v1/key and the admin routes show)."""

    key: ApiKey
    budget_used: Decimal = Decimal(0)
    budget_resets_at: float | None = None

    @property
    def credits_remaining(self) -> Decimal | None:
        if self.key.credits is None:
            return None
        return max(Decimal(0), self.key.credits - self.key.credits_used)

    @property
    def budget_remaining(self) -> Decimal | None:
        if self.key.budget is None:
            return None
        return max(Decimal(0), self.key.budget - self.budget_used)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    view: KeyView
    secret: str
    webhook_secret: str


def _not_found(key_id: str) -> NotFound:
    return NotFound(f"No key with id '{key_id[:80]}'.", param="id", code="key_not_found")


class KeyAdmin:
    """Key administration and the key rules' validation (SPEC §11). The CLI uses it too, with a
    local admin principal, so both paths accept exactly the same values."""

    def __init__(self, store: KeyStore, auth: Authenticator | None, *, default_rpm: int, default_concurrency: int,
                 credits: CreditStore | None = None, models: Callable[[], Iterable[str]] = tuple,
                 allow_http_webhooks: bool = False, wall: Callable[[], float] = time.time) -> None:
        self._store = store
        self._auth = auth
        self._default_rpm = default_rpm
        self._default_concurrency = default_concurrency
        self._credits = credits
        self._models = models  # the catalogue's slugs (model patterns must match one)
        self._allow_http = allow_http_webhooks
        self._wall = wall

    @staticmethod
    def _require_admin(principal: Principal) -> None:
        check_admin(principal)

    def _invalidate(self, key_id: str) -> None:
        if self._auth is not None:
            self._auth.invalidate(key_id)

    # ------------------------------------------------------------------------------- queries
    async def view(self, key: ApiKey) -> KeyView:
        if key.budget is None or not key.budget_period or self._credits is None:
            return KeyView(key=key)
        start, end = budget_window(key.budget_period, self._wall())
        used, _ = await self._credits.budget_usage(key.id, start)
        return KeyView(key=key, budget_used=used, budget_resets_at=end)

    async def me(self, principal: Principal) -> KeyView:
        key = await self._store.get_key(principal.key_id)
        if key is None:
            raise _not_found(principal.key_id)
        return await self.view(key)

    async def get(self, principal: Principal, key_id: str) -> KeyView:
        """Admins see any key; other keys only themselves (another id is NOT_FOUND, never 403, so
        ids cannot be probed)."""
        if not principal.admin and key_id != principal.key_id:
            raise _not_found(key_id)
        key = await self._store.get_key(key_id)
        if key is None:
            raise _not_found(key_id)
        return await self.view(key)

    async def list(self, principal: Principal, include_revoked: bool, limit: int = 0,
                   after: str = "") -> tuple[list[KeyView], bool, str]:
        """A page of keys in creation order: (views, has_more, next cursor). limit 0 = all."""
        self._require_admin(principal)
        if not 0 <= limit <= MAX_PAGE:
            raise InvalidArgument(f"'limit' must be between 1 and {MAX_PAGE}.", param="limit", code="invalid_value")
        if after and await self._store.get_key(after) is None:
            raise InvalidArgument("'after' is not a cursor of this list.", param="after", code="invalid_value")
        keys = await self._store.list_keys(include_revoked, limit=limit + 1 if limit else None,
                                           after=after or None)
        has_more = bool(limit) and len(keys) > limit
        keys = keys[:limit] if limit else keys
        views = [await self.view(k) for k in keys]
        return views, has_more, keys[-1].id if has_more and keys else ""

    # ------------------------------------------------------------------------------- changes
    async def create(self, principal: Principal, spec: KeySpec) -> CreatedKey:
        self._require_admin(principal)
        if spec.name is msgspec.UNSET or not spec.name.strip() or len(spec.name) > 200:
            raise InvalidArgument("'name' is required (1 to 200 characters).", param="name",
                                  code="missing_required_parameter" if spec.name is msgspec.UNSET else "invalid_value")
        rpm = self._default_rpm if spec.rpm is msgspec.UNSET else spec.rpm
        concurrency = self._default_concurrency if spec.concurrency is msgspec.UNSET else spec.concurrency
        _limit(rpm, "rpm")
        _limit(concurrency, "concurrency")
        credits = parse_credits(spec.credits) if spec.credits is not msgspec.UNSET else None
        patch = self._patch(spec, creating=True)
        scopes = patch.scopes if patch.scopes is not msgspec.UNSET else (
            ("admin", "inference") if spec.admin else ("inference",))
        key, secret = await create_key(self._store, name=spec.name.strip(), rpm=rpm, concurrency=concurrency,
                                       credits=credits, scopes=scopes, patch=patch)
        if self._auth is not None:
            self._auth.forget_failure(secret)
        return CreatedKey(view=await self.view(key), secret=secret, webhook_secret=key.webhook_secret)

    async def revoke(self, principal: Principal, key_id: str) -> ApiKey:
        self._require_admin(principal)
        key = await self._store.update_key(key_id, revoked=True)
        if key is None:
            raise _not_found(key_id)
        self._invalidate(key_id)
        return key

    async def update(self, principal: Principal, key_id: str, spec: KeySpec) -> KeyView:
        self._require_admin(principal)
        name = None
        if spec.name is not msgspec.UNSET:
            if not spec.name.strip() or len(spec.name) > 200:
                raise InvalidArgument("'name' must be 1 to 200 characters.", param="name", code="invalid_value")
            name = spec.name.strip()
        rpm = None if spec.rpm is msgspec.UNSET else spec.rpm
        concurrency = None if spec.concurrency is msgspec.UNSET else spec.concurrency
        _limit(rpm, "rpm")
        _limit(concurrency, "concurrency")
        credits = spec.credits if spec.credits is not msgspec.UNSET else None
        amount = parse_credits(credits) if credits is not None else None
        patch = self._patch(spec, creating=False)
        key = await self._store.update_key(
            key_id, name=name, rpm=rpm, concurrency=concurrency, credits=amount,
            clear_credits=credits == "", patch=patch,
        )
        if key is None:
            raise _not_found(key_id)
        self._invalidate(key_id)
        return await self.view(key)

    async def rotate(self, principal: Principal, key_id: str, grace_seconds: float | None = None,
                     grace: str = "") -> tuple[KeyView, str]:
        """A new secret; the old one keeps working for the grace period (default 24 h)."""
        self._require_admin(principal)
        if grace and grace_seconds is not None:
            raise InvalidArgument("Give either 'grace' or 'grace_seconds', not both.", param="grace",
                                  code="invalid_value")
        seconds = DEFAULT_GRACE if grace_seconds is None else grace_seconds
        if grace:
            seconds = parse_duration(grace, "grace")
        if not math.isfinite(seconds) or not 0 <= seconds <= 365 * 86400:
            raise InvalidArgument("'grace_seconds' must be between 0 and 31536000 (one year).",
                                  param="grace_seconds", code="invalid_value")
        secret = new_secret()
        key = await self._store.rotate_key(key_id, hash_secret(secret), secret[:7], self._wall() + seconds)
        if key is None:
            raise _not_found(key_id)
        self._invalidate(key_id)
        if self._auth is not None:
            self._auth.forget_failure(secret)
        return await self.view(key), secret

    # ------------------------------------------------------------------------------- rules
    def _patch(self, spec: KeySpec, *, creating: bool) -> KeyPatch:
        """Validates the governance fields of a create/update (400 naming the field)."""
        fields: dict[str, Any] = {}
        if spec.tpm is not msgspec.UNSET:
            _limit(spec.tpm, "tpm")
            fields["tpm"] = spec.tpm
        if spec.budget is None:
            fields["budget"], fields["budget_period"] = None, ""
        elif spec.budget is not msgspec.UNSET:
            amount, period = spec.budget
            if period not in BUDGET_PERIODS:
                raise InvalidArgument("'budget.period' must be day, week or month.", param="budget.period",
                                      code="invalid_value")
            fields["budget"] = parse_amount(amount, "budget.amount")
            fields["budget_period"] = period
        if spec.models is not msgspec.UNSET:
            fields["models"] = validate_patterns(spec.models, self._models())
        if (expiry := self._expiry(spec)) is not msgspec.UNSET:
            fields["expires_at"] = expiry
        if spec.scopes is not msgspec.UNSET:
            scopes = sorted(set(spec.scopes))
            bad = [s for s in scopes if s not in SCOPES]
            if bad or not scopes:
                raise InvalidArgument("'scopes' must list 'inference' and/or 'admin'.", param="scopes",
                                      code="invalid_value")
            if spec.admin and "admin" not in scopes:
                raise InvalidArgument("'admin' contradicts 'scopes' without 'admin'.", param="scopes",
                                      code="invalid_value")
            fields["scopes"] = tuple(scopes)
        elif spec.admin and not creating:
            fields["scopes"] = ("admin", "inference")
        if spec.metadata is not msgspec.UNSET:
            fields["metadata"] = _tags(spec.metadata)
        if spec.alert_webhook is not msgspec.UNSET:
            fields["alert_webhook"] = self._webhook(spec.alert_webhook)
        if spec.alert_thresholds is not msgspec.UNSET:
            fields["alert_thresholds"] = validate_thresholds(spec.alert_thresholds)
        return KeyPatch(**fields)

    def _expiry(self, spec: KeySpec) -> float | msgspec.UnsetType | None:
        if spec.expires_at is not msgspec.UNSET and spec.expires_in is not msgspec.UNSET:
            raise InvalidArgument("Give either 'expires_at' or 'expires_in', not both.", param="expires_in",
                                  code="invalid_value")
        if spec.expires_at is not msgspec.UNSET:
            if spec.expires_at == "":
                return None
            return self._future(parse_time(spec.expires_at, "expires_at"), "expires_at")
        if spec.expires_in is not msgspec.UNSET:
            return self._future(self._wall() + parse_duration(spec.expires_in, "expires_in"), "expires_in")
        return msgspec.UNSET

    def _future(self, ts: float, param: str) -> float:
        if ts <= self._wall():
            raise InvalidArgument(f"'{param}' must be in the future.", param=param, code="invalid_value")
        if ts > self._wall() + 100 * 365 * 86400:
            raise InvalidArgument(f"'{param}' is too far in the future.", param=param, code="invalid_value")
        return ts

    def _webhook(self, url: str) -> str:
        """'' (none), an https URL, or (with alert_webhook_allow_http) a loopback http:// URL."""
        if url == "":
            return ""
        bad = InvalidArgument("'alert_webhook' must be an https:// URL" + (
            " (or a loopback http:// URL)" if self._allow_http else "") + ".", param="alert_webhook",
            code="invalid_value")
        if len(url) > 2000 or any(c.isspace() for c in url):
            raise bad
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            parts.port  # noqa: B018 (raises on a malformed port)
        except ValueError:
            raise bad from None
        if not host or parts.username or parts.password:
            raise bad
        if parts.scheme == "https":
            return url
        if parts.scheme == "http" and self._allow_http and _loopback(host):
            return url
        raise bad


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tags(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_TAGS:
        raise InvalidArgument(f"'metadata' may hold at most {MAX_TAGS} tags.", param="metadata", code="invalid_value")
    for name, value in metadata.items():
        if not _TAG_NAME.match(name):
            raise InvalidArgument("'metadata' tag names must be 1 to 64 of A-Z a-z 0-9 _ . : -.",
                                  param=f"metadata.{name[:64]}", code="invalid_value")
        if not isinstance(value, str) or len(value) > 256:
            raise InvalidArgument("'metadata' values must be strings of at most 256 characters.",
                                  param=f"metadata.{name}", code="invalid_value")
    return dict(sorted(metadata.items()))
