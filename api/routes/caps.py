"""The account's monthly spending cap (UTC calendar months)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Pool, SettingsDep, TargetAccount
from api.views import balance_out
from processors.ledger import read_account_or_new, set_monthly_cap
from schemas.api_credits import BalanceOut, MonthlyCapIn
from schemas.money import to_micros

router = APIRouter(prefix="/api/v1/credits", tags=["caps"])


@router.get("/monthly-cap", summary="The monthly cap and this month's spend")
async def get_monthly_cap(
    account_id: TargetAccount, pool: Pool, settings: SettingsDep
) -> BalanceOut:
    """The balance answer, whose `monthly_cap` and `cap_remaining` are null when there is none."""
    state = await read_account_or_new(
        pool, account_id=account_id, default_tier=settings.default_tier
    )
    return balance_out(state)


@router.post("/monthly-cap", summary="Set or remove the monthly cap")
async def post_monthly_cap(
    body: MonthlyCapIn,
    account_id: TargetAccount,
    pool: Pool,
    settings: SettingsDep,
) -> BalanceOut:
    """Set the cap to a positive amount, or remove it with `null`; anything else is a 422.

    The blocked state follows at once: a cap at or below this month's spend blocks the
    account, a higher cap (or none) unblocks it.
    """
    cap = None if body.monthly_cap is None else to_micros(body.monthly_cap)
    async with pool.acquire() as conn:
        state = await set_monthly_cap(
            conn, account_id=account_id, cap_micros=cap, policy=settings.ledger_policy()
        )
    return balance_out(state)
