"""Resolving the broker's jars with Maven: a failed try is tried again, and the cache is only
filled by a try that succeeded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy import stack

# A stand-in for mvn: fails its first `fail_first` runs (as a dropped connection to the
# repository does), then writes a jar into -DoutputDirectory.
FAKE_MVN = """#!/bin/sh
count_file="{root}/runs"
runs=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$runs" > "$count_file"
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac
done
mkdir -p "$out"
if [ "$runs" -le {fail_first} ]; then
  touch "$out/half-downloaded.jar"
  echo "Could not transfer artifact: Connection reset" >&2
  exit 1
fi
touch "$out/kafka_2.13-{version}.jar"
"""


def _fake_mvn(root: Path, fail_first: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN.format(root=root, fail_first=fail_first, version=stack.KAFKA_VERSION))
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cache = root / "cache"
    monkeypatch.setattr(stack, "_cache_dir", lambda: cache)
    monkeypatch.setattr(stack, "MAVEN_PAUSE_S", 0.0)
    return cache


def test_a_failed_maven_run_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _fake_mvn(tmp_path, fail_first=2, monkeypatch=monkeypatch)
    said: list[str] = []
    libs = stack.kafka_jars(said.append)
    assert libs == cache / f"kafka-{stack.KAFKA_VERSION}" / "libs"
    # Only the successful try's files: the failed tries' partial downloads were dropped.
    assert sorted(p.name for p in libs.iterdir()) == [f"kafka_2.13-{stack.KAFKA_VERSION}.jar"]
    assert (tmp_path / "runs").read_text().strip() == "3"
    assert sum("try" in line for line in said) == 2


def test_maven_failing_every_try_names_the_cause_and_caches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _fake_mvn(tmp_path, fail_first=99, monkeypatch=monkeypatch)
    with pytest.raises(stack.StackError, match="Connection reset") as failed:
        stack.kafka_jars(lambda _: None)
    assert f"({stack.MAVEN_ATTEMPTS} tries)" in str(failed.value)
    assert (tmp_path / "runs").read_text().strip() == str(stack.MAVEN_ATTEMPTS)
    assert not (cache / f"kafka-{stack.KAFKA_VERSION}" / "libs").exists()
