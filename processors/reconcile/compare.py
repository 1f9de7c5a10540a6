"""Reconcile's comparison: read the topic range, price each event as the ledger did, compare
with the ledger in one SQL pass. Writes nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from processors import catalog as catalog_db
from processors.ledger import LedgerPolicy
from processors.ledger.queries import debited_accounts
from processors.metering import DeadLetter, validate
from processors.pricing import Catalog, Terms, Unpriced, price_event
from processors.reconcile import queries as q
from processors.reconcile.keys import parse_adjustment_key
from processors.reconcile.report import Finding, OnProgress, ReconcileResult
from processors.replay import to_raw
from processors.topic_range import check_window, make_consumer, read_range, resolve_range
from schemas import topics
from schemas.bounds import CostOutOfBounds, check_cost_micros
from schemas.event import UsageEvent

log = logging.getLogger("meterline.reconcile")

_COPY_CHUNK = 50_000


def expected_micros(event: UsageEvent, catalog: Catalog, terms: Terms) -> int | None:
    """What the ledger should charge for an event under these terms; None when unpriced.

    CostOutOfBounds when the cost is beyond what one charge may be (it would not fit the
    BIGINT column the expected charges are compared in).
    """
    version = catalog.version_at(event.model, event.occurred_at)
    if version is None:
        return None
    try:
        return check_cost_micros(price_event(event, version, terms).cost_micros)
    except Unpriced:
        return None


@dataclass(frozen=True, slots=True)
class _Prices:
    """The catalog, and the terms a debit would apply now to an event never metered."""

    catalog: Catalog
    multipliers: dict[str, Decimal]  # each account's current tier multiplier
    default: Decimal  # the default tier's: accounts not yet created
    policy: LedgerPolicy

    def current_terms(self, account_id: str) -> Terms:
        """The terms a debit of this account would apply now."""
        return self.policy.terms(self.multipliers.get(account_id, self.default))


async def _load_prices(conn: asyncpg.Connection, policy: LedgerPolicy) -> _Prices:
    catalog = await catalog_db.load_catalog(conn)
    multipliers = await q.fetch_account_multipliers(conn)
    default = await q.fetch_tier_multiplier(conn, tier=policy.default_tier)
    return _Prices(
        catalog=catalog,
        multipliers=multipliers,
        default=default if default is not None else Decimal(1),
        policy=policy,
    )


async def reconcile(
    *,
    bootstrap: str,
    database_url: str,
    topic: str,
    start: datetime,
    end: datetime,
    policy: LedgerPolicy,
    grace: timedelta = timedelta(minutes=10),
    max_event_bytes: int = topics.MAX_EVENT_BYTES,
    on_progress: OnProgress | None = None,
) -> ReconcileResult:
    """Compare the events with occurred_at in [start, end) with the ledger; writes nothing.

    The topic is read from `grace` before `start` to `grace` after `end` (by record
    timestamp), so events published a little after they occurred are still seen.
    """
    check_window(start, end)
    result = ReconcileResult(topic=topic, start=start, end=end)
    began = time.monotonic()
    consumer = make_consumer(bootstrap)
    opened: list[asyncpg.Connection] = []
    try:
        # Kafka or Postgres unreachable: what did open is closed before the error goes up.
        await consumer.start()
        conn: asyncpg.Connection = await asyncpg.connect(database_url)
        opened.append(conn)
        # A second connection reads the stored terms while the first COPYs the previous chunk.
        terms_conn: asyncpg.Connection = await asyncpg.connect(database_url)
        opened.append(terms_conn)
        rng = await resolve_range(consumer, topic, start=start - grace, end=end + grace)
        result.truncated = dict(rng.truncated)
        await q.create_work_tables(conn)
        prices = await _load_prices(conn, policy)
        pending: asyncio.Task[None] | None = None
        rows: list[tuple[Any, ...]] = []
        async for records in read_range(consumer, rng, max_records=20_000):
            await _expect(records, rows, prices, result, start, end, max_event_bytes, terms_conn)
            result.read += len(records)
            if len(rows) >= _COPY_CHUNK:
                if pending is not None:
                    await pending
                # COPY this chunk while the next one is read and priced.
                pending = asyncio.ensure_future(q.copy_expected(conn, rows=rows))
                rows = []
            if on_progress is not None:
                on_progress(result.read, rng.total)
        if pending is not None:
            await pending
        if rows:
            await q.copy_expected(conn, rows=rows)
        result.distinct = await q.count_distinct_expected(conn)
        await q.copy_adjusted(conn, rows=await _earlier_adjustments(conn))
        for r in await q.compare_with_ledger(conn, start=start, end=end):
            result.findings.append(_finding(r))
        for r in await q.fetch_balance_mismatches(conn):
            result.findings.append(
                Finding(
                    "balance",
                    r["account_id"],
                    expected_micros=r["ledger_micros"],
                    charged_micros=r["balance_micros"],
                )
            )
        result.findings.extend(await _state_findings(conn))
        await _set_conflicting_apart(conn, result)
        missing = [f for f in result.findings if f.kind == "missing"]
        if missing:
            metered = await q.fetch_metered_keys(
                conn,
                sources=[f.source or "" for f in missing],
                event_ids=[f.event_id or "" for f in missing],
            )
            result.findings = [
                f
                if f.kind != "missing" or (f.source, f.event_id) in metered
                else replace(f, metered=False)
                for f in result.findings
            ]
    finally:
        for c in reversed(opened):
            await c.close()
        await consumer.stop()
    result.seconds = time.monotonic() - began
    return result


async def _set_conflicting_apart(conn: asyncpg.Connection, result: ReconcileResult) -> None:
    """A missing debit whose (source, event_id) was debited for another account is no finding:
    the worker dead-lettered that record as conflicting_event (DESIGN invariant 4)."""
    missing = [f for f in result.findings if f.kind == "missing"]
    if not missing:
        return
    owners = await debited_accounts(
        conn,
        sources=[f.source or "" for f in missing],
        event_ids=[f.event_id or "" for f in missing],
        occurred_ats=[None] * len(missing),
    )
    kept = []
    for f in result.findings:
        owner = owners.get((f.source or "", f.event_id or ""))
        if f.kind == "missing" and owner is not None and owner != f.account_id:
            result.conflicting.append((f.source or "", f.event_id or "", f.account_id))
        else:
            kept.append(f)
    result.findings = kept


async def _state_findings(conn: asyncpg.Connection) -> list[Finding]:
    """Invariants 7 and 8 over the whole database: grants, overdrafts, settled holds."""
    found = [
        Finding(
            "grant",
            r["account_id"],
            source="grant",
            event_id=str(r["grant_id"]),
            expected_micros=r["expected_micros"],
            charged_micros=r["remaining_micros"],
        )
        for r in await q.fetch_grant_mismatches(conn)
    ]
    found += [
        Finding(
            "overdraft",
            r["account_id"],
            expected_micros=r["expected_micros"],
            charged_micros=r["overdraft_micros"],
        )
        for r in await q.fetch_overdraft_mismatches(conn)
    ]
    found += [
        Finding("hold", r["account_id"], source="hold", event_id=r["reservation_id"])
        for r in await q.fetch_hold_anomalies(conn)
    ]
    return found


async def _expect(
    records: Sequence[Any],
    rows: list[tuple[Any, ...]],
    prices: _Prices,
    result: ReconcileResult,
    start: datetime,
    end: datetime,
    max_event_bytes: int,
    terms_conn: asyncpg.Connection,
) -> None:
    """Validate and price a batch of records; append the expected rows of those in range."""
    invalid = result.invalid
    events: list[tuple[Any, UsageEvent]] = []
    for rec in records:
        ev = validate(to_raw(rec), max_bytes=max_event_bytes)
        if isinstance(ev, DeadLetter):
            invalid[ev.reason] = invalid.get(ev.reason, 0) + 1
            continue
        if not start <= ev.occurred_at < end:
            result.outside += 1
            continue
        events.append((rec, ev))
    if not events:
        return
    stored = await q.fetch_rating_terms(
        terms_conn,
        sources=[ev.source for _, ev in events],
        event_ids=[ev.event_id for _, ev in events],
        occurred_ats=[ev.occurred_at for _, ev in events],
    )
    catalog = prices.catalog
    for rec, ev in events:
        result.in_range += 1
        terms = stored.get((ev.source, ev.event_id)) or prices.current_terms(ev.account_id)
        try:
            expected = expected_micros(ev, catalog, terms)
        except (CostOutOfBounds, ArithmeticError, ValueError) as exc:
            log.warning("event %s/%s cannot be priced: %s", ev.source, ev.event_id, exc)
            result.unpriceable.append((ev.source, ev.event_id, str(exc)))
            expected = None  # compared like an unpriced event: reported, not a finding
        else:
            result.unpriced += expected is None
        rows.append((ev.source, ev.event_id, ev.account_id, expected, rec.partition, rec.offset))


async def _earlier_adjustments(conn: asyncpg.Connection) -> list[tuple[str, str, str, int]]:
    out = []
    for r in await q.fetch_reconcile_adjustments(conn):
        parsed = parse_adjustment_key(r["idempotency_key"])
        if parsed is not None:
            _, source, event_id = parsed
            out.append((source, event_id, r["account_id"], -int(r["amount_micros"])))
    return out


def _finding(r: asyncpg.Record) -> Finding:
    usage = r["usage_micros"]
    # A sum (numeric in SQL, so it cannot overflow there) of earlier adjustments.
    adjusted = None if r["adjusted_micros"] is None else int(r["adjusted_micros"])
    if not r["seen"]:
        kind = "extra"
    elif usage is None and adjusted is None:
        kind = "missing"
    else:
        kind = "amount"
    return Finding(
        kind=kind,
        account_id=r["account_id"],
        source=r["source"],
        event_id=r["event_id"],
        expected_micros=r["expected_micros"] or 0,
        charged_micros=(usage or 0) + (adjusted or 0),
        adjustments=r["adjustments"],
        partition=r["kafka_partition"],
        offset=r["kafka_offset"],
    )
