"""`Store` on PostgreSQL: the scale-out state shared by any number of Raven instances.

Connections come from an asyncpg pool; every method is one statement on one pooled connection
(asyncpg prepares and caches each statement per connection), except migrations and the
idempotent video-task create, which are short explicit transactions.

Atomicity across connections, processes and hosts:
- credits: a hold is one transaction of a conditional UPDATE (the row lock serializes concurrent
  reservers, and READ COMMITTED re-evaluates the WHERE on the latest row version) and its row; a
  settlement batch (usage records, hold releases, charges) is one transaction;
- video-task claims: one UPDATE whose target row is picked with FOR UPDATE SKIP LOCKED, so two
  workers never get the same task and never wait on each other;
- migrations: every step runs in a transaction holding a transaction-level advisory lock
  (pg_advisory_xact_lock), so two `raven db upgrade` / auto-upgrading processes apply each
  migration exactly once.

Money is NUMERIC(38, 12): exact decimals rounded half-even to 12 places on the way in (like
`storage.money` on SQLite), with amounts up to 1e26. Times are DOUBLE PRECISION unix seconds.

`open()` does not migrate unless the store was built with `auto_upgrade=True`; it refuses a
database whose schema is behind (run `raven db upgrade`) or newer than this Raven.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, Overflow
from typing import Any

import asyncpg

from raven_service.core.errors import StoreUnavailable
from raven_service.core.types import (
    AlertClaim,
    ApiKey,
    CreditHold,
    KeyPatch,
    Settlement,
    StoredFile,
    StoredResponse,
    UsageAggregate,
    UsageRecord,
    UsageSample,
    VideoState,
    VideoTask,
)
from raven_service.storage import migrations, rollup

log = logging.getLogger("raven.store")

EXPORT_PAGE_SIZE = 500
CONNECT_TIMEOUT = 10.0  # seconds to establish one connection
CLOSE_TIMEOUT = 10.0  # seconds to wait for borrowed connections on close() before terminating
ACQUIRE_TIMEOUT = 5.0  # seconds to wait for a pooled connection (then StoreUnavailable)
COMMAND_TIMEOUT = 10.0  # seconds one statement may run (then StoreUnavailable)

# Advisory-lock namespace ("Rave"); the second key is derived from the schema name so upgrades of
# different schemas in one database do not serialize each other.
_LOCK_CLASS = 0x52617665

# NUMERIC(38, 12): 26 digits before the point, 12 after.
_MAX_INTEGER_DIGITS = 26
_QUANTUM = Decimal(1).scaleb(-12)
_ONE = Decimal(1)
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, Overflow])

_PENDING = "('queued', 'running')"  # video states a worker may still claim

_KEY_COLUMNS = (
    "id, name, secret_hash, prefix, rpm, concurrency, credits, credits_used, credits_reserved, "
    "admin, revoked, created_at, models, expires_at, tpm, budget, budget_period, scopes, metadata, "
    "alert_webhook, alert_thresholds, webhook_secret, previous_secret_hash, previous_expires_at"
)
_USAGE_COLUMNS = (
    "id, key_id, kind, model, provider, upstream_model, prompt_tokens, completion_tokens, cost, "
    "latency_ms, ttft_ms, status, finish_reason, native_finish_reason, streamed, usage_estimated, "
    "attempts, error, created_at, tags, cached_tokens, cache_creation_tokens, reasoning_tokens"
)
_VIDEO_COLUMNS = (
    "id, key_id, model, prompt, seconds, width, height, request_id, seed, image, state, progress, "
    "provider, upstream_task_id, file_ids, file_sizes, error, reserved, cost, created_at, "
    "completed_at, lease_owner, lease_until, hold_id, tags"
)


def _placeholders(columns: str) -> str:
    return ", ".join(f"${n}" for n in range(1, len(columns.split(",")) + 1))


def _numbered(n: int) -> str:
    return f"${n}"


_INSERT_KEY = f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ({_placeholders(_KEY_COLUMNS)})"
_KEY_BY_ID = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1"
_KEY_BY_HASH = (
    f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 "
    f"UNION ALL SELECT {_KEY_COLUMNS} FROM api_keys WHERE previous_secret_hash = $1 "
    "AND previous_secret_hash <> '' LIMIT 1"  # the partial index's predicate; an empty hash matches no key
)
_INSERT_USAGE = (
    f"INSERT INTO usage_records ({_USAGE_COLUMNS}) VALUES ({_placeholders(_USAGE_COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)
_EXPORT_FIRST = f"SELECT {_USAGE_COLUMNS} FROM usage_records ORDER BY created_at, id LIMIT $1"
_EXPORT_NEXT = (
    f"SELECT {_USAGE_COLUMNS} FROM usage_records WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3"
)
_INSERT_VIDEO = (
    f"INSERT INTO video_tasks ({_VIDEO_COLUMNS}) VALUES ({_placeholders(_VIDEO_COLUMNS)}) "
    "ON CONFLICT (key_id, request_id) WHERE request_id <> '' DO NOTHING "
    f"RETURNING {_VIDEO_COLUMNS}"
)
_VIDEO_BY_REQUEST = f"SELECT {_VIDEO_COLUMNS} FROM video_tasks WHERE key_id = $1 AND request_id = $2"
_RESERVE = (
    "UPDATE api_keys SET credits_reserved = credits_reserved + $2 "
    "WHERE id = $1 AND (credits IS NULL OR credits_used + credits_reserved + $2 <= credits)"
)
_INSERT_HOLD = (
    "INSERT INTO credit_holds (id, key_id, amount, owner, expires_at, created_at, budget_window) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_DROP_HOLD = "DELETE FROM credit_holds WHERE id = $1 RETURNING key_id, amount, budget_window"
_SLICE_ROW = "SELECT key_id, amount, budget_window FROM credit_holds WHERE id = $1 FOR UPDATE"
_SLICE_TAKE = "UPDATE credit_holds SET amount = amount - $2 WHERE id = $1"
_DROP_EXPIRED = "DELETE FROM credit_holds WHERE expires_at < $1 RETURNING key_id, amount, budget_window"
# Exact arithmetic, no clamping: credits_reserved is the sum of live holds by construction.
_APPLY = "UPDATE api_keys SET credits_reserved = credits_reserved - $2, credits_used = credits_used + $3 WHERE id = $1"
# Budget windows: the same hold/settle arithmetic per (key, window start). The reserving UPDATE
# runs after the key's row is locked by _RESERVE, so reservers of one key are serialized.
_OPEN_WINDOW = "INSERT INTO budget_windows (key_id, window_start) VALUES ($1, $2) ON CONFLICT DO NOTHING"
_RESERVE_WINDOW = (
    "UPDATE budget_windows w SET reserved = w.reserved + $3 FROM api_keys k "
    "WHERE w.key_id = $1 AND w.window_start = $2 AND k.id = $1 "
    "AND (k.budget IS NULL OR w.used + w.reserved + $3 <= k.budget)"
)
_APPLY_WINDOW = (
    "UPDATE budget_windows SET reserved = reserved - $3, used = used + $4 WHERE key_id = $1 AND window_start = $2"
)
_USAGE_INDEX = rollup.column_index(_USAGE_COLUMNS)
_UPSERT_ROLLUP = rollup.upsert_sql([f"${n}" for n in range(1, len(rollup.ROLLUP_COLUMNS) + 1)])
_INSERT_USAGE_NEW = _INSERT_USAGE + " RETURNING id"
_CLAIM = (
    "UPDATE video_tasks SET lease_owner = $1, lease_until = $3 "
    "WHERE id = ("
    f"  SELECT id FROM video_tasks WHERE state IN {_PENDING} AND lease_until < $2"
    "   ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
    f") RETURNING {_VIDEO_COLUMNS}"
)
_UPDATE_VIDEO = (
    "UPDATE video_tasks SET state = $1, progress = $2, provider = $3, upstream_task_id = $4, "
    "file_ids = $5, file_sizes = $6, error = $7, reserved = $8, cost = $9, completed_at = $10, "
    "lease_owner = $11, lease_until = $12 WHERE id = $13 AND lease_owner = $14"
)
_RELEASE = f"UPDATE video_tasks SET lease_owner = '', lease_until = 0 WHERE lease_owner = $1 AND state IN {_PENDING}"

_VERSION_TABLE = migrations.SCHEMA_VERSION_TABLE
_CREATE_VERSION_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} ("
    "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


#: Stores a response; a stored one is replaced only for the same key (else no row changes).
_PUT_RESPONSE = """
INSERT INTO responses (id, key_id, model, body, input_items, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET model = excluded.model, body = excluded.body, input_items = excluded.input_items,
    created_at = excluded.created_at, expires_at = excluded.expires_at
WHERE responses.key_id = excluded.key_id
"""


class PostgresStore:
    """The `core.ports.Store` port on a PostgreSQL database, through an asyncpg connection pool.

    `url` is a plain `postgresql://user[:password]@host:5432/db` URL. `schema`, when given, is the
    only schema on every connection's search_path (upgrade() creates it if missing); otherwise the
    server's default search_path applies (normally `public`). With `auto_upgrade=True`, open()
    applies pending migrations first instead of refusing a database that is behind.

    Beyond the port: `upgrade()` and `current_version()` (for `raven db upgrade`), and a
    `page_size` keyword on `export_usage`. Any number of instances may share one database.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        schema: str | None = None,
        auto_upgrade: bool = False,
    ) -> None:
        if schema is not None and not schema:
            raise ValueError("schema must be a non-empty name (or None for the server's search_path)")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}")
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._schema = schema
        self._auto_upgrade = auto_upgrade
        self._pool: asyncpg.Pool | None = None
        self._connect_lock = asyncio.Lock()
        self._opened = False

    @property
    def schema(self) -> str | None:
        return self._schema

    # ------------------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Connects the pool and checks the schema version (applying pending migrations first
        when built with auto_upgrade). Raises RuntimeError, leaving the store closed, if the
        schema is behind (and auto_upgrade is off) or newer than this Raven."""
        if self._opened:
            return
        try:
            if self._auto_upgrade:
                await self.upgrade()
            current = await self.current_version()
            needed = migrations.latest_version(migrations.POSTGRES)
            if current < needed:
                raise RuntimeError(
                    f"database schema is at version {current}, this Raven needs {needed}: run `raven db upgrade`"
                )
            _check_not_newer(current, needed)
        except BaseException:
            await self.close()
            raise
        self._opened = True

    async def close(self) -> None:
        """Closes the pool (waiting briefly for borrowed connections). Safe to call twice."""
        pool, self._pool = self._pool, None
        self._opened = False
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:  # a connection still borrowed (e.g. a stuck query): cut it off
            pool.terminate()
        except BaseException:
            pool.terminate()
            raise

    async def upgrade(self) -> list[int]:
        """Applies every pending migration (connecting first if needed); returns their versions.

        Each step runs in its own transaction under a transaction-level advisory lock and
        re-checks the version table, so concurrent upgrades (any number of processes) apply each
        migration once. Creates the configured schema if missing. Raises RuntimeError if the
        database was migrated by a newer Raven than this one.
        """
        pool = await self._connect()
        known = migrations.latest_version(migrations.POSTGRES)
        applied: list[int] = []
        async with pool.acquire() as conn:
            async with conn.transaction():
                await self._lock(conn)
                if self._schema is not None:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(self._schema)}")
                await conn.execute(_CREATE_VERSION_TABLE)
            _check_not_newer(await _version(conn), known)
            for migration in migrations.POSTGRES:
                async with conn.transaction():
                    await self._lock(conn)
                    done = await conn.fetchval(f"SELECT 1 FROM {_VERSION_TABLE} WHERE version = $1", migration.version)
                    if done is not None:
                        continue
                    await conn.execute(migration.sql)  # several statements: simple query protocol
                    await conn.execute(
                        f"INSERT INTO {_VERSION_TABLE} (version, description, applied_at) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.description,
                        time.time(),
                    )
                applied.append(migration.version)
        return applied

    async def current_version(self) -> int:
        """The highest applied schema version (0 for a database or schema never migrated)."""
        pool = await self._connect()
        async with pool.acquire() as conn:
            return await _version(conn)

    # ------------------------------------------------------------------------------------ keys
    async def insert_key(self, key: ApiKey) -> None:
        """Stores a new key. Raises ValueError if its id or secret hash is already stored."""
        params = (
            key.id,
            key.name,
            key.secret_hash,
            key.prefix,
            key.rpm,
            key.concurrency,
            None if key.credits is None else _non_negative(key.credits, "credits"),
            _money(key.credits_used, "credits_used"),
            _money(key.credits_reserved, "credits_reserved"),
            key.admin,
            key.revoked,
            key.created_at,
            *_governance_params(key),
        )
        try:
            await self._db.execute(_INSERT_KEY, *params)
        except asyncpg.UniqueViolationError as exc:
            raise ValueError(f"key {key.id!r} (or its secret hash) already exists") from exc

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._db.fetchrow(_KEY_BY_ID, key_id)
        return None if row is None else _key_from_row(row)

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The authentication hot path: one prepared lookup on the unique secret_hash index."""
        row = await self._db.fetchrow(_KEY_BY_HASH, secret_hash)
        return None if row is None else _key_from_row(row)

    async def list_keys(self, include_revoked: bool = False, *, limit: int | None = None,
                        after: str | None = None) -> list[ApiKey]:
        """Keys in creation order; revoked ones only when asked for. `after` (a key id) starts the
        page after that key (keyset pagination: an unknown id gives an empty page); `limit` caps it."""
        where = [] if include_revoked else ["NOT revoked"]
        params: list[Any] = []
        if after is not None:
            params.append(after)
            where.append(f"(created_at, id) > (SELECT created_at, id FROM api_keys WHERE id = ${len(params)})")
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        tail = ""
        if limit is not None:
            params.append(max(0, limit))
            tail = f" LIMIT ${len(params)}"
        rows = await self._db.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys {clause}ORDER BY created_at, id{tail}",
                                    *params)
        return [_key_from_row(row) for row in rows]

    async def update_key(
        self,
        key_id: str,
        *,
        name: str | None = None,
        rpm: int | None = None,
        concurrency: int | None = None,
        credits: Decimal | None = None,
        clear_credits: bool = False,
        revoked: bool | None = None,
        patch: KeyPatch | None = None,
    ) -> ApiKey | None:
        """Changes the given fields (`clear_credits` makes the key unlimited; `patch` the
        governance fields); returns the key as updated, or None if there is no such key."""
        if clear_credits and credits is not None:
            raise ValueError("pass either credits or clear_credits, not both")
        changes: dict[str, Any] = _patch_columns(patch)
        if name is not None:
            changes["name"] = name
        if rpm is not None:
            changes["rpm"] = rpm
        if concurrency is not None:
            changes["concurrency"] = concurrency
        if clear_credits:
            changes["credits"] = None
        elif credits is not None:
            changes["credits"] = _non_negative(credits, "credits")
        if revoked is not None:
            changes["revoked"] = revoked
        if not changes:
            return await self.get_key(key_id)
        assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(changes, start=1))
        row = await self._db.fetchrow(
            f"UPDATE api_keys SET {assignments} WHERE id = ${len(changes) + 1} RETURNING {_KEY_COLUMNS}",
            *changes.values(),
            key_id,
        )
        return None if row is None else _key_from_row(row)

    async def count_keys(self) -> int:
        """All stored keys, revoked ones included."""
        return int(await self._db.fetchval("SELECT COUNT(*) FROM api_keys"))

    async def rotate_key(self, key_id: str, secret_hash: str, prefix: str,
                         previous_expires_at: float) -> ApiKey | None:
        """Gives the key a new secret; the current one stays valid until `previous_expires_at`
        (replacing any earlier previous secret). Returns the key as updated, or None."""
        row = await self._db.fetchrow(
            "UPDATE api_keys SET previous_secret_hash = secret_hash, previous_expires_at = $2, "
            f"secret_hash = $3, prefix = $4 WHERE id = $1 RETURNING {_KEY_COLUMNS}",
            key_id, float(previous_expires_at), secret_hash, prefix,
        )
        return None if row is None else _key_from_row(row)

    async def budget_usage(self, key_id: str, window_start: float) -> tuple[Decimal, Decimal]:
        """(used, reserved) of the key's budget window starting at `window_start` (0, 0 if unused)."""
        row = await self._db.fetchrow(
            "SELECT used, reserved FROM budget_windows WHERE key_id = $1 AND window_start = $2",
            key_id, float(window_start))
        return (Decimal(0), Decimal(0)) if row is None else (_money_out(row[0]), _money_out(row[1]))

    async def claim_alert(self, key_id: str, kind: str, period_start: float, threshold: int, *,
                          body: bytes = b"", lease_until: float = 0.0) -> bool:
        """Records that `threshold` was crossed for (key, kind, window); True only for the first caller."""
        return _rowcount(await self._db.execute(
            "INSERT INTO key_alerts (key_id, kind, period_start, threshold, created_at, body, state, lease_until)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            key_id, kind, float(period_start), threshold, time.time(), body, "pending" if body else "delivered",
            float(lease_until))) == 1

    async def take_stale_alerts(self, now: float, lease_until: float, limit: int = 100) -> list[AlertClaim]:
        """SKIP LOCKED: instances sweeping at once each take different claims."""
        rows = await self._db.fetch(
            "UPDATE key_alerts SET lease_until = $1 WHERE (key_id, kind, period_start, threshold) IN ("
            " SELECT key_id, kind, period_start, threshold FROM key_alerts"
            " WHERE state = 'pending' AND lease_until <= $2 ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " RETURNING key_id, kind, period_start, threshold, body", float(lease_until), float(now), limit)
        return [AlertClaim(key_id=r[0], kind=r[1], period_start=float(r[2]), threshold=int(r[3]), body=bytes(r[4]))
                for r in rows]

    async def finish_alert(self, claim: AlertClaim, *, delivered: bool) -> None:
        await self._db.execute(
            "UPDATE key_alerts SET state = $1 WHERE key_id = $2 AND kind = $3 AND period_start = $4 AND threshold = $5",
            "delivered" if delivered else "failed", claim.key_id, claim.kind, float(claim.period_start),
            claim.threshold)

    # --------------------------------------------------------------------------------- credits
    async def reserve_hold(self, hold: CreditHold) -> bool:
        """One transaction: the conditional reservation UPDATE (its row lock serializes reservers of
        one key) and, iff it fit, the hold row."""
        amount = _non_negative(hold.amount, "amount")
        window = None if hold.budget_window is None else float(hold.budget_window)
        try:
            async with self._db.transaction() as conn:
                if _rowcount(await conn.execute(_RESERVE, hold.key_id, amount)) != 1:
                    return False
                if window is not None:
                    await conn.execute(_OPEN_WINDOW, hold.key_id, window)
                    if _rowcount(await conn.execute(_RESERVE_WINDOW, hold.key_id, window, amount)) != 1:
                        raise _DoesNotFit
                await conn.execute(_INSERT_HOLD, hold.id, hold.key_id, amount, hold.owner, float(hold.expires_at),
                                   time.time(), window)
                return True
        except _DoesNotFit:
            return False

    async def release_hold(self, hold_id: str) -> bool:
        async with self._db.transaction() as conn:
            return await _release(conn, await conn.fetch(_DROP_HOLD, hold_id)) > 0

    async def renew_holds(self, owner: str, expires_at: float) -> int:
        return _rowcount(await self._db.execute(
            "UPDATE credit_holds SET expires_at = $2 WHERE owner = $1", owner, float(expires_at)))

    async def sweep_holds(self, now: float) -> int:
        async with self._db.transaction() as conn:
            return await _release(conn, await conn.fetch(_DROP_EXPIRED, float(now)))

    async def list_holds(self, key_id: str) -> list[CreditHold]:
        rows = await self._db.fetch(
            "SELECT id, key_id, amount, owner, expires_at, budget_window FROM credit_holds WHERE key_id = $1 "
            "ORDER BY id", key_id)
        return [CreditHold(id=r[0], key_id=r[1], amount=_money_out(r[2]), owner=r[3], expires_at=r[4],
                           budget_window=r[5]) for r in rows]

    # ----------------------------------------------------------------------------------- usage
    async def settle(self, settlements: Sequence[Settlement]) -> int:
        """The whole batch in one transaction (see `core.ports.UsageStore.settle`)."""
        if not settlements:
            return 0
        rows = [(_usage_params(s.record), s.hold_id, s.budget_window, s.partial) for s in settlements]
        async with self._db.transaction() as conn:
            return await _settle(conn, rows)

    async def get_usage(self, record_id: str) -> UsageRecord | None:
        row = await self._db.fetchrow(f"SELECT {_USAGE_COLUMNS} FROM usage_records WHERE id = $1", record_id)
        return None if row is None else _usage_from_row(row)

    async def aggregate_usage(self, key_id: str | None, start: float | None, end: float | None,
                              group_by: frozenset[str]) -> list[UsageAggregate]:
        """See `core.ports.UsageStore.aggregate_usage`: whole days and hours from the rollup, the
        partial hours at the edges from the records (`storage.rollup.plan`)."""
        p = rollup.plan(start, end)
        groups: dict[tuple[Any, ...], UsageAggregate] = {}
        query = rollup.rollup_query(key_id, p, group_by, _numbered)
        if query is not None:
            sql, params, dims = query
            rollup.merge_rollup_rows(groups, group_by, dims, await self._db.fetch(sql, *params), _money_sum)
        if p.raw:
            sql, params = rollup.raw_query(key_id, p.raw, _numbered)
            rollup.merge_raw_rows(groups, group_by, await self._db.fetch(sql, *params), _money_sum)
        return rollup.sorted_groups(groups)

    async def usage_samples(self, key_id: str | None, start: float | None, end: float | None,
                            limit: int) -> list[UsageSample]:
        sql, params = rollup.sample_query(key_id, start, end, limit, _numbered)
        rows = await self._db.fetch(sql, *params)
        return [UsageSample(key_id=r[0], model=r[1], provider=r[2], tags=rollup.decode_tags(r[3]), created_at=r[4],
                            latency_ms=r[5], ttft_ms=r[6]) for r in rows]

    async def list_usage(self, key_id: str | None, *, model: str | None = None, status: str | None = None,
                         since: float | None = None, until: float | None = None,
                         before: tuple[float, str] | None = None, limit: int = 20) -> list[UsageRecord]:
        sql, params = rollup.list_query(_USAGE_COLUMNS, key_id, model=model, status=status, since=since,
                                        until=until, before=before, limit=limit, placeholder=_numbered)
        return [_usage_from_row(row) for row in await self._db.fetch(sql, *params)]

    async def export_usage(self, *, page_size: int = EXPORT_PAGE_SIZE) -> AsyncIterator[UsageRecord]:
        """Every usage record in (created_at, id) order, read in keyset-paged chunks (no
        connection is held between pages)."""
        if page_size < 1:
            raise ValueError("page_size must be positive")
        rows = await self._db.fetch(_EXPORT_FIRST, page_size)
        while rows:
            for row in rows:
                yield _usage_from_row(row)
            if len(rows) < page_size:
                return
            last = rows[-1]
            rows = await self._db.fetch(_EXPORT_NEXT, last["created_at"], last["id"], page_size)

    # ----------------------------------------------------------------------------------- files
    async def put_file(self, file: StoredFile) -> None:
        """Stores a blob. Raises ValueError if the id is already stored."""
        try:
            await self._db.execute(
                "INSERT INTO files (id, key_id, mime_type, data, created_at) VALUES ($1, $2, $3, $4, $5)",
                file.id,
                file.key_id,
                file.mime_type,
                file.data,
                file.created_at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise ValueError(f"file {file.id!r} already exists") from exc

    async def get_file(self, file_id: str) -> StoredFile | None:
        row = await self._db.fetchrow(
            "SELECT id, key_id, mime_type, data, created_at FROM files WHERE id = $1", file_id
        )
        if row is None:
            return None
        return StoredFile(
            id=row["id"],
            key_id=row["key_id"],
            mime_type=row["mime_type"],
            data=bytes(row["data"]),
            created_at=row["created_at"],
        )

    # ------------------------------------------------------------------------------- responses
    async def put_response(self, response: StoredResponse) -> bool:
        """Upsert keyed by id; the update only applies to the same key (see `core.ports.ResponseStore`)."""
        r = response
        status = await self._db.execute(_PUT_RESPONSE, r.id, r.key_id, r.model, r.body, r.input_items, r.created_at,
                                        r.expires_at)
        return status.endswith(" 1")

    async def get_response(self, response_id: str, key_id: str, now: float) -> StoredResponse | None:
        row = await self._db.fetchrow(
            "SELECT id, key_id, model, body, input_items, created_at, expires_at FROM responses"
            " WHERE id = $1 AND key_id = $2 AND expires_at > $3", response_id, key_id, now)
        if row is None:
            return None
        return StoredResponse(id=row[0], key_id=row[1], model=row[2], body=row[3], input_items=row[4],
                              created_at=row[5], expires_at=row[6])

    async def delete_response(self, response_id: str, key_id: str, now: float) -> bool:
        status = await self._db.execute("DELETE FROM responses WHERE id = $1 AND key_id = $2 AND expires_at > $3",
                                        response_id, key_id, now)
        return status.endswith(" 1")

    async def delete_expired_responses(self, now: float) -> int:
        status = await self._db.execute("DELETE FROM responses WHERE expires_at <= $1", now)
        return int(status.rsplit(" ", 1)[-1])

    async def delete_files_before(self, cutoff: float, limit: int = 500) -> int:
        status = await self._db.execute(
            "DELETE FROM files WHERE id IN (SELECT id FROM files WHERE created_at < $1 LIMIT $2)", cutoff, limit
        )
        return int(status.rsplit(" ", 1)[-1])

    # ----------------------------------------------------------------------------- video tasks
    async def create_video_task(self, task: VideoTask) -> tuple[VideoTask, bool]:
        """Inserts the task, or returns the stored one with the same non-empty (key_id,
        request_id) and False. Raises ValueError if the task id is already stored.

        INSERT ... ON CONFLICT on the partial unique (key_id, request_id) index: a concurrent
        create of the same request waits for the first to commit, then inserts nothing and reads
        the winner (a fresh statement, so it sees the committed row)."""
        params = _video_params(task)
        try:
            row = await self._db.fetchrow(_INSERT_VIDEO, *params)
        except asyncpg.UniqueViolationError as exc:
            raise ValueError(f"video task {task.id!r} already exists") from exc
        if row is not None:
            return _video_from_row(row), True
        existing = await self._db.fetchrow(_VIDEO_BY_REQUEST, task.key_id, task.request_id)
        if existing is None:  # impossible without deletes: the conflicting row is committed
            raise RuntimeError(f"video task for request {task.request_id!r} conflicted but cannot be read")
        return _video_from_row(existing), False

    async def get_video_task(self, task_id: str) -> VideoTask | None:
        row = await self._db.fetchrow(f"SELECT {_VIDEO_COLUMNS} FROM video_tasks WHERE id = $1", task_id)
        return None if row is None else _video_from_row(row)

    async def list_video_tasks(self, key_id: str, limit: int, before: tuple[float, str] | None) -> list[VideoTask]:
        """The key's tasks, newest first, strictly before the (created_at, id) cursor if given."""
        if limit < 1:
            return []
        order = " ORDER BY created_at DESC, id DESC"
        if before is None:
            rows = await self._db.fetch(
                f"SELECT {_VIDEO_COLUMNS} FROM video_tasks WHERE key_id = $1{order} LIMIT $2", key_id, limit
            )
        else:
            rows = await self._db.fetch(
                f"SELECT {_VIDEO_COLUMNS} FROM video_tasks WHERE key_id = $1 AND (created_at, id) < ($2, $3)"
                f"{order} LIMIT $4",
                key_id,
                float(before[0]),
                before[1],
                limit,
            )
        return [_video_from_row(row) for row in rows]

    async def claim_video_task(self, worker: str, now: float, lease_seconds: float) -> VideoTask | None:
        """Leases the oldest queued or running task whose lease has expired (lease_until < now;
        a fresh or released task has lease_until 0) to `worker` until now + lease_seconds.

        The target row is chosen and locked with FOR UPDATE SKIP LOCKED inside the UPDATE, so
        concurrent claimers (any connection, any process) each lock a different row, and a row
        claimed meanwhile is re-checked against the lease condition and skipped.
        """
        row = await self._db.fetchrow(_CLAIM, worker, float(now), float(now + lease_seconds))
        return None if row is None else _video_from_row(row)

    async def update_video_task(self, task: VideoTask, worker: str) -> bool:
        """Writes every mutable field (state, progress, provider, upstream id, files, error,
        money, completion time, lease) iff `worker` holds the lease; the request fields are immutable."""
        return _rowcount(await self._db.execute(_UPDATE_VIDEO, *_video_update_params(task, worker))) == 1

    async def renew_video_lease(self, task_id: str, worker: str, lease_until: float) -> bool:
        return _rowcount(await self._db.execute(
            f"UPDATE video_tasks SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND state IN {_PENDING}",
            task_id, worker, float(lease_until))) == 1

    async def finish_video_task(self, task: VideoTask, worker: str, settlement: Settlement) -> bool:
        params = _video_update_params(task, worker)
        row = (_usage_params(settlement.record), settlement.hold_id, settlement.budget_window, settlement.partial)
        async with self._db.transaction() as conn:
            if _rowcount(await conn.execute(_UPDATE_VIDEO, *params)) != 1:
                return False
            await _settle(conn, [row])
            return True

    async def release_video_tasks(self, worker: str) -> int:
        """Drops `worker`'s leases on unfinished tasks; returns how many it held."""
        return _rowcount(await self._db.execute(_RELEASE, worker))

    # ------------------------------------------------------------------------------- plumbing
    @property
    def _db(self) -> _Db:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        return _Db(self._pool)

    async def _connect(self) -> asyncpg.Pool:
        """Creates the pool on first use (open, upgrade or current_version)."""
        async with self._connect_lock:
            if self._pool is None:
                settings = {"application_name": "raven"}
                if self._schema is not None:
                    settings["search_path"] = _quote_ident(self._schema)
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=CONNECT_TIMEOUT,
                    command_timeout=COMMAND_TIMEOUT,
                    server_settings=settings,
                    reset=_keep_session,
                )
            return self._pool

    async def _lock(self, conn: asyncpg.Connection) -> None:
        """Takes this schema's migration advisory lock until the current transaction ends."""
        name = (self._schema or "").encode()
        key = zlib.crc32(name) - (1 << 31)  # a signed int4
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, key)


#: What "the database cannot be reached" looks like from asyncpg: refused or cut connections, a
#: terminated backend (pg_terminate_backend, shutdown), timeouts of the pool or of a statement.
_OUTAGE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


class _Db:
    """The pool seen through deadlines: every acquire waits at most ACQUIRE_TIMEOUT, every statement
    runs at most COMMAND_TIMEOUT (the pool's command_timeout), and an outage is StoreUnavailable
    (the driver's detail, which names hosts, goes to the log only)."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                return await getattr(conn, method)(*args)
        except _OUTAGE as exc:
            log.warning("postgres store unavailable: %s", type(exc).__name__)
            raise StoreUnavailable() from exc

    async def execute(self, query: str, *args: Any) -> str:
        return await self._call("execute", query, *args)

    async def executemany(self, query: str, rows: Any) -> None:
        await self._call("executemany", query, rows)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._call("fetch", query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._call("fetchrow", query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._call("fetchval", query, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn, conn.transaction():
                yield conn
        except _OUTAGE as exc:
            log.warning("postgres store unavailable: %s", type(exc).__name__)
            raise StoreUnavailable() from exc


class _DoesNotFit(Exception):
    """Raised inside a reservation transaction to roll it back (the budget window is full)."""


async def _release(conn: asyncpg.Connection, dropped: Sequence[asyncpg.Record]) -> int:
    """Takes the amounts of just-deleted holds off their keys' (and budget windows') reservations."""
    per_key: dict[str, Decimal] = {}
    per_window: dict[tuple[str, float], Decimal] = {}
    for key_id, amount, window in dropped:
        per_key[key_id] = per_key.get(key_id, Decimal(0)) + amount
        if window is not None:
            per_window[(key_id, window)] = per_window.get((key_id, window), Decimal(0)) + amount
    for key_id in sorted(per_key):  # a fixed lock order: concurrent batches never deadlock
        await conn.execute(_APPLY, key_id, per_key[key_id], Decimal(0))
    for key_id, window in sorted(per_window):
        await conn.execute(_APPLY_WINDOW, key_id, window, per_window[(key_id, window)], Decimal(0))
    return len(dropped)


async def _settle(conn: asyncpg.Connection, rows: Sequence[tuple[tuple[Any, ...], str, float | None, bool]]) -> int:
    """Inside a transaction: inserts each new record, drops its hold, charges its cost (to the
    key's credits and, when it was admitted under a budget, to that budget window)."""
    released: dict[str, Decimal] = {}
    charged: dict[str, Decimal] = {}
    windows: dict[tuple[str, float], list[Decimal]] = {}  # (key, start) -> [released, charged]
    deltas: dict[rollup.RowKey, rollup.Delta] = {}
    from_slices: dict[str, Decimal] = {}  # slice hold id -> the costs of this batch's records on it
    unnamed: dict[str, Decimal] = {}  # slice hold id -> those of its costs whose settlement named no window
    new = 0
    for params, hold_id, budget_window, partial in rows:
        if await conn.fetchval(_INSERT_USAGE_NEW, *params) is None:
            continue  # settled before: idempotent
        new += 1
        rollup.accumulate(deltas, _USAGE_INDEX, params, Decimal(0))
        key_id, cost = params[1], params[8]
        charged[key_id] = charged.get(key_id, Decimal(0)) + cost
        window = budget_window
        if hold_id and partial:  # a credit slice: one take per slice per batch, below
            from_slices[hold_id] = from_slices.get(hold_id, Decimal(0)) + cost
            if window is None:  # charged to the slice's window below, as a whole hold's would be
                unnamed[hold_id] = unnamed.get(hold_id, Decimal(0)) + cost
        elif hold_id:
            for hold_key, amount, hold_window in await conn.fetch(_DROP_HOLD, hold_id):
                released[hold_key] = released.get(hold_key, Decimal(0)) + amount
                if hold_window is not None:
                    window = hold_window
                    windows.setdefault((hold_key, hold_window), [Decimal(0), Decimal(0)])[0] += amount
        if window is not None:
            windows.setdefault((key_id, float(window)), [Decimal(0), Decimal(0)])[1] += cost
    for hold_id in sorted(from_slices):  # locked in id order: concurrent batches cannot deadlock
        for hold_key, amount, hold_window in await _take_from_slice(conn, hold_id, from_slices[hold_id]):
            released[hold_key] = released.get(hold_key, Decimal(0)) + amount
            if hold_window is not None:
                books = windows.setdefault((hold_key, float(hold_window)), [Decimal(0), Decimal(0)])
                books[0] += amount
                books[1] += unnamed.get(hold_id, Decimal(0))
    for key_id in sorted(charged.keys() | released.keys()):
        await conn.execute(_APPLY, key_id, released.get(key_id, Decimal(0)), charged.get(key_id, Decimal(0)))
    for key_id, window in sorted(windows):
        freed, spent = windows[(key_id, window)]
        await conn.execute(_OPEN_WINDOW, key_id, window)
        await conn.execute(_APPLY_WINDOW, key_id, window, freed, spent)
    if deltas:  # the rollup, in the same transaction, rows locked in primary-key order
        await conn.executemany(_UPSERT_ROLLUP, rollup.upsert_rows(deltas))
    return new


async def _take_from_slice(conn: asyncpg.Connection, hold_id: str, cost: Decimal) -> list[Any]:
    """Requests' share of a credit slice: min(cost, what is left) leaves the slice (the caller
    moves it from reserved to used). Nothing when the slice was already returned or swept."""
    row = await conn.fetchrow(_SLICE_ROW, hold_id)
    if row is None:
        return []
    take = min(cost, row["amount"])
    await conn.execute(_SLICE_TAKE, hold_id, take)
    return [(row["key_id"], take, row["budget_window"])]


def _video_update_params(task: VideoTask, worker: str) -> tuple[Any, ...]:
    return (
        task.state.value,
        task.progress,
        task.provider,
        task.upstream_task_id,
        list(task.file_ids),
        list(task.file_sizes),
        task.error,
        _money(task.reserved, "reserved"),
        _money(task.cost, "cost"),
        task.completed_at,
        task.lease_owner,
        task.lease_until,
        task.id,
        worker,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo. The store never changes session state (no SET, LISTEN,
    cursors or session-level advisory locks) and asyncpg itself rolls back any transaction left
    open, so this saves the default `RESET ALL; ...` round trip on every release (the search_path
    is a startup setting, which would survive RESET ALL anyway)."""


async def _version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass($1)::text", _VERSION_TABLE) is None:
        return 0
    return int(await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {_VERSION_TABLE}"))


def _check_not_newer(current: int, known: int) -> None:
    if current > known:
        raise RuntimeError(f"database schema version {current} is newer than this Raven supports ({known})")


def _quote_ident(name: str) -> str:
    """A SQL identifier, always quoted (so any schema name is taken literally)."""
    if "\x00" in name:
        raise ValueError("identifier must not contain NUL")
    return '"' + name.replace('"', '""') + '"'


def _rowcount(status: str) -> int:
    """Rows affected, from a command status tag such as 'UPDATE 1'."""
    return int(status.rsplit(" ", 1)[-1])


# ------------------------------------------------------------------------------------ money
def _money(amount: Decimal, what: str) -> Decimal:
    """A Decimal rounded half-even to 12 places for a NUMERIC(38, 12) column. Raises ValueError
    if it is not a finite Decimal or does not fit (|x| >= 1e26)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"{what} must be a finite Decimal, got {amount!r}")
    if amount and amount.adjusted() >= _MAX_INTEGER_DIGITS:
        raise ValueError(f"{what} {amount} is out of the storable range (|x| < 1e26)")
    rounded = amount.quantize(_QUANTUM, context=_CTX)
    if rounded.adjusted() >= _MAX_INTEGER_DIGITS:  # 99...9.9999999999995 rounds up to 1e26
        raise ValueError(f"{what} {amount} is out of the storable range (|x| < 1e26)")
    return rounded


def _money_sum(value: Decimal | None) -> Decimal:
    """A SUM over NUMERIC costs (None when no row matched) as `_money_out` gives it."""
    return Decimal(0) if value is None else _money_out(value)


def _non_negative(amount: Decimal, what: str) -> Decimal:
    value = _money(amount, what)
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {amount}")
    return value


def _money_out(value: Decimal) -> Decimal:
    """A stored NUMERIC without its padding zeros (integers keep exponent 0), as `money.from_units`."""
    if value == value.to_integral_value():
        return value.quantize(_ONE, context=_CTX)
    return value.normalize(_CTX)


# ------------------------------------------------------------------------------------ row mapping
def _governance_params(key: ApiKey) -> tuple[Any, ...]:
    return (
        list(key.models),
        None if key.expires_at is None else float(key.expires_at),
        key.tpm,
        None if key.budget is None else _non_negative(key.budget, "budget"),
        key.budget_period,
        list(key.scopes),
        json.dumps(key.metadata, sort_keys=True),
        key.alert_webhook,
        list(key.alert_thresholds),
        key.webhook_secret,
        key.previous_secret_hash,
        float(key.previous_expires_at),
    )


def _patch_columns(patch: KeyPatch | None) -> dict[str, Any]:
    """The column assignments of a KeyPatch (scopes also set `admin`)."""
    if patch is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in patch.changes().items():
        if name in ("models", "scopes", "alert_thresholds"):
            out[name] = list(value)  # type: ignore[call-overload]
        elif name == "metadata":
            out[name] = json.dumps(value, sort_keys=True)
        elif name == "budget":
            out[name] = None if value is None else _non_negative(value, "budget")  # type: ignore[arg-type]
        elif name == "expires_at":
            out[name] = None if value is None else float(value)  # type: ignore[arg-type]
        else:
            out[name] = value
        if name == "scopes":
            out["admin"] = "admin" in value  # type: ignore[operator]
    return out


def _key_from_row(row: asyncpg.Record) -> ApiKey:
    credits = row["credits"]
    budget = row["budget"]
    return ApiKey(
        id=row["id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        prefix=row["prefix"],
        rpm=row["rpm"],
        concurrency=row["concurrency"],
        credits=None if credits is None else _money_out(credits),
        credits_used=_money_out(row["credits_used"]),
        credits_reserved=_money_out(row["credits_reserved"]),
        admin=row["admin"],
        revoked=row["revoked"],
        created_at=row["created_at"],
        models=tuple(row["models"]),
        expires_at=row["expires_at"],
        tpm=row["tpm"],
        budget=None if budget is None else _money_out(budget),
        budget_period=row["budget_period"],
        scopes=tuple(row["scopes"]),
        metadata=json.loads(row["metadata"]),
        alert_webhook=row["alert_webhook"],
        alert_thresholds=tuple(int(t) for t in row["alert_thresholds"]),
        webhook_secret=row["webhook_secret"],
        previous_secret_hash=row["previous_secret_hash"],
        previous_expires_at=row["previous_expires_at"],
    )


def _usage_params(record: UsageRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.key_id,
        record.kind,
        record.model,
        record.provider,
        record.upstream_model,
        record.prompt_tokens,
        record.completion_tokens,
        _money(record.cost, "cost"),
        record.latency_ms,
        record.ttft_ms,
        record.status,
        record.finish_reason,
        record.native_finish_reason,
        record.streamed,
        record.usage_estimated,
        list(record.attempts),
        record.error,
        record.created_at,
        rollup.encode_tags(record.tags),
        record.cached_tokens,
        record.cache_creation_tokens,
        record.reasoning_tokens,
    )


def _usage_from_row(row: asyncpg.Record) -> UsageRecord:
    return UsageRecord(
        id=row["id"],
        key_id=row["key_id"],
        kind=row["kind"],
        model=row["model"],
        provider=row["provider"],
        upstream_model=row["upstream_model"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost=_money_out(row["cost"]),
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        status=row["status"],
        finish_reason=row["finish_reason"],
        native_finish_reason=row["native_finish_reason"],
        streamed=row["streamed"],
        usage_estimated=row["usage_estimated"],
        attempts=tuple(row["attempts"]),
        error=row["error"],
        created_at=row["created_at"],
        tags=rollup.decode_tags(row["tags"]),
        cached_tokens=row["cached_tokens"],
        cache_creation_tokens=row["cache_creation_tokens"],
        reasoning_tokens=row["reasoning_tokens"],
    )


def _video_params(task: VideoTask) -> tuple[Any, ...]:
    return (
        task.id,
        task.key_id,
        task.model,
        task.prompt,
        task.seconds,
        task.width,
        task.height,
        task.request_id,
        task.seed,
        task.image,
        task.state.value,
        task.progress,
        task.provider,
        task.upstream_task_id,
        list(task.file_ids),
        list(task.file_sizes),
        task.error,
        _money(task.reserved, "reserved"),
        _money(task.cost, "cost"),
        task.created_at,
        task.completed_at,
        task.lease_owner,
        task.lease_until,
        task.hold_id,
        rollup.encode_tags(task.tags),
    )


def _video_from_row(row: asyncpg.Record) -> VideoTask:
    image = row["image"]
    return VideoTask(
        id=row["id"],
        key_id=row["key_id"],
        model=row["model"],
        prompt=row["prompt"],
        seconds=row["seconds"],
        width=row["width"],
        height=row["height"],
        request_id=row["request_id"],
        seed=row["seed"],
        image=None if image is None else bytes(image),
        state=VideoState(row["state"]),
        progress=row["progress"],
        provider=row["provider"],
        upstream_task_id=row["upstream_task_id"],
        file_ids=tuple(row["file_ids"]),
        file_sizes=tuple(row["file_sizes"]),
        error=row["error"],
        reserved=_money_out(row["reserved"]),
        cost=_money_out(row["cost"]),
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        hold_id=row["hold_id"],
        tags=rollup.decode_tags(row["tags"]),
    )
