"""Holds and grants with the real worker on Kafka: an event's reservation_id settles its hold in
the transaction that debits it (once); the worker's timer expires grants exactly once."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from processors.ledger import GrantTerms, post_entry, reserve
from schemas.settings import CommonSettings
from tests.integration.api.conftest import UserKeyFactory, auth
from tests.integration.ledger_helpers import POLICY, allocate, grants_match_balances
from tests.integration.worker import (
    USAGE_ROWS,
    Worker,
    add_test_price,
    event,
    publish_usage,
    wait_for,
)

MILLION = 1_000_000  # input tokens of test/model: 2 credits


async def _hold(db: asyncpg.Pool, account: str, micros: int, key: str, ttl: int = 300) -> str:
    async with db.acquire() as conn:
        result = await reserve(
            conn,
            account_id=account,
            amount_micros=micros,
            ttl_seconds=ttl,
            idempotency_key=key,
            request_hash=hashlib.sha256(key.encode()).digest(),
            metadata=None,
        )
    return result.hold.reservation_id


async def test_events_settle_their_hold_once_on_kafka(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    await allocate(db, "acme", 20_000_000)
    held = await _hold(db, "acme", 3_000_000, "call-1")
    short = await _hold(db, "acme", 1_000_000, "call-2", ttl=1)
    released = await _hold(db, "acme", 1_000_000, "call-3")
    async with db.acquire() as conn:
        from processors.ledger import release

        await release(conn, reservation_id=released, account_id="acme")
    await asyncio.sleep(1.2)  # `short` expires
    events = [
        # The real cost (4) is above the hold (3): all of it is debited.
        event("e1", "acme", input_tokens=2 * MILLION, reservation_id=held),
        event("e2", "acme", input_tokens=MILLION, reservation_id=held),
        event("e3", "acme", input_tokens=MILLION, reservation_id=short),
        event("e4", "acme", input_tokens=MILLION, reservation_id=released),
        event("e5", "acme", input_tokens=MILLION, reservation_id="rsv_nobody"),
    ]
    worker = Worker(test_settings).start()
    try:
        await publish_usage(test_settings, events)
        await wait_for(db, USAGE_ROWS, 5, worker=worker)
    finally:
        worker.stop()
    holds = {
        r["reservation_id"]: (r["status"], r["settled_event_id"])
        for r in await db.fetch("SELECT * FROM credit_holds")
    }
    assert holds[held] == ("settled", "e1")
    assert holds[short][0] == "active" or holds[short][0] == "expired"
    assert holds[short][1] is None
    assert holds[released] == ("released", None)
    settled_tx = await db.fetchval(
        "SELECT settled_transaction_id FROM credit_holds WHERE reservation_id = $1", held
    )
    assert (
        await db.fetchval("SELECT event_id FROM credit_transactions WHERE id = $1", settled_tx)
        == "e1"
    )
    balance = await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id='acme'")
    assert balance == 20_000_000 - 12_000_000
    await grants_match_balances(db)


async def test_http_ingest_settles_the_hold(
    test_settings: CommonSettings,
    db: asyncpg.Pool,
    client: httpx.AsyncClient,
    user_key_for: UserKeyFactory,
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000)
    r = await client.post(
        "/api/v1/credits/reservations",
        json={"amount": "5", "idempotency_key": "proxy-call-1"},
        headers=auth(key),
    )
    assert r.status_code == 201
    rid = r.json()["reservation_id"]
    body = event("h1", "acme", input_tokens=MILLION, reservation_id=rid)
    worker = Worker(test_settings).start()
    try:
        accepted = await client.post("/api/v1/usage/events", json=body, headers=auth(key))
        assert accepted.status_code == 202, accepted.text
        await wait_for(db, USAGE_ROWS, 1, worker=worker)
    finally:
        worker.stop()
    got = (await client.get(f"/api/v1/credits/reservations/{rid}", headers=auth(key))).json()
    assert (got["status"], got["available"]) == ("settled", "8.000000")
    assert got["settled_transaction_id"] is not None
    bal = (await client.get("/api/v1/credits/balance", headers=auth(key))).json()
    assert (bal["balance"], bal["held"], bal["available"]) == ("8.000000", "0.000000", "8.000000")


async def test_worker_timer_expires_a_grant_once_with_two_workers(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    async with db.acquire() as conn:
        result = await post_entry(
            conn,
            account_id="acme",
            type="allocation",
            amount_micros=3_000_000,
            reason="promo",
            idempotency_key="promo",
            policy=POLICY,
            grant=GrantTerms("promotional", 10, expires_at=soon),
        )
    await allocate(db, "acme", 1_000_000)
    assert result.grant is not None
    workers = [Worker(test_settings, METERLINE_EXPIRY_INTERVAL_S="1").start() for _ in range(2)]
    try:
        await wait_for(
            db,
            "SELECT count(*) FROM credit_transactions WHERE type = 'expiration'",
            1,
            timeout=60,
            worker=workers[0],
        )
        await asyncio.sleep(3)  # both timers tick again: still one row
    finally:
        for w in workers:
            w.stop()
    rows = await db.fetch("SELECT amount_micros FROM credit_transactions WHERE type='expiration'")
    assert [r["amount_micros"] for r in rows] == [-3_000_000]
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == 1_000_000
    # A rerun (a restarted worker) finds nothing left.
    from processors.ledger import expire_grants

    assert (await expire_grants(db, policy=POLICY)).grants == 0
    await grants_match_balances(db)
