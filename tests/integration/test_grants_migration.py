"""Migration 0006 on a populated database: every balance becomes an opening grant (or an
overdraft), so invariant 7 holds right after `migrate up`, and down keeps invariant 2."""

from __future__ import annotations

import asyncpg

from schemas import migrate
from tests.integration import services as svc

GRANTS_VERSION = 6


async def _populate(conn: asyncpg.Connection) -> None:
    """Accounts as a pre-grants ledger left them: funded, overdrawn, empty."""
    await conn.execute(
        "INSERT INTO user_credits (account_id, balance_micros) VALUES"
        " ('funded', 7000000), ('overdrawn', -2500000), ('empty', 0)"
    )
    await conn.execute(
        "INSERT INTO credit_transactions (account_id, type, amount_micros, balance_after_micros)"
        " VALUES ('funded', 'allocation', 10000000, 10000000),"
        " ('funded', 'deduction', -3000000, 7000000),"
        " ('overdrawn', 'allocation', 1000000, 1000000),"
        " ('overdrawn', 'adjustment', -3500000, -2500000)"
    )


async def test_upgrade_of_a_populated_database_gives_every_balance_a_grant(
    services: svc.Services,
) -> None:
    async with svc.empty_database(services) as conn:
        await migrate.up(conn, target=GRANTS_VERSION - 1)
        await _populate(conn)
        applied = await migrate.up(conn)
        assert GRANTS_VERSION in [m.version for m in applied]

        grants = await conn.fetch(
            "SELECT account_id, category, amount_micros, remaining_micros, priority,"
            " expires_at, applies_to FROM credit_grants ORDER BY account_id"
        )
        assert [tuple(g) for g in grants] == [
            ("funded", "paid", 7_000_000, 7_000_000, 50, None, None)
        ]
        overdrafts = dict(await conn.fetch("SELECT account_id, overdraft_micros FROM user_credits"))
        assert overdrafts == {"funded": 0, "overdrawn": 2_500_000, "empty": 0}
        # Invariant 7: balance = Σ remaining − overdraft, for every account.
        bad = await conn.fetch(
            "SELECT u.account_id FROM user_credits u LEFT JOIN credit_grants g USING"
            " (account_id) GROUP BY u.account_id, u.balance_micros, u.overdraft_micros"
            " HAVING u.balance_micros"
            " <> coalesce(sum(g.remaining_micros), 0) - u.overdraft_micros"
        )
        assert bad == []

        # Down keeps the history and its sums: an expiration row becomes an adjustment.
        await conn.execute(
            "INSERT INTO credit_transactions (account_id, type, amount_micros,"
            " balance_after_micros) VALUES ('funded', 'expiration', -1000000, 6000000)"
        )
        await conn.execute(
            "UPDATE user_credits SET balance_micros = 6000000 WHERE account_id = 'funded'"
        )
        await migrate.down(conn, steps=len(applied))
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM credit_transactions WHERE type = 'adjustment'"
                " AND account_id = 'funded'"
            )
            == 1
        )
        mismatched = await conn.fetchval(
            "SELECT count(*) FROM user_credits u WHERE balance_micros <> (SELECT"
            " coalesce(sum(amount_micros), 0) FROM credit_transactions t"
            " WHERE t.account_id = u.account_id)"
        )
        assert mismatched == 0
