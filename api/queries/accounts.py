"""Account reads for the user routes: the state of an account, the defaults of a tier."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import asyncpg


@dataclass(frozen=True, slots=True)
class TierDefaults:
    """What a new account of a tier starts with."""

    name: str
    price_multiplier: Decimal
    default_monthly_cap_micros: int | None


async def read_tier(conn: asyncpg.Connection | asyncpg.Pool, *, name: str) -> TierDefaults | None:
    """A tier's multiplier and default cap, or None when there is no such tier."""
    r = await conn.fetchrow(
        "SELECT name, price_multiplier, default_monthly_cap_micros FROM tiers WHERE name = $1",
        name,
    )
    if r is None:
        return None
    return TierDefaults(r["name"], r["price_multiplier"], r["default_monthly_cap_micros"])
