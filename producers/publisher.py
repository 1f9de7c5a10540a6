"""UsagePublisher: puts UsageEvents on usage.events, keyed by account, idempotent and acked by
all in-sync replicas. A proxy embeds it in a few lines::

    async with UsagePublisher(bootstrap, "usage.events") as pub:
        await pub.publish(event)                  # waits for the broker's ack
        result = await pub.publish_many(events)   # pipelined; result.failed lists what was not

Delivery failures are never dropped: ``publish`` raises PublishError, ``publish_many`` returns
them in ``PublishResult.failed``, and ``submit`` (fire and forget) keeps them in ``failures``,
which leaving the ``async with`` block raises as PublishError.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.event import UsageEvent
from schemas.settings import kafka_options


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored an event."""

    partition: int
    offset: int


@dataclass(frozen=True)
class Failure:
    """An event the broker did not take, and why."""

    event: UsageEvent
    error: BaseException


@dataclass
class PublishResult:
    """What publish_many did: how many were acknowledged, which failed."""

    published: int = 0
    failed: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class PublishError(Exception):
    """Events that did not reach Kafka (or Kafka that could not be reached)."""

    def __init__(self, message: str, failures: list[Failure] | None = None):
        super().__init__(message)
        self.failures = failures or []


aiokafka_log = logging.getLogger("aiokafka")


class _Reasons(logging.Handler):
    """The last error aiokafka logged while connecting (a wrong password is only said there)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


T = TypeVar("T")
OnDelivery = Callable[[UsageEvent, Delivery | BaseException], None]


class UsagePublisher:
    """An idempotent aiokafka producer for UsageEvents; key = account_id, value = event JSON."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 5,
        max_batch_size: int = 256 * 1024,
        request_timeout_ms: int = 30_000,
        client_id: str = "meterline-producer",
        security: Mapping[str, Any] | None = None,
        **producer_options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.failures: list[Failure] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            request_timeout_ms=request_timeout_ms,
            **(kafka_options() if security is None else security),
            **producer_options,
        )

    async def start(self) -> None:
        """Connect to the brokers; PublishError when they cannot be reached, with the reason
        (refused, TLS, SASL) aiokafka logs but leaves out of its "Unable to bootstrap"."""
        reasons = _Reasons()
        aiokafka_log.addHandler(reasons)
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            why = f" ({reasons.last})" if reasons.last else ""
            raise PublishError(f"cannot reach Kafka at {self.bootstrap}: {exc}{why}") from exc
        finally:
            aiokafka_log.removeHandler(reasons)

    async def close(self) -> None:
        """Flush what is buffered, wait for every ack, disconnect."""
        try:
            await self._producer.flush()
            if self._pending:
                await asyncio.wait(set(self._pending))
        finally:
            await self._producer.stop()

    async def __aenter__(self) -> UsagePublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        if exc is None and self.failures:
            raise PublishError(
                f"{len(self.failures)} event(s) were not delivered to {self.topic}: "
                f"{self.failures[0].error!r}",
                list(self.failures),
            )

    async def _send(self, event: UsageEvent) -> asyncio.Future[Any]:
        key, value = event.to_kafka()
        fut: asyncio.Future[Any] = await self._producer.send(self.topic, value=value, key=key)
        return fut

    async def publish(self, event: UsageEvent) -> Delivery:
        """Publish one event and wait for the broker's acknowledgement."""
        try:
            meta = await (await self._send(event))
        except KafkaError as exc:
            raise PublishError(
                f"event {event.event_id!r} not delivered to {self.topic}: {exc!r}",
                [Failure(event, exc)],
            ) from exc
        return Delivery(meta.partition, meta.offset)

    async def publish_raw(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> Delivery:
        """Publish bytes that are no UsageEvent (a dead letter) to `topic`; wait for the ack."""
        try:
            fut = await self._producer.send(topic, value=value, key=key, headers=headers)
            meta = await fut
        except KafkaError as exc:
            raise PublishError(f"record not delivered to {topic}: {exc!r}") from exc
        return Delivery(meta.partition, meta.offset)

    def _track(self, event: UsageEvent, fut: asyncio.Future[Any], on_done: OnDelivery) -> None:
        self._pending.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self._pending.discard(f)
            if f.cancelled():
                on_done(event, asyncio.CancelledError("send cancelled"))
            elif (err := f.exception()) is not None:
                on_done(event, err)
            else:
                on_done(event, Delivery(f.result().partition, f.result().offset))

        fut.add_done_callback(done)

    async def submit(self, event: UsageEvent) -> None:
        """Queue one event without waiting for its ack; a failure lands in `failures`."""

        def record(ev: UsageEvent, outcome: Delivery | BaseException) -> None:
            if isinstance(outcome, BaseException):
                self.failures.append(Failure(ev, outcome))

        try:
            self._track(event, await self._send(event), record)
        except KafkaError as exc:
            self.failures.append(Failure(event, exc))

    async def publish_many(
        self,
        events: Iterable[UsageEvent] | AsyncIterable[UsageEvent],
        *,
        on_delivery: OnDelivery | None = None,
    ) -> PublishResult:
        """Publish events pipelined (sends are not awaited one by one); wait for every ack."""
        result = PublishResult()
        mine: set[asyncio.Future[Any]] = set()

        def record(ev: UsageEvent, outcome: Delivery | BaseException) -> None:
            if isinstance(outcome, BaseException):
                result.failed.append(Failure(ev, outcome))
            else:
                result.published += 1
            if on_delivery is not None:
                on_delivery(ev, outcome)

        async for event in aiter_any(events):
            try:
                fut = await self._send(event)
            except KafkaError as exc:  # refused before queueing, e.g. too large
                record(event, exc)
                continue
            mine.add(fut)
            fut.add_done_callback(mine.discard)
            self._track(event, fut, record)
        await self._producer.flush()
        while mine:
            await asyncio.wait(set(mine))
            await asyncio.sleep(0)  # let the done callbacks run
        return result


async def aiter_any(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate a plain or an async iterable alike."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def paced(
    events: Iterable[UsageEvent] | AsyncIterable[UsageEvent], rate: float | None
) -> AsyncIterator[UsageEvent]:
    """The events at no more than `rate` per second (all at once when rate is None)."""
    start = time.monotonic()
    n = 0
    async for event in aiter_any(events):
        if rate:
            ahead = start + n / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        n += 1
        yield event
