"""Ledger state → the wire models of the user routes (and the account reads they share)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import asyncpg

from processors.ledger import AccountState, Burn, EntryResult, Grant, Hold, LedgerRow
from processors.pricing import PriceVersion, plain
from schemas.api_credits import BalanceOut, EntryOut, GrantBurnOut, LedgerRowOut, money_or_none
from schemas.api_grants import GrantOut, ReservationOut
from schemas.money import format_micros


def balance_out(state: AccountState) -> BalanceOut:
    """The balance answer; `blocked` is computed from the live balance, spend and cap."""
    reason = state.should_block()
    return BalanceOut(
        account_id=state.account_id,
        balance=format_micros(state.balance_micros),
        available=format_micros(state.available_micros),
        held=format_micros(state.held_micros),
        monthly_spend=format_micros(state.monthly_spend_micros),
        monthly_cap=money_or_none(state.monthly_cap_micros),
        cap_remaining=money_or_none(state.cap_remaining_micros),
        tier=state.tier,
        blocked=reason is not None,
        blocked_reason=cast(Any, reason),
    )


def row_out(row: LedgerRow | asyncpg.Record, burns: Sequence[Burn] = ()) -> LedgerRowOut:
    """A ledger row (dataclass or database record) on the wire, with the grants it burned."""
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
        grants=[
            GrantBurnOut(
                grant_id=b.grant_id, amount=format_micros(b.amount_micros), kind=cast(Any, b.kind)
            )
            for b in burns
        ],
    )


def entry_out(result: EntryResult) -> EntryOut:
    """A ledger write's answer: the row and the balance right after it.

    On a replay the balance is the one the original write left (the row's balance_after),
    so the same request always gets the same answer.
    """
    return EntryOut(
        transaction=row_out(result.row, result.burns),
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


def grant_status(grant: Grant, now: datetime) -> str:
    """pending (not yet effective), expired (past expires_at), used (nothing left) or active."""
    if grant.expires_at is not None and grant.expires_at <= now:
        return "expired"
    if grant.remaining_micros == 0:
        return "used"
    if grant.effective_at > now:
        return "pending"
    return "active"


def grant_out(grant: Grant, now: datetime) -> GrantOut:
    """A grant on the wire, its status as of now."""
    return GrantOut(
        grant_id=grant.grant_id,
        account_id=grant.account_id,
        category=cast(Any, grant.category),
        amount=format_micros(grant.amount_micros),
        remaining=format_micros(grant.remaining_micros),
        priority=grant.priority,
        effective_at=grant.effective_at,
        expires_at=grant.expires_at,
        applies_to=None if grant.applies_to is None else list(grant.applies_to),
        status=cast(Any, grant_status(grant, now)),
        reason=grant.reason,
        transaction_id=grant.transaction_id,
        created_at=grant.created_at,
    )


def hold_out(hold: Hold, *, available_micros: int | None, replayed: bool = False) -> ReservationOut:
    """A hold (reservation) on the wire."""
    return ReservationOut(
        reservation_id=hold.reservation_id,
        account_id=hold.account_id,
        amount=format_micros(hold.amount_micros),
        status=cast(Any, hold.status),
        expires_at=hold.expires_at,
        created_at=hold.created_at,
        closed_at=hold.closed_at,
        settled_transaction_id=hold.settled_transaction_id,
        idempotency_key=hold.idempotency_key,
        metadata=hold.metadata,
        available=money_or_none(available_micros),
        replayed=replayed,
    )


REPLAYED_HEADER = "Idempotent-Replayed"
