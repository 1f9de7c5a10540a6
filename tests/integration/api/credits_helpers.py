"""Helpers of the credit-route tests: real ledger writes, prices and coupons in the test DB."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from processors.catalog import insert_price_version
from processors.ledger import LedgerPolicy, post_entry

POLICY = LedgerPolicy()
# 2 credits per M input, 1 per M cached, 8 per M output, 0.04 per image: easy by hand.
MODEL = "test/model-a"


async def allocate(db: asyncpg.Pool, account_id: str, micros: int, key: str | None = None) -> None:
    """Credit an account through the ledger (as the admin route does)."""
    async with db.acquire() as conn:
        await post_entry(
            conn,
            account_id=account_id,
            type="allocation",
            amount_micros=micros,
            reason="test grant",
            idempotency_key=key,
            policy=POLICY,
        )


async def add_test_price(db: asyncpg.Pool, model: str = MODEL) -> None:
    """A price version of `model` in force since 2020."""
    await insert_price_version(
        db,
        model=model,
        provider="testprov",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("2"),
        cached_input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("8"),
        units={"images": Decimal("0.04")},
    )


async def add_coupon(
    db: asyncpg.Pool,
    code: str,
    *,
    micros: int = 5_000_000,
    max_redemptions: int = 10,
    expires_at: datetime | None = None,
) -> None:
    """A coupon row (admins create them through the admin route)."""
    await db.execute(
        "INSERT INTO coupon_codes (code, amount_micros, max_redemptions, expires_at)"
        " VALUES ($1, $2, $3, $4)",
        code,
        micros,
        max_redemptions,
        expires_at,
    )


async def ledger_matches_balances(db: asyncpg.Pool) -> None:
    """Invariant 2: every balance is the sum of its ledger rows."""
    bad = await db.fetch(
        "SELECT u.account_id FROM user_credits u LEFT JOIN credit_transactions t"
        " USING (account_id) GROUP BY u.account_id, u.balance_micros"
        " HAVING u.balance_micros <> coalesce(sum(t.amount_micros), 0)"
    )
    assert bad == []
