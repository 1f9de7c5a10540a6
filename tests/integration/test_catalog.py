"""The price catalog in the real PostgreSQL: seed, versions over time, duplicates, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import asyncpg
import pytest

from processors import catalog as catalog_db
from processors.pricing import price_event
from schemas.event import UsageEvent

T_NEW = datetime(2025, 6, 1, tzinfo=UTC)
REQUIRED = {
    "openai/gpt-4o-mini",
    "openai/gpt-4o",
    "anthropic/claude-sonnet-4-5",
    "google/gemini-2.5-flash",
    "meta-llama/llama-3.3-70b-instruct",
}


async def rows(conn: asyncpg.Pool) -> list[dict[str, object]]:
    return [
        dict(r)
        for r in await conn.fetch(
            "SELECT id, model, provider, effective_from, input_per_mtok, cached_input_per_mtok,"
            " cache_write_per_mtok, output_per_mtok, per_request, units::text, created_by"
            " FROM price_versions ORDER BY id"
        )
    ]


async def test_seed_twice_gives_the_same_rows(db: asyncpg.Pool) -> None:
    shipped = catalog_db.shipped_versions()
    assert await catalog_db.seed_catalog(db) == len(shipped)
    first = await rows(db)
    assert await catalog_db.seed_catalog(db) == 0
    assert await rows(db) == first
    assert len(first) == len(shipped) >= 19
    cat = await catalog_db.load_catalog(db)
    assert REQUIRED <= set(cat.models())
    sonnet = cat.require("claude-sonnet-4-5", datetime(2025, 3, 1, tzinfo=UTC))
    assert (sonnet.input_per_mtok, sonnet.cache_write_per_mtok) == (D("3.00"), D("3.75"))
    assert sonnet.id is not None and sonnet.provider == "anthropic"


def event(at: datetime) -> UsageEvent:
    return UsageEvent(
        event_id=f"e-{at.timestamp()}",
        account_id="acct",
        occurred_at=at,
        model="gpt-4o-mini",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
    )


async def test_a_later_version_prices_events_after_it_and_not_before(db: asyncpg.Pool) -> None:
    await catalog_db.seed_catalog(db)
    new = await catalog_db.insert_price_version(
        db,
        model="openai/gpt-4o-mini",
        provider="openai",
        effective_from=T_NEW,
        input_per_mtok=D("0.30"),
        cached_input_per_mtok=D("0.15"),
        output_per_mtok=D("1.20"),
        units={"web_search": D("0.025")},
        created_by="test",
    )
    assert new.id is not None and new.units == {"web_search": D("0.025")}
    cat = await catalog_db.load_catalog(db)

    before, after = event(T_NEW - timedelta(microseconds=1)), event(T_NEW)
    old_v = cat.require(before.model, before.occurred_at)
    new_v = cat.require(after.model, after.occurred_at)
    assert new_v.id == new.id and old_v.id != new.id
    assert new_v.units == {"web_search": D("0.025")}  # jsonb of decimal strings, exact
    assert price_event(before, old_v).cost_micros == 750_000  # 0.15 + 0.60
    assert price_event(after, new_v).cost_micros == 1_500_000  # 0.30 + 1.20

    earlier = {
        v.model: v for v in await catalog_db.list_current_prices(db, at=T_NEW - timedelta(1))
    }
    current = {v.model: v for v in await catalog_db.list_current_prices(db)}
    assert earlier["openai/gpt-4o-mini"].input_per_mtok == D("0.15")
    assert current["openai/gpt-4o-mini"].id == new.id
    assert len(current) == len(catalog_db.shipped_versions())
    history = await catalog_db.list_price_history(db, models=["openai/gpt-4o-mini"])
    assert [v.effective_from for v in history] == [datetime(2025, 1, 1, tzinfo=UTC), T_NEW]


async def test_a_duplicate_version_is_a_clear_error(db: asyncpg.Pool) -> None:
    kw = dict(
        model="openai/gpt-4o-mini",
        effective_from=T_NEW,
        input_per_mtok=D("0.30"),
        output_per_mtok=D("1.20"),
    )
    await catalog_db.insert_price_version(db, **kw)  # type: ignore[arg-type]
    with pytest.raises(catalog_db.DuplicatePriceVersion) as info:
        await catalog_db.insert_price_version(db, **{**kw, "input_per_mtok": D("9")})  # type: ignore[arg-type]
    message = str(info.value)
    assert "openai/gpt-4o-mini" in message and "2025-06-01T00:00:00+00:00" in message
    assert "later effective_from" in message
    assert info.value.code == "duplicate_price_version"
    # The first version is untouched.
    assert [r["input_per_mtok"] for r in await rows(db)] == [D("0.30")]


async def test_insert_many_skips_existing_versions(db: asyncpg.Pool) -> None:
    shipped = catalog_db.shipped_versions()
    added = await catalog_db.insert_price_versions(db, versions=shipped[:3])
    assert [v.model for v in added] == [v.model for v in shipped[:3]]
    again = await catalog_db.insert_price_versions(db, versions=shipped[:5])
    assert [v.model for v in again] == [v.model for v in shipped[3:5]]
    assert await catalog_db.insert_price_versions(db, versions=[]) == []


async def test_cli_seed_and_list(db: asyncpg.Pool, database_url: str) -> None:
    env = {**os.environ, "METERLINE_DATABASE_URL": database_url, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meterline", "pricing", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    seeded = cli("seed")
    assert seeded.returncode == 0, seeded.stderr
    n = len(catalog_db.shipped_versions())
    assert f"seeded {n} new price versions (0 already present)" in seeded.stdout
    assert f"seeded 0 new price versions ({n} already present)" in cli("seed").stdout
    listed = cli("list", "--model", "claude-sonnet-4-5")
    assert listed.returncode == 0, listed.stderr
    assert "anthropic/claude-sonnet-4-5" in listed.stdout and "3.75" in listed.stdout
    missing = cli("list", "--model", "no-such-model")
    assert (
        missing.returncode == 1 and "no price versions for model 'no-such-model'" in missing.stderr
    )
