"""Reservations (holds) over HTTP: reserve, read, release, expiry, idempotency, and that no
number of concurrent reservations or deductions commits the same credit twice."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from processors.ledger import sweep_expired_holds
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import allocate, ledger_matches_balances

RES = "/api/v1/credits/reservations"
BAL = "/api/v1/credits/balance"


async def _balance(client: httpx.AsyncClient, key: str) -> dict[str, str]:
    r = await client.get(BAL, headers=auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_reserve_read_list_and_release(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    r = await client.post(
        RES,
        json={"amount": "2.5", "idempotency_key": "call-1", "metadata": {"request_id": "r1"}},
        headers=auth(key),
    )
    assert r.status_code == 201, r.text
    hold = r.json()
    assert (hold["status"], hold["amount"], hold["available"], hold["replayed"]) == (
        "active",
        "2.500000",
        "7.500000",
        False,
    )
    assert hold["reservation_id"].startswith("rsv_")
    assert hold["metadata"] == {"request_id": "r1"}
    bal = await _balance(client, key)
    assert (bal["balance"], bal["available"], bal["held"]) == ("10.000000", "7.500000", "2.500000")

    rid = hold["reservation_id"]
    got = await client.get(f"{RES}/{rid}", headers=auth(key))
    assert got.status_code == 200 and got.json()["status"] == "active"
    listed = (await client.get(RES, headers=auth(key))).json()
    assert [h["reservation_id"] for h in listed["items"]] == [rid]
    assert listed["held"] == "2.500000"

    released = await client.post(f"{RES}/{rid}/release", headers=auth(key))
    assert released.status_code == 200, released.text
    assert (released.json()["status"], released.json()["available"]) == ("released", "10.000000")
    again = await client.post(f"{RES}/{rid}/release", headers=auth(key))
    assert again.status_code == 200 and again.json()["status"] == "released"
    bal = await _balance(client, key)
    assert (bal["available"], bal["held"]) == ("10.000000", "0.000000")
    assert (await client.get(RES, headers=auth(key))).json()["items"] == []
    # Holds move no balance: the ledger has the allocation only.
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 1
    await ledger_matches_balances(db)


async def test_another_accounts_hold_is_not_found(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    alice = await user_key_for("alice", tier="pro")
    bob = await user_key_for("bob", tier="pro")
    await allocate(db, "alice", 5_000_000)
    rid = (
        await client.post(RES, json={"amount": "1", "idempotency_key": "a"}, headers=auth(alice))
    ).json()["reservation_id"]
    for r in (
        await client.get(f"{RES}/{rid}", headers=auth(bob)),
        await client.post(f"{RES}/{rid}/release", headers=auth(bob)),
        await client.get(f"{RES}/rsv_unknown", headers=auth(alice)),
        await client.post(f"{RES}/rsv_unknown/release", headers=auth(alice)),
    ):
        assert_problem(r, 404, "unknown_reservation")
    assert (await _balance(client, alice))["held"] == "1.000000"


async def test_idempotent_reserve(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    body = {"amount": "3", "ttl_seconds": 60, "idempotency_key": "same"}
    first = await client.post(RES, json=body, headers=auth(key))
    second = await client.post(RES, json=body, headers=auth(key))
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["reservation_id"] == first.json()["reservation_id"]
    assert second.json()["replayed"] is True and second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["available"] == first.json()["available"] == "7.000000"
    other = await client.post(RES, json={**body, "amount": "4"}, headers=auth(key))
    problem = assert_problem(other, 409, "idempotency_conflict")
    assert problem["original_reservation_id"] == first.json()["reservation_id"]
    assert await db.fetchval("SELECT count(*) FROM credit_holds") == 1
    assert (await _balance(client, key))["held"] == "3.000000"
    # Once the account could no longer afford it, the key still answers its original (or 409).
    drain = {"amount": "7", "idempotency_key": "drain"}
    assert (await client.post(RES, json=drain, headers=auth(key))).status_code == 201
    again = await client.post(RES, json=body, headers=auth(key))
    assert again.status_code == 201, again.text
    assert again.json()["reservation_id"] == first.json()["reservation_id"]
    assert again.json()["replayed"] is True
    other = await client.post(RES, json={**body, "amount": "4"}, headers=auth(key))
    assert_problem(other, 409, "idempotency_conflict")
    fresh = await client.post(
        RES, json={"amount": "1", "idempotency_key": "new"}, headers=auth(key)
    )
    assert_problem(fresh, 402, "insufficient_credit")
    assert await db.fetchval("SELECT count(*) FROM credit_holds") == 2


async def test_refusals_name_available_and_cap(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="free")  # monthly cap 5
    await allocate(db, "acme", 3_000_000)
    ok = await client.post(RES, json={"amount": "2", "idempotency_key": "a"}, headers=auth(key))
    assert ok.status_code == 201
    refused = await client.post(
        RES, json={"amount": "1.000001", "idempotency_key": "b"}, headers=auth(key)
    )
    problem = assert_problem(refused, 402, "insufficient_credit")
    assert (problem["available"], problem["held"]) == ("1.000000", "2.000000")
    assert "1.000000 available" in problem["detail"]
    # A deduction cannot spend held credit either.
    ded = await client.post(
        "/api/v1/credits/deduct",
        json={"amount": "1.5", "reason": "r", "idempotency_key": "d"},
        headers=auth(key),
    )
    assert assert_problem(ded, 402, "insufficient_credit")["available"] == "1.000000"
    authz = await client.post(
        "/api/v1/credits/authorize", json={"estimated_cost": "1.5"}, headers=auth(key)
    )
    assert (authz.json()["allowed"], authz.json()["reason"]) == (False, "insufficient_balance")
    # Against the cap: spend 0 + held 2 + 3.5 > 5.
    await allocate(db, "acme", 10_000_000)
    capped = await client.post(
        RES, json={"amount": "3.5", "idempotency_key": "c"}, headers=auth(key)
    )
    problem = assert_problem(capped, 402, "monthly_cap_exceeded")
    assert (problem["monthly_cap"], problem["held"]) == ("5.000000", "2.000000")
    authz = await client.post(
        "/api/v1/credits/authorize", json={"estimated_cost": "3.5"}, headers=auth(key)
    )
    assert (authz.json()["allowed"], authz.json()["reason"]) == (False, "monthly_cap")
    assert await db.fetchval("SELECT count(*) FROM credit_holds") == 1


async def test_bad_reservations_are_422(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    for body, field in [
        ({"amount": "0", "idempotency_key": "k"}, "body.amount"),
        ({"amount": 1.5, "idempotency_key": "k"}, "body.amount"),
        ({"amount": "1", "idempotency_key": "k", "ttl_seconds": 0}, "body.ttl_seconds"),
        ({"amount": "1", "idempotency_key": "k", "ttl_seconds": 86_401}, "body.ttl_seconds"),
        ({"amount": "1"}, "body.idempotency_key"),
        (
            {
                "amount": "1",
                "idempotency_key": "k",
                "metadata": {f"k{i}": "y" * 100 for i in range(50)},
            },
            "body.metadata",
        ),
        ({"amount": "1", "idempotency_key": "k", "metadata": {"x": "a\x00b"}}, "body.metadata.x"),
    ]:
        problem = assert_problem(await client.post(RES, json=body, headers=auth(key)), 422)
        named = problem["errors"][0]["field"]
        assert named == field or named.startswith(field + "."), problem
    long_id = "r" * 129
    assert_problem(await client.get(f"{RES}/{long_id}", headers=auth(key)), 422)


async def test_an_expired_hold_stops_counting_at_once(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 5_000_000)
    r = await client.post(
        RES, json={"amount": "4", "ttl_seconds": 1, "idempotency_key": "short"}, headers=auth(key)
    )
    assert r.status_code == 201
    rid = r.json()["reservation_id"]
    assert (await _balance(client, key))["available"] == "1.000000"
    await asyncio.sleep(1.2)
    # No sweeper has run: the hold is past expires_at and no longer counts.
    assert await db.fetchval("SELECT status FROM credit_holds") == "active"
    assert (await _balance(client, key))["available"] == "5.000000"
    assert (await client.get(f"{RES}/{rid}", headers=auth(key))).json()["status"] == "expired"
    released = await client.post(f"{RES}/{rid}/release", headers=auth(key))
    assert released.json()["status"] == "expired"
    big = await client.post(RES, json={"amount": "5", "idempotency_key": "b"}, headers=auth(key))
    assert big.status_code == 201, big.text
    # The sweeper marks it for the record.
    assert await sweep_expired_holds(db) == 1
    assert (
        await db.fetchval("SELECT status FROM credit_holds WHERE reservation_id = $1", rid)
        == "expired"
    )


async def _reserve_many(
    client: httpx.AsyncClient, key: str, n: int, prefix: str
) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(
                client.post(
                    RES, json={"amount": "1", "idempotency_key": f"{prefix}-{i}"}, headers=auth(key)
                )
                for i in range(n)
            )
        )
    )


async def test_100_concurrent_reservations_on_50_available(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")  # no cap
    await allocate(db, "acme", 50_000_000)
    answers = await _reserve_many(client, key, 100, "c")
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 50 and codes.count(402) == 50, codes
    bal = await _balance(client, key)
    assert (bal["balance"], bal["available"], bal["held"]) == ("50.000000", "0.000000", "50.000000")


async def test_100_concurrent_reservations_against_a_cap_of_50(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 200_000_000)
    r = await client.post(
        "/api/v1/credits/monthly-cap", json={"monthly_cap": "50"}, headers=auth(key)
    )
    assert r.status_code == 200
    answers = await _reserve_many(client, key, 100, "cap")
    assert sum(r.status_code == 201 for r in answers) == 50
    refused = [r.json()["code"] for r in answers if r.status_code == 402]
    assert refused == ["monthly_cap_exceeded"] * 50
    bal = await _balance(client, key)
    assert (bal["available"], bal["held"]) == ("150.000000", "50.000000")


async def test_reservations_and_deductions_racing_never_over_commit(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 60_000_000)
    deductions = [
        client.post(
            "/api/v1/credits/deduct",
            json={"amount": "1", "reason": "r", "idempotency_key": f"d-{i}"},
            headers=auth(key),
        )
        for i in range(50)
    ]
    reservations = [
        client.post(RES, json={"amount": "1", "idempotency_key": f"r-{i}"}, headers=auth(key))
        for i in range(50)
    ]
    answers = await asyncio.gather(*deductions, *reservations)
    ok = sum(r.status_code in (200, 201) for r in answers)
    assert ok == 60
    assert all(r.status_code in (200, 201, 402) for r in answers)
    bal = await _balance(client, key)
    assert bal["available"] == "0.000000"
    deducted = sum(r.status_code == 200 for r in answers[:50])
    assert bal["balance"] == f"{60 - deducted}.000000"
    assert bal["held"] == f"{60 - deducted}.000000"
    await ledger_matches_balances(db)
