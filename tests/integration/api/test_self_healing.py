"""The API's long-lived clients heal by themselves (DESIGN.md "Faults"): while Kafka or Postgres
is away, answers are a prompt 503 problem with Retry-After (never a hang) and /readyz names the
dependency; once it is back, the same process serves again, with no restart.

The dependency is taken away with a TCP proxy in front of the shared broker or database, so
neither is ever stopped for the other tests running beside these."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from api.main import create_app
from api.settings import ApiSettings
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import allocate
from tests.integration.tcp_proxy import TcpProxy, database_proxy
from tests.integration.worker import consume_to_end

EVENTS = "/api/v1/usage/events"
BALANCE = "/api/v1/credits/balance"


def _event(i: int) -> dict[str, Any]:
    return {
        "event_id": f"heal-{i}",
        "account_id": "acme",
        "occurred_at": "2025-03-01T12:00:00Z",
        "model": "openai/gpt-4o-mini",
        "input_tokens": 10,
    }


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://meterline.test") as c:
            yield c


def _dependency_down(r: httpx.Response, code: str, dependency: str) -> dict[str, Any]:
    problem = assert_problem(r, 503, code)
    assert r.headers["retry-after"] == "5"
    assert problem["dependency"] == dependency
    return problem


async def _until(client: httpx.AsyncClient, deadline_s: float, **request: Any) -> httpx.Response:
    """Repeat the request until it is not a 503, as a client honouring Retry-After would."""
    deadline = time.monotonic() + deadline_s
    while True:
        r = await client.request(**request)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.5)


async def test_ingest_heals_when_kafka_becomes_reachable_after_the_api_started(
    api_settings: ApiSettings, user_key_for: UserKeyFactory, kafka_bootstrap: str
) -> None:
    host, _, port = kafka_bootstrap.split(",")[0].rpartition(":")
    proxy = TcpProxy(host, int(port))  # not open yet: nothing listens at its address
    settings = api_settings.model_copy(
        update={"kafka_bootstrap": proxy.address, "kafka_publish_timeout_seconds": 3}
    )
    key = await user_key_for("acme")
    try:
        async with running(create_app(settings)) as client:
            started = time.monotonic()
            r = await client.post(EVENTS, json=_event(1), headers=auth(key))
            assert time.monotonic() - started < 2, "a 503 must be prompt, never a hang"
            problem = _dependency_down(r, "kafka_unavailable", "kafka")
            assert "reconnecting by itself" in problem["detail"]
            # Bad input is still named as such while Kafka is away.
            r = await client.post(EVENTS, json={**_event(2), "input_tokens": -1}, headers=auth(key))
            assert_problem(r, 422, "validation_error")
            ready = assert_problem(await client.get("/readyz"), 503, "not_ready")
            assert ready["checks"]["postgres"] == "ok"
            assert ready["checks"]["kafka"].startswith("kafka: ")
            assert ready["checks"]["publisher"].startswith("publisher: not connected")
            assert ready["down"] == ["kafka", "publisher"]

            await proxy.open()  # Kafka is reachable now; the same API process heals
            r = await _until(
                client, 60, method="POST", url=EVENTS, json=_event(1), headers=auth(key)
            )
            assert r.status_code == 202, r.text
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"postgres": "ok", "kafka": "ok", "publisher": "ok"}
    finally:
        await proxy.close()
    records = await consume_to_end(kafka_bootstrap, settings.topic_usage_events, 1)
    assert [rec.key for rec in records] == [b"acme"]


async def test_the_pool_heals_after_postgres_drops_every_connection(
    api_settings: ApiSettings, db: asyncpg.Pool, database_url: str, admin_key: str
) -> None:
    await allocate(db, "acme", 10_000_000)
    proxy, proxied = database_proxy(database_url)
    await proxy.open()
    settings = api_settings.model_copy(
        update={
            "database_url": proxied,
            "api_key_cache_seconds": 0,
            # More idle connections than the requests below: each one a restart leaves stale.
            "pg_pool_min": 8,
        }
    )
    h = auth(admin_key)
    params = {"account_id": "acme"}
    deduct = {"amount": "1", "reason": "while away", "idempotency_key": "away-1"}
    try:
        async with running(create_app(settings)) as client:
            assert (await client.get(BALANCE, params=params, headers=h)).status_code == 200
            await proxy.close()  # as a Postgres restart does: every connection cut
            for _ in range(3):
                started = time.monotonic()
                r = await client.get(BALANCE, params=params, headers=h)
                assert time.monotonic() - started < 6
                _dependency_down(r, "database_unavailable", "postgres")
            r = await client.post("/api/v1/credits/deduct", params=params, json=deduct, headers=h)
            _dependency_down(r, "database_unavailable", "postgres")
            ready = assert_problem(await client.get("/readyz"), 503, "not_ready")
            assert ready["down"] == ["postgres"] and ready["checks"]["kafka"] == "ok"

            await proxy.open()  # Postgres is back; no request meets a stale connection
            r = await client.get(BALANCE, params=params, headers=h)
            assert r.status_code == 200, r.text
            assert r.json()["balance"] == "10.000000"  # the deduction while away wrote nothing
            r = await client.post("/api/v1/credits/deduct", params=params, json=deduct, headers=h)
            assert r.status_code == 200, r.text
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await proxy.close()
    assert await db.fetchval(
        "SELECT balance_micros FROM user_credits WHERE account_id = 'acme'"
    ) == (9_000_000)


async def test_the_api_starts_without_postgres_and_serves_once_it_is_there(
    api_settings: ApiSettings, db: asyncpg.Pool, database_url: str, admin_key: str
) -> None:
    proxy, proxied = database_proxy(database_url)
    settings = api_settings.model_copy(update={"database_url": proxied})
    try:
        async with running(create_app(settings)) as client:
            r = await client.get(BALANCE, params={"account_id": "acme"}, headers=auth(admin_key))
            _dependency_down(r, "database_unavailable", "postgres")
            assert "postgres" in assert_problem(await client.get("/readyz"), 503)["down"]
            await proxy.open()
            r = await client.get(BALANCE, params={"account_id": "acme"}, headers=auth(admin_key))
            assert r.status_code == 200, r.text
    finally:
        await proxy.close()


async def test_the_csv_export_never_starts_a_200_it_cannot_finish(
    api_settings: ApiSettings, db: asyncpg.Pool, database_url: str, admin_key: str
) -> None:
    await allocate(db, "acme", 10_000_000)
    proxy, proxied = database_proxy(database_url)
    await proxy.open()
    settings = api_settings.model_copy(
        # The key stays cached, so the request reaches the export itself with Postgres away.
        update={"database_url": proxied, "api_key_cache_seconds": 600}
    )
    export = "/api/v1/credits/transactions/export"
    h, params = auth(admin_key), {"account_id": "acme"}
    try:
        async with running(create_app(settings)) as client:
            r = await client.get(export, params=params, headers=h)
            assert r.status_code == 200 and r.text.count("\r\n") == 2, r.text
            await proxy.close()
            r = await client.get(export, params=params, headers=h)
            _dependency_down(r, "database_unavailable", "postgres")
            await proxy.open()
            r = await client.get(export, params=params, headers=h)
            assert r.status_code == 200 and r.text.count("\r\n") == 2, r.text
    finally:
        await proxy.close()


async def _until_a_backend_waits_on_a_lock(db: asyncpg.Pool, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ):
        assert time.monotonic() < deadline, "no statement ever waited on the lock"
        await asyncio.sleep(0.02)


async def test_a_request_that_finds_every_connection_busy_answers_503_not_waits(
    api_settings: ApiSettings, db: asyncpg.Pool, admin_key: str
) -> None:
    # One pool connection, held by a deduction that waits on a row another writer has locked:
    # asyncpg's acquire waits without end by default, so every other request queued behind it.
    await allocate(db, "acme", 10_000_000)
    await allocate(db, "other", 10_000_000)
    settings = api_settings.model_copy(
        update={
            "pg_pool_min": 1,
            "pg_pool_max": 1,
            "pg_acquire_timeout_seconds": 1,
            "api_key_cache_seconds": 600,  # the key check needs no connection either
        }
    )
    h = auth(admin_key)
    deduct = {"amount": "1", "reason": "behind a lock", "idempotency_key": "busy-1"}
    async with running(create_app(settings)) as client, db.acquire() as locker:
        assert (await client.get(BALANCE, params={"account_id": "other"}, headers=h)).is_success
        tx = locker.transaction()
        await tx.start()
        await locker.execute("SELECT 1 FROM user_credits WHERE account_id = 'acme' FOR UPDATE")
        held = asyncio.create_task(
            client.post(
                "/api/v1/credits/deduct", params={"account_id": "acme"}, json=deduct, headers=h
            )
        )
        # The deduction has the pool's one connection and waits on the lock (a fixed 0.5 s
        # sleep stood here: on a busy box the balance below could take the connection first).
        await _until_a_backend_waits_on_a_lock(db)
        started = time.monotonic()
        r = await asyncio.wait_for(
            client.get(BALANCE, params={"account_id": "other"}, headers=h), 10
        )
        waited = time.monotonic() - started
        _dependency_down(r, "database_unavailable", "postgres")
        assert 0.9 < waited < 5, waited
        await tx.rollback()  # the writer lets go: the deduction and the next read go through
        assert (await held).status_code == 200
        r = await client.get(BALANCE, params={"account_id": "other"}, headers=h)
        assert r.status_code == 200, r.text


async def test_a_refused_key_is_answered_401_without_a_lookup_for_the_cache_ttl(
    api_settings: ApiSettings, database_url: str, user_key_for: UserKeyFactory, db: asyncpg.Pool
) -> None:
    # A proxy left with a revoked key retries in a loop: after the first refusal, its requests
    # are answered from the cache, so they keep getting 401 even with the database away.
    key = await user_key_for("acme")
    await db.execute("UPDATE api_keys SET revoked_at = now()")
    proxy, proxied = database_proxy(database_url)
    await proxy.open()
    settings = api_settings.model_copy(
        update={"database_url": proxied, "api_key_cache_seconds": 600}
    )
    try:
        async with running(create_app(settings)) as client:
            assert_problem(await client.get(BALANCE, headers=auth(key)), 401, "unauthorized")
            await proxy.close()  # every further lookup would be a 503
            for _ in range(5):
                r = await client.get(BALANCE, headers=auth(key))
                assert_problem(r, 401, "unauthorized")
            other = "ml_" + "0" * 16 + "_" + "x" * 43  # well formed, never seen: looked up
            _dependency_down(
                await client.get(BALANCE, headers=auth(other)), "database_unavailable", "postgres"
            )
    finally:
        await proxy.close()
