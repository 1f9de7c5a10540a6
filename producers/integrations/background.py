"""One event loop in a daemon thread, and the long-lived usage sink the sync LiteLLM path
publishes through: a sync call (``litellm.completion``) is metered from LiteLLM's logging
thread, which has no loop; a loop, a Kafka producer or an HTTP connection pool made per call
cost a connection handshake each time, so they live here for the life of the process.

Thread-safe: any thread submits coroutines (``run``); the loop runs them one at a time. The
sink reconnects by itself (aiokafka and httpx reconnect; UsageSink retries a Kafka it could not
reach after a pause and spools meanwhile). ``close`` waits for what was submitted, drains and
flushes, and is registered with ``atexit``: Python runs it after joining the non-daemon
threads (LiteLLM's logging executor included), so the last calls' usage is flushed, not lost.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from producers.client import MeterlineClient
from producers.integrations.settings import IntegrationSettings
from producers.integrations.sink import UsageSink
from producers.integrations.spool import Spool

log = logging.getLogger("meterline.integrations")

T = TypeVar("T")
CLOSE_TIMEOUT_S = 15.0  # at exit: the longest wait for in-flight usage to be flushed


class BackgroundSink:
    """A UsageSink (and its API client) owned by an event loop of its own thread."""

    def __init__(self, settings: IntegrationSettings, spool: Spool) -> None:
        self.pid = os.getpid()  # a forked child has no copy of the thread: it makes its own
        self._loop = asyncio.new_event_loop()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.client = (
            MeterlineClient(
                settings.api_url,
                settings.api_key,
                timeout=settings.api_timeout_seconds,
                retries=1,
                max_backoff=1.0,
            )
            if settings.api_url
            else None
        )
        self.sink = UsageSink(
            client=self.client,
            kafka_bootstrap=settings.kafka_bootstrap,
            topic=settings.topic_usage_events,
            dlq_topic=settings.topic_usage_dlq,
            spool=spool,
        )
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="meterline-usage", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    def run(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule work on the sink's loop; its future (close() waits for it)."""
        with self._lock:
            if self._closed:
                work.close()
                raise RuntimeError("the background usage sink is closed")
            future = asyncio.run_coroutine_threadsafe(work, self._loop)
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Wait for submitted work, drain and flush the sink, disconnect, stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = set(self._pending)
        atexit.unregister(self.close)
        if self.pid != os.getpid() or not self._thread.is_alive():
            return  # the thread stayed in the parent (fork), or the loop is gone
        concurrent.futures.wait(pending, timeout=timeout)
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), self._loop).result(timeout)
        except Exception as exc:  # noqa: BLE001 - shutting down: report, go on
            log.warning("usage sink not closed cleanly: %r", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    async def _aclose(self) -> None:
        await self.sink.close()
        if self.client is not None:
            await self.client.aclose()
