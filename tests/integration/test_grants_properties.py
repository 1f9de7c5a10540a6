"""A hypothesis state machine over grants, debits (API and batch), expiries and holds, on the
real database.

Rules: grant (any category, priority, expiry, applicability), API deduction, usage batch,
expiry run, reserve, release, a hold reaching its expiry. Invariants after every step: every
remaining ≥ 0; Σ remaining − overdraft = balance = Σ ledger (invariant 7); available = balance −
the active holds (invariant 8); and the balance and holds the model expects. A reservation or a
deduction succeeds exactly when it fits in available.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from processors.ledger import (
    CapExceeded,
    GrantTerms,
    InsufficientCredit,
    LedgerPolicy,
    RatedEvent,
    debit_batch,
    expire_grants,
    post_entry,
    read_account,
    release,
    reserve,
)
from schemas.event import UsageEvent
from tests.integration.ledger_helpers import COST_IS_INPUT, grants_match_balances

POLICY = LedgerPolicy()
VERSION = COST_IS_INPUT
MODELS = ("openai/gpt-4o", "anthropic/claude-3", "mistral/large")
T = TypeVar("T")


class GrantsAndHolds(RuleBasedStateMachine):
    """One account per run; the model keeps its balance and its active holds."""

    dsn: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pool: asyncpg.Pool = self.run(self._connect())
        self.account = f"sm-{uuid.uuid4().hex[:10]}"
        self.now = datetime.now(UTC)
        self.balance = 0
        self.holds: dict[str, int] = {}
        self.steps = 0

    async def _connect(self) -> asyncpg.Pool:
        # Created inside the machine's own loop (a pool binds to the loop running it).
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        assert pool is not None
        return pool

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.pool.close())
        self.loop.close()

    async def _available(self) -> int:
        state = await read_account(self.pool, account_id=self.account)  # type: ignore[arg-type]
        return 0 if state is None else state.available_micros

    @rule(
        micros=st.integers(1, 5_000),
        category=st.sampled_from(["paid", "promotional"]),
        priority=st.integers(0, 100),
        expiry=st.sampled_from(["never", "later", "past"]),
        applies=st.sampled_from([None, ("openai/",), ("anthropic/", "mistral/")]),
    )
    def grant(
        self,
        micros: int,
        category: str,
        priority: int,
        expiry: str,
        applies: tuple[str, ...] | None,
    ) -> None:
        now = self.now
        terms = GrantTerms(
            category,
            priority,
            effective_at=now - timedelta(hours=2) if expiry == "past" else None,
            expires_at={
                "never": None,
                "later": now + timedelta(days=1),
                "past": now - timedelta(hours=1),
            }[expiry],
            applies_to=applies,
        )

        async def go() -> None:
            async with self.pool.acquire() as conn:
                await post_entry(
                    conn,
                    account_id=self.account,
                    type="allocation",
                    amount_micros=micros,
                    reason="g",
                    idempotency_key=None,
                    policy=POLICY,
                    grant=terms,
                )

        self.run(go())
        self.balance += micros

    @rule(micros=st.integers(1, 4_000))
    def deduct(self, micros: int) -> None:
        async def go() -> bool:
            available = await self._available()
            async with self.pool.acquire() as conn:
                try:
                    await post_entry(
                        conn,
                        account_id=self.account,
                        type="deduction",
                        amount_micros=-micros,
                        reason="d",
                        idempotency_key=None,
                        policy=POLICY,
                        enforce_limits=True,
                    )
                except (InsufficientCredit, CapExceeded):
                    assert micros > available  # amounts stay far below the free tier's cap
                    return False
            assert micros <= available
            return True

        if self.run(go()):
            self.balance -= micros

    @rule(
        events=st.lists(
            st.tuples(st.sampled_from(MODELS), st.integers(0, 3_000)), min_size=1, max_size=5
        )
    )
    def batch(self, events: list[tuple[str, int]]) -> None:
        self.steps += 1
        rated = [
            RatedEvent(
                UsageEvent(
                    event_id=f"{self.account}-{self.steps}-{i}",
                    account_id=self.account,
                    occurred_at=self.now,
                    model=model,
                    input_tokens=cost,
                ),
                VERSION,
            )
            for i, (model, cost) in enumerate(events)
        ]

        async def go() -> None:
            async with self.pool.acquire() as conn:
                await debit_batch(conn, rated, policy=POLICY)

        self.run(go())
        self.balance -= sum(cost for _, cost in events)

    @rule()
    def expire(self) -> None:
        async def go() -> int:
            due = await self.pool.fetchval(
                "SELECT coalesce(sum(remaining_micros), 0) FROM credit_grants"
                " WHERE account_id = $1 AND expires_at <= now()",
                self.account,
            )
            done = await expire_grants(self.pool, policy=POLICY)
            assert done.expired_micros >= due
            return int(due)

        self.balance -= self.run(go())

    @rule(micros=st.integers(1, 4_000))
    def reserve(self, micros: int) -> None:
        self.steps += 1
        key = f"{self.account}-{self.steps}"

        async def go() -> str | None:
            available = await self._available()
            async with self.pool.acquire() as conn:
                try:
                    result = await reserve(
                        conn,
                        account_id=self.account,
                        amount_micros=micros,
                        ttl_seconds=300,
                        idempotency_key=key,
                        request_hash=hashlib.sha256(key.encode()).digest(),
                        metadata=None,
                    )
                except (InsufficientCredit, CapExceeded):
                    assert micros > available
                    return None
            assert micros <= available
            return result.hold.reservation_id

        rid = self.run(go())
        if rid is not None:
            self.holds[rid] = micros

    @precondition(lambda self: bool(self.holds))
    @rule(pick=st.integers(0, 50), lapse=st.booleans())
    def end_hold(self, pick: int, lapse: bool) -> None:
        rid = sorted(self.holds)[pick % len(self.holds)]

        async def go() -> None:
            if lapse:  # the hold reaches its expires_at (no sweeper needed to stop counting)
                await self.pool.execute(
                    "UPDATE credit_holds SET expires_at = now() - interval '1 second'"
                    " WHERE reservation_id = $1",
                    rid,
                )
            else:
                async with self.pool.acquire() as conn:
                    await release(conn, reservation_id=rid, account_id=self.account)

        self.run(go())
        del self.holds[rid]

    @invariant()
    def ledger_grants_and_holds_agree(self) -> None:
        async def go() -> None:
            state = await read_account(self.pool, account_id=self.account)  # type: ignore[arg-type]
            if state is None:
                assert self.balance == 0 and not self.holds
                return
            assert state.balance_micros == self.balance
            assert state.held_micros == sum(self.holds.values())
            assert state.available_micros == self.balance - sum(self.holds.values())
            async with self.pool.acquire() as conn:
                await grants_match_balances(conn)

        self.run(go())


def test_grants_and_holds_state_machine(db: asyncpg.Pool, database_url: str) -> None:
    # db empties the test database first; the machine runs its own loop and pool on it.
    GrantsAndHolds.dsn = database_url
    test = GrantsAndHolds.TestCase
    test.settings = settings(
        max_examples=30,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    test().runTest()
