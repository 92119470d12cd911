"""What the local chat model says: plausible English built from templates and the prompt.

`compose_reply` returns the whole, uncut reply for a conversation; the provider cuts it for
`max_tokens` and `stop` afterwards, so a cut reply is always a prefix of the uncut one.

- `echo: <text>` as the last user message: the reply is exactly `<text>` (text parts that are an
  agent's `<system-reminder>` context are not the user's words: they are ignored here and below);
- the last message is a tool result: a reply that quotes what the tool returned;
- `response_format` json_object / json_schema: a JSON document (the schema is honoured);
- a request for a story / essay / long or detailed text / N words: several hundred tokens;
- anything else: a short answer (about 20 to 60 tokens) that mentions the prompt's words.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from raven_service.core.tokens import count_tokens
from raven_service.core.types import ChatRequest, Message
from raven_service.providers.local import _words as words
from raven_service.providers.local._schema import generate_instance
from raven_service.providers.local._words import Hints, analyze

__all__ = ["ECHO_PREFIX", "compose_reply", "echo_text", "last_user_text"]

ECHO_PREFIX = "echo:"

_STORY = re.compile(r"\b(?:story|stories|tale|fable|fairy|novel|chapter|saga|bedtime)\b", re.IGNORECASE)
_LONG = re.compile(
    r"\b(?:essay|long|longer|lengthy|detailed|in detail|in depth|in-depth|article|report|thorough|"
    r"elaborate|comprehensive|extensive|several paragraphs|many paragraphs)\b",
    re.IGNORECASE,
)
_WORD_COUNT = re.compile(r"\b(\d{2,5})[\s-]+words?\b", re.IGNORECASE)
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeioAEIO])")
_SHORT_RANGE = (20, 60)
_LONG_RANGE = (400, 800)
_MAX_TARGET = 3000  # stays under the catalogue max_output_tokens (4096)


_CONTEXT_PART = "<system-reminder>"


def user_words(message: Message) -> str:
    """What the user wrote in `message`: its text without the context that coding agents add to a
    user turn as separate text parts (Claude Code puts `<system-reminder>` blocks before the prompt)."""
    if message.parts:
        return "".join(
            p.text for p in message.parts if p.type == "text" and not p.text.lstrip().startswith(_CONTEXT_PART)
        )
    return message.content or ""


def last_user_text(messages: Sequence[Message]) -> str:
    """What the user wrote in the last user message ("" if there is none)."""
    for message in reversed(messages):
        if message.role == "user":
            return user_words(message)
    return ""


def echo_text(messages: Sequence[Message]) -> str | None:
    """The text to echo when the last message is a user `echo:` directive, else None."""
    if not messages or messages[-1].role != "user":
        return None
    text = user_words(messages[-1])
    if not text.startswith(ECHO_PREFIX):
        return None
    rest = text[len(ECHO_PREFIX) :]
    return rest[1:] if rest.startswith(" ") else rest


def compose_reply(request: ChatRequest, rng: random.Random) -> str:
    """The full, uncut text reply to `request`."""
    echoed = echo_text(request.messages)
    if echoed is not None:
        return echoed
    hints = analyze(last_user_text(request.messages))
    if request.messages and request.messages[-1].role == "tool":
        return _tool_result_reply(request.messages, hints, rng)
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema":
        schema = fmt.schema if fmt.schema is not None else {"type": "object"}
        return json.dumps(generate_instance(schema, rng, hints), ensure_ascii=False)
    if fmt is not None and fmt.type == "json_object":
        return _json_object(hints, rng)
    return compose_prose(hints, rng)


def compose_prose(hints: Hints, rng: random.Random) -> str:
    """A story, an essay or a short answer, by what the prompt asks for."""
    target, is_long = _target_tokens(hints.text, rng)
    if _STORY.search(hints.text):
        return _Writer(hints, rng).story(target)
    if is_long:
        return _Writer(hints, rng).essay(target)
    return _Writer(hints, rng).short(target)


def _target_tokens(text: str, rng: random.Random) -> tuple[int, bool]:
    counted = _WORD_COUNT.search(text)
    if counted and re.search(r"\b(?:write|give|compose|in|about|around|least)\b", text, re.IGNORECASE):
        return min(_MAX_TARGET, max(_SHORT_RANGE[0], int(int(counted.group(1)) * 1.3))), True
    if _STORY.search(text) or _LONG.search(text):
        return rng.randint(*_LONG_RANGE), True
    return rng.randint(*_SHORT_RANGE), False


# ------------------------------------------------------------------------------------ templates
_OPENERS = (
    "Here is a short answer about {k0}.",
    "Good question about {k0}.",
    "Sure, let me say a few words about {k0}.",
    "When it comes to {k0}, a few points stand out.",
    "Happy to help with {k0}.",
)
_EXPLAIN = (
    "{K} usually depends on the {n} and the {n2} involved.",
    "In most cases, {k} {vs} the {n} in a {a} way.",
    "A {a} approach is to {v} the {n} first and then look at {k2}.",
    "Many people find that {k} becomes {a} once they {v} the {n}.",
    "It also helps to {v} a {a} {n} before you {v2} anything else.",
    "The key idea is that {k} and {k2} are closely related.",
    "You can think of {k} as a {a} {n} that {vs} over time.",
    "If you {v} the {n} {adv}, {k} tends to stay {a}.",
    "One {a} detail is how {k2} {vs} the {n}.",
    "For example, a {a} {n} can {v} {k} without much effort.",
)
_CLOSERS = (
    "Let me know if you would like more detail.",
    "I hope this helps.",
    "Feel free to ask a follow-up question.",
)
_ESSAY_LINKS = ("First,", "Moreover,", "In addition,", "However,", "For example,", "At the same time,",
                "Historically,", "In practice,", "Similarly,", "On the other hand,")
_STORY_OPEN = (
    "Once upon a time, in a {a} {place}, there lived a {a2} {c} named {p}, who dreamed of {k0}.",
    "Long ago, in a {a} {place}, a {a2} {c} called {p} spent every day thinking about {k0}.",
)
_STORY_BODY = (
    "Every morning, {p} would {v} the {n} near the {place}.",
    "One day, {p} discovered a {a} {n} that seemed to {v} on its own.",
    "{P} wondered whether {k} could change everything.",
    "The neighbors whispered about {k}, but nobody knew the whole truth.",
    "With a {a} heart, {p} set out to find the {n}.",
    "Along the way, {p} met {q}, a {a} {c2} who knew a great deal about {k2}.",
    "Together they {vd} across the {a} {place} until the sun went down.",
    "\"We have to {v} the {n} before nightfall,\" said {q}.",
    "The wind carried the scent of {ns} and {ns2}.",
    "Nobody in the {place} had ever seen anything so {a}.",
    "{P} {vd} the {n} {adv}, remembering what {q} had said about {k}.",
    "At dusk, a {a} light appeared above the {n}.",
    "{Q} laughed and {vd} a {a} {n} from the old {n2}.",
    "For a long moment, nobody said a word.",
    "It was the most {a} {n} {p} had ever {vd}.",
)
_STORY_END = (
    "In the end, {p} returned home, wiser than before, and the story of {k} was told for many "
    "years. The end.",
    "And so {p} and {q} lived happily, never forgetting the {a} {n} that had started it all. "
    "The end.",
)
_ESSAY_OPEN = (
    "{K0} is a {a} subject that deserves careful attention.",
    "Few topics are as {a} as {k0}, and it rewards a closer look.",
)
_ESSAY_END = (
    "In conclusion, {k} is {a} and {a2}, and understanding it helps us {v} the {n} with confidence.",
    "To sum up, {k} connects the {n} and the {n2} in a {a} way, and it will keep shaping how we "
    "{v} the world.",
)


class _Writer:
    """Fills templates with vocabulary and the prompt's keywords."""

    def __init__(self, hints: Hints, rng: random.Random) -> None:
        self.rng = rng
        keys = [k for k in hints.keywords if k.isascii()]
        if not keys:
            keys = [rng.choice(words.TOPICS)]
        # The most telling words first: proper nouns, then longer (more specific) words.
        self.keys = sorted(keys, key=lambda k: (not k[0].isupper(), -len(k)))
        self.hero = rng.choice(words.NAMES)
        self.friend = rng.choice([n for n in words.NAMES if n != self.hero])
        self.place = rng.choice(words.PLACES)

    def fill(self, template: str) -> str:
        rng = self.rng
        verb, verb2 = rng.choice(words.VERBS), rng.choice(words.VERBS)
        key = rng.choice(self.keys[:4])
        others = [k for k in self.keys if k != key] or [rng.choice(words.NOUNS)]
        slots = {
            "k0": self.keys[0],
            "k": key,
            "k2": rng.choice(others),
            "n": rng.choice(words.NOUNS),
            "n2": rng.choice(words.NOUNS),
            "ns": rng.choice(words.NOUNS) + "s",
            "ns2": rng.choice(words.NOUNS) + "s",
            "a": rng.choice(words.ADJECTIVES),
            "a2": rng.choice(words.ADJECTIVES),
            "adv": rng.choice(words.ADVERBS),
            "v": verb[0],
            "vs": verb[1],
            "vd": verb[2],
            "v2": verb2[0],
            "c": rng.choice(words.CHARACTERS),
            "c2": rng.choice(words.CHARACTERS),
            "p": self.hero,
            "q": self.friend,
            "place": self.place,
        }
        text = template.format(**slots, K=_cap(slots["k"]), K0=_cap(self.keys[0]), P=self.hero, Q=self.friend)
        return _ARTICLE.sub(r"\1n ", text)

    def sentences(self, templates: Sequence[str], count: int) -> list[str]:
        picked: list[str] = []
        pool = list(templates)
        for _ in range(count):
            if not pool:
                pool = list(templates)
            picked.append(self.fill(pool.pop(self.rng.randrange(len(pool)))))
        return picked

    def short(self, target: int) -> str:
        parts = [self.fill(self.rng.choice(_OPENERS))]
        used = count_tokens(parts[0])
        closer = self.fill(self.rng.choice(_CLOSERS))
        budget = target - count_tokens(closer)
        for sentence in self.sentences(_EXPLAIN, 8):
            if used + 1 + count_tokens(sentence) > budget and len(parts) > 1:
                break
            parts.append(sentence)
            used += 1 + count_tokens(sentence)
        parts.append(closer)
        return " ".join(parts)

    def _paragraphs(self, opening: str, body: Sequence[str], ending: str, target: int,
                    links: Sequence[str] = ()) -> str:
        paragraphs: list[str] = []
        current = [opening]
        used = count_tokens(opening)
        end_cost = count_tokens(ending) + 2
        while used + end_cost < target:
            sentence = self.sentences(body, 1)[0]
            if links and len(current) == 0:
                sentence = f"{self.rng.choice(links)} {sentence[0].lower()}{sentence[1:]}"
            current.append(sentence)
            used += count_tokens(sentence) + 1
            if len(current) >= self.rng.randint(4, 6):
                paragraphs.append(" ".join(current))
                current = []
                used += 1
        current.append(ending)
        paragraphs.append(" ".join(current))
        return "\n\n".join(paragraphs)

    def story(self, target: int) -> str:
        return self._paragraphs(
            self.fill(self.rng.choice(_STORY_OPEN)),
            _STORY_BODY,
            self.fill(self.rng.choice(_STORY_END)),
            target,
        )

    def essay(self, target: int) -> str:
        return self._paragraphs(
            self.fill(self.rng.choice(_ESSAY_OPEN)),
            _EXPLAIN,
            self.fill(self.rng.choice(_ESSAY_END)),
            target,
            links=_ESSAY_LINKS,
        )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------------------------ special replies
def _json_object(hints: Hints, rng: random.Random) -> str:
    writer = _Writer(hints, rng)
    document = {
        "answer": writer.fill(rng.choice(_EXPLAIN)),
        "topic": writer.keys[0],
        "keywords": writer.keys[:3],
        "confidence": round(rng.uniform(0.6, 0.99), 2),
    }
    return json.dumps(document, ensure_ascii=False)


def _tool_result_reply(messages: Sequence[Message], hints: Hints, rng: random.Random) -> str:
    """A reply that reports the trailing tool results (after parallel calls there are several)."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.tool_calls:
            names[call.id] = call.name
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    results.reverse()
    sentences = []
    for result in results:
        tool = names.get(result.tool_call_id or "", "") or result.name or "tool"
        sentences.append(f"The {tool} tool returned {_describe_result(result.text())}.")
    closing = rng.choice(("Based on that, {k} looks {a}.", "In short, that answers your question about {k}."))
    sentences.append(_Writer(hints, rng).fill(closing))
    return " ".join(sentences)


def _describe_result(text: str) -> str:
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and value:
        parts = [f"{key} {_scalar(val)}" for key, val in list(value.items())[:6]]
        return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    if not text:
        return "no content"
    snippet = text if len(text) <= 160 else text[:157].rstrip() + "..."
    return f'"{snippet}"'


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
