"""Helpers of every test that writes the ledger: an allocation through it, and invariant 2."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from processors.ledger import LedgerPolicy, post_entry
from processors.pricing import PriceVersion

POLICY = LedgerPolicy()
# 1 micro-credit per input token: an event's input_tokens is its cost in micros.
COST_IS_INPUT = PriceVersion(
    id=None,
    model="any",
    provider=None,
    effective_from=datetime(2020, 1, 1, tzinfo=UTC),
    input_per_mtok=Decimal(1),
    cached_input_per_mtok=None,
    cache_write_per_mtok=None,
    output_per_mtok=Decimal(0),
)


async def allocate(
    db: asyncpg.Pool | asyncpg.Connection,
    account_id: str,
    micros: int,
    key: str | None = None,
    *,
    reason: str | None = "test grant",
    policy: LedgerPolicy = POLICY,
    now: datetime | None = None,
) -> None:
    """Credit an account through the ledger (as the admin route does); `now`: the ledger's
    clock (default: the real one)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            await allocate(conn, account_id, micros, key, reason=reason, policy=policy, now=now)
        return
    await post_entry(
        db,
        account_id=account_id,
        type="allocation",
        amount_micros=micros,
        reason=reason,
        idempotency_key=key,
        policy=policy,
        now=now,
    )


async def ledger_matches_balances(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """Invariant 2: every balance is the sum of its ledger rows."""
    bad = await db.fetch(
        "SELECT u.account_id, u.balance_micros, coalesce(sum(t.amount_micros), 0) AS total"
        " FROM user_credits u LEFT JOIN credit_transactions t USING (account_id)"
        " GROUP BY u.account_id, u.balance_micros"
        " HAVING u.balance_micros <> coalesce(sum(t.amount_micros), 0)"
    )
    assert [tuple(r) for r in bad] == []


async def balance_after_chain_consistent(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """Every row's balance_after is the running sum of its account's rows, in ledger order."""
    bad = await db.fetch(
        "SELECT account_id, id, balance_after_micros, running FROM ("
        " SELECT account_id, id, balance_after_micros,"
        "  sum(amount_micros) OVER (PARTITION BY account_id ORDER BY id) AS running"
        " FROM credit_transactions) t WHERE balance_after_micros <> running LIMIT 5"
    )
    assert [tuple(r) for r in bad] == []


async def grants_match_balances(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """Invariant 7: remaining = amount − burns, balance = Σ remaining − overdraft = Σ ledger."""
    bad_grants = await db.fetch(
        "SELECT g.grant_id, g.amount_micros, g.remaining_micros,"
        " coalesce(sum(b.amount_micros), 0) AS burned FROM credit_grants g"
        " LEFT JOIN grant_burns b USING (grant_id) GROUP BY g.grant_id"
        " HAVING g.remaining_micros <> g.amount_micros - coalesce(sum(b.amount_micros), 0)"
    )
    assert [tuple(r) for r in bad_grants] == []
    bad_accounts = await db.fetch(
        "SELECT u.account_id, u.balance_micros, u.overdraft_micros,"
        " (SELECT coalesce(sum(remaining_micros), 0) FROM credit_grants g"
        "  WHERE g.account_id = u.account_id) AS remaining"
        " FROM user_credits u WHERE u.balance_micros <> (SELECT coalesce(sum(remaining_micros), 0)"
        " FROM credit_grants g WHERE g.account_id = u.account_id) - u.overdraft_micros"
    )
    assert [tuple(r) for r in bad_accounts] == []
    assert await db.fetchval("SELECT count(*) FROM credit_grants WHERE remaining_micros < 0") == 0
    await ledger_matches_balances(db)
