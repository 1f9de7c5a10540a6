"""SQL-injection strings in every string field of the admin routes: stored literally or refused."""

from __future__ import annotations

import asyncpg
import httpx

from tests.integration.api.conftest import auth

EVIL = [
    "'; DROP TABLE user_credits; --",
    "x' OR '1'='1",
    '"; DELETE FROM credit_transactions; --',
    "$1); TRUNCATE tiers; --",
    "robert'); SELECT pg_sleep(5); --",
]


async def _tables_intact(db: asyncpg.Pool) -> None:
    assert await db.fetchval("SELECT count(*) FROM tiers") >= 3
    assert await db.fetchval("SELECT to_regclass('user_credits')") is not None


async def test_injection_strings_are_stored_literally_or_refused(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    h = auth(admin_key)
    for evil in EVIL:
        body = {"account_id": evil, "amount": "1", "reason": evil, "idempotency_key": evil}
        r = await client.post("/api/v1/admin/credits/allocate", json=body, headers=h)
        assert r.status_code == 200, r.text
        row = await db.fetchrow(
            "SELECT account_id, reason, idempotency_key FROM credit_transactions WHERE id = $1",
            r.json()["transaction"]["id"],
        )
        assert tuple(row) == (evil, evil, evil)
        bulk = {"allocations": [{**body, "idempotency_key": evil + "-bulk"}]}
        assert (
            await client.post("/api/v1/admin/credits/bulk-allocate", json=bulk, headers=h)
        ).status_code == 200
        got = await client.get(f"/api/v1/admin/accounts/{evil}", headers=h)
        assert got.status_code == 200 and got.json()["balance"] == "2.000000", got.text
        # Tier names have a strict pattern: refused, never executed.
        assert (
            await client.put(f"/api/v1/admin/accounts/{evil}/tier", json={"tier": evil}, headers=h)
        ).status_code == 422
        coupon = {"code": evil[:64], "amount": "1", "max_redemptions": 1}
        r = await client.post("/api/v1/admin/coupons", json=coupon, headers=h)
        assert r.status_code == 201 and r.json()["code"] == evil[:64]
        price = {
            "effective_from": "2025-01-01T00:00:00Z",
            "provider": evil,
            "input_per_mtok": "1",
            "units": {evil: "0.5"},
        }
        r = await client.put(f"/api/v1/admin/pricing/models/{evil}", json=price, headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["model"] == evil and r.json()["provider"] == evil
        r = await client.post("/api/v1/admin/api-keys", json={"account_id": evil}, headers=h)
        assert r.status_code == 201 and r.json()["account_id"] == evil
        assert (await client.delete(f"/api/v1/admin/api-keys/{evil}", headers=h)).status_code in (
            404,
            422,
        )
        assert (await client.get(f"/api/v1/admin/tiers/{evil}", headers=h)).status_code == 422
        r = await client.get("/api/v1/admin/coupons", params={"cursor": evil[:64]}, headers=h)
        assert r.status_code == 200
        await _tables_intact(db)
    assert await db.fetchval("SELECT count(*) FROM user_credits") == len(EVIL)
    assert await db.fetchval("SELECT count(*) FROM coupon_codes") == len(EVIL)
