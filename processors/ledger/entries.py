"""Single ledger writes for the API: allocations, deductions, coupons, refunds, adjustments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from processors.ledger import account_queries, grant_queries, queries
from processors.ledger.grants import GrantBook, add_grant
from processors.ledger.models import (
    LEDGER_TYPES,
    AccountState,
    Burn,
    CapExceeded,
    Grant,
    GrantTerms,
    IdempotencyConflict,
    InsufficientCredit,
    LedgerPolicy,
    LedgerRow,
    UnknownAccount,
    check_totals,
    month_of,
)
from processors.ledger.state import evaluate

# Types that count towards the monthly spend (and so against the cap).
_SPEND_TYPES = {"usage", "deduction"}
# What post_entry writes: usage comes through debit_batch, expiration through expire_grants.
_ENTRY_TYPES = tuple(t for t in LEDGER_TYPES if t not in ("usage", "expiration"))


@dataclass(frozen=True, slots=True)
class EntryResult:
    """The ledger row written (or found, on an idempotent replay) and the account after it,
    with the grant a credit created or the grants a debit burned."""

    row: LedgerRow
    account: AccountState
    replayed: bool
    grant: Grant | None = None
    burns: tuple[Burn, ...] = ()


async def post_entry(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    type: str,
    amount_micros: int,
    reason: str | None,
    idempotency_key: str | None,
    policy: LedgerPolicy,
    enforce_limits: bool = False,
    create_account: bool = True,
    model: str | None = None,
    request_hash: bytes | None = None,
    priced: dict[str, Any] | None = None,
    grant: GrantTerms | None = None,
    now: datetime | None = None,
) -> EntryResult:
    """Append one signed amount to an account's ledger, in its own transaction (or savepoint).

    The ledger owns idempotency: with an idempotency key, a second write returns the original
    row when it is the same request, and raises IdempotencyConflict otherwise. The same request
    is the same request_hash when the caller identifies its request by one (a priced deduction:
    its amount may differ now), else the same (type, amount, reason). `priced` is kept with the
    row so a replay can answer with the pricing of the original; a credit's replay must also
    carry the same grant terms.

    A credit creates a grant with `grant`'s terms (default: paid, priority 50, never expires)
    that repays any overdraft first; a debit burns grants in DESIGN order and records the burn.
    With enforce_limits, a debit that would make available (balance less active holds)
    negative or this month's spend plus holds pass the cap is refused (InsufficientCredit,
    CapExceeded).
    """
    if type not in _ENTRY_TYPES:
        raise ValueError(f"type must be one of {_ENTRY_TYPES}, got {type!r}")
    at = now or datetime.now(UTC)
    current_month = month_of(at)
    async with conn.transaction():
        if create_account:
            await queries.ensure_accounts(conn, account_ids=[account_id], tier=policy.default_tier)
        states = await queries.lock_accounts(conn, account_ids=[account_id], month=current_month)
        state = states.get(account_id)
        if state is None:
            raise UnknownAccount(account_id)
        if idempotency_key is not None:
            original = await queries.find_idempotent_row(
                conn, account_id=account_id, idempotency_key=idempotency_key
            )
            if original is not None:
                if not same_request(original, type, amount_micros, reason, request_hash):
                    raise IdempotencyConflict(idempotency_key, original)
                return await _replay(conn, original, state, idempotency_key, grant)
        spends = type in _SPEND_TYPES and amount_micros < 0
        if enforce_limits and amount_micros < 0:
            debit = -amount_micros
            if state.available_micros - debit < 0:
                raise InsufficientCredit(
                    account_id, state.balance_micros, debit, held_micros=state.held_micros
                )
            cap = state.monthly_cap_micros
            committed = state.monthly_spend_micros + state.held_micros
            if spends and cap is not None and committed + debit > cap:
                raise CapExceeded(
                    account_id, state.monthly_spend_micros, cap, debit, state.held_micros
                )
        spend_after = state.monthly_spend_micros - (amount_micros if spends else 0)
        # Before the write: Postgres' BIGINT refusal would be a bare int64 error.
        check_totals(account_id, amount_micros, state.balance_micros + amount_micros, spend_after)
        state.balance_micros += amount_micros
        state.monthly_spend_micros = spend_after
        (row,) = await queries.insert_ledger_rows(
            conn,
            account_ids=[account_id],
            types=[type],
            amounts=[amount_micros],
            balances_after=[state.balance_micros],
            reasons=[reason],
            idempotency_keys=[idempotency_key],
            sources=[None],
            event_ids=[None],
            models=[model],
            occurred_ats=[None],
            request_hashes=[request_hash],
            priced=[priced],
        )
        created: Grant | None = None
        burns: list[Burn] = []
        if amount_micros > 0:
            created, repaid = await add_grant(
                conn,
                state,
                transaction_id=row.id,
                amount_micros=amount_micros,
                terms=grant or GrantTerms(),
                reason=reason,
                at=at,
            )
            burns = [] if repaid is None else [repaid]
        elif amount_micros < 0:
            book = await GrantBook.load(conn, account_ids=[account_id], at=at)
            burns = book.debit(
                state, transaction_id=row.id, amount_micros=-amount_micros, model=model
            )
            await book.flush(conn)
        alerts = evaluate(state, policy, current_month)
        await queries.save_account_states(conn, states=[state])
        if spends:
            # Only spend moves the month's row (and its alerted threshold); a credit leaves it.
            await queries.add_monthly_spend(
                conn,
                account_ids=[account_id],
                months=[current_month],
                spends=[-amount_micros],
                alerted_pcts=[state.alerted_pct],
            )
        await queries.queue_alerts(conn, alerts=alerts)
    return EntryResult(row, state, replayed=False, grant=created, burns=tuple(burns))


async def _replay(
    conn: asyncpg.Connection,
    original: LedgerRow,
    state: AccountState,
    key: str,
    terms: GrantTerms | None,
) -> EntryResult:
    """The original write of a key, with its grant and burns; IdempotencyConflict when the
    caller's grant terms (a credit without any has the default ones, as when it is written)
    are not the original grant's."""
    grant = await grant_queries.grant_of_transaction(conn, transaction_id=original.id)
    if grant is not None and not same_terms(grant, terms or GrantTerms()):
        raise IdempotencyConflict(key, original)
    burns = await grant_queries.burns_of(conn, transaction_ids=[original.id])
    return EntryResult(original, state, replayed=True, grant=grant, burns=tuple(burns))


def same_terms(grant: Grant, terms: GrantTerms) -> bool:
    """Whether a replayed credit asks for the grant the original made."""
    # An effective_at left to the ledger ("now") cannot differ between two requests.
    return (grant.category, grant.priority, grant.expires_at, grant.applies_to) == (
        terms.category,
        terms.priority,
        terms.expires_at,
        terms.applies_to,
    ) and (terms.effective_at is None or terms.effective_at == grant.effective_at)


def same_request(
    original: LedgerRow,
    type: str,
    amount_micros: int,
    reason: str | None,
    request_hash: bytes | None,
) -> bool:
    """Whether a keyed write repeats the one that made `original` (see post_entry)."""
    if original.request_hash is not None or request_hash is not None:
        return original.type == type and original.request_hash == request_hash
    return (original.type, original.amount_micros, original.reason) == (type, amount_micros, reason)


async def set_monthly_cap(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    cap_micros: int | None,
    policy: LedgerPolicy,
    now: datetime | None = None,
) -> AccountState:
    """Set (or clear, with None) the monthly cap and re-evaluate the blocked state."""
    if cap_micros is not None and cap_micros <= 0:
        raise ValueError("monthly_cap must be positive, or null for no cap")
    current_month = month_of(now or datetime.now(UTC))
    async with conn.transaction():
        await queries.ensure_accounts(conn, account_ids=[account_id], tier=policy.default_tier)
        state = (await queries.lock_accounts(conn, account_ids=[account_id], month=current_month))[
            account_id
        ]
        await account_queries.update_monthly_cap(conn, account_id=account_id, cap_micros=cap_micros)
        state.monthly_cap_micros = cap_micros
        if cap_micros is None or state.monthly_spend_micros * 100 // cap_micros < state.alerted_pct:
            # A new cap starts its threshold alerts afresh.
            state.alerted_pct = 0
            await account_queries.reset_cap_alerts(conn, account_id=account_id, month=current_month)
        alerts = evaluate(state, policy, current_month)
        await queries.save_account_states(conn, states=[state])
        await queries.add_monthly_spend(
            conn,
            account_ids=[account_id],
            months=[current_month],
            spends=[0],
            alerted_pcts=[state.alerted_pct],
        )
        await queries.queue_alerts(conn, alerts=alerts)
    return state


async def read_account(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, now: datetime | None = None
) -> AccountState | None:
    """The account's state without locking (for reads such as balance and authorize)."""
    states = await queries.read_accounts(
        conn, account_ids=[account_id], month=month_of(now or datetime.now(UTC))
    )
    return states.get(account_id)


async def read_account_or_new(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: str,
    default_tier: str,
    now: datetime | None = None,
) -> AccountState:
    """The account's state; one the ledger has never seen reads as ensure_accounts would
    create it: balance 0, the default tier with its default cap and price multiplier."""
    state = await read_account(conn, account_id=account_id, now=now)
    if state is not None:
        return state
    exists, cap = await account_queries.tier_default_cap(conn, tier=default_tier)
    multiplier = await account_queries.tier_multiplier(conn, tier=default_tier)
    return AccountState(
        account_id=account_id,
        balance_micros=0,
        tier=default_tier,
        monthly_cap_micros=cap,
        monthly_spend_micros=0,
        alerted_pct=0,
        blocked=False,
        low_balance_alerted=False,
        price_multiplier=multiplier if multiplier is not None else Decimal(1),
    )
