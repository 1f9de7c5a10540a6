"""Verified keys are cached in process: revocation and re-tiering still take effect in time;
a key in use is re-checked in the background before its entry runs out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from api.main import create_app
from api.settings import ApiSettings
from tests.integration.api.conftest import assert_problem, auth

BALANCE = "/api/v1/credits/balance"


async def _client(settings: ApiSettings, ttl_s: float) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"api_key_cache_seconds": ttl_s}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://meterline.test") as c:
            yield c


@pytest.fixture
async def short_ttl_client(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(api_settings, 0.5):
        yield c


@pytest.fixture
async def four_s_ttl_client(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(api_settings, 4):
        yield c


async def test_a_key_revoked_elsewhere_is_refused_within_the_ttl(
    short_ttl_client: httpx.AsyncClient, user_key_for: object, db: asyncpg.Pool
) -> None:
    key = await user_key_for("cached")  # type: ignore[operator]
    assert (await short_ttl_client.get(BALANCE, headers=auth(key))).status_code == 200
    # Revoked by another process (the CLI, another replica): this one trusts it up to the TTL.
    key_id = key.split("_")[1]
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", key_id)
    await asyncio.sleep(0.6)
    assert_problem(await short_ttl_client.get(BALANCE, headers=auth(key)), 401)


async def test_a_key_in_use_revoked_elsewhere_is_refused_once_rechecked_before_the_ttl(
    four_s_ttl_client: httpx.AsyncClient, user_key_for: object, db: asyncpg.Pool
) -> None:
    client = four_s_ttl_client
    key = await user_key_for("busy")  # type: ignore[operator]
    verified = time.monotonic()
    assert (await client.get(BALANCE, headers=auth(key))).status_code == 200
    key_id = key.split("_")[1]
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", key_id)
    await asyncio.sleep(1.9)  # before the entry's re-check moment (50-90 % of the TTL)
    # Answered from the cache (still within the TTL): the re-check is not due yet.
    assert (await client.get(BALANCE, headers=auth(key))).status_code == 200
    # In use every 0.1 s (under the tier's 20/s limit, which would answer 429 first): the first
    # use past the re-check moment re-checks in the background, and its answer lands before
    # the TTL.
    for _ in range(40):
        r = await client.get(BALANCE, headers=auth(key))
        if r.status_code != 200:
            break
        await asyncio.sleep(0.1)
    assert_problem(r, 401)
    assert time.monotonic() - verified < 4, "refused only at the TTL: no background re-check"


async def test_a_wrong_secret_never_matches_a_cached_key(
    client: httpx.AsyncClient, user_key_for: object
) -> None:
    key = await user_key_for("cached2")  # type: ignore[operator]
    assert (await client.get(BALANCE, headers=auth(key))).status_code == 200
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert_problem(await client.get(BALANCE, headers=auth(forged)), 401)


async def test_revoke_and_retier_through_this_api_apply_at_once(
    client: httpx.AsyncClient, user_key_for: object, admin_key: str, db: asyncpg.Pool
) -> None:
    await db.execute("INSERT INTO tiers (name, rate_limit) VALUES ('two', '2/minute')")
    key = await user_key_for("retier")  # type: ignore[operator]
    for _ in range(3):
        assert (await client.get(BALANCE, headers=auth(key))).status_code == 200
    moved = await client.put(
        "/api/v1/admin/accounts/retier/tier", json={"tier": "two"}, headers=auth(admin_key)
    )
    assert moved.status_code == 200, moved.text
    codes = [(await client.get(BALANCE, headers=auth(key))).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    key_id = key.split("_")[1]
    revoked = await client.delete(f"/api/v1/admin/api-keys/{key_id}", headers=auth(admin_key))
    assert revoked.status_code == 204
    assert_problem(await client.get(BALANCE, headers=auth(key)), 401)
