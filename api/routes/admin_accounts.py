"""Admin account routes: list and read accounts, set an account's tier; read and edit tiers."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Request, Response
from starlette.convertors import PathConvertor, register_url_convertor

from api.deps import AdminKey, Pool, SettingsDep
from api.errors import Problem
from api.queries import admin as q
from api.views import balance_out
from processors.ledger import UnknownAccount, read_account, set_account_tier, upsert_tier
from processors.pricing import plain
from schemas.api_admin import (
    AccountOut,
    AccountsPage,
    AccountSummaryOut,
    SetTierIn,
    TierIn,
    TierOut,
    TiersOut,
)
from schemas.api_credits import money_or_none
from schemas.bounds import Text
from schemas.money import format_micros, to_micros

router = APIRouter(prefix="/api/v1/admin", tags=["admin: accounts and tiers"])


class _AccountIdConvertor(PathConvertor):
    """The rest of the path, at least one character: `/accounts/` stays the list's address
    (redirected to `/accounts`), not an account with an empty id."""

    regex = ".+"


# Account ids may hold "/" ("team/alice"): the account routes take the rest of the path, as
# the pricing routes do for model ids; without it such an account could not be read or
# re-tiered here (a 404 from the router, which the dashboard showed for the admin's pick).
register_url_convertor("account_id", _AccountIdConvertor())
AccountPath = Annotated[str, Text(128), Path(description="the account id, slashes included")]
TierPath = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,32}$", description="the tier name")]


async def _account(conn: Any, account_id: str) -> AccountOut:
    # The ledger's read of the account (this month's spend), as the balance route answers it:
    # blocked is decided live there, not read from the flag a write last stored.
    state = await read_account(conn, account_id=account_id)
    r = await q.account_detail(conn, account_id=account_id)
    if state is None or r is None:
        raise UnknownAccount(account_id)
    return AccountOut(
        **balance_out(state).model_dump(),
        byok_configured=r["byok_configured"],
        api_keys=r["api_keys"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


@router.get("/accounts", response_model=AccountsPage, summary="List accounts")
async def list_accounts(
    pool: Pool,
    _: AdminKey,
    prefix: Annotated[
        Annotated[str, Text(128)] | None,
        Query(description="only accounts whose id starts with this text"),
    ] = None,
    cursor: Annotated[
        Annotated[str, Text(128)] | None,
        Query(description="next_cursor of the previous page; omit for the first"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="accounts per page")] = 50,
) -> AccountsPage:
    """Accounts by id with their tier and balance: what an account picker offers."""
    rows = await q.list_accounts(pool, prefix=prefix, after=cursor, limit=limit + 1)
    items = [
        AccountSummaryOut(
            account_id=r["account_id"],
            tier=r["tier"],
            balance=format_micros(r["balance_micros"]),
            created_at=r["created_at"],
        )
        for r in rows[:limit]
    ]
    return AccountsPage(
        items=items, next_cursor=items[-1].account_id if len(rows) > limit else None
    )


@router.get(
    "/accounts/{account_id:account_id}",
    response_model=AccountOut,
    summary="An account",
    responses={404: {"description": "no such account"}},
)
async def get_account(account_id: AccountPath, pool: Pool, _: AdminKey) -> AccountOut:
    """Balance, this month's spend and cap, tier, blocked state, BYOK and key count."""
    return await _account(pool, account_id)


@router.put(
    "/accounts/{account_id:account_id}/tier",
    response_model=AccountOut,
    summary="Move an account to a tier",
    responses={404: {"description": "no such account"}},
)
async def put_account_tier(
    account_id: AccountPath,
    body: SetTierIn,
    pool: Pool,
    _: AdminKey,
    request: Request,
    settings: SettingsDep,
) -> AccountOut:
    """Set the tier (multiplier, rate limit, allocation follow; a default cap follows too)."""
    async with pool.acquire() as conn:
        await set_account_tier(
            conn, account_id=account_id, tier=body.tier, policy=settings.ledger_policy()
        )
        # The rate limit comes with the cached key: this process drops it now, others in time.
        request.app.state.key_cache.forget_account(account_id)
        return await _account(conn, account_id)


def _tier_out(r: asyncpg.Record) -> TierOut:
    return TierOut(
        name=r["name"],
        monthly_allocation=format_micros(r["monthly_allocation_micros"]),
        price_multiplier=plain(r["price_multiplier"]),
        default_monthly_cap=money_or_none(r["default_monthly_cap_micros"]),
        rate_limit=r["rate_limit"],
        updated_at=r["updated_at"],
    )


@router.get("/tiers", response_model=TiersOut, summary="Every tier")
async def list_tiers(pool: Pool, _: AdminKey) -> TiersOut:
    """Tiers by name."""
    return TiersOut(items=[_tier_out(r) for r in await q.list_tiers(pool)])


@router.get(
    "/tiers/{name}",
    response_model=TierOut,
    summary="A tier",
    responses={404: {"description": "no such tier"}},
)
async def get_tier(name: TierPath, pool: Pool, _: AdminKey) -> TierOut:
    """A tier's monthly allocation, price multiplier, default cap and rate limit."""
    r = await q.get_tier(pool, name=name)
    if r is None:
        raise Problem(404, "unknown_tier", f"tier {name!r} does not exist", tier=name)
    return _tier_out(r)


@router.put(
    "/tiers/{name}",
    response_model=TierOut,
    summary="Create or replace a tier",
    responses={201: {"model": TierOut, "description": "tier created"}},
)
async def put_tier(
    name: TierPath,
    body: TierIn,
    pool: Pool,
    _: AdminKey,
    response: Response,
    request: Request,
) -> TierOut:
    """Create or replace the tier's terms; accounts on it follow from their next request."""
    cap = body.default_monthly_cap
    r, created = await upsert_tier(
        pool,
        name=name,
        monthly_allocation_micros=to_micros(body.monthly_allocation),
        price_multiplier=body.price_multiplier,
        default_monthly_cap_micros=None if cap is None else to_micros(cap),
        rate_limit=body.rate_limit,
    )
    request.app.state.key_cache.clear()  # cached keys carry their tier's rate limit
    if created:
        response.status_code = 201
    return _tier_out(r)
