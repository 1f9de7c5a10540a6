"""Where a proxy's usage events go: Kafka (UsagePublisher) when a bootstrap is configured, else
the API's HTTP ingest; the bounded spool when neither takes them now, drained when one does."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from producers.client import MeterlineClient
from producers.client_types import MeterlineError, ValidationFailed
from producers.errors import AdapterError
from producers.integrations.spool import Spool, SpoolFull
from producers.publisher import PublishError, UsagePublisher
from schemas import topics
from schemas.event import UsageEvent

log = logging.getLogger("meterline.integrations")

RETRY_CONNECT_S = 5.0  # after a failed connection to Kafka, spool without trying for this long
HTTP_BATCH = 1000  # the ingest route's maximum per request
_WHY_MAX = 1000  # characters of the reason in a dead letter's header


@dataclass(frozen=True)
class Sent:
    """What a send or a drain did with its events: each is counted once, as published (taken
    by Kafka or the API), refused (meterline refused it for good: not retried, dead-lettered
    with the reason, see UsageSink.dead_letter) or spooled (waiting for the next drain)."""

    published: int = 0
    refused: int = 0
    spooled: int = 0


Refused = tuple[Any, str]  # an event's JSON (or a spooled line) and why it was refused


class UsageSink:
    """Publishes events; what cannot be published now is spooled, never dropped."""

    def __init__(
        self,
        *,
        client: MeterlineClient | None,
        kafka_bootstrap: str,
        topic: str,
        spool: Spool,
        dlq_topic: str = topics.USAGE_DLQ,
    ) -> None:
        if not kafka_bootstrap and client is None:
            raise ValueError(
                "meterline cannot receive usage: set METERLINE_KAFKA_BOOTSTRAP (Kafka) or "
                "METERLINE_API_URL (HTTP ingest)"
            )
        self.client = client
        self.kafka_bootstrap = kafka_bootstrap
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.spool = spool
        self._publisher: UsagePublisher | None = None
        self._connect_lock = asyncio.Lock()
        self._down_until = 0.0
        self._drain_task: asyncio.Task[Sent] | None = None

    async def _kafka(self) -> UsagePublisher:
        async with self._connect_lock:
            if self._publisher is None:
                if time.monotonic() < self._down_until:
                    raise PublishError(f"Kafka at {self.kafka_bootstrap} was unreachable just now")
                publisher = UsagePublisher(
                    self.kafka_bootstrap, self.topic, request_timeout_ms=10_000, linger_ms=0
                )
                try:
                    await publisher.start()
                except PublishError:
                    self._down_until = time.monotonic() + RETRY_CONNECT_S
                    raise
                self._publisher = publisher
            return self._publisher

    async def _publish(self, events: list[UsageEvent]) -> tuple[list[UsageEvent], list[Refused]]:
        """Publish; the events to keep for later, and those refused for good."""
        if self.kafka_bootstrap:
            try:
                publisher = await self._kafka()
            except PublishError as exc:
                log.warning("usage not published, spooled: %s", exc)
                return events, []
            result = await publisher.publish_many(events)
            return [f.event for f in result.failed], []
        kept: list[UsageEvent] = []
        refused: list[Refused] = []
        for i in range(0, len(events), HTTP_BATCH):
            batch_kept, batch_refused = await self._post(events[i : i + HTTP_BATCH])
            kept.extend(batch_kept)
            refused.extend(batch_refused)
        return kept, refused

    async def _post(self, batch: list[UsageEvent]) -> tuple[list[UsageEvent], list[Refused]]:
        """HTTP ingest of one batch; the events to keep for later, and those refused.

        The route publishes nothing of a batch with one invalid event (422 naming its index):
        that event is refused alone and the rest is posted again — refusing the whole batch
        lost every valid event of a spool drained 1,000 at a time. A key the API refuses (401,
        403) is the proxy's setting to fix, not the usage's fault: the events wait in the
        spool until it is fixed.
        """
        assert self.client is not None
        refused: list[Refused] = []
        while batch:
            try:
                await self.client.publish(batch)
                return [], refused
            except ValidationFailed as exc:
                bad = {e.get("index") for e in exc.errors}
                bad_positions = {n for n in bad if isinstance(n, int) and 0 <= n < len(batch)}
                if not bad_positions:
                    return [], refused + [(_json(e), str(exc)) for e in batch]
                for n in sorted(bad_positions):
                    why = "; ".join(
                        f"{e.get('field')}: {e.get('message')}"
                        for e in exc.errors
                        if e.get("index") == n
                    )
                    refused.append((_json(batch[n]), f"meterline refused the event: {why}"))
                batch = [e for n, e in enumerate(batch) if n not in bad_positions]
            except MeterlineError as exc:
                if exc.status in (401, 403):
                    log.error(
                        "meterline refused the usage key (%s); usage spooled until fixed", exc
                    )
                    return batch, refused
                if exc.status is not None and exc.status < 500 and exc.status != 429:
                    return [], refused + [(_json(e), str(exc)) for e in batch]
                log.warning("usage not published, spooled: %s", exc)
                return batch, refused
        return [], refused

    async def dead_letter(self, record: Mapping[str, Any], *, key: str | None, why: str) -> str:
        """Keep usage that can never become a published event where an operator sees it: on
        usage.dlq as ``invalid_event`` with `why` (the headers the worker's dead letters carry;
        ``meterline replay`` counts them by reason), or, without Kafka or with Kafka away, in
        the spool's rejected file. Where it went; SpoolFull when neither can take it."""
        if self.kafka_bootstrap:
            try:
                publisher = await self._kafka()
                await publisher.publish_raw(
                    self.dlq_topic,
                    key=key.encode() if key else None,
                    value=json.dumps(record, separators=(",", ":"), default=str).encode(),
                    headers=[
                        (topics.DLQ_HEADER_REASON, b"invalid_event"),
                        (topics.DLQ_HEADER_MESSAGE, why[:_WHY_MAX].encode()),
                    ],
                )
                log.error("usage not metered, dead-lettered on %s: %s", self.dlq_topic, why)
                return self.dlq_topic
            except PublishError as exc:
                log.warning(
                    "%s unreachable (%s): usage kept in the rejected file", self.dlq_topic, exc
                )
        self.spool.reject({"reason": "invalid_event", "message": why, "key": key, "record": record})
        log.critical("usage not metered, kept for an operator in %s: %s", self.spool.rejected, why)
        return str(self.spool.rejected)

    async def _dead_letter_all(self, refused: list[Refused]) -> None:
        for record, why in refused:
            try:
                await self.dead_letter(record, key=_key(record), why=why)
            except SpoolFull as exc:
                log.critical("usage event %r LOST: %s (%s)", record.get("event_id"), why, exc)

    async def send(self, event: UsageEvent) -> Sent:
        """Publish one event, or spool it; SpoolFull when neither is possible."""
        try:
            kept, refused = await self._publish([event])
        except BaseException:
            # Cancelled (shutdown, LiteLLM's logging deadline) or a loop torn down: keep it.
            self.spool.append([_json(event)])
            raise
        if kept:
            self.spool.append([_json(e) for e in kept])
            return Sent(spooled=len(kept))
        await self._dead_letter_all(refused)
        self.drain_soon()
        return Sent(published=1 - len(refused), refused=len(refused))

    def drain_soon(self) -> None:
        """Start publishing the spool in the background when something waits there."""
        if self.spool.pending() and (self._drain_task is None or self._drain_task.done()):
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())

    async def drain(self) -> Sent:
        """Publish what the spool holds: how many events were published, refused, spooled.

        A line that is no longer a valid event (written by another version, edited by hand) is
        refused and dead-lettered; before, it failed every drain, so nothing behind it was
        published.
        """
        waiting = self.spool.take()
        if not waiting:
            return Sent()
        events: list[UsageEvent] = []
        refused: list[Refused] = []
        for line in waiting:
            try:
                events.append(UsageEvent.model_validate(line))
            except ValidationError as exc:
                why = str(AdapterError.from_validation(exc))
                refused.append((line, f"a spooled line is not a valid usage event: {why}"))
        kept: list[UsageEvent] = events
        try:
            kept, refused_now = await self._publish(events)
            refused.extend(refused_now)
        finally:
            self.spool.done([_json(e) for e in kept])
        await self._dead_letter_all(refused)
        if kept:
            log.warning("usage spool: %d of %d events still waiting", len(kept), len(waiting))
        return Sent(
            published=len(waiting) - len(kept) - len(refused),
            refused=len(refused),
            spooled=len(kept),
        )

    async def close(self) -> None:
        """Wait for a running drain, flush Kafka, disconnect."""
        if self._drain_task is not None:
            await asyncio.gather(self._drain_task, return_exceptions=True)
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None


def _key(record: Any) -> str | None:
    account = record.get("account_id") if isinstance(record, Mapping) else None
    return account if isinstance(account, str) and account else None


def _json(event: UsageEvent) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_none=True)
