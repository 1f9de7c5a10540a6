"""The SQL of coupon redemption: lock the coupon, check and record a redemption, count it."""

from __future__ import annotations

import asyncpg


async def lock_coupon(conn: asyncpg.Connection, *, code: str) -> asyncpg.Record | None:
    """Lock the coupon row (redemptions queue on it); its terms and count, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT code, amount_micros, max_redemptions, redemptions, expires_at"
        " FROM coupon_codes WHERE code = $1 FOR UPDATE",
        code,
    )
    return row


async def redeemed_by(conn: asyncpg.Connection, *, code: str, account_id: str) -> bool:
    """Whether the account has redeemed the coupon."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM coupon_redemptions WHERE code = $1 AND account_id = $2",
            code,
            account_id,
        )
    )


async def record_redemption(
    conn: asyncpg.Connection, *, code: str, account_id: str, transaction_id: int
) -> int:
    """Record the account's redemption and count it; the coupon's redemptions after it."""
    await conn.execute(
        "INSERT INTO coupon_redemptions (code, account_id, transaction_id) VALUES ($1, $2, $3)",
        code,
        account_id,
        transaction_id,
    )
    count = await conn.fetchval(
        "UPDATE coupon_codes SET redemptions = redemptions + 1 WHERE code = $1"
        " RETURNING redemptions",
        code,
    )
    return int(count)
