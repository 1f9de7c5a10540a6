"""The worker's batch debit, the API's calculate-cost and reconcile's expectation agree on any
event, price version and account terms — also after the account's tier changed (hypothesis)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.catalog_cache import CatalogCache
from api.settings import ApiSettings
from processors.catalog import insert_price_version, load_catalog
from processors.ledger import RatedEvent, debit_batch, ensure_account, upsert_tier
from processors.reconcile import expected_micros
from processors.reconcile import queries as reconcile_queries
from schemas.event import UsageEvent
from schemas.money import to_micros
from schemas.settings import CommonSettings
from tests.integration.api.conftest import auth

# Prices with up to 6 decimals, as an admin may set them (credits per Mtok, request, unit).
price = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False, allow_infinity=False)
multiplier = st.decimals(
    min_value=Decimal("0.000001"), max_value=5, places=6, allow_nan=False, allow_infinity=False
)
count = st.integers(0, 5_000_000)
UNITS = ("images", "web_search")


@dataclass(frozen=True)
class Case:
    prices: dict[str, Any]
    unit_prices: dict[str, Decimal]
    multiplier: Decimal
    later_multiplier: Decimal
    tokens: dict[str, int]
    units: dict[str, Decimal]
    byok: bool


@st.composite
def cases(draw: st.DrawFn) -> Case:
    output = draw(count)
    return Case(
        prices={
            "input_per_mtok": draw(price),
            "output_per_mtok": draw(price),
            "cached_input_per_mtok": draw(st.none() | price),
            "cache_write_per_mtok": draw(st.none() | price),
            "per_request": draw(st.sampled_from([Decimal(0), Decimal("0.0001")]) | price),
        },
        # A unit the version does not price makes the event unpriced everywhere.
        unit_prices=draw(st.dictionaries(st.sampled_from(UNITS), price, max_size=2)),
        multiplier=draw(multiplier),
        later_multiplier=draw(multiplier),
        tokens={
            "input_tokens": draw(count),
            "cached_input_tokens": draw(count),
            "cache_write_tokens": draw(count),
            "output_tokens": output,
            "reasoning_tokens": draw(st.integers(0, output)),
            "requests": draw(st.integers(0, 3)),
        },
        units=draw(
            st.dictionaries(
                st.sampled_from(UNITS),
                st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False),
                max_size=2,
            )
        ),
        byok=draw(st.booleans()),
    )


async def set_tier_multiplier(conn: asyncpg.Connection, tier: str, multiplier: Decimal) -> None:
    """Create the tier, or change its multiplier (the account's terms from now on)."""
    await upsert_tier(
        conn,
        name=tier,
        monthly_allocation_micros=0,
        price_multiplier=multiplier,
        default_monthly_cap_micros=None,
        rate_limit="1000/second",
    )


@pytest.fixture
def api_settings(test_settings: CommonSettings, database_url: str) -> ApiSettings:
    """A platform fee other than the default, so the fee is taken from the same setting."""
    return ApiSettings(
        **test_settings.model_dump(exclude={"database_url"}),
        database_url=database_url,
        encryption_keys=Fernet.generate_key().decode(),
        byok_fee_pct=Decimal("7.5"),
        pg_pool_min=1,
        pg_pool_max=4,
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
async def test_worker_api_and_reconcile_agree_on_any_event(
    case: Case,
    client: httpx.AsyncClient,
    api_app: FastAPI,
    api_settings: ApiSettings,
    admin_key: str,
    db: asyncpg.Pool,
) -> None:
    api_app.state.catalog_cache = CatalogCache(ttl_s=0)  # each example adds its own model
    run = uuid.uuid4().hex[:10]
    model, tier, account = f"agree/{run}", f"t{run}", f"acc-{run}"
    occurred = datetime.now(UTC) - timedelta(minutes=1)
    policy = api_settings.ledger_policy()
    async with db.acquire() as conn:
        version = await insert_price_version(
            conn,
            model=model,
            provider="agree",
            effective_from=occurred - timedelta(days=1),
            units=case.unit_prices,
            **case.prices,
        )
        await set_tier_multiplier(conn, tier, case.multiplier)
        await ensure_account(conn, account_id=account, tier=tier)
    event = UsageEvent(
        event_id=run,
        account_id=account,
        occurred_at=occurred,
        model=model,
        units=case.units,
        byok=case.byok,
        **case.tokens,
    )

    # The API's calculate-cost.
    body = {
        "model": model,
        **case.tokens,
        "units": {k: str(v) for k, v in case.units.items()},
        "byok": case.byok,
        "occurred_at": occurred.isoformat(),
    }
    r = await client.post(
        f"/api/v1/credits/calculate-cost?account_id={account}", headers=auth(admin_key), json=body
    )

    # The worker's batch debit.
    async with db.acquire() as conn:
        result = await debit_batch(conn, [RatedEvent(event, version, "agree")], policy=policy)
        charged = await conn.fetchval(
            "SELECT -amount_micros FROM credit_transactions WHERE event_id = $1", run
        )
        stored_cost = await conn.fetchval(
            "SELECT cost_micros FROM usage_events WHERE event_id = $1", run
        )
        # The account changes tier after the debit: history keeps its terms.
        await set_tier_multiplier(conn, tier, case.later_multiplier)
        # Reconcile's expectation: the terms stored on the usage row, the catalog's version.
        stored_terms = await reconcile_queries.fetch_rating_terms(
            conn, sources=[event.source], event_ids=[run], occurred_ats=[event.occurred_at]
        )
        catalog = await load_catalog(conn)
    terms = stored_terms.get((event.source, run)) or policy.terms(case.later_multiplier)
    expected = expected_micros(event, catalog, terms)

    unpriced = sorted(u for u, n in case.units.items() if n and u not in case.unit_prices)
    if unpriced:
        # Every path says unpriced: the API names the unit, the batch writes nothing.
        assert r.status_code == 422, r.text
        field = r.json()["errors"][0]["field"]
        assert field in {f"body.units.{u}" for u in unpriced}, r.json()
        assert [i for i, _ in result.unpriced] == [0] and result.debited == 0
        assert charged is None and stored_cost is None and expected is None
        return
    assert r.status_code == 200, r.text
    api_micros = to_micros(Decimal(r.json()["cost"]))
    assert result.debited == 1 and not result.unpriced
    assert charged == stored_cost == api_micros == expected, (
        charged,
        stored_cost,
        api_micros,
        expected,
    )
    assert r.json()["multiplier"] == format(case.multiplier.normalize(), "f")
    assert r.json()["byok_fee_pct"] == "7.5"
