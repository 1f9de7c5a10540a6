"""deploy/kubernetes cannot be applied here (no cluster); what it asks of meterline is checked.

Each pod's command line is parsed by the real CLI, each METERLINE_* variable must be a setting
a service reads, the probes must hit routes the API serves on the port it is told to bind, and
the worker's grace period must cover its own shutdown timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.main import get_command

from api.main import create_app
from api.settings import ApiSettings
from meterline.cli import app
from processors.settings import WorkerSettings
from schemas.settings import setting_names

KUBE = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"


def _objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((KUBE / name).read_text()) if d)
    return docs


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def _containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for obj in _objects():
        spec = _pod_spec(obj)
        if spec is not None:
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                out.append((f"{obj['metadata']['name']}/{c['name']}", c))
    return out


def _by_name(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def _parse(args: list[str]) -> Any:
    """Resolve `meterline ARGS` down to its command's context, as the CLI would (options
    parsed and checked), without running it. Typer carries its own click, so by duck type."""
    command = get_command(app)
    ctx = command.make_context("meterline", list(args))
    while hasattr(command, "resolve_command"):
        pending = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = command.resolve_command(ctx, pending)
        assert sub is not None, f"meterline has no command {name!r}"
        command = sub
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx


def _setting_names() -> set[str]:
    return setting_names((ApiSettings, WorkerSettings))


def test_every_manifest_file_is_listed_and_every_object_has_a_name() -> None:
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    kinds = {(o["kind"], o["metadata"]["name"]) for o in _objects()}
    assert ("Deployment", "meterline-api") in kinds
    assert ("Deployment", "meterline-worker") in kinds
    assert ("CronJob", "meterline-grant-monthly") in kinds


def test_every_container_runs_a_command_line_the_cli_accepts() -> None:
    commands = {}
    for where, container in _containers():
        assert container["image"] == "meterline", f"{where} runs another image"
        line = " ".join(container["args"])
        try:
            ctx = _parse(container["args"])
        except Exception as exc:  # click's usage errors, from typer's own copy of click
            message = exc.format_message() if hasattr(exc, "format_message") else exc
            pytest.fail(f"{where}: `meterline {line}`: {message}")
        commands[where] = ctx.command_path
    assert commands["meterline-api/migrate"] == "meterline migrate up"
    assert commands["meterline-worker/migrate"] == "meterline migrate up"
    assert commands["meterline-api/api"] == "meterline api"
    assert commands["meterline-worker/worker"] == "meterline worker"
    assert commands["meterline-grant-monthly/grant-monthly"] == "meterline admin grant-monthly"


def test_every_variable_is_a_setting_and_the_addresses_are_given() -> None:
    # A misspelt variable is ignored by the settings (extra="ignore"): caught here instead.
    config = _by_name("ConfigMap", "meterline")["data"]
    secret = _by_name("Secret", "meterline")["stringData"]
    known = _setting_names()
    for name in [*config, *secret]:
        assert name in known, f"{name} is not a setting any meterline service reads"
    assert config["METERLINE_KAFKA_BOOTSTRAP"]
    assert secret["METERLINE_DATABASE_URL"].startswith("postgresql://")
    for where, container in _containers():
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"meterline"}, f"{where} does not read the config and the secret"
        for var in container.get("env", []):
            assert var["name"] in known, f"{where}: {var['name']} is not a setting"


def test_the_api_probes_routes_it_serves_on_the_port_it_binds() -> None:
    (container,) = _by_name("Deployment", "meterline-api")["spec"]["template"]["spec"]["containers"]
    port = int(_parse(container["args"]).params["port"])
    (named,) = container["ports"]
    assert named["containerPort"] == port
    # Without its lifespan the app has no pool and no publisher: a probe that answers 200 here
    # needs neither, as a liveness probe must not.
    client = TestClient(create_app(ApiSettings()))
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == named["name"]
        answer = client.get(get["path"])
        assert answer.status_code == 200, f"{probe} {get['path']}: {answer.status_code}"


def test_the_worker_serves_metrics_where_it_is_scraped_and_has_time_to_stop() -> None:
    worker = _by_name("Deployment", "meterline-worker")["spec"]["template"]
    config = _by_name("ConfigMap", "meterline")["data"]
    (container,) = worker["spec"]["containers"]
    (metrics,) = container["ports"]
    assert int(config["METERLINE_WORKER_METRICS_PORT"]) == metrics["containerPort"]
    assert worker["metadata"]["annotations"]["prometheus.io/port"] == str(metrics["containerPort"])
    # Bound to the pod's interfaces: the default 127.0.0.1 cannot be scraped from outside.
    assert config["METERLINE_WORKER_METRICS_HOST"] == "0.0.0.0"
    shutdown = WorkerSettings(kafka_bootstrap="k:1", database_url="-").shutdown_timeout_s
    assert worker["spec"]["terminationGracePeriodSeconds"] >= shutdown + 15


def test_pods_run_as_the_image_user_without_root() -> None:
    dockerfile = (KUBE.parent / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    for obj in _objects():
        spec = _pod_spec(obj)
        if spec is None:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
