"""Key governance rules (SPEC §11), pure functions: model allow-lists, scopes, budget windows,
durations and times, alert thresholds.

Every rule a request meets on its way in is applied by `app.admission.Admitter` (the one scope
every entry point goes through); these functions only decide.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import lru_cache

from raven_service.core.errors import InvalidArgument, PermissionDenied
from raven_service.core.types import Principal

INSUFFICIENT_SCOPE = "insufficient_scope"
MODEL_NOT_ALLOWED = "model_not_allowed"
DEFAULT_THRESHOLDS = (80, 95, 100)
DEFAULT_GRACE = 24 * 3600.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: RFC 3339 date-time (the `T` may be a space or lower case; a zone is required).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$")


# ------------------------------------------------------------------------------------ models
@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.DOTALL)


def model_allowed(patterns: Sequence[str], slug: str) -> bool:
    """Whether `slug` matches the allow-list (`*` matches any run of characters, `/` included).
    An empty list allows every model."""
    return not patterns or any(_pattern(p).match(slug) for p in patterns)


def check_model(principal: Principal, slug: str, param: str = "model") -> None:
    """403 model_not_allowed unless the key may call `slug`."""
    if not model_allowed(principal.models, slug):
        raise PermissionDenied(f"This API key may not use the model '{slug}'.", code=MODEL_NOT_ALLOWED)


def check_inference(principal: Principal) -> None:
    """403 insufficient_scope for a key without the `inference` scope (an admin-only key)."""
    if not principal.inference:
        raise PermissionDenied("This API key has no 'inference' scope: it may not call models.",
                               code=INSUFFICIENT_SCOPE)


def check_admin(principal: Principal) -> None:
    """403 insufficient_scope for a key without the `admin` scope."""
    if not principal.admin:
        raise PermissionDenied("This operation needs a key with the 'admin' scope.", code=INSUFFICIENT_SCOPE)


def validate_patterns(patterns: Iterable[str], catalogue: Iterable[str], param: str = "models") -> tuple[str, ...]:
    """A clean allow-list: non-empty patterns, each matching at least one catalogue model."""
    out: list[str] = []
    slugs = list(catalogue)
    for i, raw in enumerate(patterns):
        pattern = raw.strip()
        if not pattern or len(pattern) > 200:
            raise InvalidArgument(f"'{param}[{i}]' must be a model slug pattern of 1 to 200 characters.",
                                  param=param, code="invalid_value")
        if not any(_pattern(pattern).match(slug) for slug in slugs):
            raise InvalidArgument(f"'{param}[{i}]' ('{pattern}') matches no model in the catalogue.",
                                  param=param, code="invalid_value")
        if pattern not in out:
            out.append(pattern)
    return tuple(out)


# ------------------------------------------------------------------------------------ budget
def budget_window(period: str, now: float) -> tuple[float, float]:
    """The calendar window (UTC) holding `now`: (start, end) in unix seconds. Weeks start on Monday."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    day = dt.datetime(t.year, t.month, t.day, tzinfo=dt.UTC)
    if period == "day":
        start, end = day, day + dt.timedelta(days=1)
    elif period == "week":
        start = day - dt.timedelta(days=t.weekday())
        end = start + dt.timedelta(days=7)
    elif period == "month":
        start = dt.datetime(t.year, t.month, 1, tzinfo=dt.UTC)
        end = dt.datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=dt.UTC)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return start.timestamp(), end.timestamp()


def parse_budget(text: str, param: str = "budget") -> tuple[Decimal, str]:
    """`X/day|week|month` (the CLI form) -> (amount, period)."""
    amount, sep, period = text.partition("/")
    if not sep or period.strip() not in ("day", "week", "month"):
        raise InvalidArgument(f"'{param}' must look like AMOUNT/day, AMOUNT/week or AMOUNT/month.", param=param,
                              code="invalid_value")
    return parse_amount(amount.strip(), param), period.strip()


def parse_amount(text: str, param: str) -> Decimal:
    """A non-negative, finite decimal amount (credits)."""
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise InvalidArgument(f"'{param}' must be a decimal number, got '{text[:40]}'.", param=param,
                              code="invalid_value") from None
    if not value.is_finite() or value < 0:
        raise InvalidArgument(f"'{param}' must be a non-negative number.", param=param, code="invalid_value")
    if value > Decimal("9000000"):
        raise InvalidArgument(f"'{param}' is above the largest storable amount (9000000).", param=param,
                              code="invalid_value")
    return value


# ------------------------------------------------------------------------------------ times
def parse_duration(text: str, param: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `24h`, `30d`."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidArgument(f"'{param}' must be a duration such as 30s, 15m, 24h or 30d, got '{text[:40]}'.",
                              param=param, code="invalid_value")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > 100 * 365 * 86400:
        raise InvalidArgument(f"'{param}' is too long (at most 100 years).", param=param, code="invalid_value")
    return seconds


def parse_time(text: str, param: str) -> float:
    """Unix seconds from an RFC 3339 date-time with a zone (`2027-01-01T00:00:00Z`)."""
    if not _RFC3339.match(text):
        raise InvalidArgument(f"'{param}' must be an RFC 3339 time such as 2027-01-01T00:00:00Z, got "
                              f"'{text[:40]}'.", param=param, code="invalid_value")
    try:
        value = dt.datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise InvalidArgument(f"'{param}' is not a valid date and time: '{text[:40]}'.", param=param,
                              code="invalid_value") from None
    return value.timestamp()


def format_time(ts: float) -> str:
    """RFC 3339 UTC with a `Z`, whole seconds unless there is a fraction."""
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    text = t.isoformat(timespec="microseconds" if t.microsecond else "seconds")
    return text.replace("+00:00", "Z")


# ------------------------------------------------------------------------------------ alerts
def validate_thresholds(values: Iterable[int], param: str = "alert_thresholds") -> tuple[int, ...]:
    out = sorted(set(values))
    if not out or any(not 1 <= v <= 100 for v in out) or len(out) > 10:
        raise InvalidArgument(f"'{param}' must list 1 to 10 percentages between 1 and 100.", param=param,
                              code="invalid_value")
    return tuple(out)


def crossed(thresholds: Iterable[int], used: Decimal, limit: Decimal) -> list[int]:
    """The thresholds (percent) that `used` has reached out of `limit` (none for a zero limit)."""
    if limit <= 0:
        return []
    return [t for t in thresholds if used * 100 >= limit * t]
