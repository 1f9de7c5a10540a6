"""The balance as it stood at a past time, read from the ledger (and the holds' history)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class BalanceAt:
    """Balance, the month's spend and the held amount as they stood at a time."""

    balance_micros: int
    monthly_spend_micros: int
    held_micros: int


async def balance_at(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, at: datetime, month: date
) -> BalanceAt:
    """The last ledger row at or before `at` (its balance_after), the spend of at's UTC month
    up to `at` (by when debits were recorded), and the holds active at `at`."""
    r = await conn.fetchrow(
        "SELECT"
        " (SELECT balance_after_micros FROM credit_transactions"
        "  WHERE account_id = $1 AND created_at <= $2 ORDER BY id DESC LIMIT 1) AS balance,"
        " (SELECT coalesce(-sum(amount_micros), 0)::bigint FROM credit_transactions"
        "  WHERE account_id = $1 AND type IN ('usage', 'deduction') AND amount_micros < 0"
        "  AND created_at >= $3 AND created_at <= $2) AS spend,"
        " (SELECT coalesce(sum(amount_micros), 0)::bigint FROM credit_holds"
        "  WHERE account_id = $1 AND created_at <= $2 AND expires_at > $2"
        "  AND (closed_at IS NULL OR closed_at > $2)) AS held",
        account_id,
        at,
        datetime(month.year, month.month, 1, tzinfo=UTC),
    )
    assert r is not None
    return BalanceAt(r["balance"] or 0, r["spend"], r["held"])
