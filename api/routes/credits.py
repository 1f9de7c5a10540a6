"""The balance and synchronous deductions of the caller's account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import (
    ACCOUNT_ID,
    Pool,
    SettingsDep,
    TargetAccount,
    app_pool,
    app_settings,
    hot_target_account,
)
from api.metrics import LEDGER_WRITES
from api.queries.balance_at import balance_at
from api.query import QueryParam
from api.views import REPLAYED_HEADER, balance_out, entry_out
from processors.ledger import month_of, post_entry, read_account_or_new
from schemas.api_common import ProblemOut
from schemas.api_credits import BalanceOut, DeductIn, EntryOut
from schemas.bounds import Timestamp
from schemas.money import to_micros

router = APIRouter(prefix="/api/v1/credits", tags=["credits"])

DEDUCT_RESPONSES: dict[int | str, dict[str, Any]] = {
    402: {
        "model": ProblemOut,
        "description": "refused: `insufficient_credit` (it would overdraw the balance) or "
        "`monthly_cap_exceeded` (it would pass the monthly cap)",
    },
    409: {
        "model": ProblemOut,
        "description": "`idempotency_conflict`: the key was already used with another body",
    },
}


AT = QueryParam[datetime](
    "at", Timestamp, "RFC 3339 with offset: the figures as they stood then (from the ledger)"
)


# The route a proxy may call before every LLM call: its key, account and `at` are read by
# hot_target_account (the same checks, answers and OpenAPI entries; api.query says why).
@router.get(
    "/balance",
    summary="The account's balance, monthly spend and cap",
    openapi_extra={"parameters": [AT.openapi, ACCOUNT_ID.openapi]},
)
async def get_balance(request: Request) -> BalanceOut:
    """Balance, `available` (balance less active holds) and `held`, this UTC month's spend,
    the cap and what is left of it, the tier, and whether the account is blocked (balance
    below 0, or spend at the cap), computed now.

    With `at`, the balance is the ledger's as it stood then (the balance after the last row
    recorded at or before it), the spend is that month's up to it, and held counts the holds
    active then; tier and cap are today's. An account that has no ledger yet answers as a new
    account: balance 0, the default tier and its default cap.
    """
    account_id, (at,) = await hot_target_account(request, AT)
    default_tier = app_settings(request).default_tier
    state = await read_account_or_new(
        app_pool(request), account_id=account_id, default_tier=default_tier
    )
    if at is None:
        return balance_out(state)
    when = at.astimezone(UTC)
    past = await balance_at(app_pool(request), account_id=account_id, at=when, month=month_of(when))
    state.balance_micros = past.balance_micros
    state.monthly_spend_micros = past.monthly_spend_micros
    state.held_micros = past.held_micros
    return balance_out(state)


@router.post(
    "/deduct",
    summary="Deduct credit now (idempotent)",
    responses=DEDUCT_RESPONSES,
)
async def deduct(
    body: DeductIn,
    response: Response,
    account_id: TargetAccount,
    pool: Pool,
    settings: SettingsDep,
) -> EntryOut:
    """Write a deduction to the ledger and answer the row and the new balance.

    Refused with 402 when it would overdraw the balance or pass the monthly cap. The same
    `idempotency_key` with the same amount and reason answers the original result
    (`replayed: true`, header `Idempotent-Replayed: true`) and writes nothing; with another
    amount or reason it is a 409.
    """
    async with pool.acquire() as conn:
        result = await post_entry(
            conn,
            account_id=account_id,
            type="deduction",
            amount_micros=-to_micros(body.amount),
            reason=body.reason,
            idempotency_key=body.idempotency_key,
            policy=settings.ledger_policy(),
            enforce_limits=True,
        )
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    else:
        LEDGER_WRITES.labels(type="deduction").inc()
    return entry_out(result)
