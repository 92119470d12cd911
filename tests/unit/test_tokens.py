"""The shared tokenizer: lossless pieces, BPE-like sizes, chat prompt accounting."""

from __future__ import annotations

import pytest

from raven_service.core.tokens import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    count_message_tokens,
    count_tokens,
    tokenize,
)
from raven_service.core.types import ContentPart, Message, Tool, ToolCall

pytestmark = pytest.mark.timeout(30)

SAMPLES = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "line one\n\nline two\r\n\tindented",
    "Internationalization of tokenizers is straightforward-ish.",
    "I'm sure they'll say it's fine; we've done it.",
    "Numbers: 1234567, 3.14159, -42 and 1e10.",
    'JSON {"a": [1, 2.5, null], "b_c": "d"}',
    "Ünïcödé café naïveté — “quotes” and emoji 🎉🚀",
    "日本語のテキストと中文文本",
    "snake_case camelCaseWord kebab-case URL https://example.com/a?b=c",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_pieces_concatenate_to_the_text(text: str) -> None:
    pieces = tokenize(text)
    assert "".join(pieces) == text
    assert all(pieces)
    assert count_tokens(text) == len(pieces)


def test_gpt_like_pieces() -> None:
    assert tokenize("Hello, world!") == ["Hello", ",", " world", "!"]
    assert tokenize("I'm here") == ["I", "'m", " here"]
    assert tokenize("a\n\nb") == ["a", "\n\n", "b"]
    assert tokenize("1234567") == ["123", "456", "7"]


def test_long_words_split_into_bpe_sized_pieces() -> None:
    pieces = tokenize(" internationalization")
    assert len(pieces) >= 3
    assert pieces[0].startswith(" ")
    assert all(len(p.strip()) <= 6 for p in pieces)
    assert tokenize("cat dog") == ["cat", " dog"]  # short words are one token


def test_cjk_counts_one_token_per_character() -> None:
    assert count_tokens("日本語") == 3


def test_english_prose_is_about_one_token_per_word() -> None:
    text = "The quick brown fox jumps over the lazy dog while the farmer watches quietly. " * 10
    words = len(text.split())
    assert words <= count_tokens(text) <= 1.6 * words


def test_count_tokens_of_nothing() -> None:
    assert count_tokens("") == 0
    assert count_tokens(None) == 0


def test_message_tokens_add_overheads() -> None:
    messages = [Message(role="system", content="Be brief."), Message(role="user", content="Hello there")]
    expected = REPLY_PRIMING + 2 * MESSAGE_OVERHEAD + count_tokens("Be brief.") + count_tokens("Hello there")
    assert count_message_tokens(messages) == expected


def test_message_tokens_count_parts_tool_calls_and_tools() -> None:
    base = [Message(role="user", content="What is the weather?")]
    parts = [Message(role="user", parts=(ContentPart(type="text", text="What is the weather?"),))]
    assert count_message_tokens(parts) == count_message_tokens(base)

    with_call = [
        *base,
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),),
        ),
        Message(role="tool", tool_call_id="call_1", content='{"temperature": 21}'),
    ]
    assert count_message_tokens(with_call) > count_message_tokens(base) + count_tokens('{"city": "Paris"}')

    tool = Tool(
        name="get_weather",
        description="Get the weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    assert count_message_tokens(base, [tool]) > count_message_tokens(base) + count_tokens("get_weather")
    assert count_message_tokens(base, [tool]) == count_message_tokens(base, (tool,))
