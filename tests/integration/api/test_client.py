"""MeterlineClient and its sync twin against the real API (the app in-process over ASGI, and a
closed port for an API that cannot be reached): typed answers, typed problems, retries."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from api.settings import ApiSettings
from producers.client import MeterlineClient, MeterlineSyncClient, money_text
from producers.client_types import (
    Forbidden,
    RateLimited,
    Unauthorized,
    Unavailable,
    Unreachable,
    ValidationFailed,
)
from tests.integration.api.conftest import UserKeyFactory
from tests.integration.api.credits_helpers import MODEL, add_test_price, allocate
from tests.integration.api_server import ApiServer
from tests.integration.worker import USAGE_ROWS, Worker, event, wait_for
from tests.integration.worker import add_test_price as add_worker_price

BASE = "http://meterline.test"


@pytest.fixture
async def running_app(api_app: FastAPI) -> AsyncIterator[FastAPI]:
    async with api_app.router.lifespan_context(api_app):
        yield api_app


def client_for(app: FastAPI, key: str, **kw: float) -> MeterlineClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return MeterlineClient(BASE, key, transport=transport, **kw)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_balance_authorize_and_cost_are_typed_decimals(
    running_app: FastAPI, db: asyncpg.Pool, user_key_for: UserKeyFactory, admin_key: str
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 2_500_000)
    await add_test_price(db)
    async with client_for(running_app, key) as ml:
        bal = await ml.balance()
        assert bal.account_id == "acme" and bal.balance == Decimal("2.5")
        assert isinstance(bal.balance, Decimal) and bal.tier == "pro" and not bal.blocked
        ok = await ml.authorize("2.5")
        assert ok.allowed and ok.reason == "ok" and ok.balance == Decimal("2.5")
        no = await ml.authorize(Decimal("2.500001"))
        assert not no.allowed and no.reason == "insufficient_balance"
        cost = await ml.calculate_cost(MODEL, input_tokens=1_000_000, output_tokens=500_000)
        # 2 per M input + 8 per M output: 2 + 4
        assert cost.cost == Decimal("6") and cost.model == MODEL
        assert Decimal(cost.breakdown["output"]) == Decimal("4")
    async with client_for(running_app, admin_key) as admin:
        assert (await admin.balance(account_id="acme")).balance == Decimal("2.5")


async def test_problems_are_raised_as_typed_errors_with_their_fields(
    running_app: FastAPI, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    async with client_for(running_app, key) as ml:
        with pytest.raises(ValidationFailed) as bad:
            await ml.calculate_cost("no/such-model", input_tokens=10)
        assert bad.value.status == 422 and bad.value.code == "validation_error"
        assert bad.value.errors[0]["field"] == "body.model"
        assert bad.value.errors[0]["rule"] == "unknown_model"
        with pytest.raises(ValidationFailed) as neg:
            await ml.calculate_cost(MODEL, input_tokens=-1)
        assert neg.value.errors[0]["field"] == "body.input_tokens"
        with pytest.raises(Forbidden) as other:
            await ml.balance(account_id="someone-else")
        assert other.value.status == 403 and other.value.problem["status"] == 403
    async with client_for(running_app, "not-a-key") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.balance()


def test_a_float_amount_is_refused_before_any_request() -> None:
    with pytest.raises(TypeError, match="binary floats"):
        money_text(0.1)  # type: ignore[arg-type]
    assert money_text(Decimal("1E-6")) == "0.000001" and money_text(3) == "3"


async def test_rate_limited_calls_wait_for_retry_after_then_pass(
    running_app: FastAPI, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await db.execute("INSERT INTO tiers (name, rate_limit) VALUES ('tiny', '2/second')")
    key = await user_key_for("slow", tier="tiny")
    async with client_for(running_app, key, retries=0) as impatient:
        await impatient.balance()
        await impatient.balance()
        with pytest.raises(RateLimited) as limited:
            await impatient.balance()
        assert limited.value.status == 429 and limited.value.retry_after is not None
        assert limited.value.problem["code"] == "rate_limited"
    await asyncio.sleep(1.1)  # a fresh window
    async with client_for(running_app, key, retries=3, max_backoff=2) as patient:
        started = time.monotonic()
        for _ in range(4):
            assert (await patient.balance()).account_id == "slow"
        # two of the four had to wait for the next window, as Retry-After said
        assert time.monotonic() - started >= 0.5


async def test_ingest_publishes_events_the_worker_debits(
    running_app: FastAPI,
    db: asyncpg.Pool,
    user_key_for: UserKeyFactory,
    api_settings: ApiSettings,
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    async with db.acquire() as conn:
        await add_worker_price(conn)
    events = [event(f"c-{i}", "acme", input_tokens=500_000, output_tokens=0) for i in range(3)]
    async with client_for(running_app, key) as ml:
        assert await ml.publish(events) == 3
        assert await ml.publish(events[0]) == 1  # a retry is deduplicated downstream
        with pytest.raises(ValidationFailed) as bad:
            await ml.publish({**events[0], "model": ""})
        assert bad.value.errors[0]["field"].startswith("body")
    worker = Worker(api_settings).start()
    try:
        await wait_for(db, USAGE_ROWS, 3, worker=worker)
    finally:
        worker.stop()
    # 3 × 0.5 M input tokens at 2 per M of test/model
    balance = await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id = 'acme'")
    assert balance == 10_000_000 - 3_000_000


async def test_ingest_without_kafka_is_unavailable_after_retry_after(
    api_settings: ApiSettings, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    dead = api_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{closed_port()}"})
    app = create_app(dead)
    key = await user_key_for("acme", tier="pro")
    async with app.router.lifespan_context(app):
        # Retry-After (5 s) is longer than this client may wait: it raises at once.
        async with client_for(app, key, retries=3, max_backoff=1) as ml:
            started = time.monotonic()
            with pytest.raises(Unavailable) as down:
                await ml.publish(
                    {"event_id": "e", "model": "m", "occurred_at": "2025-01-01T00:00:00Z"}
                )
            assert time.monotonic() - started < 1
            assert down.value.status == 503 and down.value.retry_after == 5
            assert "Kafka" in down.value.detail


async def test_an_unreachable_api_is_retried_then_raised() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with MeterlineClient(url, "k", retries=2, backoff=0.05) as ml:
        started = time.monotonic()
        with pytest.raises(Unreachable) as gone:
            await ml.balance()
        assert time.monotonic() - started >= 0.15  # 0.05 + 0.1 of backoff
        assert gone.value.status is None and isinstance(gone.value, Unavailable)
    with MeterlineSyncClient(url, "k", retries=0) as sync, pytest.raises(Unreachable):
        sync.balance()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_API_URL", "http://from-env:8000/")
    monkeypatch.setenv("METERLINE_API_KEY", "env-key")
    with MeterlineSyncClient() as env_client:
        assert env_client.api_url == "http://from-env:8000" and env_client.api_key == "env-key"
    with MeterlineSyncClient(api_url="http://given", api_key="given-key") as given:
        assert given.api_url == "http://given" and given.api_key == "given-key"
    monkeypatch.delenv("METERLINE_API_URL")
    with pytest.raises(ValueError, match="METERLINE_API_URL"):
        MeterlineSyncClient()


async def test_sync_client_against_the_served_api(
    api_settings: ApiSettings, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 1_000_000)
    await add_test_price(db)
    server = ApiServer(api_settings).start_blocking()
    try:

        def calls() -> tuple[Decimal, Decimal, int]:
            with MeterlineSyncClient(server.url, key) as ml:
                bal = ml.balance()
                cost = ml.calculate_cost(MODEL, output_tokens=1_000_000).cost
                with pytest.raises(ValidationFailed):
                    ml.calculate_cost(MODEL, output_tokens="many")
                # one pooled connection served all three
                return bal.balance, cost, len(ml._http._transport._pool.connections)  # type: ignore[attr-defined]

        balance, cost, connections = await asyncio.to_thread(calls)
        assert balance == Decimal("1") and cost == Decimal("8") and connections == 1
    finally:
        server.stop()
