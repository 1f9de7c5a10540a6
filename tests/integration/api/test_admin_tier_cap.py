"""A tier change moves a default cap with it and keeps a cap the account chose."""

from __future__ import annotations

import asyncpg
import httpx

from processors.ledger import LedgerPolicy, debit_batch
from tests.integration.api.conftest import auth
from tests.integration.test_ledger import ev

A = "/api/v1/admin"


async def test_default_cap_follows_the_tier_and_unblocks(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    body = {"account_id": "acct", "amount": "100", "reason": "r", "idempotency_key": "k"}
    assert (
        await client.post(f"{A}/credits/allocate", json=body, headers=auth(admin_key))
    ).status_code == 200
    # 6 credits of usage pass the free tier's default cap of 5: blocked by the cap.
    async with db.acquire() as conn:
        await debit_batch(conn, [ev("e1", "acct", inp=3_000_000)], policy=LedgerPolicy())
    before = (await client.get(f"{A}/accounts/acct", headers=auth(admin_key))).json()
    assert (before["monthly_cap"], before["blocked"]) == ("5.000000", True)

    r = await client.put(f"{A}/accounts/acct/tier", json={"tier": "pro"}, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    after = r.json()
    assert (after["tier"], after["monthly_cap"], after["blocked"]) == ("pro", None, False)
    kinds = [k for (k,) in await db.fetch("SELECT kind FROM alert_outbox ORDER BY id")]
    assert kinds[-1] == "unblocked"


async def test_a_cap_the_account_chose_is_kept(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    body = {"account_id": "acct", "amount": "1", "reason": "r", "idempotency_key": "k"}
    granted = await client.post(f"{A}/credits/allocate", json=body, headers=auth(admin_key))
    assert granted.status_code == 200, granted.text
    r = await client.post(
        "/api/v1/credits/monthly-cap",
        params={"account_id": "acct"},
        json={"monthly_cap": "42"},
        headers=auth(admin_key),
    )
    assert r.status_code == 200, r.text
    r = await client.put(f"{A}/accounts/acct/tier", json={"tier": "pro"}, headers=auth(admin_key))
    assert r.json()["monthly_cap"] == "42.000000"


async def test_blocked_is_live_after_the_month_turns(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    # Blocked at last month's cap; no write since: the stored flag is stale, the answer is not.
    await db.execute(
        "INSERT INTO user_credits (account_id, balance_micros, monthly_cap_micros, blocked,"
        " blocked_reason) VALUES ('acct', 10000000, 5000000, true, 'monthly_cap_reached')"
    )
    await db.execute(
        "INSERT INTO monthly_spend (account_id, month, spend_micros) VALUES"
        " ('acct', date_trunc('month', now() AT TIME ZONE 'utc')::date - interval '1 month',"
        " 5000000)"
    )
    out = (await client.get(f"{A}/accounts/acct", headers=auth(admin_key))).json()
    assert (out["blocked"], out["blocked_reason"], out["monthly_spend"]) == (
        False,
        None,
        "0.000000",
    )
    system = (await client.get(f"{A}/credits/analytics/system", headers=auth(admin_key))).json()
    assert system["blocked_accounts"] == 0
