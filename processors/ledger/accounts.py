"""Account-level writes: creating an account, its tier, tier terms, and the monthly grant
(which is a balance change, so it goes through post_entry like every other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg

from processors.ledger import account_queries as aq
from processors.ledger import queries
from processors.ledger.credits import Credit, post_credits
from processors.ledger.entries import EntryResult, set_monthly_cap
from processors.ledger.models import (
    GrantTerms,
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
        if await aq.account_exists(conn, account_id=account_id):
            return False
        if not await aq.tier_exists(conn, tier=tier):
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
        exists, new_default = await aq.tier_default_cap(conn, tier=tier)
        if not exists:
            raise UnknownTier(tier)
        old = await aq.lock_account_cap(conn, account_id=account_id)
        if old is None:
            raise UnknownAccount(account_id)
        await aq.update_account_tier(conn, account_id=account_id, tier=tier)
        if old["cap"] == old["tier_cap"] and old["cap"] != new_default:
            await set_monthly_cap(
                conn,
                account_id=account_id,
                cap_micros=new_default,
                policy=policy or LedgerPolicy(),
            )


@dataclass(frozen=True, slots=True)
class MonthlyGrant:
    """What grant_monthly_allocations did."""

    month: str
    granted: int
    already: int
    granted_micros: int


MONTHLY_GRANT_BATCH = 1000  # accounts per transaction


async def grant_monthly_allocations(
    conn: asyncpg.Connection,
    *,
    month: date,
    policy: LedgerPolicy,
    on_progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
) -> MonthlyGrant:
    """Give every account its tier's monthly_allocation for `month`, at most once.

    Each is a promotional grant at priority 10 that expires at the end of the UTC month (it
    burns before paid credit, and what is left leaves through an expiration row). The
    idempotency key `monthly:<YYYY-MM>` makes reruns no-ops: an account already granted
    (even an amount since changed on its tier) is counted as `already`, not granted twice.
    The whole run reads one clock (`now`, default the real one): the terms and every batch's
    effective time agree even when the month ends during the run.
    """
    label = f"{month.year:04d}-{month.month:02d}"
    key = f"monthly:{label}"
    # One instant for the terms and the writes: with a second reading, a run still going at
    # 00:00 UTC on the 1st gave grants effective after they expired, which the table refuses
    # (expires_at > effective_at) and the run stopped half done.
    at = now or datetime.now(UTC)
    terms = monthly_terms(month, at)
    rows = await aq.accounts_with_monthly_allocation(conn)
    granted = already = granted_micros = 0
    # Batches of accounts, each one transaction of a few statements (post_credits): a rerun or a
    # crash between batches is safe, as every grant is keyed.
    for start in range(0, len(rows), MONTHLY_GRANT_BATCH):
        batch = rows[start : start + MONTHLY_GRANT_BATCH]
        credits = [
            Credit(
                account_id=r["account_id"],
                amount_micros=r["monthly_allocation_micros"],
                reason=f"monthly {r['tier']} allocation {label}",
                idempotency_key=key,
                grant=terms,
            )
            for r in batch
        ]
        results = await post_credits(conn, credits, policy=policy, create_accounts=False, now=at)
        for c, result in zip(credits, results, strict=True):
            if isinstance(result, EntryResult) and not result.replayed:
                granted += 1
                granted_micros += c.amount_micros
            elif isinstance(result, EntryResult | IdempotencyConflict):
                # Granted before (under other terms when the tier changed since).
                already += 1
        if on_progress is not None:
            on_progress(start + len(batch), len(rows))
    return MonthlyGrant(label, granted, already, granted_micros)


def monthly_terms(month: date, now: datetime) -> GrantTerms:
    """A tier's monthly allocation: promotional, priority 10, until the end of the UTC month.

    Effective now, or from the month's first instant when that is later (a grant made ahead)
    or when the month is already over (a late grant, expired by the next expiry run).
    """
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    effective = start if start > now or end <= now else None
    return GrantTerms("promotional", 10, effective_at=effective, expires_at=end)
