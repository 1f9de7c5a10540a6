"""A stored price row nothing can use (issue 8: an -infinity effective_from written before the
bounds existed, a NaN price or a unit price that is no number set by hand) is skipped with a
log line and reported by `meterline pricing list`; the worker still starts and meters;
reconcile reports an event it cannot price instead of crashing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from processors import catalog as catalog_db
from schemas.settings import CommonSettings
from tests.integration.reconcile_helpers import cli, run_reconcile, window
from tests.integration.worker import (
    TEST_MODEL,
    add_test_price,
    event,
    meter_with_worker,
    publish_usage,
)

_RAW_INSERT = (
    "INSERT INTO price_versions (model, effective_from, input_per_mtok, output_per_mtok,"
    " per_request, units) VALUES ($1, $2::text::timestamptz, $3, 0, 0, $4::jsonb) RETURNING id"
)


async def _bad_rows(db: asyncpg.Pool) -> dict[int, str]:
    """Rows the API refuses today but that an older version (or a hand edit) stored."""
    return {
        await db.fetchval(_RAW_INSERT, TEST_MODEL, "-infinity", Decimal(5), "{}"): "aware",
        # NaN passes the column's CHECK (>= 0): Postgres orders NaN above every number.
        await db.fetchval(_RAW_INSERT, "test/nan", "2021-01-01", Decimal("NaN"), "{}"): "finite",
        await db.fetchval(
            _RAW_INSERT, "test/junk-unit", "2021-01-01", Decimal(1), '{"images": "lots"}'
        ): "",
        await db.fetchval(_RAW_INSERT, "test/absurd", "2021-01-01", Decimal("1e15"), "{}"): "above",
    }


async def test_unusable_price_rows_are_skipped_reported_and_the_worker_still_meters(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    bad = await _bad_rows(db)

    catalog, unusable = await catalog_db.load_catalog_checked(db)
    assert {u.id: u.model for u in unusable} == {
        i: m
        for i, m in zip(bad, (TEST_MODEL, "test/nan", "test/junk-unit", "test/absurd"), strict=True)
    }
    for u in unusable:
        assert bad[u.id] in u.reason, u
    version = catalog.version_at(TEST_MODEL, datetime.now(UTC))
    assert version is not None and version.input_per_mtok == 2
    current = await catalog_db.list_current_prices(db)
    assert [v.model for v in current] == [TEST_MODEL]

    code, output = cli(test_settings, "pricing", "list")
    assert code == 0, output
    for row_id in bad:
        assert f"unusable price version {row_id}" in output, output
    assert TEST_MODEL in output

    # The worker loads the catalog at start and every refresh: it starts and debits.
    await meter_with_worker(
        test_settings, db, [event("ok-1", "acme", input_tokens=1000)], usage_rows=1
    )
    assert (
        await db.fetchval("SELECT amount_micros FROM credit_transactions WHERE event_id = 'ok-1'")
        == -2000
    )


async def test_reconcile_reports_an_event_it_cannot_price(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
        await add_test_price(conn, model="test/very-dear", input="999999999999")
    await publish_usage(
        test_settings,
        [
            event("fine", "acme", input_tokens=1000),
            # Valid (10^12 tokens is the bound) but it would cost ~10^18 credits: beyond BIGINT.
            event("dear", "acme", model="test/very-dear", input_tokens=10**12),
        ],
    )
    start, end = window()
    found = await run_reconcile(test_settings, start, end)
    assert found.in_range == 2 and not found.invalid
    assert [(s, e) for s, e, _ in found.unpriceable] == [("default", "dear")]
    assert "beyond 1000000000000 credits" in found.unpriceable[0][2]
    # "fine" was never debited: the one finding is its missing debit, nothing about "dear".
    assert [(f.kind, f.event_id) for f in found.findings] == [("missing", "fine")]
    assert found.summary()["unpriceable"][0]["event_id"] == "dear"
