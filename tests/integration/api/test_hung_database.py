"""A database that stops answering without closing anything (a hung server, a network that
drops packets, a frozen VM): every request still ends, as a 503 with Retry-After within the
command timeout and a little, never waiting as long as the database hangs (DESIGN "Scale":
while a dependency is down, HTTP answers 503 with Retry-After, never a hang).

The database is frozen with a TCP proxy in front of the shared one, which is never touched."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from api.settings import ApiSettings
from tests.integration.api.conftest import auth
from tests.integration.api.credits_helpers import allocate
from tests.integration.api.test_self_healing import BALANCE
from tests.integration.api_server import ApiServer
from tests.integration.tcp_proxy import database_proxy

COMMAND_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0
HUNG_S = 20.0


async def test_requests_to_a_hung_database_end_as_503_in_bounded_time(
    api_settings: ApiSettings, db: asyncpg.Pool, database_url: str, admin_key: str
) -> None:
    await allocate(db, "acme", 10_000_000)
    proxy, proxied = database_proxy(database_url)
    await proxy.open()
    settings = api_settings.model_copy(
        update={"database_url": proxied, "api_key_cache_seconds": 300}
    )
    server = await ApiServer(
        settings,
        METERLINE_PG_COMMAND_TIMEOUT_SECONDS=str(COMMAND_TIMEOUT_S),
        METERLINE_PG_CONNECT_TIMEOUT_SECONDS=str(CONNECT_TIMEOUT_S),
        METERLINE_PG_POOL_MAX="4",
    ).start()
    h = auth(admin_key)
    params = {"account_id": "acme"}

    async def timed(c: httpx.AsyncClient) -> tuple[float, int, str | None]:
        t0 = time.monotonic()
        r = await c.get(BALANCE, params=params, headers=h)
        return time.monotonic() - t0, r.status_code, r.headers.get("retry-after")

    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            assert (await c.get(BALANCE, params=params, headers=h)).status_code == 200
            proxy.freeze()
            # More requests than the pool has connections, some arriving later.
            first = [asyncio.create_task(timed(c)) for _ in range(8)]
            await asyncio.sleep(COMMAND_TIMEOUT_S + 1)
            later = [asyncio.create_task(timed(c)) for _ in range(4)]
            done, _ = await asyncio.wait(first + later, timeout=HUNG_S)
            proxy.thaw()
            answers = [await t for t in first + later]
            assert len(done) == len(answers), f"{len(answers) - len(done)} requests still hung"
            bound = COMMAND_TIMEOUT_S + CONNECT_TIMEOUT_S + 3
            assert all(status == 503 and retry == "5" for _, status, retry in answers), answers
            assert max(took for took, _, _ in answers) < bound, answers
            # Once it answers again, the same process serves.
            deadline = time.monotonic() + 30
            while (r := await c.get(BALANCE, params=params, headers=h)).status_code != 200:
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.5)
            assert r.json()["balance"] == "10.000000"
    finally:
        proxy.thaw()
        server.stop()
        await proxy.close()
