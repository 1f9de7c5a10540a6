"""Defects found by a hostile sweep, worker side (issue 13, "keep every invariant"): a valid
event is debited exactly, an invalid one goes to usage.dlq with its reason, and the events
around it are metered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import asyncpg

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
