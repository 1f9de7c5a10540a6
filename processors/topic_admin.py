"""Create meterline's topics when missing, with the configured partition counts.

The worker does it at start (a broker that auto-creates topics would give usage.events one
partition, and partitions cannot be re-keyed later without moving accounts between them);
`meterline dev up` does it for the local stack. New topics get 3 replicas on a cluster of 3
brokers or more (one broker lost loses no event), else one per broker, unless
METERLINE_TOPIC_REPLICATION_FACTOR says otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.settings import CommonSettings, kafka_options

log = logging.getLogger(__name__)


def wanted_topics(settings: CommonSettings) -> dict[str, int]:
    """Topic name → partitions for usage.events, usage.dlq and credit.alerts."""
    return {
        settings.topic_usage_events: settings.usage_events_partitions,
        settings.topic_usage_dlq: 3,
        settings.topic_credit_alerts: 3,
    }


class TopicSetupError(Exception):
    """Topics cannot be created as asked (a replication factor past the brokers, a name or
    setting the broker refuses); retrying cannot fix it."""


# Replicas a topic gets, unless METERLINE_TOPIC_REPLICATION_FACTOR says: one broker lost then
# loses no acknowledged event (producers publish with acks=all).
_DEFAULT_REPLICAS = 3
_ALREADY_EXISTS = 36  # Kafka's TOPIC_ALREADY_EXISTS error code


def replication_for(brokers: int, wanted: int | None) -> tuple[int, dict[str, str]]:
    """The replication factor and topic configs of new topics on a cluster of `brokers`.

    `wanted` (the setting) wins when the cluster can hold it; unset, 3 replicas where there are
    3 brokers or more, else one per broker. With 3 replicas or more, min.insync.replicas is 2:
    an acks=all publish (HTTP ingest's 202, the DLQ) is then on two brokers before it counts.
    """
    replicas = wanted if wanted is not None else min(_DEFAULT_REPLICAS, brokers)
    if replicas > brokers:
        raise TopicSetupError(
            f"METERLINE_TOPIC_REPLICATION_FACTOR is {replicas}, but the Kafka cluster has "
            f"{brokers} broker(s): a topic cannot have more replicas than brokers"
        )
    return replicas, ({"min.insync.replicas": "2"} if replicas >= 3 else {})


def _answer(response: object) -> tuple[list[str], set[str]]:
    """A CreateTopics answer: what the broker refused (name: reason), and the names that
    already existed (created meanwhile by another process: no refusal, and not created here)."""
    refused, existed = [], set()
    for err in getattr(response, "topic_errors", ()):
        name, code = err[0], err[1]
        if code == _ALREADY_EXISTS:
            existed.add(name)
        elif code != 0:
            message = err[2] if len(err) > 2 and err[2] else f"error code {code}"
            refused.append(f"{name}: {message}")
    return refused, existed


async def _warn_few_replicas(admin: AIOKafkaAdminClient, names: list[str], wanted: int) -> None:
    """Log each existing topic with fewer replicas than new ones would get (one created by an
    older worker on a single-broker default, say): losing one broker can lose its events."""
    for topic in await admin.describe_topics(names):
        have = min((len(p["replicas"]) for p in topic.get("partitions", ())), default=wanted)
        if have < wanted:
            log.warning(
                "topic %s has %d replica(s) on a cluster where new topics get %d: losing one "
                "broker can lose its events; raise its replication (kafka-reassign-partitions)",
                topic["topic"],
                have,
                wanted,
            )


async def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    *,
    timeout_s: float = 60.0,
    replication: int | None = None,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the missing topics; returns the names created. Retries until the broker answers.

    Replicas as replication_for says for the cluster's broker count; TopicSetupError when the
    broker refuses a topic (its error is never taken for a created topic). `security`: the
    Kafka security options (schemas.settings.kafka_options; None: this process's settings).
    """
    options = kafka_options() if security is None else security
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=10000, **options
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = {name: n for name, n in topics.items() if name not in existing}
            brokers = len((await admin.describe_cluster())["brokers"])
            present = [name for name in topics if name in existing]
            target = min(_DEFAULT_REPLICAS if replication is None else replication, brokers)
            if present and target > 1:
                await _warn_few_replicas(admin, present, target)
            if missing:
                replicas, configs = replication_for(brokers, replication)
                wanted = [
                    NewTopic(
                        name, num_partitions=n, replication_factor=replicas, topic_configs=configs
                    )
                    for name, n in missing.items()
                ]
                try:
                    refused, existed = _answer(await admin.create_topics(wanted))
                except TopicAlreadyExistsError:
                    refused, existed = [], set(missing)  # another process created them meanwhile
                if refused:
                    raise TopicSetupError("Kafka refused to create " + "; ".join(refused))
                return [name for name in missing if name not in existed]
            return []
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
