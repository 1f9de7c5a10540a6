"""Properties of price_event: never negative, additive buckets, one rounding, monotone in tokens."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D
from decimal import localcontext
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.pricing import CostBreakdown, PriceVersion, Terms, price_event
from schemas.bounds import MAX_MICROS, CostOutOfBounds
from schemas.money import round_micros

T0 = datetime(2025, 1, 1, tzinfo=UTC)

# Prices as real catalogs have them: up to 6 decimal places per million tokens (LiteLLM
# imports carry up to ~16 significant digits; those are covered by the wide strategy).
prices = st.decimals(min_value=0, max_value=200, places=6, allow_nan=False, allow_infinity=False)
wide_prices = st.builds(lambda n, e: D(n).scaleb(-e), st.integers(0, 10**16), st.integers(0, 18))
tokens = st.integers(0, 5_000_000_000)
factors = st.decimals(min_value=D("0.01"), max_value=10, places=6)
UNITS = ("images", "web_search")


@st.composite
def versions(draw: st.DrawFn, price: st.SearchStrategy[D] = prices) -> PriceVersion:
    return PriceVersion(
        id=draw(st.none() | st.integers(1, 10**9)),
        model="p/m",
        provider="p",
        effective_from=T0,
        input_per_mtok=draw(price),
        cached_input_per_mtok=draw(st.none() | price),
        cache_write_per_mtok=draw(st.none() | price),
        output_per_mtok=draw(price),
        per_request=draw(st.sampled_from([D(0), D("0.001"), D("0.0004")])),
        units={u: draw(price) for u in UNITS},
    )


@st.composite
def events(draw: st.DrawFn) -> SimpleNamespace:
    out = draw(tokens)
    return SimpleNamespace(
        input_tokens=draw(tokens),
        cached_input_tokens=draw(tokens),
        cache_write_tokens=draw(tokens),
        output_tokens=out,
        reasoning_tokens=draw(st.integers(0, out)),
        requests=draw(st.integers(0, 5)),
        units=draw(
            st.dictionaries(
                st.sampled_from(UNITS),
                st.decimals(min_value=0, max_value=10_000, places=3),
                max_size=2,
            )
        ),
        byok=draw(st.booleans()),
    )


def oracle_micros(ev: Any, v: PriceVersion, multiplier: D, fee_pct: D) -> int:
    """An independent exact computation in Fractions; Python's round() is half-even."""
    f = Fraction
    cached = v.cached_input_per_mtok if v.cached_input_per_mtok is not None else v.input_per_mtok
    write = v.cache_write_per_mtok if v.cache_write_per_mtok is not None else v.input_per_mtok
    total = (
        ev.input_tokens * f(v.input_per_mtok)
        + ev.cached_input_tokens * f(cached)
        + ev.cache_write_tokens * f(write)
        + ev.output_tokens * f(v.output_per_mtok)
    ) / 10**6
    total += ev.requests * f(v.per_request)
    total += sum((f(n) * f(v.units[u]) for u, n in ev.units.items()), f(0))
    total *= f(multiplier)
    if ev.byok:
        total *= f(fee_pct) / 100
    return round(total * 10**6)


def priced_as_oracle(ev: Any, v: PriceVersion, multiplier: D, fee: D) -> CostBreakdown | None:
    """price_event's cost equals the oracle's; beyond DESIGN's bound on a priced cost (10^12
    credits) it refuses the event instead (None)."""
    expected = oracle_micros(ev, v, multiplier, fee)
    if expected > MAX_MICROS:
        with pytest.raises(CostOutOfBounds):
            price_event(ev, v, Terms(multiplier, fee))
        return None
    cost = price_event(ev, v, Terms(multiplier, fee))
    assert cost.cost_micros == expected
    return cost


@given(events(), versions(), factors, st.decimals(min_value=0, max_value=100, places=2))
def test_cost_never_negative_and_matches_the_exact_oracle(
    ev: Any, v: PriceVersion, multiplier: D, fee: D
) -> None:
    cost = priced_as_oracle(ev, v, multiplier, fee)
    if cost is not None:
        assert cost.cost_micros >= 0
        assert cost.total_exact >= 0


@given(events(), versions(wide_prices), factors)
def test_exact_even_with_many_significant_digits(ev: Any, v: PriceVersion, m: D) -> None:
    priced_as_oracle(ev, v, m, D(5))


@given(events(), versions())
def test_subtotal_is_the_exact_sum_of_the_buckets(ev: Any, v: PriceVersion) -> None:
    cost = price_event(ev, v)
    buckets = [cost.input, cost.cached_input, cost.cache_write, cost.output, cost.requests]
    assert cost.subtotal == sum(buckets, D(0)) + sum(cost.units.values(), D(0))
    # reasoning is inside output: output is output_tokens × rate, whatever reasoning_tokens is
    assert cost.output * 10**6 == ev.output_tokens * v.output_per_mtok


@given(events(), versions(), factors)
def test_rounding_happens_once_on_the_exact_total(ev: Any, v: PriceVersion, m: D) -> None:
    cost = price_event(ev, v, Terms(m))
    fee = D("0.05") if ev.byok else D(1)
    with localcontext(prec=120):  # the test's own products must not round either
        assert cost.total_exact == cost.subtotal * m * fee
        assert cost.cost_micros == round_micros(cost.subtotal * m * fee)


def test_rounding_once_differs_from_summing_rounded_buckets() -> None:
    v = PriceVersion(
        id=1,
        model="openai/gpt-4o-mini",
        provider="openai",
        effective_from=T0,
        input_per_mtok=D("0.15"),
        cached_input_per_mtok=D("0.075"),
        cache_write_per_mtok=None,
        output_per_mtok=D("0.60"),
    )
    # 10 input = 1.5 micro, 20 cached = 1.5 micro: rounded per bucket 2 + 2 = 4, exact 3.
    ev = SimpleNamespace(
        input_tokens=10,
        cached_input_tokens=20,
        cache_write_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
        requests=1,
        units={},
        byok=False,
    )
    cost = price_event(ev, v)
    per_bucket = sum(round_micros(b) for b in (cost.input, cost.cached_input))
    assert (cost.cost_micros, per_bucket) == (3, 4)
    # and the multiplier: 3 tokens = 0.45 micro ×1.2 = 0.54 → 1, not round(0.45)×1.2 → 0
    ev3 = SimpleNamespace(**{**vars(ev), "input_tokens": 3, "cached_input_tokens": 0})
    cost3 = price_event(ev3, v, Terms(D("1.2")))
    assert cost3.cost_micros == 1
    assert round_micros(D(round_micros(cost3.subtotal)) / 10**6 * D("1.2")) == 0


BUCKETS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


@given(events(), versions(), factors, st.sampled_from(BUCKETS), st.integers(1, 10**7))
def test_more_tokens_never_cost_less(
    ev: Any, v: PriceVersion, m: D, bucket: str, extra: int
) -> None:
    more = SimpleNamespace(**{**vars(ev), bucket: getattr(ev, bucket) + extra})
    assert price_event(more, v, Terms(m)).cost_micros >= price_event(ev, v, Terms(m)).cost_micros


@given(events(), versions())
def test_a_version_with_higher_prices_never_costs_less(ev: Any, v: PriceVersion) -> None:
    dearer = replace(v, output_per_mtok=v.output_per_mtok + 1, input_per_mtok=v.input_per_mtok * 2)
    assert price_event(ev, dearer).cost_micros >= price_event(ev, v).cost_micros
