"""post_credits: many credits (bulk allocations, monthly grants) in one transaction and a fixed
number of statements (unnest), as debit_batch does for usage, with post_entry's rules:
the ledger's idempotency, a grant per credit that repays the overdraft first, alerts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from processors.ledger import grant_queries, queries
from processors.ledger.entries import EntryResult, same_request, same_terms
from processors.ledger.grants import repay_overdraft
from processors.ledger.models import (
    Burn,
    GrantTerms,
    IdempotencyConflict,
    LedgerError,
    LedgerPolicy,
    LedgerRow,
    UnknownAccount,
    check_totals,
    month_of,
)
from processors.ledger.state import evaluate


@dataclass(frozen=True, slots=True)
class Credit:
    """One credit to write: a positive amount, its reason and idempotency key, its grant."""

    account_id: str
    amount_micros: int
    reason: str | None
    idempotency_key: str | None
    grant: GrantTerms | None = None  # None: an allocation's (paid, priority 50, never expires)


async def post_credits(
    conn: asyncpg.Connection,
    credits: Sequence[Credit],
    *,
    policy: LedgerPolicy,
    type: str = "allocation",
    create_accounts: bool = True,
    now: datetime | None = None,
) -> list[EntryResult | LedgerError]:
    """Write the credits in one transaction, in the given order per account; one result each.

    A result is the EntryResult written (or replayed: the key was used before, or earlier in
    this call, for the same credit) or the LedgerError that refuses that credit
    (IdempotencyConflict, UnknownAccount without create_accounts). Refusals are returned, not
    raised, so a caller can report every one; the others are written unless the caller
    raises inside its own transaction to undo them.
    """
    if any(c.amount_micros <= 0 for c in credits):
        raise ValueError("credits must be positive amounts")
    at = now or datetime.now(UTC)
    month = month_of(at)
    results: list[EntryResult | LedgerError | None] = [None] * len(credits)
    async with conn.transaction():
        ids = sorted({c.account_id for c in credits})
        if create_accounts:
            await queries.ensure_accounts(conn, account_ids=ids, tier=policy.default_tier)
        states = await queries.lock_accounts(conn, account_ids=ids, month=month)
        keyed = [c for c in credits if c.idempotency_key is not None]
        originals = await queries.find_idempotent_rows(
            conn,
            account_ids=[c.account_id for c in keyed],
            idempotency_keys=[c.idempotency_key or "" for c in keyed],
        )
        old_ids = [r.id for r in originals.values()]
        old_grants = await grant_queries.grants_of_transactions(conn, transaction_ids=old_ids)
        old_burns = await grant_queries.burns_of(conn, transaction_ids=old_ids)

        new: list[int] = []  # positions written by this call, in order
        first: dict[tuple[str, str], int] = {}  # a key's first position in this call
        for i, c in enumerate(credits):
            state = states.get(c.account_id)
            if state is None:
                results[i] = UnknownAccount(c.account_id)
                continue
            key = c.idempotency_key
            if key is not None:
                original = originals.get((c.account_id, key))
                if original is not None:
                    grant = old_grants.get(original.id)
                    results[i] = _replay_or_conflict(
                        c,
                        type,
                        original,
                        EntryResult(
                            original,
                            state,
                            replayed=True,
                            grant=grant,
                            burns=tuple(b for b in old_burns if b.transaction_id == original.id),
                        ),
                    )
                    continue
                if (c.account_id, key) in first:
                    continue  # answered after the first one is written
            try:
                check_totals(c.account_id, c.amount_micros, state.balance_micros + c.amount_micros)
            except LedgerError as exc:
                results[i] = exc  # refused before it is written: its key stays unused
                continue
            if key is not None:
                first[(c.account_id, key)] = i
            state.balance_micros += c.amount_micros
            new.append(i)
            results[i] = EntryResult(_pending(c, type, state.balance_micros), state, False)

        if new:
            await _write(conn, credits, new, results, type=type, at=at)
        for i, c in enumerate(credits):
            if results[i] is None:  # a key used twice in this call: as a replay of the first
                j = first[(c.account_id, c.idempotency_key or "")]
                earlier = results[j]
                assert isinstance(earlier, EntryResult)
                done = EntryResult(earlier.row, earlier.account, True, earlier.grant, earlier.burns)
                results[i] = _replay_or_conflict(c, type, earlier.row, done)
        touched = [states[a] for a in sorted({credits[i].account_id for i in new})]
        alerts = [a for s in touched for a in evaluate(s, policy, month)]
        await queries.save_account_states(conn, states=touched)
        await queries.queue_alerts(conn, alerts=alerts)
    out = [r for r in results if r is not None]
    assert len(out) == len(credits)
    return out


def _pending(c: Credit, type: str, balance_after: int) -> LedgerRow:
    # Stands for the row until the insert returns it (id and created_at are the database's).
    return LedgerRow(
        -1, c.account_id, type, c.amount_micros, balance_after, c.reason, c.idempotency_key, _T0
    )


_T0 = datetime.min.replace(tzinfo=UTC)


def _replay_or_conflict(
    c: Credit, type: str, original: LedgerRow, replay: EntryResult
) -> EntryResult | LedgerError:
    """The original write of c's key when c repeats it (post_entry's rule), else a conflict."""
    key = c.idempotency_key or ""
    if not same_request(original, type, c.amount_micros, c.reason, None):
        return IdempotencyConflict(key, original)
    # No terms are the default ones, as when the credit is written (post_entry's rule).
    if replay.grant is not None and not same_terms(replay.grant, c.grant or GrantTerms()):
        return IdempotencyConflict(key, original)
    return replay


async def _write(
    conn: asyncpg.Connection,
    credits: Sequence[Credit],
    new: list[int],
    results: list[EntryResult | LedgerError | None],
    *,
    type: str,
    at: datetime,
) -> None:
    """Insert the new rows, their grants and overdraft repayments: three statements."""
    pending = [results[i] for i in new]
    rows = await queries.insert_ledger_rows(
        conn,
        account_ids=[credits[i].account_id for i in new],
        types=[type] * len(new),
        amounts=[credits[i].amount_micros for i in new],
        balances_after=[r.row.balance_after_micros for r in pending if isinstance(r, EntryResult)],
        reasons=[credits[i].reason for i in new],
        idempotency_keys=[credits[i].idempotency_key for i in new],
        sources=[None] * len(new),
        event_ids=[None] * len(new),
        models=[None] * len(new),
        occurred_ats=[None] * len(new),
    )
    terms = [credits[i].grant or GrantTerms() for i in new]
    repaid = []
    for i, row in zip(new, rows, strict=True):
        result = results[i]
        assert isinstance(result, EntryResult)
        repaid.append(repay_overdraft(result.account, row.amount_micros))
    grants = await grant_queries.insert_grants(
        conn,
        account_ids=[r.account_id for r in rows],
        categories=[t.category for t in terms],
        amounts=[r.amount_micros for r in rows],
        remaining=[r.amount_micros - p for r, p in zip(rows, repaid, strict=True)],
        priorities=[t.priority for t in terms],
        effective_ats=[t.effective_at or at for t in terms],
        expires_ats=[t.expires_at for t in terms],
        applies_to=[t.applies_to for t in terms],
        transaction_ids=[r.id for r in rows],
        reasons=[r.reason for r in rows],
    )
    burns = [
        Burn(r.id, grants[r.id].grant_id, r.account_id, "overdraft", p)
        for r, p in zip(rows, repaid, strict=True)
        if p
    ]
    await grant_queries.insert_burns(conn, burns=burns)
    for i, row in zip(new, rows, strict=True):
        result = results[i]
        assert isinstance(result, EntryResult)
        own = tuple(b for b in burns if b.transaction_id == row.id)
        results[i] = EntryResult(row, result.account, False, grants[row.id], own)
