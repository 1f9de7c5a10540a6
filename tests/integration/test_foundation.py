"""The foundation works against the real services: a record through Kafka, rows through Postgres,
migrations up/down/up, and the schema's refusal of a second usage debit."""

from __future__ import annotations

import json
from decimal import Decimal

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schemas import migrate
from tests.integration import services as svc
from tests.integration.conftest import TopicFactory
from tests.integration.worker import consume_to_end


async def test_record_round_trips_through_the_broker(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("usage.events", partitions=12)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, key=b"acct-1", value=b'{"event_id":"e1"}')
    finally:
        await producer.stop()
    # Read with a deadline: a record that never arrives fails the test instead of hanging it.
    records = await consume_to_end(kafka_bootstrap, topic, expected=1, timeout=30)
    assert [(r.key, r.value, r.partition) for r in records] == [
        (b"acct-1", b'{"event_id":"e1"}', meta.partition)
    ]


async def test_database_writes_and_reads_a_ledger_row(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await conn.execute("INSERT INTO user_credits (account_id, balance_micros) VALUES ('a', 5)")
        await conn.execute(
            "INSERT INTO credit_transactions"
            " (account_id, type, amount_micros, balance_after_micros,"
            " reason) VALUES ('a', 'allocation', 5, 5, 'welcome')"
        )
        row = await conn.fetchrow(
            "SELECT u.balance_micros, t.amount_micros, t.balance_after_micros, u.tier"
            " FROM user_credits u JOIN credit_transactions t USING (account_id)"
        )
    assert dict(row) == {
        "balance_micros": 5,
        "amount_micros": 5,
        "balance_after_micros": 5,
        "tier": "free",
    }


async def test_schema_refuses_a_second_usage_debit_for_the_same_event(db: asyncpg.Pool) -> None:
    # The ledger is partitioned by month: the global (source, event_id) uniqueness is the
    # primary key of debited_events, which every usage debit writes in its statement.
    insert = "INSERT INTO debited_events (source, event_id) VALUES ($1, 'evt-1')"
    async with db.acquire() as conn:
        await conn.execute(insert, "proxy-1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, "proxy-1")
        # The same event_id from another source is another event.
        await conn.execute(insert, "proxy-2")


async def test_schema_refuses_a_second_row_with_an_idempotency_key(db: asyncpg.Pool) -> None:
    """However it is written, a key is used once per account (insert_ledger_rows)."""
    from processors.ledger import queries

    async def write(account: str) -> None:
        await queries.insert_ledger_rows(
            conn,
            account_ids=[account],
            types=["allocation"],
            amounts=[5],
            balances_after=[5],
            reasons=[None],
            idempotency_keys=["k-1"],
            sources=[None],
            event_ids=[None],
            models=[None],
            occurred_ats=[None],
        )

    async with db.acquire() as conn:
        await write("a")
        with pytest.raises(asyncpg.UniqueViolationError):
            await write("a")
        await write("b")
        assert await conn.fetchval("SELECT count(*) FROM credit_transactions") == 2


async def test_migrations_up_down_up_on_an_empty_database(services) -> None:  # type: ignore[no-untyped-def]
    async with svc.empty_database(services) as conn:
        # Every table a migration creates, less those a later one drops.
        expected: set[str] = set()
        for m in migrate.load_migrations():
            expected |= {n for k, n in m.creates if k == "TABLE"}
            expected -= {n for k, n in m.drops if k == "TABLE"}
        assert "credit_transactions" in expected and "idempotency_keys" not in expected
        tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"

        applied = await migrate.up(conn)
        assert [m.version for m in applied] == [m.version for m in migrate.load_migrations()]
        assert expected <= {r[0] for r in await conn.fetch(tables)}
        assert await migrate.up(conn) == []  # idempotent

        await migrate.down(conn, steps=len(applied))
        assert {r[0] for r in await conn.fetch(tables)} == {"schema_migrations"}
        assert all(when is None for _, when in await migrate.status(conn))

        await migrate.up(conn)
        assert expected <= {r[0] for r in await conn.fetch(tables)}
        # up() verified each migration's tables and indexes right after applying it; later
        # migrations may drop what earlier ones made, so the end state is checked by table.
        applied_now = [v for v in (await migrate.applied_versions(conn))]
        assert applied_now == [m.version for m in migrate.load_migrations()]


async def test_rating_terms_migration_backfills_the_tier_multiplier(services) -> None:  # type: ignore[no-untyped-def]
    """0005 gives usage rows written before it the account tier's multiplier and the 5 % fee."""
    async with svc.empty_database(services) as conn:
        await migrate.up(conn, target=4)
        await conn.execute(
            "INSERT INTO user_credits (account_id, tier) VALUES ('ent', 'enterprise')"
        )
        await conn.execute(
            "INSERT INTO usage_events (source, event_id, account_id, occurred_at, model,"
            " cost_micros) VALUES ('s', 'e1', 'ent', now(), 'm', 9),"
            " ('s', 'e2', 'gone', now(), 'm', 10)"
        )
        await migrate.up(conn, target=5)
        rows = await conn.fetch(
            "SELECT event_id, price_multiplier, byok_fee_pct FROM usage_events ORDER BY 1"
        )
        assert [tuple(r) for r in rows] == [
            ("e1", Decimal("0.9"), Decimal(5)),
            ("e2", Decimal(1), Decimal(5)),  # no account row left: list price
        ]
        with pytest.raises(asyncpg.NotNullViolationError):
            await conn.execute(
                "INSERT INTO usage_events (source, event_id, account_id, occurred_at, model,"
                " cost_micros) VALUES ('s', 'e3', 'ent', now(), 'm', 9)"
            )
        await migrate.down(conn, steps=1)
        assert await conn.fetchval("SELECT count(*) FROM usage_events") == 2


async def test_ledger_idempotency_migration_moves_stored_answers_into_the_ledger(services) -> None:  # type: ignore[no-untyped-def]
    """0007 copies calculate-and-deduct's stored answers onto their ledger rows, then drops the
    API's idempotency_keys; its down rebuilds the table from the rows."""
    async with svc.empty_database(services) as conn:
        await migrate.up(conn, target=5)
        await conn.execute("INSERT INTO user_credits (account_id) VALUES ('acme')")
        await conn.execute(
            "INSERT INTO credit_transactions (account_id, type, amount_micros,"
            " balance_after_micros, idempotency_key, reason, model) VALUES"
            " ('acme', 'deduction', -2000, -2000, 'c1', 'usage of m', 'm'),"
            " ('acme', 'deduction', -5, -2005, 'd1', 'plain deduct', NULL)"
        )
        cost = {"cost": "0.002000", "model": "m"}
        await conn.execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash, response)"
            " VALUES ('calculate-and-deduct:acme', 'c1', '\\x01'::bytea, $1::jsonb)",
            json.dumps({"balance": "-0.002000", "cost": cost}),
        )
        await migrate.up(conn, target=7)
        rows = await conn.fetch(
            "SELECT idempotency_key, request_hash, priced::text AS priced"
            " FROM credit_transactions ORDER BY id"
        )
        assert [(r[0], r[1], r[2] and json.loads(r[2])) for r in rows] == [
            ("c1", b"\x01", cost),
            ("d1", None, None),
        ]
        assert not await conn.fetchval("SELECT to_regclass('idempotency_keys') IS NOT NULL")
        await migrate.down(conn, steps=1)
        back = await conn.fetchrow(
            "SELECT scope, key, request_hash, response::text AS response FROM idempotency_keys"
        )
        assert back is not None
        assert (back[0], back[1], back[2]) == ("calculate-and-deduct:acme", "c1", b"\x01")
        answer = json.loads(back[3])
        assert answer["cost"] == cost and answer["balance"] == "-0.002000"
        assert answer["transaction"]["amount"] == "-0.002000"
