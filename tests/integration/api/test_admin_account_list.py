"""Admins list accounts by id (the dashboard's account picker), by prefix, page by page."""

from __future__ import annotations

import asyncpg
import httpx

from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.ledger_helpers import allocate

A = "/api/v1/admin/accounts"


async def test_list_accounts_by_prefix_and_page(
    client: httpx.AsyncClient, admin_key: str, user_key_for: UserKeyFactory, db: asyncpg.Pool
) -> None:
    for account in ("team-a", "team-b", "team-c", "solo", "team_x"):
        await user_key_for(account, tier="pro")
    await allocate(db, "team-b", 12_500_000, key="team-b-grant")

    r = await client.get(A, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    page = r.json()
    assert [a["account_id"] for a in page["items"]] == sorted(
        ["team-a", "team-b", "team-c", "solo", "team_x"]
    )
    assert page["next_cursor"] is None
    b = next(a for a in page["items"] if a["account_id"] == "team-b")
    assert (b["tier"], b["balance"]) == ("pro", "12.500000")

    # A prefix is text, not a pattern: "team_" matches team_x only, never team-a.
    picked = (await client.get(A, params={"prefix": "team_"}, headers=auth(admin_key))).json()
    assert [a["account_id"] for a in picked["items"]] == ["team_x"]
    teams = (await client.get(A, params={"prefix": "team-"}, headers=auth(admin_key))).json()
    assert [a["account_id"] for a in teams["items"]] == ["team-a", "team-b", "team-c"]

    first = (
        await client.get(A, params={"prefix": "team-", "limit": 2}, headers=auth(admin_key))
    ).json()
    assert [a["account_id"] for a in first["items"]] == ["team-a", "team-b"]
    rest = (
        await client.get(
            A,
            params={"prefix": "team-", "limit": 2, "cursor": first["next_cursor"]},
            headers=auth(admin_key),
        )
    ).json()
    assert [a["account_id"] for a in rest["items"]] == ["team-c"]
    assert rest["next_cursor"] is None


async def test_a_user_key_cannot_list_accounts(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("alice")
    assert_problem(await client.get(A, headers=auth(key)), 403, "forbidden")


async def test_bad_list_parameters_are_422_naming_them(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    body = assert_problem(
        await client.get(A, params={"limit": 0}, headers=auth(admin_key)), 422, "validation_error"
    )
    assert "limit" in body["detail"]
    body = assert_problem(
        await client.get(A, params={"prefix": "x" * 129}, headers=auth(admin_key)), 422
    )
    assert "prefix" in body["detail"]
