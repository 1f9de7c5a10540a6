"""Every user route: a user key naming another account is 403 and never shows its data;
SQL-injection strings in every string parameter and body field are stored literally or refused."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import (
    MODEL,
    add_coupon,
    add_test_price,
    allocate,
    ledger_matches_balances,
)

SECRET = "sk-or-v1-" + "ab" * 32
# (method, path, json body) of every user route.
USER_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/credits/balance", None),
    ("POST", "/api/v1/credits/deduct", {"amount": "1", "reason": "r", "idempotency_key": "k"}),
    ("POST", "/api/v1/credits/calculate-cost", {"model": MODEL, "input_tokens": 1}),
    (
        "POST",
        "/api/v1/credits/calculate-and-deduct",
        {"model": MODEL, "input_tokens": 1, "idempotency_key": "k2"},
    ),
    ("GET", "/api/v1/credits/grants", None),
    ("POST", "/api/v1/credits/reservations", {"amount": "1", "idempotency_key": "k3"}),
    ("GET", "/api/v1/credits/reservations", None),
    # {reservation_id} is replaced by a real hold of the account where a test needs one.
    ("GET", "/api/v1/credits/reservations/{reservation_id}", None),
    ("POST", "/api/v1/credits/reservations/{reservation_id}/release", None),
    ("GET", "/api/v1/credits/transactions", None),
    ("GET", "/api/v1/credits/transactions/export", None),
    ("GET", "/api/v1/credits/usage/stats", None),
    ("GET", "/api/v1/credits/monthly-cap", None),
    ("POST", "/api/v1/credits/monthly-cap", {"monthly_cap": "1"}),
    ("POST", "/api/v1/credits/authorize", {"estimated_cost": "1"}),
    ("POST", "/api/v1/credits/coupons/redeem", {"code": "FREE"}),
    ("PUT", "/api/v1/credits/byok/openrouter", {"api_key": SECRET}),
    ("GET", "/api/v1/credits/byok/openrouter", None),
    ("DELETE", "/api/v1/credits/byok/openrouter", None),
    (
        "POST",
        "/api/v1/usage/events",
        {
            "event_id": "e1",
            "account_id": "alice",
            "occurred_at": "2025-03-01T12:00:00Z",
            "model": MODEL,
        },
    ),
]


async def test_user_routes_lists_every_account_route_of_the_app(api_app: FastAPI) -> None:
    # The tests below loop over USER_ROUTES: a route missing from it would go unchecked.
    documented = {
        (method.upper(), path)
        for path, ops in api_app.openapi()["paths"].items()
        if path.startswith(("/api/v1/credits/", "/api/v1/usage/"))
        for method in ops
    }
    assert {(method, path) for method, path, _ in USER_ROUTES} == documented


async def _victim(db: asyncpg.Pool) -> None:
    await allocate(db, "victim", 77_000_000, key="victim-grant")
    await db.execute(
        "INSERT INTO openrouter_accounts (account_id, encrypted_key, key_last4)"
        " VALUES ('victim', '\\x00', 'VICT')"
    )


async def _snapshot(db: asyncpg.Pool) -> list[Any]:
    return [
        await db.fetch("SELECT * FROM user_credits WHERE account_id = 'victim'"),
        await db.fetch(
            "SELECT id, amount_micros FROM credit_transactions"
            " WHERE account_id = 'victim' ORDER BY id"
        ),
        await db.fetch("SELECT account_id, key_last4 FROM openrouter_accounts ORDER BY 1"),
        await db.fetch("SELECT * FROM coupon_redemptions"),
    ]


async def test_user_key_naming_another_account_is_403_on_every_user_route(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    await add_coupon(db, "FREE")
    await _victim(db)
    key = await user_key_for("alice", tier="pro")
    before = await _snapshot(db)
    for method, path, body in USER_ROUTES:
        r = await client.request(
            method, path, params={"account_id": "victim"}, json=body, headers=auth(key)
        )
        problem = assert_problem(r, 403, "forbidden")
        assert "77.0" not in r.text and "VICT" not in r.text, (path, r.text)
        assert problem["status"] == 403
    assert await _snapshot(db) == before
    # Naming its own account is fine; no key at all is 401 everywhere.
    r = await client.get(
        "/api/v1/credits/balance", params={"account_id": "alice"}, headers=auth(key)
    )
    assert r.status_code == 200
    for method, path, body in USER_ROUTES:
        assert_problem(await client.request(method, path, json=body), 401, "unauthorized")


async def test_admin_key_acts_on_the_named_account_on_every_user_route(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    await add_test_price(db)
    await add_coupon(db, "FREE")
    await allocate(db, "alice", 10_000_000)
    held = await client.post(
        "/api/v1/credits/reservations",
        params={"account_id": "alice"},
        json={"amount": "1", "idempotency_key": "held"},
        headers=auth(admin_key),
    )
    assert held.status_code == 201, held.text
    for method, template, body in USER_ROUTES:
        path = template.replace("{reservation_id}", held.json()["reservation_id"])
        r = await client.request(
            method, path, params={"account_id": "alice"}, json=body, headers=auth(admin_key)
        )
        assert r.status_code < 300, (path, r.text)
    assert await db.fetchval("SELECT count(*) FROM coupon_redemptions WHERE account_id='alice'")
    await ledger_matches_balances(db)


INJECTIONS = [
    "'; DROP TABLE credit_transactions; --",
    '" OR 1=1 --',
    "x' OR '1'='1",
    "1; SELECT pg_sleep(5)",
    "$1",
    "'); UPDATE user_credits SET balance_micros = 999999999999; --",
    "\\x00\\' UNION SELECT * FROM api_keys --",
]


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_injection_strings_are_stored_literally_or_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Pool,
    user_key_for: UserKeyFactory,
    admin_key: str,
    evil: str,
) -> None:
    await add_test_price(db)
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    h = auth(key)
    # Body strings stored literally.
    r = await client.post(
        "/api/v1/credits/deduct",
        json={"amount": "1", "reason": evil, "idempotency_key": evil},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["transaction"]["reason"], r.json()["transaction"]["idempotency_key"]) == (
        evil,
        evil,
    )
    r = await client.post(
        "/api/v1/credits/calculate-and-deduct",
        json={"model": MODEL, "input_tokens": 1, "reason": evil, "idempotency_key": evil + "2"},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["transaction"]["reason"] == evil
    # Strings that name things that do not exist are answered as such.
    r = await client.post("/api/v1/credits/calculate-cost", json={"model": evil}, headers=h)
    assert_problem(r, 422)
    r = await client.post(
        "/api/v1/credits/calculate-cost", json={"model": MODEL, "units": {evil: 1}}, headers=h
    )
    assert assert_problem(r, 422)["errors"][0]["field"] == f"body.units.{evil}"
    r = await client.post("/api/v1/credits/coupons/redeem", json={"code": evil[:64]}, headers=h)
    assert_problem(r, 404, "coupon_not_found")
    # A coupon whose code is the string works literally.
    await add_coupon(db, evil[:64], micros=1_000_000)
    r = await client.post("/api/v1/credits/coupons/redeem", json={"code": evil[:64]}, headers=h)
    assert r.status_code == 200 and r.json()["code"] == evil[:64]
    # Query strings: refused by their rules.
    for path, params in [
        ("/api/v1/credits/transactions", {"type": evil}),
        ("/api/v1/credits/transactions", {"cursor": evil[:64]}),
        ("/api/v1/credits/transactions", {"from": evil}),
        ("/api/v1/credits/transactions/export", {"type": evil}),
        ("/api/v1/credits/usage/stats", {"group_by": evil}),
        ("/api/v1/credits/usage/stats", {"to": evil}),
    ]:
        assert_problem(await client.get(path, params=params, headers=h), 422)
    # As an account id (admin): a literal, unknown account.
    r = await client.get(
        "/api/v1/credits/balance", params={"account_id": evil}, headers=auth(admin_key)
    )
    assert r.status_code == 200 and r.json()["account_id"] == evil
    r = await client.post(
        "/api/v1/credits/monthly-cap",
        params={"account_id": evil},
        json={"monthly_cap": "3"},
        headers=auth(admin_key),
    )
    assert r.status_code == 200 and r.json()["account_id"] == evil
    r = await client.get(
        "/api/v1/credits/transactions", params={"account_id": evil}, headers=auth(admin_key)
    )
    assert r.json() == {"items": [], "next_cursor": None}
    # Nothing else happened: the tables are there, balances add up, nothing was dropped.
    assert (
        await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id = 'acme'")
        == 10_000_000 - 1_000_000 - 2 + 1_000_000
    )
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 4
    await ledger_matches_balances(db)
