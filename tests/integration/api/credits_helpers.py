"""Helpers of the credit-route tests: real ledger writes, prices and coupons in the test DB."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from processors.catalog import insert_price_version
from tests.integration.ledger_helpers import POLICY, allocate, ledger_matches_balances

# The ledger helpers are shared with the non-API tests; re-exported for the credit routes.
__all__ = [
    "MODEL",
    "POLICY",
    "add_coupon",
    "add_test_price",
    "allocate",
    "ledger_matches_balances",
]

# 2 credits per M input, 1 per M cached, 8 per M output, 0.04 per image: easy by hand.
MODEL = "test/model-a"


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
