"""`Store` on SQLite: the embedded default state (one file in WAL mode under the data dir).

Threading model: each `SqliteStore` owns one `sqlite3` connection that lives on one dedicated
worker thread; every method ships a small synchronous function to that thread. Work is therefore
serialized per store without an asyncio lock, and a multi-statement transaction always runs whole
on the thread: cancelling the awaiting task can never leave a transaction open half-way (unlike
driving BEGIN ... COMMIT through separate awaits).

Atomicity: video-task claims are single SQL statements; in SQLite a writing statement takes the
database write lock before it reads, so they are atomic across connections and processes too
(other writers wait up to `busy_timeout`). Multi-statement writes (a hold and its reservation; a
settlement batch: usage records, hold releases and charges) use BEGIN IMMEDIATE for the same reason.

Money is stored as INTEGER pico-credits (`storage.money`); tables are STRICT, so an arithmetic
overflow into a float is rejected instead of silently stored.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec

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
from raven_service.storage.money import from_units, to_units

T = TypeVar("T")
log = logging.getLogger("raven.store")

MIN_SQLITE_VERSION = (3, 37, 0)  # STRICT tables (3.37), RETURNING (3.35)
BUSY_TIMEOUT_MS = 5000
EXPORT_PAGE_SIZE = 500

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
    return ", ".join("?" for _ in columns.split(","))


def _numbered(n: int) -> str:
    return f"?{n}"


_INSERT_KEY = f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES ({_placeholders(_KEY_COLUMNS)})"
_INSERT_USAGE = (
    f"INSERT INTO usage_records ({_USAGE_COLUMNS}) VALUES ({_placeholders(_USAGE_COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)
_USAGE_INDEX = rollup.column_index(_USAGE_COLUMNS)
_UPSERT_ROLLUP = rollup.upsert_sql(["?"] * len(rollup.ROLLUP_COLUMNS))
_INSERT_VIDEO = (
    f"INSERT INTO video_tasks ({_VIDEO_COLUMNS}) VALUES ({_placeholders(_VIDEO_COLUMNS)}) RETURNING {_VIDEO_COLUMNS}"
)
_RESERVE = (
    "UPDATE api_keys SET credits_reserved = credits_reserved + ?1 "
    "WHERE id = ?2 AND (credits IS NULL OR credits_used + credits_reserved + ?1 <= credits)"
)
_INSERT_HOLD = (
    "INSERT INTO credit_holds (id, key_id, amount, owner, expires_at, created_at, budget_window) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DROP_HOLD = "DELETE FROM credit_holds WHERE id = ? RETURNING key_id, amount, budget_window"
_SLICE_ROW = "SELECT key_id, amount, budget_window FROM credit_holds WHERE id = ?"
_SLICE_TAKE = "UPDATE credit_holds SET amount = amount - ? WHERE id = ?"
_DROP_EXPIRED = "DELETE FROM credit_holds WHERE expires_at < ? RETURNING key_id, amount, budget_window"
# Exact arithmetic, no clamping: credits_reserved is the sum of live holds by construction.
_APPLY = "UPDATE api_keys SET credits_reserved = credits_reserved - ?, credits_used = credits_used + ? WHERE id = ?"
# Budget windows: the same hold/settle arithmetic per (key, window start).
_OPEN_WINDOW = "INSERT INTO budget_windows (key_id, window_start) VALUES (?, ?) ON CONFLICT DO NOTHING"
_RESERVE_WINDOW = (
    "UPDATE budget_windows SET reserved = reserved + ?1 WHERE key_id = ?2 AND window_start = ?3 AND ("
    "(SELECT budget FROM api_keys WHERE id = ?2) IS NULL "
    "OR used + reserved + ?1 <= (SELECT budget FROM api_keys WHERE id = ?2))"
)
_APPLY_WINDOW = (
    "UPDATE budget_windows SET reserved = reserved - ?, used = used + ? WHERE key_id = ? AND window_start = ?"
)
_CLAIM = (
    "UPDATE video_tasks SET lease_owner = :worker, lease_until = :until "
    "WHERE id = ("
    f"  SELECT id FROM video_tasks WHERE state IN {_PENDING} AND lease_until < :now"
    "   ORDER BY created_at, id LIMIT 1"
    f") AND state IN {_PENDING} AND lease_until < :now "
    f"RETURNING {_VIDEO_COLUMNS}"
)
_UPDATE_VIDEO = (
    "UPDATE video_tasks SET state = ?, progress = ?, provider = ?, upstream_task_id = ?, "
    "file_ids = ?, file_sizes = ?, error = ?, reserved = ?, cost = ?, completed_at = ?, "
    "lease_owner = ?, lease_until = ? WHERE id = ? AND lease_owner = ?"
)
_RELEASE = f"UPDATE video_tasks SET lease_owner = '', lease_until = 0 WHERE lease_owner = ? AND state IN {_PENDING}"


#: Stores a response; a stored one is replaced only for the same key (else no row changes).
_PUT_RESPONSE = """
INSERT INTO responses (id, key_id, model, body, input_items, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET model = excluded.model, body = excluded.body, input_items = excluded.input_items,
    created_at = excluded.created_at, expires_at = excluded.expires_at
WHERE responses.key_id = excluded.key_id
"""


class SqliteStore:
    """The `core.ports.Store` port on one SQLite database file.

    Beyond the port: `upgrade()` and `current_version()` (for `raven db upgrade`), and a
    `page_size` keyword on `export_usage`. Several instances (or processes) may share one file.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._opened = False

    @property
    def path(self) -> Path:
        return self._path

    # ------------------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Connects (creating the parent directory and file) and applies pending migrations."""
        if self._opened:
            return
        try:
            await self.upgrade()
        except BaseException:
            await self.close()
            raise
        self._opened = True

    async def close(self) -> None:
        """Closes the connection and stops the worker thread. Safe to call twice."""
        executor, self._executor = self._executor, None
        self._opened = False
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            executor.shutdown(wait=False)

    async def upgrade(self) -> list[int]:
        """Applies every pending migration (connecting first if needed); returns their versions.

        Raises RuntimeError if the database was migrated by a newer Raven than this one.
        """
        await self._ensure_connected()
        return await self._run(self._migrate_sync)

    async def current_version(self) -> int:
        """The highest applied schema version (0 for a database never migrated)."""
        await self._ensure_connected()
        return await self._run(self._version_sync)

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
            None if key.credits is None else _credits(key.credits),
            to_units(key.credits_used),
            to_units(key.credits_reserved),
            key.admin,
            key.revoked,
            key.created_at,
            *_governance_params(key),
        )
        try:
            await self._execute(_INSERT_KEY, params)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"key {key.id!r} (or its secret hash) already exists") from exc

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._fetchone(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return None if row is None else _key_from_row(row)

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The authentication hot path: one lookup on the unique secret_hash index (then on the
        partial previous-hash index: `!= ''` lets SQLite use it, and a never-rotated key's empty
        previous hash never matches)."""
        row = await self._fetchone(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?1 "
            f"UNION ALL SELECT {_KEY_COLUMNS} FROM api_keys WHERE previous_secret_hash = ?1 "
            "AND previous_secret_hash != '' LIMIT 1",
            (secret_hash,),
        )
        return None if row is None else _key_from_row(row)

    async def list_keys(self, include_revoked: bool = False, *, limit: int | None = None,
                        after: str | None = None) -> list[ApiKey]:
        """Keys in creation order; revoked ones only when asked for. `after` (a key id) starts the
        page after that key (keyset pagination: an unknown id gives an empty page); `limit` caps it."""
        where = [] if include_revoked else ["revoked = 0"]
        params: list[Any] = []
        if after is not None:
            where.append("(created_at, id) > (SELECT created_at, id FROM api_keys WHERE id = ?)")
            params.append(after)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        tail = ""
        if limit is not None:
            tail = " LIMIT ?"
            params.append(max(0, limit))
        rows = await self._fetchall(f"SELECT {_KEY_COLUMNS} FROM api_keys {clause}ORDER BY created_at, id{tail}",
                                    params)
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
            changes["credits"] = _credits(credits)
        if revoked is not None:
            changes["revoked"] = revoked
        if not changes:
            return await self.get_key(key_id)
        assignments = ", ".join(f"{column} = ?" for column in changes)
        rows = await self._fetchall(
            f"UPDATE api_keys SET {assignments} WHERE id = ? RETURNING {_KEY_COLUMNS}",
            (*changes.values(), key_id),
        )
        return _key_from_row(rows[0]) if rows else None

    async def count_keys(self) -> int:
        """All stored keys, revoked ones included."""
        row = await self._fetchone("SELECT COUNT(*) FROM api_keys", ())
        return int(row[0]) if row is not None else 0

    async def rotate_key(self, key_id: str, secret_hash: str, prefix: str,
                         previous_expires_at: float) -> ApiKey | None:
        """Gives the key a new secret; the current one stays valid until `previous_expires_at`
        (replacing any earlier previous secret). Returns the key as updated, or None."""
        rows = await self._fetchall(
            "UPDATE api_keys SET previous_secret_hash = secret_hash, previous_expires_at = ?, "
            f"secret_hash = ?, prefix = ? WHERE id = ? RETURNING {_KEY_COLUMNS}",
            (previous_expires_at, secret_hash, prefix, key_id),
        )
        return _key_from_row(rows[0]) if rows else None

    async def budget_usage(self, key_id: str, window_start: float) -> tuple[Decimal, Decimal]:
        """(used, reserved) of the key's budget window starting at `window_start` (0, 0 if unused)."""
        row = await self._fetchone("SELECT used, reserved FROM budget_windows WHERE key_id = ? AND window_start = ?",
                                   (key_id, window_start))
        return (Decimal(0), Decimal(0)) if row is None else (from_units(row[0]), from_units(row[1]))

    async def claim_alert(self, key_id: str, kind: str, period_start: float, threshold: int, *,
                          body: bytes = b"", lease_until: float = 0.0) -> bool:
        """Records that `threshold` was crossed for (key, kind, window); True only for the first caller."""
        return await self._execute(
            "INSERT INTO key_alerts (key_id, kind, period_start, threshold, created_at, body, state, lease_until)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (key_id, kind, period_start, threshold, time.time(), body, "pending" if body else "delivered",
             lease_until)) == 1

    async def take_stale_alerts(self, now: float, lease_until: float, limit: int = 100) -> list[AlertClaim]:
        rows = await self._fetchall(
            "UPDATE key_alerts SET lease_until = ? WHERE rowid IN (SELECT rowid FROM key_alerts"
            " WHERE state = 'pending' AND lease_until <= ? ORDER BY lease_until LIMIT ?)"
            " RETURNING key_id, kind, period_start, threshold, body", (lease_until, now, limit))
        return [AlertClaim(key_id=r[0], kind=r[1], period_start=float(r[2]), threshold=int(r[3]), body=bytes(r[4]))
                for r in rows]

    async def finish_alert(self, claim: AlertClaim, *, delivered: bool) -> None:
        await self._execute(
            "UPDATE key_alerts SET state = ? WHERE key_id = ? AND kind = ? AND period_start = ? AND threshold = ?",
            ("delivered" if delivered else "failed", claim.key_id, claim.kind, claim.period_start, claim.threshold))

    # --------------------------------------------------------------------------------- credits
    async def reserve_hold(self, hold: CreditHold) -> bool:
        """One transaction: the conditional reservation UPDATE and, iff it fit, the hold row."""
        units = _non_negative(hold.amount, "amount")
        window = hold.budget_window
        row = (hold.id, hold.key_id, units, hold.owner, hold.expires_at, time.time(), window)

        def reserve(conn: sqlite3.Connection) -> bool:
            if conn.execute(_RESERVE, (units, hold.key_id)).rowcount != 1:
                return False
            if window is not None:
                conn.execute(_OPEN_WINDOW, (hold.key_id, window))
                if conn.execute(_RESERVE_WINDOW, (units, hold.key_id, window)).rowcount != 1:
                    raise _DoesNotFit
            conn.execute(_INSERT_HOLD, row)
            return True

        try:
            return await self._transaction(reserve)
        except _DoesNotFit:
            return False

    async def release_hold(self, hold_id: str) -> bool:
        return await self._transaction(lambda conn: _release(conn, conn.execute(_DROP_HOLD, (hold_id,)).fetchall()) > 0)

    async def renew_holds(self, owner: str, expires_at: float) -> int:
        return await self._execute("UPDATE credit_holds SET expires_at = ? WHERE owner = ?", (expires_at, owner))

    async def sweep_holds(self, now: float) -> int:
        return await self._transaction(lambda conn: _release(conn, conn.execute(_DROP_EXPIRED, (now,)).fetchall()))

    async def list_holds(self, key_id: str) -> list[CreditHold]:
        rows = await self._fetchall(
            "SELECT id, key_id, amount, owner, expires_at, budget_window FROM credit_holds WHERE key_id = ? "
            "ORDER BY id", (key_id,))
        return [CreditHold(id=r[0], key_id=r[1], amount=from_units(r[2]), owner=r[3], expires_at=r[4],
                           budget_window=r[5]) for r in rows]

    # ----------------------------------------------------------------------------------- usage
    async def settle(self, settlements: Sequence[Settlement]) -> int:
        """The whole batch in one transaction (see `core.ports.UsageStore.settle`)."""
        if not settlements:
            return 0
        rows = [(_usage_params(s.record), s.hold_id, s.budget_window, s.partial) for s in settlements]
        return await self._transaction(lambda conn: _settle(conn, rows))

    async def get_usage(self, record_id: str) -> UsageRecord | None:
        row = await self._fetchone(f"SELECT {_USAGE_COLUMNS} FROM usage_records WHERE id = ?", (record_id,))
        return None if row is None else _usage_from_row(row)

    async def aggregate_usage(self, key_id: str | None, start: float | None, end: float | None,
                              group_by: frozenset[str]) -> list[UsageAggregate]:
        """See `core.ports.UsageStore.aggregate_usage`: whole days and hours from the rollup, the
        partial hours at the edges from the records (`storage.rollup.plan`); one read on the
        store's thread."""
        p = rollup.plan(start, end)
        query = rollup.rollup_query(key_id, p, group_by, _numbered)
        raw = rollup.raw_query(key_id, p.raw, _numbered) if p.raw else None

        def run() -> list[UsageAggregate]:
            groups: dict[tuple[Any, ...], UsageAggregate] = {}
            if query is not None:
                sql, params, dims = query
                rollup.merge_rollup_rows(groups, group_by, dims, self._db.execute(sql, params), from_units)
            if raw is not None:
                rollup.merge_raw_rows(groups, group_by, self._db.execute(*raw), from_units)
            return rollup.sorted_groups(groups)

        return await self._run(run)

    async def usage_samples(self, key_id: str | None, start: float | None, end: float | None,
                            limit: int) -> list[UsageSample]:
        rows = await self._fetchall(*rollup.sample_query(key_id, start, end, limit, _numbered))
        return [UsageSample(key_id=r[0], model=r[1], provider=r[2], tags=rollup.decode_tags(r[3]), created_at=r[4],
                            latency_ms=r[5], ttft_ms=r[6]) for r in rows]

    async def list_usage(self, key_id: str | None, *, model: str | None = None, status: str | None = None,
                         since: float | None = None, until: float | None = None,
                         before: tuple[float, str] | None = None, limit: int = 20) -> list[UsageRecord]:
        rows = await self._fetchall(*rollup.list_query(
            _USAGE_COLUMNS, key_id, model=model, status=status, since=since, until=until, before=before,
            limit=limit, placeholder=_numbered))
        return [_usage_from_row(row) for row in rows]

    async def export_usage(self, *, page_size: int = EXPORT_PAGE_SIZE) -> AsyncIterator[UsageRecord]:
        """Every usage record in (created_at, id) order, read in keyset-paged chunks."""
        if page_size < 1:
            raise ValueError("page_size must be positive")
        query = f"SELECT {_USAGE_COLUMNS} FROM usage_records"
        order = " ORDER BY created_at, id LIMIT ?"
        rows = await self._fetchall(query + order, (page_size,))
        while rows:
            for row in rows:
                yield _usage_from_row(row)
            if len(rows) < page_size:
                return
            last = rows[-1]
            rows = await self._fetchall(
                query + " WHERE (created_at, id) > (?, ?)" + order,
                (last["created_at"], last["id"], page_size),
            )

    # ----------------------------------------------------------------------------------- files
    async def put_file(self, file: StoredFile) -> None:
        """Stores a blob. Raises ValueError if the id is already stored."""
        try:
            await self._execute(
                "INSERT INTO files (id, key_id, mime_type, data, created_at) VALUES (?, ?, ?, ?, ?)",
                (file.id, file.key_id, file.mime_type, file.data, file.created_at),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"file {file.id!r} already exists") from exc

    async def get_file(self, file_id: str) -> StoredFile | None:
        row = await self._fetchone("SELECT id, key_id, mime_type, data, created_at FROM files WHERE id = ?", (file_id,))
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
        return await self._execute(_PUT_RESPONSE, (r.id, r.key_id, r.model, r.body, r.input_items, r.created_at,
                                                   r.expires_at)) == 1

    async def get_response(self, response_id: str, key_id: str, now: float) -> StoredResponse | None:
        row = await self._fetchone(
            "SELECT id, key_id, model, body, input_items, created_at, expires_at FROM responses"
            " WHERE id = ? AND key_id = ? AND expires_at > ?", (response_id, key_id, now))
        if row is None:
            return None
        return StoredResponse(id=row[0], key_id=row[1], model=row[2], body=row[3], input_items=row[4],
                              created_at=row[5], expires_at=row[6])

    async def delete_response(self, response_id: str, key_id: str, now: float) -> bool:
        return await self._execute("DELETE FROM responses WHERE id = ? AND key_id = ? AND expires_at > ?",
                                   (response_id, key_id, now)) == 1

    async def delete_expired_responses(self, now: float) -> int:
        return await self._execute("DELETE FROM responses WHERE expires_at <= ?", (now,))

    async def delete_files_before(self, cutoff: float, limit: int = 500) -> int:
        return await self._execute(
            "DELETE FROM files WHERE id IN (SELECT id FROM files WHERE created_at < ? LIMIT ?)", (cutoff, limit)
        )

    # ----------------------------------------------------------------------------- video tasks
    async def create_video_task(self, task: VideoTask) -> tuple[VideoTask, bool]:
        """Inserts the task, or returns the stored one with the same non-empty (key_id,
        request_id) and False. Raises ValueError if the task id is already stored."""
        params = _video_params(task)

        def create(conn: sqlite3.Connection) -> tuple[VideoTask, bool]:
            if task.request_id:
                existing = conn.execute(
                    f"SELECT {_VIDEO_COLUMNS} FROM video_tasks WHERE key_id = ? AND request_id = ?",
                    (task.key_id, task.request_id),
                ).fetchone()
                if existing is not None:
                    return _video_from_row(existing), False
            try:
                row = conn.execute(_INSERT_VIDEO, params).fetchall()[0]
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"video task {task.id!r} already exists") from exc
            return _video_from_row(row), True

        return await self._transaction(create)

    async def get_video_task(self, task_id: str) -> VideoTask | None:
        row = await self._fetchone(f"SELECT {_VIDEO_COLUMNS} FROM video_tasks WHERE id = ?", (task_id,))
        return None if row is None else _video_from_row(row)

    async def list_video_tasks(self, key_id: str, limit: int, before: tuple[float, str] | None) -> list[VideoTask]:
        """The key's tasks, newest first, strictly before the (created_at, id) cursor if given."""
        if limit < 1:
            return []
        query = f"SELECT {_VIDEO_COLUMNS} FROM video_tasks WHERE key_id = ?"
        params: list[Any] = [key_id]
        if before is not None:
            query += " AND (created_at, id) < (?, ?)"
            params.extend(before)
        rows = await self._fetchall(query + " ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit])
        return [_video_from_row(row) for row in rows]

    async def claim_video_task(self, worker: str, now: float, lease_seconds: float) -> VideoTask | None:
        """Leases the oldest queued or running task whose lease has expired (lease_until < now;
        a fresh or released task has lease_until 0) to `worker` until now + lease_seconds.

        A queued task stays unclaimable while its lease runs, so a claim followed by the worker's
        state update cannot be raced. One UPDATE ... RETURNING re-checks the condition on the
        chosen row under the write lock, so no two claimers (in any process) get the same task.
        """
        rows = await self._fetchall(_CLAIM, {"worker": worker, "now": now, "until": now + lease_seconds})
        return _video_from_row(rows[0]) if rows else None

    async def update_video_task(self, task: VideoTask, worker: str) -> bool:
        """Writes every mutable field (state, progress, provider, upstream id, files, error,
        money, completion time, lease) iff `worker` holds the lease; the request fields are immutable."""
        return await self._execute(_UPDATE_VIDEO, _video_update_params(task, worker)) == 1

    async def renew_video_lease(self, task_id: str, worker: str, lease_until: float) -> bool:
        return await self._execute(
            f"UPDATE video_tasks SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state IN {_PENDING}",
            (lease_until, task_id, worker)) == 1

    async def finish_video_task(self, task: VideoTask, worker: str, settlement: Settlement) -> bool:
        params = _video_update_params(task, worker)
        row = (_usage_params(settlement.record), settlement.hold_id, settlement.budget_window, settlement.partial)

        def finish(conn: sqlite3.Connection) -> bool:
            if conn.execute(_UPDATE_VIDEO, params).rowcount != 1:
                return False
            _settle(conn, [row])
            return True

        return await self._transaction(finish)

    async def release_video_tasks(self, worker: str) -> int:
        """Drops `worker`'s leases on unfinished tasks; returns how many it held."""
        return await self._execute(_RELEASE, (worker,))

    # ------------------------------------------------------------------------- worker plumbing
    async def _ensure_connected(self) -> None:
        if self._executor is not None:
            return
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            wanted = ".".join(map(str, MIN_SQLITE_VERSION))
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old; Raven needs {wanted}+")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raven-sqlite")
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._connect_sync)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(*args)` on the store's worker thread. The database file being unusable (locked
        past busy_timeout, I/O error, disk full) is StoreUnavailable; the detail goes to the log."""
        if self._executor is None:
            raise RuntimeError("SqliteStore is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.OperationalError as exc:
            log.warning("sqlite store unavailable: %s", exc)
            raise StoreUnavailable() from exc

    async def _execute(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> int:
        """One autocommit statement; returns the number of rows it changed."""
        return await self._run(lambda: self._db.execute(sql, params).rowcount)

    async def _fetchone(self, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
        return await self._run(lambda: self._db.execute(sql, params).fetchone())

    async def _fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[sqlite3.Row]:
        return await self._run(lambda: self._db.execute(sql, params).fetchall())

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `fn(conn)` inside BEGIN IMMEDIATE ... COMMIT on the worker thread."""
        return await self._run(self._in_transaction, fn)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteStore is not open")
        return self._conn

    # The methods below run on the worker thread only.
    def _connect_sync(self) -> None:
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; transactions are explicit BEGIN IMMEDIATE ... COMMIT.
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _version_sync(self) -> int:
        conn = self._db
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (migrations.SCHEMA_VERSION_TABLE,),
        ).fetchone()
        if exists is None:
            return 0
        row = conn.execute(f"SELECT MAX(version) FROM {migrations.SCHEMA_VERSION_TABLE}").fetchone()
        return int(row[0] or 0)

    def _migrate_sync(self) -> list[int]:
        table = migrations.SCHEMA_VERSION_TABLE
        known = migrations.latest_version(migrations.SQLITE)
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = self._version_sync()
        if current > known:
            raise RuntimeError(f"database schema version {current} is newer than this Raven supports ({known})")
        applied: list[int] = []
        for migration in migrations.SQLITE:

            def apply(conn: sqlite3.Connection, migration: migrations.Migration = migration) -> bool:
                # Re-checked inside the write transaction: another process may have just applied it.
                done = conn.execute(f"SELECT 1 FROM {table} WHERE version = ?", (migration.version,))
                if done.fetchone() is not None:
                    return False
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {table} (version, description, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.description, time.time()),
                )
                return True

            if self._in_transaction(apply):
                applied.append(migration.version)
        return applied


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switches the file to WAL. The switch needs an exclusive lock and SQLite reports a clash
    (e.g. two processes creating the file at once) as "locked" without waiting, so retry here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# ------------------------------------------------------------------------------------ row mapping
def _statements(sql: str) -> Iterator[str]:
    """Splits a migration script into complete statements (triggers with inner `;` included)."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")


class _DoesNotFit(Exception):
    """Raised inside a reservation transaction to roll it back (the budget window is full)."""


def _release(conn: sqlite3.Connection, dropped: Sequence[sqlite3.Row]) -> int:
    """Takes the amounts of just-deleted holds off their keys' (and budget windows') reservations."""
    per_key: dict[str, int] = {}
    per_window: dict[tuple[str, float], int] = {}
    for key_id, amount, window in dropped:
        per_key[key_id] = per_key.get(key_id, 0) + amount
        if window is not None:
            per_window[(key_id, window)] = per_window.get((key_id, window), 0) + amount
    for key_id, amount in per_key.items():
        conn.execute(_APPLY, (amount, 0, key_id))
    for (key_id, window), amount in per_window.items():
        conn.execute(_APPLY_WINDOW, (amount, 0, key_id, window))
    return len(dropped)


def _settle(conn: sqlite3.Connection, rows: Sequence[tuple[tuple[Any, ...], str, float | None, bool]]) -> int:
    """Inside a transaction: inserts each new record, drops its hold, charges its cost (to the
    key's credits and, when it was admitted under a budget, to that budget window)."""
    released: dict[str, int] = {}
    charged: dict[str, int] = {}
    windows: dict[tuple[str, float], list[int]] = {}  # (key, start) -> [released, charged]
    deltas: dict[rollup.RowKey, rollup.Delta] = {}
    from_slices: dict[str, int] = {}  # slice hold id -> the costs of this batch's records on it
    unnamed: dict[str, int] = {}  # slice hold id -> those of its costs whose settlement named no window
    new = 0
    for params, hold_id, budget_window, partial in rows:
        if conn.execute(_INSERT_USAGE, params).rowcount != 1:
            continue  # settled before: idempotent
        new += 1
        rollup.accumulate(deltas, _USAGE_INDEX, params, 0)
        key_id, cost = params[1], params[8]
        charged[key_id] = charged.get(key_id, 0) + cost
        window = budget_window
        if hold_id and partial:  # a credit slice: one take per slice per batch, below
            from_slices[hold_id] = from_slices.get(hold_id, 0) + cost
            if window is None:  # charged to the slice's window below, as a whole hold's would be
                unnamed[hold_id] = unnamed.get(hold_id, 0) + cost
        elif hold_id:
            for hold_key, amount, hold_window in conn.execute(_DROP_HOLD, (hold_id,)).fetchall():
                released[hold_key] = released.get(hold_key, 0) + amount
                if hold_window is not None:
                    window = hold_window
                    windows.setdefault((hold_key, hold_window), [0, 0])[0] += amount
        if window is not None:
            windows.setdefault((key_id, window), [0, 0])[1] += cost
    for hold_id, cost in from_slices.items():
        for hold_key, amount, hold_window in _take_from_slice(conn, hold_id, cost):
            released[hold_key] = released.get(hold_key, 0) + amount
            if hold_window is not None:
                books = windows.setdefault((hold_key, hold_window), [0, 0])
                books[0] += amount
                books[1] += unnamed.get(hold_id, 0)
    for key_id in charged.keys() | released.keys():
        conn.execute(_APPLY, (released.get(key_id, 0), charged.get(key_id, 0), key_id))
    for (key_id, window), (freed, spent) in windows.items():
        conn.execute(_OPEN_WINDOW, (key_id, window))
        conn.execute(_APPLY_WINDOW, (freed, spent, key_id, window))
    if deltas:  # the rollup, in the same transaction as the records it counts
        conn.executemany(_UPSERT_ROLLUP, rollup.upsert_rows(deltas))
    return new


def _take_from_slice(conn: sqlite3.Connection, hold_id: str, cost: int) -> list[tuple[str, int, float | None]]:
    """Requests' share of a credit slice: min(cost, what is left) leaves the slice (the caller
    moves it from reserved to used). Nothing when the slice was already returned or swept."""
    row = conn.execute(_SLICE_ROW, (hold_id,)).fetchone()
    if row is None:
        return []
    key_id, amount, window = row
    take = min(cost, amount)
    conn.execute(_SLICE_TAKE, (take, hold_id))
    return [(key_id, take, window)]


def _video_update_params(task: VideoTask, worker: str) -> tuple[Any, ...]:
    return (
        task.state.value,
        task.progress,
        task.provider,
        task.upstream_task_id,
        _json(task.file_ids),
        _json(task.file_sizes),
        task.error,
        to_units(task.reserved),
        to_units(task.cost),
        task.completed_at,
        task.lease_owner,
        task.lease_until,
        task.id,
        worker,
    )


def _json(values: Sequence[Any]) -> str:
    return msgspec.json.encode(list(values)).decode()


def _non_negative(amount: Decimal, what: str) -> int:
    units = to_units(amount)
    if units < 0:
        raise ValueError(f"{what} must not be negative, got {amount}")
    return units


def _credits(amount: Decimal) -> int:
    return _non_negative(amount, "credits")


def _governance_params(key: ApiKey) -> tuple[Any, ...]:
    return (
        _json(key.models),
        key.expires_at,
        key.tpm,
        None if key.budget is None else _non_negative(key.budget, "budget"),
        key.budget_period,
        _json(key.scopes),
        msgspec.json.encode(key.metadata).decode(),
        key.alert_webhook,
        _json(key.alert_thresholds),
        key.webhook_secret,
        key.previous_secret_hash,
        key.previous_expires_at,
    )


def _patch_columns(patch: KeyPatch | None) -> dict[str, Any]:
    """The column assignments of a KeyPatch (scopes also set `admin`)."""
    if patch is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in patch.changes().items():
        if name in ("models", "scopes", "alert_thresholds"):
            out[name] = _json(value)  # type: ignore[arg-type]
        elif name == "metadata":
            out[name] = msgspec.json.encode(value).decode()
        elif name == "budget":
            out[name] = None if value is None else _non_negative(value, "budget")  # type: ignore[arg-type]
        else:
            out[name] = value
        if name == "scopes":
            out["admin"] = "admin" in value  # type: ignore[operator]
    return out


def _key_from_row(row: sqlite3.Row) -> ApiKey:
    credits = row["credits"]
    budget = row["budget"]
    return ApiKey(
        id=row["id"],
        name=row["name"],
        secret_hash=row["secret_hash"],
        prefix=row["prefix"],
        rpm=row["rpm"],
        concurrency=row["concurrency"],
        credits=None if credits is None else from_units(credits),
        credits_used=from_units(row["credits_used"]),
        credits_reserved=from_units(row["credits_reserved"]),
        admin=bool(row["admin"]),
        revoked=bool(row["revoked"]),
        created_at=row["created_at"],
        models=msgspec.json.decode(row["models"], type=tuple[str, ...]),
        expires_at=row["expires_at"],
        tpm=row["tpm"],
        budget=None if budget is None else from_units(budget),
        budget_period=row["budget_period"],
        scopes=msgspec.json.decode(row["scopes"], type=tuple[str, ...]),
        metadata=msgspec.json.decode(row["metadata"], type=dict[str, str]),
        alert_webhook=row["alert_webhook"],
        alert_thresholds=msgspec.json.decode(row["alert_thresholds"], type=tuple[int, ...]),
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
        to_units(record.cost),
        record.latency_ms,
        record.ttft_ms,
        record.status,
        record.finish_reason,
        record.native_finish_reason,
        record.streamed,
        record.usage_estimated,
        _json(record.attempts),
        record.error,
        record.created_at,
        rollup.encode_tags(record.tags),
        record.cached_tokens,
        record.cache_creation_tokens,
        record.reasoning_tokens,
    )


def _usage_from_row(row: sqlite3.Row) -> UsageRecord:
    return UsageRecord(
        id=row["id"],
        key_id=row["key_id"],
        kind=row["kind"],
        model=row["model"],
        provider=row["provider"],
        upstream_model=row["upstream_model"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost=from_units(row["cost"]),
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        status=row["status"],
        finish_reason=row["finish_reason"],
        native_finish_reason=row["native_finish_reason"],
        streamed=bool(row["streamed"]),
        usage_estimated=bool(row["usage_estimated"]),
        attempts=msgspec.json.decode(row["attempts"], type=tuple[str, ...]),
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
        _json(task.file_ids),
        _json(task.file_sizes),
        task.error,
        to_units(task.reserved),
        to_units(task.cost),
        task.created_at,
        task.completed_at,
        task.lease_owner,
        task.lease_until,
        task.hold_id,
        rollup.encode_tags(task.tags),
    )


def _video_from_row(row: sqlite3.Row) -> VideoTask:
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
        file_ids=msgspec.json.decode(row["file_ids"], type=tuple[str, ...]),
        file_sizes=msgspec.json.decode(row["file_sizes"], type=tuple[int, ...]),
        error=row["error"],
        reserved=from_units(row["reserved"]),
        cost=from_units(row["cost"]),
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        hold_id=row["hold_id"],
        tags=rollup.decode_tags(row["tags"]),
    )
