"""Lookups of unknown API keys are limited per client address: a client spraying random
well-formed keys costs Postgres at most the limit, while keys verified here keep working from
the same address and other addresses are not touched. Against `meterline api` (uvicorn) on
the real database; the lookups are counted by Postgres itself (index scans of api_keys)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from processors.api_keys import new_key
from schemas.settings import CommonSettings
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api_server import ApiServer

BALANCE = "/api/v1/credits/balance"
LIMIT = 20  # lookups per minute and address: a window no test step outlasts


def random_key() -> str:
    """A well-formed key that no one holds (a new key_id and secret)."""
    return new_key()[1]


async def api_key_index_scans(db: asyncpg.Pool) -> int:
    """How many scans Postgres counted on api_keys (one per key lookup): index scans, or
    sequential ones where the planner reads a table of a few rows whole (which it does once
    the table has been emptied by DELETE and analysed, as the tests' reset now leaves it)."""
    async with db.acquire() as conn:
        # This backend's own pending counts (the database reset before the test scans
        # api_keys twice) reach the shared statistics only when it goes idle past a 1 s
        # interval: flushed late, they were counted as lookups (24 for 22 in a CI run).
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        scans: int = await conn.fetchval(
            "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables"
            " WHERE relname = 'api_keys'"
        )
        return scans


async def wait_backends_gone(db: asyncpg.Pool, application_name: str) -> None:
    """Until the server's connections have ended: a backend reports its counts at exit at the
    latest (an idle one may hold them for 10 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
        )
        if left == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{application_name}'s backends still there after 20 s")


def client_from(server: ApiServer, address: str) -> httpx.AsyncClient:
    """A client whose connections come from this loopback address."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, base_url=server.base_url, timeout=30)


@pytest.fixture
async def server(test_settings: CommonSettings) -> AsyncIterator[tuple[ApiServer, str]]:
    """`meterline api` with a lookup limit of 20/minute and a 60 s key cache; its Postgres
    connections carry an application_name of their own."""
    name = f"lookup-limit-{uuid.uuid4().hex[:8]}"
    settings = test_settings.model_copy(
        update={"database_url": f"{test_settings.database_url}?application_name={name}"}
    )
    api = ApiServer(
        settings,
        METERLINE_API_KEY_LOOKUP_LIMIT=f"{LIMIT}/minute",
        METERLINE_API_KEY_CACHE_SECONDS="60",
    )
    await api.start()
    try:
        yield api, name
    finally:
        api.stop()


async def test_random_keys_from_one_address_cost_at_most_the_limit_in_lookups(
    server: tuple[ApiServer, str], user_key_for: UserKeyFactory, db: asyncpg.Pool
) -> None:
    api, name = server
    good = await user_key_for("acme")
    other_good = await user_key_for("globex")
    before = await api_key_index_scans(db)
    async with client_from(api, "127.0.0.2") as sprayer, client_from(api, "127.0.0.3") as other:
        # A proxy at 127.0.0.2 with a real customer key: verified once (one lookup).
        assert (await sprayer.get(BALANCE, headers=auth(good))).status_code == 200
        answers = [await sprayer.get(BALANCE, headers=auth(random_key())) for _ in range(200)]
        statuses = [r.status_code for r in answers]
        # The good key's lookup counted too: 19 more lookups, then 429 without one.
        assert statuses == [401] * (LIMIT - 1) + [429] * (200 - LIMIT + 1)
        body = assert_problem(answers[-1], 429, "rate_limited")
        assert "lookups of unknown API keys from this address" in body["detail"]
        assert body["limit"] == f"{LIMIT} per 1 minute"
        retry_after = int(answers[-1].headers["Retry-After"])
        assert 1 <= retry_after <= 60 and body["retry_after"] == retry_after
        # The customer behind the same proxy address is not locked out.
        for _ in range(5):
            assert (await sprayer.get(BALANCE, headers=auth(good))).status_code == 200
        # A key never verified here is one lookup like any other: refused at this address...
        assert_problem(await sprayer.get(BALANCE, headers=auth(other_good)), 429)
        # ... and X-Forwarded-For from a peer uvicorn does not trust changes nothing.
        spoofed = {**auth(random_key()), "X-Forwarded-For": "203.0.113.9"}
        assert_problem(await sprayer.get(BALANCE, headers=spoofed), 429)
        # Another address is not affected: its unknown keys are looked up.
        assert_problem(await other.get(BALANCE, headers=auth(random_key())), 401)
        assert (await other.get(BALANCE, headers=auth(other_good))).status_code == 200
    api.stop()
    await wait_backends_gone(db, name)
    lookups = await api_key_index_scans(db) - before
    # good + 19 random from 127.0.0.2; one random and other_good from 127.0.0.3.
    assert lookups == LIMIT + 2, lookups


async def test_a_trusted_proxy_forwards_the_address_that_is_counted(
    server: tuple[ApiServer, str],
) -> None:
    """Behind a proxy uvicorn trusts (FORWARDED_ALLOW_IPS; 127.0.0.1 by default), each
    forwarded client has its own count; the proxy's own address is not the one limited."""
    api, _ = server
    async with client_from(api, "127.0.0.1") as proxy:
        for client in ("198.51.100.7", "198.51.100.8"):
            headers = {"X-Forwarded-For": client}
            codes = [
                (await proxy.get(BALANCE, headers={**headers, **auth(random_key())})).status_code
                for _ in range(LIMIT + 2)
            ]
            assert codes == [401] * LIMIT + [429] * 2, (client, codes)


async def raw_status(server: ApiServer, address: str, authorization: bytes) -> int:
    """The status of GET balance sent byte for byte (no client library to clean the header)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, local_addr=(address, 0)
    )
    try:
        writer.write(
            b"GET " + BALANCE.encode() + b" HTTP/1.1\r\nHost: meterline.test\r\n"
            b"Authorization: " + authorization + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_a_key_of_no_key_shape_is_refused_without_a_lookup_or_a_count(
    server: tuple[ApiServer, str], user_key_for: UserKeyFactory
) -> None:
    """Malformed keys, NUL and control characters, non-ASCII, a 6 KiB key and 1 MiB keys of
    a key's shape (each new), sent raw: 400 (the HTTP parser refuses the header) or 401,
    never a 5xx, and never counted."""
    api, _ = server
    good = await user_key_for("acme")
    well_formed = random_key().encode()
    hostile = [b"ml_zz_" + b"A" * 43, b"x" * 6000]
    hostile += [well_formed[:-1] + c for c in (b"\x00", b"\x01", b"\x7f", b"\t", "é".encode())]
    hostile += [well_formed + b"\x00", b"\x00" + well_formed, well_formed + b"\x1b[2J"]
    for n in range(LIMIT):
        # A key's shape but far longer than any key: without a bound, each a lookup.
        long_key = random_key()[:20].encode() + b"A" * 6000 + str(n).encode()
        huge_key = random_key()[:20].encode() + b"B" * (1 << 20)
        for key in [*hostile, long_key, huge_key]:
            status = await raw_status(api, "127.0.0.4", b"Bearer " + key)
            assert status in (400, 401), (key[:40], status)
    # None of these counted: a real key not verified yet from the same address is looked up.
    async with client_from(api, "127.0.0.4") as c:
        assert (await c.get(BALANCE, headers=auth(good))).status_code == 200


async def test_with_the_cache_off_a_key_verified_here_still_passes_an_attack(
    test_settings: CommonSettings, user_key_for: UserKeyFactory, db: asyncpg.Pool
) -> None:
    """METERLINE_API_KEY_CACHE_SECONDS=0 looks every key up; a key verified here is still
    not counted against its address, and a key revoked meanwhile is refused and counted."""
    api = ApiServer(
        test_settings,
        METERLINE_API_KEY_LOOKUP_LIMIT=f"{LIMIT}/minute",
        METERLINE_API_KEY_CACHE_SECONDS="0",
    )
    await api.start()
    try:
        good = await user_key_for("acme")
        async with client_from(api, "127.0.0.5") as c:
            assert (await c.get(BALANCE, headers=auth(good))).status_code == 200
            codes = [
                (await c.get(BALANCE, headers=auth(random_key()))).status_code for _ in range(30)
            ]
            assert codes == [401] * (LIMIT - 1) + [429] * (30 - LIMIT + 1)
            for _ in range(5):
                assert (await c.get(BALANCE, headers=auth(good))).status_code == 200
            await db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", good[3:19])
            assert_problem(await c.get(BALANCE, headers=auth(good)), 401)
            assert_problem(await c.get(BALANCE, headers=auth(good)), 429)
    finally:
        api.stop()
