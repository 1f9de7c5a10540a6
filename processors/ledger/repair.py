"""Repair of derived state: an account's balance column from its ledger rows, its grants'
remaining amounts and overdraft from the recorded burns.

The ledger rows are the history; user_credits.balance_micros is derived from them
(invariant 2). When the two disagree, no ledger row can fix it: an adjustment moves the
balance and the sum by the same amount, so the gap stays. The honest repair recomputes the
derived value from the history, under the account's row lock, and leaves the history alone.
It reuses the ledger's own statements (lock_accounts, save_account_states, queue_alerts) so
blocked/unblocked and low-balance alerts follow as after any other balance change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from processors.ledger import queries as ledger_queries
from processors.ledger.models import LedgerPolicy, month_of
from processors.ledger.state import evaluate


@dataclass(frozen=True, slots=True)
class BalanceRepair:
    """An account whose balance column was set back to its ledger sum."""

    account_id: str
    balance_before_micros: int
    ledger_micros: int

    @property
    def changed(self) -> bool:
        """False when the balance already matched (repaired by someone else meanwhile)."""
        return self.balance_before_micros != self.ledger_micros


async def rebuild_balance(
    conn: asyncpg.Connection, *, account_id: str, policy: LedgerPolicy
) -> BalanceRepair:
    """Lock the account, recompute the sum of its ledger rows, store it as the balance."""
    month = month_of(datetime.now(UTC))
    async with conn.transaction():
        states = await ledger_queries.lock_accounts(conn, account_ids=[account_id], month=month)
        state = states[account_id]
        before = state.balance_micros
        total = await ledger_queries.ledger_sum(conn, account_id=account_id)
        if total != before:
            state.balance_micros = total
            alerts = evaluate(state, policy, month)
            await ledger_queries.save_account_states(conn, states=[state])
            await ledger_queries.queue_alerts(conn, alerts=alerts)
    return BalanceRepair(account_id, before, total)


@dataclass(frozen=True, slots=True)
class GrantRepair:
    """An account whose grants' remaining and overdraft were rebuilt from the burns."""

    account_id: str
    grants_changed: int
    overdraft_before_micros: int
    overdraft_micros: int
    consistent: bool  # False: Σ remaining < balance, no overdraft can explain it


async def rebuild_grants(conn: asyncpg.Connection, *, account_id: str) -> GrantRepair:
    """Lock the account; set each grant's remaining to amount − its burns and the overdraft to
    Σ remaining − the ledger sum (invariant 7), all derived from the recorded history."""
    month = month_of(datetime.now(UTC))
    async with conn.transaction():
        states = await ledger_queries.lock_accounts(conn, account_ids=[account_id], month=month)
        state = states[account_id]
        changed = await conn.fetch(
            "WITH b AS (SELECT grant_id, sum(amount_micros) AS burned FROM grant_burns"
            " WHERE account_id = $1 GROUP BY grant_id),"
            " d AS (SELECT g.grant_id, greatest(g.amount_micros - coalesce(b.burned, 0), 0)"
            " AS derived FROM credit_grants g LEFT JOIN b USING (grant_id)"
            " WHERE g.account_id = $1)"
            " UPDATE credit_grants g SET remaining_micros = d.derived FROM d"
            " WHERE g.grant_id = d.grant_id AND g.remaining_micros <> d.derived"
            " RETURNING g.grant_id",
            account_id,
        )
        remaining = await conn.fetchval(
            "SELECT coalesce(sum(remaining_micros), 0)::bigint FROM credit_grants"
            " WHERE account_id = $1",
            account_id,
        )
        total = await ledger_queries.ledger_sum(conn, account_id=account_id)
        before = state.overdraft_micros
        state.overdraft_micros = max(int(remaining) - total, 0)
        await conn.execute(
            "UPDATE user_credits SET overdraft_micros = $2 WHERE account_id = $1",
            account_id,
            state.overdraft_micros,
        )
    return GrantRepair(
        account_id, len(changed), before, state.overdraft_micros, int(remaining) >= total
    )
