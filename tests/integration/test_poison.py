"""Poison records on usage.events never stall metering (DESIGN invariants 4 and 9).

Hostile records go straight onto the topic as raw bytes, interleaved with good events for
many accounts on every partition: each poison record ends in usage.dlq with its reason, every
good event is debited once, and the worker never waits on a record that cannot pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from schemas import topics
from schemas.settings import CommonSettings
from tests.integration.ledger_helpers import (
    balance_after_chain_consistent,
    ledger_matches_balances,
)
from tests.integration.worker import (
    USAGE_ROWS,
    Worker,
    add_test_price,
    consume_to_end,
    event,
    publish_raw,
    wait_for,
    wait_until_consumed,
)


def _raw(body: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(body, bytes):
        return body
    return (body if isinstance(body, str) else json.dumps(body)).encode()


def poison_corpus() -> list[tuple[str, bytes]]:
    """(expected DLQ reason, record value) for records no retry can fix."""
    now = datetime.now(UTC).isoformat()
    base = {"account_id": "acct-0", "occurred_at": now, "model": "test/model"}
    return [
        ("invalid_json", b"{not json"),
        ("invalid_json", b"   "),
        ("invalid_event", _raw([1, 2, 3])),
        # Values Postgres or Python cannot hold, refused by the event's bounds:
        ("invalid_event", _raw({**base, "event_id": "nul-meta", "metadata": {"a": "x\u0000y"}})),
        ("invalid_event", _raw({**base, "event_id": "nul\u0000id"})),
        ("invalid_event", _raw({**base, "event_id": "nul-model", "model": "test/mo\u0000del"})),
        ("invalid_event", _raw({**base, "event_id": "ctl-src", "source": "proxy\u0007"})),
        ("invalid_event", _raw({**base, "event_id": "huge", "input_tokens": 10**30})),
        ("invalid_event", _raw({**base, "event_id": "big", "output_tokens": 10**12 + 1})),
        (
            "invalid_event",
            _raw({**base, "event_id": "y9999", "occurred_at": "9999-12-31T23:59:59-05:00"}),
        ),
        (
            "invalid_event",
            _raw({**base, "event_id": "y0001", "occurred_at": "0001-01-01T00:00:00+05:00"}),
        ),
        (
            "invalid_event",
            _raw({**base, "event_id": "future", "occurred_at": "2100-01-01T00:00:00Z"}),
        ),
        ("invalid_event", _raw({**base, "event_id": "unit", "units": {"images": 1e300}})),
        # Counts within bounds, but the priced cost is past 10^12 credits: refused when priced.
        (
            "invalid_event",
            _raw({**base, "event_id": "costly", "model": "test/pricey", "output_tokens": 10**12}),
        ),
        # Refused only when written: the database's CHECK below, which no bound knows about.
        ("rejected", _raw({**base, "event_id": "dbpoison-1", "input_tokens": 5})),
        ("rejected", _raw({**base, "account_id": "acct-3", "event_id": "dbpoison-2"})),
    ]


async def test_poison_records_are_dead_lettered_and_the_rest_debited_once(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
        await add_test_price(conn, model="test/pricey", output="10000000000")
        # A value the database refuses that passes every bound: only the write finds it.
        await conn.execute(
            "ALTER TABLE usage_events ADD CONSTRAINT test_poison"
            " CHECK (event_id NOT LIKE 'dbpoison-%')"
        )
    try:
        poison = poison_corpus()
        accounts = 40
        good = [event(f"g{i}", f"acct-{i % accounts}", input_tokens=1000 + i) for i in range(1200)]
        # Interleave: a poison record every 80 good ones, keyed to land on every partition.
        records: list[tuple[bytes | None, bytes]] = []
        bad = iter(poison)
        for i, ev in enumerate(good):
            records.append((ev["account_id"].encode(), json.dumps(ev).encode()))
            if i % 80 == 40:
                nxt = next(bad, None)
                if nxt is not None:
                    records.append((f"acct-{i % accounts}".encode(), nxt[1]))
        for _, value in bad:
            records.append((b"acct-7", value))
        worker = Worker(test_settings, METERLINE_BATCH_MAX="400").start()
        try:
            started = time.monotonic()
            await publish_raw(
                test_settings.kafka_bootstrap, test_settings.topic_usage_events, records
            )
            await wait_for(db, USAGE_ROWS, len(good), timeout=60, worker=worker)
            await wait_until_consumed(test_settings, worker)
            drained_s = time.monotonic() - started
        finally:
            worker.stop()
        log = await asyncio.to_thread(Path(worker.log_path).read_text)
    finally:
        async with db.acquire() as conn:
            await conn.execute("ALTER TABLE usage_events DROP CONSTRAINT IF EXISTS test_poison")

    dlq = await consume_to_end(
        test_settings.kafka_bootstrap, test_settings.topic_usage_dlq, expected=len(poison)
    )
    got = sorted((dict(r.headers)[topics.DLQ_HEADER_REASON].decode(), r.value) for r in dlq)
    assert got == sorted(poison)
    rejected = [r for r in dlq if dict(r.headers)[topics.DLQ_HEADER_REASON] == b"rejected"]
    assert all(b"test_poison" in dict(r.headers)[topics.DLQ_HEADER_MESSAGE] for r in rejected)

    # Every good event debited exactly once, with its exact price (2 credits per M input).
    assert await db.fetchval(USAGE_ROWS) == len(good)
    total = await db.fetchval(
        "SELECT -sum(amount_micros) FROM credit_transactions WHERE type = 'usage'"
    )
    assert total == sum(2 * (1000 + i) for i in range(1200))
    await ledger_matches_balances(db)
    await balance_after_chain_consistent(db)
    # No transient retry loop: a refused record is isolated, not retried for ever.
    assert "retrying in" not in log, log[-3000:]
    assert drained_s < 60
