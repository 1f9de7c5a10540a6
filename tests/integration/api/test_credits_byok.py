"""BYOK: the account's OpenRouter key encrypted at rest, shown masked, never echoed; rotation."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from api.main import create_app
from api.settings import ApiSettings
from processors.byok import rotate_encryption
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.conftest import env_for

BYOK = "/api/v1/credits/byok/openrouter"
SECRET = "sk-or-v1-" + "0123456789abcdef" * 4 + "Wxyz"


@asynccontextmanager
async def app_client(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_put_get_delete_masked_and_encrypted(
    client: httpx.AsyncClient,
    db: asyncpg.Pool,
    user_key_for: UserKeyFactory,
    api_settings: ApiSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await user_key_for("acme", tier="pro")
    assert_problem(await client.get(BYOK, headers=auth(key)), 404, "byok_key_not_found")
    r = await client.put(BYOK, json={"api_key": SECRET}, headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["masked_key"] == "sk-or-…Wxyz"
    assert r.json()["key_last4"] == "Wxyz" and r.json()["account_id"] == "acme"
    got = await client.get(BYOK, headers=auth(key))
    assert got.status_code == 200 and got.json()["masked_key"] == "sk-or-…Wxyz"
    stored = await db.fetchrow("SELECT encrypted_key, key_last4 FROM openrouter_accounts")
    token = bytes(stored["encrypted_key"])
    assert SECRET.encode() not in token
    assert Fernet(api_settings.encryption_keys.encode()).decrypt(token).decode() == SECRET
    # Replacing keeps one row.
    other = SECRET[:-4] + "Abcd"
    r = await client.put(BYOK, json={"api_key": other}, headers=auth(key))
    assert r.json()["masked_key"] == "sk-or-…Abcd"
    assert await db.fetchval("SELECT count(*) FROM openrouter_accounts") == 1
    r = await client.delete(BYOK, headers=auth(key))
    assert r.status_code == 204 and r.content == b""
    assert await db.fetchval("SELECT count(*) FROM openrouter_accounts") == 0
    assert_problem(await client.get(BYOK, headers=auth(key)), 404)
    assert_problem(await client.delete(BYOK, headers=auth(key)), 404)
    for text in (r.text for r in [got]):
        assert SECRET not in text
    assert SECRET not in caplog.text and other not in caplog.text
    # The OpenAPI document shows no secret either (it is write-only input).
    assert "api_key" in (await client.get("/openapi.json")).text


async def test_bad_keys_are_refused_without_echoing_them(
    client: httpx.AsyncClient,
    db: asyncpg.Pool,
    user_key_for: UserKeyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await user_key_for("acme", tier="pro")
    for bad in (
        "sk-live-abcdefghijklmnopqrstu",
        "sk-or-short",
        "sk-or-v1-has spaces in it xx",
        "sk-or-v1-" + "x" * 600,
    ):
        r = await client.put(BYOK, json={"api_key": bad}, headers=auth(key))
        body = assert_problem(r, 422, "validation_error")
        assert body["errors"][0]["field"] == "body.api_key"
        assert bad not in r.text and bad[6:20] not in r.text
        assert bad not in caplog.text
    r = await client.put(BYOK, json={"api_key": 12345678901234567}, headers=auth(key))
    assert_problem(r, 422)
    r = await client.put(BYOK, json={"api_key": SECRET, "extra": SECRET}, headers=auth(key))
    assert_problem(r, 422)
    assert SECRET not in r.text
    assert await db.fetchval("SELECT count(*) FROM openrouter_accounts") == 0


async def test_without_encryption_keys_put_is_503_saying_what_to_set(
    api_settings: ApiSettings, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    for keys in ("", "not-a-fernet-key"):
        async with app_client(api_settings.model_copy(update={"encryption_keys": keys})) as c:
            r = await c.put(BYOK, json={"api_key": SECRET}, headers=auth(key))
            body = assert_problem(r, 503, "encryption_not_configured")
            assert "METERLINE_ENCRYPTION_KEYS" in body["detail"]
            assert SECRET not in r.text and (not keys or keys not in r.text)
    assert await db.fetchval("SELECT count(*) FROM openrouter_accounts") == 0


async def test_rotation_re_encrypts_under_the_new_first_key(
    api_settings: ApiSettings,
    database_url: str,
    db: asyncpg.Pool,
    user_key_for: UserKeyFactory,
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys = {f"acct{i}": await user_key_for(f"acct{i}", tier="pro") for i in range(5)}
    async with app_client(api_settings.model_copy(update={"encryption_keys": old})) as c:
        for account, k in keys.items():
            r = await c.put(BYOK, json={"api_key": f"{SECRET}{account}"}, headers=auth(k))
            assert r.status_code == 200
    async with db.acquire() as conn:
        n = await rotate_encryption(conn, MultiFernet([Fernet(new), Fernet(old)]), batch_size=2)
    assert n == 5
    rows = await db.fetch("SELECT account_id, encrypted_key FROM openrouter_accounts")
    for r in rows:
        token = bytes(r["encrypted_key"])
        assert Fernet(new).decrypt(token).decode() == f"{SECRET}{r['account_id']}"
        with pytest.raises(InvalidToken):
            Fernet(old).decrypt(token)
    # The app keeps reading with only the new key; masked values are unchanged.
    async with app_client(api_settings.model_copy(update={"encryption_keys": new})) as c:
        r = await c.get(BYOK, headers=auth(keys["acct3"]))
        assert r.json()["masked_key"] == "sk-or-…cct3"

    # The CLI does the same: `meterline admin rotate-keys`.
    newer = Fernet.generate_key().decode()
    env = env_for(
        api_settings,
        METERLINE_DATABASE_URL=database_url,
        METERLINE_ENCRYPTION_KEYS=f"{newer},{new}",
    )
    code = (
        "from meterline.cli import app; from meterline.commands import byok; "
        "byok.register(app); app()"
    )

    async def rotate_keys(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", code, "admin", "rotate-keys"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    proc = await rotate_keys(env)
    assert proc.returncode == 0, proc.stderr
    assert "re-encrypted 5" in proc.stderr
    token = bytes(
        await db.fetchval(
            "SELECT encrypted_key FROM openrouter_accounts WHERE account_id = 'acct0'"
        )
    )
    assert Fernet(newer).decrypt(token).decode() == f"{SECRET}acct0"
    # Without the key a token was made with, the command fails and says what to do.
    env["METERLINE_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    proc = await rotate_keys(env)
    assert proc.returncode != 0 and "cannot be decrypted" in proc.stderr
