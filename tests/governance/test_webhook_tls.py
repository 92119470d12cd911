"""SPEC §11 alert webhooks as `raven serve` delivers them: loopback https:// receivers trusted
through the process's CA settings (SSL_CERT_FILE), untrusted certificates never sent to, and
http:// receivers refused without `alert_webhook_allow_http`.

The receivers are real TLS servers on 127.0.0.1 with certificates from throwaway CAs (trustme).
Each counts the TCP connections it accepts and the HTTP requests it reads after the handshake.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import ssl
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
import trustme
from raven_procs import Proc, start_raven

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
CHAT = "raven/local-chat"
MSG = [{"role": "user", "content": "echo: hello there"}]
ADMIN = "rk-" + secrets.token_urlsafe(32)
DROPPED = "failed 3 times; dropped"
REFUSED = "alert webhook refused"


@dataclass
class Receiver:
    """An alert receiver on 127.0.0.1: TLS with `server_ctx`, else plain HTTP."""

    server_ctx: ssl.SSLContext | None = None
    connections: int = 0
    handshake_failures: int = 0
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.server_ctx else 'http'}://127.0.0.1:{port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.server_ctx is not None:
                try:
                    await writer.start_tls(self.server_ctx)
                except (ssl.SSLError, ConnectionError, OSError):
                    self.handshake_failures += 1
                    return
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
            body = await reader.readexactly(int(headers["content-length"]))
            self.requests.append((body, headers | {":request-line": lines[0]}))
            self.arrived.set()
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _serve(data_dir: Path, env: dict[str, str]) -> Proc:
    return start_raven(data_dir, key=ADMIN, tps="0", env={
        "RAVEN_ADMIN_KEY": ADMIN, "RAVEN_ALERT_WEBHOOK_ATTEMPTS": "3", "RAVEN_ALERT_WEBHOOK_RETRY_SECONDS": "0.05",
        **env})


def _stop(p: Proc) -> None:
    if p.proc.poll() is None:
        p.stop()


async def _wait_for_log(p: Proc, text: str, count: int = 1) -> str:
    """Reads the process's (merged, non-blocking) output until `text` appeared `count` times."""
    assert p.proc.stdout is not None
    for _ in range(400):
        while line := p.proc.stdout.readline():
            p.output.append(line)
        joined = "".join(p.output)
        if joined.count(text) >= count:
            return joined
        await asyncio.sleep(0.025)
    raise AssertionError(f"{text!r} not logged {count} time(s):\n" + "".join(p.output))


async def _create(http: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await http.post("/v1/keys", headers={"Authorization": f"Bearer {ADMIN}"}, json={"name": "t", **body})


async def _cost(p: Proc) -> tuple[Decimal, int]:
    """(cost, max_tokens) of a request whose credit hold equals its actual cost."""
    sdk = openai.AsyncOpenAI(base_url=p.base + "/v1", api_key=ADMIN, max_retries=0)
    n_out = (await sdk.chat.completions.create(model=CHAT, messages=MSG)).usage.completion_tokens
    again = await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)
    return Decimal(str(again.usage.model_extra["cost"])), n_out


def _signed(body: bytes, headers: dict[str, str], secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-raven-signature"], expected)


async def test_https_receiver_trusted_through_ssl_cert_file_and_untrusted_one_never_sent_to(tmp_path):
    trusted_ca, other_ca = trustme.CA(), trustme.CA()
    trusted_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    contexts = []
    for ca in (trusted_ca, other_ca):  # both certificates are valid for 127.0.0.1; only their CA differs
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(ctx)
        contexts.append(ctx)
    p = await asyncio.to_thread(_serve, tmp_path / "d", {"SSL_CERT_FILE": str(tmp_path / "ca.pem")})
    try:
        async with (Receiver(contexts[0]) as good, Receiver(contexts[1]) as bad,
                    httpx.AsyncClient(base_url=p.base, timeout=30) as http):
            cost, n_out = await _cost(p)
            made = {}
            for name, receiver in (("good", good), ("bad", bad)):
                r = await _create(http, credits=str(cost * 2), alert_thresholds=[50], alert_webhook=receiver.url)
                assert r.status_code == 201, r.text
                made[name] = r.json()
            # One request per key crosses 50 % of its credits; both answer normally, whatever the receiver.
            for name in ("bad", "good"):
                sdk = openai.AsyncOpenAI(base_url=p.base + "/v1", api_key=made[name]["secret"], max_retries=0)
                reply = await sdk.chat.completions.with_raw_response.create(model=CHAT, messages=MSG,
                                                                             max_tokens=n_out)
                assert reply.status_code == 200 and reply.parse().choices[0].message.content

            await asyncio.wait_for(good.arrived.wait(), 20)
            assert good.connections == 1 and good.handshake_failures == 0 and len(good.requests) == 1
            body, headers = good.requests[0]
            assert headers[":request-line"] == "POST /hook HTTP/1.1"
            assert headers["content-type"] == "application/json"
            assert _signed(body, headers, made["good"]["webhook_secret"])
            assert not _signed(body, headers, made["bad"]["webhook_secret"])
            alert = json.loads(body)
            assert set(alert) == {"key_id", "threshold", "kind", "used", "limit", "period_start"}
            assert (alert["key_id"], alert["threshold"], alert["kind"]) == (made["good"]["key"]["id"], 50, "credits")
            assert (Decimal(alert["used"]), Decimal(alert["limit"]), alert["period_start"]) == (cost, cost * 2, None)

            # The untrusted receiver: three attempts (RAVEN_ALERT_WEBHOOK_ATTEMPTS), each refused at the
            # handshake by the sender, then the alert is dropped; the body never reached it.
            log = await _wait_for_log(p, DROPPED)
            assert log.count(DROPPED) == 1 and made["bad"]["webhook_secret"] not in log
            assert bad.connections == 3 and bad.handshake_failures == 3 and bad.requests == []
            # ...and the key keeps working while and after its alert fails.
            sdk = openai.AsyncOpenAI(base_url=p.base + "/v1", api_key=made["bad"]["secret"], max_retries=0)
            assert (await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)).choices
            assert len(good.requests) == 1  # at most once per crossing
    finally:
        await asyncio.to_thread(_stop, p)


async def test_http_receiver_refused_without_allow_http(tmp_path):
    """Refused at key create and update (400 naming alert_webhook), and at delivery for a key stored
    while `alert_webhook_allow_http` was on when the server now runs with it off."""
    async with Receiver() as plain:
        first = await asyncio.to_thread(_serve, tmp_path / "d", {"RAVEN_ALERT_WEBHOOK_ALLOW_HTTP": "true"})
        try:
            async with httpx.AsyncClient(base_url=first.base, timeout=30) as http:
                cost, n_out = await _cost(first)
                r = await _create(http, credits=str(cost * 2), alert_thresholds=[50], alert_webhook=plain.url)
                assert r.status_code == 201, r.text
                made = r.json()
        finally:
            await asyncio.to_thread(_stop, first)

        p = await asyncio.to_thread(_serve, tmp_path / "d", {})
        try:
            async with httpx.AsyncClient(base_url=p.base, timeout=30) as http:
                r = await _create(http, alert_webhook=plain.url)
                assert r.status_code == 400 and r.json()["error"]["param"] == "alert_webhook", r.text
                assert "allow" not in r.json()["error"]["message"].lower()  # no setting names to clients
                r = await http.patch(f"/v1/keys/{made['key']['id']}", headers={"Authorization": f"Bearer {ADMIN}"},
                                     json={"alert_webhook": plain.url.replace("/hook", "/other")})
                assert r.status_code == 400 and r.json()["error"]["param"] == "alert_webhook", r.text

                sdk = openai.AsyncOpenAI(base_url=p.base + "/v1", api_key=made["secret"], max_retries=0)
                reply = await sdk.chat.completions.create(model=CHAT, messages=MSG, max_tokens=n_out)  # 50 %
                assert reply.choices[0].message.content
                log = await _wait_for_log(p, REFUSED)
                assert log.count(REFUSED) == 1 and plain.url not in log
                assert plain.connections == 0 and plain.requests == []
        finally:
            await asyncio.to_thread(_stop, p)
