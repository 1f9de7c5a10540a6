"""The ledger's monthly partitions: created ahead, idempotently (migration 0009's function)."""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def ensure_partitions(
    conn: asyncpg.Connection,
    *,
    at: datetime | None = None,
    months_ahead: int | None = None,
    lock_timeout_ms: int = 2000,
) -> int:
    """Create the partitions of credit_transactions and usage_events from at's UTC month (now
    by default) to months_ahead after it (None: the SQL function's default, 2); returns how
    many were new (0 on a rerun).

    Rows of those months already in a DEFAULT partition are moved into the new partition in
    the same transaction. Attaching takes a short exclusive lock on each DEFAULT partition:
    behind a long reader it gives up after lock_timeout_ms (LockNotAvailableError) rather
    than queue every query behind it; the next call retries.
    """
    async with conn.transaction():
        await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{lock_timeout_ms}ms")
        if months_ahead is None:
            created = await conn.fetchval(
                "SELECT ensure_ledger_partitions(coalesce($1::timestamptz, now()))", at
            )
        else:
            created = await conn.fetchval(
                "SELECT ensure_ledger_partitions(coalesce($1::timestamptz, now()), $2)",
                at,
                months_ahead,
            )
    return int(created)


async def partition_months(conn: asyncpg.Connection | asyncpg.Pool, *, table: str) -> list[str]:
    """The names of a ledger table's partitions, in name order (`<table>_y2026m11`, …)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass"
        " ORDER BY c.relname",
        table,
    )
    return [r["relname"] for r in rows]
