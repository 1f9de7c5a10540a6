"""Usage statistics of the account from the daily rollup, by model, provider or day."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api.deps import Pool, TargetAccount
from api.queries import usage as q
from api.query import day_range
from schemas.api_credits import UsageGroupOut, UsageStatsOut, UsageTotalsOut
from schemas.bounds import Day
from schemas.money import format_micros

router = APIRouter(prefix="/api/v1/credits", tags=["usage"])

MAX_DAYS = 3660  # ten years: a bound on the scan, far beyond any dashboard's range
# The rollup's counters as they are answered; the cost is answered as money.
_COUNTERS = tuple(c for c in q.SUMMED if c != "cost_micros")


@router.get("/usage/stats", summary="Usage and cost by model, provider or day")
async def usage_stats(
    account_id: TargetAccount,
    pool: Pool,
    day_from: Annotated[
        Day | None,
        Query(alias="from", description="first UTC day (YYYY-MM-DD); default: this month's 1st"),
    ] = None,
    day_to: Annotated[
        Day | None,
        Query(
            alias="to", description="last UTC day, inclusive; default: today, or from when later"
        ),
    ] = None,
    group_by: Annotated[
        Literal["model", "provider", "day"], Query(description="how to group the usage")
    ] = "model",
) -> UsageStatsOut:
    """Events, tokens per bucket, requests and cost of debited usage per group, with totals,
    for UTC days from..to (both inclusive), from the daily rollup the worker keeps.
    Groups by model or provider come most expensive first; by day, oldest first.
    """
    start, end = day_range(day_from, day_to, max_days=MAX_DAYS)
    rows = await q.usage_stats(
        pool, account_id=account_id, day_from=start, day_to=end, group_by=group_by
    )
    groups = [
        UsageGroupOut(
            key=r["key"], cost=format_micros(r["cost_micros"]), **{c: r[c] for c in _COUNTERS}
        )
        for r in rows
    ]
    totals = UsageTotalsOut(
        cost=format_micros(sum(r["cost_micros"] for r in rows)),
        **{c: sum(r[c] for r in rows) for c in _COUNTERS},
    )
    return UsageStatsOut.model_validate(
        {
            "account_id": account_id,
            "from": start,
            "to": end,
            "group_by": group_by,
            "groups": groups,
            "totals": totals,
        }
    )
