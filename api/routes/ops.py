"""Operations: liveness, readiness (Postgres and Kafka reachable), Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaClient
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Pool, SettingsDep
from api.errors import Problem

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
        return f"postgres: {type(exc).__name__}"
    return None


async def _check_kafka(bootstrap: str) -> str | None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.bootstrap(), _CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"kafka: {type(exc).__name__}"
    finally:
        await client.close()
    return None


@router.get(
    "/readyz",
    summary="Readiness: Postgres and Kafka reachable",
    responses={503: {"description": "a dependency is unreachable"}},
)
async def readyz(pool: Pool, settings: SettingsDep) -> dict[str, Any]:
    """200 when both Postgres and Kafka answer; 503 problem naming what does not."""
    pg, kafka = await asyncio.gather(_check_postgres(pool), _check_kafka(settings.kafka_bootstrap))
    failures = [f for f in (pg, kafka) if f]
    if failures:
        raise Problem(
            503,
            "not_ready",
            "not ready: " + "; ".join(failures),
            headers={"Retry-After": "5"},
            checks={"postgres": pg or "ok", "kafka": kafka or "ok"},
        )
    return {"status": "ready", "checks": {"postgres": "ok", "kafka": "ok"}}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    """Requests and latency by route, 4xx/5xx, ledger writes (Prometheus text format)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
