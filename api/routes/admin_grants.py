"""Admin: a grant with every attribute (category, priority, effective and expiry, applicability)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from api.deps import AdminKey, Pool, SettingsDep
from api.errors import invalid_field
from api.metrics import LEDGER_WRITES
from api.views import REPLAYED_HEADER, entry_out, grant_out
from processors.ledger import GrantTerms, IdempotencyConflict, post_entry
from schemas.api_common import ProblemOut
from schemas.api_grants import GrantCreatedOut, GrantIn
from schemas.money import to_micros

router = APIRouter(prefix="/api/v1/admin/credits", tags=["admin: credits"])


@router.post(
    "/grants",
    summary="Grant credit with every attribute (idempotent)",
    responses={
        409: {
            "model": ProblemOut,
            "description": "`idempotency_conflict`: the key was used with another body",
        }
    },
)
async def create_grant(
    body: GrantIn, pool: Pool, settings: SettingsDep, _: AdminKey, response: Response
) -> GrantCreatedOut:
    """Write an allocation row and its grant (the account is created on its first credit).

    `category` paid or promotional, `priority` 0–100 (lower burns first, default 50),
    `effective_at` (default now), `expires_at` (null: never; its remainder then leaves through
    an `expiration` row), `applies_to` (null: any usage; else model or provider prefixes). The
    grant repays any overdraft first. The same idempotency_key and body answer the original
    (`replayed: true`); another body with that key is a 409.
    """
    now = datetime.now(UTC)
    if body.expires_at is not None and body.expires_at <= now:
        raise invalid_field("body.expires_at", "future", "must be in the future")
    terms = GrantTerms(
        category=body.category,
        priority=body.priority,
        effective_at=body.effective_at,
        expires_at=body.expires_at,
        applies_to=None if body.applies_to is None else tuple(body.applies_to),
    )
    async with pool.acquire() as conn:
        result = await post_entry(
            conn,
            account_id=body.account_id,
            type="allocation",
            amount_micros=to_micros(body.amount),
            reason=body.reason,
            idempotency_key=body.idempotency_key,
            policy=settings.ledger_policy(),
            grant=terms,
            now=now,
        )
    if result.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    else:
        LEDGER_WRITES.labels("allocation").inc()
    if result.grant is None:  # the key was used by a credit older than grants
        raise IdempotencyConflict(body.idempotency_key, result.row)
    return GrantCreatedOut(**entry_out(result).model_dump(), grant=grant_out(result.grant, now))
