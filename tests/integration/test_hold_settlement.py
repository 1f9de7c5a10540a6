"""Settling holds through debit_batch (Reservations): an event settles only a hold of its own
account, a hold settles at most once across batches, and a release racing the settling debit
ends in exactly one of the two outcomes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from processors.ledger import RatedEvent, debit_batch, release, reserve
from schemas.event import UsageEvent
from tests.integration.ledger_helpers import (
    COST_IS_INPUT,
    POLICY,
    allocate,
    ledger_matches_balances,
)


async def _hold(db: asyncpg.Pool, account: str, micros: int) -> str:
    key = uuid.uuid4().hex
    async with db.acquire() as conn:
        result = await reserve(
            conn,
            account_id=account,
            amount_micros=micros,
            ttl_seconds=300,
            idempotency_key=key,
            request_hash=key.encode(),
            metadata=None,
        )
    return result.hold.reservation_id


def _usage(account: str, cost_micros: int, reservation_id: str) -> RatedEvent:
    return RatedEvent(
        UsageEvent(
            event_id=uuid.uuid4().hex,
            account_id=account,
            occurred_at=datetime.now(UTC),
            model="m",
            input_tokens=cost_micros,
            reservation_id=reservation_id,
        ),
        COST_IS_INPUT,
    )


async def _holds(db: asyncpg.Pool) -> dict[str, tuple[str, str | None]]:
    rows = await db.fetch("SELECT reservation_id, status, settled_event_id FROM credit_holds")
    return {r["reservation_id"]: (r["status"], r["settled_event_id"]) for r in rows}


async def test_an_event_naming_another_accounts_hold_does_not_stop_its_owner_settling_it(
    db: asyncpg.Pool,
) -> None:
    """mallory's event names bob's hold ahead of bob's own event in the same batch: bob's event
    settles it (it stayed active, holding bob's credit until its TTL, before the fix)."""
    await allocate(db, "bob", 1000)
    await allocate(db, "mallory", 1000)
    bobs = await _hold(db, "bob", 400)
    foreign = _usage("mallory", 30, bobs)
    own = _usage("bob", 50, bobs)
    async with db.acquire() as conn:
        result = await debit_batch(conn, [foreign, own], policy=POLICY)
    assert result.debited == 2 and result.settled == 1
    assert (await _holds(db))[bobs] == ("settled", own.event.event_id)
    balances = dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits"))
    assert balances == {"bob": 950, "mallory": 970}
    held = await db.fetchval("SELECT count(*) FROM credit_holds WHERE status = 'active'")
    assert held == 0
    await ledger_matches_balances(db)


async def test_a_foreign_event_alone_settles_nothing(db: asyncpg.Pool) -> None:
    await allocate(db, "bob", 1000)
    await allocate(db, "mallory", 1000)
    bobs = await _hold(db, "bob", 400)
    async with db.acquire() as conn:
        result = await debit_batch(conn, [_usage("mallory", 30, bobs)], policy=POLICY)
    assert (result.debited, result.settled) == (1, 0)
    assert (await _holds(db))[bobs] == ("active", None)


async def test_a_hold_named_in_two_batches_settles_once(db: asyncpg.Pool) -> None:
    await allocate(db, "bob", 1000)
    hold = await _hold(db, "bob", 400)
    first, second = _usage("bob", 50, hold), _usage("bob", 70, hold)
    async with db.acquire() as conn:
        one = await debit_batch(conn, [first], policy=POLICY)
        two = await debit_batch(conn, [second], policy=POLICY)
    assert (one.debited, one.settled, two.debited, two.settled) == (1, 1, 1, 0)
    assert (await _holds(db))[hold] == ("settled", first.event.event_id)
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == 880


async def test_a_release_racing_the_settling_debit_ends_in_one_outcome(db: asyncpg.Pool) -> None:
    """20 rounds of release and debit at once: the hold ends released (and the debit settled
    nothing) or settled (and the release answered settled), never both, never neither."""
    await allocate(db, "bob", 100_000)
    for _ in range(20):
        hold = await _hold(db, "bob", 400)
        usage = _usage("bob", 10, hold)

        async def debit(usage: RatedEvent = usage) -> int:
            async with db.acquire() as conn:
                return (await debit_batch(conn, [usage], policy=POLICY)).settled

        async def free(hold: str = hold) -> tuple[bool, str]:
            async with db.acquire() as conn:
                answer = await release(conn, reservation_id=hold, account_id="bob")
            return answer.released, answer.hold.status

        settled, (released, status) = await asyncio.gather(debit(), free())
        final = (await _holds(db))[hold]
        if released:
            assert (settled, status, final) == (0, "released", ("released", None))
        else:
            assert (settled, status, final) == (1, "settled", ("settled", usage.event.event_id))
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == 100_000 - 20 * 10
    await ledger_matches_balances(db)
