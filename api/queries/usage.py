"""Usage statistics from the daily rollup (usage_daily), grouped by model, provider or day."""

from __future__ import annotations

from datetime import date

import asyncpg

_SUMS = (
    " sum(events)::bigint AS events, sum(input_tokens)::bigint AS input_tokens,"
    " sum(cached_input_tokens)::bigint AS cached_input_tokens,"
    " sum(cache_write_tokens)::bigint AS cache_write_tokens,"
    " sum(output_tokens)::bigint AS output_tokens,"
    " sum(reasoning_tokens)::bigint AS reasoning_tokens,"
    " sum(requests)::bigint AS requests, sum(cost_micros)::bigint AS cost_micros"
    " FROM usage_daily WHERE account_id = $1 AND day BETWEEN $2 AND $3"
)
# One statement per grouping, spelled out whole (the grouping picks the statement, never text).
_BY = {
    "model": "SELECT model AS key," + _SUMS + " GROUP BY model ORDER BY cost_micros DESC, key",
    "provider": "SELECT provider AS key,"
    + _SUMS
    + " GROUP BY provider ORDER BY cost_micros DESC, key",
    "day": "SELECT to_char(day, 'YYYY-MM-DD') AS key," + _SUMS + " GROUP BY day ORDER BY day",
}


async def usage_stats(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: str,
    day_from: date,
    day_to: date,
    group_by: str,
) -> list[asyncpg.Record]:
    """Summed usage per group between two UTC days, inclusive."""
    return list(await conn.fetch(_BY[group_by], account_id, day_from, day_to))
