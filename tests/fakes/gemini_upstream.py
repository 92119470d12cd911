"""A fake Gemini API upstream: a real aiohttp server on 127.0.0.1 (ephemeral port).

It is `FakeOpenAI` (same `Scenario` scripting, fault injection and request recording; see
``openai_upstream``) speaking Google's wire format instead:

- ``POST /v1beta/models/{model}:generateContent`` -> one ``GenerateContentResponse``;
- ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` -> an SSE stream (CRLF framing, as
  Google sends it) of ``GenerateContentResponse`` chunks, the last with ``finishReason``, no
  ``[DONE]``; without ``alt=sse`` the same chunks as one JSON array;
- with ``api_key`` set, a request without ``x-goog-api-key`` (or ``?key=``) gets Google's 403
  PERMISSION_DENIED and a wrong key its 400 API_KEY_INVALID; unknown paths get 404 NOT_FOUND.

Payload templates transcribed from Google's Gemini API reference live in ``payloads/gemini/``.
Picking a reply: `script(...)` FIFO first, then `on_model(model, scenario)` keyed by the model id
in the path (``gemini-2.5-flash``, without ``models/``), then the default above. Each request is
recorded (`Received`: path with the model and method, ``query`` with ``alt``, lower-case headers
with ``x-goog-api-key``, raw and JSON body) together with whether the client hung up early.

Standalone: ``python -m tests.fakes.gemini_upstream --port 8098 [--api-key K]``. It imports
nothing from raven_service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .openai_upstream import DEFAULT_TEXT, FakeOpenAI, Received, Scenario, sse_event

__all__ = [
    "DEFAULT_TEXT",
    "FakeGemini",
    "Received",
    "Scenario",
    "blocked_response",
    "chunk",
    "error_payload",
    "function_call",
    "google_error",
    "model_of",
    "payload",
    "response",
    "sse_event",
    "stream_chunks",
    "text_part",
    "text_response",
    "usage_metadata",
]

PAYLOADS = Path(__file__).parent / "payloads" / "gemini"
MODEL_VERSION = "gemini-2.5-flash"
_METHOD = re.compile(r"^/v1(?:beta)?/(?:models|tunedModels)/([^/:]+):([A-Za-z]+)$")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


# ------------------------------------------------------------------------------------ payloads
@functools.cache
def _load(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def payload(name: str) -> Any:
    """A fresh copy of a recorded payload from ``payloads/gemini/<name>.json``."""
    return copy.deepcopy(_load(name))


def usage_metadata(
    prompt: int, candidates: int | None = None, *, thoughts: int | None = None, cached: int | None = None
) -> dict[str, Any]:
    """``usageMetadata`` as Gemini writes it: zero / absent counts omitted, total = all of them;
    `cached` adds ``cachedContentTokenCount`` (part of the prompt) and its ``cacheTokensDetails``."""
    out: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates:
        out["candidatesTokenCount"] = candidates
    out["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0)
    out["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        out["cachedContentTokenCount"] = cached
        out["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    return out


def text_part(text: str, *, thought: bool = False, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def function_call(
    name: str, args: Mapping[str, Any] | None = None, *, id: str | None = None, signature: str | None = None
) -> dict[str, Any]:
    """A ``functionCall`` part (Gemini sends the whole call, args as an object)."""
    call: dict[str, Any] = {"name": name, "args": dict(args or {})}
    if id is not None:
        call["id"] = id
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def response(
    parts: Sequence[Mapping[str, Any]], *, finish_reason: str | None = "STOP",
    usage: tuple[int, int] | None = (8, 19), thoughts: int | None = None, model_version: str = MODEL_VERSION,
) -> dict[str, Any]:
    """A ``GenerateContentResponse`` with one candidate holding `parts`."""
    obj = payload("generate_content_text")
    candidate = obj["candidates"][0]
    candidate["content"]["parts"] = [dict(p) for p in parts]
    if finish_reason is None:
        del candidate["finishReason"]
    else:
        candidate["finishReason"] = finish_reason
    if usage is None:
        del obj["usageMetadata"]
    else:
        obj["usageMetadata"] = usage_metadata(usage[0], usage[1], thoughts=thoughts)
    obj["modelVersion"] = model_version
    return obj


def text_response(text: str = DEFAULT_TEXT, **options: Any) -> dict[str, Any]:
    return response([text_part(text)], **options)


def chunk(
    parts: Sequence[Mapping[str, Any]], *, finish_reason: str | None = None, usage: Mapping[str, Any] | None = None,
    model_version: str = MODEL_VERSION,
) -> dict[str, Any]:
    """One stream chunk (same shape as a whole response, with the next parts only)."""
    obj = payload("stream_text")[0]
    candidate = obj["candidates"][0]
    candidate["content"]["parts"] = [dict(p) for p in parts]
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    if usage is None:
        del obj["usageMetadata"]
    else:
        obj["usageMetadata"] = dict(usage)
    obj["modelVersion"] = model_version
    return obj


def stream_chunks(
    pieces: Sequence[str | Mapping[str, Any]], *, finish_reason: str | None = "STOP",
    usage: tuple[int, int] | None = (9, 12), thoughts: int | None = None,
) -> list[dict[str, Any]]:
    """A stream as Gemini sends it: one chunk per piece (a string is a text part, a mapping any
    part), each with the running usage (prompt count only), the last one with `finish_reason` and
    the final usage (candidates and thoughts counts)."""
    out = []
    for i, piece in enumerate(pieces):
        part = text_part(piece) if isinstance(piece, str) else piece
        last = i == len(pieces) - 1
        meta = None
        if usage is not None:
            meta = usage_metadata(usage[0], usage[1], thoughts=thoughts) if last else usage_metadata(usage[0])
        out.append(chunk([part], finish_reason=finish_reason if last else None, usage=meta))
    return out


def blocked_response(reason: str = "SAFETY", prompt_tokens: int = 11) -> dict[str, Any]:
    """A response to a blocked prompt: ``promptFeedback.blockReason`` and no candidates."""
    obj = payload("prompt_blocked")
    obj["promptFeedback"]["blockReason"] = reason
    obj["usageMetadata"] = usage_metadata(prompt_tokens)
    return obj


def error_payload(code: int, message: str, status: str | None = None) -> dict[str, Any]:
    """Google's error shape: ``{"error": {"code", "message", "status"}}``."""
    return {"error": {"code": code, "message": message, "status": status or _STATUS_NAMES.get(code, "UNKNOWN")}}


def google_error(
    code: int, message: str = "error", status: str | None = None, *, headers: Mapping[str, str] | None = None
) -> Scenario:
    """A non-2xx reply with Google's error body."""
    return Scenario.json(error_payload(code, message, status), status=code, headers=headers)


def model_of(path: str) -> str | None:
    """The model id in a Gemini method path (``/v1beta/models/<id>:<method>``)."""
    match = _METHOD.match(path)
    return match[1] if match else None


# ------------------------------------------------------------------------------------ the server
class FakeGemini(FakeOpenAI):
    """The fake Gemini API. `base_url` is the API root ``http://127.0.0.1:<port>`` (Raven appends
    ``/v1beta/models/...``)."""

    def __init__(self, *, api_key: str | None = None, text: str = DEFAULT_TEXT) -> None:
        super().__init__(api_key=api_key, text=text)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _pick(self, rec: Received) -> Scenario:
        if self.api_key is not None:
            given = rec.headers.get("x-goog-api-key") or rec.query.get("key")
            if not given:
                return Scenario.json(payload("error_permission_denied"), status=403)
            if given != self.api_key:
                return Scenario.json(payload("error_api_key_invalid"), status=400)
        if self._queue:
            return self._queue.popleft()
        model = model_of(rec.path)
        if model is not None and model in self._by_model:
            return self._by_model[model]
        return self._default(rec)

    def _default(self, rec: Received) -> Scenario:
        match = _METHOD.match(rec.path)
        if match is None or rec.method != "POST":
            return google_error(404, f"Method not found: {rec.method} {rec.path}")
        words = [w if i == 0 else " " + w for i, w in enumerate(self.text.split(" "))]
        if match[2] == "generateContent":
            return Scenario.json(text_response(self.text, usage=(9, len(words))))
        if match[2] == "streamGenerateContent":
            chunks = stream_chunks(words, usage=(9, len(words)))
            if rec.query.get("alt") == "sse":
                return Scenario.sse(chunks, done=False, line_ending="\r\n")
            return Scenario.json(chunks)
        return google_error(404, f"models/{match[1]} is not found for API version v1beta, or is not supported "
                                 f"for {match[2]}.")


# ------------------------------------------------------------------------------------ standalone
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Gemini API upstream (default behaviours).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeGemini(api_key=args.api_key, text=args.text)
        await fake.start(args.port, args.host)
        print(f"fake Gemini upstream on http://{args.host}:{fake.port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
