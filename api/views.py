"""Ledger state → the wire models of the user routes (and the account reads they share)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import asyncpg

from api.queries.admin import get_tier
from processors.ledger import AccountState, EntryResult, LedgerRow, read_account
from processors.pricing import PriceVersion, plain
from schemas.api_credits import BalanceOut, EntryOut, LedgerRowOut, money_or_none
from schemas.money import format_micros


async def account_state(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, default_tier: str
) -> AccountState:
    """The account's live state (this UTC month's spend), read without a lock.

    An account the ledger has never seen reads as a new account would be created: balance 0,
    the default tier, that tier's default cap.
    """
    state = await read_account(cast(asyncpg.Connection, conn), account_id=account_id)
    if state is not None:
        return state
    tier = await get_tier(conn, name=default_tier)
    return AccountState(
        account_id=account_id,
        balance_micros=0,
        tier=default_tier,
        monthly_cap_micros=tier["default_monthly_cap_micros"] if tier else None,
        monthly_spend_micros=0,
        alerted_pct=0,
        blocked=False,
        low_balance_alerted=False,
        price_multiplier=tier["price_multiplier"] if tier else Decimal(1),
    )


def balance_out(state: AccountState) -> BalanceOut:
    """The balance answer; `blocked` is computed from the live balance, spend and cap."""
    reason = state.should_block()
    return BalanceOut(
        account_id=state.account_id,
        balance=format_micros(state.balance_micros),
        monthly_spend=format_micros(state.monthly_spend_micros),
        monthly_cap=money_or_none(state.monthly_cap_micros),
        cap_remaining=money_or_none(state.cap_remaining_micros),
        tier=state.tier,
        blocked=reason is not None,
        blocked_reason=cast(Any, reason),
    )


def row_out(row: LedgerRow | asyncpg.Record) -> LedgerRowOut:
    """A ledger row (dataclass or database record) on the wire."""
    get = row.__getitem__ if isinstance(row, asyncpg.Record) else row.__getattribute__
    return LedgerRowOut(
        id=get("id"),
        account_id=get("account_id"),
        type=get("type"),
        amount=format_micros(get("amount_micros")),
        balance_after=format_micros(get("balance_after_micros")),
        reason=get("reason"),
        idempotency_key=get("idempotency_key"),
        model=get("model"),
        source=get("source"),
        event_id=get("event_id"),
        created_at=get("created_at"),
    )


def entry_out(result: EntryResult) -> EntryOut:
    """A ledger write's answer: the row and the balance right after it.

    On a replay the balance is the one the original write left (the row's balance_after),
    so the same request always gets the same answer.
    """
    return EntryOut(
        transaction=row_out(result.row),
        balance=format_micros(result.row.balance_after_micros),
        replayed=result.replayed,
    )


def price_fields(v: PriceVersion) -> dict[str, Any]:
    """A price version's wire fields shared by the admin and user pricing answers (prices as
    plain decimal strings; a null cached or cache-write price means the input price applies)."""
    return {
        "model": v.model,
        "provider": v.provider,
        "effective_from": v.effective_from,
        "input_per_mtok": plain(v.input_per_mtok),
        "cached_input_per_mtok": (
            None if v.cached_input_per_mtok is None else plain(v.cached_input_per_mtok)
        ),
        "cache_write_per_mtok": (
            None if v.cache_write_per_mtok is None else plain(v.cache_write_per_mtok)
        ),
        "output_per_mtok": plain(v.output_per_mtok),
        "per_request": plain(v.per_request),
        "units": {name: plain(price) for name, price in sorted(v.units.items())},
    }


REPLAYED_HEADER = "Idempotent-Replayed"
