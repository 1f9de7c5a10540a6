"""Money helpers: int micro-credits inside, Decimal at the edges, decimal strings on the wire."""

from __future__ import annotations

from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    InvalidOperation,
    Overflow,
)

from schemas.errors import DomainError

MICROS_PER_CREDIT = 1_000_000
_QUANTUM = Decimal("0.000001")
# Wide enough that scaling an exact amount to micro-credits never rounds it first.
_WIDE = Context(prec=200, Emin=MIN_EMIN, Emax=MAX_EMAX, traps=[InvalidOperation, Overflow])


class MoneyError(DomainError, ValueError):
    """A value that is not an amount of credits (a ValueError too: pydantic validators raise it)."""

    code = "invalid_amount"
    status = 422


def to_micros(value: Decimal | str | int) -> int:
    """Exact credits → micro-credits; refuses more than 6 decimal places instead of rounding."""
    if isinstance(value, float):  # pragma: no cover - guarded for callers that bypass typing
        raise MoneyError('amounts are never binary floats; send a decimal string such as "12.5"')
    try:
        dec = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise MoneyError(f"{value!r} is not a decimal number") from exc
    if not dec.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount")
    scaled = dec * MICROS_PER_CREDIT
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{value!r} has more than 6 decimal places")
    return int(scaled)


def round_micros(exact_credits: Decimal) -> int:
    """Round an exact amount of credits once, half-even, to the micro-credit (DESIGN: the one
    rounding of a charge; pricing calls it last)."""
    return int(exact_credits.scaleb(6, _WIDE).to_integral_value(ROUND_HALF_EVEN, _WIDE))


def from_micros(micros: int) -> Decimal:
    """Micro-credits → Decimal credits with exactly 6 places."""
    return (Decimal(micros) / MICROS_PER_CREDIT).quantize(_QUANTUM)


def format_micros(micros: int) -> str:
    """Micro-credits → the wire form, a decimal string with 6 places ("12.500000")."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_CREDIT)
    return f"{sign}{whole}.{frac:06d}"
