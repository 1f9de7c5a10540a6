"""Find the real Kafka and PostgreSQL for the integration suite — never a mock, never a skip.

Order: METERLINE_KAFKA_BOOTSTRAP / METERLINE_DATABASE_URL, else the local stack that
`meterline dev up` recorded, else testcontainers when a Docker engine answers, else fail
with a message that says how to start the stack.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

HOW_TO = (
    "The integration suite needs a real Kafka broker and PostgreSQL. Start the local stack "
    "with `meterline dev up` (or set METERLINE_KAFKA_BOOTSTRAP and METERLINE_DATABASE_URL)."
)


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    admin_dsn: str  # the stack's own database; tests use their own database beside it


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _docker_answers() -> bool:
    return os.path.exists("/var/run/docker.sock") or bool(os.environ.get("DOCKER_HOST"))


_containers: list[object] = []


def _from_testcontainers() -> Services:  # pragma: no cover - only where Docker runs
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    kafka = KafkaContainer("apache/kafka:4.0.1").with_kraft()
    pg = PostgresContainer("postgres:16", driver=None)
    kafka.start()
    pg.start()
    _containers.extend([kafka, pg])
    return Services(kafka.get_bootstrap_server(), pg.get_connection_url())


async def _check_kafka(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 15)
        await asyncio.wait_for(admin.list_topics(), 15)
    finally:
        await admin.close()


async def _check_postgres(dsn: str) -> None:
    conn = await asyncio.wait_for(asyncpg.connect(dsn), 15)
    await conn.close()


def discover() -> Services:
    """The services to test against; raises RuntimeError (turned into a failure) if none."""
    from schemas.settings import CommonSettings

    s = CommonSettings()
    if _reachable(s.kafka_bootstrap) and _reachable(s.database_url.split("@")[-1].split("/")[0]):
        return Services(s.kafka_bootstrap, s.database_url)
    if _docker_answers():
        return _from_testcontainers()
    raise RuntimeError(
        f"Kafka ({s.kafka_bootstrap}) or PostgreSQL ({s.database_url.split('@')[-1]}) is not "
        f"reachable. {HOW_TO}"
    )


async def verify(services: Services) -> None:
    """Fail loudly unless both services answer real requests."""
    try:
        await _check_kafka(services.kafka_bootstrap)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        raise RuntimeError(
            f"Kafka at {services.kafka_bootstrap} does not answer: {exc!r}. {HOW_TO}"
        ) from exc
    try:
        await _check_postgres(services.admin_dsn)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"PostgreSQL does not answer: {exc!r}. {HOW_TO}") from exc


@asynccontextmanager
async def scratch_database(services: Services) -> AsyncIterator[str]:
    """The DSN of a new, empty database of this test's own (no migration), dropped after."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(services.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield services.admin_dsn.rpartition("/")[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def empty_database(services: Services) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database of this test's own, dropped afterwards."""
    async with scratch_database(services) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            yield conn
        finally:
            await conn.close()
