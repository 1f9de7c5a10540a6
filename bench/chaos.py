"""`meterline bench chaos`: metering under random faults, then proof that nothing was lost.

A harness, not a test. On the local stack (stack.json of METERLINE_HOME — it restarts that
stack's Kafka and Postgres), with a database and topics of its own, it runs real
`meterline worker`s and a real `meterline api`, a synthetic stream of usage events (straight to
Kafka and through HTTP ingest) and API deductions for prepaid accounts, and injects a random
fault every 15–45 s: a worker SIGKILLed or SIGTERMed (then restarted), Postgres restarted, the
broker stopped for a few seconds, a burst of poison records. Then it stops the faults and the
load, waits for quiet (every offset of the worker group at the end of the topic, the alert
outbox empty), reconciles the run's time range, reads the DLQ and prints the figures with a
PASS/FAIL line: 0 missing, 0 extra, 0 amount mismatches, 0 balances off their ledger, every
acknowledged event debited, every poison record in the DLQ with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.fernet import Fernet
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.chaos_load import LoadStats, Traffic
from bench.chaos_procs import (
    Child,
    child_env,
    create_admin_key,
    free_port,
    local_stack_or_fail,
    wait_healthy,
)
from bench.common import bench_database
from processors.reconcile import ReconcileResult, reconcile
from processors.settings import LedgerSettings
from processors.topic_range import make_consumer, read_range, resolve_range
from schemas import topics
from schemas.settings import CommonSettings

FAULTS = ("worker_sigkill", "worker_sigterm", "postgres_restart", "broker_restart", "poison")
PARTITIONS = 12
SHUTDOWN_TIMEOUT_S = 15


@dataclass(frozen=True)
class StackControl:
    """How the harness restarts the local stack's services (the CLI hands in deploy.stack's)."""

    restart_postgres: Callable[[], None]
    restart_kafka: Callable[[float], None]  # the broker stays down this many seconds


@dataclass
class ChaosConfig:
    """What the harness runs."""

    minutes: float
    rate: float = 300.0
    http_share: float = 0.3
    accounts: int = 200
    deduct_rate: float = 5.0
    workers: int = 2
    fault_every: tuple[float, float] = (15.0, 45.0)
    database: str = "meterline_bench_chaos"
    quiet_timeout_s: float = 600.0
    log_dir: Path | None = None


@dataclass
class FaultLog:
    """Faults injected, by kind, and what they showed."""

    count: Counter[str] = field(default_factory=Counter)
    sigterm_exit_s: list[float] = field(default_factory=list)
    stuck_on_sigterm: int = 0  # workers that did not exit within the shutdown bound
    worker_deaths: list[str] = field(default_factory=list)  # exits nobody asked for
    errors: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The figures the harness prints."""

    run_id: str
    minutes: float
    load: LoadStats
    faults: FaultLog
    debited: int
    lost: int  # acknowledged events with no usage debit
    duplicates: int
    duplicates_seen: int
    deduction_rows: int
    chain_breaks: int
    dlq: Counter[str]
    poison_missing: list[tuple[str, bytes]]
    dlq_unexpected: int
    recon: ReconcileResult
    quiet: bool
    quiet_s: float
    log_dir: Path

    def passed(self) -> bool:
        c = self.recon.counts()
        return (
            self.quiet
            and c["missing"] == 0
            and c["extra"] == 0
            and c["amount"] == 0
            and c["balance"] == 0
            and self.lost == 0
            and not self.poison_missing
            and self.dlq_unexpected == 0
            and self.chain_breaks == 0
            and self.deduction_rows == self.load.deduct_ok
            and not self.load.deduct_errors
            and self.load.http_refused == 0
            and self.faults.stuck_on_sigterm == 0
            and not self.faults.worker_deaths
        )

    def lines(self) -> list[str]:
        ld, f, c = self.load, self.faults, self.recon.counts()
        by_reason = ", ".join(f"{r} {n:,}" for r, n in sorted(self.dlq.items())) or "none"
        faults = ", ".join(f"{k} {f.count[k]}" for k in FAULTS)
        http = ", ".join(f"{s} {n:,}" for s, n in sorted(ld.http_status.items()))
        term = (
            f"max {max(f.sigterm_exit_s):.1f}s over {len(f.sigterm_exit_s)}"
            if f.sigterm_exit_s
            else "none"
        )
        out = [
            f"chaos run {self.run_id}: {self.minutes:g} min of load and faults;"
            f" quiet {'reached' if self.quiet else 'NOT reached'} {self.quiet_s:.0f}s after",
            f"faults injected       {sum(f.count.values())}: {faults}",
            f"worker SIGTERM exits  {term} (bound {SHUTDOWN_TIMEOUT_S}s);"
            f" stuck {f.stuck_on_sigterm}; unexpected exits {len(f.worker_deaths)}",
            f"events published      {ld.published:,} acknowledged"
            f" ({len(ld.kafka_acked):,} to Kafka, {len(ld.http_acked):,} via HTTP ingest)",
            f"Kafka sends           {ld.kafka_resends:,} resends"
            f" ({', '.join(f'{k} {n:,}' for k, n in ld.kafka_errors.most_common()) or '-'});"
            f" producer replaced {ld.producer_replaced}×",
            f"HTTP ingest           {ld.http_requests:,} requests, {ld.http_retries:,} retried;"
            f" answers: {http or 'none'}; events refused {ld.http_refused}",
            f"HTTP 503 problems     "
            f"{', '.join(f'{k} {n:,}' for k, n in ld.http_problems.most_common()) or 'none'}",
            f"events debited        {self.debited:,}; acknowledged but not debited {self.lost:,}",
            f"duplicates recorded   {self.duplicates:,} events ({self.duplicates_seen:,} copies)",
            f"DLQ records           {sum(self.dlq.values()):,}: {by_reason}",
            f"poison records        {len(ld.poison)} sent, {len(self.poison_missing)} not in the"
            f" DLQ with their reason; DLQ records that are no poison sent: {self.dlq_unexpected}",
            f"API deductions        ok {ld.deduct_ok:,}, 402 {ld.deduct_402:,},"
            f" retried {ld.deduct_retried:,} (replayed {ld.deduct_replayed:,}),"
            f" errors {sum(ld.deduct_errors.values())}; deduction rows {self.deduction_rows:,}",
            f"reconcile             {self.recon.read:,} records read, {self.recon.in_range:,}"
            f" events in range ({self.recon.duplicates:,} seen twice), invalid"
            f" {dict(self.recon.invalid) or '{}'}, {self.recon.seconds:.1f}s",
            f"missing               {c['missing']}",
            f"extra                 {c['extra']}",
            f"amount mismatches     {c['amount']}",
            f"balance ≠ ledger      {c['balance']} accounts;"
            f" balance_after chain breaks {self.chain_breaks}",
        ]
        for err, n in ld.deduct_errors.most_common(3):
            out.append(f"  deduction error ×{n}: {err}")
        for reason, value in self.poison_missing[:5]:
            out.append(f"  poison not dead-lettered as {reason}: {value[:100]!r}")
        for finding in self.recon.findings[:5]:
            out.append(f"  finding: {finding.as_dict()}")
        for death in f.worker_deaths[:5]:
            out.append(f"  worker exited by itself: {death}")
        for err in f.errors[:5]:
            out.append(f"  fault error: {err}")
        out.append(f"logs                  {self.log_dir}")
        verdict = "PASS" if self.passed() else "FAIL"
        out.append(
            f"{verdict}: goal 0 missing, 0 extra, 0 mismatches, every poison record in the DLQ"
            f" (missing {c['missing']}, extra {c['extra']}, amount {c['amount']},"
            f" balance {c['balance']}, lost {self.lost}, poison absent"
            f" {len(self.poison_missing)})"
        )
        return out


# ---------------------------------------------------------------- setup


async def _create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, p, 1) for n, p in names.items()])
    finally:
        await admin.close()


async def _fetchval(dsn: str, sql: str, timeout: float = 120) -> Any:
    """A query that waits out a database restart."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


# ---------------------------------------------------------------- faults


class Chaos:
    """Injects one random fault at a time into the workers and the stack."""

    def __init__(
        self,
        workers: list[Child],
        traffic: Traffic,
        control: StackControl,
        log: Callable[[str], None],
        seed: str,
    ) -> None:
        self.workers = workers
        self.control = control
        self.traffic = traffic
        self.log = log
        self.faults = FaultLog()
        self.rng = random.Random(seed)
        self._bursts = 0
        self._expected_down: set[str] = set()

    def check_workers(self) -> None:
        """Record (and restart) a worker that exited when no fault asked it to."""
        for w in self.workers:
            if not w.alive() and w.name not in self._expected_down:
                code = w.proc.returncode if w.proc is not None else None
                self.faults.worker_deaths.append(f"{w.name} exit code {code}; see {w.log_path}")
                self.log(f"[red]{w.name} exited by itself ({code}); restarting it")
                w.start()

    async def run(self, every: tuple[float, float], stop: asyncio.Event) -> None:
        kinds: list[str] = []
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*every))
                return
            except TimeoutError:
                pass
            if not kinds:  # each kind once per round, in a random order
                kinds = list(FAULTS)
                self.rng.shuffle(kinds)
            kind = kinds.pop()
            try:
                await self.inject(kind)
                self.faults.count[kind] += 1
            except Exception as exc:  # noqa: BLE001 - report it; the run goes on
                self.faults.errors.append(f"{kind}: {exc!r}")
                self.log(f"[red]fault {kind} failed: {exc!r}")

    async def inject(self, kind: str) -> None:
        if kind in ("worker_sigkill", "worker_sigterm"):
            worker = self.rng.choice(self.workers)
            self._expected_down.add(worker.name)
            try:
                if kind == "worker_sigkill":
                    worker.kill()
                    self.log(f"fault: SIGKILL {worker.name}")
                else:
                    took, exited = await asyncio.to_thread(
                        worker.terminate, SHUTDOWN_TIMEOUT_S + 10
                    )
                    self.faults.sigterm_exit_s.append(took)
                    if not exited:
                        self.faults.stuck_on_sigterm += 1
                    self.log(
                        f"fault: SIGTERM {worker.name}: exited in {took:.1f}s"
                        + ("" if exited else " [red]NOT within the bound: SIGKILLed")
                    )
                await asyncio.sleep(self.rng.uniform(1, 4))
                worker.start()
            finally:
                self._expected_down.discard(worker.name)
        elif kind == "postgres_restart":
            t = time.monotonic()
            await asyncio.to_thread(self.control.restart_postgres)
            took = time.monotonic() - t
            self.log(f"fault: Postgres restarted (pg_ctl restart -m fast, {took:.1f}s)")
        elif kind == "broker_restart":
            down = self.rng.uniform(2, 6)
            t = time.monotonic()
            await asyncio.to_thread(self.control.restart_kafka, down)
            self.log(
                f"fault: broker stopped, down {down:.1f}s, listening again"
                f" {time.monotonic() - t:.1f}s after the stop began"
            )
        elif kind == "poison":
            self._bursts += 1
            n = await self.traffic.poison_burst(self._bursts)
            self.log(f"fault: {n} poison records onto the topic")


# ---------------------------------------------------------------- quiet and figures


async def _wait_quiet(
    bootstrap: str,
    dsn: str,
    topic: str,
    group: str,
    chaos: Chaos,
    timeout: float,
    log: Callable[[str], None],
) -> tuple[bool, float]:
    """Until the group's offsets are at the topic's end and the alert outbox is empty."""
    started = time.monotonic()
    last = 0.0
    while time.monotonic() - started < timeout:
        chaos.check_workers()
        lag, outbox = -1, -1
        try:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
            await admin.start()
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            finally:
                await admin.close()
            consumer = make_consumer(bootstrap)
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
                ends = await consumer.end_offsets(tps)
            finally:
                await consumer.stop()
            committed = {tp: o.offset for tp, o in offsets.items() if tp.topic == topic}
            lag = sum(max(ends[tp] - committed.get(tp, 0), 0) for tp in tps)
            outbox = int(
                await _fetchval(
                    dsn, "SELECT count(*) FROM alert_outbox WHERE published_at IS NULL", 30
                )
            )
            if lag == 0 and outbox == 0:
                return True, time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - a dependency still coming back
            log(f"quiet check failed ({exc!r}); again")
        if time.monotonic() - last > 10:
            log(f"waiting for quiet: lag {lag:,} records, alert outbox {outbox}")
            last = time.monotonic()
        await asyncio.sleep(1)
    return False, time.monotonic() - started


async def _read_dlq(bootstrap: str, topic: str) -> list[Any]:
    consumer = make_consumer(bootstrap)
    await consumer.start()
    out: list[Any] = []
    try:
        rng = await resolve_range(consumer, topic)
        async for records in read_range(consumer, rng):
            out.extend(records)
    finally:
        await consumer.stop()
    return out


def _match_poison(
    dlq: list[Any], poison: list[tuple[str, bytes]]
) -> tuple[Counter[str], list[tuple[str, bytes]], int]:
    """DLQ records by reason; poison not found with its reason; DLQ records that are no poison."""
    reasons: Counter[str] = Counter()
    seen: set[tuple[str, bytes]] = set()
    for r in dlq:
        reason = (dict(r.headers).get(topics.DLQ_HEADER_REASON) or b"?").decode()
        reasons[reason] += 1
        seen.add((reason, r.value))
    sent = set(poison)
    missing = [p for p in poison if p not in seen]
    unexpected = sum(1 for pair in seen if pair not in sent)
    return reasons, missing, unexpected


async def _ledger_figures(dsn: str, acked: set[str]) -> tuple[int, int, int, int, int, int]:
    """(debited, lost, duplicate events, duplicate copies, deduction rows, chain breaks)."""
    conn = await asyncpg.connect(dsn)
    try:
        debited_ids = {r[0] for r in await conn.fetch("SELECT event_id FROM usage_events")}
        dup = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(times_seen), 0) AS seen FROM duplicate_events"
        )
        deductions = await conn.fetchval(
            "SELECT count(*) FROM credit_transactions WHERE type = 'deduction'"
        )
        chain = await conn.fetchval(
            "SELECT count(*) FROM (SELECT balance_after_micros,"
            " sum(amount_micros) OVER (PARTITION BY account_id ORDER BY id) AS running"
            " FROM credit_transactions) t WHERE balance_after_micros <> running"
        )
    finally:
        await conn.close()
    return (
        len(debited_ids),
        len(acked - debited_ids),
        int(dup["n"]),
        int(dup["seen"]),
        int(deductions),
        int(chain),
    )


# ---------------------------------------------------------------- the run


async def run_chaos(cfg: ChaosConfig, control: StackControl, console: Console) -> Report:
    """Run load and faults for cfg.minutes, wait for quiet, reconcile, and report."""
    base = CommonSettings()
    local_stack_or_fail(base)
    # aiokafka logs every refused connection while the broker is down; the figures say enough.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    run_id = uuid.uuid4().hex[:8]
    log_dir = cfg.log_dir or Path(f"/tmp/meterline-chaos-{run_id}")
    log_dir.mkdir(parents=True, exist_ok=True)
    say = console.log
    say(f"chaos run {run_id} on the local stack (Kafka {base.kafka_bootstrap}); logs in {log_dir}")
    dsn = await bench_database(base.database_url, cfg.database, fresh=True, seed_prices=True)
    prefix = f"bench.chaos.{run_id}"
    settings = base.model_copy(
        update={
            "database_url": dsn,
            "topic_usage_events": f"{prefix}.usage.events",
            "topic_usage_dlq": f"{prefix}.usage.dlq",
            "topic_credit_alerts": f"{prefix}.credit.alerts",
            "usage_events_partitions": PARTITIONS,
        }
    )
    await _create_topics(
        base.kafka_bootstrap,
        {
            settings.topic_usage_events: PARTITIONS,
            settings.topic_usage_dlq: 3,
            settings.topic_credit_alerts: 3,
        },
    )
    group = f"chaos-{run_id}"
    env = child_env(
        settings,
        METERLINE_WORKER_GROUP=group,
        METERLINE_SEED_CATALOG="false",
        METERLINE_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
        METERLINE_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    admin_key = await asyncio.to_thread(create_admin_key, env)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    api = Child("api", ["api", "--port", str(port), "--no-access-log"], env, log_dir).start()
    workers = [Child(f"worker-{i}", ["worker"], env, log_dir) for i in range(cfg.workers)]
    started_at = datetime.now(UTC)
    try:
        await wait_healthy(api, base_url)
        for w in workers:
            w.start()
        say(f"API on {base_url}, {cfg.workers} workers in group {group}")
        async with Traffic(
            bootstrap=base.kafka_bootstrap,
            topic=settings.topic_usage_events,
            base_url=base_url,
            admin_key=admin_key,
            accounts=cfg.accounts,
            rate=cfg.rate,
            http_share=cfg.http_share,
            deduct_rate=cfg.deduct_rate,
            run_id=run_id,
        ) as traffic:
            # Every 10th account gets little credit: it runs dry and its deductions meet 402.
            await traffic.prepay(lambda i: "2" if i % 10 == 9 else "5000", say)
            chaos = Chaos(workers, traffic, control, say, run_id)
            await _load_phase(cfg, traffic, chaos, dsn, console)
            say("load and faults stopped; waiting for what is in flight to be acknowledged")
            if not await traffic.stop(timeout=300):
                say(f"[red]{traffic.in_flight} events still unacknowledged after 300s")
            quiet, quiet_s = await _wait_quiet(
                base.kafka_bootstrap,
                dsn,
                settings.topic_usage_events,
                group,
                chaos,
                cfg.quiet_timeout_s,
                say,
            )
            say(f"quiet {'reached' if quiet else '[red]NOT reached'} after {quiet_s:.0f}s")
            load = traffic.stats
    finally:
        for w in workers:
            await asyncio.to_thread(w.terminate, SHUTDOWN_TIMEOUT_S + 10)
        await asyncio.to_thread(api.terminate, 20)
    say("reconciling the run's time range")
    recon = await reconcile(
        bootstrap=base.kafka_bootstrap,
        database_url=dsn,
        topic=settings.topic_usage_events,
        start=started_at - timedelta(minutes=1),
        end=datetime.now(UTC) + timedelta(minutes=1),
        policy=LedgerSettings().ledger_policy(),
        grace=timedelta(hours=1),
    )
    dlq = await _read_dlq(base.kafka_bootstrap, settings.topic_usage_dlq)
    reasons, poison_missing, unexpected = _match_poison(dlq, load.poison)
    debited, lost, dups, dup_seen, deductions, chain = await _ledger_figures(
        dsn, load.kafka_acked | load.http_acked
    )
    return Report(
        run_id=run_id,
        minutes=cfg.minutes,
        load=load,
        faults=chaos.faults,
        debited=debited,
        lost=lost,
        duplicates=dups,
        duplicates_seen=dup_seen,
        deduction_rows=deductions,
        chain_breaks=chain,
        dlq=reasons,
        poison_missing=poison_missing,
        dlq_unexpected=unexpected,
        recon=recon,
        quiet=quiet,
        quiet_s=quiet_s,
        log_dir=log_dir,
    )


async def _load_phase(
    cfg: ChaosConfig, traffic: Traffic, chaos: Chaos, dsn: str, console: Console
) -> None:
    """The load and the faults for cfg.minutes, with a progress bar."""
    seconds = cfg.minutes * 60
    stop = asyncio.Event()
    load = asyncio.create_task(traffic.run())
    faults = asyncio.create_task(chaos.run(cfg.fault_every, stop))
    debited = 0
    with Progress(
        TextColumn("[bold]chaos"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as progress:
        chaos.log = progress.console.log
        task = progress.add_task("", total=seconds)
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            chaos.check_workers()
            try:
                debited = int(await _fetchval(dsn, "SELECT count(*) FROM usage_events", 3))
            except Exception:  # noqa: BLE001 - Postgres restarting: keep the last figure
                pass
            s = traffic.stats
            progress.update(
                task,
                completed=elapsed,
                description=(
                    f"published {s.published:,} · in flight {traffic.in_flight:,}"
                    f" · debited {debited:,} · 503s {s.http_status['503']:,}"
                    f" · deductions {s.deduct_ok:,}/{s.deduct_402:,} 402"
                    f" · faults {sum(chaos.faults.count.values())}"
                ),
            )
            await asyncio.sleep(2)
        progress.update(task, completed=seconds)
    stop.set()
    chaos.log = console.log
    await faults
    traffic.stopping.set()
    await load
