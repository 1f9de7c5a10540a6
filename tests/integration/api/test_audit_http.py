"""Defects found by a hostile sweep of the HTTP API's isolation, dashboard data, bounds and
refusals: one caller never breaks a route for others, every bound is a 422 naming the field
and the rule, and a refusal writes nothing."""

from __future__ import annotations

import asyncio
import socket
import time

import asyncpg
import httpx

from api.settings import ApiSettings
from tests.integration.api.conftest import UserKeyFactory, auth
from tests.integration.api.credits_helpers import allocate
from tests.integration.api_server import ApiServer

EXPORT = "/api/v1/credits/transactions/export"


def _slow_reader(port: int, key: str) -> socket.socket:
    """An export request whose client reads its status line and then stops reading."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET {EXPORT} HTTP/1.1\r\nHost: meterline.test\r\n"
        f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    assert sock.recv(64).startswith(b"HTTP/1.1 200"), "the export did not start"
    return sock


async def test_slow_export_readers_do_not_stall_other_keys(
    api_settings: ApiSettings, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    # A history of ~14 MB of CSV: far more than the socket buffers between a client that has
    # stopped reading and the server, so the server's stream waits on the client.
    hoarder = await user_key_for("hoarder", tier="pro")
    bystander = await user_key_for("bystander", tier="pro")
    await allocate(db, "hoarder", 1_000_000)
    await db.execute(
        "INSERT INTO credit_transactions (account_id, type, amount_micros, balance_after_micros,"
        " reason) SELECT 'hoarder', 'adjustment', 0, 1000000, repeat('r', 400)"
        " FROM generate_series(1, 30000)"
    )
    server = ApiServer(api_settings, METERLINE_PG_POOL_MIN="1", METERLINE_PG_POOL_MAX="2")
    await server.start()
    readers: list[socket.socket] = []
    try:
        # As many stalled downloads as the pool has connections: the export used to hold one
        # (a server-side cursor in a transaction) until the client had read the whole file,
        # so every other request of every key waited for a connection, without end.
        for _ in range(2):
            readers.append(await asyncio.to_thread(_slow_reader, server.port, hoarder))
        await asyncio.sleep(1)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            started = time.monotonic()
            balance = await client.get("/api/v1/credits/balance", headers=auth(bystander))
            assert balance.status_code == 200, balance.text
            assert balance.json()["account_id"] == "bystander"
            own = await client.get("/api/v1/credits/balance", headers=auth(hoarder))
            assert own.status_code == 200, own.text
            assert time.monotonic() - started < 5
            # The stalled exports are still open and still complete once read.
            page = await client.get(EXPORT, params={"type": "allocation"}, headers=auth(hoarder))
            assert page.status_code == 200 and page.text.count("\r\n") == 2
    finally:
        for sock in readers:
            sock.close()
        server.stop()
