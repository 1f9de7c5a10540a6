"""Money: exact micro-credits inside, decimal strings on the wire, one half-even rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.money import (
    MICROS_PER_CREDIT,
    MoneyError,
    format_micros,
    from_micros,
    round_micros,
    to_micros,
)


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("12.5", 12_500_000),
        ("0.000001", 1),
        (" 3 ", 3_000_000),
        (Decimal("-1.25"), -1_250_000),
        (7, 7_000_000),
        ("0", 0),
        ("1e2", 100_000_000),
    ],
)
def test_to_micros_exact(value: Decimal | str | int, micros: int) -> None:
    assert to_micros(value) == micros


@pytest.mark.parametrize("value", ["0.0000001", "1.2345678", Decimal("0.0000005")])
def test_to_micros_refuses_more_than_six_places(value: Decimal | str) -> None:
    with pytest.raises(MoneyError, match="more than 6 decimal places"):
        to_micros(value)


@pytest.mark.parametrize("value", ["abc", "", "1,5", "NaN", "Infinity", "-inf"])
def test_to_micros_refuses_non_amounts(value: str) -> None:
    with pytest.raises(MoneyError):
        to_micros(value)


def test_to_micros_refuses_floats() -> None:
    with pytest.raises(MoneyError, match="never binary floats"):
        to_micros(0.1)  # type: ignore[arg-type]


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("exact", "micros"),
    [
        (Decimal("0.0000005"), 0),  # half to even: 0
        (Decimal("0.0000015"), 2),  # half to even: 2
        (Decimal("0.0000025"), 2),
        (Decimal("0.00000051"), 1),
        (Decimal("-0.0000015"), -2),
        (Decimal("1.2345674999"), 1_234_567),
    ],
)
def test_round_micros_half_even(exact: Decimal, micros: int) -> None:
    assert round_micros(exact) == micros


@pytest.mark.parametrize(
    ("micros", "wire"),
    [
        (12_500_000, "12.500000"),
        (0, "0.000000"),
        (1, "0.000001"),
        (-1, "-0.000001"),
        (-12_500_000, "-12.500000"),
        (999_999, "0.999999"),
    ],
)
def test_format_micros(micros: int, wire: str) -> None:
    assert format_micros(micros) == wire
    assert from_micros(micros) == Decimal(wire)
    assert str(from_micros(micros)) == wire


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_micros_round_trip_through_the_wire(micros: int) -> None:
    wire = format_micros(micros)
    assert to_micros(wire) == micros
    assert to_micros(from_micros(micros)) == micros
    assert round_micros(Decimal(wire)) == micros


@given(st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, places=12))
def test_round_micros_is_within_half_a_micro(exact: Decimal) -> None:
    micros = round_micros(exact)
    assert abs(Decimal(micros) - exact * MICROS_PER_CREDIT) <= Decimal("0.5")
