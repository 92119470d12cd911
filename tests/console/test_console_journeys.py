"""SPEC §12 journeys in headless Chromium: what a person sees on each console page, checked against
the public REST API, plus the keys made in the console used by the official openai SDK."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from console_support import rest, shot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TODAY = datetime.now(UTC).date().isoformat()


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", "").strip())


def _sdk(raven, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=raven.base + "/v1", api_key=key, max_retries=0)


def _chat(raven, key: str, n: int, max_tokens: int = 6) -> list:
    client = _sdk(raven, key)
    return [
        client.chat.completions.create(
            model="raven/local-chat", max_tokens=max_tokens, messages=[{"role": "user", "content": f"hello {i}"}]
        )
        for i in range(n)
    ]


def _new_key(raven, **fields) -> tuple[str, str]:
    with rest(raven, raven.key) as c:
        r = c.post("/v1/keys", json={"name": "journey", **fields})
        assert r.status_code == 201, r.text
        body = r.json()
    return body["key"]["id"], body["secret"]


def _settled(raven, key: str, ids: list[str]) -> None:
    """Waits (bounded) until every generation is readable: usage records are written in batches."""
    import time

    with rest(raven, key) as c:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(c.get("/v1/generation", params={"id": i}).status_code == 200 for i in ids):
                return
            time.sleep(0.05)
    raise AssertionError("usage records were not written")


def sign_in(page, raven, key: str) -> None:
    page.goto(raven.base + "/console")
    field = page.get_by_label("API key")
    field.fill(key)
    field.press("Enter")  # keyboard: the form submits on Enter
    page.locator("[data-field=rpm]").wait_for()


def go(page, view: str, wait: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=view).click()
    page.locator(wait).first.wait_for()


def test_sign_in_security_headers_and_sign_out(page, raven):
    response = page.goto(raven.base + "/console")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.locator("script:not([src])").count() == 0  # every script is a file
    shot(page, "signin")

    page.get_by_label("API key").fill("rk-" + "x" * 40)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("This key is not valid (wrong, revoked or expired).").wait_for()

    sign_in(page, raven, raven.key)
    assert page.evaluate("sessionStorage.getItem('raven.console.key')") == raven.key
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    assert raven.key not in page.url
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("Signed out. The key was removed from this tab.").wait_for()
    assert page.evaluate("sessionStorage.getItem('raven.console.key')") is None
    page.reload()
    page.get_by_label("API key").wait_for()
    assert page.locator("#app").is_hidden()
    page.watch.check(e401=1)


def test_overview_shows_the_quota_of_get_v1_key(page, raven):
    key_id, secret = _new_key(
        raven,
        rpm=120,
        concurrency=4,
        tpm=100000,
        credits="50",
        budget={"amount": "5", "period": "day"},
        metadata={"team": "search"},
    )
    done = _chat(raven, secret, 2)
    _settled(raven, secret, [c.id for c in done])
    with rest(raven, secret) as c:
        me = c.get("/v1/key").json()["data"]
    assert Decimal(me["credits"]["used"]) > 0

    sign_in(page, raven, secret)
    calls_at_load = len(page.watch.api_calls())
    field = lambda name: page.locator(f"[data-field={name}]")  # noqa: E731
    assert field("rpm").locator(".num").inner_text() == "120"
    assert field("rpm").locator(".unit").inner_text().strip() == "requests / min"
    assert field("concurrency").locator(".num").inner_text() == "4"
    assert field("tpm").locator(".num").inner_text() == "100,000"
    used = _number(field("credits").locator(".num").inner_text())
    assert used == pytest.approx(Decimal(me["credits"]["used"]), rel=Decimal("0.001"))
    sub = field("credits").locator(".sub").inner_text()
    assert "remaining of 50 credits" in sub
    assert _number(sub.split(" credits")[0]) == pytest.approx(Decimal(me["credits"]["remaining"]), rel=Decimal("1e-4"))
    budget = field("budget").inner_text()
    assert "Budget per day" in budget and "of 5 credits" in budget
    assert _number(field("budget").locator(".num").inner_text()) == pytest.approx(
        Decimal(me["budget"]["used"]), rel=Decimal("0.001")
    )
    resets = datetime.fromisoformat(me["budget"]["resets_at"].replace("Z", "+00:00"))
    assert f"resets {resets:%Y-%m-%d %H:%M} UTC" in budget
    spend = field("spend")
    assert _number(spend.locator(".num").inner_text()) == pytest.approx(used, rel=Decimal("0.001"))
    assert "2 requests" in spend.inner_text()
    assert page.get_by_text("team=search").is_visible()
    assert page.locator("main code", has_text=key_id).is_visible()
    assert calls_at_load <= 4  # sign-in's GET /v1/key, then GET /v1/key, /v1/usage, /v1/models
    shot(page, "overview")
    page.watch.check()


def test_usage_charts_have_the_requests_and_csv_matches(page, raven):
    _, secret = _new_key(raven)
    done = _chat(raven, secret, 3)
    image = _sdk(raven, secret).images.generate(model="raven/local-image", prompt="a raven", size="256x256", n=1)
    assert len(image.data) == 1
    _settled(raven, secret, [c.id for c in done])
    tokens = sum(c.usage.prompt_tokens + c.usage.completion_tokens for c in done)

    sign_in(page, raven, secret)
    before = len(page.watch.api_calls())
    go(page, "Usage", "[data-chart]")
    assert len(page.watch.api_calls()) - before <= 5
    bars = page.locator(f'[data-chart="Requests by model"] rect[data-series="raven/local-chat"][data-day="{TODAY}"]')
    assert bars.get_attribute("data-value") == "3"
    token_bar = page.locator(f'[data-chart="Tokens by model"] rect[data-series="raven/local-chat"][data-day="{TODAY}"]')
    assert token_bar.get_attribute("data-value") == str(tokens)
    assert page.locator('[data-chart="Latency"] circle').count() >= 1
    image_bar = page.locator(
        f'[data-chart="Requests by model"] rect[data-series="raven/local-image"][data-day="{TODAY}"]'
    )
    assert image_bar.get_attribute("data-value") == "1"
    assert (
        page.locator('[data-chart="Errors by provider"] rect[data-series="errors"]').get_attribute("data-value") == "0"
    )
    row = page.get_by_role("row").filter(has_text="raven/local-chat").last
    assert row.locator("td").nth(1).inner_text() == "3"
    shot(page, "usage")

    with page.expect_download() as info:
        page.get_by_role("button", name="Export CSV").click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted((r["day"], r["model"], r["requests"]) for r in rows) == [
        (TODAY, "raven/local-chat", "3"),
        (TODAY, "raven/local-image", "1"),
    ]
    chat = next(r for r in rows if r["model"] == "raven/local-chat")
    assert int(chat["prompt_tokens"]) + int(chat["completion_tokens"]) == tokens

    page.get_by_role("button", name="30 days").click()
    page.locator('[data-chart="Requests by model"] rect').first.wait_for()
    assert page.get_by_role("button", name="30 days").get_attribute("aria-pressed") == "true"
    page.watch.check()


def test_logs_list_filters_lookup_and_record(page, raven):
    _, secret = _new_key(raven)
    done = _chat(raven, secret, 3)
    _settled(raven, secret, [c.id for c in done])

    sign_in(page, raven, secret)
    go(page, "Logs", "#log-list table")
    buttons = page.locator("#log-list tbody tr td:nth-child(2) button")
    ids = [buttons.nth(i).get_attribute("data-id") for i in range(buttons.count())]
    assert ids == [c.id for c in reversed(done)]  # newest first
    shot(page, "logs")

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("No generations match").wait_for()
    page.get_by_role("button", name="Reset").click()
    page.locator("#log-list table").wait_for()

    target = done[1]
    page.get_by_label("Generation id").fill(target.id)
    page.get_by_role("button", name="Look up").click()
    record = page.locator(f'dialog [data-record="{target.id}"]')
    record.wait_for()
    text = record.inner_text()
    assert "raven/local-chat" in text and "completed" in text
    assert f"Prompt tokens\n{target.usage.prompt_tokens}" in text
    assert f"Completion tokens\n{target.usage.completion_tokens}" in text
    shot(page, "logs-record")
    page.get_by_role("button", name="Close").click()

    page.locator("#log-list tbody tr").first.locator("td").first.click()  # a row opens its full record
    page.locator(f'dialog [data-record="{done[-1].id}"]').wait_for()
    page.keyboard.press("Escape")
    page.get_by_label("Generation id").fill("gen-does-not-exist")
    page.get_by_role("button", name="Look up").click()
    page.get_by_text("No generation gen-does-not-exist for this key.").wait_for()
    page.watch.check(e404=1)


def test_admin_creates_edits_rotates_and_revokes_a_key(page, raven):
    sign_in(page, raven, raven.key)
    go(page, "API Keys", "#key-list table")
    page.get_by_role("button", name="Create key").click()
    page.get_by_label("Name").fill("console-made")
    page.get_by_label("Requests per minute").fill("30")
    page.get_by_label("Allowed models").fill("raven/*")
    page.locator("#dialog").get_by_role("button", name="Create key").click()
    secret = page.locator("[data-secret]").first.inner_text()
    assert re.fullmatch(r"rk-[A-Za-z0-9_-]{32,}", secret)
    page.get_by_role("button", name="Copy API key secret").click()
    page.get_by_role("button", name="API key secret copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, "keys-secret", secrets=True)
    page.get_by_role("button", name="I have stored it").click()
    page.locator("[data-key-id]").filter(has_text="console-made").wait_for()
    assert secret not in page.content()  # shown once, gone with the dialog

    reply = _sdk(raven, secret).chat.completions.create(
        model="raven/local-chat", max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    with rest(raven, raven.key) as c:
        made = next(k for k in c.get("/v1/keys", params={"limit": 100}).json()["data"] if k["name"] == "console-made")
    assert (made["rpm"], made["models"], made["scopes"]) == (30, ["raven/*"], ["inference"])
    shot(page, "keys")

    page.get_by_role("button", name="Edit console-made").click()
    page.get_by_label("Requests per minute").fill("77")
    page.get_by_label("Tokens per minute").fill("5000")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("77 req/min").wait_for()
    with rest(raven, raven.key) as c:
        edited = c.get(f"/v1/keys/{made['id']}").json()["data"]
    assert (edited["rpm"], edited["tpm"], edited["models"]) == (77, 5000, ["raven/*"])

    page.get_by_role("button", name="Rotate console-made").click()
    page.get_by_label("Old secret stops working").select_option("0")
    page.locator("#dialog").get_by_role("button", name="Rotate").click()
    rotated = page.locator("[data-secret]").first
    rotated.wait_for()
    new_secret = rotated.inner_text()
    assert new_secret != secret and new_secret.startswith("rk-")
    page.get_by_role("button", name="I have stored it").click()
    assert _chat(raven, new_secret, 1)[0].id
    with pytest.raises(openai.AuthenticationError):
        _chat(raven, secret, 1)

    page.get_by_role("button", name="Revoke console-made").click()
    page.get_by_role("button", name="Revoke key").click()
    page.locator("[data-key-id]").filter(has_text="console-made").wait_for(state="detached")  # revoked: off the list
    page.get_by_label("Show revoked keys").check()
    page.locator("[data-key-id]").filter(has_text="console-made").locator("xpath=ancestor::tr").get_by_text(
        "revoked"
    ).wait_for()
    with pytest.raises(openai.AuthenticationError) as err:
        _chat(raven, new_secret, 1)
    assert err.value.status_code == 401
    page.watch.check()


def test_non_admin_sees_only_its_own_key(page, raven):
    key_id, secret = _new_key(raven, rpm=50)
    sign_in(page, raven, secret)
    go(page, "API Keys", ".notice")
    assert page.get_by_role("button", name="Create key").count() == 0
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and key_id in rows.first.inner_text()
    page.watch.check()


def test_models_page_lists_the_catalogue_with_prices(page, raven):
    with rest(raven, raven.key) as c:
        catalogue = c.get("/v1/models").json()["data"]
    sign_in(page, raven, raven.key)
    go(page, "Models", "table")
    for m in catalogue:
        row = page.get_by_role("row").filter(has=page.locator("code", has_text=re.compile(f"^{re.escape(m['id'])}$")))
        cells = row.locator("td").all_inner_texts()
        assert cells[2] == f"{m['context_length']:,} tokens"
        assert cells[3] == f"{Decimal(m['pricing']['prompt']).normalize():f} credits / 1M tokens" or (
            Decimal(m["pricing"]["prompt"]) == 0 and cells[3] == "0 credits / 1M tokens"
        )
        for cap in m["capabilities"]:
            assert cap in cells[1]
    shot(page, "models")
    page.watch.check()


def test_phone_width_and_keyboard(browser, raven):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        page.goto(raven.base + "/console")
        page.get_by_label("API key").wait_for()
        assert page.evaluate("document.activeElement.id") == "signin-key"  # focused on load: type, Enter
        page.keyboard.type(raven.key)
        page.keyboard.press("Enter")
        page.locator("[data-field=rpm]").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "overview-phone")
        page.get_by_role("link", name="Usage").focus()
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('main').dataset.view === 'usage'")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        context.close()


def test_console_assets_are_served_locally_with_the_policy(raven):
    import httpx

    page = httpx.get(raven.base + "/console")  # no key needed for the static page itself
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["referrer-policy"] == "no-referrer"
    srcs = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert srcs and all(s.startswith("/console/assets/") for s in srcs)  # nothing from another origin
    for src in srcs:
        r = httpx.get(raven.base + src)
        assert r.status_code == 200 and r.headers["content-security-policy"] == page.headers["content-security-policy"]
    js = httpx.get(raven.base + "/console/assets/console.js")
    assert js.headers["content-type"].startswith("text/javascript")
    code = js.text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace name, not a fetch
    assert "http://" not in code and "https://" not in code
    for name in ("routes.py", "__init__.py", "index.html", "..%2Froutes.py"):
        assert httpx.get(f"{raven.base}/console/assets/{name}").status_code == 404
    assert "/console" not in httpx.get(raven.base + "/openapi.json").text
