"""PublisherKeeper: a UsagePublisher that connects by itself, however long Kafka is away.

A long-lived service (the API's HTTP ingest, a proxy) cannot assume Kafka is up when it starts.
The keeper connects in the background with capped exponential backoff and hands out the
started publisher once there is one; until then ``current`` is None and ``last_error`` says
why, so the caller can answer "unavailable, retry" instead of failing for good. Once started,
aiokafka reconnects to brokers that restart by itself; a publisher whose publish failed is
handed back (``recycle``) and replaced the same way, with fresh connections and state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from producers.publisher import PublishError, UsagePublisher

log = logging.getLogger("meterline.publisher")


class PublisherKeeper:
    """Owns one UsagePublisher at a time, (re)connecting it in the background."""

    def __init__(
        self,
        make: Callable[[], UsagePublisher],
        *,
        connect_timeout: float = 10.0,
        min_backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self._make = make
        self._connect_timeout = connect_timeout
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._current: UsagePublisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._tried = asyncio.Event()  # set after each attempt, whatever its outcome
        self._connected = asyncio.Event()  # set while there is a current publisher
        self._closing: set[asyncio.Task[None]] = set()  # replaced publishers being closed
        self.last_error: str | None = "not connected yet"
        self.attempts = 0

    @property
    def current(self) -> UsagePublisher | None:
        """The started publisher, or None while Kafka cannot be reached."""
        return self._current

    async def start(self, *, wait: float = 0.0) -> None:
        """Begin connecting; wait up to `wait` s for the first attempt's outcome (never raises)."""
        self._spawn()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tried.wait(), wait)

    def _spawn(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._connect(), name="meterline-publisher-connect")

    async def _connect(self) -> None:
        backoff = self._min_backoff
        while True:
            self.attempts += 1
            publisher = self._make()
            try:
                await asyncio.wait_for(publisher.start(), self._connect_timeout)
            except (PublishError, TimeoutError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.warning(
                    "usage publisher cannot reach Kafka at %s (%s); retrying in %.1f s",
                    publisher.bootstrap,
                    self.last_error,
                    backoff,
                )
                await _discard(publisher)
                self._tried.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self._current = publisher
            self.last_error = None
            self._connected.set()
            self._tried.set()
            if self.attempts > 1:
                log.info("usage publisher connected to Kafka at %s", publisher.bootstrap)
            return

    async def wait_connected(self) -> UsagePublisher:
        """The current publisher, once there is one (bound the wait with asyncio.timeout)."""
        while self._current is None:
            self._connected.clear()
            await self._connected.wait()
        return self._current

    async def recycle(self, publisher: UsagePublisher, reason: str) -> None:
        """Replace `publisher` after a failed publish: a fresh producer (new connections, new
        idempotence state) is connected in the background, and until it is the keeper answers
        "unavailable" at once rather than letting every request wait out the broker's timeout.

        Only the current publisher is replaced: a request that failed on an older one (already
        replaced by a concurrent failure) changes nothing.
        """
        if publisher is not self._current:
            return
        self._current = None
        self._connected.clear()
        self.last_error = reason
        log.warning("usage publisher replaced after a failed publish: %s", reason)
        self._spawn()
        # Closed in the background: its flush may wait for a broker that is away, and the
        # request that reported the failure should answer now.
        closing = asyncio.create_task(_discard(publisher), name="meterline-publisher-discard")
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Stop connecting and close the publisher (flushing what it holds)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._current is not None:
            current, self._current = self._current, None
            await current.close()


async def _discard(publisher: UsagePublisher) -> None:
    # A publisher that never started (or broke) holds sockets and tasks: release them.
    try:
        await asyncio.wait_for(publisher.close(), 5)
    except Exception:  # noqa: BLE001 - it is being thrown away either way
        log.debug("closing a discarded publisher failed", exc_info=True)
