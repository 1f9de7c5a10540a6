"""The local stack formats a KRaft node's storage with a cluster id it makes; one uuid in 64
encodes to an id that starts with "-", which once made `StorageTool format` fail (and with it
`meterline dev up` and the 3-broker tests) about once in 64 starts."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from deploy import stack

# 0xF8 is 111110.. in binary; base64url's 62nd symbol is "-".
DASH_FIRST = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([DASH_FIRST, DASH_FIRST, uuid.UUID(int=1 << 100)])
    monkeypatch.setattr(stack.uuid, "uuid4", lambda: next(draws))
    cluster_id = stack.new_cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22


def _props(tmp_path: Path) -> Path:
    props = tmp_path / "node.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                "controller.quorum.voters=1@127.0.0.1:1",
                "listeners=PLAINTEXT://127.0.0.1:2,CONTROLLER://127.0.0.1:1",
                "controller.listener.names=CONTROLLER",
                f"log.dirs={tmp_path / 'data'}",
                "",
            ]
        )
    )
    return props


@pytest.mark.parametrize("cluster_id", ["-Fgk_H0wRHew2NI9N9NcJQ", None])
def test_storage_format_takes_any_id_the_stack_can_make(
    tmp_path: Path, cluster_id: str | None
) -> None:
    """The real StorageTool, with the id from the failed CI run and with a fresh one."""
    log4j = tmp_path / "log4j.properties"
    log4j.write_text((Path(stack.__file__).parent / "kafka" / "log4j.properties").read_text())
    java = stack.kafka_java(stack.kafka_jars(lambda _: None), log4j)
    stack.format_storage(java, _props(tmp_path), cluster_id or stack.new_cluster_id())
    meta = (tmp_path / "data" / "meta.properties").read_text()
    assert "cluster.id=" in meta
    if cluster_id:
        assert f"cluster.id={cluster_id}" in meta
