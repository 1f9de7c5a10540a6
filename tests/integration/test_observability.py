"""The operator's view: every metric the Grafana dashboard and the alert rules name is exported
by a running worker or API, and the signals they watch show what really happened."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from schemas.settings import CommonSettings
from tests.integration.api_server import ApiServer, free_port
from tests.integration.worker import (
    USAGE_ROWS,
    Worker,
    add_test_price,
    event,
    publish_raw,
    publish_usage,
    wait_for,
)

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
METRIC = re.compile(r"\bmeterline_[a-z0-9_]+\b")
# The signals the operator's view must cover, each by the metric that carries it.
SIGNALS = {
    "meterline_events_metered_total",
    "meterline_consumer_lag",
    "meterline_dlq_records_total",
    "meterline_partition_failing_seconds",
    "meterline_outbox_backlog",
    "meterline_api_request_seconds_bucket",
    "meterline_api_requests_total",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def dashboard_exprs() -> list[str]:
    board = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    return [t["expr"] for p in panels for t in p["targets"]]


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((OBSERVABILITY / "prometheus-alerts.yml").read_text())
    found = [r for g in rules["groups"] for r in g["rules"]]
    for r in found:
        assert r["alert"] and r["labels"]["severity"] in {"warning", "critical"}, r
        assert r["annotations"]["summary"] and r["annotations"]["description"], r
    return [r["expr"] for r in found]


def named(exprs: list[str]) -> set[str]:
    names = set()
    for expr in exprs:
        found = METRIC.findall(expr)
        assert found, f"an expression names no meterline metric: {expr}"
        names.update(found)
    return names


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def exported(name: str, found: dict[str, Any]) -> bool:
    """Whether a series name used in PromQL belongs to an exported family of the right type."""
    family = found.get(name)
    if family is not None and family.type in ("gauge", "untyped"):
        return True
    for kind, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            if name.endswith(suffix):
                base = found.get(name.removesuffix(suffix))
                if base is not None and base.type == kind:
                    return True
    return False


def value(found: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    for s in found[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample}{labels} in {found[family].samples}")


def test_the_dashboard_and_the_rules_cover_every_signal() -> None:
    assert SIGNALS <= named(dashboard_exprs())
    assert SIGNALS <= named(rule_exprs())


async def test_every_metric_named_is_exported_by_a_running_worker_or_api(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    port = free_port()
    worker = Worker(test_settings, METERLINE_WORKER_METRICS_PORT=str(port)).start()
    api = ApiServer(test_settings)
    try:
        await publish_usage(
            test_settings,
            [event(f"obs-{i}", f"acct-{i % 2}", input_tokens=1000) for i in range(3)],
        )
        await publish_raw(
            test_settings.kafka_bootstrap, test_settings.topic_usage_events, [(b"k", b"{not json")]
        )
        await wait_for(db, USAGE_ROWS, 3, worker=worker)
        await api.start()
        async with httpx.AsyncClient(base_url=api.base_url) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/api/v1/credits/balance")).status_code == 401
            api_metrics = families((await client.get("/metrics")).text)
        async with httpx.AsyncClient() as client:
            # The dead letter is counted once its batch is done; the usage rows may come first.
            for _ in range(40):
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                worker_metrics = families(text)
                if 'reason="invalid_json"' in text:
                    break
                await asyncio.sleep(0.25)
    finally:
        api.stop()
        worker.stop()

    found = {**worker_metrics, **api_metrics}
    names = named(dashboard_exprs()) | named(rule_exprs())
    missing = sorted(n for n in names if not exported(n, found))
    assert not missing, f"named by the dashboard or the rules but not exported: {missing}"

    # And they say what happened: three events metered, one dead letter, a 401 answered.
    assert value(found, "meterline_events_metered", "meterline_events_metered_total") == 3
    assert (
        value(
            found,
            "meterline_dlq_records",
            "meterline_dlq_records_total",
            reason="invalid_json",
        )
        == 1
    )
    lags = [s for s in found["meterline_consumer_lag"].samples]
    assert lags and all(s.value == 0 for s in lags), lags
    assert (
        value(
            found,
            "meterline_api_requests",
            "meterline_api_requests_total",
            route="/api/v1/credits/balance",
            status="401",
        )
        == 1
    )
    assert value(found, "meterline_api_request_seconds", "meterline_api_request_seconds_count") >= 2
