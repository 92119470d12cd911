"""The one tokenizer Raven counts with.

A deterministic, download-free approximation of a GPT-style BPE tokenizer:

- a word keeps its leading space (`" hello"` is one token), as in GPT encodings;
- English-sized words (up to 6 letters) are one token, longer words are split into pieces of
  4-5 letters; CJK-like characters count one token each;
- numbers are split into groups of up to 3 digits;
- every punctuation or symbol character is its own token;
- line breaks are one token; other runs of whitespace are one token, except that the last
  space before a word goes with it.

`tokenize(text)` returns pieces whose concatenation is exactly `text`, so streams can be cut
token by token and counts stay consistent with what was emitted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raven_service.core.types import Message, Tool

__all__ = ["count_message_tokens", "count_tokens", "tokenize"]

_PIECE = re.compile(
    r"""'(?:[sdmtSDMT]|ll|ve|re|LL|VE|RE)(?![^\W\d_])  # contractions: 's 't 're 've 'm 'll 'd
    | \ ?[^\W\d_]+                                    # letters, with an optional leading space
    | \ ?\d{1,3}                                      # up to three digits
    | \ ?(?:_|[^\s\w])                                # one punctuation / symbol character
    | \s*[\r\n]+                                      # line breaks (with the spaces before them)
    | \s+(?!\S)                                       # whitespace not followed by a word...
    | \s+                                             # ...else all of it
    """,
    re.VERBOSE,
)

_MAX_WORD = 6  # letters in a word that still counts as one token
_CHUNK = 5  # target letters per piece of a longer word
_WIDE_START = 0x2E80  # CJK radicals onwards: one token per character

# Per-message and per-request overheads, in the spirit of OpenAI's chat format accounting.
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
TOOL_CALL_OVERHEAD = 3
TOOLS_OVERHEAD = 8
IMAGE_PART_TOKENS = 85


def _split_word(piece: str) -> list[str]:
    """Splits a (possibly space-led) run of letters into BPE-sized pieces."""
    lead = 1 if piece[0] == " " else 0
    letters = len(piece) - lead
    if not piece.isascii() and any(ord(ch) >= _WIDE_START for ch in piece):
        out = [piece[: lead + 1]]
        out.extend(piece[lead + 1 :])
        return out
    if letters <= _MAX_WORD:
        return [piece]
    parts = -(-letters // _CHUNK)
    size, extra = divmod(letters, parts)
    out = []
    pos = 0
    for i in range(parts):
        end = pos + size + (1 if i < extra else 0) + (lead if i == 0 else 0)
        out.append(piece[pos:end])
        pos = end
    return out


def tokenize(text: str) -> list[str]:
    """Splits `text` into token pieces; `"".join(tokenize(text)) == text`."""
    out: list[str] = []
    for piece in _PIECE.findall(text):
        if len(piece) > _MAX_WORD or (not piece.isascii() and piece.strip()):
            core = piece.lstrip(" ")
            if core and core[0].isalpha():
                out.extend(_split_word(piece))
                continue
        out.append(piece)
    return out


def count_tokens(text: str | None) -> int:
    """The number of tokens in `text` (0 for None or "")."""
    if not text:
        return 0
    return len(tokenize(text))


def _tool_schema_text(tools: Iterable[Tool]) -> str:
    specs = [
        {"name": t.name, "description": t.description or "", "parameters": t.parameters or {}}
        for t in tools
    ]
    return json.dumps(specs, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def count_message_tokens(messages: Sequence[Message], tools: Sequence[Tool] = ()) -> int:
    """Prompt tokens of a chat request: message texts plus per-message overhead, the tool calls
    of assistant messages, and the JSON of the tool definitions."""
    total = REPLY_PRIMING
    for message in messages:
        total += MESSAGE_OVERHEAD + count_tokens(message.text())
        total += count_tokens(message.name) + count_tokens(message.tool_call_id)
        total += sum(IMAGE_PART_TOKENS for part in message.parts if part.type == "image_url")
        for call in message.tool_calls:
            total += TOOL_CALL_OVERHEAD + count_tokens(call.name) + count_tokens(call.arguments)
    if tools:
        total += TOOLS_OVERHEAD + count_tokens(_tool_schema_text(tools))
    return total
