"""The ledger at 00:00 UTC on the 1st, with its clock passed in: the last microsecond of a
month and the first of the next, at the turn of an ordinary month, of a year, and of February
in a common and in a leap year."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from processors.ledger import (
    CapExceeded,
    LedgerPolicy,
    RatedEvent,
    debit_batch,
    grant_monthly_allocations,
    month_of,
    post_entry,
    read_account,
    set_monthly_cap,
)
from schemas.event import UsageEvent
from tests.integration.ledger_helpers import COST_IS_INPUT, allocate, ledger_matches_balances

POLICY = LedgerPolicy()
TURNS = [
    pytest.param(datetime(2026, 12, 1, tzinfo=UTC), id="nov-dec"),
    pytest.param(datetime(2027, 1, 1, tzinfo=UTC), id="dec-jan"),
    pytest.param(datetime(2027, 3, 1, tzinfo=UTC), id="feb28-mar"),
    pytest.param(datetime(2028, 3, 1, tzinfo=UTC), id="feb29-mar"),
]
TICK = timedelta(microseconds=1)


async def _deduct(conn: asyncpg.Connection, micros: int, key: str, now: datetime) -> None:
    """A deduction with the limits enforced (the API's deduct route), at `now`."""
    await post_entry(
        conn,
        account_id="a",
        type="deduction",
        amount_micros=-micros,
        reason="call",
        idempotency_key=key,
        policy=POLICY,
        enforce_limits=True,
        now=now,
    )


@pytest.mark.parametrize("turn", TURNS)
async def test_a_cap_binds_in_its_month_and_the_next_month_starts_afresh(
    db: asyncpg.Pool, turn: datetime
) -> None:
    last = turn - TICK
    old, new = month_of(last), month_of(turn)
    assert (old.month % 12) + 1 == new.month  # the instants are the turn, not a typo
    async with db.acquire() as conn:
        await allocate(conn, "a", 100_000_000, reason=None, now=last)
        await set_monthly_cap(conn, account_id="a", cap_micros=5_000_000, policy=POLICY, now=last)
        await _deduct(conn, 4_000_000, "k1", last)
        with pytest.raises(CapExceeded):
            await _deduct(conn, 2_000_000, "k2", last)
        # The first microsecond of the next month: its cap is whole again.
        await _deduct(conn, 2_000_000, "k3", turn)
        # Usage of the old month's last microsecond, metered after the turn, is the old
        # month's spend and the old day's rollup, never the new month's cap. (Constructed
        # without validation: its time is ahead of the real clock, which a receiver refuses.)
        late = UsageEvent.model_construct(
            event_id="late", account_id="a", occurred_at=last, model="any", input_tokens=3_000_000
        )
        result = await debit_batch(conn, [RatedEvent(late, COST_IS_INPUT)], policy=POLICY, now=turn)
        assert result.debited == 1
        spend = dict(await conn.fetch("SELECT month, spend_micros FROM monthly_spend"))
        assert spend == {old: 7_000_000, new: 2_000_000}
        day = await conn.fetchval("SELECT day FROM usage_daily WHERE account_id = 'a'")
        assert day == last.date() == turn.date() - timedelta(days=1)
        await ledger_matches_balances(conn)
    state = await read_account(db, account_id="a", now=turn)
    assert state is not None
    assert (state.balance_micros, state.monthly_spend_micros) == (91_000_000, 2_000_000)
    assert (state.blocked, state.should_block()) == (False, None)
    # Read with the old month's clock, the same account is past that month's cap.
    before = await read_account(db, account_id="a", now=last)
    assert before is not None and before.monthly_spend_micros == 7_000_000
    assert before.should_block() == "monthly_cap_reached"


@pytest.mark.parametrize("turn", TURNS)
async def test_a_monthly_grant_run_in_the_months_last_microsecond(
    db: asyncpg.Pool, turn: datetime
) -> None:
    """A run for the month that is ending, and one made ahead for the month that begins: each
    grant is effective within its month and expires at its end (a leap February on the 29th)."""
    last = turn - TICK
    await db.execute("INSERT INTO user_credits (account_id, tier) VALUES ('f1', 'free')")
    async with db.acquire() as conn:
        ending = await grant_monthly_allocations(
            conn, month=month_of(last), policy=POLICY, now=last
        )
        ahead = await grant_monthly_allocations(conn, month=month_of(turn), policy=POLICY, now=last)
    assert (ending.granted, ahead.granted) == (1, 1)
    rows = await db.fetch(
        "SELECT effective_at, expires_at FROM credit_grants ORDER BY effective_at"
    )
    after_next = date(turn.year + turn.month // 12, turn.month % 12 + 1, 1)
    assert [tuple(r) for r in rows] == [
        (last, turn),
        (turn, datetime(after_next.year, after_next.month, 1, tzinfo=UTC)),
    ]
