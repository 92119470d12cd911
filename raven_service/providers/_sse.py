"""An incremental Server-Sent Events decoder: feed it bytes as they arrive, get whole events.

It follows the WHATWG `text/event-stream` parsing rules where they matter to API clients:

- lines end with CRLF, LF or CR (mixed in one stream too), and a line ending may be split across
  two chunks (a chunk ending in CR whose next chunk starts with LF is one line ending);
- a blank line dispatches the event; lines starting with ``:`` are comments;
- ``field:value`` strips one optional space after the colon; a line without a colon is a field
  with an empty value;
- several ``data:`` lines join with ``\\n``; ``event:`` sets the event type (default ``message``);
- ``id:``, ``retry:`` and unknown fields are ignored; an event without any ``data`` line is not
  dispatched; a UTF-8 BOM at the very start is skipped.

Data stays `bytes` (JSON decoders take bytes, so no UTF-8 decode is spent on the hot path).

Speed: the decoder never loops over bytes in Python. It appends each chunk to a buffer, looks
for the last blank line (``\\n\\n`` after line endings are normalised) with one C-level search that
resumes where the previous one stopped, and splits the complete part into events. The common
single-line ``data: {...}`` event takes a fast path with no line splitting at all.

One deliberate leniency: `flush()` (end of stream) dispatches a final event whose lines are
complete but which lacks the closing blank line (some servers end with ``data: [DONE]\\n``). A
truncated last line is still discarded, as the standard requires.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "SSEError", "SSEEvent"]

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_DATA_PREFIX = b"data: "


class SSEEvent(NamedTuple):
    """One dispatched event: its type (``message`` unless an ``event:`` field said otherwise)
    and its data (``data:`` lines joined by ``\\n``)."""

    event: str
    data: bytes


class SSEError(ValueError):
    """The stream cannot be decoded (an event grew past the size limit)."""


def _parse_block(block: bytes) -> SSEEvent | None:
    """Parses the lines of one event (no blank lines inside, except leading ones)."""
    data: list[bytes] = []
    event = ""
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # blank (leading) or ":" comment
            continue
        colon = line.find(b":")
        if colon == -1:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if not data:
        return None
    return SSEEvent(event or "message", data[0] if len(data) == 1 else b"\n".join(data))


class SSEDecoder:
    """Turns a byte stream into `SSEEvent`s; see the module docstring for the rules.

    Usage::

        decoder = SSEDecoder()
        async for chunk in body:
            for event in decoder.feed(chunk):
                ...
        for event in decoder.flush():  # at end of stream
            ...
    """

    __slots__ = ("_buf", "_lf_pending", "_max", "_scan", "_started")

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0  # where the next search for a blank line may start
        self._lf_pending = False  # the last chunk ended in CR: drop a LF that starts the next one
        self._started = False  # BOM check done
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Adds `chunk` and returns the events it completed (often none or one)."""
        if not chunk:
            return []
        if self._lf_pending:
            self._lf_pending = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if not self._started:
            if len(self._buf) + len(chunk) < len(_BOM) and _BOM.startswith(bytes(self._buf) + chunk):
                self._buf += chunk  # could still be a BOM: wait for more
                return []
            self._started = True
            if self._buf:
                chunk, self._buf = bytes(self._buf) + chunk, bytearray()
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if b"\r" in chunk:
            if chunk[-1] == 0x0D:
                self._lf_pending = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        if not buf and chunk[-2:] == b"\n\n":
            return self._events(chunk[:-2])  # common case: the chunk ends exactly on an event boundary
        buf += chunk
        end = buf.rfind(b"\n\n", self._scan)
        if end == -1:
            if len(buf) > self._max:
                raise SSEError(f"an SSE event is larger than {self._max} bytes")
            self._scan = max(0, len(buf) - 1)
            return []
        complete = bytes(buf[:end])
        del buf[: end + 2]
        self._scan = max(0, len(buf) - 1)
        return self._events(complete)

    def flush(self) -> list[SSEEvent]:
        """Ends the stream: returns a last event whose lines are complete but which was never
        closed by a blank line; discards a truncated last line. Resets the decoder."""
        buf = bytes(self._buf)
        self._buf = bytearray()
        self._scan = 0
        self._lf_pending = False
        self._started = False
        cut = buf.rfind(b"\n")
        if cut == -1:
            return []
        return self._events(buf[:cut])

    @staticmethod
    def _events(complete: bytes) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        for block in complete.split(b"\n\n"):
            if block.startswith(_DATA_PREFIX) and b"\n" not in block:
                out.append(SSEEvent("message", block[6:]))  # fast path: one `data: ...` line
                continue
            event = _parse_block(block)
            if event is not None:
                out.append(event)
        return out
