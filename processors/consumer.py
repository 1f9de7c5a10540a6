"""The worker's metering loop: a consumer-group member that reads usage.events in batches.

It runs as a service inside the Faust application (processors/app.py) rather than as a Faust
agent, for two reasons measured and read in upstream issues:

- Faust acks a `take()` batch however its body exits (an exception or a cancellation still
  acks it), so a shutdown or a poison record could commit past records that were never
  debited (issue #8). Here offsets are committed only by this loop, explicitly, after the
  batch's records are each a ledger row, a recorded duplicate or a DLQ record.
- Faust's per-event stream machinery (one future, task and ack per event) cost about 45 % of
  a worker's CPU; aiokafka's `getmany` hands over a whole batch at once.

Consumer-group semantics are Kafka's own: partitions are balanced among the workers of one
group; before a partition is revoked the listener waits (bounded) for the batch in flight and
commits what is done; what a revoked or killed worker had not committed is redelivered to the
next owner, where the ledger's (source, event_id) key turns it into recorded duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from processors import metrics
from processors.metering import Meter, Prepared, RawRecord
from schemas.settings import kafka_options

log = logging.getLogger("meterline.consumer")


class MeteringLoop:
    """Read → meter → commit, one batch at a time, with a bounded, loss-free stop."""

    def __init__(
        self,
        meter: Meter,
        *,
        bootstrap: str,
        topic: str,
        group: str,
        batch_max: int,
        batch_within_s: float,
        shutdown_timeout_s: float,
        rebalance_wait_s: float = 20.0,
        lanes: int = 2,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.meter = meter
        self.lanes = lanes
        self.topic = topic
        self.batch_max = batch_max
        self.batch_within_ms = max(1, int(batch_within_s * 1000))
        self.shutdown_timeout_s = shutdown_timeout_s
        self.rebalance_wait_s = rebalance_wait_s
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_max,
            # aiokafka keeps one fetched response per partition until it is consumed, so a
            # worker behind on 12 partitions held up to 12 × this in memory: at 8 MiB its RSS
            # was 209 MiB 200,000 events into a 2,000,000-event backlog. 1 MiB is about 2,800
            # events of a partition per fetch, more than a batch takes (a larger record still
            # comes whole: the broker returns the first batch whatever this limit).
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=1024 * 1024,
            **(kafka_options() if security is None else security),
        )
        # One lock per lane, held while the lane's batch is in flight (rebalance waits on them).
        self._in_flight = [asyncio.Lock() for _ in range(lanes)]
        self._stopping = asyncio.Event()
        self._done: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._committed: dict[TopicPartition, int] = {}
        self._rewound: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def start(self) -> None:
        """Join the group and start the loop in the background."""
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        await self.consumer.start()
        self._task = asyncio.create_task(self.run(), name="metering-loop")

    async def run(self) -> None:
        """Until stopped: read records, meter them per lane, commit their offsets.

        A lane is the partitions p with p % lanes == k. Each lane has at most one batch in
        flight and finishes its batches in order, so each partition's records are debited in
        order (balance_after) and a partition never changes lane. Lanes run side by side on
        their own connections: events are keyed by account, so two lanes' batches touch
        different accounts and never wait on each other's row locks, and one lane's Python
        (validation, rating, building rows) runs while the other's statements run in
        Postgres. Within a lane, batch N+1 is fetched, validated and rated while batch N's
        transaction runs.
        """
        backoff = 0.1
        in_flight: dict[int, asyncio.Task[bool]] = {}
        try:
            while not self._stopping.is_set():
                try:
                    backoff = await self._step(in_flight, backoff)
                except Exception:
                    # Never let the loop die silently (the worker would idle with partitions
                    # assigned): log, read the uncommitted records again, go on.
                    log.exception("metering loop step failed; resuming from the last commit")
                    await self._settle(in_flight)
                    await self._rewind_to_committed()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            await asyncio.gather(*in_flight.values())
            in_flight.clear()
            await self._commit()
        except asyncio.CancelledError:
            for task in in_flight.values():
                task.cancel()
            await asyncio.gather(*in_flight.values(), return_exceptions=True)
            raise

    async def _step(self, in_flight: dict[int, asyncio.Task[bool]], backoff: float) -> float:
        """One turn of the loop: fetch, and per lane prepare the new batch, finish the
        lane's previous one, start the new one; commit what is done."""
        try:
            fetched = await self.consumer.getmany(
                timeout_ms=self.batch_within_ms, max_records=self.batch_max
            )
            backoff = 0.1
        except KafkaError as exc:  # aiokafka reconnects by itself; wait and ask again
            log.warning("fetch failed (%r); retrying in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            fetched = {}
        by_lane: dict[int, dict[TopicPartition, list[Any]]] = {}
        for tp, msgs in fetched.items():
            by_lane.setdefault(tp.partition % self.lanes, {})[tp] = msgs
        failed = False
        for lane, part in sorted(by_lane.items()):
            prepared = await self.meter.prepare(_records(part))
            previous = in_flight.pop(lane, None)
            if previous is not None and not await previous:
                # Never debit a later batch past one that failed: read both again.
                self._rewind(part)
                failed = True
                continue
            await self._in_flight[lane].acquire()
            in_flight[lane] = asyncio.create_task(self._finish(part, prepared, lane))
        if failed:
            self._rewound.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        await self._commit()
        return backoff

    async def _settle(self, in_flight: dict[int, asyncio.Task[bool]]) -> None:
        """Wait for the batches in flight to end, whatever their outcome."""
        await asyncio.gather(*in_flight.values(), return_exceptions=True)
        in_flight.clear()

    async def _rewind_to_committed(self) -> None:
        """Read again from what is done (or committed) on every partition this worker owns."""
        unknown = []
        for tp in self.consumer.assignment():
            position = self._done.get(tp, self._committed.get(tp))
            if position is not None:
                self.consumer.seek(tp, position)
            else:
                unknown.append(tp)
        if unknown:
            # Nothing done here yet: the group's committed offset (or the reset policy).
            await self.consumer.seek_to_committed(*unknown)

    async def _finish(
        self, fetched: dict[TopicPartition, list[Any]], prepared: Prepared, lane: int
    ) -> bool:
        """Debit a prepared batch; its offsets become committable only when that succeeded."""
        try:
            outcome = await self.meter.finish(prepared)
        except Exception:
            # Meter.finish is built never to raise; if it does anyway, read the batch again
            # rather than commit past it.
            log.exception("metering a batch failed; reading it again")
            self._rewind(fetched)
            return False
        finally:
            self._in_flight[lane].release()
        # Only now is every record of the batch a ledger row, a duplicate or a DLQ record.
        for tp, msgs in fetched.items():
            self._done[tp] = msgs[-1].offset + 1
        self.batches += 1
        self._report_lag(fetched)
        log.info(
            "batch: %d records, %d debited, %d duplicates, dead %s",
            outcome.records,
            outcome.debited,
            outcome.duplicates,
            outcome.dead or "{}",
        )
        return True

    def _rewind(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        assigned = self.consumer.assignment()
        for tp, msgs in fetched.items():
            if tp in assigned:
                # A later position than a failed batch's start would skip it: only move back.
                first = msgs[0].offset
                self._rewound[tp] = min(first, self._rewound.get(tp, first))
                self.consumer.seek(tp, self._rewound[tp])

    def _report_lag(self, fetched: Iterable[TopicPartition]) -> None:
        # A partition revoked while its batch was in flight has no highwater here (aiokafka
        # asserts it is assigned): report only what this worker still owns.
        assigned = self.consumer.assignment()
        for tp in fetched:
            if tp not in assigned:
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(
                    max(highwater - self._done.get(tp, 0), 0)
                )

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        """Commit the offsets of finished batches; keep them for later if the broker is away."""
        wanted = set(only) if only is not None else set(self._done)
        assigned = self.consumer.assignment()
        offsets = {
            tp: off
            for tp, off in self._done.items()
            if tp in wanted and tp in assigned and self._committed.get(tp) != off
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance): the next owner re-reads from the last commit
            # and the ledger counts what this worker debited as duplicates.
            log.info("commit of %d partitions refused after a rebalance (%r)", len(offsets), exc)
            for tp in offsets:
                self._done.pop(tp, None)
        except KafkaError as exc:
            log.warning("commit failed (%r); kept for the next batch", exc)

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._done.pop(tp, None)
            self._committed.pop(tp, None)
            try:
                metrics.CONSUMER_LAG.remove(str(tp.partition))
            except KeyError:
                pass  # never reported

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before partitions move: let the batches in flight finish (bounded), commit, forget."""
        deadline = time.monotonic() + self.rebalance_wait_s
        held: list[asyncio.Lock] = []
        try:
            for lock in self._in_flight:
                await asyncio.wait_for(lock.acquire(), max(deadline - time.monotonic(), 0.01))
                held.append(lock)
        except TimeoutError:
            # A batch held by a dependency outage: give the partitions up uncommitted; the
            # next owner redoes them (duplicates), this batch's later commit is refused.
            log.warning("rebalance: batch still in flight after %.0fs", self.rebalance_wait_s)
            for lock in held:
                lock.release()
            self._forget(revoked)
            return
        try:
            await self._commit(revoked)
        finally:
            for lock in held:
                lock.release()
        self._forget(revoked)

    async def stop(self) -> None:
        """Stop within shutdown_timeout_s, committing nothing past an unfinished batch."""
        deadline = time.monotonic() + self.shutdown_timeout_s
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            try:
                # Leave 3 s of the budget for the last commit and leaving the group.
                await asyncio.wait_for(
                    asyncio.shield(task), max(deadline - time.monotonic() - 3.0, 0.1)
                )
            except TimeoutError:
                log.warning("shutdown: abandoning the batch in flight (it will be redelivered)")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception:  # noqa: BLE001 - the loop's own failure; nothing to commit for it
                log.exception("metering loop failed")
        for step in (self._commit, self.consumer.stop):
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(step(), max(remaining, 0.5))
            except Exception as exc:  # noqa: BLE001 - shutting down: report, go on
                log.warning("shutdown: %s did not finish (%r)", step.__name__, exc)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running loop (None before start)."""
        return self._task


def _records(fetched: dict[TopicPartition, list[Any]]) -> list[RawRecord]:
    return [
        RawRecord(m.topic, m.partition, m.offset, m.key, m.value)
        for msgs in fetched.values()
        for m in msgs
    ]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: MeteringLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
