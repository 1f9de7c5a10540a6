"""Outside a local stack, a service with no Kafka or Postgres address says which one is missing
and exits non-zero; it never falls back to a local address (DESIGN.md "Faults")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.main import create_app
from api.settings import ApiSettings
from schemas.settings import CommonSettings, MissingAddress

KAFKA = "METERLINE_KAFKA_BOOTSTRAP"
DATABASE = "METERLINE_DATABASE_URL"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    return {**env, "METERLINE_HOME": str(home), **extra}


def _meterline(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        env=_env(home, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


SERVICES = {
    "worker": ["worker"],
    "api": ["api", "--port", "1"],
    "replay": ["replay", "--topic", "usage.events"],
    "reconcile": ["reconcile", "--from", "2025-01-01T00:00:00Z", "--to", "2025-02-01T00:00:00Z"],
    "migrate": ["migrate", "status"],
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_without_addresses_names_them_and_exits(tmp_path: Path, service: str) -> None:
    r = _meterline(tmp_path, *SERVICES[service])
    assert r.returncode != 0
    assert DATABASE in r.stderr, r.stderr
    if service != "migrate":
        assert KAFKA in r.stderr, r.stderr
    assert "meterline dev up" in r.stderr
    assert "127.0.0.1" not in r.stdout + r.stderr  # nothing tried a local address
    assert "Traceback" not in r.stderr


def test_only_the_missing_address_is_named(tmp_path: Path) -> None:
    r = _meterline(tmp_path, *SERVICES["worker"], **{DATABASE: "postgresql://db.example/x"})
    assert r.returncode != 0
    assert KAFKA in r.stderr and DATABASE not in r.stderr, r.stderr


def test_produce_needs_only_kafka(tmp_path: Path) -> None:
    r = _meterline(tmp_path, "produce", "--synthetic", "1")
    assert r.returncode != 0
    assert KAFKA in r.stderr and DATABASE not in r.stderr, r.stderr


def test_a_recorded_local_stack_fills_the_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in (KAFKA, DATABASE):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("METERLINE_HOME", str(tmp_path))
    with pytest.raises(MissingAddress) as exc:
        CommonSettings().require(kafka=True, database=True)
    assert exc.value.missing == ["kafka", "database"]
    (tmp_path / "stack.json").write_text(
        '{"kafka_bootstrap": "10.0.0.5:9092", "database_url": "postgresql://db/x"}'
    )
    s = CommonSettings().require(kafka=True, database=True)
    assert (s.kafka_bootstrap, s.database_url) == ("10.0.0.5:9092", "postgresql://db/x")


def test_the_api_app_refuses_settings_without_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in (KAFKA, DATABASE):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("METERLINE_HOME", str(tmp_path))
    with pytest.raises(MissingAddress, match=KAFKA):
        create_app(ApiSettings())
