"""Reconcile: prove the ledger matches the stream, and correct it by appending, never editing.

Reads a range of usage.events without writing, prices every valid event with the version in
force at its occurred_at and the terms it was charged with (the tier multiplier and byok fee
stored on its usage row; for an event never metered, the terms a debit would apply now),
through the same price_event the ledger uses, COPYs the expected charges into a temp table and
compares them with the ledger in one SQL pass. A tier changed since is not a finding; a price
version corrected in the past is. Findings:

- missing: an event in the range with no usage debit;
- amount: the debit (plus earlier reconcile adjustments) differs from the expected charge,
  e.g. after a corrected price version effective in the past;
- extra: a usage debit whose occurred_at is in the range but whose event is not in the
  topic range read (retention, a window too narrow, or a debit with no event);
- balance: an account whose balance ≠ the sum of its ledger rows (all accounts).

Corrections (``fix``) are idempotent: adjustments go through post_entry with a key derived
from what they correct, and reconcile counts its own earlier adjustments as part of an
event's charge, so a second run finds nothing left to correct.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import asyncpg

from processors import catalog as catalog_db
from processors import reconcile_queries as q
from processors.ledger import IdempotencyConflict, LedgerPolicy, post_entry
from processors.ledger.repair import rebuild_balance
from processors.metering import DeadLetter, Meter, validate
from processors.pricing import Catalog, Terms, Unpriced, price_event
from processors.replay import to_raw
from processors.topic_range import (
    fetch_records,
    make_consumer,
    read_range,
    resolve_range,
)
from schemas import topics
from schemas.bounds import CostOutOfBounds, check_cost_micros
from schemas.event import UsageEvent
from schemas.money import format_micros

log = logging.getLogger("meterline.reconcile")

KINDS = ("missing", "amount", "extra", "balance")
_COPY_CHUNK = 50_000

OnProgress = Callable[[int, int], None]


def adjustment_key(kind: str, source: str, event_id: str, *parts: object) -> str:
    """'reconcile:<kind>:<source>:<event_id>[:<part>...]', source and event_id %-quoted."""
    return ":".join(
        ["reconcile", kind, quote(source, safe=""), quote(event_id, safe=""), *map(str, parts)]
    )


def parse_adjustment_key(key: str) -> tuple[str, str, str] | None:
    """(kind, source, event_id) of a key made by adjustment_key, else None."""
    parts = key.split(":")
    if len(parts) < 4 or parts[0] != "reconcile":
        return None
    return parts[1], unquote(parts[2]), unquote(parts[3])


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement between the stream and the ledger (or a balance and its ledger)."""

    kind: str
    account_id: str
    source: str | None = None
    event_id: str | None = None
    expected_micros: int = 0  # balance: the ledger sum
    charged_micros: int = 0  # usage debit + earlier reconcile adjustments; balance: the column
    adjustments: int = 0  # earlier reconcile adjustments on this event
    metered: bool = True  # missing: whether usage_events holds the event
    partition: int | None = None
    offset: int | None = None

    @property
    def difference_micros(self) -> int:
        """What the account still owes (negative: it was charged too much)."""
        return self.expected_micros - self.charged_micros

    def as_dict(self) -> dict[str, Any]:
        """JSON/CSV-ready: micros as ints and as decimal strings."""
        d = asdict(self)
        d["difference_micros"] = self.difference_micros
        for name in ("expected", "charged", "difference"):
            d[name] = format_micros(d[f"{name}_micros"])
        return d


@dataclass
class ReconcileResult:
    """What a reconcile read and found."""

    topic: str
    start: datetime
    end: datetime
    read: int = 0  # records read from the topic (grace included)
    in_range: int = 0  # valid events with occurred_at in [start, end)
    distinct: int = 0
    outside: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    unpriced: int = 0
    # Events in range nothing can price (a cost beyond the bound, a value pricing refuses):
    # (source, event_id, why), reported instead of stopping the whole reconcile.
    unpriceable: list[tuple[str, str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    truncated: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        """Events in range seen more than once on the topic (counted once)."""
        return self.in_range - self.distinct

    @property
    def clean(self) -> bool:
        """True when the ledger matches the stream and every balance its ledger."""
        return not self.findings

    def counts(self) -> dict[str, int]:
        """Findings per kind (every kind present, zero when none)."""
        out = dict.fromkeys(KINDS, 0)
        for f in self.findings:
            out[f.kind] += 1
        return out

    def by_account(self) -> dict[str, dict[str, int]]:
        """Per account: findings and the total difference (balance findings excluded)."""
        out: dict[str, dict[str, int]] = {}
        for f in self.findings:
            if f.kind == "balance":
                continue
            a = out.setdefault(f.account_id, {"findings": 0, "difference_micros": 0})
            a["findings"] += 1
            a["difference_micros"] += f.difference_micros
        return out

    def summary(self) -> dict[str, Any]:
        """Counts and timing, JSON-ready."""
        return {
            "topic": self.topic,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "read": self.read,
            "in_range": self.in_range,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "outside_range": self.outside,
            "invalid": dict(self.invalid),
            "unpriced": self.unpriced,
            "unpriceable": [
                {"source": s, "event_id": e, "reason": why} for s, e, why in self.unpriceable
            ],
            "findings": self.counts(),
            "truncated_partitions": {str(p): o for p, o in self.truncated.items()},
            "seconds": round(self.seconds, 3),
        }

    def write_report(self, path: Path) -> None:
        """JSON (summary, per account, findings) or CSV (one row per finding), by extension."""
        rows = [f.as_dict() for f in self.findings]
        if path.suffix.lower() == ".csv":
            cols = list(rows[0]) if rows else list(Finding("", "").as_dict())
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)
            return
        if path.suffix.lower() != ".json":
            raise ValueError(f"--report must end in .json or .csv, got {path.name!r}")
        doc = {
            "summary": self.summary(),
            "by_account": {
                a: {**v, "difference": format_micros(v["difference_micros"])}
                for a, v in sorted(self.by_account().items())
            },
            "findings": rows,
        }
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


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
    if end <= start:
        raise ValueError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    result = ReconcileResult(topic=topic, start=start, end=end)
    began = time.monotonic()
    consumer = make_consumer(bootstrap)
    await consumer.start()
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    # A second connection reads the stored terms while the first COPYs the previous chunk.
    terms_conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
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
        await terms_conn.close()
        await conn.close()
        await consumer.stop()
    result.seconds = time.monotonic() - began
    return result


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


async def _earlier_adjustments(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    out = []
    for r in await q.fetch_reconcile_adjustments(conn):
        parsed = parse_adjustment_key(r["idempotency_key"])
        if parsed is not None:
            _, source, event_id = parsed
            out.append((source, event_id, -int(r["amount_micros"])))
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


@dataclass
class FixResult:
    """What --fix did: adjustments posted (or found already posted), events metered, balances."""

    adjusted: int = 0
    adjusted_micros: int = 0
    already: int = 0
    metered: int = 0
    balances: int = 0
    skipped_extra: int = 0
    conflicts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


async def apply_fixes(
    result: ReconcileResult,
    *,
    bootstrap: str,
    database_url: str,
    policy: LedgerPolicy,
    fix_extra: bool = False,
    max_event_bytes: int = topics.MAX_EVENT_BYTES,
    on_progress: OnProgress | None = None,
) -> FixResult:
    """Correct the findings by appending to the ledger, each correction at most once.

    - missing, event metered (usage_events has it, the debit row is gone): an adjustment of
      -expected, key reconcile:missing:<source>:<event_id>;
    - missing, never metered: the record is re-read and fed to Meter.process, the worker's own
      path, so it is debited as usage exactly once (a later replay finds a duplicate; an
      adjustment here would let that replay charge it a second time);
    - amount: an adjustment of the difference, key reconcile:amount:<source>:<event_id>:
      <expected>:<n> (n = reconcile adjustments already on the event, so a price corrected
      twice is corrected twice, and two concurrent runs post one row);
    - extra: refunded (key reconcile:extra:<source>:<event_id>:<n>) only with fix_extra: an
      event can be absent because retention deleted it or the window was too narrow;
    - balance: the balance column is rebuilt from the ledger (see ledger/repair.py).
    """
    out = FixResult()
    todo = len(result.findings)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        unmetered = [f for f in result.findings if f.kind == "missing" and not f.metered]
        if unmetered:
            out.metered = await _meter(
                unmetered, result.topic, bootstrap, pool, policy, max_event_bytes
            )
        done = len(unmetered)
        async with pool.acquire() as conn:
            for f in result.findings:
                if f.kind == "balance":
                    repair = await rebuild_balance(conn, account_id=f.account_id, policy=policy)
                    out.balances += repair.changed
                elif f.kind == "extra" and not fix_extra:
                    out.skipped_extra += 1
                elif f.kind != "missing" or f.metered:
                    await _adjust(conn, f, policy, out)
                else:
                    continue
                done += 1
                if on_progress is not None:
                    on_progress(done, todo)
    finally:
        await pool.close()
    return out


async def _adjust(
    conn: asyncpg.Connection, f: Finding, policy: LedgerPolicy, out: FixResult
) -> None:
    source, event_id = f.source or "", f.event_id or ""
    if f.kind == "missing":
        key = adjustment_key("missing", source, event_id)
    elif f.kind == "amount":
        key = adjustment_key("amount", source, event_id, f.expected_micros, f.adjustments)
    else:
        key = adjustment_key("extra", source, event_id, f.adjustments)
    reason = (
        f"reconcile {f.kind} {source}/{event_id}: expected {format_micros(f.expected_micros)},"
        f" charged {format_micros(f.charged_micros)}"
    )
    try:
        entry = await post_entry(
            conn,
            account_id=f.account_id,
            type="adjustment",
            amount_micros=-f.difference_micros,
            reason=reason,
            idempotency_key=key,
            policy=policy,
        )
    except IdempotencyConflict as exc:
        out.conflicts.append(str(exc))
        return
    if entry.replayed:
        out.already += 1
    else:
        out.adjusted += 1
        out.adjusted_micros += -f.difference_micros


async def _meter(
    findings: Sequence[Finding],
    topic: str,
    bootstrap: str,
    pool: asyncpg.Pool,
    policy: LedgerPolicy,
    max_event_bytes: int,
) -> int:
    consumer = make_consumer(bootstrap)
    await consumer.start()
    try:
        records = await fetch_records(
            consumer, topic, [(f.partition or 0, f.offset or 0) for f in findings]
        )
    finally:
        await consumer.stop()

    async def refuse_dlq(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        return None  # priced a moment ago; if it fails now, the next reconcile reports it

    meter = Meter(pool, refuse_dlq, policy=policy, max_event_bytes=max_event_bytes)
    outcome = await meter.process([to_raw(r) for r in records])
    return outcome.debited
