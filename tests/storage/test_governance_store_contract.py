"""The key-governance part of the `Store` contract (SPEC §11, migration 3): every backend in
store_backends.BACKENDS must pass all of it.

Covers the governance fields of `ApiKey` (insert / get / update with `KeyPatch` / list), rotation
with a grace window, keyset pagination of keys, budget windows (`CreditHold.budget_window`,
`Settlement.budget_window`, `CreditStore.budget_usage`), credit slices in a window, and
`CreditStore.claim_alert`.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from store_backends import Backend, MigratingStore, OpenStore

from raven_service.core.errors import Unauthenticated
from raven_service.core.types import ApiKey, CreditHold, KeyPatch, Settlement, UsageRecord
from raven_service.policy.auth import Authenticator, hash_secret
from raven_service.policy.governance import budget_window
from raven_service.storage import migrations

D = Decimal
NOW = 1_796_342_400.0  # 2026-12-04T00:00:00Z
DAY_1, _ = budget_window("day", NOW + 3600)  # 2026-12-04
DAY_2, _ = budget_window("day", NOW + 86_400 + 3600)  # 2026-12-05


def make_key(n: int = 1, **fields: Any) -> ApiKey:
    values: dict[str, Any] = {
        "id": f"key_{n:03}",
        "name": f"key {n}",
        "secret_hash": f"{n:064x}",
        "prefix": f"rk-{n:04}",
        "created_at": 1_700_000_000.0 + n,
    }
    return ApiKey(**(values | fields))


def governed_key(n: int = 1, **fields: Any) -> ApiKey:
    """A key with every governance field set to a non-default value."""
    values: dict[str, Any] = {
        "rpm": 120,
        "concurrency": 4,
        "credits": D("50"),
        "credits_used": D("1.25"),
        "models": ("raven/*", "openai/gpt-4o-mini"),
        "expires_at": 1_798_761_600.5,
        "tpm": 100_000,
        "budget": D("5.000000000001"),
        "budget_period": "week",
        "scopes": ("admin", "inference"),
        "admin": True,
        "metadata": {"team": "search", "env": "prod", "owner": "Ærøskøbing ✓"},
        "alert_webhook": "https://hooks.example/raven",
        "alert_thresholds": (50, 90, 100),
        "webhook_secret": "whsec_" + "s" * 43,
    }
    return make_key(n, **(values | fields))


def usage(n: int, cost: str, key_id: str = "key_001") -> UsageRecord:
    return UsageRecord(id=f"gen_{n:04}", key_id=key_id, model="local/chat", cost=D(cost), created_at=NOW + n)


_holds = itertools.count()


def hold(
    amount: str, key_id: str = "key_001", *, window: float | None = DAY_1, expires_at: float = 2e9, owner: str = "i1"
) -> CreditHold:
    return CreditHold(
        id=f"hold_{next(_holds):06}",
        key_id=key_id,
        amount=D(amount),
        owner=owner,
        expires_at=expires_at,
        budget_window=window,
    )


async def credits_of(store: MigratingStore, key_id: str = "key_001") -> tuple[Decimal, Decimal]:
    key = await store.get_key(key_id)
    assert key is not None
    return key.credits_used, key.credits_reserved


async def books(
    store: MigratingStore, key_id: str = "key_001", window: float = DAY_1
) -> tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal]]:
    """((credits used, reserved), (window used, reserved)), after checking that each reservation is
    exactly the sum of the live holds that reserved in it (SPEC §9)."""
    key_books = await credits_of(store, key_id)
    window_books = await store.budget_usage(key_id, window)
    holds = await store.list_holds(key_id)
    assert key_books[1] == sum((h.amount for h in holds), D(0))
    assert window_books[1] == sum((h.amount for h in holds if h.budget_window == window), D(0))
    return key_books, window_books


# ------------------------------------------------------------------------------- governance fields
async def test_governance_fields_roundtrip_through_get_hash_and_list(store: MigratingStore) -> None:
    key = governed_key(1)
    await store.insert_key(key)
    await store.insert_key(make_key(2))

    assert await store.get_key("key_001") == key
    assert await store.get_key_by_hash(key.secret_hash) == key
    assert await store.list_keys() == [key, make_key(2)]
    plain = await store.get_key("key_002")
    assert plain is not None
    assert (
        plain.models,
        plain.expires_at,
        plain.tpm,
        plain.budget,
        plain.budget_period,
        plain.scopes,
        plain.metadata,
        plain.alert_webhook,
        plain.alert_thresholds,
        plain.webhook_secret,
        plain.previous_secret_hash,
        plain.previous_expires_at,
    ) == ((), None, 0, None, "", ("inference",), {}, "", (80, 95, 100), "", "", 0.0)


async def test_key_patch_changes_only_set_fields_and_clears_nullable_ones(store: MigratingStore) -> None:
    key = governed_key(1)
    await store.insert_key(key)

    # Only tpm is set: nothing else moves (the webhook secret included).
    tpm_only = await store.update_key("key_001", patch=KeyPatch(tpm=7))
    assert tpm_only == msgspec.structs.replace(key, tpm=7)
    assert await store.update_key("key_001", patch=KeyPatch()) == tpm_only  # an empty patch changes nothing

    changed = await store.update_key(
        "key_001",
        rpm=9,
        patch=KeyPatch(
            models=("anthropic/*",),
            expires_at=1_800_000_000.25,
            budget=D("0.000000000001"),
            budget_period="month",
            scopes=("inference",),
            metadata={"team": "ads"},
            alert_webhook="https://other.example/h",
            alert_thresholds=(100,),
        ),
    )
    expected = msgspec.structs.replace(
        key,
        rpm=9,
        tpm=7,
        models=("anthropic/*",),
        expires_at=1_800_000_000.25,
        budget=D("0.000000000001"),
        budget_period="month",
        scopes=("inference",),
        admin=False,
        metadata={"team": "ads"},
        alert_webhook="https://other.example/h",
        alert_thresholds=(100,),
    )
    assert changed == expected
    assert await store.get_key("key_001") == expected

    # None clears the nullable fields; empty values clear the others.
    empty: dict[str, Any] = {"models": (), "expires_at": None, "budget": None, "budget_period": "", "metadata": {},
                             "alert_webhook": "", "alert_thresholds": (), "tpm": 0}
    cleared = await store.update_key("key_001", patch=KeyPatch(**empty))
    expected = msgspec.structs.replace(expected, **empty)
    assert cleared == expected
    assert await store.get_key_by_hash(key.secret_hash) == expected
    assert await store.list_keys() == [expected]
    assert expected.webhook_secret == key.webhook_secret  # no patch field touches it

    admin = await store.update_key("key_001", patch=KeyPatch(scopes=("admin",)))  # scopes keep `admin` in step
    assert admin is not None and admin.scopes == ("admin",) and admin.admin
    assert await store.update_key("key_nope", patch=KeyPatch(tpm=1)) is None


async def test_negative_budget_is_rejected(store: MigratingStore) -> None:
    with pytest.raises(ValueError):
        await store.insert_key(make_key(1, budget=D("-1"), budget_period="day"))
    await store.insert_key(make_key(1))
    with pytest.raises(ValueError):
        await store.update_key("key_001", patch=KeyPatch(budget=D("-0.000000000001")))
    stored = await store.get_key("key_001")
    assert stored is not None and stored.budget is None


async def test_migration_3_gives_older_keys_the_defaults_and_admins_the_admin_scope(backend: Backend) -> None:
    """Keys stored before migration 3 read back with the governance defaults; an admin key gets
    scopes ["admin", "inference"] (the flag and the scopes agree)."""
    before = [m for m in backend.migrations if m.version < 3]
    version_table = migrations.SCHEMA_VERSION_TABLE
    keys = [("key_001", "ops", "a" * 64, True, None), ("key_002", "ci", "b" * 64, False, 5)]
    insert = "INSERT INTO api_keys (id, name, secret_hash, prefix, admin, credits, created_at) VALUES "
    if backend.name == "sqlite":
        path = backend.path  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path)
        conn.execute(
            f"CREATE TABLE {version_table} (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
            "applied_at REAL NOT NULL)"
        )
        for m in before:
            conn.executescript(m.sql)
            conn.execute(f"INSERT INTO {version_table} VALUES (?, ?, 0)", (m.version, m.description))
        conn.executemany(
            insert + "(?, ?, ?, 'rk-old', ?, ?, 1700000000)",
            [(i, n, h, int(a), None if c is None else c * 10**12) for i, n, h, a, c in keys],
        )
        conn.commit()
        conn.close()
    else:
        pg = await backend.connect_at(before)  # type: ignore[attr-defined]
        await pg.executemany(
            insert + "($1, $2, $3, 'rk-old', $4, $5, 1700000000)",
            [(i, n, h, a, None if c is None else D(c)) for i, n, h, a, c in keys],
        )
        await pg.close()
    store = backend.make_store()
    await store.open()
    try:
        old: dict[str, Any] = {"prefix": "rk-old", "created_at": 1_700_000_000.0}
        assert await store.list_keys() == [
            ApiKey(id="key_001", name="ops", secret_hash="a" * 64, **old, admin=True, scopes=("admin", "inference")),
            ApiKey(id="key_002", name="ci", secret_hash="b" * 64, **old, credits=D(5)),
        ]
        assert await store.budget_usage("key_002", DAY_1) == (D(0), D(0))
        assert await store.claim_alert("key_002", "credits", 0.0, 80)
    finally:
        await store.close()


# ------------------------------------------------------------------------------------- rotation
async def test_rotation_finds_the_key_by_both_secrets_until_the_next_rotation(store: MigratingStore) -> None:
    key = governed_key(1, secret_hash=hash_secret("rk-first"), prefix="rk-firs")
    await store.insert_key(key)
    other = make_key(2)  # never rotated: its empty previous hash matches no lookup
    await store.insert_key(other)

    rotated = await store.rotate_key("key_001", hash_secret("rk-second"), "rk-seco", NOW + 3600)
    expected = msgspec.structs.replace(
        key,
        secret_hash=hash_secret("rk-second"),
        prefix="rk-seco",
        previous_secret_hash=hash_secret("rk-first"),
        previous_expires_at=NOW + 3600,
    )
    assert rotated == expected
    assert await store.get_key("key_001") == expected
    assert await store.get_key_by_hash(hash_secret("rk-second")) == expected
    assert await store.get_key_by_hash(hash_secret("rk-first")) == expected
    assert await store.get_key_by_hash("") is None
    assert await store.get_key_by_hash(other.secret_hash) == other

    # A second rotation replaces the previous secret: the first one is unknown from then on.
    again = await store.rotate_key("key_001", hash_secret("rk-third"), "rk-thir", NOW + 7200)
    assert again is not None
    assert (again.secret_hash, again.previous_secret_hash, again.previous_expires_at) == (
        hash_secret("rk-third"),
        hash_secret("rk-second"),
        NOW + 7200,
    )
    assert await store.get_key_by_hash(hash_secret("rk-first")) is None
    found = await store.get_key_by_hash(hash_secret("rk-second"))
    assert found is not None and found.id == "key_001"
    assert await store.rotate_key("key_nope", hash_secret("rk-x"), "rk-x", NOW) is None
    assert await store.count_keys() == 2


async def test_old_secret_authenticates_only_during_the_grace(store: MigratingStore) -> None:
    # The store keeps the old secret's hash and its end of grace; the authenticator (with an
    # injected wall clock) decides: the old secret works before previous_expires_at, not after.
    await store.insert_key(make_key(1, secret_hash=hash_secret("rk-old-secret"), prefix="rk-old-"))
    await store.rotate_key("key_001", hash_secret("rk-new-secret"), "rk-new-", NOW + 60)
    wall = [NOW]
    auth = Authenticator(store, wall=lambda: wall[0], clock=lambda: wall[0])

    assert (await auth.authenticate("Bearer rk-old-secret")).key_id == "key_001"
    assert (await auth.authenticate("Bearer rk-new-secret")).key_id == "key_001"
    wall[0] = NOW + 59.999
    assert (await auth.authenticate("Bearer rk-old-secret")).expires_at == NOW + 60

    wall[0] = NOW + 60
    with pytest.raises(Unauthenticated) as expired:
        await auth.authenticate("Bearer rk-old-secret")
    assert expired.value.code == "key_expired"
    new = await auth.authenticate("Bearer rk-new-secret")
    assert new.key_id == "key_001" and new.expires_at is None


# ------------------------------------------------------------------------------------ pagination
async def test_key_pages_have_no_gaps_or_repeats(store: MigratingStore) -> None:
    # 57 keys inserted out of order, many sharing a created_at (ties are ordered by id), every
    # fifth revoked.
    numbers = [(n * 37) % 57 + 1 for n in range(57)]
    for n in numbers:
        await store.insert_key(make_key(n, created_at=1_700_000_000.0 + n // 4, revoked=n % 5 == 0))
    every = sorted(
        (make_key(n, created_at=1_700_000_000.0 + n // 4, revoked=n % 5 == 0) for n in range(1, 58)),
        key=lambda k: (k.created_at, k.id),
    )

    async def walk(limit: int, include_revoked: bool) -> list[list[str]]:
        pages: list[list[str]] = []
        after: str | None = None
        while True:
            page = await store.list_keys(include_revoked, limit=limit, after=after)
            if not page:
                return pages
            assert len(page) <= limit
            pages.append([k.id for k in page])
            after = page[-1].id

    live = [k.id for k in every if not k.revoked]
    assert len(live) == 46
    pages = await walk(10, False)
    assert [len(p) for p in pages] == [10, 10, 10, 10, 6]
    assert [i for p in pages for i in p] == live
    pages = await walk(7, True)
    assert [len(p) for p in pages] == [7] * 8 + [1]
    assert [i for p in pages for i in p] == [k.id for k in every]
    assert await store.list_keys(True) == every
    assert await store.list_keys(limit=0) == []
    assert await store.list_keys(limit=3, after="key_nope") == []  # an unknown cursor: an empty page
    # A revoked key as the cursor (it was revoked since the page was read): the page goes on after it.
    assert [k.id for k in await store.list_keys(limit=2, after="key_005")] == ["key_006", "key_007"]
    assert [k.id for k in await store.list_keys(after=every[-2].id)] == [every[-1].id]


# ---------------------------------------------------------------------------------- budget windows
async def test_a_windowed_hold_reserves_in_its_window_and_release_frees_it(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("10"), budget=D("2"), budget_period="day"))
    assert await store.budget_usage("key_001", DAY_1) == (D(0), D(0))  # an unused window

    first, second = hold("0.75"), hold("0.5")
    assert await store.reserve_hold(first) and await store.reserve_hold(second)
    assert await books(store) == ((D(0), D("1.25")), (D(0), D("1.25")))
    assert [h.budget_window for h in await store.list_holds("key_001")] == [DAY_1, DAY_1]

    assert await store.release_hold(first.id)
    assert not await store.release_hold(first.id)  # idempotent: the window is freed once
    assert await books(store) == ((D(0), D("0.5")), (D(0), D("0.5")))
    assert await store.settle([Settlement(record=usage(1, "0.3"), hold_id=second.id, budget_window=DAY_1)]) == 1
    assert await books(store) == ((D("0.3"), D(0)), (D("0.3"), D(0)))
    assert await store.settle([Settlement(record=usage(1, "0.3"), hold_id=second.id, budget_window=DAY_1)]) == 0
    assert await books(store) == ((D("0.3"), D(0)), (D("0.3"), D(0)))


async def test_a_reservation_beyond_the_budget_is_refused_whole(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("10"), budget=D("1"), budget_period="day"))
    assert await store.reserve_hold(hold("0.6"))
    refused = hold("0.400000000001")

    assert not await store.reserve_hold(refused)
    # Nothing of the refused reservation stays: not on the key's credits, not in the window, no hold.
    assert await books(store) == ((D(0), D("0.6")), (D(0), D("0.6")))
    assert refused.id not in {h.id for h in await store.list_holds("key_001")}
    assert await store.reserve_hold(hold("0.4"))  # exactly fills the budget
    assert not await store.reserve_hold(hold("0.000000000001"))
    assert await books(store) == ((D(0), D("1")), (D(0), D("1")))

    # The credits still bound a window with room: 9.000000000001 fits the raised budget, not the credits.
    await store.update_key("key_001", patch=KeyPatch(budget=D("100")))
    assert not await store.reserve_hold(hold("9.000000000001"))
    assert await books(store) == ((D(0), D("1")), (D(0), D("1")))
    # A lowered budget applies to what the window already holds; a cleared one bounds nothing.
    await store.update_key("key_001", patch=KeyPatch(budget=D("1")))
    assert not await store.reserve_hold(hold("0.000000000001"))
    await store.update_key("key_001", patch=KeyPatch(budget=None, budget_period=""))
    assert await store.reserve_hold(hold("9"))
    assert await books(store) == ((D(0), D("10")), (D(0), D("10")))
    assert not await store.reserve_hold(hold("0.000000000001"))  # the credits are full


async def test_a_budget_without_credit_limit_and_two_independent_windows(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, budget=D("1"), budget_period="day"))  # credits unlimited
    assert await store.reserve_hold(hold("1", window=DAY_1))
    assert not await store.reserve_hold(hold("0.000000000001", window=DAY_1))
    tomorrow = hold("0.8", window=DAY_2)
    assert await store.reserve_hold(tomorrow)  # the next day's window is empty
    assert await store.reserve_hold(hold("0.2", window=DAY_2))
    assert not await store.reserve_hold(hold("0.000000000001", window=DAY_2))
    assert await store.reserve_hold(hold("5", window=None))  # no window: only the credits bound it

    assert await store.settle([Settlement(record=usage(1, "0.5"), hold_id=tomorrow.id, budget_window=DAY_2)]) == 1
    assert await books(store, window=DAY_1) == ((D("0.5"), D("6.2")), (D(0), D("1")))
    assert await books(store, window=DAY_2) == ((D("0.5"), D("6.2")), (D("0.5"), D("0.2")))
    assert await store.reserve_hold(hold("0.3", window=DAY_2))  # what the settlement left of the 0.8
    assert not await store.reserve_hold(hold("0.000000000001", window=DAY_2))


async def test_a_lapsed_hold_is_swept_from_its_window_and_its_late_settlement_charges_it(
    store: MigratingStore,
) -> None:
    await store.insert_key(make_key(1, credits=D("10"), budget=D("2"), budget_period="day"))
    lapsing = hold("1.5", expires_at=NOW + 10, owner="dead")
    live = hold("0.25", expires_at=NOW + 1000)
    other_day = hold("0.5", window=DAY_2, expires_at=NOW + 10, owner="dead")
    for h in (lapsing, live, other_day):
        assert await store.reserve_hold(h)
    assert not await store.reserve_hold(hold("0.250000000001"))

    assert await store.sweep_holds(NOW + 11) == 2  # the dead instance's holds, in both windows
    assert await books(store, window=DAY_1) == ((D(0), D("0.25")), (D(0), D("0.25")))
    assert await books(store, window=DAY_2) == ((D(0), D("0.25")), (D(0), D(0)))
    assert [h.id for h in await store.list_holds("key_001")] == [live.id]

    # The request of the swept hold ends after all: the settlement names its window, which is charged.
    late = Settlement(record=usage(1, "1.2"), hold_id=lapsing.id, budget_window=DAY_1)
    assert await store.settle([late]) == 1
    assert await books(store, window=DAY_1) == ((D("1.2"), D("0.25")), (D("1.2"), D("0.25")))
    assert await store.settle([late]) == 0
    assert await store.reserve_hold(hold("0.55"))  # 1.2 + 0.25 + 0.55 = the budget of 2
    assert not await store.reserve_hold(hold("0.000000000001"))
    assert await store.budget_usage("key_001", DAY_2) == (D(0), D(0))


async def test_window_reservations_from_two_instances_never_overshoot(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    await first.insert_key(make_key(1, credits=D("100"), budget=D("2"), budget_period="day"))

    results = await asyncio.gather(*(s.reserve_hold(hold("0.3")) for s in [first, second] * 30))

    assert results.count(True) == 6  # floor(2 / 0.3)
    assert await books(second) == ((D(0), D("1.8")), (D(0), D("1.8")))
    assert await first.budget_usage("key_001", DAY_1) == (D(0), D("1.8"))


# --------------------------------------------------------------------------- slices in a window
async def test_credit_slices_move_the_window_exactly_like_the_credits(store: MigratingStore) -> None:
    # The slice test of the main contract, under a budget: every step moves the window's
    # (used, reserved) exactly as it moves the key's.
    await store.insert_key(make_key(1, credits=D("5"), budget=D("3"), budget_period="day"))
    s = hold("2")
    assert await store.reserve_hold(s)

    def on_slice(n: int, cost: str, slice_id: str = s.id) -> Settlement:
        return Settlement(record=usage(n, cost), hold_id=slice_id, budget_window=DAY_1, partial=True)

    assert await store.settle([on_slice(1, "0.5"), on_slice(2, "0.25")]) == 2
    assert await books(store) == ((D("0.75"), D("1.25")), (D("0.75"), D("1.25")))
    assert [h.amount for h in await store.list_holds("key_001")] == [D("1.25")]
    assert await store.settle([on_slice(1, "0.5")]) == 0  # idempotent by record id
    assert await books(store) == ((D("0.75"), D("1.25")), (D("0.75"), D("1.25")))

    exact = hold("0.5")  # a per-request hold in the same batch as slice settlements
    assert await store.reserve_hold(exact)
    batch = [
        on_slice(3, "0.125"),
        Settlement(record=usage(4, "0.375"), hold_id=exact.id, budget_window=DAY_1),
        on_slice(5, "0.125"),
    ]
    assert await store.settle(batch) == 3
    assert await books(store) == ((D("1.375"), D("1")), (D("1.375"), D("1")))

    assert await store.release_hold(s.id)  # the slice goes back with what is left of it
    assert await books(store) == ((D("1.375"), D(0)), (D("1.375"), D(0)))
    assert await store.settle([on_slice(6, "0.1")]) == 1  # after the return: used only
    assert await books(store) == ((D("1.475"), D(0)), (D("1.475"), D(0)))

    t = hold("0.3")  # a cost larger than what is left of a slice drains it and is charged in full
    assert await store.reserve_hold(t)
    assert await store.settle([on_slice(7, "0.5", t.id)]) == 1
    assert await books(store) == ((D("1.975"), D(0)), (D("1.975"), D(0)))
    assert [h.amount for h in await store.list_holds("key_001")] == [D(0)]
    assert await store.reserve_hold(hold("1.025"))  # exactly the rest of the budget
    assert not await store.reserve_hold(hold("0.000000000001"))


async def test_a_windowed_slice_charges_its_window_even_if_the_settlement_names_none(
    store: MigratingStore,
) -> None:
    # CreditStore.budget_usage: settling a hold that reserved in a window charges its cost there,
    # like a whole hold's settlement does (below) whatever the settlement says.
    await store.insert_key(make_key(1, credits=D("5"), budget=D("3"), budget_period="day"))
    s, whole = hold("1"), hold("1")
    assert await store.reserve_hold(s) and await store.reserve_hold(whole)

    assert (
        await store.settle(
            [
                Settlement(record=usage(1, "0.25"), hold_id=s.id, partial=True),
                Settlement(record=usage(2, "0.5"), hold_id=whole.id),
            ]
        )
        == 2
    )

    assert await books(store) == ((D("0.75"), D("0.75")), (D("0.75"), D("0.75")))


# ---------------------------------------------------------------------------------------- alerts
async def test_each_alert_is_claimed_once_per_key_kind_window_and_threshold(store: MigratingStore) -> None:
    assert await store.claim_alert("key_001", "budget", DAY_1, 80)
    assert not await store.claim_alert("key_001", "budget", DAY_1, 80)
    # Every other coordinate is another alert.
    assert await store.claim_alert("key_001", "budget", DAY_1, 95)
    assert await store.claim_alert("key_001", "budget", DAY_2, 80)
    assert await store.claim_alert("key_001", "credits", 0.0, 80)
    assert await store.claim_alert("key_001", "credits", DAY_1, 80)
    assert await store.claim_alert("key_002", "budget", DAY_1, 80)
    for args in [
        ("key_001", "budget", DAY_1, 95),
        ("key_001", "budget", DAY_2, 80),
        ("key_001", "credits", 0.0, 80),
        ("key_002", "budget", DAY_1, 80),
    ]:
        assert not await store.claim_alert(*args)


async def test_concurrent_claims_from_two_instances_win_once_each(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    alerts = [
        ("key_001", kind, window, t)
        for kind in ("credits", "budget")
        for window in (DAY_1, DAY_2)
        for t in (80, 95, 100)
    ]
    attempts = [(s, a) for a in alerts for s in (first, second, first, second)]

    won = await asyncio.gather(*(s.claim_alert(*a) for s, a in attempts))

    assert sum(won) == len(alerts) == 12
    for a in alerts:
        assert [w for (_, b), w in zip(attempts, won, strict=True) if b == a].count(True) == 1


async def test_a_claimed_delivery_is_pending_under_its_lease_then_taken_over_once(store: MigratingStore) -> None:
    assert await store.claim_alert("key_001", "budget", DAY_1, 80, body=b'{"threshold":80}', lease_until=NOW + 600)
    assert await store.claim_alert("key_001", "credits", 0.0, 95, body=b'{"threshold":95}', lease_until=NOW + 60)
    assert await store.claim_alert("key_001", "credits", 0.0, 50)  # no body: a claim that owes nothing
    assert await store.take_stale_alerts(NOW + 59, NOW + 1000) == []  # every lease still running
    taken = await store.take_stale_alerts(NOW + 60, NOW + 660)
    assert [(c.kind, c.threshold, c.body, c.period_start) for c in taken] == [
        ("credits", 95, b'{"threshold":95}', 0.0)]
    assert await store.take_stale_alerts(NOW + 61, NOW + 661) == []  # the taker holds it now
    both = await store.take_stale_alerts(NOW + 700, NOW + 1300)
    assert sorted((c.kind, c.threshold) for c in both) == [("budget", 80), ("credits", 95)]
    assert next(c for c in both if c.kind == "budget").period_start == DAY_1
    # the claim's coordinates come back with their types (a delivery id is derived from them)
    assert all(type(c.period_start) is float and type(c.threshold) is int for c in both)
    for claim in both:
        await store.finish_alert(claim, delivered=claim.kind == "budget")  # one delivered, one given up
    assert await store.take_stale_alerts(NOW + 10**6, NOW + 10**6) == []  # finished: never taken again
    assert not await store.claim_alert("key_001", "budget", DAY_1, 80, body=b"{}", lease_until=0.0)


async def test_two_sweeping_instances_take_each_stale_claim_once(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    for t in range(1, 21):
        assert await first.claim_alert("key_001", "credits", 0.0, t, body=b"{}", lease_until=NOW)
    taken = await asyncio.gather(*(s.take_stale_alerts(NOW, NOW + 600, limit=3)
                                   for s in (first, second) * 5))
    thresholds = [c.threshold for batch in taken for c in batch]
    assert sorted(thresholds) == list(range(1, 21))  # every claim taken, none twice
