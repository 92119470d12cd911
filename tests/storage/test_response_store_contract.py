"""The `ResponseStore` part of the Store contract (stored Responses API responses), on every backend."""

from __future__ import annotations

import json

from store_backends import MigratingStore, OpenStore

from raven_service.core.types import StoredResponse

DAY = 86400.0


def make_response(n: int = 1, **fields: object) -> StoredResponse:
    values: dict[str, object] = {
        "id": f"resp_{n:032x}",
        "key_id": "key_1",
        "model": "raven/local-chat",
        "body": json.dumps({"id": f"resp_{n:032x}", "object": "response", "output": [], "n": 10**15 + n}),
        "input_items": json.dumps([{"type": "message", "role": "user", "content": "hi ✓"}]),
        "created_at": 1000.0 + n,
        "expires_at": 1000.0 + n + 30 * DAY,
    }
    return StoredResponse(**(values | fields))  # type: ignore[arg-type]


async def test_roundtrip_is_verbatim(store: MigratingStore) -> None:
    stored = make_response(1)
    assert await store.put_response(stored) is True
    assert await store.get_response(stored.id, "key_1", now=1001.0) == stored
    assert await store.get_response("resp_unknown", "key_1", now=1001.0) is None


async def test_other_key_sees_nothing_and_cannot_overwrite(store: MigratingStore) -> None:
    stored = make_response(1)
    await store.put_response(stored)
    assert await store.get_response(stored.id, "key_2", now=1001.0) is None
    intruder = make_response(1, key_id="key_2", body='{"stolen": true}')
    assert await store.put_response(intruder) is False
    assert await store.get_response(stored.id, "key_1", now=1001.0) == stored
    assert await store.get_response(stored.id, "key_2", now=1001.0) is None


async def test_same_key_replaces(store: MigratingStore) -> None:
    await store.put_response(make_response(1))
    again = make_response(1, body='{"v": 2}', input_items="[]", created_at=2000.0, expires_at=9999.0)
    assert await store.put_response(again) is True
    assert await store.get_response(again.id, "key_1", now=2000.0) == again


async def test_expiry_hides_then_sweep_deletes(store: MigratingStore) -> None:
    old = make_response(1, expires_at=5000.0)
    fresh = make_response(2, expires_at=50000.0)
    await store.put_response(old)
    await store.put_response(fresh)
    assert await store.get_response(old.id, "key_1", now=4999.0) == old
    assert await store.get_response(old.id, "key_1", now=5000.0) is None
    assert await store.delete_expired_responses(now=5000.0) == 1
    assert await store.delete_expired_responses(now=5000.0) == 0
    assert await store.get_response(old.id, "key_1", now=10.0) is None  # gone, not just hidden
    assert await store.get_response(fresh.id, "key_1", now=5000.0) == fresh


async def test_visible_from_another_instance(store: MigratingStore, open_store: OpenStore) -> None:
    stored = make_response(3)
    await store.put_response(stored)
    other = await open_store()
    assert await other.get_response(stored.id, "key_1", now=1004.0) == stored


async def test_delete_is_per_key_and_final(store: MigratingStore) -> None:
    stored, expired = make_response(1), make_response(2, expires_at=1500.0)
    await store.put_response(stored)
    await store.put_response(expired)
    assert await store.delete_response(stored.id, "key_2", now=1001.0) is False  # another key's: untouched
    assert await store.get_response(stored.id, "key_1", now=1001.0) == stored
    assert await store.delete_response(expired.id, "key_1", now=2000.0) is False  # expired: not there
    assert await store.delete_response(stored.id, "key_1", now=1001.0) is True
    assert await store.get_response(stored.id, "key_1", now=1001.0) is None
    assert await store.delete_response(stored.id, "key_1", now=1001.0) is False
    assert await store.put_response(make_response(1, key_id="key_2")) is True  # the id is free again
