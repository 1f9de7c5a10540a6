"""Grant reads for the user routes: keyset pages of an account's grants, newest first."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from processors.ledger import Grant
from processors.ledger.grant_queries import grant_of

_PAGE = (
    "SELECT grant_id, account_id, category, amount_micros, remaining_micros, priority,"
    " effective_at, expires_at, applies_to, transaction_id, reason, created_at"
    " FROM credit_grants WHERE account_id = $1 AND ($2::bigint IS NULL OR grant_id < $2)"
    " AND (NOT $3 OR (remaining_micros > 0 AND (expires_at IS NULL OR expires_at > $5)))"
    " ORDER BY grant_id DESC LIMIT $4"
)


async def page_grants(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: str,
    before_id: int | None,
    open_only: bool,
    limit: int,
    at: datetime,
) -> list[Grant]:
    """Up to `limit` grants with grant_id < before_id (all when None), newest first; with
    open_only, those with something left and unexpired at `at`."""
    rows = await conn.fetch(_PAGE, account_id, before_id, open_only, limit, at)
    return [grant_of(r) for r in rows]
