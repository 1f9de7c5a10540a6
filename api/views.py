"""Ledger state → the wire models of the user routes (and the account reads they share)."""

from __future__ import annotations

from typing import Any, cast

import asyncpg

from processors.ledger import AccountState, EntryResult, LedgerRow
from processors.pricing import PriceVersion, plain
from schemas.api_credits import BalanceOut, EntryOut, LedgerRowOut, money_or_none
from schemas.money import format_micros


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
