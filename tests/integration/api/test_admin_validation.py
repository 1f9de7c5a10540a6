"""Admin input that would be stored wrong is refused with the field and the rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from api.settings import ApiSettings
from tests.integration.api.conftest import assert_problem, auth
from tests.integration.api.test_admin_cli import _run

A = "/api/v1/admin"


async def test_coupon_that_has_already_expired_is_refused(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    r = await client.post(
        f"{A}/coupons",
        headers=auth(admin_key),
        json={"code": "LATE", "amount": "5", "max_redemptions": 3, "expires_at": past},
    )
    body = assert_problem(r, 422)
    assert "expires_at" in body["detail"] and "future" in body["detail"]
    assert await db.fetchval("SELECT count(*) FROM coupon_codes") == 0


async def test_tier_multiplier_that_would_not_fit_is_refused(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    for value, rule in (("1000000", "below 1000000"), ("0.1234567", "6 decimal places")):
        r = await client.put(
            f"{A}/tiers/gold", headers=auth(admin_key), json={"price_multiplier": value}
        )
        body = assert_problem(r, 422)
        assert "price_multiplier" in body["detail"] and rule in body["detail"], body
    assert await db.fetchval("SELECT count(*) FROM tiers WHERE name = 'gold'") == 0


async def test_grant_monthly_refuses_a_future_month(api_settings: ApiSettings) -> None:
    nxt = (datetime.now(UTC).replace(day=1) + timedelta(days=32)).strftime("%Y-%m")
    proc = _run(api_settings, "grant-monthly", "--month", nxt)
    assert proc.returncode != 0
    assert "in the future" in proc.stderr


async def test_codes_and_prefixes_with_surrounding_whitespace_are_refused(
    client: httpx.AsyncClient, admin_key: str, user_key_for: Any, db: asyncpg.Pool
) -> None:
    # " SP " was stored as it came, and then "SP" (what anyone reads off a voucher) was unknown;
    # an applies_to prefix " " made a grant that applies to no model, a credit nothing burns.
    h = auth(admin_key)
    r = await client.post(
        f"{A}/coupons", headers=h, json={"code": " SP ", "amount": "5", "max_redemptions": 3}
    )
    assert "surrounding_space" in str(assert_problem(r, 422)["errors"])
    r = await client.post(
        "/api/v1/credits/coupons/redeem",
        headers=auth(await user_key_for("acme")),
        json={"code": "SP "},
    )
    assert "body.code" in str(assert_problem(r, 422)["errors"])
    for prefixes in ([" "], ["openai/ "], ["\u00a0anthropic/"]):
        r = await client.post(
            f"{A}/credits/grants",
            headers=h,
            json={
                "account_id": "acme",
                "amount": "1",
                "applies_to": prefixes,
                "reason": "promo",
                "idempotency_key": f"g-{prefixes[0]!r}",
            },
        )
        problem = assert_problem(r, 422)
        assert "body.applies_to.0" in str(problem["errors"]) and "surrounding_space" in str(
            problem["errors"]
        ), problem
    assert await db.fetchval("SELECT count(*) FROM coupon_codes") == 0
    assert await db.fetchval("SELECT count(*) FROM credit_grants") == 0
