"""Reconcile prices history with the terms each event was charged with, not today's tier."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import asyncpg

from processors.ledger import ensure_account, set_account_tier
from processors.reconcile import apply_fixes
from schemas.settings import CommonSettings
from tests.integration.ledger_helpers import ledger_matches_balances
from tests.integration.reconcile_helpers import POLICY, balances, run_reconcile, window
from tests.integration.worker import add_test_price, event, meter_with_worker


async def test_tier_and_fee_changed_after_the_debit_are_not_findings(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)  # 2 in, 1 cached, 3 cache write, 8 out (per M)
        await ensure_account(conn, account_id="ent", tier="enterprise")  # multiplier 0.9
        await ensure_account(conn, account_id="bob", tier="pro")  # multiplier 1
    events = [
        # 0.9 × (1000×2 + 1000×8) = 9000
        event("t1", "ent", input_tokens=1000, output_tokens=1000),
        # 0.9 × 5 % of 1M×2 = 90000
        event("t2", "ent", input_tokens=1_000_000, byok=True),
        # 1 × (3000×2) = 6000
        event("t3", "bob", input_tokens=3000),
        # 5 % of 500k×8 = 200000
        event("t4", "bob", output_tokens=500_000, byok=True),
    ]
    await meter_with_worker(test_settings, db, events, usage_rows=4)
    before = await balances(db)
    assert before == {"ent": -99_000, "bob": -206_000}
    terms = {
        r["event_id"]: (r["price_multiplier"], r["byok_fee_pct"], r["price_version_id"] is not None)
        for r in await db.fetch(
            "SELECT event_id, price_multiplier, byok_fee_pct, price_version_id FROM usage_events"
        )
    }
    assert terms == {
        "t1": (Decimal("0.9"), Decimal(5), True),
        "t2": (Decimal("0.9"), Decimal(5), True),
        "t3": (Decimal(1), Decimal(5), True),
        "t4": (Decimal(1), Decimal(5), True),
    }

    # Both accounts change tier (0.9 → 1 and 1 → 0.9) and the platform fee moves to 10 %.
    async with db.acquire() as conn:
        await set_account_tier(conn, account_id="ent", tier="pro", policy=POLICY)
        await set_account_tier(conn, account_id="bob", tier="enterprise", policy=POLICY)
    start, end = window()
    found = await run_reconcile(test_settings, start, end)
    assert found.in_range == 4 and found.unpriced == 0
    assert found.clean, found.findings
    new_fee = replace(POLICY, byok_fee_pct=Decimal(10))
    with_new_fee = await run_reconcile(test_settings, start, end, policy=new_fee)
    assert with_new_fee.clean, with_new_fee.findings

    # --fix over a clean result changes nothing: history is not re-priced.
    fixed = await apply_fixes(
        found,
        bootstrap=test_settings.kafka_bootstrap,
        database_url=test_settings.database_url,
        policy=POLICY,
    )
    assert (fixed.adjusted, fixed.metered, fixed.balances) == (0, 0, 0)
    assert await balances(db) == before
    await ledger_matches_balances(db)


async def test_event_never_metered_is_expected_at_the_terms_a_debit_applies_now(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    """A missing event with no usage row has no stored terms: the account's current ones."""
    async with db.acquire() as conn:
        await add_test_price(conn)
        await ensure_account(conn, account_id="ent", tier="pro")
    await meter_with_worker(
        test_settings, db, [event("u1", "ent", input_tokens=10_000)], usage_rows=1
    )
    assert await balances(db) == {"ent": -20_000}
    # The event vanished from the books (fact row, debit and key, balance given back), then the
    # account moved to enterprise (0.9): metering it now would charge 18000.
    await db.execute("DELETE FROM credit_transactions WHERE event_id = 'u1'")
    await db.execute("DELETE FROM usage_events WHERE event_id = 'u1'")
    await db.execute("DELETE FROM debited_events WHERE event_id = 'u1'")
    await db.execute("UPDATE user_credits SET balance_micros = 0 WHERE account_id = 'ent'")
    async with db.acquire() as conn:
        await set_account_tier(conn, account_id="ent", tier="enterprise", policy=POLICY)
    start, end = window()
    found = await run_reconcile(test_settings, start, end)
    # The deleted debit's burn is still recorded (overdraft 20000, rows 0): invariant 7 finds it.
    assert [(f.kind, f.event_id, f.expected_micros, f.metered) for f in found.findings] == [
        ("missing", "u1", 18_000, False),
        ("overdraft", None, 0, True),
    ]
    fixed = await apply_fixes(
        found,
        bootstrap=test_settings.kafka_bootstrap,
        database_url=test_settings.database_url,
        policy=POLICY,
    )
    assert fixed.metered == 1
    assert await balances(db) == {"ent": -18_000}
    assert (await run_reconcile(test_settings, start, end)).clean
