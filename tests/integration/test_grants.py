"""Grants in the ledger: burn order, applicability, overdraft repaid by the next grant, and
expiry posting exactly one row however many runs race (invariant 7)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from processors.ledger import (
    CapExceeded,
    GrantTerms,
    InsufficientCredit,
    LedgerPolicy,
    RatedEvent,
    debit_batch,
    expire_grants,
    post_entry,
    read_account,
    reserve,
)
from schemas.event import UsageEvent
from tests.integration.ledger_helpers import COST_IS_INPUT, grants_match_balances

POLICY = LedgerPolicy()
VERSION = COST_IS_INPUT


async def grant(
    db: asyncpg.Pool, account: str, micros: int, terms: GrantTerms | None = None
) -> int:
    """A credit through the ledger; returns its grant_id."""
    async with db.acquire() as conn:
        result = await post_entry(
            conn,
            account_id=account,
            type="allocation",
            amount_micros=micros,
            reason="test",
            idempotency_key=None,
            policy=POLICY,
            grant=terms,
        )
    assert result.grant is not None
    return result.grant.grant_id


async def stream(db: asyncpg.Pool, account: str, *costs: tuple[str, int]) -> None:
    """Usage events (model, cost in micros) debited in one batch."""
    now = datetime.now(UTC)
    events = [
        RatedEvent(
            UsageEvent(
                event_id=uuid.uuid4().hex,
                account_id=account,
                occurred_at=now,
                model=model,
                input_tokens=cost,
            ),
            VERSION,
        )
        for model, cost in costs
    ]
    async with db.acquire() as conn:
        await debit_batch(conn, events, policy=POLICY)


async def remaining(db: asyncpg.Pool) -> dict[int, int]:
    return dict(await db.fetch("SELECT grant_id, remaining_micros FROM credit_grants"))


async def test_promotional_by_priority_then_soonest_expiry_then_paid(db: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    paid = await grant(db, "acme", 10_000)  # paid, priority 50, never expires
    later = await grant(
        db, "acme", 1_000, GrantTerms("promotional", 10, expires_at=now + timedelta(days=20))
    )
    sooner = await grant(
        db, "acme", 1_000, GrantTerms("promotional", 10, expires_at=now + timedelta(days=2))
    )
    never = await grant(db, "acme", 1_000, GrantTerms("promotional", 10))
    first = await grant(db, "acme", 500, GrantTerms("promotional", 5))
    await stream(db, "acme", ("m", 400), ("m", 1_200))
    assert await remaining(db) == {paid: 10_000, later: 900, sooner: 0, never: 1_000, first: 0}
    await stream(db, "acme", ("m", 2_500))
    assert await remaining(db) == {paid: 9_400, later: 0, sooner: 0, never: 0, first: 0}
    # Which grants paid each debit is recorded.
    rows = await db.fetch(
        "SELECT t.id, b.grant_id, b.amount_micros FROM credit_transactions t"
        " JOIN grant_burns b ON b.transaction_id = t.id WHERE t.type = 'usage' ORDER BY t.id"
    )
    paid_by: dict[int, set[tuple[int, int]]] = {}
    for r in rows:
        paid_by.setdefault(r["id"], set()).add((r["grant_id"], r["amount_micros"]))
    assert list(paid_by.values()) == [
        {(first, 400)},
        {(first, 100), (sooner, 1_000), (later, 100)},
        {(later, 900), (never, 1_000), (paid, 600)},
    ]
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == 13_500 - 4_100
    await grants_match_balances(db)


async def test_applicability_and_overdraft_repaid_by_the_next_grant(db: asyncpg.Pool) -> None:
    claude = await grant(db, "acme", 5_000, GrantTerms(applies_to=("anthropic/",)))
    anyuse = await grant(db, "acme", 1_000)
    # An OpenAI event does not burn anthropic/ credit; what no grant covers is overdraft.
    await stream(db, "acme", ("openai/gpt-4o", 3_000))
    assert await remaining(db) == {claude: 5_000, anyuse: 0}
    assert await db.fetchval("SELECT overdraft_micros FROM user_credits") == 2_000
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == 3_000
    await grants_match_balances(db)
    await stream(db, "acme", ("anthropic/claude-sonnet-4-5", 1_500))
    assert (await remaining(db))[claude] == 3_500
    # The next grant repays the overdraft first.
    nxt = await grant(db, "acme", 2_500)
    assert (await remaining(db))[nxt] == 500
    assert await db.fetchval("SELECT overdraft_micros FROM user_credits") == 0
    burn = await db.fetchrow("SELECT kind, amount_micros FROM grant_burns WHERE grant_id = $1", nxt)
    assert tuple(burn) == ("overdraft", 2_000)
    await grants_match_balances(db)


async def test_a_deduction_without_a_model_burns_only_grants_for_any_usage(
    db: asyncpg.Pool,
) -> None:
    only = await grant(db, "acme", 5_000, GrantTerms(applies_to=("openai/",)))
    anyuse = await grant(db, "acme", 1_000)
    async with db.acquire() as conn:
        result = await post_entry(
            conn,
            account_id="acme",
            type="deduction",
            amount_micros=-1_500,
            reason="r",
            idempotency_key="d",
            policy=POLICY,
            enforce_limits=True,
        )
    assert [(b.grant_id, b.amount_micros) for b in result.burns] == [(anyuse, 1_000)]
    assert await remaining(db) == {only: 5_000, anyuse: 0}
    assert await db.fetchval("SELECT overdraft_micros FROM user_credits") == 500
    await grants_match_balances(db)


async def test_expiry_posts_one_row_however_many_runs_race(db: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    past = GrantTerms(
        "promotional",
        10,
        effective_at=now - timedelta(hours=2),
        expires_at=now - timedelta(hours=1),
    )
    gone = await grant(db, "acme", 4_000, past)
    keep = await grant(db, "acme", 1_000)
    bobs = await grant(db, "bob", 2_000, past)
    results = await asyncio.gather(*(expire_grants(db, policy=POLICY) for _ in range(3)))
    assert sum(r.grants for r in results) == 2
    assert sum(r.expired_micros for r in results) == 6_000
    rerun = await expire_grants(db, policy=POLICY)
    assert (rerun.grants, rerun.expired_micros) == (0, 0)
    rows = await db.fetch(
        "SELECT account_id, amount_micros, balance_after_micros, idempotency_key"
        " FROM credit_transactions WHERE type = 'expiration' ORDER BY account_id"
    )
    assert [tuple(r) for r in rows] == [
        ("acme", -4_000, 1_000, f"expiration:grant:{gone}"),
        ("bob", -2_000, 0, f"expiration:grant:{bobs}"),
    ]
    assert (await remaining(db))[keep] == 1_000
    await grants_match_balances(db)


async def test_reservations_racing_a_streamed_debit_and_deductions_never_over_commit(
    db: asyncpg.Pool,
) -> None:
    """60 reservations and 60 deductions of 1 race a usage batch of 20 on a balance of 100.

    Whatever the order, the reservations and deductions see each other (at most 100 of the 120
    succeed, not 60 + 60) and the batch's 20 (at least 80 succeed: all that fits after it),
    and available = balance − holds at the end.
    """
    await grant(db, "acme", 100)

    async def one(kind: str, i: int) -> bool:
        async with db.acquire() as conn:
            try:
                if kind == "reserve":
                    await reserve(
                        conn,
                        account_id="acme",
                        amount_micros=1,
                        ttl_seconds=300,
                        idempotency_key=f"r{i}",
                        request_hash=b"h",
                        metadata=None,
                    )
                else:
                    await post_entry(
                        conn,
                        account_id="acme",
                        type="deduction",
                        amount_micros=-1,
                        reason="d",
                        idempotency_key=f"d{i}",
                        policy=POLICY,
                        enforce_limits=True,
                    )
            except (InsufficientCredit, CapExceeded):
                return False
            return True

    tasks = [one("reserve", i) for i in range(60)] + [one("deduct", i) for i in range(60)]
    answers = await asyncio.gather(*tasks[:60], stream(db, "acme", *[("m", 1)] * 20), *tasks[60:])
    ok = [a for a in answers if a is True]
    assert 80 <= len(ok) <= 100
    deducted = sum(1 for a in answers[61:] if a is True)
    held = sum(1 for a in answers[:60] if a is True)
    async with db.acquire() as conn:
        state = await read_account(conn, account_id="acme")
    assert state is not None
    assert state.balance_micros == 100 - 20 - deducted
    assert state.held_micros == held
    assert state.available_micros == 100 - 20 - len(ok) >= -20
    await grants_match_balances(db)
