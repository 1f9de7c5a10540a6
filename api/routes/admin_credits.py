"""Admin credit routes: allocate, bulk-allocate (all or nothing), system analytics, top spenders."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.deps import AdminKey, Pool, SettingsDep
from api.errors import Problem
from api.metrics import LEDGER_WRITES
from api.queries import admin as q
from api.query import day_range
from api.views import REPLAYED_HEADER, entry_out
from processors.ledger import (
    Credit,
    EntryResult,
    LedgerError,
    month_of,
    post_credits,
    post_entry,
)
from schemas.api_admin import (
    AllocateIn,
    BulkAllocateIn,
    BulkAllocateOut,
    BulkRowOut,
    SpenderOut,
    SystemAnalyticsOut,
    TopSpendersOut,
)
from schemas.api_credits import EntryOut
from schemas.bounds import Day
from schemas.money import format_micros, to_micros

router = APIRouter(prefix="/api/v1/admin/credits", tags=["admin: credits"])


class _Rollback(Exception):
    """Raised inside the bulk transaction to undo every row written so far."""


@router.post(
    "/allocate",
    response_model=EntryOut,
    summary="Add credit to an account",
    responses={409: {"description": "idempotency_key reused with another body"}},
)
async def allocate(
    body: AllocateIn, pool: Pool, settings: SettingsDep, _: AdminKey, response: Response
) -> EntryOut:
    """Write an allocation row (the account is created on its first allocation).

    The same idempotency_key and body answer the original result (`replayed: true`); the
    same key with another amount or reason is a 409.
    """
    async with pool.acquire() as conn:
        result = await post_entry(
            conn,
            account_id=body.account_id,
            type="allocation",
            amount_micros=to_micros(body.amount),
            reason=body.reason,
            idempotency_key=body.idempotency_key,
            policy=settings.ledger_policy(),
        )
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    else:
        LEDGER_WRITES.labels("allocation").inc()
    return entry_out(result)


def _row_problem(index: int, exc: LedgerError) -> dict[str, Any]:
    return {
        "index": index,
        "field": f"body.allocations.{index}",
        "code": exc.code,
        "message": str(exc),
    }


@router.post(
    "/bulk-allocate",
    response_model=BulkAllocateOut,
    summary="Add credit to many accounts, all or nothing",
    responses={
        409: {
            "description": "a row's idempotency_key was reused with another body; "
            "nothing was written"
        }
    },
)
async def bulk_allocate(
    body: BulkAllocateIn, pool: Pool, settings: SettingsDep, _: AdminKey
) -> BulkAllocateOut:
    """Write every allocation in one transaction; if any row fails, none is written.

    The answer then lists each failing row by its index (`errors[].index`). Rows are written
    in account order so that concurrent bulk requests never deadlock.
    """
    order = sorted(range(len(body.allocations)), key=lambda i: body.allocations[i].account_id)
    credits = [
        Credit(
            account_id=body.allocations[i].account_id,
            amount_micros=to_micros(body.allocations[i].amount),
            reason=body.allocations[i].reason,
            idempotency_key=body.allocations[i].idempotency_key,
        )
        for i in order
    ]
    results: dict[int, EntryResult] = {}
    problems: list[dict[str, Any]] = []
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                # One ledger batch (a few statements, whatever the row count); every refused
                # row is reported, and any refusal undoes the whole request.
                done = await post_credits(conn, credits, policy=settings.ledger_policy())
                for i, result in zip(order, done, strict=True):
                    if isinstance(result, EntryResult):
                        results[i] = result
                    else:
                        problems.append(_row_problem(i, result))
                if problems:
                    raise _Rollback
        except _Rollback:
            problems.sort(key=lambda p: p["index"])
            raise Problem(
                409,
                "bulk_allocation_failed",
                f"{len(problems)} of {len(body.allocations)} allocations failed, so none was "
                f"written: " + "; ".join(f"row {p['index']}: {p['message']}" for p in problems[:5]),
                errors=problems,
            ) from None
    written = sum(1 for r in results.values() if not r.replayed)
    if written:
        LEDGER_WRITES.labels("allocation").inc(written)
    total = sum(to_micros(a.amount) for a in body.allocations)
    return BulkAllocateOut(
        results=[
            BulkRowOut(index=i, **entry_out(results[i]).model_dump())
            for i in range(len(body.allocations))
        ],
        total=format_micros(total),
    )


DayFrom = Annotated[
    Day | None, Query(alias="from", description="first UTC day (default: the 1st of this month)")
]
DayTo = Annotated[
    Day | None,
    Query(alias="to", description="last UTC day, inclusive (default: today, or from when later)"),
]


@router.get(
    "/analytics/system",
    response_model=SystemAnalyticsOut,
    response_model_by_alias=True,
    summary="System-wide accounts, balances and usage",
)
async def system_analytics(
    pool: Pool, _: AdminKey, day_from: DayFrom = None, day_to: DayTo = None
) -> SystemAnalyticsOut:
    """Accounts and total balance now; usage spend, events and active accounts in the period."""
    # One reading of the clock: at 00:00 UTC on the 1st the default period and the month whose
    # cap decides "blocked" are of the same month.
    now = datetime.now(UTC)
    start, end = day_range(day_from, day_to, today=now.date())
    totals = await q.system_totals(pool, month=month_of(now))
    usage = await q.usage_totals(pool, day_from=start, day_to=end)
    return SystemAnalyticsOut.model_validate(
        {
            "from": start,
            "to": end,
            "accounts": totals["accounts"],
            "blocked_accounts": totals["blocked_accounts"],
            "total_balance": format_micros(totals["total_balance"]),
            "spend": format_micros(usage["spend"]),
            "events": usage["events"],
            "active_accounts": usage["active_accounts"],
        }
    )


@router.get(
    "/analytics/top-spenders",
    response_model=TopSpendersOut,
    response_model_by_alias=True,
    summary="Accounts that spent most in a period",
)
async def top_spenders(
    pool: Pool,
    _: AdminKey,
    day_from: DayFrom = None,
    day_to: DayTo = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> TopSpendersOut:
    """Usage spend per account from the daily rollup, highest first."""
    start, end = day_range(day_from, day_to)
    rows = await q.top_spenders(pool, day_from=start, day_to=end, limit=limit)
    return TopSpendersOut.model_validate(
        {
            "from": start,
            "to": end,
            "items": [
                SpenderOut(
                    account_id=r["account_id"], spend=format_micros(r["spend"]), events=r["events"]
                )
                for r in rows
            ],
        }
    )
