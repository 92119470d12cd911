"""Versioned schema migrations, one ordered list per backend.

Each backend keeps a `schema_version` table (version, description, applied_at) and applies,
in order and each in its own transaction, every migration whose version is not recorded yet.
Migrations are append-only: never edit or renumber a released one, add a new version instead.

Money columns hold integer pico-credits (see `storage.money`); NULL credits = unlimited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Migration(NamedTuple):
    """One schema step. `sql` may hold several statements separated by semicolons."""

    version: int
    description: str
    sql: str


SCHEMA_VERSION_TABLE = "schema_version"

_SQLITE_V1 = """
CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    secret_hash      TEXT NOT NULL,
    prefix           TEXT NOT NULL,
    rpm              INTEGER NOT NULL DEFAULT 0,
    concurrency      INTEGER NOT NULL DEFAULT 0,
    credits          INTEGER,
    credits_used     INTEGER NOT NULL DEFAULT 0,
    credits_reserved INTEGER NOT NULL DEFAULT 0,
    admin            INTEGER NOT NULL DEFAULT 0,
    revoked          INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL
) STRICT;
CREATE UNIQUE INDEX api_keys_secret_hash ON api_keys (secret_hash);

CREATE TABLE usage_records (
    id                   TEXT PRIMARY KEY,
    key_id               TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    model                TEXT NOT NULL,
    provider             TEXT NOT NULL,
    upstream_model       TEXT NOT NULL,
    prompt_tokens        INTEGER NOT NULL,
    completion_tokens    INTEGER NOT NULL,
    cost                 INTEGER NOT NULL,
    latency_ms           INTEGER NOT NULL,
    ttft_ms              INTEGER NOT NULL,
    status               TEXT NOT NULL,
    finish_reason        TEXT NOT NULL,
    native_finish_reason TEXT NOT NULL,
    streamed             INTEGER NOT NULL,
    usage_estimated      INTEGER NOT NULL,
    attempts             TEXT NOT NULL,
    error                TEXT NOT NULL,
    created_at           REAL NOT NULL
) STRICT;
CREATE INDEX usage_records_key_time ON usage_records (key_id, created_at);
CREATE INDEX usage_records_time ON usage_records (created_at, id);

CREATE TABLE files (
    id         TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    mime_type  TEXT NOT NULL,
    data       BLOB NOT NULL,
    created_at REAL NOT NULL
) STRICT;

CREATE TABLE video_tasks (
    id               TEXT PRIMARY KEY,
    key_id           TEXT NOT NULL,
    model            TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    seconds          INTEGER NOT NULL,
    width            INTEGER NOT NULL,
    height           INTEGER NOT NULL,
    request_id       TEXT NOT NULL DEFAULT '',
    seed             INTEGER,
    image            BLOB,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    progress         INTEGER NOT NULL DEFAULT 0,
    provider         TEXT NOT NULL DEFAULT '',
    upstream_task_id TEXT NOT NULL DEFAULT '',
    file_ids         TEXT NOT NULL DEFAULT '[]',
    file_sizes       TEXT NOT NULL DEFAULT '[]',
    error            TEXT NOT NULL DEFAULT '',
    reserved         INTEGER NOT NULL DEFAULT 0,
    cost             INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    completed_at     REAL,
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_until      REAL NOT NULL DEFAULT 0
) STRICT;
CREATE UNIQUE INDEX video_tasks_request ON video_tasks (key_id, request_id) WHERE request_id != '';
CREATE INDEX video_tasks_key_time ON video_tasks (key_id, created_at, id);
CREATE INDEX video_tasks_pending ON video_tasks (created_at, id) WHERE state IN ('queued', 'running');
"""

SQLITE: tuple[Migration, ...] = (Migration(1, "keys, usage records, files, video tasks", _SQLITE_V1),)

# PostgreSQL gets its own list (BIGINT pico-credits, BYTEA, DOUBLE PRECISION times); same versions
# and meaning as SQLITE so `raven db upgrade` reports the same numbers on both backends.
POSTGRES: tuple[Migration, ...] = ()


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version a fully migrated database reports (0 for an empty list)."""
    return migrations[-1].version if migrations else 0


def check_order(migrations: Sequence[Migration]) -> None:
    """Raises ValueError unless versions run 1, 2, 3, ... without gaps or repeats."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.version} out of order: expected version {expected}")


check_order(SQLITE)
check_order(POSTGRES)
