"""`meterline bench api`'s ledger phase: GET /api/v1/credits/transactions pages on a large,
month-partitioned ledger.

The ledger is seeded in SQL (generate_series, one statement): `rows` rows over `months` months
up to now, ids increasing with created_at as the ledger writes them, one row in five on the
paged account (BIG), the others spread over `accounts` accounts (bench-acct-N, the hot routes'
accounts among them), one row in ten an adjustment; balances are then set to the sum of the
rows (invariant 2). Pages are read one at a time: the newest page, a page below a random
cursor, both again filtered by type, and the newest page of one of the small accounts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import httpx

from api.routes.transactions import encode_cursor

BIG = "bench-big"
Say = Callable[[str], None]


@dataclass(frozen=True)
class LedgerShape:
    rows: int = 10_000_000
    months: int = 24
    accounts: int = 10_000
    page_requests: int = 300
    page_size: int = 50


async def seed_ledger(conn: asyncpg.Connection, shape: LedgerShape, say: Say) -> None:
    """Seed the ledger (once per database: skipped when BIG exists), partitions first."""
    if await conn.fetchval("SELECT 1 FROM user_credits WHERE account_id = $1", BIG):
        return
    say(
        f"seeding a ledger of {shape.rows:,} rows over {shape.months} months and "
        f"{shape.accounts:,} accounts + {BIG} (generate_series)"
    )
    t0 = time.perf_counter()
    async with conn.transaction():
        created = await conn.fetchval(
            "SELECT ensure_ledger_partitions(now() - make_interval(months => $1), $1 + 2)",
            shape.months,
        )
        await conn.execute(
            "INSERT INTO user_credits (account_id, tier)"
            " SELECT 'bench-acct-' || g, 'bench' FROM generate_series(1, $1) g"
            " UNION ALL SELECT $2, 'bench' ON CONFLICT (account_id) DO NOTHING",
            shape.accounts,
            BIG,
        )
        await conn.execute(
            "INSERT INTO credit_transactions (account_id, type, amount_micros,"
            " balance_after_micros, reason, created_at)"
            " SELECT CASE WHEN g % 5 = 0 THEN $1 ELSE 'bench-acct-' || (1 + g % $3) END,"
            " CASE WHEN (g / 5) % 10 = 0 THEN 'adjustment' ELSE 'allocation' END, 1, g,"
            " 'bench row', now() - make_interval(months => $4)"
            " + make_interval(months => $4) * (g::float8 / $2)"
            " FROM generate_series(1, $2::bigint) g",
            BIG,
            shape.rows,
            shape.accounts,
            shape.months,
        )
        await conn.execute(
            "UPDATE user_credits u SET balance_micros = s.total FROM (SELECT account_id,"
            " sum(amount_micros) AS total FROM credit_transactions GROUP BY account_id) s"
            " WHERE u.account_id = s.account_id"
        )
    await conn.execute("ANALYZE credit_transactions")
    say(f"  seeded in {time.perf_counter() - t0:.0f} s ({created} partitions created)")


@dataclass
class PageFigures:
    name: str
    latencies_ms: list[float]
    errors: int
    seconds: float


async def read_pages(
    base: str, big_key: str, small_keys: list[str], shape: LedgerShape
) -> list[PageFigures]:
    """Each page shape `page_requests` times, one request at a time."""
    rng = random.Random(7)
    out = []
    async with httpx.AsyncClient(base_url=base) as c:
        big = {"Authorization": f"Bearer {big_key}"}
        first = await c.get("/api/v1/credits/transactions", params={"limit": 1}, headers=big)
        if first.status_code != 200:
            raise RuntimeError(f"transactions page answered {first.status_code}: {first.text}")
        top = int(first.json()["items"][0]["id"])
        size = shape.page_size

        def deep() -> str:
            return encode_cursor(rng.randint(1, top))

        shapes: list[tuple[str, Callable[[], tuple[dict[str, str], dict[str, object]]]]] = [
            ("page: newest", lambda: (big, {"limit": size})),
            ("page: random cursor", lambda: (big, {"limit": size, "cursor": deep()})),
            ("page: newest, type", lambda: (big, {"limit": size, "type": "adjustment"})),
            (
                "page: random cursor, type",
                lambda: (big, {"limit": size, "type": "adjustment", "cursor": deep()}),
            ),
            (
                "page: newest, small account",
                lambda: ({"Authorization": f"Bearer {rng.choice(small_keys)}"}, {"limit": size}),
            ),
        ]
        for name, request in shapes:
            lat: list[float] = []
            errors = 0
            start = time.perf_counter()
            for _ in range(shape.page_requests):
                headers, params = request()
                t0 = time.perf_counter()
                r = await c.get("/api/v1/credits/transactions", params=params, headers=headers)  # type: ignore[arg-type]
                lat.append((time.perf_counter() - t0) * 1000)
                errors += r.status_code != 200 or not r.json()["items"]
            out.append(PageFigures(name, lat, errors, time.perf_counter() - start))
    return out
