"""The metering step, independent of Faust: raw records → validate → price → debit → DLQ.

The worker's consumer loop (processors/consumer.py) feeds it batches; replay feeds it records
read by a plain consumer. Either way the same code decides what is debited, duplicated or
dead-lettered. A record the database or Python refuses is found by bisecting its batch and
dead-lettered as `rejected` (DESIGN invariant 9); the records around it are debited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
from aiokafka.errors import MessageSizeTooLargeError
from pydantic import ValidationError

from processors import catalog as catalog_db
from processors import metrics
from processors.failures import classify, describe
from processors.ledger import BatchResult, LedgerPolicy, RatedEvent, debit_batch
from processors.pricing import Catalog
from schemas import topics
from schemas.bounds import CostOutOfBounds
from schemas.event import UsageEvent

log = logging.getLogger("meterline.metering")


class RawRecord(NamedTuple):
    """A record as read from Kafka (a named tuple: one is built per record, and a frozen
    dataclass's __init__ cost three times as much)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


# Every reason a record is dead-lettered with (the `meterline.reason` header of usage.dlq).
DLQ_REASONS = (
    "invalid_json",
    "invalid_event",
    "oversized",
    "unpriced",
    "rejected",
    "conflicting_event",  # its (source, event_id) was already debited for another account
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be debited, with a machine code and a human message."""

    record: RawRecord
    reason: str  # one of DLQ_REASONS
    message: str

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers that carry the reason and the origin."""
        return [
            (topics.DLQ_HEADER_REASON, self.reason.encode()),
            (topics.DLQ_HEADER_MESSAGE, self.message.encode()[:2000]),
            (topics.DLQ_HEADER_TOPIC, self.record.topic.encode()),
            (topics.DLQ_HEADER_PARTITION, str(self.record.partition).encode()),
            (topics.DLQ_HEADER_OFFSET, str(self.record.offset).encode()),
        ]


# send(key, value, headers) returns once the broker acknowledged the record.
SendDLQ = Callable[[bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[None]]


@dataclass
class Outcome:
    """What a batch became: debited, duplicates, dead letters (by reason)."""

    records: int = 0
    debited: int = 0
    duplicates: int = 0
    debited_micros: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    alerts: int = 0  # queued in the outbox by this batch


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch validated and rated, not yet debited (Meter.prepare → Meter.finish)."""

    records: int
    partitions: list[int]
    pairs: list[tuple[RawRecord, RatedEvent]]
    dead: list[DeadLetter]
    seconds: float


def describe_validation_error(exc: ValidationError) -> str:
    """'field: rule' for each error, e.g. 'input_tokens: Input should be >= 0'."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def validate(record: RawRecord, *, max_bytes: int) -> UsageEvent | DeadLetter:
    """Parse one record into a UsageEvent, or say why it is dead."""
    value = record.value
    if value is None or not value.strip():
        return DeadLetter(record, "invalid_json", "empty record value")
    if len(value) > max_bytes:
        return DeadLetter(record, "oversized", f"record is {len(value)} bytes; limit {max_bytes}")
    try:
        return UsageEvent.model_validate_json(value)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return DeadLetter(
                record, "invalid_json", f"not a JSON object: {exc.errors()[0]['msg']}"
            )
        return DeadLetter(record, "invalid_event", describe_validation_error(exc))
    except Exception as exc:  # noqa: BLE001 - a value Python cannot hold is the record's fault
        return DeadLetter(record, "invalid_event", describe(exc))


def _merged(a: BatchResult, b: BatchResult) -> BatchResult:
    # Unpriced and conflicting positions are already dead letters of each half's _debit.
    return BatchResult(
        debited=a.debited + b.debited,
        duplicates=a.duplicates + b.duplicates,
        debited_micros=a.debited_micros + b.debited_micros,
        alerts=a.alerts + b.alerts,
    )


class PermanentFailure(Exception):
    """An operation failed for a reason retrying cannot fix; `cause` is the original error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(describe(cause))
        self.cause = cause


# Validation hands the event loop back this often (records) while it prepares a batch.
_YIELD_EVERY = 200

# DLQ records larger than this keep only a prefix of the original bytes (header says so).
_DLQ_VALUE_FALLBACK_BYTES = 512 * 1024


class Meter:
    """Prices and debits batches of raw records; never raises on bad input or transient errors.

    A transient failure (Postgres or Kafka away) is retried with capped backoff until it
    passes; a permanent one (a value the database or Python refuses) is isolated by bisecting
    the batch — re-running a part is safe because debits are idempotent — and the record(s)
    responsible are dead-lettered as `rejected`. `process` may be cancelled at any await (a
    worker shutting down abandons its batch): nothing is acknowledged for a batch that did
    not return, so its records are redelivered and deduplicated.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        send_dlq: SendDLQ,
        *,
        policy: LedgerPolicy,
        max_event_bytes: int = topics.MAX_EVENT_BYTES,
        catalog_refresh_s: float = 30.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.pool = pool
        self.send_dlq = send_dlq
        self.policy = policy
        self.max_event_bytes = max_event_bytes
        self.catalog_refresh_s = catalog_refresh_s
        self.max_backoff_s = max_backoff_s
        self.catalog = Catalog([])
        self._catalog_loaded_at = 0.0

    async def refresh_catalog(self, *, force: bool = False) -> None:
        """Reload the price catalog when it is older than the refresh interval (or forced)."""
        now = time.monotonic()
        if not force and now - self._catalog_loaded_at < self.catalog_refresh_s:
            return
        async with self.pool.acquire() as conn:
            self.catalog = await catalog_db.load_catalog(conn)
        self._catalog_loaded_at = now

    async def _rate(
        self, events: list[tuple[RawRecord, UsageEvent]]
    ) -> tuple[list[tuple[RawRecord, RatedEvent]], list[DeadLetter]]:
        """Each event with the price version in force at its occurred_at, in partition order."""
        rated: list[tuple[RawRecord, RatedEvent]] = []
        dead: list[DeadLetter] = []
        pending = events
        for last_try in (False, True):
            missing: list[tuple[RawRecord, UsageEvent]] = []
            for rec, ev in pending:
                try:
                    version = self.catalog.version_at(ev.model, ev.occurred_at)
                    provider = ev.provider or self.catalog.provider_for(ev.model)
                except Exception as exc:  # noqa: BLE001 - this event's values, not the catalog
                    dead.append(DeadLetter(rec, "rejected", describe(exc)))
                    continue
                if version is None:
                    missing.append((rec, ev))
                    continue
                rated.append((rec, RatedEvent(ev, version, provider, rec.partition, rec.offset)))
            if last_try or not missing or time.monotonic() - self._catalog_loaded_at <= 1.0:
                break
            # A price may have been added since the last load: look once more before giving up.
            await self._retrying(lambda: self.refresh_catalog(force=True), "reload catalog", [])
            pending = missing
        dead.extend(
            DeadLetter(
                rec, "unpriced", f"no price for model {ev.model!r} at {ev.occurred_at.isoformat()}"
            )
            for rec, ev in missing
        )
        if pending is not events:
            # Events rated on the second look were appended last: put each partition's records
            # back in order for balance_after (records come from Kafka in partition order).
            rated.sort(key=lambda pair: (pair[0].partition, pair[0].offset))
        return rated, dead

    async def _retrying(
        self, op: Callable[[], Awaitable[object]], what: str, partitions: Sequence[int]
    ) -> int:
        """Run op until it succeeds; transient failures back off. Returns the retry count.

        A permanent or unknown failure is raised as PermanentFailure for the caller to isolate.
        While it fails, the partitions it holds show how long in
        meterline_partition_failing_seconds, and each backoff step logs why, once.
        """
        delay, retries, failing_since = 0.1, 0, 0.0
        try:
            while True:
                try:
                    await op()
                    return retries
                except Exception as exc:
                    kind = classify(exc)
                    if kind != "transient":
                        if kind == "unknown":
                            log.exception("%s failed unexpectedly; isolating the cause", what)
                        raise PermanentFailure(exc) from exc
                    retries += 1
                    now = time.monotonic()
                    failing_since = failing_since or now
                    for p in set(partitions):
                        metrics.PARTITION_FAILING.labels(str(p)).set(now - failing_since)
                    log.warning(
                        "%s failed (%s); retrying in %.1fs (failing for %.0fs)",
                        what,
                        describe(exc),
                        delay,
                        now - failing_since,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)
        finally:
            if failing_since:
                for p in set(partitions):
                    metrics.PARTITION_FAILING.labels(str(p)).set(0)

    async def _debit(
        self, pairs: list[tuple[RawRecord, RatedEvent]]
    ) -> tuple[BatchResult, list[DeadLetter]]:
        """Debit pairs in one transaction; on a permanent failure, bisect to the culprit(s)."""
        result = BatchResult()
        rated = [r for _, r in pairs]

        async def write() -> None:
            nonlocal result
            async with self.pool.acquire() as conn:
                result = await debit_batch(conn, rated, policy=self.policy)

        try:
            await self._retrying(write, "debit batch", [rec.partition for rec, _ in pairs])
        except PermanentFailure as failure:
            if len(pairs) == 1:
                log.warning(
                    "record %s[%d]@%d rejected: %s",
                    pairs[0][0].topic,
                    pairs[0][0].partition,
                    pairs[0][0].offset,
                    failure,
                )
                # A cost past DESIGN's bound is the event's own fault, found only when priced.
                reason = (
                    "invalid_event" if isinstance(failure.cause, CostOutOfBounds) else "rejected"
                )
                return BatchResult(), [DeadLetter(pairs[0][0], reason, str(failure))]
            # Halves in order, so each account's events keep their order in the ledger.
            mid = len(pairs) // 2
            left, left_dead = await self._debit(pairs[:mid])
            right, right_dead = await self._debit(pairs[mid:])
            return _merged(left, right), left_dead + right_dead
        # debit_batch names unpriced events (a unit with no price) and events whose key another
        # account's event holds by their position in `rated`.
        dead = [DeadLetter(pairs[i][0], "unpriced", message) for i, message in result.unpriced]
        dead += [
            DeadLetter(pairs[i][0], "conflicting_event", message)
            for i, message in result.conflicting
        ]
        return result, dead

    async def _publish_dead(self, dead: list[DeadLetter]) -> None:
        await asyncio.gather(*(self._send_one_dead(d) for d in dead))

    async def _send_one_dead(self, d: DeadLetter) -> None:
        value = d.record.value or b""
        try:
            await self.send_dlq(d.record.key, value, d.headers())
        except MessageSizeTooLargeError:
            # The broker takes the original on usage.events but not with our headers: keep a
            # prefix and say so, rather than lose the record's trace.
            headers = [*d.headers(), (topics.DLQ_HEADER_TRUNCATED, str(len(value)).encode())]
            await self.send_dlq(d.record.key, value[:_DLQ_VALUE_FALLBACK_BYTES], headers)

    async def process(self, records: Sequence[RawRecord]) -> Outcome:
        """Debit a batch; dead letters are published before this returns (so acking is safe)."""
        return await self.finish(await self.prepare(records))

    async def prepare(self, records: Sequence[RawRecord]) -> Prepared:
        """Validate and rate a batch (CPU work, no ledger write): the first half of process().

        The worker prepares batch N+1 while batch N's transaction is in Postgres; finish()
        must still be called in batch order.
        """
        started = time.perf_counter()
        partitions = sorted({r.partition for r in records})
        await self._retrying(self.refresh_catalog, "load catalog", partitions)
        valid: list[tuple[RawRecord, UsageEvent]] = []
        dead: list[DeadLetter] = []
        for n, rec in enumerate(records, 1):
            parsed = validate(rec, max_bytes=self.max_event_bytes)
            if isinstance(parsed, DeadLetter):
                dead.append(parsed)
            else:
                valid.append((rec, parsed))
            if n % _YIELD_EVERY == 0:
                # Let the batch in flight go on between its statements: its Python steps run
                # here, and Postgres is kept busy while this batch is validated.
                await asyncio.sleep(0)
        pairs, not_rated = await self._rate(valid)
        dead.extend(not_rated)
        return Prepared(len(records), partitions, pairs, dead, time.perf_counter() - started)

    async def finish(self, prepared: Prepared) -> Outcome:
        """Debit a prepared batch and publish its dead letters: the second half of process()."""
        started = time.perf_counter()
        out = Outcome(records=prepared.records)
        dead = list(prepared.dead)
        if prepared.pairs:
            result, refused = await self._debit(prepared.pairs)
            dead.extend(refused)
            out.debited, out.duplicates, out.debited_micros, out.alerts = (
                result.debited,
                result.duplicates,
                result.debited_micros,
                result.alerts,
            )
        for d in dead:
            out.dead[d.reason] = out.dead.get(d.reason, 0) + 1
        if dead:
            # A DLQ write the broker refuses for good is not the record's fault: keep trying.
            await self._retrying_forever(lambda: self._publish_dead(dead), prepared.partitions)
        metrics.EVENTS_METERED.inc(out.debited)
        metrics.DUPLICATES.inc(out.duplicates)
        for reason, n in out.dead.items():
            metrics.DLQ_RECORDS.labels(reason).inc(n)
        metrics.BATCH_SECONDS.observe(prepared.seconds + time.perf_counter() - started)
        return out

    async def _retrying_forever(
        self, op: Callable[[], Awaitable[object]], partitions: Sequence[int]
    ) -> None:
        delay = 0.1
        while True:
            try:
                await self._retrying(op, "publish to DLQ", partitions)
                return
            except PermanentFailure as failure:
                log.error("publish to DLQ failed (%s); retrying in %.1fs", failure, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
