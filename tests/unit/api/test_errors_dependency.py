"""A request that meets Postgres going away answers 503 with Retry-After, never a 500."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.errors import install_error_handlers


def _app(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    return app


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        # What a query raised in the API while `pg_ctl restart -m fast` shut the server down
        # (tests/integration/test_ingest_faults.py); it answered 500 before.
        asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
    ],
)
async def test_postgres_going_away_is_a_503_with_retry_after(exc: Exception) -> None:
    transport = httpx.ASGITransport(app=_app(exc), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/boom")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "5"
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "database_unavailable"
    assert body["dependency"] == "postgres"
    assert type(exc).__name__ in body["detail"]


async def test_a_bug_stays_a_500() -> None:
    transport = httpx.ASGITransport(app=_app(RuntimeError("a bug")), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/boom")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
