"""Admin credit routes against the real database: allocate, bulk-allocate, analytics."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx

from tests.integration.api.conftest import assert_problem, auth

ALLOCATE = "/api/v1/admin/credits/allocate"
BULK = "/api/v1/admin/credits/bulk-allocate"


async def _ledger_sum(db: asyncpg.Pool, account: str) -> int:
    return int(
        await db.fetchval(
            "SELECT coalesce(sum(amount_micros), 0) FROM credit_transactions WHERE account_id = $1",
            account,
        )
    )


async def test_allocate_writes_a_row_and_returns_the_balance(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    body = {"account_id": "acme", "amount": "10.5", "reason": "top-up", "idempotency_key": "k1"}
    r = await client.post(ALLOCATE, json=body, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["balance"] == "10.500000"
    assert out["replayed"] is False
    tx = out["transaction"]
    assert tx["type"] == "allocation" and tx["amount"] == "10.500000"
    assert tx["balance_after"] == "10.500000" and tx["reason"] == "top-up"
    assert await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id='acme'") == (
        10_500_000
    )
    assert await _ledger_sum(db, "acme") == 10_500_000

    # Same key, same body: the original answer, nothing new written.
    again = await client.post(ALLOCATE, json=body, headers=auth(admin_key))
    assert again.status_code == 200
    assert again.json()["replayed"] is True
    assert again.json()["transaction"]["id"] == tx["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await _ledger_sum(db, "acme") == 10_500_000

    # Same key, another amount: 409 naming the key.
    conflict = await client.post(ALLOCATE, json={**body, "amount": "11"}, headers=auth(admin_key))
    problem = assert_problem(conflict, 409, "idempotency_conflict")
    assert problem["idempotency_key"] == "k1"
    assert await _ledger_sum(db, "acme") == 10_500_000


async def test_allocate_refuses_bad_amounts_naming_the_field(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    base = {"account_id": "acme", "reason": "r", "idempotency_key": "k"}
    for amount in (10.5, "1.0000001", "-5", "0", "abc", None):
        r = await client.post(ALLOCATE, json={**base, "amount": amount}, headers=auth(admin_key))
        body = assert_problem(r, 422, "validation_error")
        assert body["errors"][0]["field"] == "body.amount", body
        assert "body.amount" in body["detail"]
        assert body["errors"][0]["rule"]
    missing = await client.post(ALLOCATE, json={"amount": "1"}, headers=auth(admin_key))
    fields = {e["field"] for e in assert_problem(missing, 422)["errors"]}
    assert fields == {"body.account_id", "body.reason", "body.idempotency_key"}
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 0


async def test_bulk_allocate_writes_every_row(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    rows = [
        {
            "account_id": f"acct-{i}",
            "amount": f"{i + 1}.25",
            "reason": "promo",
            "idempotency_key": f"promo-{i}",
        }
        for i in range(5)
    ]
    r = await client.post(BULK, json={"allocations": rows}, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["index"] for x in out["results"]] == [0, 1, 2, 3, 4]
    assert [x["transaction"]["account_id"] for x in out["results"]] == [
        f"acct-{i}" for i in range(5)
    ]
    assert out["total"] == "16.250000"
    for i in range(5):
        assert await _ledger_sum(db, f"acct-{i}") == (i + 1) * 1_000_000 + 250_000


async def test_bulk_allocate_is_all_or_nothing(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    first = {"account_id": "b", "amount": "5", "reason": "r", "idempotency_key": "dup"}
    assert (await client.post(ALLOCATE, json=first, headers=auth(admin_key))).status_code == 200
    rows = [
        {"account_id": "a", "amount": "1", "reason": "r", "idempotency_key": "x1"},
        {**first, "amount": "6"},  # same key, another amount: conflicts
        {"account_id": "c", "amount": "2", "reason": "r", "idempotency_key": "x3"},
    ]
    r = await client.post(BULK, json={"allocations": rows}, headers=auth(admin_key))
    body = assert_problem(r, 409, "bulk_allocation_failed")
    assert [e["index"] for e in body["errors"]] == [1]
    assert body["errors"][0]["code"] == "idempotency_conflict"
    assert "row 1" in body["detail"]
    # Nothing of the request was written: not even the rows before and after the bad one.
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 1
    assert await db.fetchval("SELECT count(*) FROM user_credits WHERE account_id IN ('a','c')") == 0


async def test_bulk_allocate_reports_invalid_rows_by_index(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    rows = [
        {"account_id": "a", "amount": "1", "reason": "r", "idempotency_key": "x1"},
        {"account_id": "b", "amount": 1.5, "reason": "r", "idempotency_key": "x2"},
    ]
    r = await client.post(BULK, json={"allocations": rows}, headers=auth(admin_key))
    body = assert_problem(r, 422, "validation_error")
    assert body["errors"][0]["field"] == "body.allocations.1.amount"
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 0
    empty = await client.post(BULK, json={"allocations": []}, headers=auth(admin_key))
    assert assert_problem(empty, 422)["errors"][0]["field"] == "body.allocations"


async def _seed_usage(db: asyncpg.Pool) -> date:
    today = datetime.now(UTC).date()
    rows = [
        ("a", today, "m1", 3, 3_000_000),
        ("a", today, "m2", 1, 500_000),
        ("b", today, "m1", 10, 9_000_000),
        ("c", today - timedelta(days=40), "m1", 7, 70_000_000),  # outside the default period
    ]
    await db.executemany(
        "INSERT INTO usage_daily (account_id, day, model, events, cost_micros)"
        " VALUES ($1, $2, $3, $4, $5)",
        rows,
    )
    return today


async def test_system_analytics(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    for account, amount in (("a", "10"), ("b", "2.5")):
        body = {"account_id": account, "amount": amount, "reason": "r", "idempotency_key": "k"}
        assert (await client.post(ALLOCATE, json=body, headers=auth(admin_key))).status_code == 200
    today = await _seed_usage(db)
    r = await client.get(
        "/api/v1/admin/credits/analytics/system",
        headers=auth(admin_key),
        params={"from": today.isoformat(), "to": today.isoformat()},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out == {
        "from": today.isoformat(),
        "to": today.isoformat(),
        "accounts": 2,
        "blocked_accounts": 0,
        "total_balance": "12.500000",
        "spend": "12.500000",
        "events": 14,
        "active_accounts": 2,
    }
    wide = await client.get(
        "/api/v1/admin/credits/analytics/system",
        headers=auth(admin_key),
        params={"from": (today - timedelta(days=60)).isoformat(), "to": today.isoformat()},
    )
    assert wide.json()["spend"] == "82.500000" and wide.json()["active_accounts"] == 3
    bad = await client.get(
        "/api/v1/admin/credits/analytics/system",
        headers=auth(admin_key),
        params={"from": today.isoformat(), "to": (today - timedelta(days=1)).isoformat()},
    )
    assert assert_problem(bad, 422)["errors"][0]["field"] == "query.to"
    bad_date = await client.get(
        "/api/v1/admin/credits/analytics/system",
        headers=auth(admin_key),
        params={"from": "yesterday"},
    )
    assert assert_problem(bad_date, 422)["errors"][0]["field"] == "query.from"


async def test_top_spenders(client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool) -> None:
    today = await _seed_usage(db)
    r = await client.get(
        "/api/v1/admin/credits/analytics/top-spenders",
        headers=auth(admin_key),
        params={"from": (today - timedelta(days=60)).isoformat(), "limit": 2},
    )
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [
        {"account_id": "c", "spend": "70.000000", "events": 7},
        {"account_id": "b", "spend": "9.000000", "events": 10},
    ]
    r = await client.get("/api/v1/admin/credits/analytics/top-spenders", headers=auth(admin_key))
    assert [i["account_id"] for i in r.json()["items"]] == ["b", "a"]
    bad = await client.get(
        "/api/v1/admin/credits/analytics/top-spenders", headers=auth(admin_key), params={"limit": 0}
    )
    assert assert_problem(bad, 422)["errors"][0]["field"] == "query.limit"
