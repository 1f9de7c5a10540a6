"""Admin API-key routes: list keys, create a key (shown once), revoke a key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from api.deps import AdminKey, Pool, SettingsDep
from api.errors import Problem, invalid_field
from processors.api_key_queries import list_keys
from processors.api_keys import create_api_key, revoke_api_key
from processors.ledger import ensure_account
from schemas.api_admin import ApiKeyIn, ApiKeyInfo, ApiKeyOut, ApiKeysOut
from schemas.bounds import Text

router = APIRouter(prefix="/api/v1/admin/api-keys", tags=["admin: API keys"])


@router.get("", response_model=ApiKeysOut, summary="List API keys")
async def get_keys(
    pool: Pool,
    _: AdminKey,
    account_id: Annotated[Annotated[str, Text(128)] | None, Query()] = None,
    include_revoked: bool = False,
    cursor: Annotated[Annotated[str, Text(64)] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ApiKeysOut:
    """Live keys (and revoked ones with include_revoked), of one account or all, by key_id."""
    rows = await list_keys(
        pool,
        account_id=account_id,
        include_revoked=include_revoked,
        after=cursor,
        limit=limit + 1,
    )
    items = [ApiKeyInfo.model_validate(dict(r)) for r in rows[:limit]]
    return ApiKeysOut(items=items, next_cursor=items[-1].key_id if len(rows) > limit else None)


@router.post("", response_model=ApiKeyOut, status_code=201, summary="Create an API key")
async def create_key(body: ApiKeyIn, pool: Pool, settings: SettingsDep, _: AdminKey) -> ApiKeyOut:
    """A user key acts on its account only (created if new); an admin key on any account.

    The key is in this answer only: it is stored as a SHA-256 hash and cannot be shown again.
    """
    if body.scope == "user" and body.account_id is None:
        raise invalid_field("body.account_id", "missing", "a user key needs an account")
    async with pool.acquire() as conn:
        if body.account_id is not None:
            await ensure_account(conn, account_id=body.account_id, tier=settings.default_tier)
        key_id, key = await create_api_key(conn, account_id=body.account_id, scope=body.scope)
    return ApiKeyOut(key_id=key_id, key=key, scope=body.scope, account_id=body.account_id)


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke an API key",
    responses={404: {"description": "no such live key"}},
)
async def revoke_key(
    key_id: Annotated[str, Text(64), Path()],
    pool: Pool,
    _: AdminKey,
    request: Request,
) -> Response:
    """Revoke the key from now on: its next request is a 401.

    Other API processes trust a key they verified for up to METERLINE_API_KEY_CACHE_SECONDS
    (5 s by default): there the revocation takes effect within that time.
    """
    if not await revoke_api_key(pool, key_id=key_id):
        raise Problem(404, "unknown_api_key", f"no live API key with id {key_id!r}", key_id=key_id)
    request.app.state.key_cache.forget_key(key_id)
    return Response(status_code=204)
