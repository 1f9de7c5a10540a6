"""Migration 0010 on a populated database: holds written before it count in the reserve and
release functions it adds, at once; down drops the functions and leaves every row. And the
refusal it decides near BIGINT's bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from processors.ledger import CapExceeded, InsufficientCredit, Reservation, release, reserve
from schemas import migrate
from tests.integration import services as svc

HOLD_FUNCTIONS = 10
# The reserves below are made with this clock, whenever they run: the month of the spend
# written here is the month they read, even when 00:00 UTC on the 1st passes in between.
NOW = datetime.now(UTC)
MONTH = NOW.date().replace(day=1)


async def _populate(conn: asyncpg.Connection) -> None:
    """Accounts with holds as 0009's code left them: active, expired, released; a month's
    spend against a cap."""
    await conn.execute(
        "INSERT INTO user_credits (account_id, balance_micros, monthly_cap_micros) VALUES"
        " ('acme', 10000000, NULL), ('capped', 10000000, 5000000)"
    )
    await conn.execute(
        "INSERT INTO monthly_spend (account_id, month, spend_micros)"
        " VALUES ('capped', $1, 3000000)",
        MONTH,
    )
    await conn.execute(
        "INSERT INTO credit_holds (reservation_id, account_id, amount_micros, status, expires_at,"
        " idempotency_key, request_hash, available_after_micros, closed_at) VALUES"
        " ('rsv_active', 'acme', 4000000, 'active', now() + interval '1 hour', 'k1', '\\x01',"
        "  6000000, NULL),"
        " ('rsv_expired', 'acme', 5000000, 'active', now() - interval '1 second', 'k2', '\\x02',"
        "  1000000, NULL),"
        " ('rsv_released', 'acme', 3000000, 'released', now() + interval '1 hour', 'k3',"
        "  '\\x03', 3000000, now()),"
        " ('rsv_capped', 'capped', 1000000, 'active', now() + interval '1 hour', 'k4', '\\x04',"
        "  9000000, NULL)"
    )


async def test_holds_written_before_the_functions_count_in_them_and_down_keeps_them(
    services: svc.Services,
) -> None:
    async with svc.empty_database(services) as conn:
        await migrate.up(conn, target=HOLD_FUNCTIONS - 1)
        await _populate(conn)
        applied = await migrate.up(conn)
        assert HOLD_FUNCTIONS in [m.version for m in applied]
        rows_before = await conn.fetch("SELECT * FROM credit_holds ORDER BY reservation_id")

        # acme: 10 of balance, 4 held by the active hold (the expired one no longer counts).
        with pytest.raises(InsufficientCredit) as refused:
            await _reserve(conn, "acme", 6_000_001, "n1")
        assert (refused.value.balance_micros, refused.value.held_micros) == (
            10_000_000,
            4_000_000,
        )
        made = await _reserve(conn, "acme", 6_000_000, "n2")
        assert (made.hold.status, made.hold.available_after_micros) == ("active", 0)
        replay = await _reserve(conn, "acme", 4_000_000, "k1", request_hash=b"\x01")
        assert (replay.replayed, replay.hold.reservation_id) == (True, "rsv_active")

        # A hold made before the migration is released by the new function.
        freed = await release(conn, reservation_id="rsv_active", account_id="acme")
        assert (freed.released, freed.hold.status, freed.available_micros) == (
            True,
            "released",
            4_000_000,
        )
        again = await release(conn, reservation_id="rsv_expired", account_id=None)
        assert (again.released, again.hold.status) == (False, "expired")

        # capped: 3 spent this month and 1 held against a cap of 5: 1 more fits, 1.000001
        # does not.
        with pytest.raises(CapExceeded) as capped:
            await _reserve(conn, "capped", 1_000_001, "n3")
        assert (capped.value.spend_micros, capped.value.held_micros) == (3_000_000, 1_000_000)
        await _reserve(conn, "capped", 1_000_000, "n4")

        await migrate.down(conn, steps=1)
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('reserve_hold', 'release_hold')"
        )
        kept = await conn.fetch(
            "SELECT * FROM credit_holds WHERE reservation_id = ANY($1::text[])"
            " ORDER BY reservation_id",
            [r["reservation_id"] for r in rows_before],
        )
        assert len(kept) == len(rows_before)
        assert await conn.fetchval("SELECT count(*) FROM credit_holds") == 6


async def test_a_cap_check_past_bigint_is_a_refusal_not_an_overflow(db: asyncpg.Pool) -> None:
    """spend + held + amount beyond BIGINT (each within it) is compared, and refused by name."""
    big = 9_000_000_000_000_000_000  # 9e12 credits spent this month, under a cap of 9.2e12
    await db.execute(
        "INSERT INTO user_credits (account_id, balance_micros, monthly_cap_micros)"
        " VALUES ('whale', $1, 9200000000000000000)",
        big,
    )
    await db.execute(
        "INSERT INTO monthly_spend (account_id, month, spend_micros) VALUES ('whale', $1, $2)",
        MONTH,
        big,
    )
    async with db.acquire() as conn:
        with pytest.raises(CapExceeded) as refused:
            await _reserve(conn, "whale", 500_000_000_000_000_000, "w1")
    assert refused.value.spend_micros == big
    assert await db.fetchval("SELECT count(*) FROM credit_holds") == 0


async def _reserve(
    conn: asyncpg.Connection,
    account: str,
    micros: int,
    key: str,
    *,
    request_hash: bytes = b"h",
) -> Reservation:
    return await reserve(
        conn,
        account_id=account,
        amount_micros=micros,
        ttl_seconds=60,
        idempotency_key=key,
        request_hash=request_hash,
        metadata=None,
        now=NOW,
    )
