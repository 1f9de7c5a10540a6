"""Authorize: may a proxy make a call of this estimated cost now? One indexed read, no lock."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from api.deps import TargetAccount, app_pool, app_settings
from processors.ledger import read_account_or_new
from schemas.api_credits import AuthorizeIn, AuthorizeOut, money_or_none
from schemas.money import format_micros, to_micros

router = APIRouter(prefix="/api/v1/credits", tags=["authorize"])


@router.post("/authorize", summary="Check a call's estimated cost before making it")
async def authorize(
    body: AuthorizeIn,
    account_id: TargetAccount,
    request: Request,
) -> AuthorizeOut:
    """`allowed` with `reason` `ok`, or denied because the account is `blocked` (overdrawn or
    at its cap), `available` (balance less active holds) is below the estimate
    (`insufficient_balance`), or the estimate plus the holds would pass this month's cap
    (`monthly_cap`).

    Nothing is reserved: the answer is advice read without a lock; the usage event that
    follows the call is what debits (and may still overdraw, as streamed usage is a fact).
    To hold the credit, reserve it (`POST /api/v1/credits/reservations`).
    """
    default_tier = app_settings(request).default_tier
    state = await read_account_or_new(
        app_pool(request), account_id=account_id, default_tier=default_tier
    )
    estimate = to_micros(body.estimated_cost)
    left = state.cap_remaining_micros
    reason: Literal["ok", "blocked", "insufficient_balance", "monthly_cap"]
    if state.should_block() is not None:
        reason = "blocked"
    elif state.available_micros < estimate:
        reason = "insufficient_balance"
    elif left is not None and estimate + state.held_micros > left:
        reason = "monthly_cap"
    else:
        reason = "ok"
    return AuthorizeOut(
        allowed=reason == "ok",
        reason=reason,
        balance=format_micros(state.balance_micros),
        cap_remaining=money_or_none(left),
        available=format_micros(state.available_micros),
        held=format_micros(state.held_micros),
    )
