"""Reservations (holds): a proxy holds the worst-case cost before a call, then settles or releases.

Settling is not a route: the usage event that names the hold (`reservation_id`) settles it in
the transaction that debits it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from api.deps import AuthedKey, Pool, Principal, SettingsDep, TargetAccount, forbid_other_account
from api.views import REPLAYED_HEADER, hold_out
from processors.ledger import (
    get_reservation,
    list_active,
    read_account_or_new,
    release,
    reserve,
)
from schemas.api_common import ProblemOut
from schemas.api_grants import ReservationOut, ReservationsOut, ReserveIn
from schemas.bounds import Text
from schemas.money import format_micros, to_micros

router = APIRouter(prefix="/api/v1/credits/reservations", tags=["reservations"])

ReservationPath = Annotated[str, Text(128), Path(description="the reservation_id reserve answered")]
AccountQuery = Annotated[
    Annotated[str, Text(128)] | None,
    Query(
        description="An admin may name the account (optional here: the id names the hold); "
        "a user key may only give its own.",
    ),
]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemOut, "description": "`unknown_reservation`: no such hold here"}
}


def _fingerprint(body: ReserveIn, amount_micros: int) -> bytes:
    data = {"amount": amount_micros, "ttl_seconds": body.ttl_seconds, "metadata": body.metadata}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).digest()


def _scope(principal: Principal, account_id: str | None) -> str | None:
    """The account a by-id route is limited to: a user key's own; an admin's, if named."""
    forbid_other_account(principal, account_id)
    return account_id if principal.is_admin else principal.account_id


@router.post(
    "",
    status_code=201,
    summary="Hold credit before a call (idempotent)",
    responses={
        402: {
            "model": ProblemOut,
            "description": "refused: `insufficient_credit` (names `available`) or "
            "`monthly_cap_exceeded` (names the cap, spend and `held`)",
        },
        409: {
            "model": ProblemOut,
            "description": "`idempotency_conflict`: the key was used for another reservation",
        },
    },
)
async def create_reservation(
    body: ReserveIn, response: Response, account_id: TargetAccount, pool: Pool
) -> ReservationOut:
    """Hold `amount` for `ttl_seconds` (default 300, 1–86400). Refused with 402 when it would
    make `available` (balance less active holds) negative or push this month's spend plus
    holds past the cap. Concurrent reservations queue on the account's lock: they never
    commit the same credit twice. The same `idempotency_key` and body answer the original
    hold (`replayed: true`, its state now); another body with that key is a 409.

    Settle it by sending the usage event with `reservation_id`; free it with `release`. At
    `expires_at` it stops counting by itself.
    """
    amount = to_micros(body.amount)
    result = await reserve(
        pool,
        account_id=account_id,
        amount_micros=amount,
        ttl_seconds=body.ttl_seconds,
        idempotency_key=body.idempotency_key,
        request_hash=_fingerprint(body, amount),
        metadata=body.metadata,
    )
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return hold_out(
        result.hold,
        available_micros=result.hold.available_after_micros,
        replayed=result.replayed,
    )


@router.get("", summary="The account's active holds")
async def list_reservations(account_id: TargetAccount, pool: Pool) -> ReservationsOut:
    """Active, unexpired holds, soonest expiry first (at most 500); `held` and `count` cover
    every active hold of the account, listed or not."""
    holds = await list_active(pool, account_id=account_id)
    return ReservationsOut(
        items=[hold_out(h, available_micros=None) for h in holds.items],
        held=format_micros(holds.held_micros),
        count=holds.count,
    )


@router.get("/{reservation_id}", summary="One hold and its state", responses=_NOT_FOUND)
async def get_one(
    reservation_id: ReservationPath,
    principal: AuthedKey,
    pool: Pool,
    settings: SettingsDep,
    account_id: AccountQuery = None,
) -> ReservationOut:
    """`active`, `released`, `settled` (with the usage debit that settled it) or `expired`
    (an active hold past `expires_at` reads as expired at once). `available` is the
    account's now. A hold of another account is a 404, as is an unknown id."""
    hold = await get_reservation(
        pool, reservation_id=reservation_id, account_id=_scope(principal, account_id)
    )
    state = await read_account_or_new(
        pool, account_id=hold.account_id, default_tier=settings.default_tier
    )
    return hold_out(hold, available_micros=state.available_micros)


@router.post("/{reservation_id}/release", summary="Free a hold (idempotent)", responses=_NOT_FOUND)
async def release_one(
    reservation_id: ReservationPath,
    principal: AuthedKey,
    pool: Pool,
    account_id: AccountQuery = None,
) -> ReservationOut:
    """Mark the hold `released`: its amount is available again at once. A hold no longer
    active (released, settled or expired) is answered in its current state, unchanged."""
    result = await release(
        pool, reservation_id=reservation_id, account_id=_scope(principal, account_id)
    )
    return hold_out(result.hold, available_micros=result.available_micros)
