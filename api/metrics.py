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


# The methods a route of this API can answer (HEAD and OPTIONS for probes); any other token is
# one label. uvicorn's h11 parser (`meterline api --http h11`) passes any method token through,
# and each new one made new series (a histogram's 14 each), without a key and without end.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method_of(scope: Scope) -> str:
    method = scope.get("method", "")
    return method if method in _METHODS else "OTHER"


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are one label, so a scan of random URLs cannot explode the cardinality.
    return path if isinstance(path, str) else "<unmatched>"


class _RouteMetrics:
    """The labelled series of one (route, method): looked up once, not on every request.

    prometheus_client's labels() validates, builds a key and takes a lock on each call
    (three calls a request before); the series themselves stay the same objects.
    """

    __slots__ = ("by_status", "errors", "latency", "method", "route")

    def __init__(self, route: str, method: str) -> None:
        self.route, self.method = route, method
        self.latency = LATENCY.labels(route, method)
        self.by_status: dict[int, Any] = {}
        self.errors: dict[str, Any] = {}

    def record(self, status: int, seconds: float) -> None:
        self.latency.observe(seconds)
        requests = self.by_status.get(status)
        if requests is None:
            requests = REQUESTS.labels(self.route, self.method, str(status))
            self.by_status[status] = requests
        requests.inc()
        if status >= 400:
            kind = "5xx" if status >= 500 else "4xx"
            errors = self.errors.get(kind)
            if errors is None:
                errors = self.errors[kind] = ERRORS.labels(self.route, kind)
            errors.inc()


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # As bounded as the series it mirrors: route templates (and "<unmatched>") x methods.
        self._series: dict[tuple[str, str], _RouteMetrics] = {}

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
            key = (_route_of(scope), _method_of(scope))
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _RouteMetrics(*key)
            series.record(status, time.perf_counter() - start)
