"""Admins list API keys (never their secrets), by account, live or revoked, page by page."""

from __future__ import annotations

import httpx

from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth

A = "/api/v1/admin/api-keys"


async def test_list_keys_by_account_and_revocation(
    client: httpx.AsyncClient, admin_key: str, user_key_for: UserKeyFactory
) -> None:
    alice = [await user_key_for("alice") for _ in range(3)]
    await user_key_for("bob")
    alice_ids = sorted(k.split("_")[1] for k in alice)

    r = await client.get(A, params={"account_id": "alice"}, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    listed = r.json()["items"]
    assert [k["key_id"] for k in listed] == alice_ids
    assert all(k["scope"] == "user" and k["revoked_at"] is None for k in listed)
    assert not any(key.split("_", 2)[2] in r.text for key in alice)  # no secret, ever

    assert (await client.delete(f"{A}/{alice_ids[0]}", headers=auth(admin_key))).status_code == 204
    live = (await client.get(A, params={"account_id": "alice"}, headers=auth(admin_key))).json()
    assert [k["key_id"] for k in live["items"]] == alice_ids[1:]
    every = (
        await client.get(
            A, params={"account_id": "alice", "include_revoked": "true"}, headers=auth(admin_key)
        )
    ).json()
    assert [k["revoked_at"] is not None for k in every["items"]] == [True, False, False]

    first = (await client.get(A, params={"limit": 2}, headers=auth(admin_key))).json()
    rest = (
        await client.get(
            A, params={"limit": 500, "cursor": first["next_cursor"]}, headers=auth(admin_key)
        )
    ).json()
    ids = [k["key_id"] for k in first["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 4  # admin + bob + alice's two live keys
    assert rest["next_cursor"] is None

    live_key = next(k for k in alice if k.split("_")[1] == alice_ids[1])
    assert_problem(await client.get(A, headers=auth(live_key)), 403)
