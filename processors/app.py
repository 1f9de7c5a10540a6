"""The Faust application: the metering loop and the alert outbox drain, as services of one app.

At-least-once delivery with an idempotent Postgres sink (not Faust's exactly_once mode, see
faust-streaming issues #177, #323, #517). usage.events is read by `MeteringLoop`
(processors/consumer.py), a service of this app with its own consumer-group member, instead
of a `take()` agent: Faust acks a take() batch however its body exits, so a shutdown or a
poison record could commit past records never debited; the loop commits only finished
batches. Timers (the alert outbox) stay Faust timers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.app.base import BootStrategy
from mode import Service

from processors import metrics
from processors.consumer import MeteringLoop
from processors.ledger import (
    count_pending_alerts,
    ensure_partitions,
    expire_grants,
    publish_pending_alerts,
    sweep_expired_holds,
)
from processors.metering import Meter
from processors.settings import WorkerSettings
from schemas.settings import get_settings

log = logging.getLogger("meterline.worker")


class Resources(Service):
    """The asyncpg pool, the producer (DLQ, alerts) and the metering loop of one worker."""

    def __init__(self, settings: WorkerSettings, **kwargs: Any) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.meter: Meter | None = None
        self.metering: MeteringLoop | None = None
        self.ready = asyncio.Event()
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        s = self.settings
        from processors.topic_admin import ensure_topics, wanted_topics

        # One set of Kafka security options (its TLS context reads the CA and key files) for
        # the topic admin, the producer and the consumer alike.
        security = s.kafka_options()

        if s.worker_metrics_port:
            from prometheus_client import start_http_server

            start_http_server(s.worker_metrics_port, addr=s.worker_metrics_host)
            log.info("metrics on %s:%d/metrics", s.worker_metrics_host, s.worker_metrics_port)
        created = await ensure_topics(
            s.kafka_bootstrap,
            wanted_topics(s),
            timeout_s=3600,
            replication=s.topic_replication_factor,
            security=security,
        )
        if created:
            log.info("created topics %s", ", ".join(created))
        self.pool = await _until_up(
            # Each lane holds a connection while its batch is in flight; timers need theirs too.
            lambda: asyncpg.create_pool(
                s.database_url, min_size=1, max_size=max(s.pg_pool_max, s.worker_lanes + 2)
            ),
            "connect to PostgreSQL",
        )

        async def connect_producer() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                bootstrap_servers=s.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                **security,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            return producer

        # A broker still starting (or restarting) is waited for, as Postgres is.
        self.producer = await _until_up(connect_producer, "connect to Kafka")
        if s.seed_catalog:
            from processors.catalog import seed_catalog

            async def seed() -> int:
                assert self.pool is not None
                async with self.pool.acquire() as conn:
                    return await seed_catalog(conn)

            added = await _until_up(seed, "seed the price catalog")
            log.info("price catalog seeded (%d new versions)", added)
        await _partitions(self)
        self.meter = Meter(
            self.pool,
            self.send_dlq,
            policy=s.ledger_policy(),
            max_event_bytes=s.max_event_bytes,
            catalog_refresh_s=s.catalog_refresh_s,
            max_backoff_s=s.retry_max_backoff_s,
        )
        meter = self.meter

        async def join_group() -> MeteringLoop:
            metering = MeteringLoop(
                meter,
                bootstrap=s.kafka_bootstrap,
                topic=s.topic_usage_events,
                group=s.worker_group,
                batch_max=s.batch_max,
                batch_within_s=s.batch_within_s,
                shutdown_timeout_s=s.shutdown_timeout_s,
                lanes=s.worker_lanes,
                security=security,
            )
            try:
                await metering.start()
            except BaseException:
                await metering.consumer.stop()
                raise
            return metering

        self.metering = await _until_up(join_group, "join the consumer group")
        self.ready.set()

    async def on_stop(self) -> None:
        # The loop first (it finishes or abandons its batch and commits only what is done),
        # then the clients it used.
        if self.metering is not None:
            await self.metering.stop()
        if self.producer is not None:
            await _bounded(self.producer.stop(), "stop the producer")
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 3.0)
            except Exception:  # noqa: BLE001 - Postgres away: drop the connections
                self.pool.terminate()

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


async def _until_up(make: Any, what: str) -> Any:
    """Await make() until it succeeds: a dependency still starting is waited for, not fatal."""
    delay = 0.5
    while True:
        try:
            return await make()
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            TimeoutError,
            KafkaError,
        ) as exc:
            log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _bounded(aw: Any, what: str) -> None:
    try:
        await asyncio.wait_for(aw, 3.0)
    except Exception as exc:  # noqa: BLE001 - shutting down: report, go on
        log.warning("shutdown: could not %s (%r)", what, exc)


class _Boot(BootStrategy):
    # usage.events is read by the metering loop's own consumer: Faust's consumer, conductor
    # and table manager have nothing to read (and refuse to start with no topic).
    enable_kafka_consumer = False
    # Nothing sends through Faust's producer (Resources has its own), and Faust's would make
    # a worker started while the broker is down exit at once ("Unable to bootstrap").
    enable_kafka_producer = False


class MeterlineApp(faust.App):
    """The worker's Faust app: services and timers, its Kafka consumer left off."""

    BootStrategy = _Boot

    def _create_directories(self) -> None:
        """Create nothing: the app keeps no tables (store memory://), so Faust's data directory
        (`{name}-data/v1/tables`, made in the working directory at first start) would be an
        empty directory left behind wherever the worker was started."""


def create_app(settings: WorkerSettings) -> tuple[faust.App, Resources]:
    """The Faust app and its resources, configured from settings."""
    app = MeterlineApp(
        settings.worker_group,
        broker=[f"kafka://{hp}" for hp in settings.kafka_bootstrap.split(",")],
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=settings.usage_events_partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    resources = Resources(settings, loop=app.loop, beacon=app.beacon)
    app.service(resources)  # type: ignore[arg-type]  # faust's stub wants a class

    @app.timer(interval=2.0)
    async def alerts_timer() -> None:
        await _drain_alerts(resources)

    @app.timer(interval=settings.expiry_interval_s)
    async def expiry_timer() -> None:
        await _expire(resources)

    @app.timer(interval=settings.partitions_interval_s)
    async def partitions_timer() -> None:
        await _partitions(resources)

    return app, resources


async def _partitions(resources: Resources) -> None:
    """Create the ledger's monthly partitions ahead (at start, then on a timer)."""
    if resources.pool is None:
        return
    try:
        async with resources.pool.acquire() as conn:
            created = await ensure_partitions(conn)
    except Exception as exc:  # noqa: BLE001 - idempotent; the DEFAULT partitions take rows meanwhile
        log.warning("creating the ledger's partitions ahead failed (%r); will retry", exc)
        return
    if created:
        log.info("created %d ledger partitions ahead", created)


async def _drain_alerts(resources: Resources) -> None:
    if resources.pool is None or resources.producer is None:
        return
    try:
        while await publish_pending_alerts(resources.pool, resources.send_alert) >= 500:
            pass
        metrics.OUTBOX_BACKLOG.set(await count_pending_alerts(resources.pool))
    except Exception as exc:  # noqa: BLE001 - the outbox keeps them; the timer retries
        log.warning("publishing alerts failed (%r); will retry", exc)


async def _expire(resources: Resources) -> None:
    """Expire grants past expires_at (one expiration row each) and mark expired holds."""
    if resources.pool is None:
        return
    try:
        done = await expire_grants(resources.pool, policy=resources.settings.ledger_policy())
        swept = await sweep_expired_holds(resources.pool)
    except Exception as exc:  # noqa: BLE001 - idempotent; the next tick retries
        log.warning("expiring grants and holds failed (%r); will retry", exc)
        return
    if done.grants or swept:
        log.info(
            "expired %d grants (%d micro-credits), %d holds",
            done.grants,
            done.expired_micros,
            swept,
        )


app, resources = create_app(get_settings(WorkerSettings))
