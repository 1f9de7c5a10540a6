"""Admin coupon routes: create and list coupon codes (users redeem them)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query

from api.deps import AdminKey, Pool
from api.errors import Problem
from api.queries import admin as q
from schemas.api_admin import CouponIn, CouponOut, CouponsPage
from schemas.bounds import Text
from schemas.money import format_micros, to_micros

router = APIRouter(prefix="/api/v1/admin/coupons", tags=["admin: coupons"])


def _coupon_out(r: asyncpg.Record) -> CouponOut:
    return CouponOut(
        code=r["code"],
        amount=format_micros(r["amount_micros"]),
        max_redemptions=r["max_redemptions"],
        redemptions=r["redemptions"],
        expires_at=r["expires_at"],
        created_at=r["created_at"],
    )


@router.post(
    "",
    response_model=CouponOut,
    status_code=201,
    summary="Create a coupon",
    responses={409: {"description": "the code already exists"}},
)
async def create_coupon(body: CouponIn, pool: Pool, _: AdminKey) -> CouponOut:
    """A code worth `amount` credits, redeemable once per account by up to max_redemptions."""
    r = await q.insert_coupon(
        pool,
        code=body.code,
        amount_micros=to_micros(body.amount),
        max_redemptions=body.max_redemptions,
        expires_at=body.expires_at,
    )
    if r is None:
        raise Problem(
            409,
            "coupon_exists",
            f"coupon {body.code!r} already exists; codes are unique, pick another",
            code_value=body.code,
        )
    return _coupon_out(r)


@router.get("", response_model=CouponsPage, summary="List coupons")
async def list_coupons(
    pool: Pool,
    _: AdminKey,
    cursor: Annotated[
        Annotated[str, Text(64)] | None,
        Query(description="next_cursor of the previous page"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CouponsPage:
    """Coupons by code with their redemption counts."""
    rows = await q.list_coupons(pool, after=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return CouponsPage(
        items=[_coupon_out(r) for r in rows], next_cursor=rows[-1]["code"] if more else None
    )
