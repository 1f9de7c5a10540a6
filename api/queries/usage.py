"""Usage statistics from the daily rollup (usage_daily), grouped by model, provider or day."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

# sum() of a BIGINT column is a numeric in Postgres: each day's row fits a BIGINT, but days and
# models added up may not (a cast back to bigint made such a read a "bigint out of range"
# error). The sums come back as Decimals and are handed on as Python ints.
SUMMED = (
    "events",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "requests",
    "cost_micros",
)
_SUMS = (
    "".join(f" sum({c}) AS {c}," for c in SUMMED).rstrip(",")
    + " FROM usage_daily WHERE account_id = $1 AND day BETWEEN $2 AND $3"
)
# One statement per grouping, spelled out whole (the grouping picks the statement, never text).
_BY = {
    "model": "SELECT model AS key," + _SUMS + " GROUP BY model ORDER BY cost_micros DESC, key",
    "provider": "SELECT provider AS key,"
    + _SUMS
    + " GROUP BY provider ORDER BY cost_micros DESC, key",
    "day": "SELECT to_char(day, 'YYYY-MM-DD') AS key," + _SUMS + " GROUP BY day ORDER BY day",
}


def summed(record: asyncpg.Record, *columns: str) -> dict[str, Any]:
    """The record as a dict, its `columns` (numeric sums, possibly past BIGINT) as ints."""
    row = dict(record)
    for column in columns:
        row[column] = int(row[column])
    return row


async def usage_stats(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: str,
    day_from: date,
    day_to: date,
    group_by: str,
) -> list[dict[str, Any]]:
    """Summed usage per group between two UTC days, inclusive (sums as ints of any size)."""
    rows = await conn.fetch(_BY[group_by], account_id, day_from, day_to)
    return [summed(r, *SUMMED) for r in rows]
