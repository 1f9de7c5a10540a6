"""Coupon redemption by the account (admins create coupons on the admin routes)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Pool, SettingsDep, TargetAccount
from api.metrics import LEDGER_WRITES
from api.views import entry_out
from processors.ledger import redeem_coupon
from schemas.api_common import ProblemOut
from schemas.api_credits import RedeemIn, RedeemOut

router = APIRouter(prefix="/api/v1/credits/coupons", tags=["coupons"])


@router.post(
    "/redeem",
    summary="Redeem a coupon code for its credit",
    responses={
        404: {"model": ProblemOut, "description": "`coupon_not_found`: no coupon has this code"},
        409: {
            "model": ProblemOut,
            "description": "`coupon_exhausted` (redeemed its maximum number of times) or "
            "`coupon_already_redeemed` (by this account)",
        },
        410: {"model": ProblemOut, "description": "`coupon_expired`"},
    },
)
async def redeem(
    body: RedeemIn, account_id: TargetAccount, pool: Pool, settings: SettingsDep
) -> RedeemOut:
    """Credit the coupon's amount to the account: once per account, and never more times
    in total than the coupon's maximum, however many redeem it at once.
    """
    async with pool.acquire() as conn:
        done = await redeem_coupon(
            conn, code=body.code, account_id=account_id, policy=settings.ledger_policy()
        )
    LEDGER_WRITES.labels(type="coupon").inc()
    entry = entry_out(done.entry)
    return RedeemOut(**entry.model_dump(), code=done.code)
