"""The CLI's long work (replay, reconcile, reconcile --fix, produce) against what a user meets:
a Kafka or Postgres that cannot be reached is named with its setting (never a traceback), and
Ctrl-C mid-run exits 130 saying what was done, with nothing half-written."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time

import asyncpg
import pytest

from schemas.settings import CommonSettings
from tests.integration.api_server import free_port
from tests.integration.conftest import env_for
from tests.integration.ledger_helpers import ledger_matches_balances
from tests.integration.reconcile_helpers import cli
from tests.integration.worker import (
    USAGE_ROWS,
    add_test_price,
    end_offsets,
    event,
    publish_usage,
)

WORK = {
    "replay": ["replay", "--topic", "usage.events"],
    "reconcile": ["reconcile", "--from", "2026-01-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z"],
    "reconcile --fix": [
        "reconcile",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-02-01T00:00:00Z",
        "--fix",
    ],
}


@pytest.mark.parametrize("command", sorted(WORK))
@pytest.mark.parametrize("away", ["kafka", "postgres"])
async def test_an_unreachable_dependency_is_named_not_a_traceback(
    test_settings: CommonSettings, command: str, away: str
) -> None:
    port = free_port()
    if away == "kafka":
        settings = test_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
        named = f"cannot reach Kafka at 127.0.0.1:{port} (METERLINE_KAFKA_BOOTSTRAP)"
    else:
        dsn = f"postgresql://meterline:s3cret-pw@127.0.0.1:{port}/nowhere"
        settings = test_settings.model_copy(update={"database_url": dsn})
        named = f"cannot reach Postgres at 127.0.0.1:{port}/nowhere (METERLINE_DATABASE_URL)"
    code, output = await asyncio.to_thread(cli, settings, *WORK[command])
    flat = " ".join(output.split())
    assert code == 1, output
    assert named in flat, output
    assert "Traceback" not in output and "Unclosed" not in output, output
    assert "s3cret-pw" not in output


ADMIN = {
    "create-key": ["admin", "create-key", "--scope", "admin"],
    "allocate": ["admin", "allocate", "--account", "a", "--amount", "5", "--reason", "r"],
    "grant": ["admin", "grant", "--account", "a", "--amount", "5", "--reason", "r"],
    "grant-monthly": ["admin", "grant-monthly"],
}


@pytest.mark.parametrize("command", sorted(ADMIN))
async def test_an_admin_helper_names_an_unreachable_postgres(
    test_settings: CommonSettings, command: str
) -> None:
    port = free_port()
    dsn = f"postgresql://meterline:s3cret-pw@127.0.0.1:{port}/nowhere"
    settings = test_settings.model_copy(update={"database_url": dsn})
    code, output = await asyncio.to_thread(cli, settings, *ADMIN[command])
    assert code == 1, output
    named = f"cannot reach Postgres at 127.0.0.1:{port}/nowhere (METERLINE_DATABASE_URL)"
    assert named in " ".join(output.split()), output
    assert "Traceback" not in output and "s3cret-pw" not in output


def _interrupt_when(
    args: list[str], settings: CommonSettings, started: object, **env: str
) -> tuple[int, str]:
    """Run `meterline ARGS`, send SIGINT once started() is true, return (code, output)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterline", *args],
        env=env_for(settings, COLUMNS="200", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert callable(started)
    deadline = time.monotonic() + 60
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    return proc.returncode, " ".join(output.split())


async def test_replay_interrupted_says_what_it_debited_and_running_it_again_finishes(
    test_settings: CommonSettings, db: asyncpg.Pool, database_url: str
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    n = 20_000
    await publish_usage(test_settings, [event(f"e{i}", f"acct-{i % 50}") for i in range(n)])

    def some_debited() -> bool:
        async def count() -> int:
            conn = await asyncpg.connect(database_url)
            try:
                return int(await conn.fetchval(USAGE_ROWS))
            finally:
                await conn.close()

        return asyncio.run(count()) > 0

    args = ["replay", "--topic", test_settings.topic_usage_events]
    code, output = await asyncio.to_thread(
        _interrupt_when, args, test_settings, some_debited, METERLINE_BATCH_MAX="100"
    )
    assert code == 130, output
    found = re.search(r"interrupted: read (\d+) of 20000 records: debited (\d+)", output)
    assert found, output
    debited = int(found.group(2))
    assert 0 < debited < n
    # What it says it debited is what the ledger holds: no batch was half-written.
    assert await db.fetchval(USAGE_ROWS) == debited
    await ledger_matches_balances(db)
    assert "run the same replay again to finish" in output

    code, output = await asyncio.to_thread(cli, test_settings, *args)
    assert code == 0, output
    assert f"debited {n - debited} " in output and f"duplicates {debited} " in output
    # Not on a terminal: the progress is a plain line (rich drew nothing until the end).
    assert re.search(r"replaying: [\d,]+ of 20,000 \(\d+%\)", output), output
    assert await db.fetchval(USAGE_ROWS) == n
    await ledger_matches_balances(db)


async def test_produce_interrupted_says_how_many_it_published(
    test_settings: CommonSettings,
) -> None:
    topic = test_settings.topic_usage_events

    def some_published() -> bool:
        return sum(asyncio.run(end_offsets(test_settings.kafka_bootstrap, topic)).values()) > 0

    args = ["produce", "--synthetic", "2000000", "--seed", "5", "--topic", topic]
    code, output = await asyncio.to_thread(_interrupt_when, args, test_settings, some_published)
    assert code == 130, output
    found = re.search(r"interrupted: published (\d+) events \(acknowledged by Kafka\)", output)
    assert found, output
    assert "the same --seed 5 again is safe" in output
    assert re.search(r"producing: [\d,]+ of 2,000,000 \(\d+%\)", output), output
    on_topic = sum((await end_offsets(test_settings.kafka_bootstrap, topic)).values())
    assert 0 < int(found.group(1)) <= on_topic < 2_000_000
