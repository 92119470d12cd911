"""JSON Schema -> a valid instance, deterministically from a `random.Random`.

Used for tool-call arguments and `response_format` json_schema replies. Supports the keywords
that function and structured-output schemas use in practice: type (also lists), properties,
required, additionalProperties, patternProperties, propertyNames, min/maxProperties, items,
prefixItems (and draft-4 tuple items), min/maxItems, uniqueItems, contains, enum, const,
minimum/maximum and both forms of exclusiveMinimum/exclusiveMaximum, multipleOf,
min/maxLength, pattern (simple regular expressions are generated, others fall back), format
(date, date-time, time, email, uri, uuid, hostname, ipv4, ipv6 ...), anyOf/oneOf (first
usable branch), allOf (merged), and $ref to local JSON pointers (#/$defs, #/definitions).
Recursive schemas are cut short by dropping optional parts beyond a nesting depth. Optional boolean
properties take their default (false when none is given), and a command-like string property
(``command``, ``cmd`` ...) the prompt's first `code span`.

Hostile schemas (SPEC §10): every generation runs under a `Budget` (values produced, characters
produced, wall time); past it `BudgetExceeded` is raised instead of growing without bound (a
self-referencing schema with two required children doubles its work per level). Client regular
expressions are never executed: strings for ``pattern`` are built from our own parse of the
pattern (and skipped when their length could exceed the budget), and ``patternProperties`` are
only used for names generated from them, so no catastrophic backtracking (``(a+)+$``) can occur.
"""

from __future__ import annotations

import copy
import math
import random
import re
import string
import time
import uuid
from collections.abc import Callable
from typing import Any

from raven_service.providers.local import _words as words
from raven_service.providers.local._words import Hints

__all__ = ["Budget", "BudgetExceeded", "generate_instance"]

_MAX_DEPTH = 6  # beyond this, optional properties and array items are left out
_HARD_DEPTH = 32
_MAX_REF_HOPS = 64
_PATTERN_ATTEMPTS = 24
#: Patterns whose generated strings could be longer than this are not generated from.
_MAX_PATTERN_OUTPUT = 20_000

#: The default budget of one generated instance.
MAX_VALUES = 100_000
MAX_CHARS = 2_000_000
MAX_SECONDS = 2.0


class BudgetExceeded(Exception):
    """The schema needs more values, text or time than the generation budget allows."""


class Budget:
    """Values, characters and wall time one generation may use (checked as it goes)."""

    __slots__ = ("chars", "deadline", "values")

    def __init__(self, values: int = MAX_VALUES, chars: int = MAX_CHARS, seconds: float = MAX_SECONDS) -> None:
        self.values = values
        self.chars = chars
        self.deadline = time.monotonic() + seconds

    def tick(self) -> None:
        self.values -= 1
        if self.values < 0:
            raise BudgetExceeded("too many values")
        if not self.values & 0xFF and time.monotonic() > self.deadline:
            raise BudgetExceeded("out of time")

    def text(self, n: int) -> None:
        self.chars -= n
        if self.chars < 0:
            raise BudgetExceeded("too much text")


def generate_instance(schema: Any, rng: random.Random, hints: Hints | None = None,
                      budget: Budget | None = None) -> Any:
    """Returns a JSON-compatible value that validates against `schema` (best effort for
    unsatisfiable or exotic schemas). Raises BudgetExceeded when `budget` (default: `Budget()`)
    runs out."""
    return _Generator(schema, rng, hints or Hints(), budget or Budget()).value(schema, 0, "")


# --------------------------------------------------------------------------------- schema algebra
_LOWER_BOUNDS = ("minimum", "minLength", "minItems", "minProperties", "minContains")
_UPPER_BOUNDS = ("maximum", "maxLength", "maxItems", "maxProperties", "maxContains")


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The conjunction of two schemas as one schema (what allOf means), as far as generation
    needs it."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
            continue
        old = out[key]
        if key == "properties":
            merged = dict(old)
            for name, sub in value.items():
                merged[name] = {"allOf": [merged[name], sub]} if name in merged else sub
            out[key] = merged
        elif key == "required":
            out[key] = list(dict.fromkeys([*old, *value]))
        elif key == "type":
            olds = old if isinstance(old, list) else [old]
            news = value if isinstance(value, list) else [value]
            both = [t for t in olds if t in news or (t == "integer" and "number" in news)]
            both += [t for t in news if t == "integer" and "number" in olds and t not in both]
            out[key] = both or news
        elif key == "enum":
            both = [v for v in old if v in value]
            out[key] = both or value
        elif key in _LOWER_BOUNDS:
            out[key] = max(old, value)
        elif key in _UPPER_BOUNDS:
            out[key] = min(old, value)
        elif key == "additionalProperties":
            out[key] = False if (old is False or value is False) else {"allOf": [old, value]}
        elif key in ("items", "contains", "propertyNames", "not"):
            out[key] = {"allOf": [old, value]} if isinstance(old, dict | bool) else value
        elif key == "allOf":
            out[key] = [*old, *value]
        elif key in ("anyOf", "oneOf"):
            out["allOf"] = [*out.get("allOf", []), {key: value}]
        else:
            out[key] = value
    return out


def _matches_type(value: Any, types: Any) -> bool:
    if types is None:
        return True
    for t in types if isinstance(types, list) else [types]:
        if (
            (t == "null" and value is None)
            or (t == "boolean" and isinstance(value, bool))
            or (t == "string" and isinstance(value, str))
            or (t == "object" and isinstance(value, dict))
            or (t == "array" and isinstance(value, list))
            or (t == "integer" and isinstance(value, int) and not isinstance(value, bool))
            or (t == "integer" and isinstance(value, float) and value.is_integer())
            or (t == "number" and isinstance(value, int | float) and not isinstance(value, bool))
        ):
            return True
    return False


def _is_null_only(schema: Any) -> bool:
    return isinstance(schema, dict) and (
        schema.get("type") == "null" or schema.get("const", ...) is None or schema.get("enum") == [None]
    )


# --------------------------------------------------------------------------------- generator
class _Generator:
    def __init__(self, root: Any, rng: random.Random, hints: Hints, budget: Budget) -> None:
        self.root = root
        self.rng = rng
        self.hints = hints
        self.budget = budget

    # -- references and combinators
    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node = self.root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = raw.replace("%25", "%").replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def _flatten(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """Resolves $ref, merges allOf and picks an anyOf/oneOf branch until none is left."""
        for _ in range(_MAX_REF_HOPS):
            if "$ref" in schema:
                target = self._pointer(schema["$ref"])
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                if target is False:
                    return {"not": {}}
                schema = _merge(target if isinstance(target, dict) else {}, rest)
            elif "allOf" in schema:
                rest = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    if isinstance(part, dict):
                        rest = _merge(rest, part)
                schema = rest
            elif "anyOf" in schema or "oneOf" in schema:
                key = "anyOf" if "anyOf" in schema else "oneOf"
                branch = self._choose_branch(schema[key], depth)
                rest = {k: v for k, v in schema.items() if k != key}
                schema = _merge(rest, branch)
            else:
                return schema
        return schema

    def _choose_branch(self, branches: list[Any], depth: int) -> dict[str, Any]:
        usable = [b if isinstance(b, dict) else {} for b in branches if b is not False]
        if not usable:
            return {}
        if depth >= _MAX_DEPTH:  # deep: prefer a branch that does not recurse
            flat = [b for b in usable if "$ref" not in b and b.get("type") not in ("object", "array")]
            if flat:
                return flat[0]
        non_null = [b for b in usable if not _is_null_only(b)]
        return (non_null or usable)[0]

    # -- dispatch
    def value(self, schema: Any, depth: int, name: str) -> Any:
        self.budget.tick()
        if depth > _HARD_DEPTH:  # an unsatisfiable recursion (a required self-reference)
            return None
        if schema is True or schema is None:
            return self._text_for(name)
        if schema is False or not isinstance(schema, dict):
            return None
        schema = self._flatten(schema, depth)
        if "const" in schema:
            self.budget.text(len(repr(schema["const"])))
            return copy.deepcopy(schema["const"])
        if schema.get("enum"):
            options = [v for v in schema["enum"] if _matches_type(v, schema.get("type"))] or schema["enum"]
            return copy.deepcopy(self.rng.choice(options))
        handlers: dict[str, Callable[[dict[str, Any], int, str], Any]] = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": self._boolean,
            "null": self._null,
        }
        return handlers.get(self._kind(schema), self._string)(schema, depth, name)

    @staticmethod
    def _kind(schema: dict[str, Any]) -> str:
        t = schema.get("type")
        if isinstance(t, list):
            non_null = [x for x in t if x != "null"]
            t = non_null[0] if non_null else ("null" if t else None)
        if isinstance(t, str):
            return t
        keys = schema.keys()
        if keys & {"properties", "required", "additionalProperties", "patternProperties", "minProperties"}:
            return "object"
        if keys & {"items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems"}:
            return "array"
        if keys & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
            return "number"
        return "string"

    # -- objects
    def _object(self, schema: dict[str, Any], depth: int, name: str) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        additional = schema.get("additionalProperties", True)
        pattern_props: dict[str, Any] = schema.get("patternProperties") or {}
        max_props = schema.get("maxProperties")
        min_props = schema.get("minProperties", 0)

        chosen = list(dict.fromkeys(required))
        if depth < _MAX_DEPTH:
            for prop in props:
                if prop not in chosen and (max_props is None or len(chosen) < max_props):
                    chosen.append(prop)
        order = [p for p in props if p in chosen] + [p for p in chosen if p not in props]

        out: dict[str, Any] = {}
        for prop in order:
            sub = self._property_schema(schema, prop)
            flag = isinstance(sub, dict) and sub.get("type") == "boolean" and not sub.keys() & {"enum", "const"}
            if flag and prop not in required:
                # an optional flag stays at its default (false), as a model leaves flags it was not
                # asked for: an agent's `run_in_background` or `dangerouslyDisableSandbox`
                out[prop] = sub["default"] if isinstance(sub.get("default"), bool) else False
                continue
            out[prop] = self.value(sub, depth + 1, prop)

        wants_extra = not props and isinstance(additional, dict) and depth < _MAX_DEPTH
        target = max(min_props, len(out) + (self.rng.randint(1, 2) if wants_extra else 0))
        if max_props is not None:
            target = min(target, max_props)
        attempts = 0
        while len(out) < target and attempts < target * 4 + 4:
            attempts += 1
            key, sub = self._extra_property(schema, additional, pattern_props, len(out))
            if key is None:
                break
            if key not in out:
                out[key] = self.value(sub, depth + 1, key)
        return out

    def _property_schema(self, schema: dict[str, Any], prop: str) -> Any:
        props = schema.get("properties") or {}
        if prop in props:
            return props[prop]
        # patternProperties are not matched against names: that would run the client's regex
        # (catastrophic backtracking); names generated from a pattern get its schema directly.
        additional = schema.get("additionalProperties", True)
        return additional if isinstance(additional, dict) else {}

    def _extra_property(
        self, schema: dict[str, Any], additional: Any, pattern_props: dict[str, Any], index: int
    ) -> tuple[str | None, Any]:
        names = schema.get("propertyNames")
        if additional is not False:
            if isinstance(names, dict):
                key = self.value({**names, "type": "string"}, _MAX_DEPTH, "key")
            else:
                pool = [k.lower() for k in self.hints.keywords] + list(words.NOUNS)
                key = pool[(index + self.rng.randrange(len(pool))) % len(pool)]
            return str(key), additional if isinstance(additional, dict) else {}
        for pattern, sub in pattern_props.items():
            key = self._from_pattern(pattern, 1, 16) if isinstance(pattern, str) else None
            if key is not None:
                return key, sub
        return None, None

    # -- arrays
    def _array(self, schema: dict[str, Any], depth: int, name: str) -> list[Any]:
        items = schema.get("items", {})
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix or []
        min_items = schema.get("minItems", 0)
        max_items = schema.get("maxItems")
        count = min_items if depth >= _MAX_DEPTH else max(min_items, self.rng.randint(1, 3), len(prefix))
        if max_items is not None:
            count = min(count, max_items)
        if items is False:
            count = min(count, len(prefix))
        contains = schema.get("contains")
        if contains is not None and count == 0 and (max_items is None or max_items > 0):
            count = 1

        item_name = _singular(name)
        out: list[Any] = []
        unique = bool(schema.get("uniqueItems"))
        for i in range(count):
            self.budget.tick()
            sub = prefix[i] if i < len(prefix) else items
            if i == 0 and isinstance(contains, dict):
                sub = _merge(sub if isinstance(sub, dict) else {}, contains)
            value = self.value(sub, depth + 1, item_name)
            if unique and value in out:
                value = self._unique_value(sub, out, depth + 1, item_name)
                if value in out:
                    if len(out) >= min_items:
                        break
                    value = self._distinct(value, out)
            out.append(value)
        return out

    def _unique_value(self, sub: Any, taken: list[Any], depth: int, name: str) -> Any:
        """Another value for `sub` that is not in `taken`, if one can be found."""
        flat = self._flatten(sub, depth) if isinstance(sub, dict) else {}
        options: list[Any] | None = None
        if "const" in flat:
            options = [flat["const"]]
        elif flat.get("enum"):
            options = [v for v in flat["enum"] if _matches_type(v, flat.get("type"))] or flat["enum"]
        elif flat.get("type") == "boolean":
            options = [True, False]
        if options is not None:
            fresh = [v for v in options if v not in taken]
            return copy.deepcopy(self.rng.choice(fresh)) if fresh else options[0]
        value = self.value(sub, depth, name)
        for _ in range(12):
            if value not in taken:
                break
            value = self.value(sub, depth, name)
        return value

    def _distinct(self, value: Any, taken: list[Any]) -> Any:
        """A last resort for uniqueItems: vary a scalar until it is new."""
        for n in range(2, 1000):
            self.budget.tick()
            if isinstance(value, str):
                candidate: Any = f"{value}{n}"
            elif isinstance(value, bool) or value is None:
                return value
            elif isinstance(value, int | float):
                candidate = value + n
            else:
                return value
            if candidate not in taken:
                return candidate
        return value

    # -- scalars
    def _null(self, schema: dict[str, Any], depth: int, name: str) -> None:
        return None

    def _boolean(self, schema: dict[str, Any], depth: int, name: str) -> bool:
        return self.rng.random() < 0.5

    def _integer(self, schema: dict[str, Any], depth: int, name: str) -> int:
        lo, hi = _int_bounds(schema)
        preferred = _NAME_RANGES.get(name.lower())
        if lo is None and hi is None:
            lo, hi = preferred or (1, 100)
        elif lo is None:
            assert hi is not None
            lo = 1 if hi >= 1 else hi - 100
        elif hi is None:
            hi = lo + 100
        if preferred and max(lo, preferred[0]) <= min(hi, preferred[1]):
            lo, hi = max(lo, preferred[0]), min(hi, preferred[1])
        if lo > hi:
            return lo
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            return self._multiple_int(lo, hi, step)
        return self.rng.randint(lo, hi)

    def _multiple_int(self, lo: int, hi: int, step: float) -> int:
        first, last = math.ceil(lo / step), math.floor(hi / step)
        for k in self._candidates(first, last):
            value = k * step
            if float(value).is_integer() and lo <= value <= hi:
                return int(value)
        return lo

    def _candidates(self, first: int, last: int) -> list[int]:
        if first > last:
            return []
        pick = self.rng.randint(first, min(last, first + 20))
        rest = [k for k in range(first, min(last, first + 40) + 1) if k != pick]
        zero = [0] if first <= 0 <= last else []
        return [pick, *zero, *rest]

    def _number(self, schema: dict[str, Any], depth: int, name: str) -> float | int:
        lo, lo_excl, hi, hi_excl = _num_bounds(schema)
        preferred = _NAME_RANGES.get(name.lower())
        if lo is None and hi is None:
            lo, hi = preferred or (0, 100)
        elif lo is None:
            assert hi is not None
            lo = hi - 100
        elif hi is None:
            hi = lo + 100

        def ok(v: float) -> bool:
            assert lo is not None and hi is not None
            return (v > lo if lo_excl else v >= lo) and (v < hi if hi_excl else v <= hi)

        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            decimals = _decimals(step)
            for k in self._candidates(math.ceil(lo / step), math.floor(hi / step)):
                value = round(k * step, decimals)
                quotient = value / step
                if ok(value) and quotient == int(quotient):
                    return int(value) if float(value).is_integer() and isinstance(step, int) else value
            return lo
        if lo > hi or (lo == hi and (lo_excl or hi_excl)):
            return lo
        value = round(self.rng.uniform(lo, hi), 2)
        if ok(value):
            return value
        middle = (lo + hi) / 2
        return middle if ok(middle) else lo

    def _string(self, schema: dict[str, Any], depth: int, name: str) -> str:
        min_len = schema.get("minLength", 0)
        max_len = schema.get("maxLength")
        fmt = schema.get("format")
        if not isinstance(min_len, int) or isinstance(min_len, bool):
            min_len = 0
        if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool)):
            max_len = None
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt](self.rng, self.hints)
        self.budget.text(min_len)
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            made = self._from_pattern(pattern, min_len, max_len)
            if made is not None:
                return made
        return _fit(self._text_for(name), min_len, max_len, self.rng)

    def _from_pattern(self, pattern: str, min_len: int, max_len: int | None) -> str | None:
        """A string built from our parse of `pattern` (never running it: see the module docstring)."""
        try:
            node = _RegexParser(pattern).parse()
        except (_Unsupported, IndexError, ValueError, RecursionError):
            return None
        if node.longest() > _MAX_PATTERN_OUTPUT:
            return None
        fallback = None
        for _ in range(_PATTERN_ATTEMPTS):
            candidate = node.generate(self.rng)
            self.budget.text(len(candidate))
            if min_len <= len(candidate) and (max_len is None or len(candidate) <= max_len):
                return candidate
            fallback = fallback or candidate
        return fallback

    # -- plausible text for a property name
    def _text_for(self, name: str) -> str:
        key = name.lower().replace("-", "_")
        for names, make in _TEXT_BY_NAME:
            if key in names:
                return make(self.rng, self.hints)
        if key == "id" or key.endswith("_id"):
            return _identifier(self.rng, self.hints)
        pool = [k for k in self.hints.keywords if k.isascii()] or list(words.NOUNS)
        return self.rng.choice(pool)


# --------------------------------------------------------------------------------- helpers
_NAME_RANGES: dict[str, tuple[int, int]] = {
    "age": (18, 80), "year": (1990, 2025), "count": (1, 10), "limit": (1, 10), "page": (1, 5),
    "days": (1, 7), "num_days": (1, 7), "quantity": (1, 5), "n": (1, 5), "rating": (1, 5),
    "temperature": (-5, 35), "hour": (0, 23), "minute": (0, 59), "month": (1, 12), "day": (1, 28),
}


def _int_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    lo: int | None = None
    hi: int | None = None
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(minimum, int | float) and not isinstance(minimum, bool):
        lo = math.floor(minimum) + 1 if ex_min is True and float(minimum).is_integer() else math.ceil(minimum)
    if isinstance(ex_min, int | float) and not isinstance(ex_min, bool):
        candidate = math.floor(ex_min) + 1
        lo = candidate if lo is None else max(lo, candidate)
    if isinstance(maximum, int | float) and not isinstance(maximum, bool):
        hi = math.ceil(maximum) - 1 if ex_max is True and float(maximum).is_integer() else math.floor(maximum)
    if isinstance(ex_max, int | float) and not isinstance(ex_max, bool):
        candidate = math.ceil(ex_max) - 1
        hi = candidate if hi is None else min(hi, candidate)
    return lo, hi


def _num_bounds(schema: dict[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    lo: float | None = None
    hi: float | None = None
    lo_excl = hi_excl = False
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(minimum, int | float) and not isinstance(minimum, bool):
        lo, lo_excl = minimum, ex_min is True
    if isinstance(ex_min, int | float) and not isinstance(ex_min, bool) and (lo is None or ex_min >= lo):
        lo, lo_excl = ex_min, True
    if isinstance(maximum, int | float) and not isinstance(maximum, bool):
        hi, hi_excl = maximum, ex_max is True
    if isinstance(ex_max, int | float) and not isinstance(ex_max, bool) and (hi is None or ex_max <= hi):
        hi, hi_excl = ex_max, True
    return lo, lo_excl, hi, hi_excl


def _decimals(step: float) -> int:
    text = repr(float(step))
    if "e-" in text:
        return int(text.split("e-")[1]) + 2
    return len(text.split(".")[1]) if "." in text else 0


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


def _fit(text: str, min_len: int, max_len: int | None, rng: random.Random) -> str:
    """Pads with words or trims `text` so that min_len <= len <= max_len."""
    while len(text) < min_len:
        text = f"{text} {rng.choice(words.NOUNS)}" if text else rng.choice(words.NOUNS)
    if max_len is not None and len(text) > max_len:
        text = text[:max_len].rstrip() or text[:max_len]
    while len(text) < min_len:
        text += "x"
    return text


def _topic_words(rng: random.Random, hints: Hints, n: int) -> list[str]:
    pool = [k for k in hints.keywords if k.isascii()][:n]
    while len(pool) < n:
        pool.append(rng.choice(words.NOUNS))
    return pool


def _sentence(rng: random.Random, hints: Hints) -> str:
    topic = _topic_words(rng, hints, 1)[0]
    adjective, noun = rng.choice(words.ADJECTIVES), rng.choice(words.NOUNS)
    return f"A {adjective} note about {topic} and the {noun}."


def _full_name(rng: random.Random) -> str:
    return f"{rng.choice(words.NAMES)} {rng.choice(words.SURNAMES)}"


def _email(rng: random.Random, hints: Hints) -> str:
    return f"{rng.choice(words.NAMES).lower()}.{rng.choice(words.SURNAMES).lower()}@example.com"


def _uri(rng: random.Random, hints: Hints) -> str:
    slug = "-".join(w.lower() for w in _topic_words(rng, hints, 2))
    slug = re.sub(r"[^a-z0-9-]", "", slug) or "page"
    return f"https://example.com/{slug}"


def _date(rng: random.Random, hints: Hints) -> str:
    return f"{rng.randint(2020, 2026):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random, hints: Hints) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randrange(0, 60, 5):02d}:00Z"


def _uuid(rng: random.Random, hints: Hints) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_FORMATS: dict[str, Callable[[random.Random, Hints], str]] = {
    "date": _date,
    "date-time": lambda rng, hints: f"{_date(rng, hints)}T{_time(rng, hints)}",
    "time": _time,
    "duration": lambda rng, hints: f"P{rng.randint(1, 30)}D",
    "email": _email,
    "idn-email": _email,
    "uri": _uri,
    "url": _uri,
    "iri": _uri,
    "uri-reference": _uri,
    "iri-reference": _uri,
    "uuid": _uuid,
    "hostname": lambda rng, hints: f"{rng.choice(words.NOUNS)}.example.com",
    "idn-hostname": lambda rng, hints: f"{rng.choice(words.NOUNS)}.example.com",
    "ipv4": lambda rng, hints: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng, hints: f"2001:db8::{rng.randint(1, 0xFFFF):x}",
    "regex": lambda rng, hints: "^[a-z]+$",
    "json-pointer": lambda rng, hints: f"/{rng.choice(words.NOUNS)}",
}


def _place(rng: random.Random, hints: Hints) -> str:
    return rng.choice(hints.proper) if hints.proper else rng.choice(words.CITIES)


def _query(rng: random.Random, hints: Hints) -> str:
    return " ".join(hints.keywords[:6]) or rng.choice(words.TOPICS)


_CODE_SPAN = re.compile(r"`([^`\n]{1,200})`")


def _command(rng: random.Random, hints: Hints) -> str:
    """A command-like value: the prompt's first `code span` when it has one (a user asking an agent
    to "run `pwd`"), otherwise a word of the prompt."""
    if (span := _CODE_SPAN.search(hints.text[:4000])) is not None:
        return span.group(1)
    return rng.choice([k for k in hints.keywords if k.isascii()] or list(words.NOUNS))


def _title(rng: random.Random, hints: Hints) -> str:
    return " ".join(w.capitalize() for w in _topic_words(rng, hints, 3))


def _identifier(rng: random.Random, hints: Hints) -> str:
    return "id_" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(10))


_TEXT_BY_NAME: tuple[tuple[frozenset[str], Callable[[random.Random, Hints], str]], ...] = (
    (
        frozenset({"location", "city", "place", "destination", "origin", "town", "address", "region"}),
        _place,
    ),
    (frozenset({"country", "nation"}), lambda rng, hints: rng.choice(words.COUNTRIES)),
    (
        frozenset({"name", "author", "person", "user", "username", "first_name"}),
        lambda rng, hints: rng.choice(words.NAMES),
    ),
    (frozenset({"full_name"}), lambda rng, hints: _full_name(rng)),
    (frozenset({"last_name", "surname"}), lambda rng, hints: rng.choice(words.SURNAMES)),
    (frozenset({"query", "q", "search", "prompt", "question", "term", "keywords", "input"}), _query),
    (frozenset({"command", "cmd", "shell_command", "script"}), _command),
    (frozenset({"unit", "units"}), lambda rng, hints: rng.choice(("celsius", "fahrenheit"))),
    (frozenset({"color", "colour"}), lambda rng, hints: rng.choice(words.COLORS)),
    (frozenset({"language", "lang"}), lambda rng, hints: "en"),
    (frozenset({"currency"}), lambda rng, hints: "USD"),
    (frozenset({"email"}), _email),
    (frozenset({"url", "link", "website", "uri", "href"}), _uri),
    (frozenset({"title", "headline", "subject"}), _title),
    (
        frozenset(
            {
                "description", "summary", "text", "content", "body", "message", "comment", "reason",
                "notes", "note", "explanation", "answer", "details", "reasoning",
            }
        ),
        _sentence,
    ),
)


# --------------------------------------------------------------------------------- regex -> text
class _Unsupported(Exception):
    """The pattern uses a construct the generator does not handle (lookaround, backrefs ...)."""


_DIGITS = string.digits
_WORDCH = string.ascii_letters + string.digits + "_"
_SPACES = " "
_PRINTABLE = string.ascii_letters + string.digits + " -_.,"
_CLASS_ESCAPES = {"d": _DIGITS, "w": _WORDCH, "s": _SPACES}
_NEG_ESCAPES = {"D": string.ascii_letters, "W": " -.,", "S": string.ascii_letters + _DIGITS}
_LITERAL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}


class _Node:
    def generate(self, rng: random.Random) -> str:
        raise NotImplementedError

    def longest(self) -> int:
        """An upper bound of the length `generate` can return."""
        raise NotImplementedError


class _Chars(_Node):
    def __init__(self, chars: str) -> None:
        self.chars = chars

    def generate(self, rng: random.Random) -> str:
        return rng.choice(self.chars) if self.chars else ""

    def longest(self) -> int:
        return 1


class _Seq(_Node):
    def __init__(self, parts: list[_Node]) -> None:
        self.parts = parts

    def generate(self, rng: random.Random) -> str:
        return "".join(p.generate(rng) for p in self.parts)

    def longest(self) -> int:
        return sum(p.longest() for p in self.parts)


class _Alt(_Node):
    def __init__(self, options: list[_Node]) -> None:
        self.options = options

    def generate(self, rng: random.Random) -> str:
        return rng.choice(self.options).generate(rng)

    def longest(self) -> int:
        return max(o.longest() for o in self.options)


class _Repeat(_Node):
    def __init__(self, node: _Node, low: int, high: int | None) -> None:
        self.node, self.low, self.high = node, low, high

    def _most(self) -> int:
        high = self.high if self.high is not None else self.low + 3
        return max(self.low, min(high, self.low + 6))

    def generate(self, rng: random.Random) -> str:
        count = rng.randint(self.low, self._most())
        return "".join(self.node.generate(rng) for _ in range(count))

    def longest(self) -> int:
        return self._most() * self.node.longest()


class _RegexParser:
    """A recursive-descent parser for the common subset of regular expressions."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def parse(self) -> _Node:
        node = self._alternation()
        if self.i != len(self.p):
            raise _Unsupported(self.p)
        return node

    def _peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def _alternation(self) -> _Node:
        options = [self._sequence()]
        while self._peek() == "|":
            self.i += 1
            options.append(self._sequence())
        return options[0] if len(options) == 1 else _Alt(options)

    def _sequence(self) -> _Node:
        parts: list[_Node] = []
        while self.i < len(self.p) and self._peek() not in "|)":
            atom = self._atom()
            if atom is not None:
                parts.append(self._quantified(atom))
        return _Seq(parts)

    def _quantified(self, atom: _Node) -> _Node:
        ch = self._peek()
        if ch in ("*", "+", "?"):
            self.i += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        elif ch == "{" and re.match(r"\{\d*(,\d*)?\}", self.p[self.i :]):
            end = self.p.index("}", self.i)
            body = self.p[self.i + 1 : end]
            self.i = end + 1
            if "," in body:
                a, b = body.split(",", 1)
                low, high = int(a or 0), (int(b) if b else None)
            else:
                low = high = int(body)
        else:
            return atom
        if self._peek() in ("?", "+"):  # lazy / possessive: same language
            self.i += 1
        return _Repeat(atom, low, high)

    def _atom(self) -> _Node | None:
        ch = self.p[self.i]
        self.i += 1
        if ch in "^$":
            return None
        if ch == ".":
            return _Chars(string.ascii_letters + string.digits)
        if ch == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.p.startswith("?P<", self.i) or self.p.startswith("?<", self.i):
                if self.p.startswith("?<=", self.i) or self.p.startswith("?<!", self.i):
                    raise _Unsupported("lookbehind")
                self.i = self.p.index(">", self.i) + 1
            elif self._peek() == "?":
                raise _Unsupported("group extension")
            node = self._alternation()
            if self._peek() != ")":
                raise _Unsupported("unbalanced")
            self.i += 1
            return node
        if ch == "[":
            return _Chars(self._char_class())
        if ch == "\\":
            return self._escape(in_class=False)
        if ch in "*+?{":
            raise _Unsupported("dangling quantifier")
        return _Chars(ch)

    def _escape(self, *, in_class: bool) -> _Chars | None:
        ch = self.p[self.i]
        self.i += 1
        if ch in _CLASS_ESCAPES:
            return _Chars(_CLASS_ESCAPES[ch])
        if ch in _NEG_ESCAPES:
            return _Chars(_NEG_ESCAPES[ch])
        if ch in _LITERAL_ESCAPES:
            return _Chars(_LITERAL_ESCAPES[ch])
        if ch in "bBAZz" and not in_class:
            return None
        if ch.isdigit() or ch in "pPk":
            raise _Unsupported("backreference or property")
        if ch in "ux":
            width = 4 if ch == "u" else 2
            code = self.p[self.i : self.i + width]
            self.i += width
            return _Chars(chr(int(code, 16)))
        return _Chars(ch)

    def _char_class(self) -> str:
        negate = self._peek() == "^"
        if negate:
            self.i += 1
        chars: list[str] = []
        first = True
        while self.i < len(self.p) and (self._peek() != "]" or first):
            first = False
            ch = self.p[self.i]
            self.i += 1
            if ch == "\\":
                escaped = self._escape(in_class=True)
                piece = escaped.chars if escaped else ""
                chars.append(piece)
                continue
            if self._peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                end = self.p[self.i + 1]
                self.i += 2
                if end == "\\":
                    end = self.p[self.i]
                    self.i += 1
                chars.append("".join(chr(c) for c in range(ord(ch), ord(end) + 1)))
                continue
            chars.append(ch)
        if self._peek() != "]":
            raise _Unsupported("unterminated class")
        self.i += 1
        allowed = "".join(dict.fromkeys("".join(chars)))
        if negate:
            return "".join(c for c in _PRINTABLE if c not in allowed)
        return allowed
