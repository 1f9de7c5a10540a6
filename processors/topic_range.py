"""A bounded range of a topic (by time or by offsets), read with a plain consumer for replay
and reconcile: manual assignment, nothing committed, stops at the end offsets fixed up front."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from schemas.errors import DomainError
from schemas.settings import kafka_options


class RangeError(DomainError):
    """A range that cannot be read: unknown topic or partition, bad bounds."""

    code = "invalid_range"
    status = 422


@dataclass(frozen=True, slots=True)
class TopicRange:
    """Per partition, the half-open offset range [start, end) to read."""

    topic: str
    bounds: Mapping[int, tuple[int, int]]
    # Partitions whose retained log starts after offset 0: older records were deleted.
    truncated: Mapping[int, int]

    @property
    def total(self) -> int:
        """How many records the range holds."""
        return sum(max(end - start, 0) for start, end in self.bounds.values())


def parse_partition_offset(text: str) -> tuple[int, int]:
    """'3:1200' → (3, 1200); RangeError on anything else."""
    part, sep, off = text.partition(":")
    try:
        if not sep:
            raise ValueError
        partition, offset = int(part), int(off)
    except ValueError:
        raise RangeError(
            f"--from-offset wants PARTITION:OFFSET such as 3:1200, got {text!r}"
        ) from None
    if partition < 0 or offset < 0:
        raise RangeError(f"--from-offset {text!r}: partition and offset must be >= 0")
    return partition, offset


def parse_partition_offsets(texts: Sequence[str]) -> dict[int, int]:
    """Each --from-offset PARTITION:OFFSET; RangeError when a partition is named twice."""
    offsets: dict[int, int] = {}
    for text in texts:
        partition, offset = parse_partition_offset(text)
        if partition in offsets:
            raise RangeError(
                f"--from-offset names partition {partition} twice "
                f"({partition}:{offsets[partition]} and {text!r}); give each partition once"
            )
        offsets[partition] = offset
    return offsets


def check_window(start: datetime | None, end: datetime | None) -> None:
    """--to after --from: a backwards window reads nothing, and saying 'read 0' hides the typo."""
    if start is not None and end is not None and end <= start:
        raise RangeError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")


def make_consumer(
    bootstrap: str, *, group: str | None = None, security: Mapping[str, Any] | None = None
) -> AIOKafkaConsumer:
    """A consumer tuned for bulk reads; never auto-commits (ranges are assigned by hand).
    `security`: Kafka security options (None: this process's settings)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_wait_ms=100,
        **(kafka_options() if security is None else security),
    )


def _ms(at: datetime) -> int:
    if at.utcoffset() is None:
        raise RangeError(f"times must carry a UTC offset, got {at.isoformat()}")
    return int(at.timestamp() * 1000)


async def resolve_range(
    consumer: AIOKafkaConsumer,
    topic: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    from_offsets: Mapping[int, int] | None = None,
) -> TopicRange:
    """Fix the offsets to read: start by time (offsets_for_times) or by explicit offsets, end at
    the first record at or after `end`, else at the current end of each partition."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - first look-up only
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise RangeError(f"topic {topic!r} does not exist on the broker")
    if from_offsets:
        unknown = sorted(set(from_offsets) - parts)
        if unknown:
            raise RangeError(f"topic {topic!r} has partitions {sorted(parts)}; no {unknown}")
        parts = set(from_offsets)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    first = await consumer.beginning_offsets(tps)
    last = await consumer.end_offsets(tps)
    starts: dict[TopicPartition, int] = {}
    if from_offsets:
        starts = {tp: max(from_offsets[tp.partition], first[tp]) for tp in tps}
    elif start is not None:
        found = await consumer.offsets_for_times({tp: _ms(start) for tp in tps})
        starts = {tp: (found[tp].offset if found[tp] is not None else last[tp]) for tp in tps}
    else:
        starts = dict(first)
    ends = dict(last)
    if end is not None:
        found = await consumer.offsets_for_times({tp: _ms(end) for tp in tps})
        ends = {tp: (found[tp].offset if found[tp] is not None else last[tp]) for tp in tps}
    return TopicRange(
        topic=topic,
        bounds={tp.partition: (starts[tp], max(ends[tp], starts[tp])) for tp in tps},
        truncated={
            tp.partition: first[tp] for tp in tps if first[tp] > 0 and starts[tp] == first[tp]
        },
    )


async def read_range(
    consumer: AIOKafkaConsumer, rng: TopicRange, *, max_records: int = 10_000
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Yield batches of the range's records (each partition in offset order) until every
    partition reaches its end offset."""
    todo = {TopicPartition(rng.topic, p): (s, e) for p, (s, e) in rng.bounds.items() if e > s}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, (s, _) in todo.items():
        consumer.seek(tp, s)
    while todo:
        fetched = await consumer.getmany(*todo, timeout_ms=1000, max_records=max_records)
        batch: list[ConsumerRecord[bytes, bytes]] = []
        for tp, records in fetched.items():
            if tp not in todo:
                continue
            end = todo[tp][1]
            batch.extend(r for r in records if r.offset < end)
            if records and records[-1].offset >= end - 1:
                del todo[tp]
                consumer.pause(tp)
        for tp in list(todo):
            # Offsets can be skipped (compaction, transaction markers): ask where we are.
            if await consumer.position(tp) >= todo[tp][1]:
                del todo[tp]
                consumer.pause(tp)
        if batch:
            yield batch


async def fetch_records(
    consumer: AIOKafkaConsumer, topic: str, positions: list[tuple[int, int]]
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records at these (partition, offset) positions (for a few re-reads, not bulk)."""
    wanted = set(positions)
    tps = sorted({TopicPartition(topic, p) for p, _ in wanted})
    if not tps:
        return []
    consumer.assign(tps)
    found: list[ConsumerRecord[bytes, bytes]] = []
    for p, o in sorted(wanted):
        tp = TopicPartition(topic, p)
        consumer.seek(tp, o)
        for _ in range(30):
            got = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            rec = next(iter(got.get(tp, [])), None)
            if rec is not None:
                if rec.offset == o:
                    found.append(rec)
                break
    return found
