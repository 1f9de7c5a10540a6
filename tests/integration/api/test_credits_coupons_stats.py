"""Coupon redemption (distinct refusals, never past the maximum) and usage statistics."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx

from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import add_coupon, ledger_matches_balances

REDEEM = "/api/v1/credits/coupons/redeem"
STATS = "/api/v1/credits/usage/stats"


async def test_redeem_credits_the_account_once(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_coupon(db, "WELCOME25", micros=25_000_000)
    key = await user_key_for("acme", tier="pro")
    r = await client.post(REDEEM, json={"code": "WELCOME25"}, headers=auth(key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["code"], out["balance"], out["replayed"]) == ("WELCOME25", "25.000000", False)
    assert (out["transaction"]["type"], out["transaction"]["amount"]) == ("coupon", "25.000000")
    assert await db.fetchval("SELECT redemptions FROM coupon_codes WHERE code = 'WELCOME25'") == 1
    row = await db.fetchrow("SELECT account_id, transaction_id FROM coupon_redemptions")
    assert (row["account_id"], row["transaction_id"]) == ("acme", out["transaction"]["id"])
    again = await client.post(REDEEM, json={"code": "WELCOME25"}, headers=auth(key))
    body = assert_problem(again, 409, "coupon_already_redeemed")
    assert "already redeemed" in body["detail"]
    bal = (await client.get("/api/v1/credits/balance", headers=auth(key))).json()
    assert bal["balance"] == "25.000000"
    await ledger_matches_balances(db)


async def test_redeem_creates_an_unknown_account(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_coupon(db, "NEW")
    key = await user_key_for("newbie", create_account=False)
    r = await client.post(REDEEM, json={"code": "NEW"}, headers=auth(key))
    assert r.status_code == 200, r.text
    assert await db.fetchval("SELECT tier FROM user_credits WHERE account_id = 'newbie'") == "free"


async def test_unknown_expired_and_exhausted_codes_get_distinct_answers(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    now = datetime.now(UTC)
    await add_coupon(db, "OLD", expires_at=now - timedelta(seconds=1))
    await add_coupon(db, "ONE", max_redemptions=1)
    await add_coupon(db, "LATER", expires_at=now + timedelta(days=1))
    a = await user_key_for("a", tier="pro")
    b = await user_key_for("b", tier="pro")
    body = assert_problem(
        await client.post(REDEEM, json={"code": "NOPE"}, headers=auth(a)), 404, "coupon_not_found"
    )
    assert "NOPE" in body["detail"]
    assert_problem(
        await client.post(REDEEM, json={"code": "OLD"}, headers=auth(a)), 410, "coupon_expired"
    )
    assert (await client.post(REDEEM, json={"code": "ONE"}, headers=auth(a))).status_code == 200
    assert_problem(
        await client.post(REDEEM, json={"code": "ONE"}, headers=auth(b)), 409, "coupon_exhausted"
    )
    assert (await client.post(REDEEM, json={"code": "LATER"}, headers=auth(b))).status_code == 200
    # Case matters: codes are exact.
    assert_problem(await client.post(REDEEM, json={"code": "later"}, headers=auth(a)), 404)
    for bad in ({"code": ""}, {"code": "x" * 65}, {}, {"code": 5}):
        problem = assert_problem(await client.post(REDEEM, json=bad, headers=auth(a)), 422)
        assert problem["errors"][0]["field"] == "body.code"
    # Nothing was written for the refusals.
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 2


async def test_20_concurrent_redemptions_of_a_coupon_with_max_5(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_coupon(db, "RUSH", micros=1_000_000, max_redemptions=5)
    keys = [await user_key_for(f"u{i}", tier="pro") for i in range(20)]
    results = await asyncio.gather(
        *(client.post(REDEEM, json={"code": "RUSH"}, headers=auth(k)) for k in keys)
    )
    codes = [r.status_code for r in results]
    assert codes.count(200) == 5, codes
    assert all(r.json()["code"] == "coupon_exhausted" for r in results if r.status_code != 200)
    assert await db.fetchval("SELECT redemptions FROM coupon_codes WHERE code = 'RUSH'") == 5
    assert await db.fetchval("SELECT count(*) FROM coupon_redemptions") == 5
    assert await db.fetchval("SELECT sum(balance_micros) FROM user_credits") == 5_000_000
    await ledger_matches_balances(db)


async def test_same_account_racing_itself_redeems_once(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_coupon(db, "TWICE", micros=1_000_000, max_redemptions=100)
    key = await user_key_for("solo", tier="pro")
    results = await asyncio.gather(
        *(client.post(REDEEM, json={"code": "TWICE"}, headers=auth(key)) for _ in range(10))
    )
    assert sorted(r.status_code for r in results) == [200] + [409] * 9
    assert (
        await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id = 'solo'")
        == 1_000_000
    )


# ---- usage stats ----------------------------------------------------------------------------


async def _rollup(db: asyncpg.Pool) -> date:
    today = datetime.now(UTC).date()
    rows = [
        ("acme", today, "openai/gpt-4o", "openai", 3, 1000, 100, 0, 500, 50, 3, 2_500_000),
        ("acme", today, "claude-sonnet-4-5", "anthropic", 1, 10, 0, 20, 5, 0, 1, 1_000_000),
        (
            "acme",
            today - timedelta(days=1),
            "openai/gpt-4o",
            "openai",
            2,
            1,
            2,
            3,
            4,
            0,
            2,
            250_000,
        ),
        ("acme", today - timedelta(days=40), "openai/gpt-4o", "openai", 9, 9, 9, 9, 9, 9, 9, 9),
        ("other", today, "openai/gpt-4o", "openai", 100, 1, 1, 1, 1, 1, 1, 99_000_000),
    ]
    await db.executemany(
        "INSERT INTO usage_daily (account_id, day, model, provider, events, input_tokens,"
        " cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, requests,"
        " cost_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        rows,
    )
    return today


async def test_usage_stats_by_model_provider_and_day(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    today = await _rollup(db)
    key = await user_key_for("acme", tier="pro")
    window = {"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()}
    r = await client.get(STATS, params={**window, "group_by": "model"}, headers=auth(key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["account_id"], out["from"], out["to"], out["group_by"]) == (
        "acme",
        window["from"],
        window["to"],
        "model",
    )
    assert [(g["key"], g["events"], g["cost"]) for g in out["groups"]] == [
        ("openai/gpt-4o", 5, "2.750000"),
        ("claude-sonnet-4-5", 1, "1.000000"),
    ]
    assert out["totals"] == {
        "events": 6,
        "input_tokens": 1011,
        "cached_input_tokens": 102,
        "cache_write_tokens": 23,
        "output_tokens": 509,
        "reasoning_tokens": 50,
        "requests": 6,
        "cost": "3.750000",
    }
    out = (
        await client.get(STATS, params={**window, "group_by": "provider"}, headers=auth(key))
    ).json()
    assert [g["key"] for g in out["groups"]] == ["openai", "anthropic"]
    out = (await client.get(STATS, params={**window, "group_by": "day"}, headers=auth(key))).json()
    assert [(g["key"], g["cost"]) for g in out["groups"]] == [
        ((today - timedelta(days=1)).isoformat(), "0.250000"),
        (today.isoformat(), "3.500000"),
    ]
    # Default window: this month so far (model grouping).
    out = (await client.get(STATS, headers=auth(key))).json()
    assert out["from"] == today.replace(day=1).isoformat() and out["group_by"] == "model"


async def test_usage_stats_validation_and_empty(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    out = (
        await client.get(
            STATS, params={"from": "2020-01-01", "to": "2020-01-31"}, headers=auth(key)
        )
    ).json()
    assert out["groups"] == [] and out["totals"]["cost"] == "0.000000"
    cases = [
        ({"group_by": "team"}, "query.group_by"),
        ({"from": "2025-02-01", "to": "2025-01-01"}, "query.to"),
        ({"from": "yesterday"}, "query.from"),
        ({"from": "1990-01-01", "to": "2025-01-01"}, "query.to"),
        ({"from": "1900-01-01", "to": "2025-01-01"}, "query.from"),  # before 1970: the bound
    ]
    for params, field in cases:
        body = assert_problem(await client.get(STATS, params=params, headers=auth(key)), 422)
        assert body["errors"][0]["field"] == field, body
