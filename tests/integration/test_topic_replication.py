"""Topics the worker creates survive the loss of a broker: 3 replicas on a real 3-broker cluster.

The worker creates its topics at start. On a production cluster a topic with one replica
loses every event on the broker that goes away, acknowledged or not; so new topics get 3
replicas (min.insync.replicas=2) where there are 3 brokers, one per broker below that, or what
METERLINE_TOPIC_REPLICATION_FACTOR says — and a refusal by the broker is an error, never a
topic taken as created.

The cluster is three real KRaft brokers started from the stack's jars (tests/integration/
brokers.py; one of them the controller), on ports of their own, for this module only.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processors.topic_admin import TopicSetupError, ensure_topics
from tests.integration.brokers import free_port, kraft_nodes


def _node(node: int, port: int, controller: int) -> list[str]:
    listeners = f"PLAINTEXT://127.0.0.1:{port}"
    if node == 1:
        listeners += f",CONTROLLER://127.0.0.1:{controller}"
    return [
        f"process.roles={'broker,controller' if node == 1 else 'broker'}",
        f"node.id={node}",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners={listeners}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
    ]


@pytest.fixture(scope="module")
def three_brokers() -> Iterator[str]:
    controller = free_port()
    ports = [free_port() for _ in range(3)]
    nodes = [(_node(n, port, controller), port) for n, port in enumerate(ports, start=1)]
    with kraft_nodes(Path(tempfile.mkdtemp(prefix="meterline-3brokers-")), nodes):
        yield ",".join(f"127.0.0.1:{p}" for p in ports)


@pytest.fixture
async def admin(three_brokers: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=three_brokers)
    await client.start()
    deadline = time.monotonic() + 120
    # The brokers listen before they have all registered with the controller.
    while len((await client.describe_cluster())["brokers"]) < 3:
        assert time.monotonic() < deadline, "3 brokers never registered"
        await client.close()
        await asyncio.sleep(1)
        client = AIOKafkaAdminClient(bootstrap_servers=three_brokers)
        await client.start()
    yield client
    await client.close()


async def _replicas(admin: AIOKafkaAdminClient, topic: str) -> set[int]:
    """The replica counts of the topic's partitions, once the brokers' metadata has them."""
    deadline = time.monotonic() + 30
    while True:
        (described,) = await admin.describe_topics([topic])
        if described["partitions"] or time.monotonic() > deadline:
            return {len(p["replicas"]) for p in described["partitions"]}
        await asyncio.sleep(0.2)


async def _min_isr(admin: AIOKafkaAdminClient, topic: str) -> str | None:
    """The topic's min.insync.replicas (its own, or the broker's default of 1), once the
    broker asked knows the new topic (configs reach the brokers a moment after creation)."""
    deadline = time.monotonic() + 30
    while True:
        (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (resource,) = resp.resources
        configs = {entry[0]: entry[1] for entry in resource[4]}
        if "min.insync.replicas" in configs or time.monotonic() > deadline:
            return configs.get("min.insync.replicas")
        await asyncio.sleep(0.2)


async def test_new_topics_get_three_replicas_and_two_in_sync(
    three_brokers: str, admin: AIOKafkaAdminClient
) -> None:
    name = f"usage.events.{uuid.uuid4().hex[:8]}"
    created = await ensure_topics(three_brokers, {name: 12, f"{name}.dlq": 3}, timeout_s=60)

    assert sorted(created) == sorted([name, f"{name}.dlq"])
    assert await _replicas(admin, name) == {3}
    assert await _replicas(admin, f"{name}.dlq") == {3}
    assert await _min_isr(admin, name) == "2"


async def test_the_setting_chooses_the_replicas(
    three_brokers: str, admin: AIOKafkaAdminClient
) -> None:
    name = f"usage.events.{uuid.uuid4().hex[:8]}"
    await ensure_topics(three_brokers, {name: 3}, timeout_s=60, replication=2)

    assert await _replicas(admin, name) == {2}
    assert await _min_isr(admin, name) == "1"


async def test_more_replicas_than_brokers_is_an_error_naming_the_setting(
    three_brokers: str, admin: AIOKafkaAdminClient
) -> None:
    name = f"usage.events.{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicSetupError, match="METERLINE_TOPIC_REPLICATION_FACTOR is 4"):
        await ensure_topics(three_brokers, {name: 3}, timeout_s=60, replication=4)

    assert name not in await admin.list_topics()


async def test_a_topic_the_broker_refuses_is_an_error_not_a_created_topic(
    three_brokers: str,
) -> None:
    # 250 characters: the broker's limit is 249. The answer carries the refusal as an error
    # code; taking it for a created topic would start a worker on a topic that is not there.
    name = "u" * 250
    with pytest.raises(TopicSetupError, match="Kafka refused to create u+"):
        await ensure_topics(three_brokers, {name: 1}, timeout_s=60)


async def test_an_existing_topic_with_one_replica_is_named_in_a_warning(
    three_brokers: str, admin: AIOKafkaAdminClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"usage.events.{uuid.uuid4().hex[:8]}"
    await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    assert await _replicas(admin, name) == {1}  # and the brokers' metadata has it

    with caplog.at_level(logging.WARNING, logger="processors.topic_admin"):
        created = await ensure_topics(three_brokers, {name: 2}, timeout_s=60)

    assert created == []
    warned = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert warned, caplog.text
    assert "has 1 replica(s) on a cluster where new topics get 3" in warned[0]
