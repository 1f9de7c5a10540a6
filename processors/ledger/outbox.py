"""Publish the alert outbox to credit.alerts: at least once, in order, none lost on a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from processors.ledger import queries

# send(key, value) must return once the broker has acknowledged the record.
Send = Callable[[bytes, bytes], Awaitable[None]]


async def publish_pending_alerts(pool: asyncpg.Pool, send: Send, *, limit: int = 500) -> int:
    """Publish up to `limit` pending alerts, then mark them; returns how many were published.

    The rows stay locked (SKIP LOCKED for other publishers) until every send is acknowledged;
    a crash before the mark republishes them: consumers see an alert at least once.
    """
    async with pool.acquire() as conn, conn.transaction():
        pending = await queries.claim_pending_alerts(conn, limit=limit)
        # One account's alerts keep their order: the producer preserves per-partition order
        # for sends issued in sequence, and all of an account's alerts share its key.
        await asyncio.gather(
            *(send(account_id.encode(), payload.encode()) for _, account_id, payload in pending)
        )
        if pending:
            await queries.mark_alerts_published(conn, ids=[i for i, _, _ in pending])
    return len(pending)


async def count_pending_alerts(pool: asyncpg.Pool) -> int:
    """Alerts queued in the outbox and not yet published (the backlog an operator watches)."""
    async with pool.acquire() as conn:
        n = await conn.fetchval("SELECT count(*) FROM alert_outbox WHERE published_at IS NULL")
    return int(n or 0)
