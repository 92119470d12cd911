"""API keys: minted secrets, hashed storage, constant-time verification, and cheap failures.

Failed authentications never cost much: a negative cache answers a repeated bad secret without a
store query (bounded, short TTL), and failures are counted per client address: past
`failure_limit` a minute, that address gets 429 without any store query until the minute is over
(keys already verified and cached keep working, so one abusive client behind a shared address does
not lock out its neighbours' active keys).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections import OrderedDict
from decimal import Decimal

import msgspec

from raven_service.core.errors import RateLimited, Unauthenticated
from raven_service.core.ports import KeyStore
from raven_service.core.types import ApiKey, KeyPatch, Principal

SECRET_PREFIX = "rk-"
_CACHE_TTL = 1.0  # seconds an authenticated key is trusted without a store lookup
NEGATIVE_TTL = 10.0  # seconds a secret that failed is answered 401 without a store lookup
NEGATIVE_CACHE_SIZE = 10_000
FAILURE_WINDOW = 60.0
DEFAULT_FAILURE_LIMIT = 60  # failed authentications per client address and minute, then 429
_MAX_TRACKED_ADDRESSES = 100_000
#: What a 401 says for an unknown, revoked or wrong secret (never which of these it was).
INVALID_KEY_MESSAGE = "Invalid or revoked API key."


class FailureCounter:
    """Failed authentications per client address in fixed one-minute windows (bounded memory)."""

    def __init__(self, limit: int, *, window: float = FAILURE_WINDOW, clock=time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._counts: dict[str, list[float]] = {}  # address -> [window start, failures]

    def _entry(self, address: str, now: float) -> list[float]:
        entry = self._counts.get(address)
        if entry is None or now - entry[0] >= self.window:
            if len(self._counts) >= _MAX_TRACKED_ADDRESSES:
                self._prune(now)
            entry = [now, 0.0]
            self._counts[address] = entry
        return entry

    def _prune(self, now: float) -> None:
        for address in [a for a, (start, _) in self._counts.items() if now - start >= self.window]:
            del self._counts[address]
        if len(self._counts) >= _MAX_TRACKED_ADDRESSES:
            self._counts.clear()

    def blocked(self, address: str | None) -> float | None:
        """Seconds until `address` may try again, or None when it is under the limit."""
        if not address or self.limit <= 0:
            return None
        entry = self._counts.get(address)
        if entry is None:
            return None
        now = self._clock()
        if now - entry[0] >= self.window or entry[1] < self.limit:
            return None
        return max(0.0, entry[0] + self.window - now)

    def failed(self, address: str | None) -> None:
        if not address or self.limit <= 0:
            return
        entry = self._entry(address, self._clock())
        entry[1] += 1


def _too_many(retry_after: float) -> RateLimited:
    return RateLimited("Too many failed authentication attempts from this address; try again later.",
                       retry_after=retry_after, code="too_many_auth_failures")


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


#: What a 401 says for a key past its `expires_at` (or an old secret past its rotation grace).
EXPIRED_KEY_MESSAGE = "This API key has expired."
WEBHOOK_SECRET_PREFIX = "whsec_"


def principal_of(key: ApiKey, *, old_secret: bool = False) -> Principal:
    """The principal of a stored key. `old_secret`: authenticated by the secret it had before its
    last rotation, which expires at the end of the grace window."""
    expires = key.expires_at
    if old_secret:
        expires = key.previous_expires_at if expires is None else min(expires, key.previous_expires_at)
    return Principal(
        key_id=key.id,
        name=key.name,
        admin="admin" in key.scopes or key.admin,
        rpm=key.rpm,
        concurrency=key.concurrency,
        has_credit_limit=key.credits is not None,
        metadata=tuple(sorted(key.metadata.items())),
        inference="inference" in key.scopes,
        models=key.models,
        tpm=key.tpm,
        budget=key.budget if key.budget_period else None,
        budget_period=key.budget_period if key.budget is not None else "",
        expires_at=expires,
        alerting=bool(key.alert_webhook),
    )


def _expired() -> Unauthenticated:
    return Unauthenticated(EXPIRED_KEY_MESSAGE, code="key_expired")


class Authenticator:
    """Resolves secrets to principals. Keeps a short-lived cache; revocations through this
    process invalidate it at once, revocations elsewhere take effect within _CACHE_TTL.

    `client` (the caller's address, see api/context.py) scopes the failed-authentication limit."""

    def __init__(self, store: KeyStore, *, clock=time.monotonic, failure_limit: int = DEFAULT_FAILURE_LIMIT,
                 negative_ttl: float = NEGATIVE_TTL, wall=time.time) -> None:
        self._store = store
        self._clock = clock
        self.wall = wall  # expiry and rotation grace are wall-clock times (tests move it)
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._negative: OrderedDict[str, float] = OrderedDict()  # digest -> expiry
        self._negative_ttl = negative_ttl
        self.failures = FailureCounter(failure_limit, clock=clock)

    def _fail(self, client: str | None, exc: Unauthenticated) -> Unauthenticated:
        self.failures.failed(client)
        return exc

    async def authenticate(self, authorization: str | None, client: str | None = None) -> Principal:
        try:
            secret = bearer_secret(authorization)
        except Unauthenticated as exc:
            if (wait := self.failures.blocked(client)) is not None:
                raise _too_many(wait) from None
            raise self._fail(client, exc) from None
        digest = hash_secret(secret)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            if hit[1].expires_at is not None and self.wall() >= hit[1].expires_at:
                raise _expired()
            return hit[1]
        if (wait := self.failures.blocked(client)) is not None:
            raise _too_many(wait)
        expiry = self._negative.get(digest)
        if expiry is not None:
            if expiry > now:
                raise self._fail(client, Unauthenticated(INVALID_KEY_MESSAGE))
            del self._negative[digest]
        key = await self._store.get_key_by_hash(digest)
        current = key is not None and hmac.compare_digest(key.secret_hash, digest)
        old = key is not None and not current and hmac.compare_digest(key.previous_secret_hash, digest)
        if key is None or not (current or old) or key.revoked:
            self._cache.pop(digest, None)
            self._remember_bad(digest, now)
            raise self._fail(client, Unauthenticated(INVALID_KEY_MESSAGE))
        principal = principal_of(key, old_secret=old)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_TTL, principal)
        if principal.expires_at is not None and self.wall() >= principal.expires_at:
            raise _expired()  # not a failed authentication: the key is known, only past its time
        return principal

    def _remember_bad(self, digest: str, now: float) -> None:
        negative = self._negative
        negative[digest] = now + self._negative_ttl
        negative.move_to_end(digest)
        while len(negative) > NEGATIVE_CACHE_SIZE:
            negative.popitem(last=False)

    def forget_failure(self, secret: str) -> None:
        """A secret just became valid (created or rotated in this process): drop its negative entry."""
        self._negative.pop(hash_secret(secret), None)

    def invalidate(self, key_id: str) -> None:
        for digest, (_, p) in list(self._cache.items()):
            if p.key_id == key_id:
                del self._cache[digest]


async def create_key(
    store: KeyStore,
    *,
    name: str,
    rpm: int,
    concurrency: int,
    credits: Decimal | None = None,
    admin: bool = False,
    secret: str | None = None,
    scopes: tuple[str, ...] | None = None,
    patch: KeyPatch | None = None,
) -> tuple[ApiKey, str]:
    """Creates and stores a key; returns it with its secret (to be shown once). `secret` is
    minted unless given (the bootstrap admin secret, see `ensure_admin_key`). `scopes` defaults to
    inference (plus admin with `admin`); `patch` sets the other governance fields. A webhook
    signing secret is minted for every key (`key.webhook_secret`, shown once with the secret)."""
    secret = secret or new_secret()
    if scopes is None:
        scopes = ("admin", "inference") if admin else ("inference",)
    key = ApiKey(
        id="key_" + uuid.uuid4().hex[:20],
        name=name,
        secret_hash=hash_secret(secret),
        prefix=secret[:7],
        rpm=rpm,
        concurrency=concurrency,
        credits=credits,
        admin="admin" in scopes,
        scopes=scopes,
        webhook_secret=new_webhook_secret(),
        created_at=time.time(),
    )
    if patch is not None:
        key = msgspec.structs.replace(key, **patch.changes())
        key.admin = "admin" in key.scopes
    await store.insert_key(key)
    return key, secret


def new_webhook_secret() -> str:
    """`whsec_` followed by 43 URL-safe characters."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)


#: What RAVEN_ADMIN_KEY must look like: `rk-` and at least 32 URL-safe characters.
ADMIN_SECRET_FORMAT = re.compile(r"^rk-[A-Za-z0-9_-]{32,256}$")


def valid_admin_secret(secret: str) -> bool:
    return ADMIN_SECRET_FORMAT.fullmatch(secret) is not None


async def ensure_admin_key(store: KeyStore, secret: str, *, rpm: int, concurrency: int) -> ApiKey | None:
    """Bootstrap (SPEC §11): makes sure an admin key with `secret` exists. Returns the key created,
    or None when one with that secret already exists (whatever its state: a revoked bootstrap key
    stays revoked). Never prints or logs the secret."""
    if not valid_admin_secret(secret):
        raise ValueError("the admin secret must be 'rk-' followed by at least 32 URL-safe characters")
    if await store.get_key_by_hash(hash_secret(secret)) is not None:
        return None
    key, _ = await create_key(store, name="bootstrap-admin", rpm=rpm, concurrency=concurrency,
                              admin=True, secret=secret)
    return key
