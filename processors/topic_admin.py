"""Create meterline's topics when missing, with the configured partition counts.

The worker does it at start (a broker that auto-creates topics would give usage.events one
partition, and partitions cannot be re-keyed later without moving accounts between them);
`meterline dev up` does it for the local stack.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.settings import CommonSettings


def wanted_topics(settings: CommonSettings) -> dict[str, int]:
    """Topic name → partitions for usage.events, usage.dlq and credit.alerts."""
    return {
        settings.topic_usage_events: settings.usage_events_partitions,
        settings.topic_usage_dlq: 3,
        settings.topic_credit_alerts: 3,
    }


async def ensure_topics(
    bootstrap: str, topics: dict[str, int], *, timeout_s: float = 60.0, replication: int = 1
) -> list[str]:
    """Create the missing topics; returns the names created. Retries until the broker answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(name, num_partitions=n, replication_factor=replication)
                for name, n in topics.items()
                if name not in existing
            ]
            if wanted:
                try:
                    await admin.create_topics(wanted)
                except TopicAlreadyExistsError:
                    pass  # another process created them meanwhile
            return [t.name for t in wanted]
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
