"""Replay: re-read a range of usage.events or usage.dlq through the worker's own Meter.process.

Events already debited come back as duplicates and change nothing (the ledger's
UNIQUE(source, event_id)); a record whose key was debited for another account comes back as
``conflicting_event`` (counted in still_failing). DLQ records of reason ``unpriced`` (and of
the reasons the caller adds, e.g. ``rejected`` once the cause is fixed) are re-rated as if read
from their original topic, partition and offset; records of other DLQ reasons are reported, not
retried. ``conflicting_event`` cannot be asked for (NEVER_RETRIED): its key is another
account's for good. Retrying any other reason is safe: a record debited before is a duplicate,
and one that fails again is counted, never republished.

A replay never publishes to the DLQ. Every record it could dead-letter is already there: a
usage.events record was dead-lettered by the worker when it first read it, and a DLQ record
that is still unpriced stays where it is, at its DLQ offset, for the next replay. So records
that still fail are counted by reason in the summary (with a few samples) instead, and
replaying the DLQ any number of times never grows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import asyncpg
from aiokafka import ConsumerRecord

from processors.ledger import LedgerPolicy
from processors.metering import Meter, RawRecord
from processors.topic_range import TopicRange, make_consumer, read_range, resolve_range
from schemas import topics

T = TypeVar("T")
DEFAULT_RETRY = frozenset({"unpriced"})  # the DLQ reasons re-rated unless told more
# DLQ reasons a re-rating can never debit, and why: refused as `retry` reasons.
NEVER_RETRIED = {
    "conflicting_event": "its (source, event_id) is debited for another account for good"
    " (UNIQUE(source, event_id)); a re-rating would dead-letter it again. Publish the event"
    " again with an event_id of its own (or its proxy's own source)",
}
_SAMPLES = 20

OnProgress = Callable[[int, int], None]  # (records read so far, records in the range)


@dataclass
class ReplaySummary:
    """What a replay did: records read, debited, duplicates, and what still fails, by reason."""

    topic: str
    read: int = 0
    total: int = 0
    debited: int = 0
    duplicates: int = 0
    debited_micros: int = 0
    still_failing: dict[str, int] = field(default_factory=dict)
    not_retried: dict[str, int] = field(default_factory=dict)  # DLQ reasons not re-rated
    samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    truncated: dict[int, int] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        """Records read per second of wall time."""
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """The summary as plain JSON-ready data."""
        return {
            "topic": self.topic,
            "read": self.read,
            "debited": self.debited,
            "duplicates": self.duplicates,
            "debited_micros": self.debited_micros,
            "still_failing": dict(self.still_failing),
            "not_retried": dict(self.not_retried),
            "seconds": round(self.seconds, 3),
        }


class _Collect:
    """Meter's DLQ sink during a replay: counts reasons, keeps samples, publishes nothing."""

    def __init__(self, summary: ReplaySummary) -> None:
        self.summary = summary

    async def __call__(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        h = dict(headers)
        reason = h.get(topics.DLQ_HEADER_REASON, b"unknown").decode()
        s = self.summary
        s.still_failing[reason] = s.still_failing.get(reason, 0) + 1
        if len(s.samples) < _SAMPLES:
            where = (
                f"{h.get(topics.DLQ_HEADER_TOPIC, b'?').decode()}"
                f"[{h.get(topics.DLQ_HEADER_PARTITION, b'?').decode()}]"
                f"@{h.get(topics.DLQ_HEADER_OFFSET, b'?').decode()}"
            )
            s.samples.append(f"{where} {reason}: {h.get(topics.DLQ_HEADER_MESSAGE, b'').decode()}")


def _dlq_origin(
    record: ConsumerRecord[bytes, bytes], retry: frozenset[str]
) -> tuple[str, RawRecord | None]:
    """A DLQ record's reason, and the original record to re-rate when its reason is in retry."""
    h = dict(record.headers or ())
    reason = h.get(topics.DLQ_HEADER_REASON, b"").decode() or "unknown"
    if reason not in retry:
        return reason, None
    try:
        origin = RawRecord(
            topic=h[topics.DLQ_HEADER_TOPIC].decode(),
            partition=int(h[topics.DLQ_HEADER_PARTITION]),
            offset=int(h[topics.DLQ_HEADER_OFFSET]),
            key=record.key,
            value=record.value,
        )
    except (KeyError, ValueError):
        return "missing_origin_headers", None
    return reason, origin


async def uninterrupted(work: Awaitable[T]) -> T:
    """Await work to its end even when the caller is cancelled (Ctrl-C), then let the
    cancellation go on: a batch in flight may commit just before the interrupt arrives, and a
    summary that did not count it would say less than the ledger holds."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def to_raw(record: ConsumerRecord[bytes, bytes]) -> RawRecord:
    """A consumer record as the Meter reads it."""
    return RawRecord(record.topic, record.partition, record.offset, record.key, record.value)


async def replay(
    *,
    bootstrap: str,
    database_url: str,
    topic: str,
    dlq: bool,
    policy: LedgerPolicy,
    start: datetime | None = None,
    end: datetime | None = None,
    from_offsets: Mapping[int, int] | None = None,
    group: str | None = None,
    batch_size: int = 2000,
    max_event_bytes: int = topics.MAX_EVENT_BYTES,
    on_progress: OnProgress | None = None,
    retry: frozenset[str] = DEFAULT_RETRY,
    summary: ReplaySummary | None = None,
) -> ReplaySummary:
    """Feed a topic range through Meter.process; `dlq` reads it as usage.dlq (by headers) and
    re-rates the records whose reason is in `retry`.

    With `group`, the offsets reached are committed to that group when done (for visibility
    only: the range is assigned by hand, so the group never moves another consumer).
    `summary`, when given, is filled as batches commit, so a caller interrupted mid-run can
    say what was done (each batch is one transaction: whole or not at all).
    """
    for reason in retry & NEVER_RETRIED.keys():
        raise ValueError(f"{reason} records cannot be retried: {NEVER_RETRIED[reason]}")
    summary = summary if summary is not None else ReplaySummary(topic=topic)
    began = time.monotonic()
    consumer = make_consumer(bootstrap, group=group)
    try:
        await consumer.start()
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    except BaseException:
        await consumer.stop()  # Kafka or Postgres unreachable: close what did open
        raise
    try:
        rng: TopicRange = await resolve_range(
            consumer, topic, start=start, end=end, from_offsets=from_offsets
        )
        summary.total = rng.total
        summary.truncated = dict(rng.truncated)
        meter = Meter(pool, _Collect(summary), policy=policy, max_event_bytes=max_event_bytes)
        async for records in read_range(consumer, rng, max_records=batch_size):
            # A batch in flight when Ctrl-C comes is finished and counted, then the run stops.
            await uninterrupted(_feed(meter, records, dlq=dlq, retry=retry, summary=summary))
            if on_progress is not None:
                on_progress(summary.read, summary.total)
        assigned = consumer.assignment()
        if group is not None and assigned:
            from aiokafka.structs import OffsetAndMetadata

            await consumer.commit(
                {
                    tp: OffsetAndMetadata(rng.bounds[tp.partition][1], "meterline replay")
                    for tp in assigned
                }
            )
    finally:
        await consumer.stop()
        await pool.close()
    summary.seconds = time.monotonic() - began
    return summary


async def _feed(
    meter: Meter,
    records: Sequence[ConsumerRecord[bytes, bytes]],
    *,
    dlq: bool,
    retry: frozenset[str],
    summary: ReplaySummary,
) -> None:
    summary.read += len(records)
    if dlq:
        batch: list[RawRecord] = []
        for r in records:
            reason, origin = _dlq_origin(r, retry)
            if origin is None:
                summary.not_retried[reason] = summary.not_retried.get(reason, 0) + 1
            else:
                batch.append(origin)
    else:
        batch = [to_raw(r) for r in records]
    if not batch:
        return
    outcome = await meter.process(batch)
    summary.debited += outcome.debited
    summary.duplicates += outcome.duplicates
    summary.debited_micros += outcome.debited_micros
