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
    await client.post(f"{A}/credits/allocate", json=body, headers=auth(admin_key))
    r = await client.post(
        "/api/v1/credits/monthly-cap",
        params={"account_id": "acct"},
        json={"monthly_cap": "42"},
        headers=auth(admin_key),
    )
    assert r.status_code == 200, r.text
    r = await client.put(f"{A}/accounts/acct/tier", json={"tier": "pro"}, headers=auth(admin_key))
    assert r.json()["monthly_cap"] == "42.000000"
