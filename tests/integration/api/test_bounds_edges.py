"""What a user hit (issue 8), API side: each input is refused with a 422 naming the field and
the rule, before anything is written or published, and the service keeps working after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.deps import Pool
from api.settings import ApiSettings
from processors.catalog import insert_price_version
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import MODEL, add_coupon, add_test_price, allocate
from tests.integration.worker import consume_to_end

EVENTS = "/api/v1/usage/events"


def _event(**over: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "source": "proxy",
        "account_id": "acme",
        "occurred_at": "2025-03-01T12:00:00Z",
        "model": "openai/gpt-4o-mini",
        "input_tokens": 10,
        **over,
    }


def _the_error(problem: dict[str, Any]) -> tuple[str, str]:
    assert len(problem["errors"]) == 1, problem
    return problem["errors"][0]["field"], problem["errors"][0]["rule"]


@pytest.mark.parametrize(
    ("over", "field", "rule"),
    [
        ({"metadata": {"request_id": "r\x00"}}, "body.metadata", "control_character"),
        ({"metadata": {"tags": [{"t\x00": 1}]}}, "body.metadata", "control_character"),
        ({"event_id": "e\x00"}, "body.event_id", "control_character"),
        ({"source": "s\x00"}, "body.source", "control_character"),
        ({"model": "openai/gpt\x00"}, "body.model", "control_character"),
        ({"input_tokens": 10**30}, "body.input_tokens", "less_than_equal"),
        ({"input_tokens": 10**18}, "body.input_tokens", "less_than_equal"),
        ({"units": {"images": 10**13}}, "body.units.images", "less_than_equal"),
        ({"occurred_at": "9999-12-31T23:59:59-05:00"}, "body.occurred_at", "time_out_of_range"),
        ({"occurred_at": "1999-06-01T00:00:00Z"}, "body.occurred_at", "time_too_early"),
        ({"reported_cost": "1e400"}, "body.reported_cost", "too_large"),
    ],
)
async def test_ingest_refuses_an_event_outside_the_bounds_and_publishes_nothing(
    client: httpx.AsyncClient,
    api_settings: ApiSettings,
    user_key_for: UserKeyFactory,
    over: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    key = await user_key_for("acme", tier="pro")  # an ordinary user key
    r = await client.post(EVENTS, json=_event(**over), headers=auth(key))
    problem = assert_problem(r, 422, "validation_error")
    assert _the_error(problem) == (field, rule)
    assert "none published" in problem["detail"]
    assert (
        await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 0) == []
    )


async def test_ingest_refuses_an_event_dated_in_the_future_but_allows_the_clock_skew(
    client: httpx.AsyncClient, api_settings: ApiSettings, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    next_year = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    r = await client.post(EVENTS, json=_event(occurred_at=next_year), headers=auth(key))
    problem = assert_problem(r, 422)
    assert _the_error(problem) == ("body.occurred_at", "time_in_future")
    assert "300 s ahead" in problem["errors"][0]["message"]
    in_two_minutes = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    r = await client.post(EVENTS, json=_event(occurred_at=in_two_minutes), headers=auth(key))
    assert r.status_code == 202, r.text
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 1)
    assert len(records) == 1


async def test_a_price_in_year_1_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    before = await db.fetchval("SELECT count(*) FROM price_versions")
    for when in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59Z"):
        r = await client.put(
            "/api/v1/admin/pricing/models/openai/gpt-x",
            json={"effective_from": when, "input_per_mtok": "1", "output_per_mtok": "2"},
            headers=auth(admin_key),
        )
        problem = assert_problem(r, 422, "validation_error")
        assert _the_error(problem) == ("body.effective_from", "time_out_of_range"), when
    assert await db.fetchval("SELECT count(*) FROM price_versions") == before
    assert (
        await db.fetchval(
            "SELECT count(*) FROM price_versions WHERE effective_from IN ('-infinity', 'infinity')"
        )
        == 0
    )
    # Price reads still work.
    key = await user_key_for("acme")
    r = await client.get("/api/v1/pricing/models", headers=auth(key))
    assert r.status_code == 200 and [m["model"] for m in r.json()["models"]] == [MODEL]


async def test_nul_in_each_string_the_user_reported_is_a_422_naming_it(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, user_key_for: UserKeyFactory
) -> None:
    await allocate(db, "acme", 10_000_000)
    await add_coupon(db, "FREE")
    user = auth(await user_key_for("acme"))
    admin = auth(admin_key)
    before = await db.fetchval("SELECT count(*) FROM credit_transactions")
    cases: list[tuple[str, str, dict[str, Any], Any, dict[str, str], str]] = [
        ("POST", "/api/v1/credits/deduct", {},
         {"amount": "1", "reason": "r\x00", "idempotency_key": "k"}, user, "body.reason"),
        ("POST", "/api/v1/credits/deduct", {},
         {"amount": "1", "reason": "r", "idempotency_key": "k\x00"}, user,
         "body.idempotency_key"),
        ("POST", "/api/v1/credits/coupons/redeem", {}, {"code": "FREE\x00"}, user, "body.code"),
        ("POST", "/api/v1/admin/credits/allocate", {},
         {"account_id": "a\x00", "amount": "1", "reason": "r", "idempotency_key": "k"}, admin,
         "body.account_id"),
        ("POST", "/api/v1/admin/credits/bulk-allocate", {},
         {"allocations": [{"account_id": "a\x00", "amount": "1", "reason": "r",
                           "idempotency_key": "k"}]}, admin,
         "body.allocations.0.account_id"),
        ("GET", "/api/v1/admin/accounts/a%00b", {}, None, admin, "path.account_id"),
        ("GET", "/api/v1/credits/balance", {"account_id": "a\x00"}, None, admin,
         "query.account_id"),
        ("GET", "/api/v1/credits/transactions", {"cursor": "MQ\x00"}, None, user,
         "query.cursor"),
        ("GET", "/api/v1/admin/coupons", {"cursor": "F\x00"}, None, admin, "query.cursor"),
        ("GET", "/api/v1/admin/api-keys", {"cursor": "k\x00"}, None, admin, "query.cursor"),
    ]  # fmt: skip
    for method, path, params, body, headers, field in cases:
        r = await client.request(method, path, params=params, json=body, headers=headers)
        problem = assert_problem(r, 422, "validation_error")
        assert (field, "control_character") in {
            (e["field"], e["rule"]) for e in problem["errors"]
        }, (path, problem)
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == before
    assert await db.fetchval("SELECT count(*) FROM coupon_redemptions") == 0


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "1900-01-01T00:00:00Z"]
)
async def test_extreme_dates_are_a_422_and_the_export_never_starts_a_200(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory, when: str
) -> None:
    await allocate(db, "acme", 10_000_000)
    h = auth(await user_key_for("acme"))
    for path in ("/api/v1/credits/transactions", "/api/v1/credits/transactions/export"):
        for name in ("from", "to"):
            r = await client.get(path, params={name: when}, headers=h)
            problem = assert_problem(r, 422, "validation_error")
            assert _the_error(problem) == (f"query.{name}", "time_out_of_range")
    for name, day in (("from", "0001-01-01"), ("to", "9999-12-31")):
        r = await client.get("/api/v1/credits/usage/stats", params={name: day}, headers=h)
        assert _the_error(assert_problem(r, 422)) == (f"query.{name}", "date_out_of_range")
    # The export within the bounds is the whole file.
    r = await client.get(
        "/api/v1/credits/transactions/export",
        params={"from": "1970-01-01T00:00:00Z", "to": "9998-12-31T00:00:00Z"},
        headers=h,
    )
    assert r.status_code == 200 and r.text.count("\r\n") == 2, r.text


async def test_calculate_cost_refuses_a_cost_beyond_the_bound(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await insert_price_version(
        db,
        model="test/very-dear",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("999999999999"),
        output_per_mtok=Decimal("0"),
    )
    h = auth(await user_key_for("acme"))
    body = {"model": "test/very-dear", "input_tokens": 10**12}
    r = await client.post("/api/v1/credits/calculate-cost", json=body, headers=h)
    problem = assert_problem(r, 422, "validation_error")
    assert _the_error(problem) == ("body", "cost_too_large")
    assert "1000000000000 credits" in problem["detail"]
    r = await client.post(
        "/api/v1/credits/calculate-and-deduct",
        json={**body, "idempotency_key": "k1"},
        headers=h,
    )
    assert _the_error(assert_problem(r, 422)) == ("body", "cost_too_large")
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 0
    # One token: 999999.999999 credits, within the bound.
    r = await client.post(
        "/api/v1/credits/calculate-cost",
        json={"model": "test/very-dear", "input_tokens": 1},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["cost"] == "999999.999999"


@pytest.mark.parametrize(
    "rate_limit", ["0/second", "0 per minute", "2000000/second", "1/100 year", "10/se\x00cond"]
)
async def test_an_absurd_tier_rate_limit_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, rate_limit: str
) -> None:
    before = await db.fetch("SELECT * FROM tiers ORDER BY name")
    for name in ("pro", "brand-new"):
        r = await client.put(
            f"/api/v1/admin/tiers/{name}", json={"rate_limit": rate_limit}, headers=auth(admin_key)
        )
        field, _ = _the_error(assert_problem(r, 422, "validation_error"))
        assert field == "body.rate_limit"
    assert await db.fetch("SELECT * FROM tiers ORDER BY name") == before


async def test_a_coupon_expiry_beyond_the_representable_range_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    for when in ("9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59.999999Z"):
        r = await client.post(
            "/api/v1/admin/coupons",
            json={"code": "X", "amount": "1", "max_redemptions": 1, "expires_at": when},
            headers=auth(admin_key),
        )
        assert _the_error(assert_problem(r, 422)) == ("body.expires_at", "time_out_of_range")
    assert await db.fetchval("SELECT count(*) FROM coupon_codes") == 0


async def test_a_value_the_database_refuses_is_a_422_not_a_dropped_connection(
    api_app: FastAPI, client: httpx.AsyncClient
) -> None:
    # The backstop behind the bounds: a route that lets a NUL reach Postgres.
    @api_app.get("/test/nul-to-postgres")
    async def nul(pool: Pool) -> dict[str, Any]:
        return {"v": await pool.fetchval("SELECT $1::text", "a\x00b")}

    @api_app.get("/test/bigint-overflow")
    async def overflow(pool: Pool) -> dict[str, Any]:
        return {"v": await pool.fetchval("SELECT $1::bigint * 10", 2**62)}

    for path in ("/test/nul-to-postgres", "/test/bigint-overflow"):
        problem = assert_problem(await client.get(path), 422, "validation_error")
        assert problem["errors"][0]["rule"] == "value_refused"
        assert "nothing was written" in problem["detail"]
