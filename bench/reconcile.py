"""Reconcile benchmark: N synthetic events on a fresh topic, debited, then one timed reconcile.

The ledger is written with debit_batch directly (the worker's own ledger call, in batches of
5,000) instead of running the worker: the benchmark times reconcile, not metering, and this
keeps the setup short and deterministic. The events are the same objects that were published,
so the ledger and the topic agree and the reconcile should come out clean.

Uses a database of its own beside the stack's (``meterline_bench_reconcile``, emptied of
ledger rows at each run) and a topic of its own (deleted afterwards unless kept).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import bench_database
from processors.catalog import load_catalog, seed_catalog
from processors.ledger import RatedEvent, debit_batch
from processors.reconcile import ReconcileResult, reconcile
from processors.settings import WorkerSettings
from producers.publisher import UsagePublisher
from producers.synthetic import synthetic_events

Say = Callable[[str], None]
_LEDGER_TABLES = (
    "credit_transactions, usage_events, debited_events, credit_transaction_keys, user_credits,"
    " monthly_spend, usage_daily, duplicate_events, alert_outbox"
)


@dataclass
class ReconcileBench:
    """The figures: setup times and the timed reconcile."""

    events: int
    publish_s: float
    debit_s: float
    result: ReconcileResult

    def lines(self) -> list[str]:
        r = self.result
        rate = r.in_range / r.seconds if r.seconds else 0.0
        return [
            f"setup: published {self.events:,} events in {self.publish_s:.1f}s,"
            f" debited them in {self.debit_s:.1f}s (debit_batch, 5,000 per batch)",
            f"reconcile: {r.read:,} records read, {r.in_range:,} events compared in"
            f" {r.seconds:.2f}s = {rate:,.0f} events/s; findings {r.counts()}",
        ]


async def _database(base_dsn: str, name: str) -> str:
    dsn = await bench_database(base_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {_LEDGER_TABLES} CASCADE")
        await seed_catalog(conn)
    finally:
        await conn.close()
    return dsn


async def run_reconcile_bench(
    settings: WorkerSettings,
    *,
    events: int,
    accounts: int = 1000,
    partitions: int = 12,
    database: str = "meterline_bench_reconcile",
    keep_topic: bool = False,
    say: Say = print,
) -> ReconcileBench:
    """Publish and debit `events` synthetic events, then time reconcile over them."""
    dsn = await _database(settings.database_url, database)
    topic = f"bench.reconcile.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    policy = settings.ledger_policy()
    now = datetime.now(UTC)
    window = timedelta(minutes=10)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                catalog = await load_catalog(conn)
            gen = synthetic_events(events, accounts, seed=7, now=now, window=window)
            publish_s = debit_s = 0.0
            done = 0
            async with UsagePublisher(settings.kafka_bootstrap, topic, linger_ms=20) as pub:
                while chunk := list(islice(gen, 50_000)):
                    t = time.monotonic()
                    sent = await pub.publish_many(chunk)
                    publish_s += time.monotonic() - t
                    if sent.failed:
                        raise RuntimeError(f"{len(sent.failed)} events not published")
                    t = time.monotonic()
                    async with pool.acquire() as conn:
                        for i in range(0, len(chunk), 5000):
                            rated = []
                            for ev in chunk[i : i + 5000]:
                                v = catalog.version_at(ev.model, ev.occurred_at)
                                assert v is not None, f"synthetic model {ev.model} has no price"
                                rated.append(RatedEvent(ev, v, catalog.provider_for(ev.model)))
                            await debit_batch(conn, rated, policy=policy)
                    debit_s += time.monotonic() - t
                    done += len(chunk)
                    say(f"  {done:,} / {events:,} published and debited")
        finally:
            await pool.close()
        say("reconciling …")
        result = await reconcile(
            bootstrap=settings.kafka_bootstrap,
            database_url=dsn,
            topic=topic,
            start=now - window - timedelta(minutes=1),
            end=now + timedelta(minutes=1),
            policy=policy,
            grace=timedelta(minutes=30),
        )
        return ReconcileBench(events, publish_s, debit_s, result)
    finally:
        if not keep_topic:
            try:
                await admin.delete_topics([topic])
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        await admin.close()


def main(events: int = 100_000) -> None:
    """python -m bench.reconcile [N]"""
    import sys

    from processors.settings import WorkerSettings
    from schemas.settings import get_settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else events
    bench = asyncio.run(run_reconcile_bench(get_settings(WorkerSettings), events=n))
    for line in bench.lines():
        print(line)


if __name__ == "__main__":
    main()
