"""Helpers for the replay and reconcile tests: run them in process or through the CLI."""

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

POLICY = LedgerPolicy()


def window(hours: float = 3) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=hours), now + timedelta(hours=1)


async def run_reconcile(
    settings: CommonSettings, start: datetime, end: datetime, *, policy: LedgerPolicy = POLICY
) -> ReconcileResult:
    return await reconcile(
        bootstrap=settings.kafka_bootstrap,
        database_url=settings.database_url,
        topic=settings.topic_usage_events,
        start=start,
        end=end,
        policy=policy,
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
