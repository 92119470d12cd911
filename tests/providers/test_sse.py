"""`providers._sse.SSEDecoder` on adversarial chunkings and the WHATWG parsing rules."""

from __future__ import annotations

import random

import pytest

from raven_service.providers._sse import SSEDecoder, SSEError, SSEEvent

pytestmark = pytest.mark.timeout(30)


def decode(chunks: list[bytes], *, flush: bool = True) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for c in chunks:
        events.extend(decoder.feed(c))
    if flush:
        events.extend(decoder.flush())
    return events


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def random_chunks(stream: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(stream):
        n = rng.randint(1, 9)
        out.append(stream[i : i + n])
        i += n
    return out


# A stream touching every rule: comments, event names, multi-line data, ids, retries, a field
# without a colon, no space after the colon, two leading spaces, unicode, empty data, extra blank
# lines, and an event with no data (not dispatched).
CORPUS = (
    b": connected\n\n"
    b'data: {"a":1}\n\n'
    b"event: ping\ndata: x\n\n"
    b"id: 7\nretry: 1000\ndata: line1\ndata: line2\n\n"
    b"data:no-space\n\n"
    b"data:  two spaces\n\n"
    b": comment inside\ndata: after-comment\n\n"
    b"event: only-event\n\n"
    b"data\n\n"
    b"data: caf\xc3\xa9 \xe2\x9c\x93\n\n\n\n"
    b"unknown: field\ndata: last\n\n"
)
EXPECTED = [
    SSEEvent("message", b'{"a":1}'),
    SSEEvent("ping", b"x"),
    SSEEvent("message", b"line1\nline2"),
    SSEEvent("message", b"no-space"),
    SSEEvent("message", b" two spaces"),
    SSEEvent("message", b"after-comment"),
    SSEEvent("message", b""),
    SSEEvent("message", "café ✓".encode()),
    SSEEvent("message", b"last"),
]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_whole_stream_every_line_ending(ending: bytes) -> None:
    assert decode([CORPUS.replace(b"\n", ending)]) == EXPECTED


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_one_byte_at_a_time(ending: bytes) -> None:
    assert decode(bytewise(CORPUS.replace(b"\n", ending))) == EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_random_chunkings_and_mixed_line_endings(seed: int) -> None:
    rng = random.Random(seed)
    endings = [b"\n", b"\r\n", b"\r"]
    # Each line ending picked at random: CRLF, LF and CR mixed in one stream (except that a CR
    # ending followed by an empty line ending in LF would read, correctly, as one CRLF).
    lines = CORPUS.split(b"\n")
    parts, previous = [], b""
    for line in lines[:-1]:
        ending = rng.choice([e for e in endings if not (previous == b"\r" and not line and e == b"\n")])
        parts.append(line + ending)
        previous = ending
    stream = b"".join(parts) + lines[-1]
    assert decode(random_chunks(stream, rng)) == EXPECTED


def test_every_two_way_split_of_a_crlf_stream() -> None:
    stream = b"data: a\r\n\r\nevent: e\r\ndata: b\r\n\r\n"
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]]) == [SSEEvent("message", b"a"), SSEEvent("e", b"b")], cut


def test_cr_at_chunk_end_then_lf_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []  # \r\n: one line ending, not a blank line
    assert decoder.feed(b"\r") == [SSEEvent("message", b"a")]  # now the blank line
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SSEEvent("message", b"b")]


def test_events_are_dispatched_as_soon_as_complete() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x"') == []
    assert decoder.feed(b":1}\n") == []
    assert decoder.feed(b"\ndata: next") == [SSEEvent("message", b'{"x":1}')]
    assert decoder.feed(b"\n\n") == [SSEEvent("message", b"next")]


def test_many_events_in_one_chunk_keep_order() -> None:
    stream = b"".join(b"data: %d\n\n" % i for i in range(100))
    assert [e.data for e in decode([stream])] == [str(i).encode() for i in range(100)]


def test_bom_is_skipped_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: a\n\n"
    assert decode([stream]) == [SSEEvent("message", b"a")]
    assert decode(bytewise(stream)) == [SSEEvent("message", b"a")]
    # Not at the start: not a BOM, just data.
    assert decode([b"data: \xef\xbb\xbfa\n\n"]) == [SSEEvent("message", b"\xef\xbb\xbfa")]


def test_flush_dispatches_complete_lines_but_not_a_truncated_one() -> None:
    assert decode([b"data: a\n\ndata: [DONE]\n"]) == [SSEEvent("message", b"a"), SSEEvent("message", b"[DONE]")]
    assert decode([b"data: a\n\ndata: {\"trunc"]) == [SSEEvent("message", b"a")]
    assert decode([b"data: a\n\ndata: [DONE]\n"], flush=False) == [SSEEvent("message", b"a")]


def test_comment_only_and_id_only_blocks_dispatch_nothing() -> None:
    assert decode([b": ping\n\n: OPENROUTER PROCESSING\n\nid: 3\n\nretry: 10\n\n"]) == []


def test_huge_event_without_boundary_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    decoder.feed(b"data: " + b"x" * 1000)
    with pytest.raises(SSEError):
        decoder.feed(b"x" * 100)


def test_large_event_fed_in_small_pieces_is_linear() -> None:
    # 2 MB fed 64 bytes at a time must not rescan the buffer from the start each time.
    payload = b"data: " + b"y" * 2_000_000 + b"\n\n"
    decoder = SSEDecoder()
    out: list[SSEEvent] = []
    for i in range(0, len(payload), 64):
        out.extend(decoder.feed(payload[i : i + 64]))
    assert len(out) == 1 and len(out[0].data) == 2_000_000
