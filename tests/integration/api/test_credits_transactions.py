"""Ledger history: keyset pages, filters, and the streamed CSV export (flat memory)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import POLICY, allocate

TX = "/api/v1/credits/transactions"
EXPORT = "/api/v1/credits/transactions/export"


async def _deduct(db: asyncpg.Pool, account: str, micros: int, reason: str, key: str) -> None:
    from processors.ledger import post_entry

    async with db.acquire() as conn:
        await post_entry(
            conn,
            account_id=account,
            type="deduction",
            amount_micros=-micros,
            reason=reason,
            idempotency_key=key,
            policy=POLICY,
        )


async def _all_pages(client: httpx.AsyncClient, key: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get(TX, params=q, headers=auth(key))
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_pages_newest_first_with_opaque_cursor(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    for i in range(7):
        await allocate(db, "acme", 1_000_000 * (i + 1), key=f"a{i}")
    r = await client.get(TX, params={"limit": 3}, headers=auth(key))
    page = r.json()
    assert [row["amount"] for row in page["items"]] == ["7.000000", "6.000000", "5.000000"]
    assert page["items"][0]["balance_after"] == "28.000000"
    cursor = page["next_cursor"]
    # Opaque to clients, but it is base64 of the last id.
    assert int(base64.urlsafe_b64decode(cursor + "==")) == page["items"][-1]["id"]
    items = await _all_pages(client, key, limit=3)
    assert [row["amount"] for row in items] == [f"{n}.000000" for n in range(7, 0, -1)]
    ids = [row["id"] for row in items]
    assert ids == sorted(ids, reverse=True)
    # Default limit 50; exactly one page when it all fits.
    page = (await client.get(TX, headers=auth(key))).json()
    assert len(page["items"]) == 7 and page["next_cursor"] is None


async def test_filters_by_type_and_time(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 10_000_000, key="g")
    for i in range(4):
        await _deduct(db, "acme", 1_000_000, f"d{i}", f"d{i}")
    base = datetime(2025, 3, 1, tzinfo=UTC)
    await db.execute(
        "UPDATE credit_transactions SET created_at = $1::timestamptz + id * interval '1 day'", base
    )
    deductions = await _all_pages(client, key, type="deduction", limit=2)
    assert [row["reason"] for row in deductions] == ["d3", "d2", "d1", "d0"]
    window = await _all_pages(
        client,
        key,
        **{
            "from": (base + timedelta(days=2)).isoformat(),
            "to": (base + timedelta(days=4)).isoformat(),
        },
    )
    assert [row["reason"] for row in window] == ["d1", "d0"]  # ids 3 and 2; "to" is exclusive
    both = await _all_pages(client, key, type="allocation", **{"from": base.isoformat()})
    assert [row["idempotency_key"] for row in both] == ["g"]


async def test_bad_list_parameters_are_422_naming_them(
    client: httpx.AsyncClient, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    cases = [
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
        ({"type": "bogus"}, "query.type"),
        ({"cursor": "not-a-cursor!"}, "query.cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"-5").decode()}, "query.cursor"),
        ({"from": "2025-01-01T00:00:00"}, "query.from"),  # no offset
        ({"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "query.to"),
    ]
    for params, field in cases:
        body = assert_problem(await client.get(TX, params=params, headers=auth(key)), 422)
        assert body["errors"][0]["field"] == field, (params, body)
        if "cursor" not in params and "limit" not in params:  # the export takes neither
            body = assert_problem(await client.get(EXPORT, params=params, headers=auth(key)), 422)
            assert body["errors"][0]["field"] == field, ("export", params, body)


async def test_keyset_pages_stay_stable_while_rows_are_added(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    for i in range(30):
        await allocate(db, "acme", 1_000, key=f"old{i}")
    original = [
        r["id"] for r in await db.fetch("SELECT id FROM credit_transactions ORDER BY id DESC")
    ]
    seen: list[int] = []
    cursor = None
    writer_rounds = 0
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        # Rows are written between (and during) page reads.
        r, _ = await asyncio.gather(
            client.get(TX, params=params, headers=auth(key)),
            allocate(db, "acme", 1_000, key=f"new{writer_rounds}"),
        )
        writer_rounds += 1
        page = r.json()
        seen += [row["id"] for row in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    new_ids = set(
        await db.fetchval(
            "SELECT array_agg(id) FROM credit_transactions WHERE idempotency_key LIKE 'new%'"
        )
    )
    # Every original row exactly once, in order; no row twice, whatever was added meanwhile.
    assert [i for i in seen if i not in new_ids] == original
    assert len(seen) == len(set(seen))


async def test_export_is_rfc4180_csv_with_formulas_neutralised(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    await allocate(db, "acme", 100_000_000, key="grant")
    reasons = [
        '=HYPERLINK("http://evil","x")',
        "+1+2",
        "-2+3",
        "@SUM(A1)",
        "\tindent",
        "\rcr",
        "-1.5",
        "a,b",
        'say "hi"',
        "two\nlines",
        "plain",
    ]
    for i, reason in enumerate(reasons):
        await _deduct(db, "acme", 1_500_000, reason, f"k{i}")
    r = await client.get(EXPORT, headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    assert r.text.startswith("id,created_at,type,amount,balance_after,reason,")
    assert "\r\n" in r.text
    rows = list(csv.reader(io.StringIO(r.text, newline="")))
    header, body = rows[0], rows[1:]
    assert header == [
        "id",
        "created_at",
        "type",
        "amount",
        "balance_after",
        "reason",
        "idempotency_key",
        "model",
        "source",
        "event_id",
    ]
    assert len(body) == len(reasons) + 1
    by_key = {row[6]: row for row in body}
    got = [by_key[f"k{i}"][5] for i in range(len(reasons))]
    assert got == [
        '\'=HYPERLINK("http://evil","x")',
        "'+1+2",
        "'-2+3",
        "'@SUM(A1)",
        "'\tindent",
        "'\rcr",
        "-1.5",
        "a,b",
        'say "hi"',
        "two\nlines",
        "plain",
    ]
    # Amounts are numbers, negative ones included, never prefixed.
    assert by_key["k0"][3] == "-1.500000"
    assert body[-1][3] == "100.000000" and body[-1][2] == "allocation"
    # Same filters as the list.
    r = await client.get(EXPORT, params={"type": "allocation"}, headers=auth(key))
    assert len(list(csv.reader(io.StringIO(r.text, newline="")))) == 2


async def test_export_of_100k_rows_streams_in_flat_memory(
    client: httpx.AsyncClient, api_app: FastAPI, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    n = 100_000
    key = await user_key_for("bulk", tier="pro")
    await db.execute(
        "INSERT INTO credit_transactions (account_id, type, amount_micros, balance_after_micros,"
        " reason, idempotency_key)"
        " SELECT 'bulk', 'allocation', 1500000, g::bigint * 1500000, 'monthly grant number ' || g,"
        " 'idem-' || g FROM generate_series(1, $1) g",
        n,
    )
    await db.execute(
        "UPDATE user_credits SET balance_micros = $1 WHERE account_id = 'bulk'", n * 1_500_000
    )
    # Drive the ASGI app directly: httpx's ASGITransport would buffer the whole body, which
    # is the client's memory, not the server's. Here every chunk is counted and dropped.
    done = asyncio.Event()
    sent_request = False
    total = 0
    chunks = 0
    lines = 0
    status = 0
    samples: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal total, chunks, lines, status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            total += len(body)
            chunks += 1
            lines += body.count(b"\r\n")
            if tracemalloc.is_tracing():
                samples.append(tracemalloc.get_traced_memory()[0])
            if not message.get("more_body", False):
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": EXPORT,
        "raw_path": EXPORT.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("meterline.test", 80),
        "headers": [(b"host", b"meterline.test"), (b"authorization", f"Bearer {key}".encode())],
        "state": {},
    }
    # Warm up first: the app builds some things lazily on its first request of a route.
    warm = await client.get(EXPORT, params={"type": "refund"}, headers=auth(key))
    assert warm.status_code == 200 and warm.text.count("\r\n") == 1
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        await api_app(scope, receive, send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200
    assert lines == n + 1  # the header and every row
    assert chunks > 10  # streamed in batches, not one body
    growth = peak - before
    print(f"export: {n} rows, {total} bytes of CSV in {chunks} chunks, peak +{growth} bytes")
    assert total > 10_000_000, total
    # Flat: the peak is a batch or two, a small fraction of the ~11 MB of CSV ...
    assert growth < total / 5, (growth, total)
    # ... and memory does not grow with the rows sent: late in the stream as early on.
    early, late = samples[5], samples[-2]
    assert late - early < 512 * 1024, (early, late)
