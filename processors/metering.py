"""The metering step, independent of Faust: raw records → validate → price → debit → DLQ.

The worker feeds it batches from `stream.take_events`; replay feeds it records read by a
plain consumer. Either way the same code decides what is debited, duplicated or dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from processors import catalog as catalog_db
from processors.ledger import BatchResult, LedgerPolicy, RatedEvent, debit_batch
from processors.pricing import Catalog
from schemas import topics
from schemas.event import UsageEvent

log = logging.getLogger("meterline.metering")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that cannot be debited, with a machine code and a human message."""

    record: RawRecord
    reason: str  # invalid_json | invalid_event | oversized | unpriced
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


class Meter:
    """Prices and debits batches of raw records; never raises on bad input or transient errors.

    A transient failure (Postgres or Kafka away) is retried until it succeeds, also during
    shutdown: a process stopped mid-batch must not ack what it has not written, and a process
    killed instead commits nothing, so its records are redelivered and deduplicated.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        send_dlq: SendDLQ,
        *,
        policy: LedgerPolicy,
        max_event_bytes: int = 65536,
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
        pending = events
        for last_try in (False, True):
            missing: list[tuple[RawRecord, UsageEvent]] = []
            for rec, ev in pending:
                version = self.catalog.version_at(ev.model, ev.occurred_at)
                if version is None:
                    missing.append((rec, ev))
                    continue
                provider = ev.provider or self.catalog.provider_for(ev.model)
                rated.append((rec, RatedEvent(ev, version, provider, rec.partition, rec.offset)))
            if last_try or not missing or time.monotonic() - self._catalog_loaded_at <= 1.0:
                break
            # A price may have been added since the last load: look once more before giving up.
            await self._retrying(lambda: self.refresh_catalog(force=True), "reload catalog")
            pending = missing
        dead = [
            DeadLetter(
                rec, "unpriced", f"no price for model {ev.model!r} at {ev.occurred_at.isoformat()}"
            )
            for rec, ev in missing
        ]
        # Keep each partition's order for balance_after.
        rated.sort(key=lambda pair: (pair[0].partition, pair[0].offset))
        return rated, dead

    async def _retrying(self, op: Callable[[], Awaitable[object]], what: str) -> int:
        """Run op until it succeeds; transient failures back off. Returns the retry count."""
        delay, retries = 0.1, 0
        while True:
            try:
                await op()
                return retries
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                OSError,
                TimeoutError,
                KafkaError,
            ) as exc:
                retries += 1
                log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
            except Exception:
                # Not a known transient failure: a bug or a broken invariant. Never let it
                # escape the batch (it would be acked unprocessed); hold the partition and
                # keep trying, loudly, so an operator can fix it with nothing lost.
                retries += 1
                log.exception("%s failed unexpectedly; retrying in %.1fs", what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    async def _publish_dead(self, dead: list[DeadLetter]) -> None:
        await asyncio.gather(
            *(self.send_dlq(d.record.key, d.record.value or b"", d.headers()) for d in dead)
        )

    async def process(self, records: Sequence[RawRecord]) -> Outcome:
        """Debit a batch; dead letters are published before this returns (so acking is safe)."""
        out = Outcome(records=len(records))
        await self._retrying(self.refresh_catalog, "load catalog")
        valid: list[tuple[RawRecord, UsageEvent]] = []
        dead: list[DeadLetter] = []
        for rec in records:
            parsed = validate(rec, max_bytes=self.max_event_bytes)
            if isinstance(parsed, DeadLetter):
                dead.append(parsed)
            else:
                valid.append((rec, parsed))
        pairs, unpriced = await self._rate(valid)
        dead.extend(unpriced)
        rated = [r for _, r in pairs]

        result = BatchResult()

        async def write() -> None:
            nonlocal result
            async with self.pool.acquire() as conn:
                result = await debit_batch(conn, rated, policy=self.policy)

        if rated:
            out.retries = await self._retrying(write, "debit batch")
        # debit_batch names unpriced events (a unit with no price) by their position in `rated`.
        dead.extend(DeadLetter(pairs[i][0], "unpriced", message) for i, message in result.unpriced)
        out.debited, out.duplicates, out.debited_micros, out.alerts = (
            result.debited,
            result.duplicates,
            result.debited_micros,
            result.alerts,
        )
        for d in dead:
            out.dead[d.reason] = out.dead.get(d.reason, 0) + 1
        if dead:
            await self._retrying(lambda: self._publish_dead(dead), "publish to DLQ")
        return out
