"""`meterline bench pipeline`: the worker's drain rate beside a lean reference, and latency.

Runs against the local stack (databases and topics of its own, so nothing of the demo is
touched). N synthetic events over K accounts are published once to one topic; then, each in
its own consumer group and database:

1. reference — bench/reference.py, the leanest exactly-once pipeline this box runs (aiokafka
   getmany → json.loads → dict prices → one unnest transaction per poll), drains the topic;
2. worker drains — `meterline worker` processes (1, then 2 by default) drain the same topic:
   events/s from the first debit visible to the last (start-up excluded), the ratio to the
   reference, and the first worker's RSS after 200,000 events and at the end;
3. latency — events at half the 1-worker drain rate for S seconds, publish → debit committed,
   p50/p99 (polled every 10 ms).
4. optional baseline — one Postgres transaction per event through the ledger code.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import reference
from bench.common import bench_database
from processors.catalog import load_catalog
from processors.ledger import LedgerPolicy, RatedEvent, debit_batch, post_entry
from processors.metering import RawRecord, validate
from processors.settings import WorkerSettings
from producers.synthetic import account_id, synthetic_events
from schemas import topics
from schemas.event import UsageEvent
from schemas.settings import CommonSettings

Say = Callable[[str], None]


@dataclass(frozen=True)
class CpuPerEvent:
    """CPU seconds spent per event while draining: the pipeline's own process(es), Postgres.

    CPU time, unlike a rate, barely moves when other jobs share the box: it is the figure to
    compare across runs on a busy machine.
    """

    client_us: float
    postgres_us: float

    def __str__(self) -> str:
        return f"CPU per event: {self.client_us:.0f} µs client + {self.postgres_us:.0f} µs Postgres"


def _proc_cpu(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (with children: of its reaped children too), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _postmaster(dsn: str) -> int:
    """The pid of the postmaster serving dsn (the parent of a backend of ours)."""
    conn = await asyncpg.connect(dsn)
    try:
        return _ppid(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


def _postgres_cpu(postmaster: int) -> float:
    """CPU seconds of one Postgres server's processes, backends that exited included (the
    postmaster adds their CPU to its children's time when it reaps them)."""
    total = _proc_cpu(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if _ppid(int(entry.name)) == postmaster:
                    total += _proc_cpu(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return total


@dataclass
class Drain:
    workers: int
    events: int
    seconds: float
    rss_mib: dict[int, float] = field(default_factory=dict)  # events debited → worker 0's RSS
    cpu: CpuPerEvent | None = None

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class PipelineFigures:
    events: int
    publish_s: float
    reference_per_s: float
    reference_cpu: CpuPerEvent | None
    drains: list[Drain]
    latency_rate: float
    latency_events: int
    p50_ms: float
    p99_ms: float
    baseline_events: int = 0
    baseline_per_s: float = 0.0


def report(f: PipelineFigures) -> list[str]:
    """One run's figures as the lines `meterline bench pipeline` prints."""
    lines = [
        f"published   {f.events:,} events in {f.publish_s:.1f}s",
        f"reference   {f.reference_per_s:,.0f} events/s (lean aiokafka + asyncpg pipeline)",
    ]
    if f.reference_cpu is not None:
        lines.append(f"            {f.reference_cpu}")
    for d in f.drains:
        lines.append(
            f"worker x{d.workers}   {d.per_s:,.0f} events/s = {d.per_s / f.reference_per_s:.2f}x "
            f"the reference ({d.events:,} events in {d.seconds:.1f}s)"
        )
        rss = ", ".join(f"{n:,} events: {mib:.0f} MiB" for n, mib in sorted(d.rss_mib.items()))
        lines.append(f"            worker RSS after {rss}")
        if d.cpu is not None:
            lines.append(f"            {d.cpu}{_cpu_ratio(d.cpu, f.reference_cpu)}")
    if len(f.drains) > 1 and f.drains[0].per_s:
        lines.append(
            f"scaling     x{f.drains[-1].workers} / x{f.drains[0].workers} = {_scaling(f):.2f}"
        )
    lines.append(
        f"latency     {f.latency_events:,} events at {f.latency_rate:,.0f}/s: "
        f"p50 {f.p50_ms:.0f} ms, p99 {f.p99_ms:.0f} ms (publish → debit committed)"
    )
    if f.baseline_events:
        lines.append(
            f"baseline    one transaction per event: {f.baseline_per_s:,.0f} events/s "
            f"over {f.baseline_events:,} events"
        )
    return lines


def medians(runs: list[PipelineFigures]) -> list[str]:
    """The median of several runs (each ratio is taken within its own run, then the median of
    those): what a target is judged on when the box's speed drifts from one run to the next."""
    med = statistics.median
    ref = med(f.reference_per_s for f in runs)
    lines = [f"median of {len(runs)} runs", f"reference   {ref:,.0f} events/s"]
    for i, d in enumerate(runs[0].drains):
        drains = [f.drains[i] for f in runs]
        ratio = med(x.per_s / f.reference_per_s for x, f in zip(drains, runs, strict=True))
        lines.append(
            f"worker x{d.workers}   {med(x.per_s for x in drains):,.0f} events/s; "
            f"{ratio:.2f}x the reference (each run's ratio: "
            + ", ".join(
                f"{x.per_s / f.reference_per_s:.2f}" for x, f in zip(drains, runs, strict=True)
            )
            + ")"
        )
        cpus = [x.cpu for x in drains if x.cpu is not None]
        if cpus:
            lines.append(
                f"            CPU per event: {med(c.client_us for c in cpus):.0f} µs client + "
                f"{med(c.postgres_us for c in cpus):.0f} µs Postgres"
            )
    if len(runs[0].drains) > 1:
        lines.append(
            f"scaling     x{runs[0].drains[-1].workers} / x{runs[0].drains[0].workers} = "
            f"{med(_scaling(f) for f in runs):.2f}"
        )
    lines.append(f"latency     p99 {med(f.p99_ms for f in runs):.0f} ms")
    return lines


def _scaling(f: PipelineFigures) -> float:
    return f.drains[-1].per_s / f.drains[0].per_s if f.drains[0].per_s else 0.0


def _cpu_ratio(ours: CpuPerEvent, ref: CpuPerEvent | None) -> str:
    if ref is None or not ref.client_us + ref.postgres_us:
        return ""
    total = (ours.client_us + ours.postgres_us) / (ref.client_us + ref.postgres_us)
    return f" ({total:.1f}x the reference's)"


async def _prepay(dsn: str, accounts: int) -> None:
    """Every account on the cap-less pro tier with 1,000,000 credits, through the ledger."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [account_id(i) for i in range(accounts)]
        await conn.execute(
            "INSERT INTO user_credits (account_id, tier, balance_micros)"
            " SELECT a, 'pro', 0 FROM unnest($1::text[]) a",
            ids,
        )
        for a in ids:
            await post_entry(
                conn,
                account_id=a,
                type="allocation",
                amount_micros=1_000_000_000_000,
                reason="bench prepay",
                idempotency_key=None,
                policy=LedgerPolicy(),
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
    # BENCH_WORKER_LOGLEVEL=info keeps each batch's line in the workers' logs.
    loglevel = os.environ.get("BENCH_WORKER_LOGLEVEL", "warning")
    procs = []
    for i in range(n):
        log = open(f"{log_dir}/bench-worker-{i}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "meterline", "worker", "--loglevel", loglevel],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


async def _count(pool: asyncpg.Pool, base: int) -> int:
    """Events debited so far: the highest ledger id beyond base (the prepaid accounts' rows).

    The worker writes one ledger row per new event and nothing else here, and ids are taken in
    order, so this is the count without `count(*)`: polled every 50 ms, a count of a growing
    usage table took a core's worth of Postgres CPU from the worker it measures.
    """
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM credit_transactions")) - base


async def _wait_count(
    pool: asyncpg.Pool,
    base: int,
    target: int,
    timeout: float,
    say: Say,
    procs: list[subprocess.Popen[bytes]],
) -> float:
    """Poll until target usage rows are visible; returns the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        n = await _count(pool, base)
        now = time.monotonic()
        if n >= target:
            return now
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a bench worker exited; see its log")
        if now > deadline:
            raise RuntimeError(f"only {n} of {target} events debited after {timeout}s")
        if now - last_report > 5:
            say(f"  … {n:,}/{target:,} debited" if target > 1 else "  … waiting for a first debit")
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
                        RawRecord(tp.topic, tp.partition, r.offset, r.key, r.value),
                        max_bytes=topics.MAX_EVENT_BYTES,
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


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _drain(
    settings: CommonSettings,
    admin_dsn: str,
    topic: str,
    *,
    events: int,
    accounts: int,
    workers: int,
    run_id: str,
    say: Say,
    log_dir: str,
    keep: bool = False,
) -> tuple[Drain, asyncpg.Pool | None, list[subprocess.Popen[bytes]]]:
    """Start `workers` workers on a fresh database and group; time them draining `events`."""
    dsn = await bench_database(
        admin_dsn, f"meterline_bench_{run_id}_w{workers}", fresh=True, seed_prices=True
    )
    await _prepay(dsn, accounts)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert pool is not None
    base = await _count(pool, 0)
    procs = _start_workers(settings, dsn, topic, f"bench-{run_id}-w{workers}", workers, log_dir)
    drain = Drain(workers, 0, 0.0)
    try:
        first = await _wait_count(pool, base, 1, 180, say, procs)
        at_first = await _count(pool, base)
        postmaster = await _postmaster(dsn)
        cpu_at_first = sum(_proc_cpu(p.pid) for p in procs), _postgres_cpu(postmaster)
        marks = [m for m in (200_000, 2_000_000) if m < events]
        while True:
            n = await _count(pool, base)
            while marks and n >= marks[0]:
                drain.rss_mib[marks.pop(0)] = _rss_mib(procs[0].pid)
            if n >= events:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a bench worker exited; see {log_dir}/bench-worker-*.log")
            await asyncio.sleep(0.05)
        drain.seconds = time.monotonic() - first
        drain.events = events - at_first
        drain.cpu = CpuPerEvent(
            (sum(_proc_cpu(p.pid) for p in procs) - cpu_at_first[0]) / drain.events * 1e6,
            (_postgres_cpu(postmaster) - cpu_at_first[1]) / drain.events * 1e6,
        )
        drain.rss_mib[events] = _rss_mib(procs[0].pid)
    except BaseException:
        _stop(procs)
        await pool.close()
        raise
    if keep:
        return drain, pool, procs
    _stop(procs)
    await pool.close()
    return drain, None, []


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            p.kill()


@asynccontextmanager
async def _dropped_at_end(settings: CommonSettings, run_id: str) -> AsyncIterator[None]:
    """The run's databases and topics carry its id (two benches on one stack do not clash)
    and are dropped when it ends, however it ends."""
    try:
        yield
    finally:
        await _drop(settings, run_id)


async def _drop(settings: CommonSettings, run_id: str) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        for name in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", f"meterline_bench_{run_id}_%"
        ):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(f"bench.{run_id}.")]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def run(
    *,
    events: int,
    accounts: int,
    workers: list[int],
    latency_seconds: float,
    baseline_events: int,
    say: Say,
    log_dir: str = "/tmp",
) -> PipelineFigures:
    """Publish once, drain with the reference and with the workers, then measure latency."""
    settings = CommonSettings().require(kafka=True, database=True)
    run_id = uuid.uuid4().hex[:8]
    async with _dropped_at_end(settings, run_id):
        say(f"bench run {run_id}: {events:,} events over {accounts:,} accounts")
        topic = f"bench.{run_id}.usage.events"
        await _topic(settings.kafka_bootstrap, topic, settings.usage_events_partitions)
        say("generating events")
        records = _payloads(events, accounts, seed=int(run_id, 16))
        say(f"publishing {events:,} events")
        publish_s = await _publish(settings.kafka_bootstrap, topic, records)
        del records
        say(f"  published in {publish_s:.1f}s")

        say("reference: the lean pipeline drains the topic")
        ref_dsn = await bench_database(
            settings.database_url,
            f"meterline_bench_{run_id}_reference",
            fresh=True,
            seed_prices=True,
        )
        async with asyncpg.create_pool(ref_dsn, min_size=1, max_size=1) as ref_pool:
            async with ref_pool.acquire() as conn:
                await reference.prepare(conn, [account_id(i) for i in range(accounts)])
                catalog = await load_catalog(conn)
        batch_max = int(
            os.environ.get("METERLINE_BATCH_MAX")
            or WorkerSettings.model_fields["batch_max"].default
        )
        postmaster = await _postmaster(ref_dsn)
        cpu_before = time.process_time(), _postgres_cpu(postmaster)
        ref_rate = await reference.drain(
            ref_dsn, settings.kafka_bootstrap, topic, events, catalog, batch_max=batch_max
        )
        # The reference's backend has just exited: its CPU reaches the postmaster's children's time
        # only once the postmaster has reaped it (read at once, a 2,000,000-event run showed 0 µs).
        await asyncio.sleep(1.0)
        ref_cpu = CpuPerEvent(
            (time.process_time() - cpu_before[0]) / events * 1e6,
            (_postgres_cpu(postmaster) - cpu_before[1]) / events * 1e6,
        )
        say(f"  reference: {ref_rate:,.0f} events/s; {ref_cpu}")

        drains: list[Drain] = []
        lat: list[float] = []
        for k in workers:
            say(f"{k} worker(s) drain the topic")
            keep = k == workers[0]
            drain, pool, procs = await _drain(
                settings,
                settings.database_url,
                topic,
                events=events,
                accounts=accounts,
                workers=k,
                run_id=run_id,
                say=say,
                log_dir=log_dir,
                keep=keep,
            )
            drains.append(drain)
            say(
                f"  {k} worker(s): {drain.per_s:,.0f} events/s ({drain.per_s / ref_rate:.2f}x);"
                f" {drain.cpu}"
            )
            if pool is not None:
                try:
                    rate = max(drain.per_s / 2, 1.0)
                    say(f"latency: {rate:,.0f} events/s (half the drain rate), {latency_seconds}s")
                    lat = await _latency(
                        pool, settings.kafka_bootstrap, topic, rate, latency_seconds, accounts
                    )
                finally:
                    _stop(procs)
                    await pool.close()
        base_rate = 0.0
        if baseline_events:
            say(f"baseline: {baseline_events:,} events, one transaction each")
            base_topic = f"bench.{run_id}.baseline"
            await _topic(settings.kafka_bootstrap, base_topic, settings.usage_events_partitions)
            base_dsn = await bench_database(
                settings.database_url,
                f"meterline_bench_{run_id}_baseline",
                fresh=True,
                seed_prices=True,
            )
            await _prepay(base_dsn, accounts)
            base_rate = await _baseline(
                settings, base_dsn, base_topic, baseline_events, accounts, say
            )
        return PipelineFigures(
            events=events,
            publish_s=publish_s,
            reference_per_s=ref_rate,
            reference_cpu=ref_cpu,
            drains=drains,
            latency_rate=drains[0].per_s / 2 if drains else 0.0,
            latency_events=len(lat),
            p50_ms=statistics.median(lat) if lat else 0.0,
            p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
            baseline_events=baseline_events,
            baseline_per_s=base_rate,
        )
