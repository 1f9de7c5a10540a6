"""Grant routes and reads: admin grants with every attribute, the account's grants, which grants
paid each transaction, the balance as it stood at a time, `meterline admin grant`, and the
monthly allocation as a promotional grant expiring at the end of the month."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx

from api.settings import ApiSettings
from processors.ledger import LedgerPolicy, grant_monthly_allocations
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.test_admin_cli import _run
from tests.integration.ledger_helpers import grants_match_balances

GRANTS = "/api/v1/admin/credits/grants"


async def test_admin_grant_with_every_attribute_and_its_burn(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    body = {
        "account_id": "acme",
        "amount": "20",
        "category": "promotional",
        "priority": 10,
        "expires_at": expires.isoformat(),
        "applies_to": ["anthropic/"],
        "reason": "launch promotion",
        "idempotency_key": "promo-1",
    }
    r = await client.post(GRANTS, json=body, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["balance"] == "20.000000" and out["replayed"] is False
    g = out["grant"]
    assert (g["category"], g["priority"], g["amount"], g["remaining"], g["status"]) == (
        "promotional",
        10,
        "20.000000",
        "20.000000",
        "active",
    )
    assert g["applies_to"] == ["anthropic/"]
    assert datetime.fromisoformat(g["expires_at"]) == expires
    again = await client.post(GRANTS, json=body, headers=auth(admin_key))
    assert again.json()["replayed"] is True and again.json()["grant"]["grant_id"] == g["grant_id"]
    other = await client.post(GRANTS, json={**body, "priority": 11}, headers=auth(admin_key))
    assert_problem(other, 409, "idempotency_conflict")
    paid = await client.post(
        "/api/v1/admin/credits/allocate",
        json={"account_id": "acme", "amount": "5", "reason": "top-up", "idempotency_key": "t"},
        headers=auth(admin_key),
    )
    assert paid.status_code == 200

    # A deduction (no model) burns the grant for any usage only; the list shows it.
    ded = await client.post(
        "/api/v1/credits/deduct",
        json={"amount": "2", "reason": "r", "idempotency_key": "d"},
        headers=auth(key),
    )
    assert ded.status_code == 200, ded.text
    paid_grant = (await client.get("/api/v1/credits/grants", headers=auth(key))).json()["items"][0]
    assert ded.json()["transaction"]["grants"] == [
        {"grant_id": paid_grant["grant_id"], "amount": "2.000000", "kind": "debit"}
    ]
    listed = (await client.get("/api/v1/credits/transactions", headers=auth(key))).json()
    assert listed["items"][0]["grants"] == ded.json()["transaction"]["grants"]
    grants = (await client.get("/api/v1/credits/grants", headers=auth(key))).json()["items"]
    assert [(x["category"], x["remaining"]) for x in grants] == [
        ("paid", "3.000000"),
        ("promotional", "20.000000"),
    ]
    await grants_match_balances(db)


async def test_bad_grants_are_422(client: httpx.AsyncClient, admin_key: str) -> None:
    base = {"account_id": "a", "amount": "1", "reason": "r", "idempotency_key": "k"}
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    soon = datetime.now(UTC) + timedelta(days=1)
    for extra, field in [
        ({"category": "gift"}, "body.category"),
        ({"priority": 101}, "body.priority"),
        ({"priority": -1}, "body.priority"),
        ({"applies_to": []}, "body.applies_to"),
        ({"expires_at": past}, "body.expires_at"),
        ({"expires_at": "2026-01-01T00:00:00"}, "body.expires_at"),
        (
            {"effective_at": soon.isoformat(), "expires_at": (soon - timedelta(1)).isoformat()},
            "body.expires_at",
        ),
    ]:
        r = await client.post(GRANTS, json={**base, **extra}, headers=auth(admin_key))
        assert assert_problem(r, 422)["errors"][0]["field"] == field, (extra, r.text)


async def test_balance_at_a_past_time(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    before = datetime.now(UTC)
    await asyncio.sleep(0.05)
    for i, amount in enumerate(("10", "5")):
        r = await client.post(
            "/api/v1/admin/credits/allocate",
            json={"account_id": "acme", "amount": amount, "reason": "r", "idempotency_key": f"{i}"},
            headers=auth(admin_key),
        )
        assert r.status_code == 200
        await asyncio.sleep(0.05)
        if i == 0:
            between = datetime.now(UTC)
            await asyncio.sleep(0.05)

    async def at(when: datetime) -> str:
        r = await client.get(
            "/api/v1/credits/balance", params={"at": when.isoformat()}, headers=auth(key)
        )
        assert r.status_code == 200, r.text
        return str(r.json()["balance"])

    assert await at(before) == "0.000000"
    assert await at(between) == "10.000000"
    assert await at(datetime.now(UTC)) == "15.000000"
    bad = await client.get("/api/v1/credits/balance", params={"at": "yesterday"}, headers=auth(key))
    assert assert_problem(bad, 422)["errors"][0]["field"] == "query.at"


async def test_cli_grant(api_settings: ApiSettings, db: asyncpg.Pool) -> None:
    r = _run(
        api_settings,
        "grant",
        "--account",
        "cli-acct",
        "--amount",
        "7.5",
        "--reason",
        "promo",
        "--category",
        "promotional",
        "--priority",
        "5",
        "--expires-at",
        "2099-01-01T00:00:00Z",
        "--applies-to",
        "openai/",
        "--applies-to",
        "anthropic/",
        "--idempotency-key",
        "cli-g",
    )
    assert r.returncode == 0, r.stderr
    assert "granted 7.500000 to cli-acct as promotional grant" in r.stdout
    row = await db.fetchrow("SELECT * FROM credit_grants")
    assert (row["category"], row["priority"], row["applies_to"], row["amount_micros"]) == (
        "promotional",
        5,
        ["openai/", "anthropic/"],
        7_500_000,
    )
    assert row["expires_at"] == datetime(2099, 1, 1, tzinfo=UTC)
    bad = _run(
        api_settings,
        "grant",
        "--account",
        "a",
        "--amount",
        "1",
        "--reason",
        "r",
        "--priority",
        "101",
    )
    assert bad.returncode != 0 and "--priority" in bad.stderr


async def test_monthly_allocation_is_a_promotional_grant_until_month_end(db: asyncpg.Pool) -> None:
    await db.execute("INSERT INTO user_credits (account_id, tier) VALUES ('f1', 'free')")
    today = datetime.now(UTC).date()
    async with db.acquire() as conn:
        await grant_monthly_allocations(conn, month=today.replace(day=1), policy=LedgerPolicy())
    g = await db.fetchrow("SELECT * FROM credit_grants")
    nxt = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    assert (g["category"], g["priority"], g["amount_micros"]) == ("promotional", 10, 1_000_000)
    assert g["expires_at"] == datetime(nxt.year, nxt.month, 1, tzinfo=UTC)
