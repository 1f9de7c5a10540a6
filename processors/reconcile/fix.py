"""Reconcile's corrections: append to the ledger, each correction at most once, never edit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from processors.ledger import IdempotencyConflict, LedgerPolicy, post_entry
from processors.ledger.repair import rebuild_balance, rebuild_grants
from processors.metering import Meter
from processors.reconcile.keys import adjustment_key
from processors.reconcile.report import Finding, OnProgress, ReconcileResult
from processors.replay import to_raw, uninterrupted
from processors.topic_range import fetch_records, make_consumer
from schemas import topics
from schemas.money import format_micros


@dataclass
class FixResult:
    """What --fix did: adjustments posted (or found already posted), events metered, balances."""

    adjusted: int = 0
    adjusted_micros: int = 0
    already: int = 0
    metered: int = 0
    balances: int = 0
    grants: int = 0  # grants whose remaining was rebuilt from their burns
    overdrafts: int = 0  # overdraft figures rebuilt
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
    out: FixResult | None = None,
) -> FixResult:
    """Correct the findings by appending to the ledger, each correction at most once.

    - missing, event metered (debited_events has it, the debit row is gone): an adjustment of
      -expected, key reconcile:missing:<source>:<event_id>;
    - missing, never metered: the record is re-read and fed to Meter.process, the worker's own
      path, so it is debited as usage exactly once (a later replay finds a duplicate; an
      adjustment here would let that replay charge it a second time);
    - amount: an adjustment of the difference, key reconcile:amount:<source>:<event_id>:
      <expected>:<n> (n = reconcile adjustments already on the event, so a price corrected
      twice is corrected twice, and two concurrent runs post one row);
    - extra: refunded (key reconcile:extra:<source>:<event_id>:<n>) only with fix_extra: an
      event can be absent because retention deleted it or the window was too narrow;
    - balance: the balance column is rebuilt from the ledger (see ledger/repair.py);
    - grant, overdraft: each grant's remaining is rebuilt from its recorded burns and the
      overdraft from Σ remaining − the ledger sum (ledger/repair.py rebuild_grants), once per
      account, after any balance rebuild;
    - hold: reported as a conflict (history is not rewritten).

    `out`, when given, is filled as each correction commits (each is one transaction), so a
    caller interrupted mid-run can say what was done.
    """
    out = out if out is not None else FixResult()
    todo = len(result.findings)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        unmetered = [f for f in result.findings if f.kind == "missing" and not f.metered]
        if unmetered:
            # One transaction of any size: Ctrl-C rolls it back rather than wait for it.
            await _meter(unmetered, result.topic, bootstrap, pool, policy, max_event_bytes, out)
        done = len(unmetered)
        async with pool.acquire() as conn:
            rebuilt: set[str] = set()
            # Each correction in flight when Ctrl-C comes is finished and counted, then the
            # run stops (uninterrupted): each is one small transaction.
            for f in result.findings:
                if f.kind == "balance":
                    await uninterrupted(_rebuild_balance(conn, f.account_id, policy, out))
                elif f.kind in ("grant", "overdraft"):
                    if f.account_id not in rebuilt:
                        rebuilt.add(f.account_id)
                        grants = await rebuild_grants(conn, account_id=f.account_id)
                        out.grants += grants.grants_changed
                        out.overdrafts += grants.overdraft_before_micros != grants.overdraft_micros
                        if not grants.consistent:
                            out.conflicts.append(
                                f"{f.account_id}: its grants hold less than its balance; no "
                                "overdraft explains it (inspect credit_grants and grant_burns)"
                            )
                elif f.kind == "hold":
                    out.conflicts.append(
                        f"hold {f.event_id} of {f.account_id}: its settlement breaks "
                        "invariant 8; history is not rewritten, inspect it by hand"
                    )
                elif f.kind == "extra" and not fix_extra:
                    out.skipped_extra += 1
                elif f.kind != "missing" or f.metered:
                    await uninterrupted(_adjust(conn, f, policy, out))
                else:
                    continue
                done += 1
                if on_progress is not None:
                    on_progress(done, todo)
    finally:
        await pool.close()
    return out


async def _rebuild_balance(
    conn: asyncpg.Connection, account_id: str, policy: LedgerPolicy, out: FixResult
) -> None:
    repair = await rebuild_balance(conn, account_id=account_id, policy=policy)
    out.balances += repair.changed


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
    out: FixResult,
) -> None:
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
    out.metered += outcome.debited
