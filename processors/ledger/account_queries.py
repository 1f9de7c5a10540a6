"""The SQL of account and tier writes (tiers, tier changes, caps, monthly grants): small
functions, connection first, $n placeholders. Balance writes stay in queries.py."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import asyncpg


async def account_exists(conn: asyncpg.Connection, *, account_id: str) -> bool:
    """Whether the account has a row."""
    return bool(await conn.fetchval("SELECT 1 FROM user_credits WHERE account_id = $1", account_id))


async def tier_exists(conn: asyncpg.Connection, *, tier: str) -> bool:
    """Whether the tier has a row."""
    return bool(await conn.fetchval("SELECT 1 FROM tiers WHERE name = $1", tier))


async def tier_multiplier(conn: asyncpg.Connection | asyncpg.Pool, *, tier: str) -> Decimal | None:
    """The tier's price multiplier, or None when there is no such tier."""
    value: Decimal | None = await conn.fetchval(
        "SELECT price_multiplier FROM tiers WHERE name = $1", tier
    )
    return value


async def tier_default_cap(
    conn: asyncpg.Connection | asyncpg.Pool, *, tier: str
) -> tuple[bool, int | None]:
    """(whether the tier exists, its default monthly cap in micros or None)."""
    row = await conn.fetchrow(
        "SELECT default_monthly_cap_micros AS cap FROM tiers WHERE name = $1", tier
    )
    return (False, None) if row is None else (True, row["cap"])


async def lock_account_cap(conn: asyncpg.Connection, *, account_id: str) -> asyncpg.Record | None:
    """Lock the account row; its cap and its tier's default cap (cap, tier_cap), or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT u.monthly_cap_micros AS cap, t.default_monthly_cap_micros AS tier_cap"
        " FROM user_credits u JOIN tiers t ON t.name = u.tier"
        " WHERE u.account_id = $1 FOR UPDATE OF u",
        account_id,
    )
    return row


async def update_account_tier(conn: asyncpg.Connection, *, account_id: str, tier: str) -> None:
    """Move the account to the tier (the caller holds the row lock)."""
    await conn.execute(
        "UPDATE user_credits SET tier = $2, updated_at = now() WHERE account_id = $1",
        account_id,
        tier,
    )


async def upsert_tier(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    name: str,
    monthly_allocation_micros: int,
    price_multiplier: Decimal,
    default_monthly_cap_micros: int | None,
    rate_limit: str,
) -> tuple[asyncpg.Record, bool]:
    """Create or replace a tier's terms; returns (the row, created)."""
    row = await conn.fetchrow(
        "INSERT INTO tiers AS t (name, monthly_allocation_micros, price_multiplier,"
        " default_monthly_cap_micros, rate_limit) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (name) DO UPDATE SET"
        " monthly_allocation_micros = EXCLUDED.monthly_allocation_micros,"
        " price_multiplier = EXCLUDED.price_multiplier,"
        " default_monthly_cap_micros = EXCLUDED.default_monthly_cap_micros,"
        " rate_limit = EXCLUDED.rate_limit, updated_at = now()"
        " RETURNING t.*, (xmax = 0) AS created",
        name,
        monthly_allocation_micros,
        price_multiplier,
        default_monthly_cap_micros,
        rate_limit,
    )
    assert row is not None
    return row, bool(row["created"])


async def accounts_with_monthly_allocation(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(account_id, tier, monthly_allocation_micros) of every account whose tier grants one."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT u.account_id, u.tier, t.monthly_allocation_micros FROM user_credits u"
        " JOIN tiers t ON t.name = u.tier WHERE t.monthly_allocation_micros > 0"
        " ORDER BY u.account_id"
    )
    return rows


async def update_monthly_cap(
    conn: asyncpg.Connection, *, account_id: str, cap_micros: int | None
) -> None:
    """Set (or clear) the account's monthly cap (the caller holds the row lock)."""
    await conn.execute(
        "UPDATE user_credits SET monthly_cap_micros = $2, updated_at = now() WHERE account_id = $1",
        account_id,
        cap_micros,
    )


async def reset_cap_alerts(conn: asyncpg.Connection, *, account_id: str, month: date) -> None:
    """Start the month's cap-threshold alerts afresh (a new cap)."""
    await conn.execute(
        "UPDATE monthly_spend SET alerted_pct = 0 WHERE account_id = $1 AND month = $2",
        account_id,
        month,
    )
