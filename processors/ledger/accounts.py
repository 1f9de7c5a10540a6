"""Account-level writes that are not balance changes: creating an account, setting its tier."""

from __future__ import annotations

import asyncpg

from processors.ledger import queries
from processors.ledger.models import UnknownAccount


class UnknownTier(ValueError):
    """A tier name that is not in the tiers table."""

    code = "unknown_tier"

    def __init__(self, tier: str) -> None:
        self.tier = tier
        super().__init__(f"tier {tier!r} does not exist; create it first or pick an existing one")


async def ensure_account(conn: asyncpg.Connection, *, account_id: str, tier: str) -> bool:
    """Create the account (zero balance, the tier's default cap) unless it exists; True if new."""
    async with conn.transaction():
        existed = await conn.fetchval(
            "SELECT 1 FROM user_credits WHERE account_id = $1", account_id
        )
        if existed:
            return False
        if not await conn.fetchval("SELECT 1 FROM tiers WHERE name = $1", tier):
            raise UnknownTier(tier)
        await queries.ensure_accounts(conn, account_ids=[account_id], tier=tier)
    return True


async def set_account_tier(conn: asyncpg.Connection, *, account_id: str, tier: str) -> None:
    """Move an account to another tier (its cap, multiplier and rate limit follow the tier).

    The account's own monthly cap is kept: a cap is the customer's choice, the tier's default
    cap only applies when the account is created.
    """
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM tiers WHERE name = $1", tier):
            raise UnknownTier(tier)
        status: str = await conn.execute(
            "UPDATE user_credits SET tier = $2, updated_at = now() WHERE account_id = $1",
            account_id,
            tier,
        )
        if status.endswith(" 0"):
            raise UnknownAccount(account_id)
