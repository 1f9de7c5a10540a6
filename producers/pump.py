"""Pump a stream of events (or bad lines) into usage.events: what `meterline produce` runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from producers.jsonlines import BadLine, parse_line
from producers.publisher import Delivery, Failure, UsagePublisher, aiter_any, paced
from schemas.event import UsageEvent

Item = UsageEvent | BadLine


@dataclass
class ProduceSummary:
    """What a run did."""

    published: int = 0
    bad: list[BadLine] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad and not self.failed

    @property
    def events_per_second(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


async def read_lines(stream: IO[str], chunk_bytes: int = 1 << 16) -> AsyncIterator[str]:
    """The lines of a text stream, read in a thread so a slow pipe never stalls the producer."""
    while True:
        lines = await asyncio.to_thread(stream.readlines, chunk_bytes)
        if not lines:
            return
        for line in lines:
            yield line


async def read_items(
    stream: IO[str], *, format: str = "auto", **defaults: Any
) -> AsyncIterator[Item]:
    """Each non-blank JSON line of the stream as a UsageEvent or a BadLine."""
    lineno = 0
    async for line in read_lines(stream):
        lineno += 1
        if line.strip():
            yield parse_line(line, lineno, format=format, **defaults)


async def produce(
    items: Iterable[Item] | AsyncIterable[Item],
    *,
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_bad: Callable[[BadLine], None] | None = None,
    summary: ProduceSummary | None = None,
    **publisher_options: Any,
) -> ProduceSummary:
    """Publish every event of items (at most `rate` per second), collecting bad lines and
    failed deliveries; on_progress(1) is called per delivered, failed or bad item.

    `summary`, when given, counts each acknowledged event as its ack arrives, so a caller
    interrupted mid-run can say how many were published."""
    summary = summary if summary is not None else ProduceSummary()
    started = time.monotonic()

    async def events() -> AsyncIterator[UsageEvent]:
        async for item in aiter_any(items):
            if isinstance(item, BadLine):
                summary.bad.append(item)
                if on_bad is not None:
                    on_bad(item)
                if on_progress is not None:
                    on_progress(1)
            else:
                yield item

    def delivered(_: UsageEvent, outcome: Delivery | BaseException) -> None:
        if not isinstance(outcome, BaseException):
            summary.published += 1
        if on_progress is not None:
            on_progress(1)

    async with UsagePublisher(bootstrap, topic, **publisher_options) as pub:
        result = await pub.publish_many(paced(events(), rate), on_delivery=delivered)
    summary.failed = result.failed
    summary.seconds = time.monotonic() - started
    return summary
