"""Balance, deduct, monthly cap and authorize against the real database."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import allocate, ledger_matches_balances

BAL = "/api/v1/credits/balance"
DEDUCT = "/api/v1/credits/deduct"
CAP = "/api/v1/credits/monthly-cap"
AUTHZ = "/api/v1/credits/authorize"


async def test_balance_of_a_funded_account(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="free")
    await allocate(db, "acme", 12_500_000)
    r = await client.get(BAL, headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "account_id": "acme",
        "balance": "12.500000",
        "available": "12.500000",
        "held": "0.000000",
        "monthly_spend": "0.000000",
        "monthly_cap": "5.000000",  # the free tier's default cap
        "cap_remaining": "5.000000",
        "tier": "free",
        "blocked": False,
        "blocked_reason": None,
    }


async def test_balance_of_an_account_the_ledger_never_saw_is_zero_on_the_default_tier(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("ghost", create_account=False)
    r = await client.get(BAL, headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["balance"], body["tier"], body["monthly_cap"], body["blocked"]) == (
        "0.000000",
        "free",
        "5.000000",
        False,
    )
    # Reading created nothing.
    assert await db.fetchval("SELECT count(*) FROM user_credits WHERE account_id = 'ghost'") == 0


async def test_admin_reads_any_account_and_must_name_one(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    await allocate(db, "acme", 3_000_000)
    r = await client.get(BAL, params={"account_id": "acme"}, headers=auth(admin_key))
    assert r.status_code == 200 and r.json()["balance"] == "3.000000"
    assert_problem(await client.get(BAL, headers=auth(admin_key)), 422, "validation_error")


async def test_balance_needs_a_key(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(BAL), 401, "unauthorized")


async def test_deduct_writes_a_row_and_answers_the_new_balance(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    body = {"amount": "1.5", "reason": "image generation", "idempotency_key": "k1"}
    r = await client.post(DEDUCT, json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["balance"] == "8.500000"
    assert out["replayed"] is False
    assert "Idempotent-Replayed" not in r.headers
    row = out["transaction"]
    assert (row["type"], row["amount"], row["balance_after"], row["reason"]) == (
        "deduction",
        "-1.500000",
        "8.500000",
        "image generation",
    )
    assert row["idempotency_key"] == "k1" and row["account_id"] == "acme"
    # The balance and the month's spend moved.
    bal = (await client.get(BAL, headers=auth(key))).json()
    assert (bal["balance"], bal["monthly_spend"]) == ("8.500000", "1.500000")
    await ledger_matches_balances(db)


async def test_deduct_replay_answers_the_original_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    body = {"amount": 2, "reason": "batch job", "idempotency_key": "same"}
    first = await client.post(DEDUCT, json=body, headers=auth(key))
    # Another deduction in between: the replay still answers the original balance.
    between = await client.post(
        DEDUCT, json={"amount": "1", "reason": "x", "idempotency_key": "other"}, headers=auth(key)
    )
    assert between.status_code == 200, between.text
    again = await client.post(DEDUCT, json=body, headers=auth(key))
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["replayed"] is True
    assert again.json()["transaction"] == first.json()["transaction"]
    assert again.json()["balance"] == first.json()["balance"] == "8.000000"
    n = await db.fetchval("SELECT count(*) FROM credit_transactions WHERE type = 'deduction'")
    assert n == 2
    assert (await client.get(BAL, headers=auth(key))).json()["balance"] == "7.000000"


async def test_deduct_same_key_other_body_is_409(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    ok = await client.post(
        DEDUCT, json={"amount": "1", "reason": "r", "idempotency_key": "k"}, headers=auth(key)
    )
    assert ok.status_code == 200
    for other in ({"amount": "2", "reason": "r"}, {"amount": "1", "reason": "changed"}):
        r = await client.post(DEDUCT, json={**other, "idempotency_key": "k"}, headers=auth(key))
        body = assert_problem(r, 409, "idempotency_conflict")
        assert body["original_transaction_id"] == ok.json()["transaction"]["id"]
    assert (await client.get(BAL, headers=auth(key))).json()["balance"] == "9.000000"


async def test_deduct_that_would_overdraw_is_402_insufficient_credit(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 1_000_000)
    r = await client.post(
        DEDUCT,
        json={"amount": "1.000001", "reason": "r", "idempotency_key": "k"},
        headers=auth(key),
    )
    body = assert_problem(r, 402, "insufficient_credit")
    assert body["balance"] == "1.000000" and body["amount"] == "1.000001"
    assert (await client.get(BAL, headers=auth(key))).json()["balance"] == "1.000000"
    # Exactly the balance is fine.
    r = await client.post(
        DEDUCT, json={"amount": "1", "reason": "r", "idempotency_key": "k2"}, headers=auth(key)
    )
    assert r.status_code == 200 and r.json()["balance"] == "0.000000"


async def test_deduct_past_the_monthly_cap_is_402_monthly_cap_exceeded(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="free")  # cap 5 credits
    await allocate(db, "acme", 100_000_000)
    ok = await client.post(
        DEDUCT, json={"amount": "4", "reason": "r", "idempotency_key": "a"}, headers=auth(key)
    )
    assert ok.status_code == 200
    r = await client.post(
        DEDUCT, json={"amount": "1.5", "reason": "r", "idempotency_key": "b"}, headers=auth(key)
    )
    body = assert_problem(r, 402, "monthly_cap_exceeded")
    assert body["cap_remaining"] == "1.000000"


@pytest.mark.parametrize(
    ("amount", "needle"),
    [
        (1.5, "float"),
        ("1.0000001", "6 decimal places"),
        ("0", "greater than 0"),
        ("-3", "greater than 0"),
        ("1e3", "plain decimal"),
        ("NaN", "plain decimal"),
        (" 1", "plain decimal"),
        (True, "boolean"),
        ("1234567890123", "12 digits"),
        (None, "decimal string"),
    ],
)
async def test_deduct_refuses_bad_amounts_naming_the_field_and_rule(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory, amount: object, needle: str
) -> None:
    key = await user_key_for("acme", tier="pro")
    r = await client.post(
        DEDUCT, json={"amount": amount, "reason": "r", "idempotency_key": "k"}, headers=auth(key)
    )
    body = assert_problem(r, 422, "validation_error")
    err = body["errors"][0]
    assert err["field"] == "body.amount", body
    assert needle in err["message"], body


async def test_deduct_requires_reason_and_idempotency_key(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    body = assert_problem(await client.post(DEDUCT, json={"amount": "1"}, headers=auth(key)), 422)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"body.reason", "body.idempotency_key"}
    body = assert_problem(
        await client.post(
            DEDUCT,
            json={"amount": "1", "reason": "r", "idempotency_key": "k", "x": 1},
            headers=auth(key),
        ),
        422,
    )
    assert body["errors"][0]["field"] == "body.x"


async def test_100_concurrent_deductions_with_credit_for_50(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("hot", tier="pro")  # pro: no monthly cap
    await allocate(db, "hot", 50 * 250_000)

    async def one(i: int) -> int:
        r = await client.post(
            DEDUCT,
            json={"amount": "0.25", "reason": "burst", "idempotency_key": f"b{i}"},
            headers=auth(key),
        )
        assert r.status_code in (200, 402), r.text
        if r.status_code == 402:
            assert r.json()["code"] == "insufficient_credit"
        return r.status_code

    codes = await asyncio.gather(*(one(i) for i in range(100)))
    assert codes.count(200) == 50 and codes.count(402) == 50
    assert await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id='hot'") == 0
    n = await db.fetchval("SELECT count(*) FROM credit_transactions WHERE type = 'deduction'")
    assert n == 50
    await ledger_matches_balances(db)


# ---- monthly cap ----------------------------------------------------------------------------


async def test_monthly_cap_get_set_and_remove(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="free")
    r = await client.get(CAP, headers=auth(key))
    assert r.status_code == 200 and r.json()["monthly_cap"] == "5.000000"
    r = await client.post(CAP, json={"monthly_cap": "12.25"}, headers=auth(key))
    assert r.status_code == 200, r.text
    assert (r.json()["monthly_cap"], r.json()["cap_remaining"]) == ("12.250000", "12.250000")
    r = await client.post(CAP, json={"monthly_cap": 7}, headers=auth(key))
    assert r.json()["monthly_cap"] == "7.000000"
    r = await client.post(CAP, json={"monthly_cap": None}, headers=auth(key))
    assert r.status_code == 200
    assert (r.json()["monthly_cap"], r.json()["cap_remaining"]) == (None, None)
    stored = await db.fetchval(
        "SELECT monthly_cap_micros FROM user_credits WHERE account_id='acme'"
    )
    assert stored is None


@pytest.mark.parametrize(
    "body",
    [
        {"monthly_cap": "0"},
        {"monthly_cap": "-5"},
        {"monthly_cap": 2.5},
        {"monthly_cap": "abc"},
        {"monthly_cap": "1.1234567"},
        {},
        {"monthly_cap": []},
    ],
)
async def test_monthly_cap_refuses_anything_but_a_positive_amount_or_null(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory, body: dict[str, object]
) -> None:
    key = await user_key_for("acme", tier="free")
    problem = assert_problem(await client.post(CAP, json=body, headers=auth(key)), 422)
    assert problem["errors"][0]["field"].startswith("body.monthly_cap"), problem


async def test_lowering_the_cap_below_spend_blocks_and_raising_it_unblocks(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    spent = await client.post(
        DEDUCT, json={"amount": "3", "reason": "r", "idempotency_key": "k"}, headers=auth(key)
    )
    assert spent.status_code == 200, spent.text
    r = await client.post(CAP, json={"monthly_cap": "2"}, headers=auth(key))
    assert (r.json()["blocked"], r.json()["blocked_reason"]) == (True, "monthly_cap_reached")
    assert r.json()["cap_remaining"] == "0.000000"
    a = (await client.post(AUTHZ, json={"estimated_cost": "0"}, headers=auth(key))).json()
    assert (a["allowed"], a["reason"]) == (False, "blocked")
    r = await client.post(CAP, json={"monthly_cap": "10"}, headers=auth(key))
    assert r.json()["blocked"] is False


# ---- authorize ------------------------------------------------------------------------------


async def test_authorize_reasons(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="free")  # cap 5
    await allocate(db, "acme", 4_000_000)

    async def ask(cost: object) -> dict[str, object]:
        r = await client.post(AUTHZ, json={"estimated_cost": cost}, headers=auth(key))
        assert r.status_code == 200, r.text
        return dict(r.json())

    assert await ask("0.25") == {
        "allowed": True,
        "reason": "ok",
        "balance": "4.000000",
        "cap_remaining": "5.000000",
        "available": "4.000000",
        "held": "0.000000",
    }
    assert await ask("4") == {
        "allowed": True,
        "reason": "ok",
        "balance": "4.000000",
        "cap_remaining": "5.000000",
        "available": "4.000000",
        "held": "0.000000",
    }
    out = await ask("4.000001")
    assert (out["allowed"], out["reason"]) == (False, "insufficient_balance")
    await allocate(db, "acme", 10_000_000)
    out = await ask("5.5")
    assert (out["allowed"], out["reason"]) == (False, "monthly_cap")
    assert (await ask(5))["allowed"] is True


async def test_authorize_says_blocked_when_usage_overdrew_the_account(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    # Streamed usage is a fact: an adjustment without limits can take the balance below 0.
    async with db.acquire() as conn:
        from processors.ledger import post_entry
        from tests.integration.api.credits_helpers import POLICY

        await post_entry(
            conn,
            account_id="acme",
            type="adjustment",
            amount_micros=-1,
            reason="correction",
            idempotency_key=None,
            policy=POLICY,
        )
    r = await client.post(AUTHZ, json={"estimated_cost": "0"}, headers=auth(key))
    assert r.json() == {
        "allowed": False,
        "reason": "blocked",
        "balance": "-0.000001",
        "cap_remaining": None,
        "available": "-0.000001",
        "held": "0.000000",
    }
    bal = (await client.get(BAL, headers=auth(key))).json()
    assert (bal["blocked"], bal["blocked_reason"]) == (True, "balance_overdrawn")


async def test_authorize_refuses_negative_and_float_estimates(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    for bad in ("-0.1", 0.1, "x"):
        body = assert_problem(
            await client.post(AUTHZ, json={"estimated_cost": bad}, headers=auth(key)), 422
        )
        assert body["errors"][0]["field"] == "body.estimated_cost"
