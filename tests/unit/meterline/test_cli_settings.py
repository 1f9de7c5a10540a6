"""A METERLINE_* variable whose value breaks its rule stops a service by name, exit 2, before
it connects to anything (no traceback to read through)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Addresses no one listens at: the refusal must come before any connection is tried.
ENV = {
    "METERLINE_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    "METERLINE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
}


@pytest.mark.parametrize(
    ("command", "variable", "value", "rule"),
    [
        ("worker", "METERLINE_WORKER_LANES", "0", "greater than or equal to 1"),
        ("worker", "METERLINE_WORKER_LANES", "two", "valid integer"),
        ("worker", "METERLINE_BATCH_MAX", "99999999999999999999", "less than or equal to"),
        ("worker", "METERLINE_PARTITIONS_INTERVAL_S", "-1", "greater than 0"),
        ("api", "METERLINE_API_KEY_CACHE_SECONDS", "soon", "valid number"),
    ],
)
def test_a_setting_that_breaks_its_rule_is_named(
    tmp_path: Path, command: str, variable: str, value: str, rule: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    r = subprocess.run(
        [sys.executable, "-m", "meterline", command],
        env={**env, **ENV, variable: value, "METERLINE_HOME": str(tmp_path), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    message = " ".join(r.stderr.split())
    assert r.returncode == 2, r.stdout + r.stderr
    assert variable in message and rule in message and repr(value) in message, message
    assert "Traceback" not in r.stderr, r.stderr
