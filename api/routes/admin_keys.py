"""Admin API-key routes: create a key (shown once), revoke a key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from api.deps import AdminKey, Pool, SettingsDep
from api.errors import Problem
from api.security import create_api_key, revoke_api_key
from processors.ledger import ensure_account
from schemas.api_admin import ApiKeyIn, ApiKeyOut

router = APIRouter(prefix="/api/v1/admin/api-keys", tags=["admin: API keys"])


@router.post("", response_model=ApiKeyOut, status_code=201, summary="Create an API key")
async def create_key(body: ApiKeyIn, pool: Pool, settings: SettingsDep, _: AdminKey) -> ApiKeyOut:
    """A user key acts on its account only (created if new); an admin key on any account.

    The key is in this answer only: it is stored as a SHA-256 hash and cannot be shown again.
    """
    if body.scope == "user" and body.account_id is None:
        raise Problem(
            422,
            "validation_error",
            "invalid request: body.account_id: a user key needs an account (rule: missing)",
            errors=[
                {
                    "field": "body.account_id",
                    "rule": "missing",
                    "message": "a user key needs an account",
                }
            ],
        )
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
    key_id: Annotated[str, Path(min_length=1, max_length=64)],
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
