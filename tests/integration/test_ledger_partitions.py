"""Migration 0009 on a populated database (the ledger partitioned by month, the global keys in
their own tables) and the partitions created ahead, against the real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from api.queries.transactions import page_transactions
from processors.ledger import (
    Credit,
    EntryResult,
    GrantTerms,
    LedgerPolicy,
    RatedEvent,
    debit_batch,
    ensure_partitions,
    expire_grants,
    post_credits,
    post_entry,
    redeem_coupon,
    reserve,
)
from processors.ledger.partition_queries import partition_months
from processors.reconcile import queries as reconcile_queries
from schemas import migrate
from schemas.event import UsageEvent
from tests.integration import services as svc
from tests.integration.ledger_helpers import (
    COST_IS_INPUT,
    balance_after_chain_consistent,
    grants_match_balances,
    ledger_matches_balances,
)

POLICY = LedgerPolicy()
PARTITIONED = 9
FAR_PAST = datetime(2001, 6, 15, 12, tzinfo=UTC)


@asynccontextmanager
async def fresh_database(services: svc.Services) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A pool on a new database of this test's own (no migration applied), dropped after."""
    async with svc.scratch_database(services) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert pool is not None
        try:
            yield pool, dsn
        finally:
            await pool.close()


def usage(
    event_id: str,
    account: str,
    micros: int,
    *,
    when: datetime | None = None,
    hold: str | None = None,
) -> RatedEvent:
    """A usage event costing `micros` (COST_IS_INPUT: 1 micro per input token)."""
    return RatedEvent(
        UsageEvent(
            event_id=event_id,
            account_id=account,
            occurred_at=when or datetime.now(UTC),
            model="any",
            input_tokens=micros,
            reservation_id=hold,
        ),
        COST_IS_INPUT,
    )


async def _populate(pool: asyncpg.Pool) -> dict[str, Any]:
    """Writes through the ledger's own code: allocations and API deductions with keys, a
    priced deduction, grants (one expired by the expiry run), a coupon, a settled hold, and
    usage across several months, one of them far in the past."""
    out: dict[str, Any] = {}
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        for account in ("alice", "bob", "carol"):
            await post_entry(
                conn,
                account_id=account,
                type="allocation",
                amount_micros=50_000_000,
                reason="opening",
                idempotency_key=f"open-{account}",
                policy=POLICY,
            )
        await post_credits(
            conn,
            [Credit("bob", 1_000_000, "bulk", "bulk-bob"), Credit("dave", 2_000, "bulk", None)],
            policy=POLICY,
        )
        events = [
            usage(f"m{k}-{a}", a, 1000 + k, when=now - timedelta(days=31 * k))
            for k in range(4)
            for a in ("alice", "bob")
        ]
        events.append(usage("ancient", "carol", 777, when=FAR_PAST))
        first = await debit_batch(conn, events, policy=POLICY)
        assert first.debited == len(events)
        out["deduct"] = await post_entry(
            conn,
            account_id="alice",
            type="deduction",
            amount_micros=-3_000,
            reason="api deduct",
            idempotency_key="deduct-1",
            policy=POLICY,
            enforce_limits=True,
        )
        out["priced"] = await post_entry(
            conn,
            account_id="bob",
            type="deduction",
            amount_micros=-4_200,
            reason="usage of any",
            idempotency_key="cad-1",
            policy=POLICY,
            model="any",
            request_hash=b"\x01\x02",
            priced={"cost": "0.004200", "model": "any"},
        )
        await post_entry(
            conn,
            account_id="carol",
            type="allocation",
            amount_micros=9_000,
            reason="promo",
            idempotency_key="promo-carol",
            policy=POLICY,
            grant=GrantTerms(
                category="promotional",
                priority=10,
                effective_at=now - timedelta(hours=2),
                expires_at=now - timedelta(hours=1),
            ),
        )
        await conn.execute(
            "INSERT INTO coupon_codes (code, amount_micros, max_redemptions)"
            " VALUES ('WELCOME', 5000, 10)"
        )
        out["coupon"] = await redeem_coupon(conn, code="WELCOME", account_id="carol", policy=POLICY)
        held = await reserve(
            conn,
            account_id="alice",
            amount_micros=10_000,
            ttl_seconds=600,
            idempotency_key="hold-1",
            request_hash=b"h",
            metadata=None,
        )
        out["hold"] = held.hold.reservation_id
        settled = await debit_batch(
            conn, [usage("held-call", "alice", 6_000, hold=out["hold"])], policy=POLICY
        )
        assert settled.settled == 1
    expired = await expire_grants(pool, policy=POLICY)
    assert expired.grants == 1
    return out


_ROWS = (
    "SELECT id, account_id, type, amount_micros, balance_after_micros, source, event_id,"
    " idempotency_key, reason, model, occurred_at, created_at, request_hash, priced::text"
    " FROM credit_transactions ORDER BY id"
)
_USAGE = "SELECT * FROM usage_events ORDER BY source, event_id"


async def _pages(pool: asyncpg.Pool, account: str, type: str | None) -> list[list[int]]:
    """Every keyset page (3 rows) of an account's history, newest first, as ids."""
    pages: list[list[int]] = []
    before: int | None = None
    while True:
        rows = await page_transactions(
            pool,
            account_id=account,
            type=type,
            created_from=None,
            created_to=None,
            before_id=before,
            limit=3,
        )
        if not rows:
            return pages
        pages.append([r["id"] for r in rows])
        before = rows[-1]["id"]


async def _snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    return {
        "rows": [tuple(r) for r in await pool.fetch(_ROWS)],
        "usage": [tuple(r) for r in await pool.fetch(_USAGE)],
        "per_account": [
            tuple(r)
            for r in await pool.fetch(
                "SELECT account_id, count(*), sum(amount_micros) FROM credit_transactions"
                " GROUP BY 1 ORDER BY 1"
            )
        ],
        "balances": dict(await pool.fetch("SELECT account_id, balance_micros FROM user_credits")),
        "pages": {
            (a, t): await _pages(pool, a, t)
            for a in ("alice", "bob", "carol", "dave")
            for t in (None, "usage")
        },
        "burns": [tuple(r) for r in await pool.fetch("SELECT * FROM grant_burns ORDER BY 1, 2")],
        "last_id": await pool.fetchval(
            "SELECT last_value FROM pg_sequences WHERE sequencename = 'credit_transactions_id_seq'"
        ),
    }


async def test_conversion_of_a_populated_ledger_keeps_every_row_key_and_page(
    services: svc.Services,
) -> None:
    """Written through the ledger at 0009, taken down to 0008 (one table each, the keys back
    on them) where the oldest rows are dated months back, then converted again by 0009: the
    rows, ids, balances and pages are those of before, and the keys the code wrote are rebuilt
    from the rows alone."""
    async with fresh_database(services) as (pool, _):
        async with pool.acquire() as conn:
            await migrate.up(conn)
        written = await _populate(pool)
        keys_written = await pool.fetch("SELECT * FROM credit_transaction_keys ORDER BY 1, 2")
        assert len(keys_written) == 8  # 3 openings, bulk, 2 deductions, promo, expiration
        debited_written = await pool.fetch("SELECT * FROM debited_events ORDER BY 1, 2")
        # Down to 0008: 0009 and the migrations after it.
        from_partitioned = [
            m.version for m in migrate.load_migrations() if m.version >= PARTITIONED
        ]
        async with pool.acquire() as conn:
            await migrate.down(conn, steps=len(from_partitioned))
        await pool.expire_connections()
        # A ledger that has run for months: the first half of the rows were written long ago.
        await pool.execute(
            "UPDATE credit_transactions SET created_at = created_at - (8 - id / 4) * interval"
            " '31 days' WHERE id <= 16"
        )
        before = await _snapshot(pool)
        assert before["last_id"] == before["rows"][-1][0]

        async with pool.acquire() as conn:
            applied = await migrate.up(conn)
        await pool.expire_connections()
        assert [m.version for m in applied] == from_partitioned
        after = await _snapshot(pool)
        for part in ("rows", "usage", "per_account", "balances", "pages", "burns", "last_id"):
            assert after[part] == before[part], part
        await ledger_matches_balances(pool)
        await balance_after_chain_consistent(pool)
        await grants_match_balances(pool)
        keys = "SELECT account_id, idempotency_key, transaction_id FROM credit_transaction_keys"
        assert [tuple(r) for r in await pool.fetch(keys + " ORDER BY 1, 2")] == [
            tuple(r)[:3] for r in keys_written
        ]
        # Each key points at its row in that row's partition (created_at as moved back).
        assert not await pool.fetchval(
            "SELECT count(*) FROM credit_transaction_keys k LEFT JOIN credit_transactions c"
            " ON c.id = k.transaction_id AND c.created_at = k.created_at"
            " AND c.idempotency_key = k.idempotency_key WHERE c.id IS NULL"
        )
        assert await pool.fetch("SELECT * FROM debited_events ORDER BY 1, 2") == debited_written

        # Rows sit in their months; the far-past usage in the DEFAULT partition.
        months = {
            r[0] for r in await pool.fetch("SELECT tableoid::regclass::text FROM usage_events")
        }
        assert "usage_events_default" in months and len(months) >= 4
        assert (
            await pool.fetchval(
                "SELECT count(DISTINCT tableoid) FROM credit_transactions WHERE id <= 16"
            )
            >= 3
        )
        assert await pool.fetchval(
            "SELECT tableoid::regclass::text FROM usage_events WHERE event_id = 'ancient'"
        ) == ("usage_events_default")

        async with pool.acquire() as conn:
            # Idempotent replays answer the original rows.
            again = await post_entry(
                conn,
                account_id="alice",
                type="deduction",
                amount_micros=-3_000,
                reason="api deduct",
                idempotency_key="deduct-1",
                policy=POLICY,
                enforce_limits=True,
            )
            assert again.replayed
            # The row as written, dated as this test moved it back.
            moved = {r[0]: r[11] for r in before["rows"]}
            assert again.row == replace(written["deduct"].row, created_at=moved[again.row.id])
            priced = await post_entry(
                conn,
                account_id="bob",
                type="deduction",
                amount_micros=-9_999,  # a priced deduction replays by its request hash
                reason="usage of any",
                idempotency_key="cad-1",
                policy=POLICY,
                model="any",
                request_hash=b"\x01\x02",
            )
            assert priced.replayed and priced.row.priced == {"cost": "0.004200", "model": "any"}
            (bulk, _) = await post_credits(
                conn,
                [Credit("bob", 1_000_000, "bulk", "bulk-bob"), Credit("erin", 5, "bulk", "e-1")],
                policy=POLICY,
            )
            original = next(r[0] for r in before["rows"] if r[7] == "bulk-bob")
            assert isinstance(bulk, EntryResult) and bulk.replayed and bulk.row.id == original
            # Re-delivered events, the far-past one included, are duplicates, not debits.
            dup = await debit_batch(
                conn,
                [usage("m2-bob", "bob", 1002), usage("ancient", "carol", 777, when=FAR_PAST)],
                policy=POLICY,
            )
            assert (dup.debited, dup.duplicates) == (0, 2)
        assert (await expire_grants(pool, policy=POLICY)).grants == 0
        # New ids continue above the old ones; the balance is still the sum of the rows.
        new_rows = await pool.fetch(
            "SELECT id FROM credit_transactions WHERE id > $1", before["last_id"]
        )
        assert [r[0] for r in new_rows] == [before["last_id"] + 1]
        await ledger_matches_balances(pool)
        async with pool.acquire() as conn:
            assert await reconcile_queries.fetch_hold_anomalies(conn) == []
        assert (
            await pool.fetchval(
                "SELECT t.type FROM coupon_redemptions r JOIN credit_transactions t"
                " ON t.id = r.transaction_id WHERE r.code = 'WELCOME'"
            )
            == "coupon"
        )


async def test_partitions_are_created_ahead_idempotently_and_default_rows_never_block(
    services: svc.Services,
) -> None:
    # This test's own time, not the module's import time: a month may have turned since.
    now = datetime.now(UTC)
    async with fresh_database(services) as (pool, _):
        async with pool.acquire() as conn:
            await migrate.up(conn)
            # A fresh database has this month and the next two, before any worker runs.
            month = datetime(now.year, now.month, 1, tzinfo=UTC)
            ahead = [(month + timedelta(days=32 * k)).strftime("y%Ym%m") for k in range(3)]
            for table in ("credit_transactions", "usage_events"):
                names = await partition_months(conn, table=table)
                assert names == sorted([f"{table}_default"] + [f"{table}_{m}" for m in ahead])
            assert await ensure_partitions(conn) == 0
            assert await migrate.ensure_partitions(conn) == 0

            # Usage from a month with no partition lands in DEFAULT, and creating later
            # months' partitions still works with it there.
            old = datetime(2003, 2, 10, tzinfo=UTC)
            await debit_batch(conn, [usage("old-1", "acme", 5, when=old)], policy=POLICY)
            later = now + timedelta(days=200)
            assert await ensure_partitions(conn, at=later) == 6
            assert await ensure_partitions(conn, at=later) == 0
            assert await conn.fetchval(
                "SELECT tableoid::regclass::text FROM usage_events WHERE event_id = 'old-1'"
            ) == ("usage_events_default")

            # Creating the partition of a month that already has rows in DEFAULT moves them.
            await conn.execute(
                "UPDATE credit_transactions SET created_at = $1 WHERE event_id = 'old-1'",
                now + timedelta(days=400),
            )
            row = await conn.fetchrow(
                "SELECT id, tableoid::regclass::text AS part FROM credit_transactions"
            )
            assert row["part"] == "credit_transactions_default"
            assert await ensure_partitions(conn, at=old, months_ahead=0) == 2
            assert await ensure_partitions(conn, at=now + timedelta(days=400), months_ahead=0) == 2
            placed = await conn.fetch(
                "SELECT tableoid::regclass::text FROM credit_transactions UNION ALL"
                " SELECT tableoid::regclass::text FROM usage_events ORDER BY 1"
            )
            target = now + timedelta(days=400)
            assert [r[0] for r in placed] == [
                f"credit_transactions_{target:y%Ym%m}",
                "usage_events_y2003m02",
            ]
            assert await conn.fetchval("SELECT count(*) FROM usage_events_default") == 0
            # Moved, the event is still debited once.
            dup = await debit_batch(conn, [usage("old-1", "acme", 5, when=old)], policy=POLICY)
            assert (dup.debited, dup.duplicates) == (0, 1)
            await ledger_matches_balances(conn)


async def test_rating_terms_are_found_by_event_whatever_occurred_at_a_record_carries(
    db: asyncpg.Pool,
) -> None:
    """Reconcile looks terms up in the event's month partition first, then by key alone: a
    republication with another occurred_at still finds the debited row's terms."""
    now = datetime.now(UTC)
    async with db.acquire() as conn:
        await debit_batch(
            conn,
            [usage("t-now", "acme", 5, when=now), usage("t-old", "acme", 7, when=FAR_PAST)],
            policy=POLICY,
        )
        terms = await reconcile_queries.fetch_rating_terms(
            conn,
            sources=["default"] * 3,
            event_ids=["t-now", "t-old", "never"],
            occurred_ats=[now, now, now],  # t-old republished with another occurred_at
        )
    assert sorted(terms) == [("default", "t-now"), ("default", "t-old")]
    assert set(terms.values()) == {POLICY.terms(Decimal(1))}


async def test_a_concurrent_writer_of_the_same_key_waits_on_it_then_sees_it_taken(
    db: asyncpg.Pool,
) -> None:
    """Invariant 3 without the account lock to serialise them: the same (source, event_id)
    published for two accounts, debited by two batches at once. The second waits on
    debited_events' key until the first commits, then finds the key another account's: a
    conflicting event (dead-lettered by the worker), neither debited nor a duplicate."""
    async with db.acquire() as first, db.acquire() as second:
        tx = first.transaction()
        await tx.start()
        try:
            one = await debit_batch(first, [usage("same", "acct-1", 10)], policy=POLICY)
            assert one.debited == 1
            other = asyncio.create_task(
                debit_batch(second, [usage("same", "acct-2", 20)], policy=POLICY)
            )
            await asyncio.sleep(0.5)
            assert not other.done()  # waiting on the uncommitted key
        finally:
            await tx.commit()
        two = await asyncio.wait_for(other, 10)
    assert (two.debited, two.duplicates, len(two.conflicting)) == (0, 0, 1)
    assert "already used by another account" in two.conflicting[0][1]
    rows = await db.fetch("SELECT account_id, amount_micros FROM credit_transactions")
    assert [tuple(r) for r in rows] == [("acct-1", -10)]
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 1
    await ledger_matches_balances(db)
