"""reconcile against the real broker and database: tampering found exactly, fixed once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from processors.catalog import insert_price_version
from processors.ledger import ensure_account
from processors.reconcile import apply_fixes
from schemas import topics
from schemas.settings import CommonSettings
from tests.integration.ledger_helpers import allocate, ledger_matches_balances
from tests.integration.reconcile_helpers import (
    POLICY,
    balances,
    cli,
    run_reconcile,
    run_replay,
    window,
)
from tests.integration.worker import (
    TEST_MODEL,
    USAGE_ROWS,
    Worker,
    add_test_price,
    consume_all,
    event,
    meter_with_worker,
    publish_raw,
    wait_for,
)


async def test_tampered_ledger_is_found_exactly_and_fixed_once(
    test_settings: CommonSettings, db: asyncpg.Pool, tmp_path: Path
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
        await allocate(conn, "carol", 5_000_000, "g1", reason="grant")
    # 1000 input × 2/M = 2000 micros each.
    events = [
        event(f"{a}{i}", name, input_tokens=1000)
        for a, name in (("a", "alice"), ("b", "bob"), ("c", "carol"))
        for i in range(3)
    ]
    await meter_with_worker(test_settings, db, events, usage_rows=9)
    before = await balances(db)
    assert before == {"alice": -6000, "bob": -6000, "carol": 5_000_000 - 6000}

    # Tamper three ways, each consistent on its own so only it shows: a debit deleted (and the
    # balance given back), an amount doubled (and the balance charged), a balance changed.
    await db.execute("DELETE FROM credit_transactions WHERE event_id = 'a1'")
    await db.execute(
        "UPDATE user_credits SET balance_micros = balance_micros + 2000 WHERE account_id = 'alice'"
    )
    await db.execute(
        "UPDATE credit_transactions SET amount_micros = amount_micros * 2 WHERE event_id = 'b2'"
    )
    await db.execute(
        "UPDATE user_credits SET balance_micros = balance_micros - 2000 WHERE account_id = 'bob'"
    )
    await db.execute(
        "UPDATE user_credits SET balance_micros = balance_micros + 1234 WHERE account_id = 'carol'"
    )

    start, end = window()
    found = await run_reconcile(test_settings, start, end)
    assert found.in_range == 9 and found.unpriced == 0 and not found.invalid
    # Editing ledger rows behind the ledger's back also breaks invariant 7 for alice and bob:
    # their rows no longer sum to their grants' remaining less the overdraft.
    assert found.counts() == {
        "missing": 1,
        "amount": 1,
        "extra": 0,
        "balance": 1,
        "grant": 0,
        "overdraft": 2,
        "hold": 0,
    }
    by_kind = {f.kind: f for f in found.findings}
    m, a, b = by_kind["missing"], by_kind["amount"], by_kind["balance"]
    assert (m.account_id, m.event_id, m.expected_micros, m.charged_micros, m.metered) == (
        "alice",
        "a1",
        2000,
        0,
        True,
    )
    assert (a.account_id, a.event_id, a.expected_micros, a.charged_micros) == (
        "bob",
        "b2",
        2000,
        4000,
    )
    assert (b.account_id, b.charged_micros, b.expected_micros) == (
        "carol",
        5_000_000 - 6000 + 1234,
        5_000_000 - 6000,
    )

    # --fix through the CLI, with a JSON report of what it found.
    report = tmp_path / "first.json"
    code, output = cli(
        test_settings,
        "reconcile",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--fix",
        "--report",
        str(report),
    )
    assert code == 0, output
    assert "fixed: 2 adjustments" in output and "1 balances rebuilt" in output
    doc = json.loads(report.read_text())
    assert doc["summary"]["findings"] == {
        "missing": 1,
        "amount": 1,
        "extra": 0,
        "balance": 1,
        "grant": 0,
        "overdraft": 2,
        "hold": 0,
    }
    assert doc["by_account"]["alice"]["difference"] == "0.002000"
    assert doc["by_account"]["bob"]["difference"] == "-0.002000"

    # The same corrections again (a second --fix of the same findings) change nothing.
    again = await apply_fixes(
        found,
        bootstrap=test_settings.kafka_bootstrap,
        database_url=test_settings.database_url,
        policy=POLICY,
    )
    assert (again.adjusted, again.already, again.balances, again.conflicts) == (0, 2, 0, [])
    code, output = cli(
        test_settings, "reconcile", "--from", start.isoformat(), "--to", end.isoformat(), "--fix"
    )
    assert code == 0, output
    assert "clean" in output

    adjustments = await db.fetch(
        "SELECT account_id, amount_micros, idempotency_key"
        " FROM credit_transactions WHERE type = 'adjustment'"
        " ORDER BY account_id"
    )
    assert [tuple(r) for r in adjustments] == [
        ("alice", -2000, "reconcile:missing:default:a1"),
        ("bob", 2000, "reconcile:amount:default:b2:2000:0"),
    ]
    assert await balances(db) == before
    await ledger_matches_balances(db)
    third = await run_reconcile(test_settings, start, end)
    assert third.clean, third.findings


async def test_unmetered_event_is_debited_through_the_meter_not_adjusted(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    events = [event("d1", "dave", input_tokens=1000), event("d2", "dave", input_tokens=500)]
    await meter_with_worker(test_settings, db, events, usage_rows=2)
    # The event vanished from the books entirely (fact row, debit and its key), balance given back.
    await db.execute("DELETE FROM credit_transactions WHERE event_id = 'd2'")
    await db.execute("DELETE FROM usage_events WHERE event_id = 'd2'")
    await db.execute("DELETE FROM debited_events WHERE event_id = 'd2'")
    await db.execute("UPDATE user_credits SET balance_micros = -2000 WHERE account_id = 'dave'")

    start, end = window()
    found = await run_reconcile(test_settings, start, end)
    # The deleted debit's burn is still recorded: dave's overdraft (3000) no longer matches
    # his rows (-2000), an invariant 7 finding that --fix rebuilds from the history.
    assert [(f.kind, f.event_id, f.expected_micros, f.metered) for f in found.findings] == [
        ("missing", "d2", 1000, False),
        ("overdraft", None, 2000, True),
    ]
    fixed = await apply_fixes(
        found,
        bootstrap=test_settings.kafka_bootstrap,
        database_url=test_settings.database_url,
        policy=POLICY,
    )
    assert (fixed.metered, fixed.adjusted) == (1, 0)
    assert await balances(db) == {"dave": -3000}
    assert (
        await db.fetchval(
            "SELECT count(*) FROM credit_transactions WHERE type = 'usage' AND event_id = 'd2'"
        )
        == 1
    )
    # Metered as usage, so a replay finds a duplicate instead of charging it again.
    summary = await run_replay(test_settings)
    assert (summary.debited, summary.duplicates) == (0, 2)
    assert await balances(db) == {"dave": -3000}
    assert (await run_reconcile(test_settings, start, end)).clean


async def test_retroactive_price_correction_adjusts_by_the_hand_computed_difference(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)
    async with db.acquire() as conn:
        await add_test_price(conn)  # 2 in, 1 cached, 3 cache write, 8 out (per M)
        await ensure_account(conn, account_id="ent", tier="enterprise")  # multiplier 0.9
    events = [
        # 1000×2 + 500×8 = 6000 → corrected 1000×3 + 500×10 = 8000: +2000
        event("x1", "alice", input_tokens=1000, output_tokens=500),
        # 10000×2 = 20000 → 30000: +10000
        event("x2", "alice", input_tokens=10_000),
        # byok 5 % of 1M×2 = 100000 → 5 % of 1M×3 = 150000: +50000
        event("x3", "bob", input_tokens=1_000_000, byok=True),
        # 0.9 × (1000×2 + 1000×8) = 9000 → 0.9 × (1000×3 + 1000×10) = 11700: +2700
        event("x4", "ent", input_tokens=1000, output_tokens=1000),
        # occurred before the corrected version takes effect: unchanged
        event("x5", "alice", input_tokens=1000, occurred_at=(now - timedelta(hours=2)).isoformat()),
    ]
    await meter_with_worker(test_settings, db, events, usage_rows=5)
    before = await balances(db)
    assert before == {"alice": -6000 - 20_000 - 2000, "bob": -100_000, "ent": -9000}
    start, end = window()
    assert (await run_reconcile(test_settings, start, end)).clean

    async with db.acquire() as conn:
        await insert_price_version(
            conn,
            model=TEST_MODEL,
            provider="test",
            effective_from=now - timedelta(hours=1),
            input_per_mtok=Decimal(3),
            cached_input_per_mtok=Decimal(1),
            cache_write_per_mtok=Decimal(3),
            output_per_mtok=Decimal(10),
        )
    found = await run_reconcile(test_settings, start, end)
    assert {f.event_id: (f.kind, f.expected_micros - f.charged_micros) for f in found.findings} == {
        "x1": ("amount", 2000),
        "x2": ("amount", 10_000),
        "x3": ("amount", 50_000),
        "x4": ("amount", 2700),
    }
    assert {a: v["difference_micros"] for a, v in found.by_account().items()} == {
        "alice": 12_000,
        "bob": 50_000,
        "ent": 2700,
    }

    fixed = await apply_fixes(
        found,
        bootstrap=test_settings.kafka_bootstrap,
        database_url=test_settings.database_url,
        policy=POLICY,
    )
    assert (fixed.adjusted, fixed.adjusted_micros) == (4, -64_700)
    rows = await db.fetch(
        "SELECT account_id, sum(amount_micros)::bigint AS s"
        " FROM credit_transactions WHERE type = 'adjustment' GROUP BY 1"
    )
    assert dict((r["account_id"], r["s"]) for r in rows) == {
        "alice": -12_000,
        "bob": -50_000,
        "ent": -2700,
    }
    assert await balances(db) == {
        "alice": before["alice"] - 12_000,
        "bob": before["bob"] - 50_000,
        "ent": before["ent"] - 2700,
    }
    await ledger_matches_balances(db)
    assert (await run_reconcile(test_settings, start, end)).clean
    # A second --fix of the same findings finds its adjustments already posted.
    again = await apply_fixes(
        found,
        bootstrap=test_settings.kafka_bootstrap,
        database_url=test_settings.database_url,
        policy=POLICY,
    )
    assert (again.adjusted, again.already) == (0, 4)


async def test_debit_with_no_event_in_the_topic_is_reported_as_extra(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    """A usage debit whose event was never on the topic (or is no longer retained) is extra."""
    from processors.ledger import RatedEvent, debit_batch
    from processors.pricing import PriceVersion
    from schemas.event import UsageEvent

    async with db.acquire() as conn:
        await add_test_price(conn)
        version = PriceVersion(
            id=None,
            model=TEST_MODEL,
            provider="test",
            effective_from=datetime(2020, 1, 1, tzinfo=UTC),
            input_per_mtok=Decimal("2"),
            cached_input_per_mtok=None,
            cache_write_per_mtok=None,
            output_per_mtok=Decimal("8"),
        )
        ghost = UsageEvent(
            event_id="ghost-1",
            account_id="dave",
            model=TEST_MODEL,
            occurred_at=datetime.now(UTC),
            input_tokens=1000,
        )
        await debit_batch(conn, [RatedEvent(ghost, version, "test")], policy=POLICY)
    await meter_with_worker(
        test_settings, db, [event("real-1", "erin", input_tokens=1000)], usage_rows=2
    )
    start, end = window()
    found = await run_reconcile(test_settings, start, end)
    assert found.counts() == {
        "missing": 0,
        "amount": 0,
        "extra": 1,
        "balance": 0,
        "grant": 0,
        "overdraft": 0,
        "hold": 0,
    }
    (extra,) = found.findings
    assert (extra.account_id, extra.event_id, extra.charged_micros) == ("dave", "ghost-1", 2000)


async def test_record_whose_key_another_account_holds_is_conflicting_not_a_finding(
    test_settings: CommonSettings, db: asyncpg.Pool, tmp_path: Path
) -> None:
    """bob's record reuses alice's (source, event_id): the worker dead-letters it, and reconcile
    says so, rather than call it missing or compare it with alice's debit."""
    async with db.acquire() as conn:
        await add_test_price(conn)
    alice = event("1", "alice", input_tokens=500_000)  # 1.0
    bob = event("1", "bob", input_tokens=1_500_000)  # 3.0 if it were debited
    # Kafka keys chosen for their partitions: bob's record (partition 0) comes before alice's
    # (partition 1) in partition order, which is how reconcile picks among equal keys.
    records = [
        (b"alice", json.dumps(alice).encode()),
        (b"alice", json.dumps(alice).encode()),  # a true redelivery of alice's event
        (b"k3", json.dumps(bob).encode()),
        (b"bob", json.dumps(event("2", "bob", input_tokens=250_000)).encode()),
    ]
    worker = Worker(test_settings).start()
    try:
        bootstrap, topic = test_settings.kafka_bootstrap, test_settings.topic_usage_events
        await publish_raw(bootstrap, topic, records[:2])
        await wait_for(db, USAGE_ROWS, 1, worker=worker)
        await publish_raw(bootstrap, topic, records[2:])
        await wait_for(db, USAGE_ROWS, 2, worker=worker)
        dead = await consume_all(bootstrap, test_settings.topic_usage_dlq, expected=1)
    finally:
        worker.stop()
    assert [dict(r.headers)[topics.DLQ_HEADER_REASON] for r in dead] == [b"conflicting_event"]
    before = await balances(db)
    assert before == {"alice": -1_000_000, "bob": -500_000}

    start, end = window()
    found = await run_reconcile(test_settings, start, end)
    assert found.clean, found.findings
    assert found.conflicting == [("default", "1", "bob")]
    assert (found.in_range, found.distinct, found.duplicates) == (4, 3, 1)
    report = tmp_path / "r.json"
    code, output = cli(
        test_settings,
        "reconcile",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
        "--fix",
        "--report",
        str(report),
    )
    assert code == 0, output
    assert "1 duplicates" in output and "1 conflicting" in output and "clean" in output
    assert "conflicting event default/1 of bob" in output
    doc = json.loads(report.read_text())
    assert doc["summary"]["conflicting"] == [
        {"source": "default", "event_id": "1", "account_id": "bob"}
    ]
    assert await balances(db) == before  # --fix charged nobody for bob's record
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 2
    # A replay of the topic: alice's records and bob's own event are duplicates, bob's record
    # with alice's key fails again as what it is.
    replayed = await run_replay(test_settings)
    assert (replayed.debited, replayed.duplicates) == (0, 3)
    assert replayed.still_failing == {"conflicting_event": 1}
    assert await balances(db) == before
