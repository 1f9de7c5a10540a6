"""Fixtures for the integration suite: the real broker and database, a clean state per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

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


# A table with more rows than this is emptied by TRUNCATE, whose cost does not grow with its
# rows; a smaller one by DELETE. TRUNCATE makes new files for a table and each of its indexes
# and partitions: of every table, it took 100-370 ms before each test, empty or not.
_TRUNCATE_PAST_ROWS = 1000
_TABLES = (
    "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
    " AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> 'schema_migrations'"
)
_REFERENCES = (
    "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent"
    " FROM pg_constraint WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
)
# The identity sequences a test drew from, back to their start (as RESTART IDENTITY does).
_RESTART_USED_IDENTITIES = (
    "SELECT setval(s.oid, q.start_value, false) FROM pg_class s"
    " JOIN pg_sequences q ON q.schemaname = current_schema() AND q.sequencename = s.relname"
    " JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass"
    "  AND d.deptype IN ('a', 'i')"
    " WHERE s.relkind = 'S' AND q.last_value IS NOT NULL"
)


def _children_first(tables: list[str], references: list[tuple[str, str]]) -> list[str]:
    """`tables` ordered so that a table comes before every table it references."""
    order: list[str] = []
    left = set(tables)
    while left:
        ready = sorted(
            t for t in left if not any(p == t and c in left and c != t for c, p in references)
        )
        ready = ready or sorted(left)  # a cycle (none in the schema): let DELETE say so
        order += ready
        left -= set(ready)
    return order


async def _reset(conn: asyncpg.Connection) -> None:
    """Every table empty (schema_migrations kept), identities restarted and the reference
    rows the migrations insert (tiers) back: what TRUNCATE of every table with RESTART
    IDENTITY did, touching only the tables a test wrote."""
    tables = [r["relname"] for r in await conn.fetch(_TABLES)]
    if not tables:
        return
    rows = dict(
        await conn.fetch(
            " UNION ALL ".join(
                f"SELECT '{t}', (SELECT count(*) FROM"
                f' (SELECT 1 FROM "{t}" LIMIT {_TRUNCATE_PAST_ROWS + 1}) s)'
                for t in tables
            )
        )
    )
    references = [(r["child"], r["parent"]) for r in await conn.fetch(_REFERENCES)]
    big = [t for t in tables if rows[t] > _TRUNCATE_PAST_ROWS]
    small = [t for t in tables if 0 < rows[t] <= _TRUNCATE_PAST_ROWS]
    async with conn.transaction():
        if big:
            await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in big) + " CASCADE")
        for t in _children_first(small, references):
            await conn.execute(f'DELETE FROM "{t}"')
        await conn.fetch(_RESTART_USED_IDENTITIES)
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


class TopicFactory:
    """Creates topics unique to this test: await topic_factory("usage.events", partitions=12),
    or several in one request: await topic_factory.many(("usage.events", 4), ("usage.dlq", 1))."""

    def __init__(self, admin: Any, run: str) -> None:
        self._admin = admin
        self._run = run
        self.created: list[str] = []

    async def __call__(self, name: str = "usage.events", partitions: int = 1) -> str:
        (topic,) = await self.many((name, partitions))
        return topic

    async def many(self, *specs: tuple[str, int]) -> list[str]:
        """One CreateTopics request for them all: a third of the time of one request each."""
        from aiokafka.admin import NewTopic

        topics = [f"t{self._run}.{name}" for name, _ in specs]
        await self._admin.create_topics(
            [
                NewTopic(topic, num_partitions=partitions, replication_factor=1)
                for topic, (_, partitions) in zip(topics, specs, strict=True)
            ]
        )
        self.created += topics
        return topics


@pytest.fixture
async def topic_factory(kafka_bootstrap: str) -> AsyncIterator[TopicFactory]:
    """Topics of this test's own, deleted after it (see TopicFactory)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    make = TopicFactory(admin, uuid.uuid4().hex[:10])
    try:
        yield make
    finally:
        if make.created:
            try:
                await admin.delete_topics(make.created)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        await admin.close()


@pytest.fixture
async def test_settings(
    kafka_bootstrap: str, database_url: str, topic_factory: TopicFactory, db: asyncpg.Pool
) -> CommonSettings:
    """Settings pointing at the test database and three fresh topics of this test's own."""
    events, dlq, alerts = await topic_factory.many(
        ("usage.events", 4), ("usage.dlq", 1), ("credit.alerts", 1)
    )
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
