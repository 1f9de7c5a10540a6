"""Property tests of the ledger invariants on the real database (hypothesis drives the data).

For any stream of usage events — duplicates, interleaved accounts, any batch boundaries — and
any allocations in between: every event is debited exactly once, each ledger row's
balance_after chains from the previous one, and balance = sum of ledger rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.ledger import LedgerPolicy, RatedEvent, debit_batch, post_entry
from processors.pricing import PriceVersion, Terms, price_event
from schemas.event import UsageEvent

VERSION = PriceVersion(
    id=None,
    model="prop/model",
    provider="prop",
    effective_from=datetime(2020, 1, 1, tzinfo=UTC),
    input_per_mtok=Decimal("3"),
    cached_input_per_mtok=Decimal("0.3"),
    cache_write_per_mtok=Decimal("3.75"),
    output_per_mtok=Decimal("15"),
)
POLICY = LedgerPolicy()

usage = st.tuples(
    st.integers(0, 4),  # account
    st.integers(0, 30),  # event number (small: duplicates are common)
    st.integers(0, 200_000),  # input
    st.integers(0, 50_000),  # cached input
    st.integers(0, 20_000),  # output
    st.booleans(),  # byok
)
step = st.one_of(
    st.tuples(st.just("usage"), usage),
    st.tuples(st.just("allocate"), st.tuples(st.integers(0, 4), st.integers(1, 5_000_000))),
    st.tuples(st.just("flush"), st.none()),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=1, max_size=60))
async def test_ledger_invariants_hold_for_any_stream(db: asyncpg.Pool, steps: list) -> None:  # type: ignore[type-arg]
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    expected: dict[str, int] = {}
    debited: set[str] = set()
    pending: list[RatedEvent] = []

    async def flush(conn: asyncpg.Connection) -> None:
        # A batch creates the account of each event that is not a repeat within the batch,
        # even when an earlier batch debited that event id for another account: it then has
        # an account at 0 and no row (rare in the draws, so the model must say it).
        firsts = {r.event.event_id: r.event.account_id for r in reversed(pending)}
        for account in firsts.values():
            expected.setdefault(account, 0)
        await debit_batch(conn, pending, policy=POLICY)
        pending.clear()

    async with db.acquire() as conn:
        for kind, arg in steps:
            if kind == "usage":
                account_n, number, inp, cached, out, byok = arg
                account = f"{run}-a{account_n}"
                ev = UsageEvent(
                    event_id=f"{run}-e{number}",
                    account_id=account,
                    occurred_at=now,
                    model="prop/model",
                    input_tokens=inp,
                    cached_input_tokens=cached,
                    output_tokens=out,
                    byok=byok,
                )
                pending.append(RatedEvent(ev, VERSION, "prop"))
                if ev.event_id not in debited:  # the first sighting of an event is what counts
                    debited.add(ev.event_id)
                    cost = price_event(
                        ev, VERSION, Terms(byok_fee_pct=POLICY.byok_fee_pct)
                    ).cost_micros
                    expected[account] = expected.get(account, 0) - cost
            elif kind == "allocate":
                await flush(conn)
                account = f"{run}-a{arg[0]}"
                await post_entry(
                    conn,
                    account_id=account,
                    type="allocation",
                    amount_micros=arg[1],
                    reason=None,
                    idempotency_key=None,
                    policy=POLICY,
                )
                expected[account] = expected.get(account, 0) + arg[1]
            else:
                await flush(conn)
        await flush(conn)

        balances = dict(
            await conn.fetch(
                "SELECT account_id, balance_micros FROM user_credits WHERE account_id LIKE $1",
                f"{run}-%",
            )
        )
        assert balances == expected
        usage_rows = await conn.fetchval(
            "SELECT count(*) FROM credit_transactions WHERE type = 'usage' AND event_id LIKE $1",
            f"{run}-%",
        )
        assert usage_rows == len(debited)
        rows = await conn.fetch(
            "SELECT account_id, amount_micros, balance_after_micros FROM credit_transactions"
            " WHERE account_id LIKE $1 ORDER BY account_id, id",
            f"{run}-%",
        )
        running: dict[str, int] = {}
        for r in rows:
            running[r["account_id"]] = running.get(r["account_id"], 0) + r["amount_micros"]
            assert r["balance_after_micros"] == running[r["account_id"]]
        assert set(running) <= set(expected)
        assert {a: running.get(a, 0) for a in expected} == expected  # 0 if no rows at all
