"""Account-level writes: creating an account, its tier, tier terms, and the monthly grant
(which is a balance change, so it goes through post_entry like every other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg

from processors.ledger import queries
from processors.ledger.entries import post_entry, set_monthly_cap
from processors.ledger.models import (
    IdempotencyConflict,
    LedgerError,
    LedgerPolicy,
    UnknownAccount,
)


class UnknownTier(LedgerError):
    """A tier name that is not in the tiers table (a 422 naming body.tier)."""

    code = "unknown_tier"
    status = 422

    def __init__(self, tier: str) -> None:
        self.tier = tier
        message = f"tier {tier!r} does not exist; create it first or pick an existing one"
        super().__init__(
            message,
            tier=tier,
            errors=[{"field": "body.tier", "rule": "unknown_tier", "message": message}],
        )


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


async def set_account_tier(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    tier: str,
    policy: LedgerPolicy | None = None,
) -> None:
    """Move an account to another tier (its multiplier and rate limit follow the tier).

    A monthly cap the account set itself is kept (a cap is the customer's choice); a cap that
    is still the old tier's default follows the new tier's default, and the blocked state and
    alerts are re-evaluated as for any cap change.
    """
    async with conn.transaction():
        new_default = await conn.fetchrow(
            "SELECT default_monthly_cap_micros AS cap FROM tiers WHERE name = $1", tier
        )
        if new_default is None:
            raise UnknownTier(tier)
        old = await conn.fetchrow(
            "SELECT u.monthly_cap_micros AS cap, t.default_monthly_cap_micros AS tier_cap"
            " FROM user_credits u JOIN tiers t ON t.name = u.tier"
            " WHERE u.account_id = $1 FOR UPDATE OF u",
            account_id,
        )
        if old is None:
            raise UnknownAccount(account_id)
        await conn.execute(
            "UPDATE user_credits SET tier = $2, updated_at = now() WHERE account_id = $1",
            account_id,
            tier,
        )
        if old["cap"] == old["tier_cap"] and old["cap"] != new_default["cap"]:
            await set_monthly_cap(
                conn,
                account_id=account_id,
                cap_micros=new_default["cap"],
                policy=policy or LedgerPolicy(),
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


@dataclass(frozen=True, slots=True)
class MonthlyGrant:
    """What grant_monthly_allocations did."""

    month: str
    granted: int
    already: int
    granted_micros: int


async def grant_monthly_allocations(
    conn: asyncpg.Connection,
    *,
    month: date,
    policy: LedgerPolicy,
    on_progress: Callable[[int, int], None] | None = None,
) -> MonthlyGrant:
    """Give every account its tier's monthly_allocation for `month`, at most once.

    The idempotency key `monthly:<YYYY-MM>` makes reruns no-ops: an account already granted
    (even an amount since changed on its tier) is counted as `already`, not granted twice.
    """
    label = f"{month.year:04d}-{month.month:02d}"
    key = f"monthly:{label}"
    rows = await conn.fetch(
        "SELECT u.account_id, u.tier, t.monthly_allocation_micros FROM user_credits u"
        " JOIN tiers t ON t.name = u.tier WHERE t.monthly_allocation_micros > 0"
        " ORDER BY u.account_id"
    )
    granted = already = granted_micros = 0
    for i, r in enumerate(rows, 1):
        try:
            result = await post_entry(
                conn,
                account_id=r["account_id"],
                type="allocation",
                amount_micros=r["monthly_allocation_micros"],
                reason=f"monthly {r['tier']} allocation {label}",
                idempotency_key=key,
                policy=policy,
                create_account=False,
            )
        except IdempotencyConflict:
            already += 1  # granted before, under other terms (the tier changed since)
        else:
            if result.replayed:
                already += 1
            else:
                granted += 1
                granted_micros += r["monthly_allocation_micros"]
        if on_progress is not None:
            on_progress(i, len(rows))
    return MonthlyGrant(label, granted, already, granted_micros)
