"""Where a proxy's usage events go: Kafka (UsagePublisher) when a bootstrap is configured, else
the API's HTTP ingest; the bounded spool when neither takes them now, drained when one does."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from producers.client import MeterlineClient
from producers.client_types import MeterlineError, ValidationFailed
from producers.integrations.spool import Spool
from producers.publisher import PublishError, UsagePublisher
from schemas.event import UsageEvent

log = logging.getLogger("meterline.integrations")

RETRY_CONNECT_S = 5.0  # after a failed connection to Kafka, spool without trying for this long
HTTP_BATCH = 1000  # the ingest route's maximum per request


@dataclass(frozen=True)
class Sent:
    """What a send or a drain did with its events: each is counted once, as published (taken
    by Kafka or the API), refused (meterline refused it for good: logged with the reason, not
    retried) or spooled (waiting for the next drain)."""

    published: int = 0
    refused: int = 0
    spooled: int = 0


class UsageSink:
    """Publishes events; what cannot be published now is spooled, never dropped."""

    def __init__(
        self,
        *,
        client: MeterlineClient | None,
        kafka_bootstrap: str,
        topic: str,
        spool: Spool,
    ) -> None:
        if not kafka_bootstrap and client is None:
            raise ValueError(
                "meterline cannot receive usage: set METERLINE_KAFKA_BOOTSTRAP (Kafka) or "
                "METERLINE_API_URL (HTTP ingest)"
            )
        self.client = client
        self.kafka_bootstrap = kafka_bootstrap
        self.topic = topic
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
                    self.kafka_bootstrap, self.topic, request_timeout_ms=10_000
                )
                try:
                    await publisher.start()
                except PublishError:
                    self._down_until = time.monotonic() + RETRY_CONNECT_S
                    raise
                self._publisher = publisher
            return self._publisher

    async def _publish(self, events: list[UsageEvent]) -> tuple[list[UsageEvent], int]:
        """Publish; the events to keep for later, and how many were refused for good."""
        if self.kafka_bootstrap:
            try:
                publisher = await self._kafka()
            except PublishError as exc:
                log.warning("usage not published, spooled: %s", exc)
                return events, 0
            result = await publisher.publish_many(events)
            return [f.event for f in result.failed], 0
        kept: list[UsageEvent] = []
        refused = 0
        for i in range(0, len(events), HTTP_BATCH):
            batch_kept, batch_refused = await self._post(events[i : i + HTTP_BATCH])
            kept.extend(batch_kept)
            refused += batch_refused
        return kept, refused

    async def _post(self, batch: list[UsageEvent]) -> tuple[list[UsageEvent], int]:
        """HTTP ingest of one batch; the events to keep for later, and how many were refused.

        The route publishes nothing of a batch with one invalid event (422 naming its index):
        that event is dropped, logged, and the rest is posted again — dropping the whole batch
        lost every valid event of a spool drained 1,000 at a time. A key the API refuses (401,
        403) is the proxy's setting to fix, not the usage's fault: the events wait in the
        spool until it is fixed.
        """
        assert self.client is not None
        refused = 0
        while batch:
            try:
                await self.client.publish(batch)
                return [], refused
            except ValidationFailed as exc:
                bad = {e.get("index") for e in exc.errors}
                bad_positions = {n for n in bad if isinstance(n, int) and 0 <= n < len(batch)}
                if not bad_positions:
                    log.error("usage refused by meterline, not retried: %s", exc)
                    return [], refused + len(batch)
                for n in sorted(bad_positions):
                    log.error(
                        "usage event %s refused by meterline, not retried: %s",
                        batch[n].event_id,
                        "; ".join(
                            f"{e.get('field')}: {e.get('message')}"
                            for e in exc.errors
                            if e.get("index") == n
                        ),
                    )
                refused += len(bad_positions)
                batch = [e for n, e in enumerate(batch) if n not in bad_positions]
            except MeterlineError as exc:
                if exc.status in (401, 403):
                    log.error(
                        "meterline refused the usage key (%s); usage spooled until fixed", exc
                    )
                    return batch, refused
                if exc.status is not None and exc.status < 500 and exc.status != 429:
                    log.error("usage refused by meterline, not retried: %s", exc)
                    return [], refused + len(batch)
                log.warning("usage not published, spooled: %s", exc)
                return batch, refused
        return [], refused

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
        self.drain_soon()
        return Sent(published=1 - refused, refused=refused)

    def drain_soon(self) -> None:
        """Start publishing the spool in the background when something waits there."""
        if self.spool.pending() and (self._drain_task is None or self._drain_task.done()):
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())

    async def drain(self) -> Sent:
        """Publish what the spool holds: how many events were published, refused, spooled.

        A line that is no longer a valid event (written by another version, edited by hand) is
        refused and logged; before, it failed every drain, so nothing behind it was published.
        """
        waiting = self.spool.take()
        if not waiting:
            return Sent()
        events: list[UsageEvent] = []
        unreadable = 0
        for line in waiting:
            try:
                events.append(UsageEvent.model_validate(line))
            except ValidationError as exc:
                unreadable += 1
                log.error(
                    "usage spool: event %r is not a valid usage event, not retried: %s",
                    line.get("event_id") if isinstance(line, dict) else None,
                    exc.errors(include_url=False)[0]["msg"],
                )
        kept: list[UsageEvent] = events
        refused = 0
        try:
            kept, refused = await self._publish(events)
        finally:
            self.spool.done([_json(e) for e in kept])
        if kept:
            log.warning("usage spool: %d of %d events still waiting", len(kept), len(waiting))
        sent = Sent(
            published=len(events) - len(kept) - refused,
            refused=refused + unreadable,
            spooled=len(kept),
        )
        log.info("usage spool drained: %s", sent)
        return sent

    async def close(self) -> None:
        """Wait for a running drain, flush Kafka, disconnect."""
        if self._drain_task is not None:
            await asyncio.gather(self._drain_task, return_exceptions=True)
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None


def _json(event: UsageEvent) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_none=True)
