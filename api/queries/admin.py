"""Reads (and the coupon insert) behind the admin routes: analytics, accounts, tiers, coupons."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, TypeAlias

import asyncpg

from api.queries.usage import summed

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def system_totals(conn: Conn, *, month: date) -> dict[str, Any]:
    """Accounts, blocked accounts (live: overdrawn or at the cap this month), total balance
    (an int of any size: every balance fits a BIGINT, their sum need not)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS accounts,"
        " count(*) FILTER (WHERE u.balance_micros < 0 OR (u.monthly_cap_micros IS NOT NULL"
        "   AND coalesce(m.spend_micros, 0) >= u.monthly_cap_micros)) AS blocked_accounts,"
        " coalesce(sum(u.balance_micros), 0) AS total_balance FROM user_credits u"
        " LEFT JOIN monthly_spend m ON m.account_id = u.account_id AND m.month = $1",
        month,
    )
    assert row is not None
    return summed(row, "total_balance")


async def usage_totals(conn: Conn, *, day_from: date, day_to: date) -> dict[str, Any]:
    """Spend, events and active accounts from the daily rollup, days inclusive (sums as
    ints of any size)."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(cost_micros), 0) AS spend,"
        " coalesce(sum(events), 0) AS events,"
        " count(DISTINCT account_id) AS active_accounts"
        " FROM usage_daily WHERE day BETWEEN $1 AND $2",
        day_from,
        day_to,
    )
    assert row is not None
    return summed(row, "spend", "events")


async def top_spenders(
    conn: Conn, *, day_from: date, day_to: date, limit: int
) -> list[dict[str, Any]]:
    """The accounts with the highest usage spend in the days, inclusive (sums as ints)."""
    rows = await conn.fetch(
        "SELECT account_id, sum(cost_micros) AS spend, sum(events) AS events"
        " FROM usage_daily WHERE day BETWEEN $1 AND $2"
        " GROUP BY account_id ORDER BY spend DESC, account_id LIMIT $3",
        day_from,
        day_to,
        limit,
    )
    return [summed(r, "spend", "events") for r in rows]


async def list_accounts(
    conn: Conn, *, prefix: str | None, after: str | None, limit: int
) -> list[asyncpg.Record]:
    """Accounts by id (keyset pages), optionally only those whose id starts with a prefix."""
    return list(
        await conn.fetch(
            "SELECT account_id, tier, balance_micros, created_at FROM user_credits"
            " WHERE ($1::text IS NULL OR (account_id >= $1 AND starts_with(account_id, $1)))"
            " AND ($2::text IS NULL OR account_id > $2)"
            " ORDER BY account_id LIMIT $3",
            prefix,
            after,
            limit,
        )
    )


async def account_detail(conn: Conn, *, account_id: str) -> asyncpg.Record | None:
    """What the admin view adds to the ledger's account read: BYOK presence, live key count,
    created and updated times."""
    return await conn.fetchrow(
        "SELECT u.created_at, u.updated_at,"
        " EXISTS (SELECT 1 FROM openrouter_accounts o WHERE o.account_id = u.account_id)"
        "   AS byok_configured,"
        " (SELECT count(*) FROM api_keys k WHERE k.account_id = u.account_id"
        "   AND k.revoked_at IS NULL) AS api_keys"
        " FROM user_credits u WHERE u.account_id = $1",
        account_id,
    )


async def get_tier(conn: Conn, *, name: str) -> asyncpg.Record | None:
    """One tier's row (also the defaults of an account not created yet)."""
    return await conn.fetchrow("SELECT * FROM tiers WHERE name = $1", name)


async def list_tiers(conn: Conn) -> list[asyncpg.Record]:
    """Every tier, by name."""
    return list(await conn.fetch("SELECT * FROM tiers ORDER BY name"))


async def insert_coupon(
    conn: Conn,
    *,
    code: str,
    amount_micros: int,
    max_redemptions: int,
    expires_at: datetime | None,
) -> asyncpg.Record | None:
    """Create a coupon; None when the code already exists."""
    return await conn.fetchrow(
        "INSERT INTO coupon_codes (code, amount_micros, max_redemptions, expires_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (code) DO NOTHING RETURNING *",
        code,
        amount_micros,
        max_redemptions,
        expires_at,
    )


async def list_coupons(conn: Conn, *, after: str | None, limit: int) -> list[asyncpg.Record]:
    """A page of coupons by code, after the cursor code."""
    return list(
        await conn.fetch(
            "SELECT * FROM coupon_codes WHERE $1::text IS NULL OR code > $1 ORDER BY code LIMIT $2",
            after,
            limit,
        )
    )
