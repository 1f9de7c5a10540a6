"""price_event and Catalog against hand-computed costs (credits = USD; prices per Mtok)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from processors.pricing import Catalog, CostBreakdown, PriceVersion, Terms, Unpriced, price_event
from schemas.event import UsageEvent

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 6, 1, tzinfo=UTC)


def version(model: str = "openai/gpt-4o-mini", **kw: object) -> PriceVersion:
    base: dict[str, object] = dict(
        id=1,
        model=model,
        provider="openai",
        effective_from=T0,
        input_per_mtok=D("0.15"),
        cached_input_per_mtok=D("0.075"),
        cache_write_per_mtok=None,
        output_per_mtok=D("0.60"),
    )
    base.update(kw)
    return PriceVersion(**base)  # type: ignore[arg-type]


SONNET = version(
    "anthropic/claude-sonnet-4-5",
    id=7,
    provider="anthropic",
    input_per_mtok=D("3"),
    cached_input_per_mtok=D("0.30"),
    cache_write_per_mtok=D("3.75"),
    output_per_mtok=D("15"),
)


def event(model: str = "openai/gpt-4o-mini", **kw: object) -> UsageEvent:
    fields: dict[str, object] = {"occurred_at": datetime(2025, 3, 1, 12, tzinfo=UTC), **kw}
    return UsageEvent(event_id="e-1", account_id="acct", model=model, **fields)  # type: ignore[arg-type]


def test_gpt_4o_mini_with_cached_tokens_and_reasoning_priced_once() -> None:
    ev = event(input_tokens=1000, cached_input_tokens=2000, output_tokens=500, reasoning_tokens=200)
    cost = price_event(ev, version())
    # 1000×0.15 + 2000×0.075 + 500×0.60 = 150 + 150 + 300 credits per 10^6 tokens.
    assert cost.input == D("0.00015")
    assert cost.cached_input == D("0.00015")
    assert cost.output == D("0.0003")  # the 200 reasoning tokens are inside the 500, not extra
    assert cost.cache_write == 0 and cost.requests == 0 and cost.units == {}
    assert cost.subtotal == D("0.0006") == cost.total_exact
    assert cost.cost_micros == 600
    assert cost.cost == D("0.000600")
    assert cost.price_version_id == 1


def test_cached_and_cache_write_fall_back_to_the_input_price() -> None:
    v = version(cached_input_per_mtok=None, cache_write_per_mtok=None, input_per_mtok=D("2"))
    cost = price_event(event(cached_input_tokens=1000, cache_write_tokens=3000), v)
    assert cost.cached_input == D("0.002")
    assert cost.cache_write == D("0.006")
    assert cost.cost_micros == 8000


def test_anthropic_with_cache_read_and_cache_write() -> None:
    ev = event(
        "anthropic/claude-sonnet-4-5",
        input_tokens=100,
        cached_input_tokens=50_000,
        cache_write_tokens=10_000,
        output_tokens=800,
    )
    cost = price_event(ev, SONNET)
    # 100×3 + 50000×0.30 + 10000×3.75 + 800×15 = 300 + 15000 + 37500 + 12000 (per 10^6)
    assert (cost.input, cost.cached_input, cost.cache_write, cost.output) == (
        D("0.0003"),
        D("0.015"),
        D("0.0375"),
        D("0.012"),
    )
    assert cost.cost_micros == 64_800
    assert cost.price_version_id == 7


@pytest.mark.parametrize(("multiplier", "micros"), [(D("1.2"), 720), (D("0.9"), 540)])
def test_tier_multiplier_applies_to_the_exact_sum(multiplier: D, micros: int) -> None:
    ev = event(input_tokens=1000, cached_input_tokens=2000, output_tokens=500)
    cost = price_event(ev, version(), Terms(multiplier))
    assert cost.subtotal == D("0.0006")
    assert cost.total_exact == D("0.0006") * multiplier
    assert cost.multiplier == multiplier
    assert cost.cost_micros == micros


def test_multiplier_before_rounding_not_after() -> None:
    # 3 input tokens = 0.45 micro: alone it rounds to 0, but ×1.2 = 0.54 rounds to 1.
    # Rounding before the multiplier would charge 0×1.2 = 0.
    assert price_event(event(input_tokens=3), version(), Terms(D("1.2"))).cost_micros == 1
    assert price_event(event(input_tokens=3), version()).cost_micros == 0


def test_byok_pays_the_platform_fee_only() -> None:
    ev = event(
        "anthropic/claude-sonnet-4-5",
        input_tokens=100,
        cached_input_tokens=50_000,
        cache_write_tokens=10_000,
        output_tokens=800,
        byok=True,
    )
    cost = price_event(ev, SONNET)
    assert cost.byok is True
    assert cost.subtotal == D("0.0648")  # what it would have cost
    assert cost.total_exact == D("0.00324")  # 5 % of it
    assert cost.cost_micros == 3240
    with_tier = price_event(ev, SONNET, Terms(D("1.2"), D("2.5")))
    assert with_tier.total_exact == D("0.0648") * D("1.2") * D("0.025")
    assert with_tier.cost_micros == 1944


def test_units_and_per_request_prices() -> None:
    v = version(per_request=D("0.001"), units={"images": D("0.04"), "web_search": D("0.01")})
    ev = event(input_tokens=0, requests=2, units={"images": 3, "web_search": D("2")})
    cost = price_event(ev, v)
    assert cost.requests == D("0.002")
    assert cost.units == {"images": D("0.12"), "web_search": D("0.02")}
    assert cost.subtotal == D("0.142")
    assert cost.cost_micros == 142_000


def test_fractional_units_are_exact() -> None:
    v = version(units={"audio_seconds": D("0.0001")})
    cost = price_event(event(units={"audio_seconds": D("12.5")}), v)
    assert cost.units == {"audio_seconds": D("0.00125")}
    assert cost.cost_micros == 1250


@pytest.mark.parametrize(
    ("input_tokens", "micros"),
    # 0.15 micro-credits per token: 10 → 1.5, 30 → 4.5, 50 → 7.5, 70 → 10.5 micros exactly.
    [(10, 2), (30, 4), (50, 8), (70, 10), (11, 2), (29, 4)],
)
def test_half_even_at_exactly_half_a_micro(input_tokens: int, micros: int) -> None:
    cost = price_event(event(input_tokens=input_tokens), version())
    assert cost.cost_micros == micros


def test_unit_without_price_is_unpriced() -> None:
    v = version(units={"images": D("0.04")})
    with pytest.raises(Unpriced) as info:
        price_event(event(units={"web_search": 1}), v)
    assert info.value.code == "unpriced"
    assert info.value.unit == "web_search"
    assert info.value.model == "openai/gpt-4o-mini"
    assert "'web_search'" in str(info.value) and "openai/gpt-4o-mini" in str(info.value)
    assert "images" in str(info.value)  # says which units do have a price


def test_unused_unit_without_price_costs_nothing() -> None:
    assert price_event(event(units={"web_search": 0}), version()).cost_micros == 0


def test_as_wire_is_decimal_strings() -> None:
    ev = event(input_tokens=1000, cached_input_tokens=2000, output_tokens=500, byok=True)
    v = version(units={"images": D("0.04")})
    wire = price_event(ev, v, Terms(D("1.2"))).as_wire()
    assert wire == {
        "cost": "0.000036",
        "breakdown": {
            "input": "0.00015",
            "cached_input": "0.00015",
            "cache_write": "0",
            "output": "0.0003",
            "requests": "0",
            "units": {},
        },
        "subtotal": "0.0006",
        "multiplier": "1.2",
        "byok": True,
        "byok_fee_pct": "5",
        "total_exact": "0.000036",
        "price_version_id": 1,
    }
    big = price_event(event(output_tokens=10**9), version()).as_wire()
    assert big["cost"] == "600.000000" and big["breakdown"]["output"] == "600"


def test_cost_breakdown_is_a_frozen_value() -> None:
    a = price_event(event(input_tokens=5), version())
    b = price_event(event(input_tokens=5), version())
    assert isinstance(a, CostBreakdown) and a == b
    with pytest.raises(AttributeError):
        a.cost_micros = 1  # type: ignore[misc]


def test_price_version_refuses_floats_naive_times_and_negative_prices() -> None:
    with pytest.raises(TypeError, match="input_per_mtok"):
        version(input_per_mtok=0.15)
    with pytest.raises(ValueError, match="timezone-aware"):
        version(effective_from=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="output_per_mtok"):
        version(output_per_mtok=D("-1"))
    with pytest.raises(TypeError, match="images"):
        version(units={"images": 0.04})
    assert version(input_per_mtok="0.15").input_per_mtok == D("0.15")  # type: ignore[arg-type]


# --- Catalog -----------------------------------------------------------------------------------


def two_versions() -> Catalog:
    return Catalog(
        [
            version(id=2, effective_from=T1, input_per_mtok=D("0.30")),
            version(id=1, effective_from=T0),
        ]
    )


@pytest.mark.parametrize(
    ("at", "expected_id"),
    [
        (T0 - timedelta(microseconds=1), None),
        (T0, 1),
        (T1 - timedelta(microseconds=1), 1),
        (T1, 2),
        (datetime(2025, 6, 1, 2, tzinfo=timezone(timedelta(hours=2))), 2),  # = T1 in UTC
        (datetime(2025, 6, 1, 1, 59, 59, tzinfo=timezone(timedelta(hours=2))), 1),
        (datetime(2030, 1, 1, tzinfo=UTC), 2),
    ],
)
def test_version_in_force_at_boundaries(at: datetime, expected_id: int | None) -> None:
    found = two_versions().version_at("openai/gpt-4o-mini", at)
    assert (found.id if found else None) == expected_id


def test_version_at_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        two_versions().version_at("openai/gpt-4o-mini", datetime(2025, 1, 1))


def test_two_versions_at_the_same_instant_are_refused() -> None:
    with pytest.raises(ValueError, match="two price versions"):
        Catalog([version(id=1), version(id=2)])


@pytest.mark.parametrize(
    "name", ["openai/gpt-4o-mini", "gpt-4o-mini", "GPT-4o-Mini", "OpenAI/GPT-4o-mini"]
)
def test_alias_lookup(name: str) -> None:
    cat = two_versions()
    found = cat.version_at(name, T1)
    assert found is not None and found.model == "openai/gpt-4o-mini"
    assert cat.resolve(name) == "openai/gpt-4o-mini"
    assert name in cat


def test_alias_never_crosses_providers_and_never_guesses_between_two() -> None:
    cat = Catalog(
        [
            version("openai/gpt-4o-mini"),
            version("groq/llama-3.3-70b", provider="groq"),
            version("together/llama-3.3-70b", provider="together"),
        ]
    )
    assert cat.version_at("azure/gpt-4o-mini", T1) is None  # another provider's deployment
    assert cat.version_at("llama-3.3-70b", T1) is None  # ambiguous
    assert cat.version_at("groq/llama-3.3-70b", T1) is not None
    assert cat.version_at("gpt-4o", T1) is None


def test_prefixed_name_finds_a_bare_catalog_entry_and_exact_beats_alias() -> None:
    bare = version("gpt-4o", id=10, input_per_mtok=D("2.5"))
    cat = Catalog([bare])
    assert cat.require("openai/gpt-4o", T1).id == 10
    both = Catalog([version("gpt-4o-mini", id=20), version("openai/gpt-4o-mini", id=21)])
    assert both.require("gpt-4o-mini", T1).id == 20
    assert both.require("openai/gpt-4o-mini", T1).id == 21


def test_unknown_model_is_unpriced_naming_it() -> None:
    with pytest.raises(Unpriced) as info:
        two_versions().require("mistral/mistral-large", T1)
    assert info.value.code == "unpriced"
    assert info.value.model == "mistral/mistral-large"
    assert "mistral/mistral-large" in str(info.value)
    with pytest.raises(Unpriced, match="2024-12-31"):
        two_versions().require("openai/gpt-4o-mini", T0 - timedelta(days=1))


def test_models_provider_and_history() -> None:
    cat = Catalog([*two_versions().versions(), SONNET, version("gpt-x", provider=None)])
    assert cat.models() == ["anthropic/claude-sonnet-4-5", "gpt-x", "openai/gpt-4o-mini"]
    assert len(cat) == 3
    assert cat.provider_for("claude-sonnet-4-5") == "anthropic"
    assert cat.provider_for("gpt-x") is None
    assert cat.provider_for("mistral/mistral-large") == "mistral"
    assert cat.provider_for("unknown") is None
    assert [v.id for v in cat.history("gpt-4o-mini")] == [1, 2]
    assert cat.history("nothing") == []


def test_priced_through_the_catalog_by_occurred_at() -> None:
    cat = two_versions()
    before = event(input_tokens=1_000_000, occurred_at=T1 - timedelta(seconds=1))
    after = event(input_tokens=1_000_000, occurred_at=T1)
    assert price_event(before, cat.require(before.model, before.occurred_at)).cost_micros == 150_000
    assert price_event(after, cat.require(after.model, after.occurred_at)).cost_micros == 300_000
