"""SPEC §11 over REST: the admin key routes (httpx) and each key rule as the official openai SDK sees it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from decimal import Decimal

import openai
import pytest
from tests_support import make_rest

pytestmark = pytest.mark.timeout(60)
CHAT = "raven/local-chat"
MSG = [{"role": "user", "content": "echo: hello there"}]


@pytest.fixture
async def rest(tmp_path):
    async with make_rest(tmp_path, link="inprocess", alert_webhook_allow_http=True,
                         alert_webhook_retry_seconds=0.05) as r:
        yield r


async def create(rest, **body) -> dict:
    r = await rest.http.post("/v1/keys", headers=rest.auth(rest.svc.admin), json={"name": "t", **body})
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_get_list_patch_revoke(rest):
    admin = rest.auth(rest.svc.admin)
    made = await create(rest, rpm=120, concurrency=4, tpm=100000, credits="50",
                        budget={"amount": "5", "period": "day"}, models=["raven/*"],
                        expires_at="2099-01-01T00:00:00Z", scopes=["inference"], metadata={"team": "search"},
                        alert_webhook="https://hooks.example/raven", alert_thresholds=[80, 95, 100])
    key = made["key"]
    assert made["secret"].startswith("rk-") and made["webhook_secret"].startswith("whsec_")
    assert key["id"].startswith("key_") and key["credits"] == "50" and key["credits_used"] == "0"
    assert key["revoked"] is False and key["models"] == ["raven/*"] and key["tpm"] == 100000
    assert key["budget"]["amount"] == "5" and key["budget"]["period"] == "day" and key["budget"]["used"] == "0"
    assert key["expires_at"] == "2099-01-01T00:00:00Z" and key["metadata"] == {"team": "search"}
    assert "secret" not in json.dumps((await rest.http.get(f"/v1/keys/{key['id']}", headers=admin)).json())

    me = (await rest.http.get("/v1/key", headers=rest.auth(made["secret"]))).json()["data"]
    assert me["id"] == key["id"] and me["credits"] == {"limit": "50", "used": "0", "remaining": "50"}
    assert me["budget"]["remaining"] == "5" and me["budget"]["resets_at"].endswith("T00:00:00Z")
    assert me["scopes"] == ["inference"] and me["rpm"] == 120

    r = await rest.http.patch(f"/v1/keys/{key['id']}", headers=admin,
                              json={"name": "renamed", "budget": None, "models": [], "credits": None})
    assert r.status_code == 200, r.text
    changed = r.json()["data"]
    assert changed["name"] == "renamed" and changed["budget"] is None and changed["models"] == []
    assert changed["credits"] is None and changed["tpm"] == 100000

    r = await rest.http.delete(f"/v1/keys/{key['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["data"]["revoked"] is True
    assert (await rest.http.get("/v1/key", headers=rest.auth(made["secret"]))).status_code == 401


async def test_list_is_cursor_paginated(rest):
    ids = [(await create(rest, name=f"k{i}"))["key"]["id"] for i in range(5)]
    admin = rest.auth(rest.svc.admin)
    seen, after = [], None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = (await rest.http.get("/v1/keys", headers=admin, params=params)).json()
        assert len(page["data"]) <= 2
        seen += [k["id"] for k in page["data"]]
        if not page["has_more"]:
            assert page["next"] is None
            break
        after = page["next"]
    assert seen[-5:] == ids and len(seen) == 7  # the fixture's admin and user keys come first


async def test_non_admin_gets_403_and_404(rest):
    user = rest.auth()
    r = await rest.http.post("/v1/keys", headers=user, json={"name": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert (await rest.http.get("/v1/keys", headers=user)).json()["error"]["code"] == "insufficient_scope"
    other = (await create(rest))["key"]["id"]
    r = await rest.http.get(f"/v1/keys/{other}", headers=user)
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    r = await rest.http.get("/v1/keys/key_nope", headers=rest.auth(rest.svc.admin))
    assert r.status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({"name": "x", "colour": "red"}, "colour"),
    ({"name": "x", "rpm": -1}, "rpm"),
    ({"name": "x", "tpm": -5}, "tpm"),
    ({"name": "x", "expires_in": "30 days"}, "expires_in"),
    ({"name": "x", "expires_at": "2027-13-01T00:00:00Z"}, "expires_at"),
    ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "x", "models": ["nobody/*"]}, "models"),
    ({"name": "x", "budget": {"amount": "-1", "period": "day"}}, "budget.amount"),
    ({"name": "x", "budget": {"amount": "1", "period": "year"}}, "budget.period"),
    ({"name": "x", "scopes": ["root"]}, "scopes"),
    ({"name": "x", "alert_webhook": "http://hooks.example/x"}, "alert_webhook"),
    ({"name": "x", "alert_thresholds": [0, 120]}, "alert_thresholds"),
    ({"name": "x", "credits": "lots"}, "credits"),
])
async def test_bad_input_is_400_naming_the_field(rest, body, param):
    r = await rest.http.post("/v1/keys", headers=rest.auth(rest.svc.admin), json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert set(r.json()["error"]) == {"message", "type", "code", "param"}


async def test_model_allow_list(rest):
    made = await create(rest, models=["raven/local-c*"])
    sdk = rest.sdk(made["secret"])
    assert [m.id for m in (await sdk.models.list()).data] == [CHAT]
    with pytest.raises(openai.PermissionDeniedError) as ei:
        await sdk.images.generate(model="raven/local-image", prompt="a cat", size="256x256")
    assert ei.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as ei:
        await sdk.models.retrieve("raven/local-image")
    assert ei.value.code == "model_not_allowed"
    assert (await sdk.chat.completions.create(model=CHAT, messages=MSG)).choices[0].message.content
    images_only = rest.sdk((await create(rest, models=["raven/local-i*"]))["secret"])
    with pytest.raises(openai.PermissionDeniedError) as ei:
        await images_only.chat.completions.create(model=CHAT, messages=MSG)
    assert ei.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError) as ei:
        async for _ in await images_only.chat.completions.create(model=CHAT, messages=MSG, stream=True):
            pass
    assert ei.value.code == "model_not_allowed"


async def test_admin_only_key_cannot_call_models(rest):
    made = await create(rest, scopes=["admin"])
    with pytest.raises(openai.PermissionDeniedError) as ei:
        await rest.sdk(made["secret"]).chat.completions.create(model=CHAT, messages=MSG)
    assert ei.value.code == "insufficient_scope"
    r = await rest.http.get("/v1/keys", headers=rest.auth(made["secret"]))
    assert r.status_code == 200


async def test_expiry(rest):
    made = await create(rest, expires_in="1h")
    sdk = rest.sdk(made["secret"])
    await sdk.chat.completions.create(model=CHAT, messages=MSG)
    rest.svc.services.auth.wall = lambda: time.time() + 2 * 3600  # two hours later
    with pytest.raises(openai.AuthenticationError) as ei:
        await sdk.chat.completions.create(model=CHAT, messages=MSG)
    assert ei.value.code == "key_expired"


async def test_rotation_grace(rest):
    made = await create(rest)
    old = made["secret"]
    r = await rest.http.post(f"/v1/keys/{made['key']['id']}/rotate", headers=rest.auth(rest.svc.admin),
                             json={"grace_seconds": 3600})
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != old and r.json()["key"]["prefix"] == new[:7]
    for secret in (old, new):
        assert (await rest.http.get("/v1/key", headers=rest.auth(secret))).json()["data"]["id"] == made["key"]["id"]
    rest.svc.services.auth.wall = lambda: time.time() + 3601
    rest.svc.services.auth.invalidate(made["key"]["id"])
    assert (await rest.http.get("/v1/key", headers=rest.auth(old))).status_code == 401
    assert (await rest.http.get("/v1/key", headers=rest.auth(new))).status_code == 200
    r = await rest.http.post(f"/v1/keys/{made['key']['id']}/rotate", headers=rest.auth(rest.svc.admin),
                             json={"grace": "soon"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "grace"


async def test_tpm(rest):
    made = await create(rest, tpm=60)
    sdk = rest.sdk(made["secret"]).with_raw_response
    first = await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=5)
    assert first.headers["x-ratelimit-limit-tokens"] == "60"
    used = first.parse().usage.total_tokens
    assert int(first.headers["x-ratelimit-remaining-tokens"]) <= 60
    got = None
    for _ in range(60 // max(1, used) + 2):
        try:
            await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=5)
        except openai.RateLimitError as exc:
            got = exc
            break
    assert got is not None and got.code == "token_rate_limit_exceeded"
    assert got.response.headers["x-ratelimit-limit-tokens"] == "60"
    assert got.response.headers["x-ratelimit-reset-tokens"].endswith("s")
    assert "retry-after" in got.response.headers


async def exact_cost(rest) -> tuple[Decimal, int]:
    """(cost, max_tokens) of a request whose hold equals its actual cost (max_tokens = its real output)."""
    probe = await rest.sdk().chat.completions.create(model=CHAT, messages=MSG)
    n_out = probe.usage.completion_tokens
    again = await rest.sdk().chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)
    return Decimal(str(again.usage.model_extra["cost"])), n_out


async def test_budget_exhausted_and_reported(rest):
    cost, n_out = await exact_cost(rest)
    made = await create(rest, budget={"amount": str(cost * 2 + cost / 2), "period": "week"})
    sdk = rest.sdk(made["secret"])
    for _ in range(2):
        await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)
    with pytest.raises(openai.APIStatusError) as ei:
        await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)
    assert ei.value.status_code == 402 and ei.value.code == "budget_exhausted"
    assert ei.value.response.headers["x-ratelimit-reset-credits"].endswith("s")
    await rest.svc.services.usage.flush()
    me = (await rest.http.get("/v1/key", headers=rest.auth(made["secret"]))).json()["data"]
    assert Decimal(me["budget"]["used"]) == cost * 2
    assert me["budget"]["period"] == "week" and me["credits"]["limit"] is None


async def test_webhook_signed_retried_once_per_crossing(rest):
    received: list[tuple[bytes, str]] = []
    attempts = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
        lower = {k.lower(): v for k, v in headers.items()}
        body = await reader.readexactly(int(lower["content-length"]))
        attempts.append(body)
        status = b"500 Internal Server Error" if len(attempts) == 1 else b"204 No Content"
        if len(attempts) > 1:
            received.append((body, lower["x-raven-signature"]))
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cost, n_out = await exact_cost(rest)
        made = await create(rest, credits=str(cost * 10), alert_thresholds=[50],
                            alert_webhook=f"http://127.0.0.1:{port}/hook")
        sdk = rest.sdk(made["secret"])
        for _ in range(6):  # 60 % of the credits: one crossing of 50 %
            await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)
        services = rest.svc.services
        await services.usage.flush()
        for _ in range(50):
            await services.alerts.idle()
            await services.webhooks.drain()
            if received:
                break
            await asyncio.sleep(0.05)
        assert len(attempts) == 2 and len(received) == 1  # the first attempt failed, the retry arrived
        body, sig = received[0]
        expected = "sha256=" + hmac.new(made["webhook_secret"].encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(sig, expected)
        alert = json.loads(body)
        assert alert["key_id"] == made["key"]["id"] and alert["threshold"] == 50 and alert["kind"] == "credits"
        assert Decimal(alert["limit"]) == cost * 10 and alert["period_start"] is None
        await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)  # 70 %: no new crossing
        await services.usage.flush()
        await services.alerts.idle()
        await services.webhooks.drain()
        assert len(attempts) == 2
    finally:
        server.close()
        await server.wait_closed()
