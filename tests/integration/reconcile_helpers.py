"""Helpers for the replay and reconcile tests: meter events with the real worker, run the CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from processors.ledger import LedgerPolicy
from processors.reconcile import ReconcileResult, reconcile
from processors.replay import ReplaySummary, replay
from schemas.settings import CommonSettings
from tests.integration.conftest import env_for
from tests.integration.worker import Worker, publish_events, publish_raw, wait_for

POLICY = LedgerPolicy()
USAGE_ROWS = "SELECT count(*) FROM credit_transactions WHERE type = 'usage'"


def window(hours: float = 3) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=hours), now + timedelta(hours=1)


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
        await publish_events(settings.kafka_bootstrap, settings.topic_usage_events, events)
        if raw:
            await publish_raw(settings.kafka_bootstrap, settings.topic_usage_events, raw)
        await wait_for(db, USAGE_ROWS, usage_rows, worker=worker)
    finally:
        worker.stop()


async def run_reconcile(
    settings: CommonSettings, start: datetime, end: datetime
) -> ReconcileResult:
    return await reconcile(
        bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        topic=settings.topic_usage_events,
        start=start,
        end=end,
        policy=POLICY,
    )


async def run_replay(settings: CommonSettings, *, dlq: bool = False, **kw: Any) -> ReplaySummary:
    return await replay(
        bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        topic=settings.topic_usage_dlq if dlq else settings.topic_usage_events,
        dlq=dlq,
        policy=POLICY,
        **kw,
    )


async def balances(db: asyncpg.Pool) -> dict[str, int]:
    return dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits"))


def cli(settings: CommonSettings, *args: str) -> tuple[int, str]:
    """Run `meterline ARGS` with the test's settings: (exit code, stdout with spaces collapsed)."""
    run = subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        env=env_for(settings, COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    return run.returncode, " ".join(run.stdout.split()) + "\n" + run.stderr
