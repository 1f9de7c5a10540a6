"""The Faust application: one agent meters usage.events in batches; a timer drains alert outbox.

At-least-once delivery with an idempotent Postgres sink (not Faust's exactly_once mode, see
faust-streaming issues #177, #323, #517); agents run with concurrency=1 (faust#606 can commit
past an unprocessed message otherwise); inside a take_events batch every failure is retried,
because an exception escaping the batch would still ack it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from mode import Service

from processors.ledger import publish_pending_alerts
from processors.metering import Meter, RawRecord
from processors.settings import WorkerSettings, get_worker_settings

log = logging.getLogger("meterline.worker")


class Resources(Service):
    """The asyncpg pool and the producer for the DLQ and alerts, started with the worker."""

    def __init__(self, settings: WorkerSettings, **kwargs: Any) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.meter: Meter | None = None
        self.ready = asyncio.Event()
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        s = self.settings
        from processors.topics import ensure_topics, wanted_topics

        created = await ensure_topics(s.kafka_bootstrap, wanted_topics(s))
        if created:
            log.info("created topics %s", ", ".join(created))
        self.pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=s.pg_pool_max)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        await self.producer.start()
        if s.seed_catalog:
            from processors.catalog import seed_catalog

            async with self.pool.acquire() as conn:
                added = await seed_catalog(conn)
            log.info("price catalog seeded (%d new versions)", added)
        self.meter = Meter(
            self.pool,
            self.send_dlq,
            policy=s.ledger_policy(),
            max_event_bytes=s.max_event_bytes,
            catalog_refresh_s=s.catalog_refresh_s,
            max_backoff_s=s.retry_max_backoff_s,
        )
        self.ready.set()

    async def on_stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    async def send_dlq(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(
            self.settings.topic_usage_dlq, key=key, value=value, headers=headers
        )

    async def send_alert(self, key: bytes, value: bytes) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(self.settings.topic_credit_alerts, key=key, value=value)


def create_app(settings: WorkerSettings) -> tuple[faust.App, Resources]:
    """The Faust app and its resources, configured from settings."""
    app = faust.App(
        settings.worker_group,
        broker=[f"kafka://{hp}" for hp in settings.kafka_bootstrap.split(",")],
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=settings.usage_events_partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=settings.batch_max,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    resources = Resources(settings, loop=app.loop, beacon=app.beacon)
    app.service(resources)  # type: ignore[arg-type]  # faust's stub wants a class
    source = app.topic(
        settings.topic_usage_events,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.usage_events_partitions,
    )

    @app.agent(source, concurrency=1)
    async def meter_usage(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.batch_max, within=settings.batch_within_s
        ):
            # Resources may still be starting when the first batch arrives: wait, never
            # raise (an exception escaping take_events would ack the batch unprocessed).
            await resources.ready.wait()
            meter = resources.meter
            assert meter is not None
            records = [
                RawRecord(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                )
                for e in events
            ]
            # Meter.process retries every transient failure itself and never raises on bad
            # input. take_events acks the batch however the body exits, so a cancellation
            # (shutdown, rebalance) must not leave it half done: finish the batch first.
            task = asyncio.ensure_future(meter.process(records))
            try:
                outcome = await asyncio.shield(task)
            except asyncio.CancelledError:
                await task
                raise
            log.info(
                "batch: %d records, %d debited, %d duplicates, dead %s",
                outcome.records,
                outcome.debited,
                outcome.duplicates,
                outcome.dead or "{}",
            )
            if outcome.alerts:
                # Publish this batch's alerts now; the timer publishes the rest (API writes).
                await _drain_alerts(resources)

    @app.timer(interval=2.0)
    async def alerts_timer() -> None:
        await _drain_alerts(resources)

    return app, resources


async def _drain_alerts(resources: Resources) -> None:
    if resources.pool is None or resources.producer is None:
        return
    try:
        while await publish_pending_alerts(resources.pool, resources.send_alert) >= 500:
            pass
    except Exception as exc:  # noqa: BLE001 - the outbox keeps them; the timer retries
        log.warning("publishing alerts failed (%r); will retry", exc)


app, resources = create_app(get_worker_settings())
