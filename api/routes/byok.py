"""The account's own OpenRouter key (BYOK): stored Fernet-encrypted, only ever shown masked."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import APIRouter, Response

from api.deps import Pool, SettingsDep, TargetAccount
from api.errors import Problem, invalid_field
from processors import byok_queries as q
from processors.byok import encrypt, key_problem, mask, multifernet
from processors.ledger import ensure_account
from schemas.api_common import ProblemOut
from schemas.api_credits import OpenRouterKeyIn, OpenRouterKeyOut

router = APIRouter(prefix="/api/v1/credits/byok", tags=["byok"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemOut, "description": "`byok_key_not_found`: none stored"}
}


def _out(row: asyncpg.Record) -> OpenRouterKeyOut:
    return OpenRouterKeyOut(
        account_id=row["account_id"],
        masked_key=mask(row["key_last4"]),
        key_last4=row["key_last4"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _not_found(account_id: str) -> Problem:
    return Problem(
        404,
        "byok_key_not_found",
        f"account {account_id!r} has no OpenRouter key stored; PUT one first",
    )


@router.put(
    "/openrouter",
    summary="Store the account's OpenRouter key (encrypted)",
    responses={503: {"model": ProblemOut, "description": "no encryption key configured"}},
)
async def put_openrouter_key(
    body: OpenRouterKeyIn, account_id: TargetAccount, pool: Pool, settings: SettingsDep
) -> OpenRouterKeyOut:
    """Encrypt the key with the first of METERLINE_ENCRYPTION_KEYS (Fernet) and store it,
    replacing any earlier one. The answer shows it masked; no answer, log or error ever
    contains the key itself.
    """
    api_key = body.api_key.get_secret_value()
    problem = key_problem(api_key)
    if problem is not None:
        raise invalid_field("body.api_key", "openrouter_key", problem)
    fernet = multifernet(settings.encryption_keys)  # 503 EncryptionNotConfigured without keys
    token = encrypt(fernet, api_key)
    async with pool.acquire() as conn, conn.transaction():
        await ensure_account(conn, account_id=account_id, tier=settings.default_tier)
        row = await q.upsert_openrouter_key(
            conn, account_id=account_id, encrypted_key=token, key_last4=api_key[-4:]
        )
    return _out(row)


@router.get("/openrouter", summary="The stored OpenRouter key, masked", responses=_NOT_FOUND)
async def get_openrouter_key(account_id: TargetAccount, pool: Pool) -> OpenRouterKeyOut:
    """The masked key (prefix and last four characters) and when it was stored."""
    row = await q.read_openrouter_key(pool, account_id=account_id)
    if row is None:
        raise _not_found(account_id)
    return _out(row)


@router.delete(
    "/openrouter",
    summary="Remove the stored OpenRouter key",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
)
async def delete_openrouter_key(account_id: TargetAccount, pool: Pool) -> Response:
    """Delete the stored key (the encrypted token is removed from the database)."""
    if not await q.delete_openrouter_key(pool, account_id=account_id):
        raise _not_found(account_id)
    return Response(status_code=204)
