"""Kafka brokers of a test module's own (from the stack's jars), for what one plain broker
cannot show: several brokers, TLS and SASL listeners."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy import stack
from tests.integration.tcp_proxy import free_port

__all__ = ["free_port", "kraft_nodes"]


# What every test broker shares: one replica for the internal topics, no automatic topics.
COMMON = [
    "offsets.topic.replication.factor=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "group.initial.rebalance.delay.ms=0",
    "auto.create.topics.enable=false",
    # The log cleaner allocates this buffer at start, 128 MiB by default: in these brokers'
    # 256 MiB heaps that failed now and then (OutOfMemoryError in SkimpyOffsetMap, the broker
    # exits: 1 start in 7 here). 2 MiB, as Kafka's own EmbeddedKafkaCluster gives its brokers.
    "log.cleaner.dedupe.buffer.size=2097152",
]


def _logs(root: Path) -> str:
    """The end of each node's log: `root` is removed when the nodes stop, so a failure must
    carry what the broker said."""
    return "\n".join(
        f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(root.glob("node*.log"))
    )


@contextmanager
def kraft_nodes(
    root: Path, nodes: list[tuple[list[str], int]], format_args: list[str] | None = None
) -> Iterator[None]:
    """Format and start one KRaft process per (properties, listening port), all in one cluster;
    stop them (and remove `root`) at the end. Each node's log.dirs is set here; format_args go
    to `StorageTool format` (SCRAM users: ["--add-scram", "SCRAM-SHA-256=[name=u,password=p]"])."""
    log4j = root / "log4j.properties"
    log4j.write_text((Path(stack.__file__).parent / "kafka" / "log4j.properties").read_text())
    java = stack.kafka_java(stack.kafka_jars(lambda _: None), log4j)
    cluster = stack.new_cluster_id()
    children: list[subprocess.Popen[bytes]] = []
    try:
        for n, (props, _) in enumerate(nodes, start=1):
            path = root / f"node{n}.properties"
            path.write_text("\n".join([*props, *COMMON, f"log.dirs={root / f'data{n}'}", ""]))
            stack.format_storage(java, path, cluster, format_args or [])
            out = open(root / f"node{n}.log", "ab")  # noqa: SIM115 - handed to the child
            children.append(
                subprocess.Popen(
                    stack.broker_command(java, path, heap="256m", min_heap="128m"),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 180
        while not all(stack._port_open(port) for _, port in nodes):
            assert all(c.poll() is None for c in children), f"a broker exited:\n{_logs(root)}"
            assert time.monotonic() < deadline, f"brokers did not listen:\n{_logs(root)}"
            time.sleep(0.5)
        yield
    finally:
        for c in children:
            c.terminate()
        for c in children:
            try:
                c.wait(30)
            except subprocess.TimeoutExpired:
                c.kill()
        shutil.rmtree(root, ignore_errors=True)
