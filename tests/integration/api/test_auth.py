"""Keys, scopes and rate limits: the authorization matrix over every route of the app."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import httpx
from fastapi import FastAPI

from processors.api_keys import create_api_key, revoke_api_key
from tests.integration.api.conftest import assert_problem, auth

_PUBLIC = {"/healthz", "/readyz", "/metrics"}


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    # From the OpenAPI document: every documented operation of the app, whoever wrote it.
    out = []
    for template, ops in app.openapi()["paths"].items():
        if template in _PUBLIC:
            continue
        path = template.replace("/models/{model}", "/models/openai/gpt-4o")
        path = re.sub(r"\{[^}]+\}", "x", path)
        out.extend((m.upper(), path) for m in sorted(ops))
    assert len(out) > 20
    return out


def _admin_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [(m, p) for m, p in _routes(app) if p.startswith("/api/v1/admin/")]


async def test_every_admin_route_is_listed(api_app: FastAPI) -> None:
    admin = _admin_routes(api_app)
    for method, path in [
        ("POST", "/api/v1/admin/credits/allocate"),
        ("POST", "/api/v1/admin/credits/bulk-allocate"),
        ("GET", "/api/v1/admin/credits/analytics/system"),
        ("GET", "/api/v1/admin/credits/analytics/top-spenders"),
        ("GET", "/api/v1/admin/accounts/x"),
        ("PUT", "/api/v1/admin/accounts/x/tier"),
        ("GET", "/api/v1/admin/tiers/x"),
        ("PUT", "/api/v1/admin/tiers/x"),
        ("POST", "/api/v1/admin/coupons"),
        ("GET", "/api/v1/admin/coupons"),
        ("PUT", "/api/v1/admin/pricing/models/openai/gpt-4o"),
        ("POST", "/api/v1/admin/api-keys"),
        ("DELETE", "/api/v1/admin/api-keys/x"),
    ]:
        assert (method, path) in admin


async def test_user_key_on_every_admin_route_is_403(
    client: httpx.AsyncClient, api_app: FastAPI, user_key_for: object, db: asyncpg.Pool
) -> None:
    key = await user_key_for("acme")  # type: ignore[operator]
    for method, path in _admin_routes(api_app):
        r = await client.request(method, path, headers=auth(key), json={})
        body = assert_problem(r, 403, "forbidden")
        assert "admin key" in body["detail"], (method, path)
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 0


async def test_no_wrong_or_revoked_key_on_every_route_is_401(
    client: httpx.AsyncClient, api_app: FastAPI, db: asyncpg.Pool
) -> None:
    key_id, revoked = await create_api_key(db, account_id=None, scope="admin")
    assert await revoke_api_key(db, key_id=key_id)
    _, good = await create_api_key(db, account_id=None, scope="admin")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")  # right id, bad secret
    variants: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {good}"},
        {"Authorization": "Bearer ml_0000000000000000_" + "x" * 43},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer ' OR 1=1 --"},
        auth(forged),
        auth(revoked),
    ]
    for method, path in _routes(api_app):
        for headers in variants:
            r = await client.request(method, path, headers=headers, json={})
            assert_problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)


async def test_user_key_cannot_name_another_account(
    client: httpx.AsyncClient, user_key_for: object, admin_key: str
) -> None:
    key = await user_key_for("alice")  # type: ignore[operator]
    body = {"account_id": "bob", "amount": "7", "reason": "r", "idempotency_key": "k"}
    granted = await client.post(
        "/api/v1/admin/credits/allocate", json=body, headers=auth(admin_key)
    )
    assert granted.status_code == 200, granted.text  # else "7.000000" is absent for no reason
    r = await client.get("/api/v1/credits/balance", params={"account_id": "bob"}, headers=auth(key))
    body403 = assert_problem(r, 403, "forbidden")
    assert "7.000000" not in r.text and "bob" not in body403["detail"]
    own = await client.get(
        "/api/v1/credits/balance", params={"account_id": "alice"}, headers=auth(key)
    )
    assert own.status_code == 200 and own.json()["account_id"] == "alice"
    # An admin key acts on any account, but must name it.
    r = await client.get(
        "/api/v1/credits/balance", params={"account_id": "bob"}, headers=auth(admin_key)
    )
    assert r.status_code == 200 and r.json()["balance"] == "7.000000"
    missing = await client.get("/api/v1/credits/balance", headers=auth(admin_key))
    assert assert_problem(missing, 422)["errors"][0]["field"] == "query.account_id"


async def test_rate_limit_by_tier_is_429_with_retry_after(
    client: httpx.AsyncClient, user_key_for: object, admin_key: str, db: asyncpg.Pool
) -> None:
    await db.execute("INSERT INTO tiers (name, rate_limit) VALUES ('tiny', '3/minute')")
    key = await user_key_for("slow", tier="tiny")  # type: ignore[operator]
    other = await user_key_for("fast")  # type: ignore[operator]
    statuses = [
        (await client.get("/api/v1/credits/balance", headers=auth(key))).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    r = await client.get("/api/v1/credits/balance", headers=auth(key))
    body = assert_problem(r, 429, "rate_limited")
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert body["retry_after"] == retry_after and "3 per 1 minute" in body["detail"]
    # Per key: another account's key is not limited by this one.
    assert (await client.get("/api/v1/credits/balance", headers=auth(other))).status_code == 200


async def test_rate_limit_under_concurrency_never_lets_more_through(
    client: httpx.AsyncClient, user_key_for: object, db: asyncpg.Pool
) -> None:
    await db.execute("INSERT INTO tiers (name, rate_limit) VALUES ('ten', '10/minute')")
    key = await user_key_for("burst", tier="ten")  # type: ignore[operator]
    rs = await asyncio.gather(
        *(client.get("/api/v1/credits/balance", headers=auth(key)) for _ in range(30))
    )
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) == 10 and codes.count(429) == 20


async def test_unexpected_error_is_a_500_problem_without_internals(
    client: httpx.AsyncClient, admin_key: str, db: asyncpg.Pool
) -> None:
    # Break the database under the app: the answer must not leak SQL or table names.
    await db.execute("ALTER TABLE usage_daily RENAME TO usage_daily_gone")
    try:
        r = await client.get("/api/v1/admin/credits/analytics/system", headers=auth(admin_key))
    finally:
        await db.execute("ALTER TABLE usage_daily_gone RENAME TO usage_daily")
    body = assert_problem(r, 500, "internal_error")
    assert "usage_daily" not in r.text and "SELECT" not in r.text
    assert set(body) == {"type", "title", "status", "detail", "code"}
