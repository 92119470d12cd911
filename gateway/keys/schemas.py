"""Key wire types (SPEC §11). Request bodies reject unknown fields (a typo must not be ignored
silently on an admin API); amounts are decimal strings, times RFC 3339 UTC, durations s/m/h/d."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from gateway.schemas import Int32

__all__ = [
    "BudgetIn",
    "BudgetOut",
    "CreatedKey",
    "CreditsOut",
    "KeyCreate",
    "KeyData",
    "KeyList",
    "KeyObject",
    "KeySelf",
    "KeySelfResponse",
    "KeyUpdate",
    "RotateIn",
    "RotatedKey",
]

#: An exact decimal amount written as a JSON string ("0.5").
Amount = Annotated[str, msgspec.Meta(description="An exact decimal amount, as a string.", max_length=64)]
Pattern = Annotated[str, msgspec.Meta(max_length=200)]
Count = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]


class BudgetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An amount per calendar window (UTC) on top of the credits."""

    amount: Amount
    #: day, week (from Monday) or month.
    period: str


class _KeyFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    rpm: Int32 | UnsetType = UNSET
    concurrency: Int32 | UnsetType = UNSET
    tpm: Int32 | UnsetType = UNSET
    #: The lifetime credit limit; null = unlimited.
    credits: Amount | UnsetType | None = UNSET
    #: null = no budget.
    budget: BudgetIn | UnsetType | None = UNSET
    #: Model slug patterns (`*` wildcard); empty = every model.
    models: list[Pattern] | UnsetType = UNSET
    #: RFC 3339 (`2027-01-01T00:00:00Z`); null = never.
    expires_at: str | UnsetType | None = UNSET
    #: A duration from now (`30d`, `12h`), instead of expires_at.
    expires_in: str | UnsetType = UNSET
    #: `inference` and/or `admin`.
    scopes: list[str] | UnsetType = UNSET
    #: String tags, e.g. {"team": "search"}.
    metadata: dict[str, str] | UnsetType = UNSET
    #: https URL receiving alerts; null = none.
    alert_webhook: str | UnsetType | None = UNSET
    #: Percent of credits or budget (default 80, 95, 100).
    alert_thresholds: list[Count] | UnsetType = UNSET


class KeyCreate(_KeyFields, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/keys."""

    name: str
    #: The shortcut for scopes ["admin", "inference"].
    admin: bool = False


class KeyUpdate(_KeyFields, kw_only=True, forbid_unknown_fields=True):
    """PATCH /v1/keys/{id}: absent fields stay as they are."""

    name: str | UnsetType = UNSET


class RotateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/keys/{id}/rotate (both optional; default grace 24 h)."""

    grace_seconds: Annotated[float, msgspec.Meta(ge=0)] | UnsetType = UNSET
    #: The grace as a duration (`2s`, `24h`).
    grace: str | UnsetType = UNSET


class BudgetOut(msgspec.Struct, kw_only=True, gc=False):
    amount: str
    period: str
    used: str
    remaining: str
    #: RFC 3339 end of the current window.
    resets_at: str | None


class CreditsOut(msgspec.Struct, kw_only=True, gc=False):
    #: null = unlimited.
    limit: str | None
    used: str
    #: null = unlimited.
    remaining: str | None


class KeyObject(msgspec.Struct, kw_only=True, gc=False):
    """A key as the admin routes show it (never a secret)."""

    id: str
    object: str = "api_key"
    name: str
    #: The first characters of the secret.
    prefix: str
    scopes: list[str]
    admin: bool
    models: list[str]
    expires_at: str | None
    rpm: int
    concurrency: int
    tpm: int
    #: The lifetime credit limit; null = unlimited.
    credits: str | None
    credits_used: str
    credits_remaining: str | None
    budget: BudgetOut | None
    metadata: dict[str, str]
    alert_webhook: str | None
    alert_thresholds: list[int]
    revoked: bool
    created_at: str


class KeySelf(msgspec.Struct, kw_only=True, gc=False):
    """The calling key (GET /v1/key)."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    models: list[str]
    expires_at: str | None
    rpm: int
    concurrency: int
    tpm: int
    credits: CreditsOut
    budget: BudgetOut | None
    metadata: dict[str, str]
    created_at: str


class KeySelfResponse(msgspec.Struct, kw_only=True, gc=False):
    data: KeySelf


class KeyData(msgspec.Struct, kw_only=True, gc=False):
    """`{"data": key}`."""

    data: KeyObject


class CreatedKey(msgspec.Struct, kw_only=True, gc=False):
    """201 of POST /v1/keys: both secrets are shown only here."""

    key: KeyObject
    secret: str
    webhook_secret: str


class RotatedKey(msgspec.Struct, kw_only=True, gc=False):
    key: KeyObject
    #: The new secret (the old one works until the grace ends).
    secret: str


class KeyList(msgspec.Struct, kw_only=True, gc=False):
    object: str = "list"
    data: list[KeyObject]
    has_more: bool
    #: The cursor for `after` (null on the last page).
    next: str | None
