"""API keys: minted secrets, hashed storage, constant-time verification."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from decimal import Decimal

from raven_service.core.errors import Unauthenticated
from raven_service.core.ports import Store
from raven_service.core.types import ApiKey, Principal

SECRET_PREFIX = "rk-"
_CACHE_TTL = 1.0  # seconds an authenticated key is trusted without a store lookup


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """`rk-` followed by 43 URL-safe characters (256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def bearer_secret(authorization: str | None) -> str:
    """Extracts the secret from an `Authorization: Bearer ...` value, or raises Unauthenticated."""
    if not authorization:
        raise Unauthenticated("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("Malformed Authorization header: expected 'Bearer <key>'.")
    return secret.strip()


def principal_of(key: ApiKey) -> Principal:
    return Principal(
        key_id=key.id,
        name=key.name,
        admin=key.admin,
        rpm=key.rpm,
        concurrency=key.concurrency,
        has_credit_limit=key.credits is not None,
    )


class Authenticator:
    """Resolves secrets to principals. Keeps a short-lived cache; revocations through this
    process invalidate it at once, revocations elsewhere take effect within _CACHE_TTL."""

    def __init__(self, store: Store, *, clock=time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        secret = bearer_secret(authorization)
        digest = hash_secret(secret)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await self._store.get_key_by_hash(digest)
        if key is None or not hmac.compare_digest(key.secret_hash, digest) or key.revoked:
            self._cache.pop(digest, None)
            raise Unauthenticated("Invalid or revoked API key.")
        principal = principal_of(key)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_TTL, principal)
        return principal

    def invalidate(self, key_id: str) -> None:
        for digest, (_, p) in list(self._cache.items()):
            if p.key_id == key_id:
                del self._cache[digest]


async def create_key(
    store: Store,
    *,
    name: str,
    rpm: int,
    concurrency: int,
    credits: Decimal | None = None,
    admin: bool = False,
) -> tuple[ApiKey, str]:
    """Creates and stores a key; returns it with its secret (to be shown once)."""
    secret = new_secret()
    key = ApiKey(
        id="key_" + uuid.uuid4().hex[:20],
        name=name,
        secret_hash=hash_secret(secret),
        prefix=secret[:7],
        rpm=rpm,
        concurrency=concurrency,
        credits=credits,
        admin=admin,
        created_at=time.time(),
    )
    await store.insert_key(key)
    return key, secret
