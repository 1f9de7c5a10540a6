"""PublisherKeeper while Kafka cannot be reached: it keeps retrying with capped backoff, says
why, never raises to its owner, and stops cleanly."""

from __future__ import annotations

import asyncio
import time

from producers.keeper import PublisherKeeper
from producers.publisher import UsagePublisher
from tests.integration.tcp_proxy import free_port


async def test_keeper_retries_an_unreachable_broker_with_capped_backoff() -> None:
    port = free_port()  # nothing listens there
    keeper = PublisherKeeper(
        lambda: UsagePublisher(f"127.0.0.1:{port}", "usage.events", request_timeout_ms=1000),
        connect_timeout=2,
        min_backoff=0.05,
        max_backoff=0.2,
    )
    started = time.monotonic()
    await keeper.start(wait=5)
    assert time.monotonic() - started < 3  # waits for the first attempt only
    assert keeper.current is None
    assert keeper.last_error and "PublishError" in keeper.last_error
    await asyncio.sleep(1.0)
    # 0.05 + 0.1 + 0.2 + 0.2 ... : several attempts a second once the backoff is capped.
    assert keeper.attempts >= 4
    await keeper.close()
    attempts = keeper.attempts
    await asyncio.sleep(0.3)
    assert keeper.attempts == attempts  # closed: no more attempts
