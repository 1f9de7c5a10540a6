"""Prometheus metrics of the API: requests and latency by route template, ledger writes."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "meterline_api_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
ERRORS = Counter(
    "meterline_api_errors_total",
    "HTTP 4xx and 5xx answers by route and class",
    ["route", "class"],
)
LATENCY = Histogram(
    "meterline_api_request_seconds",
    "HTTP request latency by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LEDGER_WRITES = Counter(
    "meterline_api_ledger_writes_total",
    "Ledger rows written by the API, by type (allocation, deduction, coupon, ...)",
    ["type"],
)


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are one label, so a scan of random URLs cannot explode the cardinality.
    return path if isinstance(path, str) else "<unmatched>"


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_of(scope)
            method = str(scope.get("method", ""))
            LATENCY.labels(route, method).observe(time.perf_counter() - start)
            REQUESTS.labels(route, method, str(status)).inc()
            if status >= 400:
                ERRORS.labels(route, "5xx" if status >= 500 else "4xx").inc()
