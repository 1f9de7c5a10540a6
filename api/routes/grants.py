"""The account's grants: where its credit came from, what is left, and when it expires."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Pool, TargetAccount
from api.queries import grants as q
from api.routes.transactions import decode_cursor, encode_cursor
from api.views import grant_out
from schemas.api_grants import GrantsPage

router = APIRouter(prefix="/api/v1/credits", tags=["grants"])


@router.get("/grants", summary="The account's grants, newest first (keyset pages)")
async def list_grants(
    account_id: TargetAccount,
    pool: Pool,
    open_only: Annotated[
        bool,
        Query(alias="open", description="only grants with something left that have not expired"),
    ] = False,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="next_cursor of the previous page; omit for the first"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="grants per page")] = 50,
) -> GrantsPage:
    """Each grant with its category, amount and remaining, priority (lower burns first),
    effective and expiry times, the model prefixes it applies to, and its status now.

    Debits burn the grants that apply to the model, are effective, unexpired and have
    something left: by priority, then soonest expiry (never last), then oldest.
    """
    before = decode_cursor(cursor) if cursor is not None else None
    # One instant for which grants are open and for each one's status: a grant expiring
    # between two readings was listed as open with the status "expired".
    now = datetime.now(UTC)
    grants = await q.page_grants(
        pool,
        account_id=account_id,
        before_id=before,
        open_only=open_only,
        limit=limit + 1,
        at=now,
    )
    more = len(grants) > limit
    grants = grants[:limit]
    return GrantsPage(
        items=[grant_out(g, now) for g in grants],
        next_cursor=encode_cursor(grants[-1].grant_id) if more else None,
    )
