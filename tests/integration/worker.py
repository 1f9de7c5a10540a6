"""Helpers to run the real `meterline worker` as a subprocess and to publish raw records."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processors.catalog import insert_price_version
from schemas.settings import CommonSettings
from tests.integration.conftest import env_for

TEST_MODEL = "test/model"
USAGE_ROWS = "SELECT count(*) FROM credit_transactions WHERE type = 'usage'"


async def add_test_price(conn: asyncpg.Connection, **prices: str) -> None:
    """test/model: 2 credits per M input, 1 per M cached, 3 per M cache write, 8 per M output."""
    await insert_price_version(
        conn,
        model=prices.pop("model", TEST_MODEL),
        provider="test",
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal(prices.get("input", "2")),
        cached_input_per_mtok=Decimal(prices.get("cached", "1")),
        cache_write_per_mtok=Decimal(prices.get("cache_write", "3")),
        output_per_mtok=Decimal(prices.get("output", "8")),
        per_request=Decimal(prices.get("per_request", "0")),
        units={},
    )


def event(event_id: str, account: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "account_id": account,
        "occurred_at": datetime.now(UTC).isoformat(),
        "model": TEST_MODEL,
    }
    body.update(fields)
    return body


class Worker:
    """A `meterline worker` subprocess with the test's settings and its own consumer group."""

    def __init__(self, settings: CommonSettings, group: str | None = None, **env: str) -> None:
        self.settings = settings
        self.group = group or f"w-{uuid.uuid4().hex[:8]}"
        self.env = env_for(
            settings, METERLINE_WORKER_GROUP=self.group, METERLINE_BATCH_WITHIN_S="0.2", **env
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = f"/tmp/meterline-test-{self.group}.log"
        self.cwd = tempfile.mkdtemp(prefix=f"meterline-{self.group}-")  # what it leaves behind

    def start(self) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meterline", "worker"],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-5000:]
        except OSError:
            return ""


async def publish_raw(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def publish_events(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    await publish_raw(
        bootstrap, topic, [(e["account_id"].encode(), json.dumps(e).encode()) for e in events]
    )


async def wait_for(
    pool: asyncpg.Pool,
    sql: str,
    expected: Any,
    *,
    timeout: float = 90,
    worker: Worker | None = None,
) -> Any:
    """Poll a query until it returns expected (or fail with the last value and the worker log)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await pool.fetchval(sql)
        if value == expected:
            return value
        if worker and worker.proc and worker.proc.poll() is not None:
            break
        await asyncio.sleep(0.25)
    raise AssertionError(
        f"{sql!r} = {value!r}, expected {expected!r}\n" + (worker.log() if worker else "")
    )


async def _reader(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A started consumer of `topic` from its first record, in no group, committing nothing."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    return consumer


async def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    consumer = await _reader(bootstrap, topic)
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of `topic`: how many records it holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def consume_to_end(
    bootstrap: str, topic: str, expected: int, timeout: float = 30
) -> list[Any]:
    """Every record of `topic`: wait for `expected`, then read on to the end offsets.

    Call it once the producer has its acknowledgements: the end offsets then count every
    record written, so a duplicate beyond `expected` is always read, with no settling sleep.
    """
    consumer = await _reader(bootstrap, topic)
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        target = expected
        while time.monotonic() < deadline:
            if len(out) >= target:
                held = sum((await end_offsets(bootstrap, topic)).values())
                if len(out) >= held:
                    break
                target = held
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def publish_usage(settings: CommonSettings, events: list[dict[str, Any]]) -> None:
    """Publish usage events to the test's own usage topic."""
    await publish_events(settings.kafka_bootstrap, settings.topic_usage_events, events)


async def meter_with_worker(
    settings: CommonSettings,
    db: asyncpg.Pool,
    events: list[dict[str, Any]],
    *,
    usage_rows: int,
    raw: list[tuple[bytes | None, bytes]] | None = None,
) -> None:
    """Publish, run the real worker until `usage_rows` usage debits exist, stop it."""
    worker = Worker(settings).start()
    try:
        await publish_usage(settings, events)
        if raw:
            await publish_raw(settings.kafka_bootstrap, settings.topic_usage_events, raw)
        await wait_for(db, USAGE_ROWS, usage_rows, worker=worker)
    finally:
        worker.stop()


async def wait_until_consumed(
    settings: CommonSettings, worker: Worker, *, timeout: float = 60
) -> None:
    """Wait until the worker's group has committed every record of the usage topic.

    Faust commits an offset once the records before it are processed, so this is the moment
    every record (redeliveries after a disruption included) has been handled.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    topic = settings.topic_usage_events
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        ends = await end_offsets(settings.kafka_bootstrap, topic)
        deadline = time.monotonic() + timeout
        committed: dict[int, int] = {}
        while time.monotonic() < deadline:
            offsets = await admin.list_consumer_group_offsets(worker.group)
            committed = {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic}
            # A partition with no record has nothing to commit.
            if all(committed.get(p, 0) >= end for p, end in ends.items()):
                return
            if worker.proc and worker.proc.poll() is not None:
                break
            await asyncio.sleep(0.25)
    finally:
        await admin.close()
    raise AssertionError(f"group {worker.group} committed {committed}, end {ends}\n{worker.log()}")


async def fetchval_waiting(db: asyncpg.Pool, sql: str, timeout: float = 60) -> Any:
    """A query that waits out a database restart (the pool's old connections are dead)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await db.fetchval(sql)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
