"""debit_batch: a batch of priced usage events in one transaction, each debited at most once."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg

from processors.ledger import queries
from processors.ledger.models import BatchResult, LedgerPolicy, month_of
from processors.ledger.state import evaluate
from processors.pricing import PriceVersion, Terms, Unpriced, price_event
from schemas.event import UsageEvent


@dataclass(frozen=True, slots=True)
class RatedEvent:
    """A valid event, the price version in force at its occurred_at, and where it came from."""

    event: UsageEvent
    version: PriceVersion
    provider: str | None = None
    partition: int | None = None
    offset: int | None = None


def _row_json(n: int, rated: RatedEvent, cost_micros: int, terms: Terms) -> str:
    """The event as JSON plus what the batch adds (position, cost, version, terms, origin).

    Rows travel to Postgres as one JSON document (jsonb_to_recordset) rather than as 20
    parameter arrays: encoding arrays element by element cost more client CPU than the rest
    of the batch together.
    """
    doc = rated.event.model_dump_json(exclude_none=True)
    extra = json.dumps(
        {
            "n": n,
            "cost": cost_micros,
            "pv": rated.version.id,
            "pm": str(terms.multiplier),
            "fee": str(terms.byok_fee_pct),
            "kp": rated.partition,
            "ko": rated.offset,
            "rp": rated.provider,
        }
    )
    return doc[:-1] + "," + extra[1:]


async def debit_batch(
    conn: asyncpg.Connection,
    events: list[RatedEvent],
    *,
    policy: LedgerPolicy,
    now: datetime | None = None,
) -> BatchResult:
    """Debit every event not debited before, in one transaction, in input order per account.

    Duplicates — within the batch or already in usage_events — are counted, not debited.
    Accounts seen for the first time are created with the policy's default tier. Usage is a
    fact: it is recorded even when it overdraws or passes the cap; the account is then blocked.
    """
    result = BatchResult()
    if not events:
        return result
    current_month = month_of(now or datetime.now(UTC))
    async with conn.transaction():
        seen: set[tuple[str, str]] = set()
        batch_dups: list[tuple[str, str]] = []
        candidates: list[tuple[int, RatedEvent]] = []
        for position, rated in enumerate(events):
            key = (rated.event.source, rated.event.event_id)
            if key in seen:
                batch_dups.append(key)
            else:
                seen.add(key)
                candidates.append((position, rated))

        accounts = sorted({r.event.account_id for _, r in candidates})
        await queries.ensure_accounts(conn, account_ids=accounts, tier=policy.default_tier)
        states = await queries.lock_accounts(conn, account_ids=accounts, month=current_month)

        priced: list[tuple[RatedEvent, int]] = []
        docs: list[str] = []
        for position, rated in candidates:
            terms = policy.terms(states[rated.event.account_id].price_multiplier)
            try:
                cost = price_event(rated.event, rated.version, terms)
            except Unpriced as exc:
                result.unpriced.append((position, str(exc)))
                continue
            docs.append(_row_json(len(priced), rated, cost.cost_micros, terms))
            priced.append((rated, cost.cost_micros))

        new_positions: set[int] = set()
        if docs:
            new_positions = await queries.insert_usage_and_ledger(
                conn, rows_json="[" + ",".join(docs) + "]"
            )

        spend: dict[tuple[str, date], int] = defaultdict(int)
        daily: dict[tuple[str, date, str, str], list[int]] = {}
        dups = list(batch_dups)
        for n, (rated, cost_micros) in enumerate(priced):
            ev = rated.event
            if n not in new_positions:
                dups.append((ev.source, ev.event_id))
                continue
            state = states[ev.account_id]
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
