"""The dashboard's browser tests: Debian's Chromium driven by Playwright, against the real API
(uvicorn) and real usage metered by the real worker, set up once for the module."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from playwright.async_api import Browser, async_playwright

from processors.api_keys import create_api_key
from processors.ledger import ensure_account
from schemas.settings import CommonSettings
from tests.integration.api_server import ApiServer
from tests.integration.conftest import _reset
from tests.integration.worker import add_test_price, event, meter_with_worker

CHROMIUM = os.environ.get("METERLINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "reports" / "screenshots"
RANGE_DAYS = 10
USER, OTHER, THIRD = "dash-alice", "dash-bob", "dash-carol"
MODEL_B = "test/model-b"


@dataclass
class Stack:
    base_url: str
    admin_key: str
    keys: dict[str, str]
    db: asyncpg.Pool
    range_from: date
    range_to: date

    def client(self, key: str) -> httpx.AsyncClient:
        """An HTTP client of the same API, with this key."""
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the screenshots are, so a person (or a CI log reader) can look at them."""
    if _taken:
        terminalreporter.write_line(
            f"dashboard screenshots ({len(_taken)}): {SCREENSHOTS}/ "
            + ", ".join(sorted(p.name for p in _taken))
        )


_taken: list[Path] = []


def record_screenshot(path: Path) -> None:
    _taken.append(path)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the screenshots go (gitignored; the run's summary says where)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def _check_chromium() -> None:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run deploy/bootstrap.sh "
            "(apt-get install chromium) or set METERLINE_CHROMIUM",
            pytrace=False,
        )


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian's package (no browser download)."""
    _check_chromium()
    async with async_playwright() as pw:
        found = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield found
        finally:
            await found.close()


def _usage_events(today: date) -> list[dict[str, Any]]:
    """USER: 20 events on four days of the range (two models); OTHER 5 and THIRD 3 today."""
    events = []
    days = [today - timedelta(days=d) for d in (8, 5, 2, 0)]
    now = datetime.now(UTC)
    for i in range(20):
        day = days[i % 4]
        # Early in the day, and never in the future (an event from the future is refused).
        at = min(datetime(day.year, day.month, day.day, 0, i, tzinfo=UTC), now)
        model = MODEL_B if i % 3 == 0 else "test/model"
        events.append(
            event(
                f"dash-u-{i}",
                USER,
                occurred_at=at.isoformat(),
                model=model,
                input_tokens=400_000 + 1_237 * i,
                output_tokens=50_000,
            )
        )
    for i in range(5):
        events.append(
            event(f"dash-o-{i}", OTHER, occurred_at=now.isoformat(), input_tokens=900_000)
        )
    for i in range(3):
        events.append(
            event(f"dash-t-{i}", THIRD, occurred_at=now.isoformat(), input_tokens=300_000)
        )
    return events


async def _post(client: httpx.AsyncClient, path: str, **kwargs: Any) -> Any:
    r = await client.post(path, **kwargs)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def _grants_and_a_hold(admin: httpx.AsyncClient, s: Stack) -> None:
    """A promotional grant for USER's test models (burned first) and a hold of 3 on USER."""
    expires = datetime.now(UTC) + timedelta(days=20)
    await _post(
        admin,
        "/api/v1/admin/credits/grants",
        json={
            "account_id": USER,
            "amount": "10",
            "category": "promotional",
            "priority": 10,
            "expires_at": expires.isoformat(),
            "applies_to": ["test/"],
            "reason": "dashboard test promotion",
            "idempotency_key": f"dash-promo-{USER}",
        },
    )
    async with s.client(s.keys[USER]) as user:
        await _post(
            user,
            "/api/v1/credits/reservations",
            json={"amount": "3", "ttl_seconds": 3600, "idempotency_key": "dash-hold"},
        )


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Stack]:
    """Accounts with credit, a cap and usage metered by the worker; the API serving them."""
    run = uuid.uuid4().hex[:10]
    topics = [f"t{run}.usage.events", f"t{run}.usage.dlq", f"t{run}.credit.alerts"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics(
        [
            NewTopic(t, num_partitions=4 if i == 0 else 1, replication_factor=1)
            for i, t in enumerate(topics)
        ]
    )
    settings = CommonSettings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topic_usage_events=topics[0],
        topic_usage_dlq=topics[1],
        topic_credit_alerts=topics[2],
        usage_events_partitions=4,
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    assert pool is not None
    server = ApiServer(settings)
    try:
        async with pool.acquire() as conn:
            await _reset(conn)
            await add_test_price(conn)
            await add_test_price(conn, model=MODEL_B, input="5", output="15")
            for account in (USER, OTHER, THIRD):
                await ensure_account(conn, account_id=account, tier="pro")
        _, admin_key = await create_api_key(pool, account_id=None, scope="admin")
        keys = {}
        for account in (USER, OTHER, THIRD):
            _, keys[account] = await create_api_key(pool, account_id=account, scope="user")
        await server.start()
        today = datetime.now(UTC).date()
        s = Stack(server.base_url, admin_key, keys, pool, today - timedelta(RANGE_DAYS - 1), today)
        async with s.client(admin_key) as c:
            for account, amount in ((USER, "100"), (OTHER, "50"), (THIRD, "20")):
                await _post(
                    c,
                    "/api/v1/admin/credits/allocate",
                    json={
                        "account_id": account,
                        "amount": amount,
                        "reason": "dashboard test credit",
                        "idempotency_key": f"dash-{account}",
                    },
                )
            await _post(
                c,
                "/api/v1/credits/monthly-cap",
                params={"account_id": USER},
                json={"monthly_cap": "40"},
            )
            await _grants_and_a_hold(c, s)
        events = _usage_events(today)
        await meter_with_worker(settings, pool, events, usage_rows=len(events))
        yield s
    finally:
        server.stop()
        await pool.close()
        try:
            await admin.delete_topics(topics)
        finally:
            await admin.close()
