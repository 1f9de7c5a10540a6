"""calculate-cost and calculate-and-deduct against the real catalog and ledger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
from fastapi import FastAPI

from api.catalog_cache import CatalogCache
from processors.catalog import insert_price_version
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import MODEL, add_test_price, allocate

COST = "/api/v1/credits/calculate-cost"
CAD = "/api/v1/credits/calculate-and-deduct"
BAL = "/api/v1/credits/balance"


async def test_calculate_cost_prices_each_bucket_exactly_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    key = await user_key_for("acme", tier="free")
    body = {
        "model": MODEL,
        "input_tokens": 1000,
        "cached_input_tokens": 250_000,
        "output_tokens": 501,
        "reasoning_tokens": 100,
        "units": {"images": 2},
    }
    r = await client.post(COST, json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    out = r.json()
    # 1000×2/M = 0.002; 250000×1/M = 0.25; 501×8/M = 0.004008; 2 images × 0.04 = 0.08.
    assert out["breakdown"] == {
        "input": "0.002",
        "cached_input": "0.25",
        "cache_write": "0",
        "output": "0.004008",
        "requests": "0",
        "units": {"images": "0.08"},
    }
    assert out["cost"] == "0.336008"
    assert (out["model"], out["tier"], out["multiplier"], out["byok"]) == (
        MODEL,
        "free",
        "1",
        False,
    )
    assert isinstance(out["price_version_id"], int)
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 0


async def test_calculate_cost_applies_tier_multiplier_and_byok_fee_rounding_once(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    key = await user_key_for("big", tier="enterprise")  # multiplier 0.9
    body = {"model": MODEL, "input_tokens": 3, "output_tokens": 1}
    out = (await client.post(COST, json=body, headers=auth(key))).json()
    # exact 0.000014 × 0.9 = 0.0000126 → 0.000013 (half-even, once)
    assert (out["subtotal"], out["total_exact"], out["cost"]) == (
        "0.000014",
        "0.0000126",
        "0.000013",
    )
    out = (
        await client.post(
            COST, json={**body, "byok": True, "input_tokens": 1_000_000}, headers=auth(key)
        )
    ).json()
    # (2 + 0.000008) × 0.9 × 5 % = 0.09000036 → 0.090000
    assert (out["total_exact"], out["cost"], out["byok"]) == ("0.09000036", "0.090000", True)


async def test_calculate_cost_unknown_model_is_422_naming_model(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    key = await user_key_for("acme")
    body = assert_problem(
        await client.post(
            COST, json={"model": "nobody/knows", "input_tokens": 1}, headers=auth(key)
        ),
        422,
        "validation_error",
    )
    assert body["errors"][0]["field"] == "body.model"
    assert "nobody/knows" in body["detail"]
    # A time before the first price version is unpriced too.
    body = assert_problem(
        await client.post(
            COST, json={"model": MODEL, "occurred_at": "2019-06-01T00:00:00Z"}, headers=auth(key)
        ),
        422,
    )
    assert body["errors"][0]["field"] == "body.model"
    body = assert_problem(
        await client.post(COST, json={"model": MODEL, "units": {"videos": 1}}, headers=auth(key)),
        422,
    )
    assert body["errors"][0]["field"] == "body.units.videos"


async def test_calculate_cost_validation(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme")
    cases = [
        ({"model": MODEL, "input_tokens": -1}, "body.input_tokens"),
        ({"model": MODEL, "output_tokens": 1, "reasoning_tokens": 2}, "body"),
        ({"model": MODEL, "occurred_at": "2025-01-01T00:00:00"}, "body.occurred_at"),
        ({"input_tokens": 1}, "body.model"),
        ({"model": MODEL, "units": {"images": -1}}, "body.units.images"),
    ]
    for body, field in cases:
        problem = assert_problem(await client.post(COST, json=body, headers=auth(key)), 422)
        assert problem["errors"][0]["field"] == field, (body, problem)


async def test_calculate_and_deduct_debits_the_cost_idempotently(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 1_000_000)
    body = {"model": MODEL, "input_tokens": 1000, "output_tokens": 500, "idempotency_key": "c1"}
    r = await client.post(CAD, json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["cost"]["cost"] == "0.006000"
    assert out["balance"] == "0.994000" and out["replayed"] is False
    tx = out["transaction"]
    assert (tx["type"], tx["amount"], tx["model"], tx["reason"]) == (
        "deduction",
        "-0.006000",
        MODEL,
        f"usage of {MODEL}",
    )
    again = await client.post(CAD, json=body, headers=auth(key))
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == {**out, "replayed": True}
    assert (await client.get(BAL, headers=auth(key))).json()["balance"] == "0.994000"
    # Same key, another body (even one costing the same): 409.
    problem = assert_problem(
        await client.post(CAD, json={**body, "reason": "other"}, headers=auth(key)),
        409,
        "idempotency_conflict",
    )
    assert problem["idempotency_key"] == "c1"
    # A key already used by /deduct is a conflict too.
    deducted = await client.post(
        "/api/v1/credits/deduct",
        json={"amount": "0.1", "reason": "r", "idempotency_key": "d1"},
        headers=auth(key),
    )
    assert deducted.status_code == 200, deducted.text
    assert_problem(
        await client.post(CAD, json={**body, "idempotency_key": "d1"}, headers=auth(key)),
        409,
    )


async def test_calculate_and_deduct_refuses_overdraw_and_unknown_model(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 1_000)
    body = {"model": MODEL, "input_tokens": 1000, "idempotency_key": "c1"}
    assert_problem(await client.post(CAD, json=body, headers=auth(key)), 402, "insufficient_credit")
    # A refused request stored nothing: the same key works once credit is there.
    await allocate(db, "acme", 1_000)
    r = await client.post(CAD, json=body, headers=auth(key))
    assert r.status_code == 200 and r.json()["balance"] == "0.000000"
    problem = assert_problem(
        await client.post(
            CAD, json={**body, "model": "x/y", "idempotency_key": "c2"}, headers=auth(key)
        ),
        422,
    )
    assert problem["errors"][0]["field"] == "body.model"
    problem = assert_problem(await client.post(CAD, json={"model": MODEL}, headers=auth(key)), 422)
    assert problem["errors"][0]["field"] == "body.idempotency_key"


async def test_calculate_and_deduct_replays_as_priced_then_and_twins_deduct_once(
    client: httpx.AsyncClient, api_app: FastAPI, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    """The ledger row keeps the pricing it answered with: a price changed since does not
    change the replay; concurrent twins of one request make one deduction and one answer."""
    await add_test_price(db)
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 1_000_000)
    body = {"model": MODEL, "input_tokens": 1000, "idempotency_key": "p1"}  # 1000 × 2/M
    first = await client.post(CAD, json=body, headers=auth(key))
    assert first.status_code == 200, first.text
    assert first.json()["cost"]["cost"] == "0.002000"
    # A new version from now on doubles the input price; the replay is priced as it was then.
    await insert_price_version(
        db,
        model=MODEL,
        provider="testprov",
        effective_from=datetime.now(UTC) - timedelta(seconds=1),
        input_per_mtok=Decimal("4"),
        output_per_mtok=Decimal("8"),
    )
    api_app.state.catalog_cache = CatalogCache(ttl_s=0)
    fresh = await client.post(COST, json={"model": MODEL, "input_tokens": 1000}, headers=auth(key))
    assert fresh.json()["cost"] == "0.004000"
    again = await client.post(CAD, json=body, headers=auth(key))
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "replayed": True}

    twins = await asyncio.gather(
        *(
            client.post(CAD, json={**body, "idempotency_key": "p2"}, headers=auth(key))
            for _ in range(6)
        )
    )
    assert [r.status_code for r in twins] == [200] * 6, [r.text for r in twins]
    answers = [r.json() for r in twins]
    assert sorted(a["replayed"] for a in answers) == [False] + [True] * 5
    assert {a["transaction"]["id"] for a in answers} == {answers[0]["transaction"]["id"]}
    assert {a["cost"]["cost"] for a in answers} == {"0.004000"}
    rows = await db.fetch(
        "SELECT idempotency_key, amount_micros FROM credit_transactions"
        " WHERE type = 'deduction' ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [("p1", -2000), ("p2", -4000)]
    balance = (await client.get(BAL, headers=auth(key))).json()["balance"]
    assert balance == "0.994000"
