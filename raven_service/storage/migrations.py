"""Versioned schema migrations, one ordered list per backend.

Each backend keeps a `schema_version` table (version, description, applied_at) and applies,
in order and each in its own transaction, every migration whose version is not recorded yet.
Migrations are append-only: never edit or renumber a released one, add a new version instead.

Money: SQLite columns hold integer pico-credits (see `storage.money`); PostgreSQL columns are
NUMERIC(38, 12) exact decimals. On both, NULL credits = unlimited. Times are unix seconds
(REAL / DOUBLE PRECISION). PostgreSQL id and model columns use the "C" collation so orderings and
keyset cursors compare bytewise exactly as SQLite's BINARY collation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from raven_service.core.latency import BOUNDS_MS
from raven_service.storage.rollup import HIST_COLUMNS, KEY_COLUMNS, LATENCY_COLUMNS, SUM_COLUMNS, TTFT_COLUMNS


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

# v2: credit holds. The bare `credits_reserved` counter of v1 cannot be reconciled with anything, so
# it restarts at zero: from here on it is always the sum of the key's live rows in credit_holds.
_SQLITE_V2 = """
CREATE TABLE credit_holds (
    id         TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    owner      TEXT NOT NULL DEFAULT '',
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL
) STRICT;
CREATE INDEX credit_holds_key ON credit_holds (key_id);
CREATE INDEX credit_holds_owner ON credit_holds (owner) WHERE owner != '';
CREATE INDEX credit_holds_expiry ON credit_holds (expires_at);
UPDATE api_keys SET credits_reserved = 0;
ALTER TABLE video_tasks ADD COLUMN hold_id TEXT NOT NULL DEFAULT '';
"""

# v3: key governance (SPEC §11). Lists and tags are JSON text; `scopes` keeps `admin` in step. Budget
# spend is exact per calendar window: `budget_windows` holds each window's used and reserved amounts
# (a hold names the window it reserved in, so settling and releasing it touch that window's row).
# `key_alerts` remembers each alert threshold crossed per window: one INSERT decides, across all
# instances, who delivers it (at most once).
_SQLITE_V3 = """
ALTER TABLE api_keys ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN expires_at REAL;
ALTER TABLE api_keys ADD COLUMN tpm INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN budget INTEGER;
ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '["inference"]';
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN alert_webhook TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN alert_thresholds TEXT NOT NULL DEFAULT '[80,95,100]';
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN previous_secret_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN previous_expires_at REAL NOT NULL DEFAULT 0;
UPDATE api_keys SET scopes = '["admin","inference"]' WHERE admin != 0;
CREATE INDEX api_keys_previous_hash ON api_keys (previous_secret_hash) WHERE previous_secret_hash != '';
CREATE INDEX api_keys_created ON api_keys (created_at, id);
CREATE TABLE budget_windows (
    key_id       TEXT NOT NULL,
    window_start REAL NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0,
    reserved     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, window_start)
) STRICT;
ALTER TABLE credit_holds ADD COLUMN budget_window REAL;
CREATE TABLE key_alerts (
    key_id       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    period_start REAL NOT NULL,
    threshold    INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (key_id, kind, period_start, threshold)
) STRICT;
"""

# Stored Responses API responses (`store` + `previous_response_id`): per key, until expires_at.
_SQLITE_V4 = """
CREATE TABLE responses (
    id          TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    model       TEXT NOT NULL,
    body        TEXT NOT NULL,
    input_items TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
) STRICT;
CREATE INDEX responses_expiry ON responses (expires_at);
"""

# v5: the usage rollup (see `storage.rollup`), tags on usage records and video tasks, and the
# (key_id, created_at, id) index that GET /v1/generations pages on. The rollup is backfilled from
# the records already stored. Its bucket columns come from `core.latency.BOUNDS_MS`, frozen by
# this migration: the layout must never change in place.
def _bucket_case(column: str, i: int, *, ttft: bool) -> str:
    low = BOUNDS_MS[i]
    tests = [f"{column} > 0"] if ttft else []
    if i > 0:
        tests.append(f"{column} >= {low}")
    if i + 1 < len(BOUNDS_MS):
        tests.append(f"{column} < {BOUNDS_MS[i + 1]}")
    return f"SUM(CASE WHEN {' AND '.join(tests) or 'TRUE'} THEN 1 ELSE 0 END)"


def _rollup_backfill(bucket_expr: str) -> str:
    cases = [_bucket_case("latency_ms", i, ttft=False) for i in range(len(LATENCY_COLUMNS))]
    cases += [_bucket_case("ttft_ms", i, ttft=True) for i in range(len(TTFT_COLUMNS))]
    columns = ", ".join(KEY_COLUMNS + SUM_COLUMNS + HIST_COLUMNS)
    return "\n".join(
        f"INSERT INTO usage_rollup ({columns}) SELECT {grain}, {bucket_expr.format(grain=grain)}, key_id, model, "
        "provider, tags, COUNT(*), SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), SUM(prompt_tokens), "
        f"SUM(completion_tokens), SUM(cost), {', '.join(cases)} FROM usage_records "
        f"GROUP BY {bucket_expr.format(grain=grain)}, key_id, model, provider, tags;"
        for grain in (3600, 86400)
    )


def _rollup_table(text: str, integer: str, money: str, suffix: str) -> str:
    counts = ",\n".join(f"    {c} {integer} NOT NULL DEFAULT 0" for c in HIST_COLUMNS)
    return f"""
CREATE TABLE usage_rollup (
    grain             {integer} NOT NULL,
    bucket            {integer} NOT NULL,
    key_id            {text} NOT NULL,
    model             {text} NOT NULL,
    provider          {text} NOT NULL,
    tags              {text} NOT NULL,
    requests          {integer} NOT NULL DEFAULT 0,
    errors            {integer} NOT NULL DEFAULT 0,
    prompt_tokens     {integer} NOT NULL DEFAULT 0,
    completion_tokens {integer} NOT NULL DEFAULT 0,
    cost              {money} NOT NULL DEFAULT 0,
{counts},
    PRIMARY KEY (grain, bucket, key_id, model, provider, tags)
){suffix};
CREATE INDEX usage_rollup_key ON usage_rollup (key_id, grain, bucket);
ALTER TABLE usage_records ADD COLUMN tags TEXT NOT NULL DEFAULT '{{}}';
ALTER TABLE video_tasks ADD COLUMN tags TEXT NOT NULL DEFAULT '{{}}';
CREATE INDEX usage_records_key_time_id ON usage_records (key_id, created_at, id);
DROP INDEX usage_records_key_time;
"""


_SQLITE_V5 = _rollup_table("TEXT", "INTEGER", "INTEGER", " STRICT, WITHOUT ROWID") + _rollup_backfill(
    "CAST(created_at / {grain} AS INTEGER) * {grain}"
)
_POSTGRES_V5 = _rollup_table('TEXT COLLATE "C"', "BIGINT", "NUMERIC(38, 12)", "") + _rollup_backfill(
    "(floor(created_at / {grain}) * {grain})::bigint"
)


# v6: token details of a usage record: parts of prompt_tokens (read from / written to a prompt
# cache) and of completion_tokens (reasoning); 0 for records written before.
_SQLITE_V6 = """
ALTER TABLE usage_records ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cache_creation_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
"""
_POSTGRES_V6 = """
ALTER TABLE usage_records ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cache_creation_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;
"""


# v7: an alert's delivery outlives the process that claimed it. The claimer stores the body with
# the claim, `pending` under a lease; delivered or given up, the row says so. A pending row past
# its lease (its claimer died, or its queue was full) is taken over by any instance's sweep.
# Claims from before v7 owe nothing: 'delivered'.
_SQLITE_V7 = """
ALTER TABLE key_alerts ADD COLUMN body BLOB NOT NULL DEFAULT x'';
ALTER TABLE key_alerts ADD COLUMN state TEXT NOT NULL DEFAULT 'delivered';
ALTER TABLE key_alerts ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
CREATE INDEX key_alerts_pending ON key_alerts (lease_until) WHERE state = 'pending';
"""
_POSTGRES_V7 = """
ALTER TABLE key_alerts ADD COLUMN body BYTEA NOT NULL DEFAULT '';
ALTER TABLE key_alerts ADD COLUMN state TEXT NOT NULL DEFAULT 'delivered';
ALTER TABLE key_alerts ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE INDEX key_alerts_pending ON key_alerts (lease_until) WHERE state = 'pending';
"""


SQLITE: tuple[Migration, ...] = (
    Migration(1, "keys, usage records, files, video tasks", _SQLITE_V1),
    Migration(2, "credit holds; video tasks carry their hold", _SQLITE_V2),
    Migration(3, "key governance: models, expiry, tpm, budget windows, scopes, tags, alerts, rotation", _SQLITE_V3),
    Migration(4, "stored Responses API responses", _SQLITE_V4),
    Migration(5, "usage rollup (hour and day) with latency histograms; usage and video tags", _SQLITE_V5),
    Migration(6, "usage records: cached, cache-creation and reasoning token counts", _SQLITE_V6),
    Migration(7, "alert deliveries outlive their claimer: body, state and lease on key_alerts", _SQLITE_V7),
)

_POSTGRES_V1 = """
CREATE TABLE api_keys (
    id               TEXT COLLATE "C" PRIMARY KEY,
    name             TEXT NOT NULL,
    secret_hash      TEXT NOT NULL,
    prefix           TEXT NOT NULL,
    rpm              BIGINT NOT NULL DEFAULT 0,
    concurrency      BIGINT NOT NULL DEFAULT 0,
    credits          NUMERIC(38, 12),
    credits_used     NUMERIC(38, 12) NOT NULL DEFAULT 0,
    credits_reserved NUMERIC(38, 12) NOT NULL DEFAULT 0,
    admin            BOOLEAN NOT NULL DEFAULT FALSE,
    revoked          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX api_keys_secret_hash ON api_keys (secret_hash);

CREATE TABLE usage_records (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    key_id               TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    model                TEXT COLLATE "C" NOT NULL,
    provider             TEXT NOT NULL,
    upstream_model       TEXT NOT NULL,
    prompt_tokens        BIGINT NOT NULL,
    completion_tokens    BIGINT NOT NULL,
    cost                 NUMERIC(38, 12) NOT NULL,
    latency_ms           BIGINT NOT NULL,
    ttft_ms              BIGINT NOT NULL,
    status               TEXT NOT NULL,
    finish_reason        TEXT NOT NULL,
    native_finish_reason TEXT NOT NULL,
    streamed             BOOLEAN NOT NULL,
    usage_estimated      BOOLEAN NOT NULL,
    attempts             TEXT[] NOT NULL DEFAULT '{}',
    error                TEXT NOT NULL,
    created_at           DOUBLE PRECISION NOT NULL
);
CREATE INDEX usage_records_key_time ON usage_records (key_id, created_at);
CREATE INDEX usage_records_time ON usage_records (created_at, id);

CREATE TABLE files (
    id         TEXT COLLATE "C" PRIMARY KEY,
    key_id     TEXT NOT NULL,
    mime_type  TEXT NOT NULL,
    data       BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE video_tasks (
    id               TEXT COLLATE "C" PRIMARY KEY,
    key_id           TEXT NOT NULL,
    model            TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    seconds          BIGINT NOT NULL,
    width            BIGINT NOT NULL,
    height           BIGINT NOT NULL,
    request_id       TEXT NOT NULL DEFAULT '',
    seed             BIGINT,
    image            BYTEA,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    progress         BIGINT NOT NULL DEFAULT 0,
    provider         TEXT NOT NULL DEFAULT '',
    upstream_task_id TEXT NOT NULL DEFAULT '',
    file_ids         TEXT[] NOT NULL DEFAULT '{}',
    file_sizes       BIGINT[] NOT NULL DEFAULT '{}',
    error            TEXT NOT NULL DEFAULT '',
    reserved         NUMERIC(38, 12) NOT NULL DEFAULT 0,
    cost             NUMERIC(38, 12) NOT NULL DEFAULT 0,
    created_at       DOUBLE PRECISION NOT NULL,
    completed_at     DOUBLE PRECISION,
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_until      DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX video_tasks_request ON video_tasks (key_id, request_id) WHERE request_id <> '';
CREATE INDEX video_tasks_key_time ON video_tasks (key_id, created_at, id);
CREATE INDEX video_tasks_pending ON video_tasks (created_at, id) WHERE state IN ('queued', 'running');
"""

# PostgreSQL gets its own list (NUMERIC(38, 12) money, BYTEA, arrays, DOUBLE PRECISION times); same
# versions and meaning as SQLITE so `raven db upgrade` reports the same numbers on both backends.
_POSTGRES_V2 = """
CREATE TABLE credit_holds (
    id         TEXT COLLATE "C" PRIMARY KEY,
    key_id     TEXT NOT NULL,
    amount     NUMERIC(38, 12) NOT NULL CHECK (amount >= 0),
    owner      TEXT NOT NULL DEFAULT '',
    expires_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX credit_holds_key ON credit_holds (key_id);
CREATE INDEX credit_holds_owner ON credit_holds (owner) WHERE owner <> '';
CREATE INDEX credit_holds_expiry ON credit_holds (expires_at);
UPDATE api_keys SET credits_reserved = 0;
ALTER TABLE video_tasks ADD COLUMN hold_id TEXT NOT NULL DEFAULT '';
"""

_POSTGRES_V3 = """
ALTER TABLE api_keys ADD COLUMN models TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN expires_at DOUBLE PRECISION;
ALTER TABLE api_keys ADD COLUMN tpm BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN budget NUMERIC(38, 12);
ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN scopes TEXT[] NOT NULL DEFAULT '{inference}';
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN alert_webhook TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN alert_thresholds BIGINT[] NOT NULL DEFAULT '{80,95,100}';
ALTER TABLE api_keys ADD COLUMN webhook_secret TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN previous_secret_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN previous_expires_at DOUBLE PRECISION NOT NULL DEFAULT 0;
UPDATE api_keys SET scopes = '{admin,inference}' WHERE admin;
CREATE INDEX api_keys_previous_hash ON api_keys (previous_secret_hash) WHERE previous_secret_hash <> '';
CREATE INDEX api_keys_created ON api_keys (created_at, id);
CREATE TABLE budget_windows (
    key_id       TEXT COLLATE "C" NOT NULL,
    window_start DOUBLE PRECISION NOT NULL,
    used         NUMERIC(38, 12) NOT NULL DEFAULT 0,
    reserved     NUMERIC(38, 12) NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, window_start)
);
ALTER TABLE credit_holds ADD COLUMN budget_window DOUBLE PRECISION;
CREATE TABLE key_alerts (
    key_id       TEXT COLLATE "C" NOT NULL,
    kind         TEXT NOT NULL,
    period_start DOUBLE PRECISION NOT NULL,
    threshold    BIGINT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_id, kind, period_start, threshold)
);
"""

_POSTGRES_V4 = """
CREATE TABLE responses (
    id          TEXT COLLATE "C" PRIMARY KEY,
    key_id      TEXT NOT NULL,
    model       TEXT NOT NULL,
    body        TEXT NOT NULL,
    input_items TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX responses_expiry ON responses (expires_at);
"""

POSTGRES: tuple[Migration, ...] = (
    Migration(1, "keys, usage records, files, video tasks", _POSTGRES_V1),
    Migration(2, "credit holds; video tasks carry their hold", _POSTGRES_V2),
    Migration(3, "key governance: models, expiry, tpm, budget windows, scopes, tags, alerts, rotation", _POSTGRES_V3),
    Migration(4, "stored Responses API responses", _POSTGRES_V4),
    Migration(5, "usage rollup (hour and day) with latency histograms; usage and video tags", _POSTGRES_V5),
    Migration(6, "usage records: cached, cache-creation and reasoning token counts", _POSTGRES_V6),
    Migration(7, "alert deliveries outlive their claimer: body, state and lease on key_alerts", _POSTGRES_V7),
)


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
