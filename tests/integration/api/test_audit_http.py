"""Defects found by a hostile sweep of the HTTP API's isolation, dashboard data, bounds and
refusals: one caller never breaks a route for others, every bound is a 422 naming the field
and the rule, and a refusal writes nothing."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx

from api.settings import ApiSettings
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import allocate
from tests.integration.api_server import ApiServer

EXPORT = "/api/v1/credits/transactions/export"
STATS = "/api/v1/credits/usage/stats"
SYSTEM = "/api/v1/admin/credits/analytics/system"
TOP = "/api/v1/admin/credits/analytics/top-spenders"


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


async def test_a_day_is_yyyy_mm_dd_not_a_time_whose_offset_is_dropped(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory, admin_key: str
) -> None:
    await db.execute(
        "INSERT INTO usage_daily (account_id, day, model, events, cost_micros)"
        " VALUES ('acme', '2026-03-01', 'm1', 3, 5000000)"
    )
    h = auth(await user_key_for("acme", tier="pro"))
    # Midnight at +05:00 is 19:00 UTC on 28 February: it used to be read as the UTC day
    # 2026-03-01 (its offset dropped) and answered that day's usage; 20260301 was read as a
    # Unix timestamp and refused as "Datetimes provided to dates should have zero time".
    for name, value in (
        ("from", "2026-03-01T00:00:00+05:00"),
        ("to", "2026-03-01T00:00:00Z"),
        ("from", "20260301"),
        ("to", "1772323200"),
        ("from", "2026-3-1"),
    ):
        for path, headers in ((STATS, h), (SYSTEM, auth(admin_key)), (TOP, auth(admin_key))):
            r = await client.get(path, params={name: value}, headers=headers)
            error = assert_problem(r, 422, "validation_error")["errors"][0]
            assert (error["field"], error["rule"]) == (f"query.{name}", "date_format"), r.text
            assert "YYYY-MM-DD" in error["message"]
    r = await client.get(STATS, params={"from": "2026-03-01", "to": "2026-03-01"}, headers=h)
    assert r.status_code == 200 and r.json()["totals"]["cost"] == "5.000000", r.text


async def test_analytics_take_their_days_by_the_statistics_rule(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    later = (datetime.now(UTC) + timedelta(days=40)).date().isoformat()
    for path in (SYSTEM, TOP):
        # A `from` after today alone used to be a 422 blaming `to`, which nobody sent; the
        # statistics route answered it (to defaults to from). Now both answer one day.
        r = await client.get(path, params={"from": later}, headers=auth(admin_key))
        assert r.status_code == 200, r.text
        assert (r.json()["from"], r.json()["to"]) == (later, later)
        # A reversed range is the same 422 everywhere (rule `range`; it was `period_order`).
        r = await client.get(
            path, params={"from": "2026-03-02", "to": "2026-03-01"}, headers=auth(admin_key)
        )
        error = assert_problem(r, 422)["errors"][0]
        assert (error["field"], error["rule"]) == ("query.to", "range")
        assert date.fromisoformat("2026-03-02").isoformat() in assert_problem(r, 422)["detail"]


async def test_an_account_id_with_a_slash_can_be_read_and_retiered_by_an_admin(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    await allocate(db, "team/alice", 3_000_000)
    await allocate(db, "team", 1_000_000)
    # Both spellings of the path reach the account; they used to be a 404 "no route matches"
    # (the dashboard's admin view could not open such an account).
    for path in ("/api/v1/admin/accounts/team/alice", "/api/v1/admin/accounts/team%2Falice"):
        r = await client.get(path, headers=auth(admin_key))
        assert r.status_code == 200, (path, r.text)
        assert (r.json()["account_id"], r.json()["balance"]) == ("team/alice", "3.000000")
    r = await client.put(
        "/api/v1/admin/accounts/team/alice/tier", json={"tier": "pro"}, headers=auth(admin_key)
    )
    assert r.status_code == 200, r.text
    assert (r.json()["account_id"], r.json()["tier"]) == ("team/alice", "pro")
    tiers = dict(await db.fetch("SELECT account_id, tier FROM user_credits ORDER BY 1"))
    assert tiers == {"team": "free", "team/alice": "pro"}
    # The account's own id is still one segment when it has none, and unknown ids a 404.
    assert (await client.get("/api/v1/admin/accounts/team", headers=auth(admin_key))).json()[
        "balance"
    ] == "1.000000"
    r = await client.put(
        "/api/v1/admin/accounts/team/bob/tier", json={"tier": "pro"}, headers=auth(admin_key)
    )
    assert_problem(r, 404, "unknown_account")
    # The list's address with a trailing slash is still redirected to the list.
    r = await client.get("/api/v1/admin/accounts/", headers=auth(admin_key))
    assert r.status_code == 307 and r.headers["location"].endswith("/api/v1/admin/accounts")


BIG = 5 * 10**18  # micro-credits or tokens: one BIGINT holds it, two do not


async def test_statistics_and_analytics_add_past_what_a_bigint_holds(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory, admin_key: str
) -> None:
    # Two customers whose usage (streamed usage is a fact, recorded past any balance) and
    # balances each fit a BIGINT, as the ledger keeps them, but whose sums do not.
    h = auth(await user_key_for("whale", tier="pro"))
    await user_key_for("orca", tier="pro")
    await db.execute(
        "UPDATE user_credits SET balance_micros = $1 WHERE account_id IN ('whale', 'orca')", BIG
    )
    await db.executemany(
        "INSERT INTO usage_daily (account_id, day, model, events, input_tokens, cost_micros)"
        " VALUES ($1, $2, 'm1', 1, $3, $3)",
        [
            ("whale", date(2026, 3, 1), BIG),
            ("whale", date(2026, 3, 2), BIG),
            ("orca", date(2026, 3, 1), BIG),
        ],
    )
    days = {"from": "2026-03-01", "to": "2026-03-02"}
    # Each used to be a 422 "a value of this request cannot be stored (bigint out of range)"
    # for a request with nothing wrong in it: the sums were cast to BIGINT.
    for group_by in ("model", "day", "provider"):
        r = await client.get(STATS, params={**days, "group_by": group_by}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["totals"]["cost"] == "10000000000000.000000"
        assert r.json()["totals"]["input_tokens"] == 2 * BIG
    r = await client.get(SYSTEM, params=days, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    assert (r.json()["spend"], r.json()["total_balance"], r.json()["events"]) == (
        "15000000000000.000000",
        "10000000000000.000000",
        3,
    )
    r = await client.get(TOP, params=days, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    assert [(s["account_id"], s["spend"]) for s in r.json()["items"]] == [
        ("whale", "10000000000000.000000"),
        ("orca", "5000000000000.000000"),
    ]


async def test_an_unknown_method_is_one_metrics_label_not_a_new_series_each(
    client: httpx.AsyncClient,
) -> None:
    # No key is needed: a client inventing methods (h11 passes any token through) used to add
    # a series per method to every metric, so /metrics and the process grew without bound.
    for i in range(5):
        r = await client.request(f"XMETHOD{i}", "/api/v1/credits/balance")
        assert r.status_code == 405, r.text
        r = await client.request(f"XMETHOD{i}", "/no/such/route")
        assert r.status_code == 404, r.text
    text = (await client.get("/metrics")).text
    assert "XMETHOD" not in text
    balance = 'route="/api/v1/credits/balance",status="405"'
    assert f'meterline_api_requests_total{{method="OTHER",{balance}}}' in text, text
