"""Admin routes against the real database: accounts, tiers, coupons, price versions, API keys."""

from __future__ import annotations

import asyncpg
import httpx

from tests.integration.api.conftest import assert_problem, auth

A = "/api/v1/admin"


async def _allocate(client: httpx.AsyncClient, key: str, account: str, amount: str) -> None:
    body = {"account_id": account, "amount": amount, "reason": "r", "idempotency_key": amount}
    r = await client.post(f"{A}/credits/allocate", json=body, headers=auth(key))
    assert r.status_code == 200, r.text


async def test_get_account_and_set_tier(
    client: httpx.AsyncClient, admin_key: str, user_key_for: object, db: asyncpg.Pool
) -> None:
    await _allocate(client, admin_key, "acme", "3")
    r = await client.get(f"{A}/accounts/acme", headers=auth(admin_key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["balance"] == "3.000000" and out["tier"] == "free"
    assert out["monthly_cap"] == "5.000000" and out["cap_remaining"] == "5.000000"
    assert out["blocked"] is False and out["api_keys"] == 0 and out["byok_configured"] is False

    r = await client.put(f"{A}/accounts/acme/tier", json={"tier": "pro"}, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    assert r.json()["tier"] == "pro"
    assert await db.fetchval("SELECT tier FROM user_credits WHERE account_id='acme'") == "pro"

    unknown_tier = await client.put(
        f"{A}/accounts/acme/tier", json={"tier": "gold"}, headers=auth(admin_key)
    )
    assert assert_problem(unknown_tier, 422, "unknown_tier")["errors"][0]["field"] == "body.tier"
    bad_tier = await client.put(
        f"{A}/accounts/acme/tier", json={"tier": "Pro!"}, headers=auth(admin_key)
    )
    assert assert_problem(bad_tier, 422)["errors"][0]["field"] == "body.tier"
    missing = await client.get(f"{A}/accounts/nobody", headers=auth(admin_key))
    assert assert_problem(missing, 404, "unknown_account")["account_id"] == "nobody"
    missing_put = await client.put(
        f"{A}/accounts/nobody/tier", json={"tier": "pro"}, headers=auth(admin_key)
    )
    assert_problem(missing_put, 404, "unknown_account")


async def test_tiers_read_and_edit(client: httpx.AsyncClient, admin_key: str) -> None:
    r = await client.get(f"{A}/tiers", headers=auth(admin_key))
    assert [t["name"] for t in r.json()["items"]] == ["enterprise", "free", "pro"]
    free = (await client.get(f"{A}/tiers/free", headers=auth(admin_key))).json()
    assert free["monthly_allocation"] == "1.000000" and free["rate_limit"] == "20/second"
    assert free["default_monthly_cap"] == "5.000000" and free["price_multiplier"] == "1"

    body = {
        "monthly_allocation": "2.5",
        "price_multiplier": "0.95",
        "default_monthly_cap": None,
        "rate_limit": "100/minute",
    }
    r = await client.put(f"{A}/tiers/free", json=body, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    assert r.json()["monthly_allocation"] == "2.500000"
    assert r.json()["price_multiplier"] == "0.95" and r.json()["default_monthly_cap"] is None
    created = await client.put(f"{A}/tiers/startup", json=body, headers=auth(admin_key))
    assert created.status_code == 201 and created.json()["name"] == "startup"

    for field, value in (
        ("rate_limit", "lots"),
        ("price_multiplier", "0"),
        ("price_multiplier", 0.9),
        ("monthly_allocation", "-1"),
    ):
        bad = await client.put(
            f"{A}/tiers/free", json={**body, field: value}, headers=auth(admin_key)
        )
        assert assert_problem(bad, 422)["errors"][0]["field"] == f"body.{field}", (field, value)
    assert_problem(await client.get(f"{A}/tiers/gold", headers=auth(admin_key)), 404)
    assert_problem(await client.put(f"{A}/tiers/Bad Name", json=body, headers=auth(admin_key)), 422)


async def test_coupons_create_and_list(client: httpx.AsyncClient, admin_key: str) -> None:
    body = {
        "code": "WELCOME",
        "amount": "25",
        "max_redemptions": 5,
        "expires_at": "2099-01-01T00:00:00Z",
    }
    r = await client.post(f"{A}/coupons", json=body, headers=auth(admin_key))
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == "25.000000" and r.json()["redemptions"] == 0
    dup = await client.post(f"{A}/coupons", json=body, headers=auth(admin_key))
    assert_problem(dup, 409, "coupon_exists")
    for i in range(3):
        r = await client.post(
            f"{A}/coupons", json={**body, "code": f"C{i}"}, headers=auth(admin_key)
        )
        assert r.status_code == 201
    page = (await client.get(f"{A}/coupons", params={"limit": 3}, headers=auth(admin_key))).json()
    assert [c["code"] for c in page["items"]] == ["C0", "C1", "C2"]
    assert page["next_cursor"] == "C2"
    rest = (
        await client.get(f"{A}/coupons", params={"cursor": "C2"}, headers=auth(admin_key))
    ).json()
    assert [c["code"] for c in rest["items"]] == ["WELCOME"] and rest["next_cursor"] is None
    for field, value in (
        ("amount", "0"),
        ("max_redemptions", 0),
        ("expires_at", "2099-01-01"),
        ("code", ""),
    ):
        bad = await client.post(
            f"{A}/coupons", json={**body, "code": "X", field: value}, headers=auth(admin_key)
        )
        assert assert_problem(bad, 422)["errors"][0]["field"] == f"body.{field}", field


async def test_price_versions(client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool) -> None:
    body = {
        "effective_from": "2025-04-01T00:00:00Z",
        "provider": "openai",
        "input_per_mtok": "0.15",
        "cached_input_per_mtok": "0.075",
        "output_per_mtok": "0.6",
        "units": {"web_search": "0.01"},
    }
    url = f"{A}/pricing/models/openai/gpt-test"
    r = await client.put(url, json=body, headers=auth(admin_key))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["model"] == "openai/gpt-test" and out["input_per_mtok"] == "0.15"
    assert out["units"] == {"web_search": "0.01"} and out["cache_write_per_mtok"] is None
    stored = await db.fetchrow("SELECT * FROM price_versions WHERE model = 'openai/gpt-test'")
    assert str(stored["output_per_mtok"]) == "0.6"
    dup = await client.put(url, json=body, headers=auth(admin_key))
    assert_problem(dup, 409, "duplicate_price_version")
    later = await client.put(
        url, json={**body, "effective_from": "2025-05-01T00:00:00+02:00"}, headers=auth(admin_key)
    )
    assert later.status_code == 201
    for field, value in (
        ("input_per_mtok", 0.15),
        ("input_per_mtok", "-1"),
        ("effective_from", "2025-06-01T00:00:00"),
    ):
        bad = await client.put(url, json={**body, field: value}, headers=auth(admin_key))
        assert assert_problem(bad, 422)["errors"][0]["field"] == f"body.{field}", (field, value)


async def test_api_keys_create_use_and_revoke(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    r = await client.post(
        f"{A}/api-keys", json={"account_id": "acme", "scope": "user"}, headers=auth(admin_key)
    )
    assert r.status_code == 201, r.text
    out = r.json()
    key, key_id = out["key"], out["key_id"]
    assert key.startswith(f"ml_{key_id}_") and len(key) >= 3 + 16 + 1 + 43
    row = await db.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    assert row["scope"] == "user" and row["account_id"] == "acme"
    assert key.encode() not in bytes(row["key_hash"]) and len(row["key_hash"]) == 32
    # The account exists (created with the key) and the key works on user routes.
    balance = await client.get("/api/v1/credits/balance", headers=auth(key))
    assert balance.status_code == 200, balance.text
    assert balance.json()["account_id"] == "acme"

    admin2 = await client.post(f"{A}/api-keys", json={"scope": "admin"}, headers=auth(admin_key))
    assert admin2.status_code == 201 and admin2.json()["account_id"] is None
    no_account = await client.post(f"{A}/api-keys", json={"scope": "user"}, headers=auth(admin_key))
    assert assert_problem(no_account, 422)["errors"][0]["field"] == "body.account_id"
    bad_scope = await client.post(
        f"{A}/api-keys", json={"account_id": "a", "scope": "root"}, headers=auth(admin_key)
    )
    assert assert_problem(bad_scope, 422)["errors"][0]["field"] == "body.scope"

    revoked = await client.delete(f"{A}/api-keys/{key_id}", headers=auth(admin_key))
    assert revoked.status_code == 204
    assert_problem(await client.get("/api/v1/credits/balance", headers=auth(key)), 401)
    again = await client.delete(f"{A}/api-keys/{key_id}", headers=auth(admin_key))
    assert_problem(again, 404, "unknown_api_key")
