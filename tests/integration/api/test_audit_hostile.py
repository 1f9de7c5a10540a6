"""Defects found by a hostile sweep of the HTTP API (issue 13, "keep every invariant"): each
input is refused with a 422 problem naming the field and the rule, nothing is written, and the
route keeps answering others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import pytest

from api.main import create_app
from api.settings import ApiSettings
from processors.catalog import insert_price_version
from schemas.settings import CommonSettings
from tests.integration.api.conftest import assert_problem, auth
from tests.integration.api.credits_helpers import MODEL, add_test_price, allocate
from tests.integration.api.test_hostile_inputs import _counts
from tests.integration.worker import USAGE_ROWS, Worker, wait_for


@pytest.mark.parametrize(
    ("method", "url", "field"),
    [
        # Both used to become the account "\ufffd" (one account for two different inputs).
        ("POST", "/api/v1/credits/monthly-cap?account_id=%FF", "query.account_id"),
        ("POST", "/api/v1/credits/monthly-cap?account_id=%FE", "query.account_id"),
        # An encoded lone surrogate (CESU-8) and an overlong NUL are not UTF-8 either.
        ("POST", "/api/v1/credits/monthly-cap?account_id=a%ED%A0%80", "query.account_id"),
        ("POST", "/api/v1/credits/monthly-cap?account_id=%C0%80", "query.account_id"),
        ("POST", "/api/v1/credits/monthly-cap?%FF=1&account_id=acme", "query"),
        # A price used to be created for the model "\ufffd".
        ("PUT", "/api/v1/admin/pricing/models/openai/%FF", "path"),
        ("PUT", "/api/v1/admin/accounts/%FF/tier", "path"),
    ],
)
async def test_a_url_that_is_not_utf8_is_refused_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Pool,
    admin_key: str,
    method: str,
    url: str,
    field: str,
) -> None:
    before = await _counts(db)
    body = (
        {"monthly_cap": "10"}
        if "monthly-cap" in url
        else {"tier": "pro"}
        if url.endswith("/tier")
        else {"effective_from": "2026-01-01T00:00:00Z", "input_per_mtok": "1"}
    )
    r = await client.request(method, url, json=body, headers=auth(admin_key))
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"] == [
        {
            "field": field,
            "rule": "invalid_utf8",
            "message": "is not UTF-8 once percent-decoded; percent-encode the UTF-8 bytes of "
            "the text",
        }
    ]
    assert await _counts(db) == before
    mangled = await db.fetchval(
        "SELECT count(*) FROM user_credits WHERE account_id LIKE '%\ufffd%'"
    )
    assert mangled == 0


async def test_percent_encoded_utf8_still_names_its_account(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    # "é" and U+FFFD itself, properly encoded, are text like any other.
    for encoded, account in [("caf%C3%A9", "café"), ("%EF%BF%BD", "\ufffd")]:
        r = await client.post(
            f"/api/v1/credits/monthly-cap?account_id={encoded}",
            json={"monthly_cap": "10"},
            headers=auth(admin_key),
        )
        assert r.status_code == 200, r.text
        assert r.json()["account_id"] == account


_EVENT = {
    "event_id": "e1",
    "account_id": "acme",
    "occurred_at": "2026-01-01T00:00:00Z",
    "model": "openai/gpt-4o-mini",
}


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        # JSON true used to be read as the integer 1: one token billed, a one-second hold.
        ("POST", "/api/v1/usage/events", {**_EVENT, "input_tokens": True}, "body.input_tokens"),
        ("POST", "/api/v1/usage/events", {**_EVENT, "requests": False}, "body.requests"),
        (
            "POST",
            "/api/v1/usage/events",
            {**_EVENT, "schema_version": True},
            "body.schema_version",
        ),
        (
            "POST",
            "/api/v1/credits/calculate-cost",
            {"model": "openai/gpt-4o-mini", "output_tokens": True},
            "body.output_tokens",
        ),
        (
            "POST",
            "/api/v1/credits/reservations",
            {"amount": "1", "ttl_seconds": True, "idempotency_key": "h1"},
            "body.ttl_seconds",
        ),
        (
            "POST",
            "/api/v1/admin/credits/grants",
            {
                "account_id": "acme",
                "amount": "1",
                "priority": True,
                "reason": "r",
                "idempotency_key": "g1",
            },
            "body.priority",
        ),
        (
            "POST",
            "/api/v1/admin/coupons",
            {"code": "C1", "amount": "1", "max_redemptions": True},
            "body.max_redemptions",
        ),
    ],
)
async def test_a_boolean_is_not_an_integer(
    client: httpx.AsyncClient,
    db: asyncpg.Pool,
    admin_key: str,
    method: str,
    url: str,
    body: dict[str, object],
    field: str,
) -> None:
    before = await _counts(db)
    r = await client.request(
        method, url, params={"account_id": "acme"}, json=body, headers=auth(admin_key)
    )
    problem = assert_problem(r, 422, "validation_error")
    assert [(e["field"], e["rule"]) for e in problem["errors"]] == [(field, "int_type")]
    assert problem["errors"][0]["message"] == "must be an integer, not a boolean"
    assert await _counts(db) == before


@pytest.mark.parametrize(
    ("body", "rule", "message"),
    [
        # These three used to be 400 bad_request "There was an error parsing the body".
        (
            b'{"amount": "1", "reason": "\xff\xfe", "idempotency_key": "k"}',
            "invalid_utf8",
            "is not UTF-8 (a JSON body is UTF-8 text, RFC 8259)",
        ),
        (
            b'{"amount": "1", "reason": "r", "idempotency_key": '
            + b"[" * 5000
            + b"]" * 5000
            + b"}",
            "too_deep",
            "nests arrays or objects too deeply to be read",
        ),
        (
            b'{"amount": "1", "reason": "r", "idempotency_key": "k", "n": ' + b"9" * 5000 + b"}",
            "too_large",
            "holds an integer of more than 4300 digits",
        ),
        # And this one named the field "body.1", as if it were an index.
        (
            b"{",
            "json_invalid",
            "is not valid JSON: Expecting property name enclosed in double quotes (at character 1)",
        ),
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/credits/deduct", "/api/v1/usage/events"])
async def test_a_body_that_cannot_be_read_is_a_422_naming_the_body(
    client: httpx.AsyncClient,
    db: asyncpg.Pool,
    admin_key: str,
    url: str,
    body: bytes,
    rule: str,
    message: str,
) -> None:
    before = await _counts(db)
    r = await client.post(
        url,
        params={"account_id": "acme"},
        content=body,
        headers={**auth(admin_key), "Content-Type": "application/json"},
    )
    problem = assert_problem(r, 422, "validation_error")
    assert problem["errors"] == [{"field": "body", "rule": rule, "message": message}]
    assert await _counts(db) == before


@pytest.fixture
async def small_body_client(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 64 KiB body limit (the default, 32 MiB, works the same way)."""
    app = create_app(api_settings.model_copy(update={"max_body_bytes": 64 * 1024}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://meterline.test") as c:
            yield c


@pytest.mark.parametrize("declared", [True, False])
@pytest.mark.parametrize("url", ["/api/v1/credits/deduct", "/api/v1/usage/events"])
async def test_a_body_past_the_limit_is_a_413_and_the_next_request_is_served(
    small_body_client: httpx.AsyncClient,
    db: asyncpg.Pool,
    admin_key: str,
    url: str,
    declared: bool,
) -> None:
    # There was no limit: a 300 MB body held the event loop 4 s and took 1 GB of memory.
    body = b'{"amount": "1", "reason": "r", "idempotency_key": "k", "pad": "'
    body += b"x" * (64 * 1024) + b'"}'

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    before = await _counts(db)
    r = await small_body_client.post(
        url,
        params={"account_id": "acme"},
        content=body if declared else chunks(),
        headers={**auth(admin_key), "Content-Type": "application/json"},
    )
    problem = assert_problem(r, 413, "payload_too_large")
    assert problem["limit"] == 64 * 1024
    assert "larger than 65536 bytes" in problem["detail"]
    assert await _counts(db) == before
    ok = await small_body_client.post(
        "/api/v1/admin/credits/allocate",
        json={"account_id": "acme", "amount": "1", "reason": "r", "idempotency_key": "a1"},
        headers=auth(admin_key),
    )
    assert ok.status_code == 200, ok.text


async def test_an_idempotency_conflict_names_the_original_amount_in_credits(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    # It said "(a deduction of -1000000 micro-credits)": the ledger's unit, not the wire's.
    allocate = {"account_id": "acme", "amount": "5", "reason": "r", "idempotency_key": "k1"}
    r = await client.post("/api/v1/admin/credits/allocate", json=allocate, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    again = await client.post(
        "/api/v1/admin/credits/allocate", json={**allocate, "amount": "6"}, headers=auth(admin_key)
    )
    problem = assert_problem(again, 409, "idempotency_conflict")
    assert "(an allocation of 5.000000)" in problem["detail"], problem["detail"]
    deduct = {"amount": "1.5", "reason": "r", "idempotency_key": "k2"}
    q = {"account_id": "acme"}
    r = await client.post("/api/v1/credits/deduct", params=q, json=deduct, headers=auth(admin_key))
    assert r.status_code == 200, r.text
    again = await client.post(
        "/api/v1/credits/deduct", params=q, json={**deduct, "amount": "2"}, headers=auth(admin_key)
    )
    problem = assert_problem(again, 409, "idempotency_conflict")
    assert "(a deduction of -1.500000)" in problem["detail"], problem["detail"]
    assert "micro" not in problem["detail"]


async def test_calculate_and_deduct_cannot_pay_a_price_that_is_not_in_force_yet(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    # An admin schedules a price cut for next month; a charge dated next month used to be
    # priced (and paid) at it today. An estimate may still look ahead.
    await add_test_price(db)
    now = datetime.now(UTC)
    await insert_price_version(
        db,
        model=MODEL,
        effective_from=now + timedelta(days=30),
        input_per_mtok=Decimal(0),
        output_per_mtok=Decimal(0),
    )
    await allocate(db, "acme", 10_000_000)
    later = (now + timedelta(days=31)).isoformat()
    body = {"model": MODEL, "input_tokens": 1_000_000, "occurred_at": later}
    q = {"account_id": "acme"}
    estimate = await client.post(
        "/api/v1/credits/calculate-cost", params=q, json=body, headers=auth(admin_key)
    )
    assert estimate.status_code == 200 and estimate.json()["cost"] == "0.000000", estimate.text
    before = await _counts(db)
    r = await client.post(
        "/api/v1/credits/calculate-and-deduct",
        params=q,
        json={**body, "idempotency_key": "next-month"},
        headers=auth(admin_key),
    )
    problem = assert_problem(r, 422, "validation_error")
    assert [(e["field"], e["rule"]) for e in problem["errors"]] == [
        ("body.occurred_at", "time_in_future")
    ]
    assert await _counts(db) == before
    # Dated now, it pays today's price (2 credits per million input tokens).
    r = await client.post(
        "/api/v1/credits/calculate-and-deduct",
        params=q,
        json={"model": MODEL, "input_tokens": 1_000_000, "idempotency_key": "today"},
        headers=auth(admin_key),
    )
    assert r.status_code == 200, r.text
    assert r.json()["transaction"]["amount"] == "-2.000000"


_MOST = 999_999_999_999_999_999  # the largest amount an entry may carry, 10^12 credits less 1µ


@pytest.mark.parametrize("route", ["allocate", "grants", "bulk-allocate"])
async def test_a_credit_past_what_a_balance_holds_is_refused_by_name(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, route: str
) -> None:
    # Nine of the largest allocations leave room for less than a tenth: the tenth used to end
    # in a 422 quoting asyncpg ("invalid input for query argument $4: [9999999999999999990]
    # (value out of int64 range)") and telling the caller to check bounds it had kept.
    for i in range(9):
        await allocate(db, "acme", _MOST, f"seed-{i}")
    before = await _counts(db)
    row = {"account_id": "acme", "amount": "999999999999.999999", "reason": "r"}
    url = f"/api/v1/admin/credits/{route}"
    if route == "bulk-allocate":
        body: dict[str, object] = {
            "allocations": [
                {**row, "account_id": "other", "idempotency_key": "b0"},
                {**row, "idempotency_key": "b1"},
            ]
        }
    else:
        body = {**row, "idempotency_key": "tenth"}
    r = await client.post(url, json=body, headers=auth(admin_key))
    expected = (
        "crediting 999999999999.999999 would bring the balance of account 'acme' to "
        "9999999999999.999990, past the most the ledger holds (9223372036854.775807 either "
        "way); nothing was written"
    )
    if route == "bulk-allocate":
        problem = assert_problem(r, 409, "bulk_allocation_failed")
        assert [(e["index"], e["code"], e["message"]) for e in problem["errors"]] == [
            (1, "balance_out_of_range", expected)
        ]
    else:
        problem = assert_problem(r, 422, "balance_out_of_range")
        assert problem["detail"] == expected
        assert problem["errors"] == [
            {"field": "body.amount", "rule": "balance_out_of_range", "message": expected}
        ]
    assert await _counts(db) == before
    ok = await client.post(
        "/api/v1/admin/credits/allocate",
        json={**row, "amount": "1", "idempotency_key": "small"},
        headers=auth(admin_key),
    )
    assert ok.status_code == 200 and ok.json()["balance"] == "9000000000000.999991", ok.text


async def test_an_allocation_replaying_a_grants_key_with_other_terms_is_a_conflict(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    # An allocation is a paid grant at priority 50 that never expires. Its key reused after a
    # priority-10 grant of the same amount and reason used to answer 200 "replayed" with that
    # grant, as if the allocation had been made.
    body = {"account_id": "acme", "amount": "5", "reason": "r", "idempotency_key": "k"}
    grant = await client.post(
        "/api/v1/admin/credits/grants", json={**body, "priority": 10}, headers=auth(admin_key)
    )
    assert grant.status_code == 200, grant.text
    before = await _counts(db)
    for url, payload in [
        ("/api/v1/admin/credits/allocate", body),
        ("/api/v1/admin/credits/bulk-allocate", {"allocations": [body]}),
    ]:
        r = await client.post(url, json=payload, headers=auth(admin_key))
        assert r.status_code == 409, (url, r.text)
        assert "idempotency_key 'k' was already used" in r.text
    assert await _counts(db) == before
    # The same request again is still a replay, and an allocation replays as one.
    again = await client.post(
        "/api/v1/admin/credits/grants", json={**body, "priority": 10}, headers=auth(admin_key)
    )
    assert again.status_code == 200 and again.json()["replayed"] is True, again.text
    plain = {**body, "idempotency_key": "plain"}
    for _ in range(2):
        r = await client.post("/api/v1/admin/credits/allocate", json=plain, headers=auth(admin_key))
        assert r.status_code == 200, r.text
    assert r.json()["replayed"] is True
    default_grant = await client.post(
        "/api/v1/admin/credits/grants", json=plain, headers=auth(admin_key)
    )
    assert default_grant.status_code == 200 and default_grant.json()["replayed"] is True


async def test_two_long_cloudevent_sources_with_the_same_id_are_both_debited(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str, test_settings: CommonSettings
) -> None:
    # CloudEvents' identity is source + id. Sources were cut to 64 characters, so these two
    # became one idempotency key and the second event was recorded as a duplicate, unbilled.
    await add_test_price(db)
    prefix = "https://gateway.example.com/v1/tenants/acme-corporation/regions/"
    assert len(prefix) >= 64
    envelopes = [
        {
            "specversion": "1.0",
            "id": "42",
            "source": prefix + region,
            "type": "com.example.usage",
            "subject": "acme",
            "time": datetime.now(UTC).isoformat(),
            "data": {"model": MODEL, "input_tokens": 500_000},
        }
        for region in ("eu-west-1", "us-east-1")
    ]
    r = await client.post("/api/v1/usage/events", json=envelopes, headers=auth(admin_key))
    assert r.status_code == 202, r.text
    worker = Worker(test_settings).start()
    try:
        await wait_for(db, USAGE_ROWS, 2, worker=worker)
    finally:
        worker.stop()
    sources = await db.fetch("SELECT source FROM usage_events ORDER BY source")
    assert len({s["source"] for s in sources}) == 2
    assert all(len(s["source"]) == 64 and s["source"].startswith(prefix[:47]) for s in sources)
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == -2_000_000


async def test_the_holds_list_totals_every_active_hold_not_just_the_page(
    client: httpx.AsyncClient, db: asyncpg.Pool, admin_key: str
) -> None:
    # The list shows at most 500 holds; its `held` was the sum of those 500, so with more it
    # disagreed with the balance's `held` (what available is computed from).
    await allocate(db, "acme", 10_000_000)
    q = {"account_id": "acme"}
    for i in range(503):
        r = await client.post(
            "/api/v1/credits/reservations",
            params=q,
            json={"amount": "0.000001", "idempotency_key": f"h{i}"},
            headers=auth(admin_key),
        )
        assert r.status_code == 201, r.text
    listed = await client.get("/api/v1/credits/reservations", params=q, headers=auth(admin_key))
    balance = await client.get("/api/v1/credits/balance", params=q, headers=auth(admin_key))
    page = listed.json()
    assert len(page["items"]) == 500
    assert (page["held"], page["count"]) == ("0.000503", 503)
    assert balance.json()["held"] == page["held"]
