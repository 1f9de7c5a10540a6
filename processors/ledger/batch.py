"""debit_batch: a batch of priced usage events in one transaction, each debited at most once."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import asyncpg

from processors.ledger import grant_queries, queries
from processors.ledger.grants import GrantBook
from processors.ledger.json_rows import json_rows
from processors.ledger.models import BatchResult, LedgerPolicy, month_of
from processors.ledger.state import evaluate
from processors.pricing import PriceVersion, Terms, price_event, unpriced_unit
from schemas.event import UsageEvent


class RatedEvent(NamedTuple):
    """A valid event, the price version in force at its occurred_at, and where it came from
    (a named tuple: one is built per event)."""

    event: UsageEvent
    version: PriceVersion
    provider: str | None = None
    partition: int | None = None
    offset: int | None = None


def _row(n: int, rated: RatedEvent, cost_micros: int, terms: Terms) -> dict[str, Any]:
    """The event's columns plus what the batch adds (position, cost, version, terms, origin).

    Rows travel to Postgres as one JSON document (json_rows), built from the validated event's
    attributes: no per-event JSON encoding (model_dump_json was about a tenth of the batch's
    client CPU). Keys are the short column names of insert_usage_and_ledger's recordset, and a
    value equal to its column's default is left out (the statement fills it in): the document
    is about half the size, for orjson, the socket and Postgres' parser alike.
    """
    ev = rated.event
    row: dict[str, Any] = {
        "n": n,
        "s": ev.source,
        "e": ev.event_id,
        "a": ev.account_id,
        # In UTC: RFC 3339 allows offsets to ±23:59, Postgres' text input only to ±15:59.
        "t": ev.occurred_utc,
        "m": ev.model,
        "c": cost_micros,
        "pv": rated.version.id,
        "pm": str(terms.multiplier),
        "fee": str(terms.byok_fee_pct),
        "kp": rated.partition,
        "ko": rated.offset,
    }
    if rated.provider is not None:
        row["rp"] = rated.provider
    if ev.provider is not None:
        row["p"] = ev.provider
    if ev.input_tokens:
        row["i"] = ev.input_tokens
    if ev.cached_input_tokens:
        row["ci"] = ev.cached_input_tokens
    if ev.cache_write_tokens:
        row["cw"] = ev.cache_write_tokens
    if ev.output_tokens:
        row["o"] = ev.output_tokens
    if ev.reasoning_tokens:
        row["r"] = ev.reasoning_tokens
    if ev.requests != 1:
        row["q"] = ev.requests
    if ev.units:
        # Units as the event writes them on the wire (numbers, integers when whole).
        row["u"] = ev.model_dump(mode="json", include={"units"})["units"]
    if ev.byok:
        row["b"] = True
    if ev.reported_cost is not None:
        row["rc"] = format(ev.reported_cost, "f")
    if ev.metadata is not None:
        row["md"] = ev.metadata
    return row


def conflict_message(event: UsageEvent) -> str:
    """Why an event is dead-lettered as conflicting_event (never naming the other account)."""
    return (
        f"source {event.source!r}, event_id {event.event_id!r}: this idempotency key was already"
        " used by another account's event; not debited (give each event an event_id of its"
        " own, or its proxy a source of its own, and publish it again)"
    )


async def debit_batch(
    conn: asyncpg.Connection,
    events: list[RatedEvent],
    *,
    policy: LedgerPolicy,
    now: datetime | None = None,
) -> BatchResult:
    """Debit every event not debited before, in one transaction, in input order per account.

    Duplicates — an event whose (source, event_id) and account match an event debited before
    or earlier in the batch — are counted, not debited. An event whose (source, event_id) was
    debited before (or earlier in the batch) for another account is not a duplicate: it is
    named in result.conflicting, by position, for the caller to dead-letter as
    `conflicting_event`, and not debited. An unpriced event (a unit with no price, named in
    result.unpriced) is debited by no one, so it holds no key: a later copy of its key is
    judged as if it were not in the batch, as it would be in a batch of its own.
    Accounts seen for the first time are created with the policy's default tier. Usage is a
    fact: it is recorded even when it overdraws or passes the cap; the account is then blocked.
    """
    result = BatchResult()
    if not events:
        return result
    at = now or datetime.now(UTC)
    current_month = month_of(at)
    async with conn.transaction():
        # Only a key's first priced occurrence in the batch is a candidate; a later one is a
        # duplicate when the key's owner (below) is its account, else a conflict. An unpriced
        # occurrence is debited by no one, so it holds no key: when it did, another account's
        # later copy was dead-lettered as conflicting, and debited in a batch of its own.
        seen: dict[tuple[str, str], int] = {}  # key -> its first priced position
        later: list[tuple[int, int]] = []  # (position, its key's first priced position)
        candidates: list[tuple[int, RatedEvent]] = []
        for position, rated in enumerate(events):
            key = (rated.event.source, rated.event.event_id)
            first = seen.get(key)
            if first is not None:
                later.append((position, first))
                continue
            if rated.event.units:
                unpriced = unpriced_unit(rated.event, rated.version)
                if unpriced is not None:
                    result.unpriced.append((position, str(unpriced)))
                    continue
            seen[key] = position
            candidates.append((position, rated))

        accounts = sorted({r.event.account_id for _, r in candidates})
        await queries.ensure_accounts(conn, account_ids=accounts, tier=policy.default_tier)
        states = await queries.lock_accounts(conn, account_ids=accounts, month=current_month)

        priced: list[tuple[RatedEvent, int]] = []
        priced_at: list[int] = []  # each priced event's position in `events`
        terms_at: dict[Decimal, Terms] = {}  # by tier multiplier: one Terms per batch each
        docs: list[dict[str, Any]] = []
        for position, rated in candidates:
            multiplier = states[rated.event.account_id].price_multiplier
            terms = terms_at.get(multiplier)
            if terms is None:
                terms = terms_at[multiplier] = policy.terms(multiplier)
            cost = price_event(rated.event, rated.version, terms)  # priceable: checked above
            docs.append(_row(len(priced), rated, cost.cost_micros, terms))
            priced.append((rated, cost.cost_micros))
            priced_at.append(position)

        new_positions: dict[int, int] = {}
        if docs:
            new_positions = await queries.insert_usage_and_ledger(
                conn,
                rows_json=json_rows(docs),
                keys=[(r.event.source, r.event.event_id) for r, _ in priced],
            )
        # A key's owner: the account it was debited for before, else its first occurrence's
        # (first occurrence wins). A record of the owner is a duplicate, another's a conflict.
        dups: list[tuple[str, str]] = []
        conflicting: list[int] = []
        owner_at: dict[int, str] = {}  # first position -> the key's owner, where not its own
        taken = [n for n in range(len(priced)) if n not in new_positions]
        if taken:
            # The rare path (keys debited before): whose they are, from their usage rows.
            owners = await queries.debited_accounts(
                conn,
                sources=[priced[n][0].event.source for n in taken],
                event_ids=[priced[n][0].event.event_id for n in taken],
                occurred_ats=[priced[n][0].event.occurred_utc for n in taken],
            )
            for n in taken:
                ev = priced[n][0].event
                owner = owners.get((ev.source, ev.event_id), ev.account_id)
                if owner == ev.account_id:
                    dups.append((ev.source, ev.event_id))
                else:
                    owner_at[priced_at[n]] = owner
                    conflicting.append(priced_at[n])
        for position, first in later:
            ev = events[position].event
            if ev.account_id == owner_at.get(first, events[first].event.account_id):
                dups.append((ev.source, ev.event_id))
            else:
                conflicting.append(position)
        result.conflicting = [(p, conflict_message(events[p].event)) for p in sorted(conflicting)]

        spend: dict[tuple[str, date], int] = defaultdict(int)
        daily: dict[tuple[str, date, str, str], list[int]] = {}
        # One read of the accounts' open grants; the burns are decided here, in order.
        book = await GrantBook.load(conn, account_ids=accounts, at=at) if new_positions else None
        settles: list[tuple[str, str, int, str, str]] = []
        # By (hold, account): an event naming another account's hold settles nothing, and
        # must not stop the owner's event later in the batch from settling it.
        named: set[tuple[str, str]] = set()
        for n, (rated, cost_micros) in enumerate(priced):
            ev = rated.event
            transaction_id = new_positions.get(n)
            if transaction_id is None:
                continue  # a duplicate or a conflict, sorted out above
            state = states[ev.account_id]
            assert book is not None
            if cost_micros:
                book.debit(
                    state,
                    transaction_id=transaction_id,
                    amount_micros=cost_micros,
                    model=ev.model,
                    provider=rated.provider or ev.provider,
                )
            if ev.reservation_id is not None and (ev.reservation_id, ev.account_id) not in named:
                # The first debit naming a hold settles it; a later one settles nothing.
                named.add((ev.reservation_id, ev.account_id))
                settles.append(
                    (ev.reservation_id, ev.account_id, transaction_id, ev.source, ev.event_id)
                )
            state.balance_micros -= cost_micros
            occurred = ev.occurred_utc
            month = month_of(occurred)
            spend[(ev.account_id, month)] += cost_micros
            if month == current_month:
                state.monthly_spend_micros += cost_micros
            bucket = daily.setdefault(
                (ev.account_id, occurred.date(), ev.model, rated.provider or ""), [0] * 8
            )
            bucket[0] += 1
            bucket[1] += ev.input_tokens
            bucket[2] += ev.cached_input_tokens
            bucket[3] += ev.cache_write_tokens
            bucket[4] += ev.output_tokens
            bucket[5] += ev.reasoning_tokens
            bucket[6] += ev.requests
            bucket[7] += cost_micros
            result.debited += 1
            result.debited_micros += cost_micros

        if book is not None:
            await book.flush(conn)
        if settles:
            result.settled = await grant_queries.settle_holds(
                conn,
                reservation_ids=[x[0] for x in settles],
                account_ids=[x[1] for x in settles],
                transaction_ids=[x[2] for x in settles],
                sources=[x[3] for x in settles],
                event_ids=[x[4] for x in settles],
            )
        if result.debited:
            alerts = []
            touched = sorted({a for a, _ in spend})
            for account_id in touched:
                alerts.extend(evaluate(states[account_id], policy, current_month))
            await queries.save_account_states(conn, states=[states[a] for a in touched])
            keys = sorted(spend)
            await queries.add_monthly_spend(
                conn,
                account_ids=[a for a, _ in keys],
                months=[m for _, m in keys],
                spends=[spend[k] for k in keys],
                alerted_pcts=[states[a].alerted_pct if m == current_month else 0 for a, m in keys],
            )
            await queries.add_daily_usage(conn, rows=[(*k, *v) for k, v in sorted(daily.items())])
            await queries.queue_alerts(conn, alerts=alerts)
            result.alerts = len(alerts)
        if dups:
            await queries.record_duplicates(
                conn, sources=[s for s, _ in dups], event_ids=[e for _, e in dups]
            )
        result.duplicates = len(dups)
    return result
