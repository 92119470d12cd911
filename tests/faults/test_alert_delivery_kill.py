"""SPEC §11 alerts across process death: an instance SIGKILLed while its alert webhooks are in
flight leaves the claims pending under their lease; the next instance's sweep delivers each one
exactly once, with the same `x-raven-delivery` id, and records it delivered."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from raven_procs import start_raven

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ENV = {"RAVEN_ALERT_WEBHOOK_ALLOW_HTTP": "true", "RAVEN_ALERT_WEBHOOK_LEASE_SECONDS": "1",
       "RAVEN_ALERT_WEBHOOK_RETRY_SECONDS": "0.05"}
MSG = [{"role": "user", "content": "echo: alpha beta gamma delta"}]


class Receiver:
    """A loopback webhook receiver: holds every request unanswered while `hold` is set (the
    delivery is in flight when its sender dies), answers 204 otherwise; records what it got."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held: list[tuple[str, bytes]] = []
        self.delivered: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                item = (self.headers["x-raven-delivery"], body)
                if receiver.hold.is_set():
                    receiver.held.append(item)
                    receiver.release.wait(30)
                    return  # no answer: the connection ends with the sender's process
                receiver.delivered.append(item)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _wait(check, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alert_rows(db) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT threshold, state FROM key_alerts").fetchall())


def test_sigkill_with_alerts_in_flight_then_the_next_instance_delivers_each_once(tmp_path) -> None:
    data = tmp_path / "data"
    receiver = Receiver()
    first = start_raven(data, env=ENV)
    try:
        admin = {"Authorization": f"Bearer {first.key}"}
        probe = httpx.post(first.base + "/v1/chat/completions", headers=admin, timeout=30,
                           json={"model": "raven/local-chat", "messages": MSG, "max_tokens": 8})
        assert probe.status_code == 200, probe.text
        made = httpx.post(first.base + "/v1/keys", headers=admin, timeout=30, json={
            "name": "alerted", "credits": f"{Decimal(str(probe.json()['usage']['cost'])) * Decimal('2.5'):f}",
            "alert_thresholds": [20, 30], "alert_webhook": receiver.url})
        assert made.status_code == 201, made.text
        receiver.hold.set()
        r = httpx.post(first.base + "/v1/chat/completions", timeout=30,
                       headers={"Authorization": f"Bearer {made.json()['secret']}"},
                       json={"model": "raven/local-chat", "messages": MSG, "max_tokens": 8})
        assert r.status_code == 200, r.text  # 40 % of the credits used: both thresholds crossed
        _wait(lambda: len(receiver.held) == 2)  # both deliveries in flight, neither answered
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    except BaseException:
        first.proc.kill()
        receiver.close()
        raise
    db = data / "raven.db"
    assert _alert_rows(db) == [(20, "pending"), (30, "pending")]  # claimed, never recorded as delivered
    receiver.hold.clear()

    second = start_raven(data, key=first.key, env=ENV)
    try:
        _wait(lambda: len(receiver.delivered) == 2)
        _wait(lambda: _alert_rows(db) == [(20, "delivered"), (30, "delivered")])
        assert sorted(receiver.delivered) == sorted(receiver.held)  # same ids, same bodies
        assert sorted(json.loads(b)["threshold"] for _, b in receiver.delivered) == [20, 30]
        time.sleep(1.5)  # more than a lease and several sweeps: nothing is sent again
        assert len(receiver.delivered) == 2
    finally:
        assert second.stop() == 0
        receiver.close()
