"""Fixtures for the integration suite: the real broker and database, a clean state per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from schemas import migrate
from schemas.settings import CommonSettings
from tests.integration import services as svc

# Its own database beside the stack's; METERLINE_TEST_DATABASE lets parallel runs use others.
TEST_DB = os.environ.get("METERLINE_TEST_DATABASE", "meterline_test")
# Tables whose rows are reference data that tests may change: reset, not emptied.
_RESEED = {"tiers"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
async def services() -> svc.Services:
    """The real Kafka and Postgres; fails (never skips) when they are not there."""
    try:
        found = svc.discover()
        await svc.verify(found)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    return found


@pytest.fixture(scope="session")
def kafka_bootstrap(services: svc.Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
async def database_url(services: svc.Services) -> str:
    """A database of the tests' own beside the stack's, migrated to the current schema."""
    base, _, _ = services.admin_dsn.rpartition("/")
    conn = await asyncpg.connect(services.admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", TEST_DB)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{TEST_DB}"')
    finally:
        await conn.close()
    dsn = f"{base}/{TEST_DB}"
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.up(conn)
    finally:
        await conn.close()
    return dsn


async def _reset(conn: asyncpg.Connection) -> None:
    tables = [
        r["tablename"]
        for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename <> 'schema_migrations'"
        )
    ]
    if tables:
        await conn.execute(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )
    # Re-seed the reference rows the migrations insert (tiers).
    for m in migrate.load_migrations():
        for stmt in m.up.split(";"):
            if stmt.strip().upper().startswith("INSERT INTO") and any(
                f"INSERT INTO {t}" in stmt for t in _RESEED
            ):
                await conn.execute(stmt)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on the test database, emptied before the test."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=20)
    assert pool is not None
    async with pool.acquire() as conn:
        await _reset(conn)
    try:
        yield pool
    finally:
        await pool.close()


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def topic_factory(kafka_bootstrap: str) -> AsyncIterator[TopicFactory]:
    """Creates topics unique to this test: await topic_factory("usage.events", partitions=12)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []
    run = uuid.uuid4().hex[:10]

    async def make(name: str = "usage.events", partitions: int = 1) -> str:
        topic = f"t{run}.{name}"
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        created.append(topic)
        return topic

    try:
        yield make
    finally:
        if created:
            try:
                await admin.delete_topics(created)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        await admin.close()


@pytest.fixture
async def test_settings(
    kafka_bootstrap: str, database_url: str, topic_factory: TopicFactory, db: asyncpg.Pool
) -> CommonSettings:
    """Settings pointing at the test database and three fresh topics of this test's own."""
    events = await topic_factory("usage.events", partitions=4)
    dlq = await topic_factory("usage.dlq")
    alerts = await topic_factory("credit.alerts")
    return CommonSettings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        topic_usage_events=events,
        topic_usage_dlq=dlq,
        topic_credit_alerts=alerts,
        usage_events_partitions=4,
    )


def env_for(settings: CommonSettings, **extra: str) -> dict[str, str]:
    """The environment that makes a `meterline` subprocess use these settings."""
    return settings.as_env(**extra)
