"""HTTP ingest through dependency outages: 503 with Retry-After while Postgres or the broker is
down, 202 again once it is back — without restarting the API — and every event that got a 202
debited exactly once by a running worker (DESIGN "Scale", invariants 3 and 4).

Like test_faults.py, this stops and starts the local stack's own PostgreSQL and Kafka
(deploy/stack.py), so it runs against a stack started by `meterline dev up`, never a shared one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from deploy import stack
from processors.api_keys import create_api_key
from schemas.settings import CommonSettings
from tests.integration.api_server import ApiServer
from tests.integration.ledger_helpers import (
    balance_after_chain_consistent,
    ledger_matches_balances,
)
from tests.integration.worker import (
    USAGE_ROWS,
    Worker,
    add_test_price,
    event,
    fetchval_waiting,
    wait_for,
    wait_until_consumed,
)

pytestmark = pytest.mark.faults

ACCOUNTS = 12
BATCH = 10


def _say(msg: str) -> None:
    print(f"[ingest-faults] {msg}")


@dataclass
class Answer:
    at: float
    status: int | str
    retry_after: str | None = None
    content_type: str = ""
    body: dict[str, Any] = field(default_factory=dict)


class Poster:
    """Posts batches of events continuously; each batch is retried, same body, until 202."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.answers: list[Answer] = []
        self.accepted: list[dict[str, Any]] = []
        self.stopping = asyncio.Event()
        self._n = 0

    def _next_batch(self) -> list[dict[str, Any]]:
        batch = []
        for _ in range(BATCH):
            i = self._n
            self._n += 1
            batch.append(event(f"in{i}", f"acct-{i % ACCOUNTS}", input_tokens=1 + i % 911))
        return batch

    async def run(self) -> None:
        while not self.stopping.is_set():
            body = self._next_batch()
            while True:  # the same body until the API takes it
                try:
                    r = await self.client.post("/api/v1/usage/events", json=body)
                except httpx.TransportError as exc:
                    self.answers.append(Answer(time.monotonic(), type(exc).__name__))
                    await asyncio.sleep(0.5)
                    continue
                a = Answer(
                    time.monotonic(),
                    r.status_code,
                    r.headers.get("Retry-After"),
                    r.headers.get("content-type", ""),
                )
                if r.status_code != 202:
                    a.body = r.json()
                self.answers.append(a)
                if r.status_code == 202:
                    self.accepted.extend(body)
                    break
                assert r.status_code == 503, f"ingest answered {r.status_code}: {r.text}"
                await asyncio.sleep(0.5)  # shorter than Retry-After: the outage is short
            await asyncio.sleep(0.05)

    async def until(self, pred: Callable[[Answer], bool], since: float, timeout: float) -> Answer:
        """The first answer after `since` matching pred (or fail with what was answered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.answers:
                if a.at > since and pred(a):
                    return a
            await asyncio.sleep(0.2)
        seen = [(round(a.at - since, 1), a.status) for a in self.answers if a.at > since]
        raise AssertionError(f"no matching answer within {timeout}s; answers since: {seen[-20:]}")


def _is_503(dependency: str) -> Callable[[Answer], bool]:
    def pred(a: Answer) -> bool:
        return (
            a.status == 503
            and a.retry_after is not None
            and int(a.retry_after) > 0
            and a.content_type.startswith("application/problem+json")
            and a.body.get("status") == 503
            and dependency in str(a.body)
        )

    return pred


def _is_202(a: Answer) -> bool:
    return a.status == 202


async def _post_through_outages(
    api: ApiServer, worker: Worker, key: str, db: asyncpg.Pool
) -> Poster:
    """Post continuously while Postgres, then the broker, stop and start; the Poster after."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as client:
        poster = Poster(client)
        posting = asyncio.create_task(poster.run())
        try:
            await poster.until(_is_202, 0, 30)
            # The worker is up and debiting before any dependency goes away.
            deadline = time.monotonic() + 90
            while not await db.fetchval(USAGE_ROWS):
                assert worker.proc is not None and worker.proc.poll() is None, worker.log()
                assert time.monotonic() < deadline, worker.log()
                await asyncio.sleep(0.2)

            # Postgres down: the key cannot be checked (METERLINE_API_KEY_CACHE_SECONDS=0).
            await asyncio.to_thread(stack.stop_postgres, _say)
            try:
                down = await poster.until(_is_503("postgres"), time.monotonic() - 1, 60)
                _say(f"Postgres down: 503, Retry-After {down.retry_after}: {down.body['detail']}")
                ready = await client.get("/readyz")
                assert ready.status_code == 503 and "postgres" in ready.text, ready.text
            finally:
                await asyncio.to_thread(stack.start_postgres, _say)
            back = time.monotonic()
            await poster.until(_is_202, back, 60)
            _say(f"Postgres back: 202 after {time.monotonic() - back:.1f}s")

            # The broker down: the events cannot be published.
            await asyncio.to_thread(stack.stop_kafka, _say)
            try:
                down = await poster.until(_is_503("kafka"), time.monotonic() - 1, 60)
                _say(f"Kafka down: 503, Retry-After {down.retry_after}: {down.body['detail']}")
            finally:
                await asyncio.to_thread(stack.start_kafka, _say)
            back = time.monotonic()
            await poster.until(_is_202, back, 90)
            _say(f"Kafka back: 202 after {time.monotonic() - back:.1f}s")
            await asyncio.sleep(2)  # a little more traffic after both outages
        finally:
            poster.stopping.set()
            await asyncio.wait_for(posting, 120)
    assert api.proc is not None and api.proc.poll() is None, "the API must not restart"
    return poster


async def test_ingest_answers_503_while_a_dependency_is_down_and_loses_nothing(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
        _, key = await create_api_key(conn, account_id=None, scope="admin")
    api = ApiServer(test_settings)
    await api.start()
    worker = Worker(test_settings, METERLINE_BATCH_MAX="300").start()
    try:
        poster = await _post_through_outages(api, worker, key, db)
        await wait_for(db, USAGE_ROWS, len(poster.accepted), timeout=120, worker=worker)
        await wait_until_consumed(test_settings, worker, timeout=120)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    finally:
        worker.stop()
        api.stop()
    accepted = poster.accepted

    # Every event that got a 202 debited exactly once (retried bodies are duplicates, not
    # second debits), with its exact price: 2 credits per M input tokens.
    ids = [e["event_id"] for e in accepted]
    assert len(set(ids)) == len(ids)
    assert await fetchval_waiting(db, USAGE_ROWS) == len(ids)
    debited = {r[0] for r in await db.fetch("SELECT event_id FROM usage_events")}
    assert debited == set(ids)
    expected: dict[str, int] = {}
    for e in accepted:
        expected[e["account_id"]] = expected.get(e["account_id"], 0) - 2 * e["input_tokens"]
    assert dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits")) == expected
    await ledger_matches_balances(db)
    await balance_after_chain_consistent(db)
    codes = sorted({str(a.status) for a in poster.answers})
    _say(f"{len(ids)} events accepted and debited once; answers seen: {codes}")
