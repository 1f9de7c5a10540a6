"""`meterline bench pipeline`: end-to-end metering throughput and latency, with a baseline.

Runs against the local stack (its own database and topic, so nothing of the demo is touched):

1. throughput — real `meterline worker` processes are started and ready; then N synthetic
   events over K prepaid accounts are published as fast as the producer goes. Measured: first
   publish → last debit committed (polled), i.e. sustained end-to-end events/s.
2. latency — events at a fixed rate R for S seconds; each event's publish time is compared with
   the moment its debit became visible (committed), polled every 10 ms. p50/p99 printed.
3. baseline — the same kind of events, consumed and debited one Postgres transaction per
   event (the per-request design), through the same ledger code; events/s and the ratio.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import bench_database
from processors.catalog import load_catalog, seed_catalog
from processors.ledger import LedgerPolicy, RatedEvent, debit_batch
from processors.metering import RawRecord, validate
from producers.synthetic import account_id, synthetic_events
from schemas.event import UsageEvent
from schemas.settings import CommonSettings

Say = Callable[[str], None]


@dataclass
class PipelineFigures:
    events: int
    publish_s: float
    end_to_end_s: float
    events_per_s: float
    latency_rate: float
    latency_events: int
    p50_ms: float
    p99_ms: float
    baseline_events: int
    baseline_per_s: float

    @property
    def ratio(self) -> float:
        return self.events_per_s / self.baseline_per_s if self.baseline_per_s else 0.0


async def _fresh_database(admin_dsn: str, name: str) -> str:
    dsn = await bench_database(admin_dsn, name, fresh=True)
    conn = await asyncpg.connect(dsn)
    try:
        await seed_catalog(conn)
    finally:
        await conn.close()
    return dsn


async def _prepay(dsn: str, accounts: int) -> None:
    """Every account on the cap-less pro tier with 1,000,000 credits, one allocation row each."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [account_id(i) for i in range(accounts)]
        await conn.execute(
            "INSERT INTO user_credits (account_id, tier, balance_micros)"
            " SELECT a, 'pro', 1000000000000 FROM unnest($1::text[]) a",
            ids,
        )
        await conn.execute(
            "INSERT INTO credit_transactions (account_id, type, amount_micros,"
            " balance_after_micros, reason) SELECT a, 'allocation', 1000000000000,"
            " 1000000000000, 'bench prepay' FROM unnest($1::text[]) a",
            ids,
        )
    finally:
        await conn.close()


async def _topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def _payloads(n: int, accounts: int, seed: int) -> list[tuple[bytes, bytes]]:
    return [e.to_kafka() for e in synthetic_events(n, accounts, seed=seed)]


async def _publish(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    *,
    rate: float = 0,
    sent_at: dict[bytes, float] | None = None,
) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    start = time.monotonic()
    futures = []
    try:
        for i, (key, value) in enumerate(records):
            if rate:
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if sent_at is not None:
                sent_at[value] = time.monotonic()
            futures.append(await producer.send(topic, key=key, value=value))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - start


def _start_workers(
    settings: CommonSettings, dsn: str, topic: str, group: str, n: int, log_dir: str
) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env.update(
        METERLINE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        METERLINE_DATABASE_URL=dsn,
        METERLINE_TOPIC_USAGE_EVENTS=topic,
        METERLINE_WORKER_GROUP=group,
        METERLINE_SEED_CATALOG="false",
    )
    procs = []
    for i in range(n):
        log = open(f"{log_dir}/bench-worker-{i}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "meterline", "worker", "--loglevel", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


async def _count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM usage_events"))


async def _wait_count(
    pool: asyncpg.Pool, target: int, timeout: float, say: Say, procs: list[subprocess.Popen[bytes]]
) -> float:
    """Poll until target usage rows are visible; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        n = await _count(pool)
        now = time.monotonic()
        if n >= target:
            return now
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a bench worker exited; see its log")
        if now > deadline:
            raise RuntimeError(f"only {n} of {target} events debited after {timeout}s")
        if now - last_report > 5:
            say(f"  … {n:,}/{target:,} debited")
            last_report = now
        await asyncio.sleep(0.1)


async def _latency(
    pool: asyncpg.Pool, bootstrap: str, topic: str, rate: float, seconds: float, accounts: int
) -> list[float]:
    n = int(rate * seconds)
    records = _payloads(n, accounts, seed=int(time.time()) + 7)
    by_event = {UsageEvent.model_validate_json(v).event_id: v for _, v in records}
    sent_at: dict[bytes, float] = {}
    last_id = int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM credit_transactions"))
    seen_at: dict[str, float] = {}

    async def poll() -> None:
        # Ledger ids are taken at insert, not at commit: with several workers a smaller id can
        # become visible after a larger one. Re-read from the lowest id not yet seen; a gap
        # that stays for 5 s is a rolled-back id and is passed.
        low = last_id
        seen: set[int] = set()
        gap_since: float | None = None
        while len(seen_at) < n:
            rows = await pool.fetch(
                "SELECT id, event_id FROM credit_transactions WHERE id > $1"
                " ORDER BY id LIMIT 50000",
                low,
            )
            now = time.monotonic()
            for r in rows:
                if r["id"] not in seen:
                    seen.add(r["id"])
                    seen_at.setdefault(r["event_id"], now)
            while low + 1 in seen:
                low += 1
                seen.discard(low)
            if seen and low + 1 not in seen:
                gap_since = gap_since or now
                if now - gap_since > 5:
                    low = min(seen) - 1
                    gap_since = None
            else:
                gap_since = None
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll())
    await _publish(bootstrap, topic, records, rate=rate, sent_at=sent_at)
    await asyncio.wait_for(poller, timeout=seconds + 120)
    return sorted((seen_at[e] - sent_at[by_event[e]]) * 1000 for e in seen_at)


async def _baseline(
    settings: CommonSettings, dsn: str, topic: str, n: int, accounts: int, say: Say
) -> float:
    """One Postgres transaction per event, through the same validation and ledger code."""
    await _publish(settings.kafka_bootstrap, topic, _payloads(n, accounts, seed=424242))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    catalog = await load_catalog(pool)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"baseline-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    policy = LedgerPolicy()
    done = 0
    start = time.monotonic()
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=500)
            for tp, records in batch.items():
                for r in records:
                    parsed = validate(
                        RawRecord(tp.topic, tp.partition, r.offset, r.key, r.value), max_bytes=65536
                    )
                    assert isinstance(parsed, UsageEvent)
                    version = catalog.version_at(parsed.model, parsed.occurred_at)
                    assert version is not None
                    async with pool.acquire() as conn:
                        await debit_batch(
                            conn,
                            [RatedEvent(parsed, version, None, tp.partition, r.offset)],
                            policy=policy,
                        )
                    done += 1
                await consumer.commit({tp: records[-1].offset + 1})
    finally:
        await consumer.stop()
        await pool.close()
    return n / (time.monotonic() - start)


async def run(
    *,
    events: int,
    accounts: int,
    workers: int,
    latency_rate: float,
    latency_seconds: float,
    baseline_events: int,
    say: Say,
    log_dir: str = "/tmp",
) -> PipelineFigures:
    """Run the three phases and return their figures."""
    settings = CommonSettings().require(kafka=True, database=True)
    run_id = uuid.uuid4().hex[:8]
    say(f"bench run {run_id}: {events:,} events over {accounts:,} accounts, {workers} worker(s)")
    dsn = await _fresh_database(settings.database_url, "meterline_bench_pipeline")
    await _prepay(dsn, accounts)
    topic = f"bench.{run_id}.usage.events"
    await _topic(settings.kafka_bootstrap, topic, settings.usage_events_partitions)
    say("generating events")
    records = _payloads(events, accounts, seed=int(run_id, 16))
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    procs = _start_workers(settings, dsn, topic, f"bench-{run_id}", workers, log_dir)
    try:
        say("warming up: workers join the group and debit a first event")
        await _publish(settings.kafka_bootstrap, topic, _payloads(1, 1, seed=99))
        await _wait_count(pool, 1, 120, say, procs)
        say(f"throughput: publishing {events:,} events")
        t0 = time.monotonic()
        pub = asyncio.create_task(_publish(settings.kafka_bootstrap, topic, records))
        t_end = await _wait_count(pool, events + 1, 3600, say, procs)
        publish_s = await pub
        e2e = t_end - t0
        say(f"  published in {publish_s:.1f}s; all debited {e2e:.1f}s after the first publish")
        say(f"latency: {latency_rate:,.0f} events/s for {latency_seconds:.0f}s")
        lat = await _latency(
            pool, settings.kafka_bootstrap, topic, latency_rate, latency_seconds, accounts
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        await pool.close()
    say(f"baseline: {baseline_events:,} events, one transaction each")
    base_topic = f"bench.{run_id}.baseline"
    await _topic(settings.kafka_bootstrap, base_topic, settings.usage_events_partitions)
    base_rate = await _baseline(settings, dsn, base_topic, baseline_events, accounts, say)
    return PipelineFigures(
        events=events,
        publish_s=publish_s,
        end_to_end_s=e2e,
        events_per_s=events / e2e,
        latency_rate=latency_rate,
        latency_events=len(lat),
        p50_ms=statistics.median(lat),
        p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        baseline_events=baseline_events,
        baseline_per_s=base_rate,
    )
