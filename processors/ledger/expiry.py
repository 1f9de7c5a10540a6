"""Expiry: a grant's remainder leaves the balance through one `expiration` ledger row.

The worker's timer calls `expire_grants` (and `sweep_expired_holds`). Each account is expired
under its row lock, re-reading its grants there, so two timers (two workers) or a rerun find
nothing left to expire; the unique index on expiry burns and the ledger row's idempotency key
`expiration:grant:<id>` make a second row impossible even so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from processors.ledger import grant_queries as gq
from processors.ledger import queries
from processors.ledger.grants import GrantBook
from processors.ledger.models import LedgerPolicy, month_of
from processors.ledger.state import evaluate


@dataclass(frozen=True, slots=True)
class ExpiryResult:
    """What one expiry run wrote."""

    accounts: int
    grants: int
    expired_micros: int


def expiration_key(grant_id: int) -> str:
    """The idempotency key of a grant's expiration row."""
    return f"expiration:grant:{grant_id}"


async def expire_grants(
    pool: asyncpg.Pool,
    *,
    policy: LedgerPolicy,
    accounts_per_transaction: int = 100,
    max_accounts: int = 10_000,
) -> ExpiryResult:
    """Post one expiration row per grant past its expires_at with something left."""
    due = await gq.accounts_with_due_expiries(pool, limit=max_accounts)
    accounts = grants = micros = 0
    for i in range(0, len(due), accounts_per_transaction):
        chunk = due[i : i + accounts_per_transaction]
        async with pool.acquire() as conn:
            a, g, m = await _expire_accounts(conn, chunk, policy)
        accounts, grants, micros = accounts + a, grants + g, micros + m
    return ExpiryResult(accounts, grants, micros)


async def _expire_accounts(
    conn: asyncpg.Connection, account_ids: list[str], policy: LedgerPolicy
) -> tuple[int, int, int]:
    at = datetime.now(UTC)
    month = month_of(at)
    async with conn.transaction():
        states = await queries.lock_accounts(conn, account_ids=account_ids, month=month)
        book = await GrantBook.load(conn, account_ids=list(states), at=at)
        todo = [(states[a], g) for a in sorted(states) for g in book.due(a)]
        await gq.close_expired(conn, account_ids=sorted(states), at=at)
        if not todo:
            return 0, 0, 0
        balances = []
        for state, g in todo:
            state.balance_micros -= book.remaining(g.grant_id)
            balances.append(state.balance_micros)
        rows = await queries.insert_ledger_rows(
            conn,
            account_ids=[s.account_id for s, _ in todo],
            types=["expiration"] * len(todo),
            amounts=[-book.remaining(g.grant_id) for _, g in todo],
            balances_after=balances,
            reasons=[
                f"grant {g.grant_id} expired at {g.expires_at:%Y-%m-%dT%H:%M:%SZ}" for _, g in todo
            ],
            idempotency_keys=[expiration_key(g.grant_id) for _, g in todo],
            sources=[None] * len(todo),
            event_ids=[None] * len(todo),
            models=[None] * len(todo),
            occurred_ats=[g.expires_at for _, g in todo],
        )
        # insert_ledger_rows answers in id order, which is input order within one statement.
        micros = 0
        for row, (state, g) in zip(rows, todo, strict=True):
            micros += book.expire(state, g, row.id).amount_micros
        await book.flush(conn)
        touched = sorted({s.account_id for s, _ in todo})
        alerts = []
        for account_id in touched:
            alerts.extend(evaluate(states[account_id], policy, month))
        await queries.save_account_states(conn, states=[states[a] for a in touched])
        await queries.queue_alerts(conn, alerts=alerts)
    return len(touched), len(todo), micros
