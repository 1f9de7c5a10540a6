"""The chaos harness's traffic: usage events (Kafka and HTTP ingest), deductions, poison records.

Every sender retries the SAME thing until it is acknowledged — the same record to Kafka, the
same body to HTTP ingest, the same idempotency key to deduct — as a careful client does, so
what was acknowledged is exactly what the system owes: each acknowledged event debited once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from producers.synthetic import account_id, synthetic_events

MAX_IN_FLIGHT = 20_000  # events sent and not yet acknowledged; above it generation waits
HTTP_TIMEOUT_S = 20.0
# A producer that has acknowledged nothing this long while its sends fail is replaced: after a
# long broker outage aiokafka's producer can stay stuck long after the broker is back.
PRODUCER_STUCK_S = 30.0


@dataclass
class LoadStats:
    """What the traffic did and what was acknowledged."""

    kafka_acked: set[str] = field(default_factory=set)
    http_acked: set[str] = field(default_factory=set)
    kafka_resends: int = 0
    kafka_errors: Counter[str] = field(default_factory=Counter)  # send failures, by type
    producer_replaced: int = 0  # times our producer stopped acknowledging and was replaced
    http_requests: int = 0
    http_retries: int = 0
    http_status: Counter[str] = field(default_factory=Counter)  # every answer, by status
    http_refused: int = 0  # events in a request answered neither 202 nor retryable
    http_problems: Counter[str] = field(default_factory=Counter)  # 503s by problem code
    deduct_ok: int = 0
    deduct_402: int = 0
    deduct_retried: int = 0  # deductions that needed more than one attempt
    deduct_replayed: int = 0  # retries answered as a replay: the first attempt had landed
    deduct_errors: Counter[str] = field(default_factory=Counter)
    deduct_micros: int = 0
    poison: list[tuple[str, bytes]] = field(default_factory=list)  # (expected reason, value)
    throttled_s: float = 0.0

    @property
    def published(self) -> int:
        return len(self.kafka_acked) + len(self.http_acked)


class Traffic:
    """Runs the load until stopped, then waits for everything in flight to be acknowledged."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        base_url: str,
        admin_key: str,
        accounts: int,
        rate: float,
        http_share: float,
        deduct_rate: float,
        run_id: str,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {admin_key}"}
        self.accounts = accounts
        self.rate = rate
        self.http_share = http_share
        self.deduct_rate = deduct_rate
        self.run_id = run_id
        self.stats = LoadStats()
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending_events = 0
        self._producer: AIOKafkaProducer | None = None
        self._last_ack = time.monotonic()
        self._replacing: asyncio.Lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        self._rng = random.Random(run_id)

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=10_000,
        )

    async def __aenter__(self) -> Traffic:
        self._producer = self._new_producer()
        await self._producer.start()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=HTTP_TIMEOUT_S,
            limits=httpx.Limits(max_connections=50),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
        if self._http is not None:
            await self._http.aclose()

    # ---------------------------------------------------------------- API helpers

    async def prepay(self, credits_of: Callable[[int], str], say: Callable[[str], None]) -> None:
        """Every account on the cap-less pro tier with an allocation (through the API)."""
        assert self._http is not None
        for i in range(self.accounts):
            acct = account_id(i)
            await self._admin(
                "POST",
                "/api/v1/admin/credits/allocate",
                {
                    "account_id": acct,
                    "amount": credits_of(i),
                    "reason": "chaos prepay",
                    "idempotency_key": f"chaos-{self.run_id}-alloc-{i}",
                },
            )
            await self._admin("PUT", f"/api/v1/admin/accounts/{acct}/tier", {"tier": "pro"})
        say(f"allocated credit to {self.accounts} accounts (pro tier) through the API")

    async def _admin(self, method: str, path: str, body: dict[str, Any]) -> None:
        assert self._http is not None
        r = await self._http.request(method, path, json=body)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path} answered {r.status_code}: {r.text[:300]}")

    # ---------------------------------------------------------------- the load

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Usage events at `rate`/s and deductions at `deduct_rate`/s until stop() is called."""
        tick, carry, seed = 0.1, 0.0, 0
        deduct_carry, deduct_n = 0.0, 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            if self._pending_events > MAX_IN_FLIGHT:
                self.stats.throttled_s += tick
            else:
                carry += self.rate * tick
                n, carry = int(carry), carry - int(carry)
                if n:
                    self._emit(seed, n)
                    seed += 1
            deduct_carry += self.deduct_rate * tick
            while deduct_carry >= 1:
                deduct_carry -= 1
                self._spawn(self._deduct(deduct_n))
                deduct_n += 1
            next_at += tick
            await asyncio.sleep(max(next_at - time.monotonic(), 0))

    def _emit(self, seed: int, n: int) -> None:
        events = list(
            synthetic_events(
                n,
                self.accounts,
                seed=seed,
                now=datetime.now(UTC),
                window=timedelta(milliseconds=100),
                source=f"chaos-{self.run_id}",
            )
        )
        to_http = [e for e in events if self._rng.random() < self.http_share]
        http_ids = {e.event_id for e in to_http}
        for e in events:
            if e.event_id not in http_ids:
                key, value = e.to_kafka()
                self._pending_events += 1
                self._spawn(self._send_kafka(e.event_id, key, value))
        if to_http:
            body = [json.loads(e.to_kafka()[1]) for e in to_http]
            self._pending_events += len(body)
            self._spawn(self._post_events(body))

    async def _send_kafka(self, event_id: str, key: bytes, value: bytes) -> None:
        acked = await self._send_raw(key, value)
        self._pending_events -= 1
        if acked:
            self.stats.kafka_acked.add(event_id)

    async def _send_raw(self, key: bytes | None, value: bytes) -> bool:
        """Send one record until the broker acknowledges it (True), resending the same bytes."""
        delay = 0.5
        while True:
            producer = self._producer
            assert producer is not None
            try:
                fut = await producer.send(self.topic, key=key, value=value)
                await fut
                self._last_ack = time.monotonic()
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - broker away: the same record again, later
                self.stats.kafka_resends += 1
                self.stats.kafka_errors[type(exc).__name__] += 1
                await self._maybe_replace(producer)
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 10.0)

    async def _maybe_replace(self, failed: AIOKafkaProducer) -> None:
        """Replace a producer that acknowledged nothing for PRODUCER_STUCK_S (once per stall)."""
        if time.monotonic() - self._last_ack < PRODUCER_STUCK_S:
            return
        async with self._replacing:
            if self._producer is not failed:
                return  # another sender replaced it already
            old: Any = failed
            fresh = self._new_producer()
            try:
                await asyncio.wait_for(fresh.start(), 10)
            except Exception:  # noqa: BLE001 - broker still away: keep the old one for now
                await fresh.stop()
                return
            self._producer, self._last_ack = fresh, time.monotonic()
            self.stats.producer_replaced += 1
            try:
                await asyncio.wait_for(old.stop(), 5)
            except Exception:  # noqa: BLE001 - its pending sends fail and are resent
                pass

    async def _post_events(self, body: list[dict[str, Any]]) -> None:
        """POST /api/v1/usage/events until 202, retrying the same body on 503 and timeouts."""
        assert self._http is not None
        delay = 0.5
        try:
            while True:
                self.stats.http_requests += 1
                try:
                    r = await self._http.post("/api/v1/usage/events", json=body)
                except httpx.TransportError as exc:
                    self.stats.http_status[type(exc).__name__] += 1
                else:
                    self.stats.http_status[str(r.status_code)] += 1
                    if r.status_code == 202:
                        self.stats.http_acked.update(e["event_id"] for e in body)
                        return
                    if r.status_code not in (429, 503):
                        self.stats.http_refused += len(body)
                        return
                    if r.status_code == 503:
                        self.stats.http_problems[_problem_code(r)] += 1
                    delay = float(r.headers.get("Retry-After", delay))
                self.stats.http_retries += 1
                await asyncio.sleep(min(delay, 5.0))
                delay = min(delay * 2, 5.0)
        finally:
            self._pending_events -= len(body)

    async def _deduct(self, n: int) -> None:
        """POST /api/v1/credits/deduct, retried with the same key on 503 and timeouts."""
        assert self._http is not None
        acct = account_id(self._rng.randrange(self.accounts))
        micros = self._rng.choice((10_000, 50_000, 250_000))
        body = {
            "amount": f"{micros / 1_000_000:.6f}",
            "reason": "chaos deduction",
            "idempotency_key": f"chaos-{self.run_id}-d{n}",
        }
        attempts = 0
        while True:
            attempts += 1
            if attempts == 2:
                self.stats.deduct_retried += 1
            try:
                r = await self._http.post(
                    "/api/v1/credits/deduct", params={"account_id": acct}, json=body
                )
            except httpx.TransportError:
                await asyncio.sleep(1.0)
                continue
            if r.status_code == 200:
                self.stats.deduct_ok += 1
                self.stats.deduct_micros += micros
                if r.headers.get("Idempotent-Replayed") == "true":
                    self.stats.deduct_replayed += 1
                return
            if r.status_code == 402:
                self.stats.deduct_402 += 1
                return
            if r.status_code not in (429, 503):
                self.stats.deduct_errors[f"{r.status_code} {r.text[:120]}"] += 1
                return
            await asyncio.sleep(min(float(r.headers.get("Retry-After", 1)), 5.0))

    # ---------------------------------------------------------------- poison

    async def poison_burst(self, burst: int) -> int:
        """Raw records no retry can fix, straight onto the topic; each acknowledged one is kept."""
        now = datetime.now(UTC).isoformat()
        tag = f"{self.run_id}-p{burst}"

        def base(i: int) -> dict[str, Any]:
            return {
                "event_id": f"poison-{tag}-{i}",
                "source": f"chaos-{self.run_id}",
                "account_id": account_id(self._rng.randrange(self.accounts)),
                "occurred_at": now,
                "model": "openai/gpt-4o-mini",
            }

        corpus: list[tuple[str, bytes]] = [
            ("invalid_json", f'{{"event_id": "poison-{tag}-0", not json'.encode()),
            ("invalid_json", f"[poison {tag}".encode()),
            ("invalid_event", json.dumps({**base(2), "metadata": {"note": "a\u0000b"}}).encode()),
            ("invalid_event", json.dumps({**base(3), "input_tokens": 10**12 + 1}).encode()),
            ("invalid_event", json.dumps({**base(4), "output_tokens": 10**30}).encode()),
            (
                "invalid_event",
                json.dumps({**base(5), "occurred_at": "9999-12-31T23:59:59-05:00"}).encode(),
            ),
        ]
        sent = await asyncio.gather(
            *(
                self._send_raw(account_id(self._rng.randrange(self.accounts)).encode(), value)
                for _, value in corpus
            )
        )
        for (reason, value), ok in zip(corpus, sent, strict=True):
            if ok:
                self.stats.poison.append((reason, value))
        return sum(sent)

    async def stop(self, timeout: float) -> bool:
        """Stop generating; wait for what is in flight to be acknowledged (False: timed out)."""
        self.stopping.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return not self._tasks

    @property
    def in_flight(self) -> int:
        return self._pending_events


def _problem_code(r: httpx.Response) -> str:
    try:
        return str(r.json().get("code") or r.json().get("type") or "?")
    except ValueError:
        return "not problem+json"
