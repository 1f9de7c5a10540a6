"""Operations: liveness, readiness (Postgres and Kafka reachable), Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaClient
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Pool, SettingsDep
from api.errors import RETRY_AFTER_S, Problem
from producers.keeper import PublisherKeeper

router = APIRouter(tags=["operations"])
ROUTER_RESPONSES: dict[int | str, dict[str, Any]] = {}  # no key needed, so no 401/403/429

_CHECK_TIMEOUT_S = 3.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "ok"}


async def _check_postgres(pool: Any) -> str | None:
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), _CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"postgres: {type(exc).__name__}: {exc}".rstrip(": ")
    return None


async def _check_kafka(bootstrap: str, security: dict[str, Any]) -> str | None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **security)
    try:
        await asyncio.wait_for(client.bootstrap(), _CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"kafka: {type(exc).__name__}: {exc}".rstrip(": ")
    finally:
        await client.close()
    return None


@router.get(
    "/readyz",
    summary="Readiness: Postgres and Kafka reachable",
    responses={503: {"description": "a dependency is unreachable"}},
)
async def readyz(request: Request, pool: Pool, settings: SettingsDep) -> dict[str, Any]:
    """200 when Postgres and Kafka answer and the usage publisher is connected; otherwise a
    503 problem (Retry-After) whose `checks` name each dependency that is down and why."""
    pg, kafka = await asyncio.gather(
        _check_postgres(pool), _check_kafka(settings.kafka_bootstrap, settings.kafka_options())
    )
    keeper: PublisherKeeper = request.app.state.publisher_keeper
    publisher = None if keeper.current else f"publisher: not connected ({keeper.last_error})"
    checks = {"postgres": pg, "kafka": kafka, "publisher": publisher}
    failures = [f for f in checks.values() if f]
    if failures:
        raise Problem(
            503,
            "not_ready",
            "not ready: " + "; ".join(failures),
            headers={"Retry-After": str(RETRY_AFTER_S)},
            checks={name: failure or "ok" for name, failure in checks.items()},
            down=[name for name, failure in checks.items() if failure],
        )
    return {"status": "ready", "checks": {name: "ok" for name in checks}}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    """Requests and latency by route, 4xx/5xx, ledger writes (Prometheus text format)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
