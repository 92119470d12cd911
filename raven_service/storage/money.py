"""Exact money at the storage boundary: Decimal credits <-> integer pico-credits.

Credits and costs are stored as signed 64-bit integers counting 1e-12 credits, so sums and
comparisons in SQL are exact (never binary floats). Amounts are rounded to 12 decimal places
with ROUND_HALF_EVEN on the way in; the largest storable amount is about 9.2 million credits.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, Overflow

UNITS_PER_CREDIT = 10**12
MAX_UNITS = 2**63 - 1  # SQLite INTEGER / PostgreSQL BIGINT

_QUANTUM = Decimal(1).scaleb(-12)
_ONE = Decimal(1)
# Ample precision so quantize/scaleb never round beyond the 12th decimal place.
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, Overflow])


def to_units(amount: Decimal) -> int:
    """Credits -> pico-credits, rounded half-even to 1e-12. Raises ValueError if not storable."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"credit amount must be a finite Decimal, got {amount!r}")
    units = int(amount.quantize(_QUANTUM, context=_CTX).scaleb(12, context=_CTX))
    if abs(units) > MAX_UNITS:
        raise ValueError(f"credit amount {amount} is out of the storable range (|x| < 9.2e6)")
    return units


def from_units(units: int) -> Decimal:
    """Pico-credits -> credits, with trailing zeros stripped (integers keep exponent 0)."""
    amount = Decimal(units).scaleb(-12, context=_CTX)
    if amount == amount.to_integral_value():
        return amount.quantize(_ONE, context=_CTX)
    return amount.normalize(_CTX)
