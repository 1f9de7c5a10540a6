"""deploy/compose.yml cannot run on a machine without Docker; keep it consistent all the same."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.main import get_command

from meterline.cli import app

COMPOSE = Path(__file__).resolve().parents[3] / "deploy" / "compose.yml"


def test_compose_services_depend_only_on_services_that_exist() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert {"kafka", "postgres", "migrate", "worker", "api"} <= set(services)
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond["condition"] in {
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            }
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"


def test_compose_runs_commands_the_cli_has_against_kafka_4_0() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    cli = get_command(app)
    for name in ("migrate", "worker", "api"):
        command = doc["services"][name]["command"][0]
        assert command in cli.commands, f"compose runs `meterline {command}`, which does not exist"  # type: ignore[attr-defined]
        env = doc["services"][name]["environment"]
        assert env["METERLINE_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["METERLINE_DATABASE_URL"].startswith("postgresql://")
    assert doc["services"]["kafka"]["image"].startswith("apache/kafka:4.0.")
