"""Faults are normal: Postgres and the broker restart, workers are stopped, killed and joined.

Each scenario ends with every event debited exactly once, after the service is back, with no
manual step (DESIGN "Scale", invariants 3, 4, 6). These tests restart the local stack's own
PostgreSQL and Kafka (deploy/stack.py), so they run against a stack started by
`meterline dev up`, never a shared server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from deploy import stack
from schemas.settings import CommonSettings
from tests.integration.conftest import TopicFactory
from tests.integration.ledger_helpers import (
    balance_after_chain_consistent,
    ledger_matches_balances,
)
from tests.integration.worker import (
    Worker,
    add_test_price,
    end_offsets,
    event,
    fetchval_waiting,
    publish_usage,
    wait_until_consumed,
)

ROWS = "SELECT count(*) FROM credit_transactions WHERE type = 'usage'"


def _say(msg: str) -> None:
    print(f"[faults] {msg}")


async def _until(
    db: asyncpg.Pool, sql: str, pred: Callable[[Any], bool], workers: list[Worker], timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await fetchval_waiting(db, sql)
        if pred(value):
            return value
        await asyncio.sleep(0.2)
    logs = "\n".join(w.log()[-2000:] for w in workers)
    raise AssertionError(f"{sql!r} stuck at {value!r}\n{logs}")


def _stream(n: int, accounts: int, prefix: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    events = [
        event(f"{prefix}{i}", f"acct-{i % accounts}", input_tokens=1 + i % 997) for i in range(n)
    ]
    expected: dict[str, int] = {}
    for i in range(n):
        a = f"acct-{i % accounts}"
        expected[a] = expected.get(a, 0) - 2 * (1 + i % 997)
    return events, expected


async def _exactly_once(
    db: asyncpg.Pool, n: int, expected: dict[str, int], settings: CommonSettings
) -> None:
    # No good record was dead-lettered on the way (a fault is never the record's fault).
    assert (
        sum((await end_offsets(settings.kafka_bootstrap, settings.topic_usage_dlq)).values()) == 0
    )
    assert await fetchval_waiting(db, ROWS) == n
    assert (
        await fetchval_waiting(db, "SELECT count(DISTINCT event_id) FROM credit_transactions") == n
    )
    assert dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits")) == expected
    await ledger_matches_balances(db)
    await balance_after_chain_consistent(db)


async def test_postgres_restart_mid_stream(test_settings: CommonSettings, db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    n = 8000
    events, expected = _stream(n, 40, "pg")
    worker = Worker(test_settings, METERLINE_BATCH_MAX="300").start()
    try:
        await publish_usage(test_settings, events[: n // 2])
        await _until(db, ROWS, lambda v: v >= n // 8, [worker], 60)
        await asyncio.to_thread(stack.restart_postgres, _say)
        await publish_usage(test_settings, events[n // 2 :])
        await _until(db, ROWS, lambda v: v == n, [worker], 120)
        await wait_until_consumed(test_settings, worker)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    finally:
        worker.stop()
    await _exactly_once(db, n, expected, test_settings)


async def test_broker_restart_mid_stream(test_settings: CommonSettings, db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    n = 8000
    events, expected = _stream(n, 40, "kb")
    worker = Worker(test_settings, METERLINE_BATCH_MAX="300").start()
    try:
        await publish_usage(test_settings, events[: n // 2])
        await _until(db, ROWS, lambda v: v >= n // 8, [worker], 60)
        await asyncio.to_thread(stack.restart_kafka, _say, down_s=3.0)
        await publish_usage(test_settings, events[n // 2 :])
        await _until(db, ROWS, lambda v: v == n, [worker], 180)
        await wait_until_consumed(test_settings, worker, timeout=120)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    finally:
        worker.stop()
    await _exactly_once(db, n, expected, test_settings)


async def test_sigterm_while_postgres_is_down_exits_in_time_and_loses_nothing(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    n = 3000
    events, expected = _stream(n, 20, "st")
    timeout_s = 5
    worker = Worker(
        test_settings, METERLINE_BATCH_MAX="200", METERLINE_SHUTDOWN_TIMEOUT_S=str(timeout_s)
    ).start()
    try:
        await publish_usage(test_settings, events[:500])
        await _until(db, ROWS, lambda v: v == 500, [worker], 60)
        await asyncio.to_thread(stack.stop_postgres, _say)
        try:
            await publish_usage(test_settings, events[500:])
            # The worker is now stuck retrying its batch against the missing database.
            deadline = time.monotonic() + 60
            while "debit batch failed" not in worker.log() and "load catalog failed" not in (
                worker.log()
            ):
                assert time.monotonic() < deadline, worker.log()
                await asyncio.sleep(0.2)
            assert worker.proc is not None
            started = time.monotonic()
            os.killpg(worker.proc.pid, signal.SIGTERM)
            code = await asyncio.to_thread(worker.proc.wait, timeout_s + 15)
            took = time.monotonic() - started
        finally:
            await asyncio.to_thread(stack.start_postgres, _say)
        assert took <= timeout_s + 10, f"exited after {took:.1f}s\n{worker.log()}"
        _say(f"worker exited {code} {took:.1f}s after SIGTERM with Postgres down")
        # Nothing was committed past what is in the ledger: a new worker debits the rest.
        second = Worker(test_settings, group=worker.group, METERLINE_BATCH_MAX="200").start()
        try:
            await _until(db, ROWS, lambda v: v == n, [second], 120)
            await wait_until_consumed(test_settings, second)
        finally:
            second.stop()
    finally:
        worker.stop()
    await _exactly_once(db, n, expected, test_settings)


async def test_three_workers_repeated_rebalances_exactly_once(
    test_settings: CommonSettings, db: asyncpg.Pool, topic_factory: TopicFactory
) -> None:
    """30,000 events on 12 partitions while workers join, leave and are SIGKILLed mid-rebalance."""
    topic = await topic_factory("usage.events.12", partitions=12)
    settings = test_settings.model_copy(
        update={"topic_usage_events": topic, "usage_events_partitions": 12}
    )
    async with db.acquire() as conn:
        await add_test_price(conn)
    n = 30_000
    events, expected = _stream(n, 120, "rb")
    group = f"rb-{os.getpid()}-{int(time.time())}"
    env = {"METERLINE_BATCH_MAX": "500", "METERLINE_SHUTDOWN_TIMEOUT_S": "10"}
    workers = [Worker(settings, group=group, **env).start()]
    publishing = asyncio.create_task(publish_usage(settings, events))
    try:
        await _until(db, ROWS, lambda v: v >= n // 10, workers, 90)
        workers.append(Worker(settings, group=group, **env).start())  # one joins
        await _until(db, ROWS, lambda v: v >= n * 3 // 10, workers, 90)
        workers.append(Worker(settings, group=group, **env).start())  # a third joins …
        await asyncio.sleep(1.5)
        workers[0].kill()  # … and the first is SIGKILLed during that rebalance
        await _until(db, ROWS, lambda v: v >= n * 6 // 10, workers, 120)
        workers[1].stop()  # one leaves cleanly
        workers.append(Worker(settings, group=group, **env).start())  # and another joins
        await publishing
        await _until(db, ROWS, lambda v: v == n, workers, 180)
        # Every record committed by the survivors (redeliveries included) before checking.
        survivor = workers[-1]
        await wait_until_consumed(settings, survivor, timeout=120)
    finally:
        publishing.cancel()
        for w in workers:
            w.stop()
    await _exactly_once(db, n, expected, settings)
    # No metering loop died or stumbled on a partition revoked under its batch.
    for w in workers:
        log = await asyncio.to_thread(Path(w.log_path).read_text)
        assert "never retrieved" not in log and "step failed" not in log, log[-3000:]
    dups = await db.fetchval("SELECT count(*) FROM duplicate_events")
    _say(f"30,000 events through 3 rebalances and a SIGKILL: {dups} redeliveries counted")


pytestmark = pytest.mark.faults


async def test_worker_started_while_the_broker_is_down_waits_for_it(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    n = 500
    events, expected = _stream(n, 10, "bd")
    await asyncio.to_thread(stack.stop_kafka, _say)
    try:
        worker = Worker(test_settings).start()
        await asyncio.sleep(8)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    finally:
        await asyncio.to_thread(stack.start_kafka, _say)
    try:
        await publish_usage(test_settings, events)
        await _until(db, ROWS, lambda v: v == n, [worker], 120)
        await wait_until_consumed(test_settings, worker, timeout=120)
    finally:
        worker.stop()
    await _exactly_once(db, n, expected, test_settings)
