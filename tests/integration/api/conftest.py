"""Fixtures for the API tests: the app on the test database and topics, a client, real keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI

from api.main import create_app
from api.settings import ApiSettings
from processors.api_keys import create_api_key
from processors.ledger import ensure_account
from schemas.settings import CommonSettings

UserKeyFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def api_settings(test_settings: CommonSettings, database_url: str) -> ApiSettings:
    """ApiSettings on the test database and this test's topics, with a fresh Fernet key."""
    return ApiSettings(
        **test_settings.model_dump(exclude={"database_url"}),
        database_url=database_url,
        encryption_keys=Fernet.generate_key().decode(),
        pg_pool_min=1,
        pg_pool_max=20,
    )


@pytest.fixture
def api_app(api_settings: ApiSettings) -> FastAPI:
    """The app (its lifespan is run by the `client` fixture)."""
    return create_app(api_settings)


@pytest.fixture
async def client(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client over ASGI with the app's lifespan running (pool, publisher, limiter)."""
    async with api_app.router.lifespan_context(api_app):
        # raise_app_exceptions=False: a 500 is answered (problem+json), as a server would.
        transport = httpx.ASGITransport(app=api_app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://meterline.test") as c:
            yield c


@pytest.fixture
async def admin_key(db: asyncpg.Pool) -> str:
    """A real admin key (no account) stored in the test database."""
    _, key = await create_api_key(db, account_id=None, scope="admin")
    return key


@pytest.fixture
def user_key_for(db: asyncpg.Pool) -> UserKeyFactory:
    """`await user_key_for("acme")`: a real user key for the account (created if missing)."""

    async def make(account_id: str, *, tier: str = "free", create_account: bool = True) -> str:
        if create_account:
            async with db.acquire() as conn:
                await ensure_account(conn, account_id=account_id, tier=tier)
        _, key = await create_api_key(db, account_id=account_id, scope="user")
        return key

    return make


def auth(key: str) -> dict[str, str]:
    """The Authorization header for a key."""
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> Any:
    """Assert a problem+json answer with this status (and code); returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["type"].endswith("/" + body["code"])
    if code is not None:
        assert body["code"] == code, body
    return body
