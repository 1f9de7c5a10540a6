"""The ledger against the real database: batch debits, single writes, invariants, concurrency."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from processors.ledger import (
    CapExceeded,
    EntryResult,
    IdempotencyConflict,
    InsufficientCredit,
    LedgerPolicy,
    RatedEvent,
    debit_batch,
    post_entry,
    set_monthly_cap,
)
from processors.pricing import PriceVersion
from schemas.event import UsageEvent
from tests.integration.ledger_helpers import allocate, ledger_matches_balances

POLICY = LedgerPolicy(low_balance_micros=1_000_000)
# 2 credits per M input, 1 per M cached, 8 per M output: easy to compute by hand.
VERSION = PriceVersion(
    id=None,
    model="test/model",
    provider="test",
    effective_from=datetime(2020, 1, 1, tzinfo=UTC),
    input_per_mtok=Decimal("2"),
    cached_input_per_mtok=Decimal("1"),
    cache_write_per_mtok=None,
    output_per_mtok=Decimal("8"),
)


def ev(
    event_id: str,
    account: str,
    *,
    inp: int = 0,
    cached: int = 0,
    out: int = 0,
    source: str = "default",
    when: datetime | None = None,
) -> RatedEvent:
    e = UsageEvent(
        event_id=event_id,
        source=source,
        account_id=account,
        occurred_at=when or datetime.now(UTC),
        model="test/model",
        input_tokens=inp,
        cached_input_tokens=cached,
        output_tokens=out,
    )
    return RatedEvent(e, VERSION, "test")


async def deduct(
    conn: asyncpg.Connection, micros: int, key: str, *, reason: str, now: datetime | None = None
) -> EntryResult:
    """A deduction with the limits enforced, as the API's deduct route makes it (`now`: the
    ledger's clock, default the real one)."""
    return await post_entry(
        conn,
        account_id="a",
        type="deduction",
        amount_micros=-micros,
        reason=reason,
        idempotency_key=key,
        policy=POLICY,
        enforce_limits=True,
        now=now,
    )


async def test_batch_debits_exact_costs_with_running_balances(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await allocate(conn, "a", 10_000_000, "g1", reason="grant", policy=POLICY)
        result = await debit_batch(
            conn,
            [
                ev("e1", "a", inp=1000, out=500),  # 0.002 + 0.004 = 0.006000
                ev("e2", "b", inp=333, cached=1),  # 0.000666 + 0.000001 = 0.000667
                ev("e3", "a", cached=250_000, out=1),  # 0.25 + 0.000008 = 0.250008
            ],
            policy=POLICY,
        )
        assert (result.debited, result.duplicates) == (3, 0)
        rows = await conn.fetch(
            "SELECT account_id, event_id, amount_micros, balance_after_micros"
            " FROM credit_transactions WHERE type = 'usage' ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [
            ("a", "e1", -6000, 9_994_000),
            ("b", "e2", -667, -667),
            ("a", "e3", -250_008, 9_743_992),
        ]
        balances = dict(await conn.fetch("SELECT account_id, balance_micros FROM user_credits"))
        assert balances == {"a": 9_743_992, "b": -667}
        spend = dict(await conn.fetch("SELECT account_id, spend_micros FROM monthly_spend"))
        assert spend == {"a": 256_008, "b": 667}
        daily = await conn.fetchrow(
            "SELECT events, input_tokens, cached_input_tokens, output_tokens, cost_micros"
            " FROM usage_daily WHERE account_id = 'a'"
        )
        assert tuple(daily) == (2, 1000, 250_000, 501, 256_008)
        await ledger_matches_balances(conn)


async def test_duplicates_in_and_across_batches_debit_once(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        first = await debit_batch(
            conn, [ev("e1", "a", inp=10**6), ev("e1", "a", inp=10**6)], policy=POLICY
        )
        again = await debit_batch(
            conn, [ev("e1", "a", inp=10**6), ev("e2", "a", inp=10**6)], policy=POLICY
        )
        other_source = await debit_batch(
            conn, [ev("e1", "a", inp=10**6, source="proxy-2")], policy=POLICY
        )
        assert (first.debited, first.duplicates) == (1, 1)
        assert (again.debited, again.duplicates) == (1, 1)
        assert (other_source.debited, other_source.duplicates) == (1, 0)
        assert await conn.fetchval("SELECT balance_micros FROM user_credits") == -6_000_000
        assert (
            await conn.fetchval("SELECT times_seen FROM duplicate_events WHERE event_id = 'e1'")
            == 2
        )
        await ledger_matches_balances(conn)


async def test_a_key_debited_for_another_account_is_a_conflict_not_a_duplicate(
    db: asyncpg.Pool,
) -> None:
    async with db.acquire() as conn:
        # One batch: a's event, b's with the same key (twice), a's redelivery, a valid event.
        first = await debit_batch(
            conn,
            [
                ev("1", "a", inp=10**6),
                ev("1", "b", inp=10**6),
                ev("1", "b", inp=10**6),
                ev("1", "a", inp=10**6),
                ev("2", "b", inp=10**6),
            ],
            policy=POLICY,
        )
        assert (first.debited, first.duplicates) == (2, 1)
        assert [p for p, _ in first.conflicting] == [1, 2]
        message = first.conflicting[0][1]
        assert "'default'" in message and "'1'" in message and "another account" in message
        assert "'a'" not in message  # the other customer's id is not told
        # Later batches: b's event with a's key again, a's redelivery, a third valid event.
        later = await debit_batch(
            conn,
            [ev("1", "b", inp=10**6), ev("1", "a", inp=10**6), ev("3", "b", inp=10**6)],
            policy=POLICY,
        )
        assert (later.debited, later.duplicates) == (1, 1)
        assert [p for p, _ in later.conflicting] == [0]
        # b's event published at another time (another partition of usage_events) too.
        moved = await debit_batch(
            conn,
            [ev("1", "b", inp=10**6, when=datetime.now(UTC) - timedelta(days=40))],
            policy=POLICY,
        )
        assert (moved.debited, moved.duplicates, len(moved.conflicting)) == (0, 0, 1)
        balances = dict(await conn.fetch("SELECT account_id, balance_micros FROM user_credits"))
        assert balances == {"a": -2_000_000, "b": -4_000_000}
        usage = await conn.fetch("SELECT account_id, event_id FROM credit_transactions ORDER BY id")
        assert [tuple(r) for r in usage] == [("a", "1"), ("b", "2"), ("b", "3")]
        # Only a's redeliveries are recorded as duplicates of the key.
        assert await conn.fetchval("SELECT times_seen FROM duplicate_events") == 2
        await ledger_matches_balances(conn)


def with_unit(rated: RatedEvent) -> RatedEvent:
    """The same event using one image, a unit VERSION has no price for: unpriced."""
    return rated._replace(event=rated.event.model_copy(update={"units": {"images": 1}}))


async def test_an_unpriced_copy_of_a_key_holds_it_for_no_account(db: asyncpg.Pool) -> None:
    """What a batch decides is what the records would get one by one: an unpriced record is
    debited by no one, so a later copy of its key is judged as if it were not there."""
    async with db.acquire() as conn:
        batch = await debit_batch(
            conn,
            [
                with_unit(ev("1", "a", inp=10**6)),  # unpriced
                ev("1", "b", inp=10**6),  # the first priced copy: debited for b
                ev("1", "b", inp=10**6),  # b's redelivery: a duplicate
                ev("1", "a", inp=10**6),  # b holds the key now: conflicting
                with_unit(ev("2", "a", inp=10**6)),  # unpriced
                with_unit(ev("2", "a", inp=10**6)),  # a's redelivery, still unpriced
                ev("2", "a", inp=10**6),  # the first priced copy of key 2: debited for a
            ],
            policy=POLICY,
        )
        assert [p for p, _ in batch.unpriced] == [0, 4, 5]
        assert "'images'" in batch.unpriced[0][1]
        assert [p for p, _ in batch.conflicting] == [3]
        assert (batch.debited, batch.duplicates) == (2, 1)
        usage = await conn.fetch("SELECT account_id, event_id FROM credit_transactions ORDER BY id")
        assert [tuple(r) for r in usage] == [("b", "1"), ("a", "2")]
        balances = dict(await conn.fetch("SELECT account_id, balance_micros FROM user_credits"))
        assert balances == {"a": -2_000_000, "b": -2_000_000}
        await ledger_matches_balances(conn)


async def test_overdraw_is_recorded_blocks_and_alerts_once(db: asyncpg.Pool) -> None:
    # One clock for the whole scenario: its spend and its cap are of one month, even when the
    # test runs across 00:00 UTC on the 1st.
    now = datetime.now(UTC)
    async with db.acquire() as conn:
        await allocate(conn, "a", 3_000_000, reason=None, policy=POLICY, now=now)
        await set_monthly_cap(conn, account_id="a", cap_micros=4_000_000, policy=POLICY, now=now)
        # 1.0 each (500k input at 2/M): spend 1,2,3,4 = 25%, 50%, 75%, 100% of the cap and
        # balance 2,1,0,-1; the last event crosses 80 % and 100 % at once: both are alerted.
        for i in range(4):
            await debit_batch(
                conn, [ev(f"e{i}", "a", inp=500_000, when=now)], policy=POLICY, now=now
            )
        state = await conn.fetchrow(
            "SELECT balance_micros, blocked, blocked_reason FROM user_credits"
        )
        assert tuple(state) == (-1_000_000, True, "balance_overdrawn")
        kinds = [
            (r["kind"], r["t"])
            for r in await conn.fetch(
                "SELECT kind, payload->>'threshold_pct' AS t FROM alert_outbox ORDER BY id"
            )
        ]
        assert kinds == [
            ("cap_threshold", "50"),
            ("low_balance", None),
            ("cap_threshold", "80"),
            ("cap_threshold", "100"),
            ("blocked", None),
        ]
        # A top-up unblocks only if the cap allows: spend is at the cap, so still blocked.
        await allocate(conn, "a", 5_000_000, reason=None, policy=POLICY, now=now)
        assert (
            await conn.fetchval("SELECT blocked_reason FROM user_credits") == "monthly_cap_reached"
        )
        await set_monthly_cap(conn, account_id="a", cap_micros=None, policy=POLICY, now=now)
        assert await conn.fetchval("SELECT blocked FROM user_credits") is False
        assert (
            await conn.fetchval("SELECT kind FROM alert_outbox ORDER BY id DESC LIMIT 1")
            == "unblocked"
        )
        await ledger_matches_balances(conn)


async def test_events_of_a_past_month_count_to_that_month(db: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    last_month = now.replace(day=1) - timedelta(days=1)
    async with db.acquire() as conn:
        await debit_batch(
            conn,
            [ev("old", "a", inp=10**6, when=last_month), ev("new", "a", inp=10**6, when=now)],
            policy=POLICY,
        )
        rows = dict(await conn.fetch("SELECT month, spend_micros FROM monthly_spend"))
    assert rows == {
        last_month.date().replace(day=1): 2_000_000,
        now.date().replace(day=1): 2_000_000,
    }


async def test_deduction_limits_and_idempotency(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await allocate(conn, "a", 5_000_000, "k0", reason="grant", policy=POLICY)
        with pytest.raises(InsufficientCredit):
            await deduct(conn, 6_000_000, "k1", reason="big")
        await set_monthly_cap(conn, account_id="a", cap_micros=2_000_000, policy=POLICY)
        with pytest.raises(CapExceeded):
            await deduct(conn, 3_000_000, "k2", reason="over cap")
        first = await deduct(conn, 1_500_000, "k3", reason="ok")
        replay = await deduct(conn, 1_500_000, "k3", reason="ok")
        assert replay.replayed and replay.row == first.row
        assert first.row.balance_after_micros == 3_500_000
        with pytest.raises(IdempotencyConflict):
            await deduct(conn, 1_000_000, "k3", reason="ok")
        assert await conn.fetchval("SELECT balance_micros FROM user_credits") == 3_500_000
        assert await conn.fetchval("SELECT count(*) FROM credit_transactions") == 2
        await ledger_matches_balances(conn)


async def _race_deductions(
    db: asyncpg.Pool, calls: int, *, cap_micros: int | None, refusal: type[Exception]
) -> int:
    """`calls` deductions of 1.0 at once from an account holding 50.0: how many went through.
    One clock for all of them: the race is within one month whenever it runs."""
    now = datetime.now(UTC)
    async with db.acquire() as conn:
        await allocate(conn, "a", 50_000_000, reason=None, policy=POLICY, now=now)
        await set_monthly_cap(conn, account_id="a", cap_micros=cap_micros, policy=POLICY, now=now)

    async def one(i: int) -> bool:
        async with db.acquire() as conn:
            try:
                await deduct(conn, 1_000_000, f"d{i}", reason="call", now=now)
                return True
            except refusal:
                return False

    return sum(await asyncio.gather(*(one(i) for i in range(calls))))


async def test_concurrent_deductions_never_overdraw(db: asyncpg.Pool) -> None:
    assert await _race_deductions(db, 100, cap_micros=None, refusal=InsufficientCredit) == 50
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT balance_micros FROM user_credits") == 0
        await ledger_matches_balances(conn)


async def test_concurrent_deductions_never_pass_the_cap(db: asyncpg.Pool) -> None:
    assert await _race_deductions(db, 40, cap_micros=7_000_000, refusal=CapExceeded) == 7
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT spend_micros FROM monthly_spend") == 7_000_000
        await ledger_matches_balances(conn)


async def test_worker_batches_and_api_writes_at_once_never_deadlock_or_lose(
    db: asyncpg.Pool,
) -> None:
    """Batches over many accounts (any order) and single writes on the same accounts, all at
    once on separate connections: no deadlock, no lost update, balance = sum of rows."""
    accounts = [f"acct-{i}" for i in range(8)]
    # Drawn up front: what each writer touches must not depend on which task runs first.
    rng = random.Random(7)
    batches = [
        [ev(f"b{n}-{i}", rng.choice(accounts), inp=1000) for i in range(40)] for n in range(12)
    ]
    singles = [rng.choice(accounts) for _ in range(12)]

    async def batch(n: int) -> None:
        async with db.acquire() as conn:
            await debit_batch(conn, batches[n], policy=POLICY)

    async def single(n: int) -> None:
        async with db.acquire() as conn:
            await allocate(conn, singles[n], 1_000, f"s{n}", reason=None, policy=POLICY)

    await asyncio.gather(*(batch(n) for n in range(12)), *(single(n) for n in range(12)))
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM credit_transactions") == 12 * 40 + 12
        total = await conn.fetchval("SELECT sum(balance_micros) FROM user_credits")
        assert total == 12 * 1_000 - 12 * 40 * 2_000
        await ledger_matches_balances(conn)


async def test_usage_row_keeps_what_the_event_said(db: asyncpg.Pool) -> None:
    """The usage row stores the event's values as sent: an offset time as the same instant,
    units as numbers, reported_cost as an exact decimal, metadata whole (an integer past 64
    bits included: the batch's JSON document falls back to the stdlib encoder for it)."""
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    plain = UsageEvent(
        event_id="keep-1",
        account_id="keep",
        occurred_at=when,
        model="test/model",
        input_tokens=1_000,
        reported_cost=Decimal("0.0000001"),
        metadata={"route": "a\tb\nc", "nested": {"list": [1, 2.5, None, True, "é"]}},
    )
    huge = plain.model_copy(
        update={"event_id": "keep-2", "metadata": {"big": 10**30, "neg": -(10**25)}}
    )
    async with db.acquire() as conn:
        result = await debit_batch(
            conn,
            [RatedEvent(plain, VERSION, "test"), RatedEvent(huge, VERSION, "test")],
            policy=POLICY,
        )
        assert result.debited == 2
        rows = {
            r["event_id"]: r
            for r in await conn.fetch(
                "SELECT event_id, occurred_at, reported_cost, metadata::text AS metadata,"
                " units, cost_micros FROM usage_events WHERE account_id = 'keep'"
            )
        }
    assert rows["keep-1"]["occurred_at"] == when
    assert rows["keep-1"]["reported_cost"] == Decimal("0.0000001")
    assert json.loads(rows["keep-1"]["metadata"]) == plain.metadata
    assert rows["keep-1"]["units"] is None
    assert rows["keep-1"]["cost_micros"] == 2_000  # 1,000 input tokens at 2 per M
    assert json.loads(rows["keep-2"]["metadata"]) == {"big": 10**30, "neg": -(10**25)}
