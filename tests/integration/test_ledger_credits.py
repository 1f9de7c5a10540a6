"""post_credits: many credits in one transaction of a few statements, with post_entry's rules
(idempotency, a grant per credit repaying the overdraft first, invariants 2 and 7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from processors.ledger import (
    Credit,
    EntryResult,
    IdempotencyConflict,
    LedgerPolicy,
    RatedEvent,
    UnknownAccount,
    debit_batch,
    ensure_account,
    grant_monthly_allocations,
    post_credits,
)
from processors.ledger import accounts as ledger_accounts
from processors.pricing import PriceVersion
from schemas.event import UsageEvent
from tests.integration.ledger_helpers import balance_after_chain_consistent, grants_match_balances

POLICY = LedgerPolicy()
VERSION = PriceVersion(  # 1 micro-credit per input token
    id=None,
    model="any",
    provider=None,
    effective_from=datetime(2020, 1, 1, tzinfo=UTC),
    input_per_mtok=Decimal(1),
    cached_input_per_mtok=None,
    cache_write_per_mtok=None,
    output_per_mtok=Decimal(0),
)


async def overdraw(conn: asyncpg.Connection, account: str, micros: int) -> None:
    event = UsageEvent(
        event_id=uuid.uuid4().hex,
        account_id=account,
        occurred_at=datetime.now(UTC),
        model="any",
        input_tokens=micros,
    )
    await debit_batch(conn, [RatedEvent(event, VERSION)], policy=POLICY)


async def test_credits_repay_the_overdraft_first_and_chain_balances(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await overdraw(conn, "a", 700)  # balance -700, overdraft 700
        results = await post_credits(
            conn,
            [
                Credit("a", 500, "first", "k1"),  # repays 500 of the overdraft, grant keeps 0
                Credit("a", 1000, "second", "k2"),  # repays 200, grant keeps 800
                Credit("b", 300, "new account", None),  # created with the default tier
            ],
            policy=POLICY,
        )
    assert all(isinstance(r, EntryResult) and not r.replayed for r in results)
    rows = [r.row for r in results if isinstance(r, EntryResult)]
    assert [(r.account_id, r.amount_micros, r.balance_after_micros) for r in rows] == [
        ("a", 500, -200),
        ("a", 1000, 800),
        ("b", 300, 300),
    ]
    grants = [r.grant for r in results if isinstance(r, EntryResult)]
    assert [(g.amount_micros, g.remaining_micros) for g in grants if g] == [
        (500, 0),
        (1000, 800),
        (300, 300),
    ]
    burns = [b for r in results if isinstance(r, EntryResult) for b in r.burns]
    assert [(b.transaction_id, b.kind, b.amount_micros) for b in burns] == [
        (rows[0].id, "overdraft", 500),
        (rows[1].id, "overdraft", 200),
    ]
    state = await db.fetchrow(
        "SELECT balance_micros, overdraft_micros, blocked FROM user_credits WHERE account_id = 'a'"
    )
    assert tuple(state) == (800, 0, False)  # unblocked by the credits
    assert await db.fetchval("SELECT count(*) FROM alert_outbox WHERE kind = 'unblocked'") == 1
    await grants_match_balances(db)
    await balance_after_chain_consistent(db)


async def test_keys_replay_or_conflict_within_a_call_and_across_calls(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        first = await post_credits(
            conn,
            [
                Credit("a", 100, "r", "k"),
                Credit("a", 100, "r", "k"),  # the same credit again: a replay of the first
                Credit("a", 999, "r", "k"),  # the key with another amount: a conflict
            ],
            policy=POLICY,
        )
        again = await post_credits(conn, [Credit("a", 100, "r", "k")], policy=POLICY)
        other = await post_credits(conn, [Credit("a", 100, "other reason", "k")], policy=POLICY)
        missing = await post_credits(
            conn, [Credit("nobody", 5, "r", None)], policy=POLICY, create_accounts=False
        )
    written, replay, conflict = first
    assert isinstance(written, EntryResult) and not written.replayed
    assert isinstance(replay, EntryResult) and replay.replayed
    assert replay.row.id == written.row.id and replay.grant == written.grant
    assert isinstance(conflict, IdempotencyConflict) and conflict.original.id == written.row.id
    (replayed,) = again
    assert isinstance(replayed, EntryResult) and replayed.replayed
    assert replayed.row.id == written.row.id
    assert replayed.grant is not None and replayed.grant.grant_id == written.grant.grant_id  # type: ignore[union-attr]
    assert isinstance(other[0], IdempotencyConflict)
    assert isinstance(missing[0], UnknownAccount)
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 1
    assert (
        await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id = 'a'") == 100
    )
    await grants_match_balances(db)


async def test_refuses_a_non_positive_credit_before_writing(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        with pytest.raises(ValueError, match="positive"):
            await post_credits(
                conn, [Credit("a", 5, "r", None), Credit("a", 0, "r", None)], policy=POLICY
            )
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 0


async def test_monthly_grants_in_batches_once_per_account(
    db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_accounts, "MONTHLY_GRANT_BATCH", 2)  # 5 accounts: 3 batches
    await db.execute("UPDATE tiers SET monthly_allocation_micros = 3000000 WHERE name = 'pro'")
    async with db.acquire() as conn:
        for n in range(5):
            await ensure_account(conn, account_id=f"p{n}", tier="pro")
        await overdraw(conn, "p0", 1_000_000)
        seen: list[tuple[int, int]] = []
        month = datetime.now(UTC).date().replace(day=1)  # the ledger's months are UTC's
        done = await grant_monthly_allocations(
            conn, month=month, policy=POLICY, on_progress=lambda i, n: seen.append((i, n))
        )
        rerun = await grant_monthly_allocations(conn, month=month, policy=POLICY)
    assert (done.granted, done.already, done.granted_micros) == (5, 0, 15_000_000)
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert (rerun.granted, rerun.already) == (0, 5)
    rows = await db.fetch(
        "SELECT g.account_id, g.category, g.priority, g.remaining_micros FROM credit_grants g"
        " ORDER BY g.account_id"
    )
    assert [tuple(r) for r in rows] == [
        ("p0", "promotional", 10, 2_000_000),  # repaid the 1-credit overdraft first
        *[(f"p{n}", "promotional", 10, 3_000_000) for n in range(1, 5)],
    ]
    await grants_match_balances(db)
