"""A fake Anthropic Messages API upstream: a real aiohttp server on 127.0.0.1 (ephemeral port).

It reuses the machinery of `openai_upstream` (`Scenario` scripting and fault injection, the
`Received` records, early-disconnect detection, ``in_thread``): `FakeAnthropic` is that server
with Anthropic's front door and default behaviour. Payload templates transcribed from Anthropic's
API reference live in ``payloads/anthropic/``.

Like the real API, every request is first checked for the ``anthropic-version`` header (400
``invalid_request_error`` without it) and, when the fake has an ``api_key``, for ``x-api-key``
(401 ``authentication_error``); scripted scenarios are only reached past those checks. Then,
first match wins:

1. `FakeAnthropic.script(*scenarios)`: a FIFO queue, one scenario per request;
2. `FakeAnthropic.on_model(model, scenario)`: every request whose JSON body names `model`;
3. the default: ``POST /v1/messages`` answers `text` as a Message or, with ``"stream": true``,
   as an event stream (with a ``ping``); a body without ``max_tokens`` gets Anthropic's 400.

Build streams with `stream(events)` (dicts are framed ``event: <type>`` + ``data: <json>``, bytes
go verbatim) from `text_stream`, `tool_use_stream` or the single-event helpers; faults are the
`Scenario` modifiers (``split_writes``, ``slow_first_byte``, ``reset``, ``stall``, ``paced``,
``held_open``) plus `error` (any status, e.g. 429 with ``retry-after``, 500, 529) and
`error_event` (Anthropic's mid-stream ``error`` event).

Standalone: ``python -m tests.fakes.anthropic_upstream --port 8098 [--api-key K]``.
It imports nothing from raven_service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .openai_upstream import FakeOpenAI, Received, Scenario, sse_event

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_TEXT",
    "FakeAnthropic",
    "Received",
    "Scenario",
    "content_block_start",
    "content_block_stop",
    "error",
    "error_body",
    "error_event",
    "frame",
    "input_json_delta",
    "message",
    "message_delta",
    "message_start",
    "message_stop",
    "payload",
    "ping",
    "stream",
    "text_delta",
    "text_stream",
    "tool_use_stream",
]

PAYLOADS = Path(__file__).parent / "payloads" / "anthropic"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_TEXT = "Hi! My name is Claude."


# ------------------------------------------------------------------------------------ payloads
@functools.cache
def _load(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def payload(name: str) -> Any:
    """A fresh copy of a recorded payload from ``payloads/anthropic/<name>.json``."""
    return copy.deepcopy(_load(name))


def _events(name: str, kind: str) -> dict[str, Any]:
    """The first event of `kind` in a recorded stream (a template)."""
    return copy.deepcopy(next(e for e in _load(name) if e["type"] == kind))


def frame(event: Mapping[str, Any]) -> bytes:
    """One event as Anthropic frames it: ``event: <type>`` then ``data: <json>``, blank line."""
    return sse_event(dict(event), event=str(event["type"]))


def message_start(input_tokens: int | None = 25, output_tokens: int | None = 1, *, cache_creation: int | None = None,
                  cache_read: int | None = None, model: str = "claude-opus-4-1-20250805") -> dict[str, Any]:
    """``message_start``; usage fields that are None are left out."""
    ev = _events("stream_text", "message_start")
    ev["message"]["model"] = model
    usage: dict[str, Any] = {}
    for key, value in (("input_tokens", input_tokens), ("cache_creation_input_tokens", cache_creation),
                       ("cache_read_input_tokens", cache_read), ("output_tokens", output_tokens)):
        if value is not None:
            usage[key] = value
    ev["message"]["usage"] = usage
    return ev


def content_block_start(index: int, block: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": dict(block)}


def text_delta(index: int, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}


def input_json_delta(index: int, partial_json: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial_json}}


def content_block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str | None = "end_turn", output_tokens: int | None = 15,
                  **usage: int) -> dict[str, Any]:
    """``message_delta``; `usage` adds fields (e.g. ``input_tokens``) to its usage object."""
    ev = _events("stream_text", "message_delta")
    ev["delta"]["stop_reason"] = stop_reason
    ev["usage"] = {**({"output_tokens": output_tokens} if output_tokens is not None else {}), **usage}
    return ev


def message_stop() -> dict[str, Any]:
    return {"type": "message_stop"}


def ping() -> dict[str, Any]:
    return {"type": "ping"}


def error_body(type: str, message: str) -> dict[str, Any]:
    """Anthropic's error body (also the ``data`` of a stream ``error`` event)."""
    return {"type": "error", "error": {"type": type, "message": message}, "request_id": "req_011CFakeRequest0001"}


def error_event(type: str = "overloaded_error", message: str = "Overloaded") -> dict[str, Any]:
    """A mid-stream ``error`` event (framed ``event: error``)."""
    body = error_body(type, message)
    del body["request_id"]
    return body


def text_stream(pieces: Sequence[str] = ("Hello", "!"), *, stop_reason: str | None = "end_turn",
                usage: tuple[int, int] | None = (25, 15), with_ping: bool = True,
                stop: bool = True) -> list[dict[str, Any]]:
    """A text reply as Anthropic streams it (shape of ``stream_text.json``): message_start,
    content_block_start, ping, one text_delta per piece, content_block_stop, message_delta
    (stop_reason and the cumulative output_tokens) and message_stop. With `usage` None the
    usage objects are left out."""
    start = message_start(usage[0], 1) if usage else message_start(None, None)
    out = [start, content_block_start(0, {"type": "text", "text": ""})]
    if with_ping:
        out.append(ping())
    out.extend(text_delta(0, p) for p in pieces)
    out.append(content_block_stop(0))
    if stop_reason is not None:
        out.append(message_delta(stop_reason, usage[1] if usage else None))
    if stop:
        out.append(message_stop())
    return out


def tool_use_stream(calls: Sequence[tuple[str, str, Sequence[str]]], *, text: Sequence[str] = (),
                    stop_reason: str = "tool_use", usage: tuple[int, int] = (472, 89)) -> list[dict[str, Any]]:
    """A reply with an optional text block then one ``tool_use`` block per (id, name, partial_json
    pieces), as in ``stream_tool_use.json`` (each tool block opens with an empty input_json_delta)."""
    out = [message_start(usage[0], 2)]
    index = 0
    if text:
        out.append(content_block_start(0, {"type": "text", "text": ""}))
        out.append(ping())
        out.extend(text_delta(0, p) for p in text)
        out.append(content_block_stop(0))
        index = 1
    for call_id, name, pieces in calls:
        out.append(content_block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}}))
        out.append(input_json_delta(index, ""))
        out.extend(input_json_delta(index, p) for p in pieces)
        out.append(content_block_stop(index))
        index += 1
    out.append(message_delta(stop_reason, usage[1]))
    out.append(message_stop())
    return out


def message(content: str | None = DEFAULT_TEXT, *, tool_uses: Sequence[tuple[str, str, Any]] = (),
            stop_reason: str | None = "end_turn", usage: Mapping[str, int] | None = None,
            model: str = "claude-sonnet-4-20250514") -> dict[str, Any]:
    """A Message object (shape of ``message.json``): a text block unless `content` is None, then
    one ``tool_use`` block per (id, name, input). `usage` replaces the recorded usage numbers
    (an empty mapping drops the usage object)."""
    obj = payload("message")
    obj["model"] = model
    blocks: list[dict[str, Any]] = [] if content is None else [{"type": "text", "text": content}]
    blocks.extend({"type": "tool_use", "id": i, "name": n, "input": inp} for i, n, inp in tool_uses)
    obj["content"] = blocks
    obj["stop_reason"] = stop_reason
    if usage is not None:
        if usage:
            obj["usage"] = {"input_tokens": 0, "output_tokens": 0, **usage}
        else:
            del obj["usage"]
    return obj


# ------------------------------------------------------------------------------------ scenarios
def stream(events: Iterable[Mapping[str, Any] | bytes], *, status: int = 200, line_ending: str = "\n",
           headers: Mapping[str, str] | None = None) -> Scenario:
    """An Anthropic event stream: dicts are framed with their ``event:`` line, bytes are sent
    verbatim (malformed lines, custom frames). No ``[DONE]``: Anthropic ends with message_stop."""
    frames = [e if isinstance(e, bytes) else frame(e) for e in events]
    return Scenario.sse(frames, done=False, line_ending=line_ending, status=status, headers=headers)


def error(status: int, type: str, message: str, *, headers: Mapping[str, str] | None = None) -> Scenario:
    """An HTTP error with Anthropic's error body (e.g. 529 overloaded_error, 429 rate_limit_error)."""
    return Scenario.json(error_body(type, message), status=status, headers=headers)


# ------------------------------------------------------------------------------------ the server
class FakeAnthropic(FakeOpenAI):
    """The fake Messages API. `base_url` is the API root ``http://127.0.0.1:<port>`` (clients
    append ``/v1/messages``)."""

    def __init__(self, *, api_key: str | None = None, text: str = DEFAULT_TEXT) -> None:
        super().__init__(api_key=api_key, text=text)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _pick(self, rec: Received) -> Scenario:
        if "anthropic-version" not in rec.headers:
            return error(400, "invalid_request_error", "anthropic-version: header is required")
        if self.api_key is not None:
            key = rec.headers.get("x-api-key")
            if not key:
                return error(401, "authentication_error", "x-api-key header is required")
            if key != self.api_key:
                return error(401, "authentication_error", "invalid x-api-key")
        if self._queue:
            return self._queue.popleft()
        model = rec.json.get("model") if isinstance(rec.json, dict) else None
        if isinstance(model, str) and model in self._by_model:
            return self._by_model[model]
        return self._default(rec)

    def _default(self, rec: Received) -> Scenario:
        body = rec.json if isinstance(rec.json, dict) else None
        if rec.path == "/v1/messages" and rec.method == "POST":
            if body is None:
                return error(400, "invalid_request_error", "There was an issue with your request body: not JSON")
            if "max_tokens" not in body:
                return error(400, "invalid_request_error", "max_tokens: Field required")
            words = [w if i == 0 else " " + w for i, w in enumerate(self.text.split(" "))]
            if body.get("stream"):
                return stream(text_stream(words, usage=(12, len(words))))
            return Scenario.json(message(self.text, usage={"input_tokens": 12, "output_tokens": len(words)},
                                         model=str(body.get("model", "claude"))))
        if rec.path == "/v1/models" and rec.method == "GET":
            return Scenario.json({"data": [{"type": "model", "id": "claude-sonnet-4-20250514",
                                            "display_name": "Claude Sonnet 4", "created_at": "2025-05-22T00:00:00Z"}],
                                  "has_more": False, "first_id": "claude-sonnet-4-20250514",
                                  "last_id": "claude-sonnet-4-20250514"})
        return error(404, "not_found_error", f"Not Found: {rec.method} {rec.path}")


# ------------------------------------------------------------------------------------ standalone
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Anthropic Messages API upstream (default behaviours).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeAnthropic(api_key=args.api_key, text=args.text)
        await fake.start(args.port, args.host)
        print(f"fake Anthropic upstream on http://{args.host}:{fake.port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
