"""The FastAPI app factory: lifespan resources, error handlers, metrics, every route module."""

from __future__ import annotations

import gc
import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

import api.routes
from api.catalog_cache import CatalogCache
from api.deps import make_rate_limiter
from api.errors import PROBLEM_MEDIA_TYPE, install_error_handlers
from api.key_cache import KeyCache
from api.metrics import MetricsMiddleware
from api.request_guard import RequestGuardMiddleware
from api.settings import ApiSettings
from producers.keeper import PublisherKeeper
from producers.publisher import UsagePublisher
from schemas.api_common import ProblemOut
from schemas.settings import get_settings

log = logging.getLogger("meterline.api")

# Documented on every route: the answers any authenticated route can give.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ProblemOut, "description": "missing, malformed, unknown or revoked API key"},
    403: {"model": ProblemOut, "description": "the key may not use this route or account"},
    422: {"model": ProblemOut, "description": "invalid input: each field and the rule it broke"},
    429: {
        "model": ProblemOut,
        "description": "rate limit of the key's tier exceeded, or too many lookups of "
        "unknown keys from the client's address",
    },
}


# Matched first: the routes a proxy calls before every LLM call. Starlette tries routes in
# order, and FastAPI matches each included router by trying every route in it (twice for the
# one it picks), so a route in the sixteenth router paid ~80 us of regex matching per request.
# No two routers share a path, so the order changes nothing else; OpenAPI keeps module order.
MATCHED_FIRST = ("credits", "authorize", "reservations")

# The collector's first threshold: a collection of the youngest generation once this many
# more container objects were allocated than freed. At Python's 700 one request's own
# transient objects crossed it: under `meterline bench api` at 1,200 balance reads/s the API
# ran ~63 young collections a second, promoting the objects of the requests in flight to the
# older generations and so running ~0.5 full (generation 2) collections a second, 4-18 ms
# each: 1.7 s of collection in 45 s. The hot routes make almost no cyclic garbage (what they
# allocate is freed by reference counting), so at 20,000 the same load ran no collection at
# all in 45 s, and one when it comes scans at most ~20,000 young objects (~0.5 ms).
GC_GEN0_THRESHOLD = 20_000


def route_modules() -> list[Any]:
    """Every module of api.routes that defines a module-level `router`, by name."""
    found = []
    for info in sorted(pkgutil.iter_modules(api.routes.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"api.routes.{info.name}")
        if isinstance(getattr(module, "router", None), APIRouter):
            found.append(module)
    return found


def _lifespan(settings: ApiSettings) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await _create_pool(settings)
        keeper = PublisherKeeper(
            lambda: UsagePublisher(
                settings.kafka_bootstrap,
                settings.topic_usage_events,
                client_id="meterline-api",
                request_timeout_ms=int(settings.kafka_publish_timeout_seconds * 1000),
                security=settings.kafka_options(),
            ),
            connect_timeout=settings.kafka_publish_timeout_seconds,
        )
        # The API serves balances and writes without Kafka: HTTP ingest answers 503 (with
        # Retry-After) until the keeper has connected, which it keeps trying in the background.
        await keeper.start(wait=settings.kafka_publish_timeout_seconds)
        if keeper.current is None:
            log.error("usage publisher not connected yet (%s); retrying", keeper.last_error)
        app.state.pool = pool
        app.state.publisher_keeper = keeper
        app.state.limiter = make_rate_limiter(settings.rate_limit_storage)
        # Everything built so far (routes, models, OpenAPI pieces) lives as long as the app:
        # out of the collector's sight, a full collection no longer walks it mid-request.
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_GEN0_THRESHOLD, *thresholds[1:])
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            try:
                await keeper.close()
            except Exception:  # noqa: BLE001 - shutting down; the pool still closes
                log.exception("closing the usage publisher failed")
            await pool.close()

    return lifespan


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (a transaction left open is
    rolled back, listeners dropped).

    asyncpg's default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release: a round trip per request, for session state the API never creates (it
    sets no session setting, its cursors live in transactions, it takes no session advisory
    lock and listens to nothing). A route that starts to must reset what it set itself.
    """


async def _create_pool(settings: ApiSettings) -> asyncpg.Pool:
    """The asyncpg pool; when Postgres is away at start, an empty one that connects later.

    Every connection has bounded connect and command timeouts, so a request waiting on a
    database that does not answer ends as a 503, never a hang. The pool replaces connections
    a restart of Postgres broke (see api.errors: a lost connection expires the others).
    """
    options: dict[str, Any] = {
        "max_size": settings.pg_pool_max,
        "timeout": settings.pg_connect_timeout_seconds,
        "command_timeout": settings.pg_command_timeout_seconds,
        "reset": _keep_session,
        "acquire_timeout": settings.pg_acquire_timeout_seconds,
    }
    try:
        return await BoundedPool.create(
            settings.database_url, min_size=settings.pg_pool_min, **options
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        log.error(
            "Postgres not reachable at start (%s: %s); serving 503 until it is",
            type(exc).__name__,
            exc,
        )
        return await BoundedPool.create(settings.database_url, min_size=0, **options)


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg has no type stubs
    """An asyncpg pool whose connections are waited for at most `acquire_timeout` seconds.

    asyncpg's acquire waits without end by default, and every pool.fetch* and pool.acquire()
    goes through it: with each connection held (slow queries, rows locked by a long writer),
    every other request queued until one came back. A wait past the bound raises TimeoutError,
    which answers 503 with Retry-After like the other ways the database can be away.
    """

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        if timeout is None:
            # A free connection is taken at once: asyncpg bounds a wait with asyncio.wait_for,
            # a task per acquire (13 us of a 210 us pool.fetchval here), so only a wait pays it.
            # Nothing runs between this check and the take (`async with` / `await` follow it).
            free = getattr(self, "_queue", None)
            timeout = None if free is not None and not free.empty() else self._acquire_timeout
        return super().acquire(timeout=timeout)

    @classmethod
    def create(cls, dsn: str, *, min_size: int, max_size: int, **options: Any) -> BoundedPool:
        """As asyncpg.create_pool (its defaults), with acquire_timeout among the options;
        await the result to open it."""
        return cls(
            dsn,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            min_size=min_size,
            max_size=max_size,
            max_queries=50000,
            max_inactive_connection_lifetime=300.0,
            loop=None,
            **options,
        )


def _problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    # Error answers are application/problem+json; FastAPI documents models as application/json.
    for path in schema.get("paths", {}).values():
        for op in path.values():
            for status, response in op.get("responses", {}).items():
                content = response.get("content")
                if str(status)[:1] in "45" and content and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return schema


def _in_module_order(routes: list[BaseRoute], modules: list[Any]) -> list[BaseRoute]:
    """The app's routes with the included routers in module-name order (the OpenAPI order)."""
    rank = {id(m.router): i for i, m in enumerate(modules)}
    return sorted(routes, key=lambda r: rank.get(id(getattr(r, "original_router", None)), -1))


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The meterline API; `settings` default to the environment (METERLINE_*)."""
    settings = (settings or get_settings(ApiSettings)).require(kafka=True, database=True)
    app = FastAPI(
        title="meterline",
        summary="Usage metering and prepaid credits for LLM traffic",
        description=(
            "Bearer API keys (`Authorization: Bearer ml_...`) with scope `user` (its own "
            "account) or `admin` (any account, admin routes). Amounts are decimal strings with "
            "up to 6 places. Errors are `application/problem+json` (RFC 9457)."
        ),
        version="1",
        lifespan=_lifespan(settings),
        docs_url="/docs",
    )
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.api_key_cache_seconds)
    app.state.catalog_cache = CatalogCache()
    install_error_handlers(app)
    app.add_middleware(RequestGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    modules = route_modules()
    hot = sorted(
        (m for m in modules if m.__name__.rsplit(".", 1)[1] in MATCHED_FIRST),
        key=lambda m: MATCHED_FIRST.index(m.__name__.rsplit(".", 1)[1]),
    )
    for module in hot + [m for m in modules if m not in hot]:
        # A module may document other shared answers (ops routes need no key: ROUTER_RESPONSES={}).
        app.include_router(
            module.router, responses=getattr(module, "ROUTER_RESPONSES", PROBLEM_RESPONSES)
        )
    documented = _in_module_order(app.routes, modules)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media_types(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=documented,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
