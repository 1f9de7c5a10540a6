"""Defects found by a hostile sweep, worker side (issue 13, "keep every invariant"): a valid
event is debited exactly, an invalid one goes to usage.dlq with its reason, and the events
around it are metered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import asyncpg

from schemas import topics
from schemas.settings import CommonSettings
from tests.integration.worker import (
    USAGE_ROWS,
    Worker,
    add_test_price,
    consume_to_end,
    event,
    publish_usage,
    wait_for,
)


async def test_an_event_with_any_rfc3339_offset_is_debited_not_dead_lettered(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    # RFC 3339 allows offsets up to ±23:59; Postgres parses at most ±15:59 from text. The
    # batch used to pass occurred_at to Postgres with its offset, so these valid events were
    # dead-lettered as `rejected` (one with "time zone displacement out of range").
    async with db.acquire() as conn:
        await add_test_price(conn)
    now = datetime.now(UTC).replace(microsecond=123456) - timedelta(minutes=1)
    offsets = {
        "plus-2359": timedelta(hours=23, minutes=59),
        "minus-2359": -timedelta(hours=23, minutes=59),
        "plus-1600": timedelta(hours=16),
        "minus-1559": -timedelta(hours=15, minutes=59),
    }
    events = [
        event(
            name, "acct", input_tokens=500_000, occurred_at=now.astimezone(timezone(o)).isoformat()
        )
        for name, o in offsets.items()
    ]
    events.append(event("after", "acct", input_tokens=500_000))
    worker = Worker(test_settings).start()
    try:
        await publish_usage(test_settings, events)
        await wait_for(db, USAGE_ROWS, len(events), worker=worker)
    finally:
        worker.stop()
    assert (
        await consume_to_end(test_settings.kafka_bootstrap, test_settings.topic_usage_dlq, 0) == []
    )
    rows = await db.fetch("SELECT event_id, occurred_at, cost_micros FROM usage_events")
    got = {r["event_id"]: (r["occurred_at"], r["cost_micros"]) for r in rows}
    for name in offsets:
        assert got[name] == (now, 1_000_000)  # the same instant, at its exact price
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == -5_000_000


async def test_a_boolean_count_goes_to_the_dlq_and_the_next_event_is_debited(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    # `"input_tokens": true` used to be debited as one token (pydantic's lax int).
    async with db.acquire() as conn:
        await add_test_price(conn)
    events = [
        event("bool-count", "acct", input_tokens=True, output_tokens=10),
        event("bool-version", "acct", input_tokens=500_000, schema_version=True),
        event("good", "acct", input_tokens=500_000),
    ]
    worker = Worker(test_settings).start()
    try:
        await publish_usage(test_settings, events)
        dead = await consume_to_end(
            test_settings.kafka_bootstrap, test_settings.topic_usage_dlq, 2, timeout=60
        )
        await wait_for(db, USAGE_ROWS, 1, worker=worker)
    finally:
        worker.stop()
    got = {
        json.loads(r.value)["event_id"]: (
            dict(r.headers)[topics.DLQ_HEADER_REASON].decode(),
            dict(r.headers)[topics.DLQ_HEADER_MESSAGE].decode(),
        )
        for r in dead
    }
    assert got == {
        "bool-count": ("invalid_event", "input_tokens: must be an integer, not a boolean"),
        "bool-version": ("invalid_event", "schema_version: must be an integer, not a boolean"),
    }
    assert await db.fetchval("SELECT array_agg(event_id) FROM usage_events") == ["good"]
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == -1_000_000
