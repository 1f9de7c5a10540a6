"""Kafka brokers of a test module's own (from the stack's jars), for what one plain broker
cannot show: several brokers, TLS and SASL listeners."""

from __future__ import annotations

import base64
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy import stack


def free_port() -> int:
    """A free port below the ephemeral range, where outgoing connections take theirs."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


# What every test broker shares: one replica for the internal topics, no automatic topics.
COMMON = [
    "offsets.topic.replication.factor=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "group.initial.rebalance.delay.ms=0",
    "auto.create.topics.enable=false",
]


@contextmanager
def kraft_nodes(
    root: Path, nodes: list[tuple[list[str], int]], format_args: list[str] | None = None
) -> Iterator[None]:
    """Format and start one KRaft process per (properties, listening port), all in one cluster;
    stop them (and remove `root`) at the end. Each node's log.dirs is set here; format_args go
    to `StorageTool format` (SCRAM users: ["--add-scram", "SCRAM-SHA-256=[name=u,password=p]"])."""
    libs = stack.kafka_jars(lambda _: None)
    java = shutil.which("java")
    assert java, "a JDK is needed for Kafka"
    cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    log4j = root / "log4j.properties"
    log4j.write_text((Path(stack.__file__).parent / "kafka" / "log4j.properties").read_text())
    base = [java, "-cp", f"{libs}/*", f"-Dlog4j.configuration=file:{log4j}"]
    children: list[subprocess.Popen[bytes]] = []
    try:
        for n, (props, _) in enumerate(nodes, start=1):
            path = root / f"node{n}.properties"
            path.write_text("\n".join([*props, *COMMON, f"log.dirs={root / f'data{n}'}", ""]))
            subprocess.run(
                [
                    *base,
                    *("kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(path)),
                    *(format_args or []),
                ],
                check=True,
                capture_output=True,
            )
            out = open(root / f"node{n}.log", "ab")  # noqa: SIM115 - handed to the child
            children.append(
                subprocess.Popen(
                    [java, "-Xmx256m", "-Xms128m", *base[1:], "kafka.Kafka", str(path)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 180
        while not all(stack._port_open(port) for _, port in nodes):
            assert all(c.poll() is None for c in children), f"a broker exited; see {root}"
            assert time.monotonic() < deadline, f"brokers did not listen; see {root}"
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
