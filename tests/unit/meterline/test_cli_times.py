"""CLI time options obey the same bounds as the API's timestamps: a year-1 price or a range
Postgres cannot represent is refused by name before anything is read or written."""

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


def _meterline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        env={**env, **ENV, "METERLINE_HOME": str(tmp_path), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["pricing", "import", "{file}", "--effective-from", "0001-01-01T00:00:00+05:00"],
         "--effective-from"),
        (["pricing", "import", "{file}", "--effective-from", "9999-12-31T23:59:59Z"],
         "--effective-from"),
        (["pricing", "list", "--at", "0001-01-01T00:00:00Z"], "--at"),
        (["reconcile", "--from", "0001-01-01T00:00:00+01:00", "--to", "now"], "--from"),
        (["replay", "--topic", "usage.events", "--to", "9999-12-31T23:00:00-05:00"], "--to"),
    ],
)  # fmt: skip
def test_a_time_outside_the_bounds_is_refused_by_name(
    tmp_path: Path, args: list[str], flag: str
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text("{}")
    r = _meterline(tmp_path, *[a.replace("{file}", str(prices)) for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    message = " ".join(r.stderr.split())
    assert flag in message and ("range" in message or "before" in message), message
    assert "Traceback" not in r.stderr
