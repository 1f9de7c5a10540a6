"""replay against the real broker and database: duplicates change nothing; the DLQ re-rated once."""

from __future__ import annotations

import json

import asyncpg
from aiokafka import AIOKafkaProducer

from processors.metering import DeadLetter, RawRecord
from schemas.settings import CommonSettings
from tests.integration.reconcile_helpers import balances, cli, run_replay
from tests.integration.worker import (
    USAGE_ROWS,
    add_test_price,
    consume_all,
    end_offsets,
    event,
    meter_with_worker,
)


async def test_replay_of_the_whole_topic_changes_nothing(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    events = [
        event(f"e{i}", f"acct-{i % 5}", input_tokens=100 + i, output_tokens=i) for i in range(200)
    ]
    await meter_with_worker(test_settings, db, events, usage_rows=200)
    before = await balances(db)
    ledger_before = await db.fetchval("SELECT count(*) FROM credit_transactions")

    summary = await run_replay(test_settings)
    assert (summary.read, summary.debited, summary.duplicates) == (200, 0, 200)
    assert summary.still_failing == {} and summary.debited_micros == 0
    assert await balances(db) == before
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == ledger_before
    assert await db.fetchval("SELECT sum(times_seen) FROM duplicate_events") == 200

    # The CLI, by offsets: two partitions from their start.
    ends = await end_offsets(test_settings.kafka_bootstrap, test_settings.topic_usage_events)
    code, output = cli(
        test_settings,
        "replay",
        "--topic",
        "usage.events",
        "--from-offset",
        "0:0",
        "--from-offset",
        "1:0",
    )
    assert code == 0, output
    n = ends[0] + ends[1]
    assert f"read {n}, debited 0 (0.000000 credits), duplicates {n}" in output
    # By time, from long ago: everything again, still nothing debited.
    code, output = cli(
        test_settings,
        "replay",
        "--topic",
        "usage.events",
        "--from",
        "2020-01-01T00:00:00Z",
        "--group",
        "replay-test",
    )
    assert code == 0, output
    assert "read 200, debited 0 (0.000000 credits), duplicates 200" in output
    assert await balances(db) == before
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == ledger_before


async def test_unpriced_event_is_debited_once_after_the_price_exists(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    events = [
        event("ok1", "alice", input_tokens=1000),
        event("late1", "bob", model="test/late-model", input_tokens=1000, output_tokens=100),
        event("never1", "carol", model="test/never-priced", input_tokens=1000),
    ]
    await meter_with_worker(test_settings, db, events, usage_rows=1, raw=[(b"dave", b"{not json")])
    dlq = await consume_all(test_settings.kafka_bootstrap, test_settings.topic_usage_dlq, 3)
    reasons = sorted(dict(r.headers)["meterline.reason"].decode() for r in dlq)
    assert reasons == ["invalid_json", "unpriced", "unpriced"]
    assert await balances(db) == {"alice": -2000}

    async with db.acquire() as conn:
        # late-model: 4 per M input, 20 per M output → 1000×4 + 100×20 = 6000 micros
        await add_test_price(conn, model="test/late-model", input="4", output="20")
    first = await run_replay(test_settings, dlq=True)
    assert (first.read, first.debited, first.duplicates, first.debited_micros) == (3, 1, 0, 6000)
    assert first.still_failing == {"unpriced": 1}
    assert first.not_retried == {"invalid_json": 1}
    assert "test/never-priced" in first.samples[0]
    assert await balances(db) == {"alice": -2000, "bob": -6000}
    row = await db.fetchrow(
        "SELECT kafka_partition, kafka_offset FROM usage_events WHERE event_id = 'late1'"
    )
    origin = next(r for r in dlq if r.value and b"late1" in r.value)
    headers = dict(origin.headers)
    # Recorded at its place on usage.events, not at the DLQ's.
    assert (row["kafka_partition"], row["kafka_offset"]) == (
        int(headers["meterline.source_partition"]),
        int(headers["meterline.source_offset"]),
    )

    code, output = cli(test_settings, "replay", "--topic", "usage.dlq")
    assert code == 0, output
    assert "read 3, debited 0 (0.000000 credits), duplicates 1" in output
    assert "still failing (not republished): unpriced 1" in output
    assert "not retried (DLQ reason): invalid_json 1" in output
    assert await balances(db) == {"alice": -2000, "bob": -6000}
    assert await db.fetchval(USAGE_ROWS) == 2
    # Replays never grow the DLQ.
    ends = await end_offsets(test_settings.kafka_bootstrap, test_settings.topic_usage_dlq)
    assert sum(ends.values()) == 3


async def test_rejected_records_are_re_rated_only_when_asked_and_once(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    # A valid event the worker once dead-lettered as `rejected` (as a bug did, for an offset
    # past ±15:59): after the fix, `--retry rejected` debits it, once, at its original place.
    async with db.acquire() as conn:
        await add_test_price(conn)
    body = json.dumps(event("was-rejected", "erin", input_tokens=1_000_000)).encode()
    dead = DeadLetter(
        RawRecord(test_settings.topic_usage_events, 3, 41, b"erin", body),
        "rejected",
        "time zone displacement out of range",
    )
    producer = AIOKafkaProducer(bootstrap_servers=test_settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            test_settings.topic_usage_dlq, body, key=b"erin", headers=dead.headers()
        )
    finally:
        await producer.stop()

    code, output = cli(test_settings, "replay", "--topic", "usage.dlq")
    assert code == 0, output
    assert "not retried (DLQ reason): rejected 1" in output
    assert await balances(db) == {}

    code, output = cli(test_settings, "replay", "--topic", "usage.dlq", "--retry", "rejected")
    assert code == 0, output
    assert "read 1, debited 1 (2.000000 credits), duplicates 0" in output
    assert await balances(db) == {"erin": -2_000_000}
    row = await db.fetchrow(
        "SELECT kafka_partition, kafka_offset FROM usage_events WHERE event_id = 'was-rejected'"
    )
    assert (row["kafka_partition"], row["kafka_offset"]) == (3, 41)

    code, output = cli(test_settings, "replay", "--topic", "usage.dlq", "--retry", "rejected")
    assert code == 0, output
    assert "read 1, debited 0 (0.000000 credits), duplicates 1" in output
    assert await balances(db) == {"erin": -2_000_000}
    ends = await end_offsets(test_settings.kafka_bootstrap, test_settings.topic_usage_dlq)
    assert sum(ends.values()) == 1  # never republished

    code, output = cli(test_settings, "replay", "--topic", "usage.dlq", "--retry", "bogus")
    assert code == 2, output
    assert "--retry must be one of invalid_json, invalid_event, oversized, unpriced, rejected" in (
        output
    )
    code, output = cli(test_settings, "replay", "--topic", "usage.events", "--retry", "rejected")
    assert code == 2, output
    assert "--retry applies to usage.dlq only" in output
