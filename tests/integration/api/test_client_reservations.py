"""MeterlineClient's reservation methods against the real API: hold, read, list, release, and
the 402 and 409 answers raised as typed errors with their problem fields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from producers.client import MeterlineClient
from producers.client_types import Conflict, NotFound, PaymentRequired
from tests.integration.api.conftest import UserKeyFactory
from tests.integration.api.credits_helpers import allocate


@pytest.fixture
async def ml(api_app: FastAPI, user_key_for: UserKeyFactory) -> AsyncIterator[MeterlineClient]:
    key = await user_key_for("acme", tier="pro")
    async with api_app.router.lifespan_context(api_app):
        transport = httpx.ASGITransport(app=api_app, raise_app_exceptions=False)
        async with MeterlineClient("http://meterline.test", key, transport=transport) as client:
            yield client


async def test_reserve_read_list_and_release(ml: MeterlineClient, db: asyncpg.Pool) -> None:
    await allocate(db, "acme", 3_000_000)
    hold = await ml.reserve("1.25", ttl_seconds=60, idempotency_key="call-1")
    assert hold.status == "active" and hold.amount == Decimal("1.25")
    assert hold.available == Decimal("1.75") and hold.expires_at is not None
    again = await ml.reserve(Decimal("1.25"), ttl_seconds=60, idempotency_key="call-1")
    assert again.reservation_id == hold.reservation_id  # the same key and body: the original
    bal = await ml.balance()
    assert (bal.balance, bal.held, bal.available) == (Decimal(3), Decimal("1.25"), Decimal("1.75"))
    assert [r.reservation_id for r in await ml.reservations()] == [hold.reservation_id]
    assert (await ml.get_reservation(hold.reservation_id)).status == "active"
    freed = await ml.release(hold.reservation_id)
    assert freed.status == "released" and freed.available == Decimal(3)
    assert (await ml.release(hold.reservation_id)).status == "released"  # idempotent
    assert await ml.reservations() == []


async def test_a_hold_that_does_not_fit_is_payment_required(
    ml: MeterlineClient, db: asyncpg.Pool
) -> None:
    await allocate(db, "acme", 1_000_000)
    await ml.reserve("0.75")
    with pytest.raises(PaymentRequired) as refused:
        await ml.reserve("0.5")
    assert refused.value.status == 402 and refused.value.code == "insufficient_credit"
    assert Decimal(refused.value.problem["available"]) == Decimal("0.25")


async def test_a_key_reused_for_another_hold_is_a_conflict(
    ml: MeterlineClient, db: asyncpg.Pool
) -> None:
    await allocate(db, "acme", 1_000_000)
    await ml.reserve("0.1", idempotency_key="k")
    with pytest.raises(Conflict) as conflict:
        await ml.reserve("0.2", idempotency_key="k")
    assert conflict.value.status == 409 and conflict.value.code == "idempotency_conflict"
    with pytest.raises(NotFound):
        await ml.get_reservation("no-such-hold")
