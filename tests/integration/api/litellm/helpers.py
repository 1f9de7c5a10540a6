"""Shared pieces of the LiteLLM tests: the priced test models and ledger read-backs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from processors.catalog import insert_price_version
from processors.ledger import ensure_account
from schemas.money import from_micros
from tests.integration.ledger_helpers import allocate

MODEL = "openai/meterline-test"  # LiteLLM mocks it (mock_response); meterline prices it
COUNTING_MODEL = "counting/model"  # a CustomLLM provider that counts the calls it gets
DEMO_MODEL = "openai/meterline-demo"  # behind deploy/litellm/config.yaml's demo-chat
# LiteLLM's mock usage of a non-streamed call: 10 prompt tokens, 20 completion tokens.
MOCK_INPUT, MOCK_OUTPUT = 10, 20
# 2000 credits per M input, 8000 per M output: the mocked call costs 0.02 + 0.16 = 0.18.
MOCK_COST = Decimal("0.18")


async def add_prices(db: asyncpg.Pool) -> None:
    """Price versions of the test models in force since 2020."""
    for model in (MODEL, COUNTING_MODEL, DEMO_MODEL):
        await insert_price_version(
            db,
            model=model,
            provider=model.split("/")[0],
            effective_from=datetime(2020, 1, 1, tzinfo=UTC),
            input_per_mtok=Decimal("2000"),
            cached_input_per_mtok=Decimal("1000"),
            output_per_mtok=Decimal("8000"),
            units={},
        )


async def balance(db: asyncpg.Pool, account_id: str) -> Decimal:
    """The account's balance as the ledger holds it."""
    micros = await db.fetchval(
        "SELECT balance_micros FROM user_credits WHERE account_id = $1", account_id
    )
    return from_micros(int(micros or 0))


async def usage_debits(db: asyncpg.Pool, account_id: str) -> list[Decimal]:
    """The usage rows of the account, oldest first, as positive amounts."""
    rows = await db.fetch(
        "SELECT amount_micros FROM credit_transactions WHERE account_id = $1 AND type = 'usage'"
        " ORDER BY id",
        account_id,
    )
    return [from_micros(-int(r["amount_micros"])) for r in rows]


async def fund(db: asyncpg.Pool, account_id: str, micros: int) -> None:
    """An account on the pro tier (no monthly cap) holding `micros` of paid credit."""
    async with db.acquire() as conn:
        await ensure_account(conn, account_id=account_id, tier="pro")
    await allocate(db, account_id, micros)
