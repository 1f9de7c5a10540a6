"""The account's ledger history: keyset pages (newest first) and a streamed CSV export."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import Pool, TargetAccount
from api.errors import invalid_field
from api.queries import transactions as q
from api.views import row_out
from processors.ledger import Burn
from processors.ledger.grant_queries import burns_of
from schemas.api_credits import TransactionsPage
from schemas.bounds import Text, Timestamp
from schemas.money import format_micros

router = APIRouter(prefix="/api/v1/credits", tags=["transactions"])

LedgerType = Literal[
    "allocation", "usage", "deduction", "coupon", "refund", "adjustment", "expiration"
]
TypeFilter = Annotated[LedgerType | None, Query(description="only rows of this type")]
From = Annotated[
    Timestamp | None,
    Query(alias="from", description="rows created at or after this time (RFC 3339 with offset)"),
]
To = Annotated[
    Timestamp | None,
    Query(alias="to", description="rows created before this time (RFC 3339 with offset)"),
]

CSV_COLUMNS = (
    "id",
    "created_at",
    "type",
    "amount",
    "balance_after",
    "reason",
    "idempotency_key",
    "model",
    "source",
    "event_id",
)
# Spreadsheets run a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_HEADER = ",".join(CSV_COLUMNS).encode() + b"\r\n"  # plain names: nothing to quote


def encode_cursor(last_id: int) -> str:
    """The opaque cursor after a row: base64url of its id."""
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The row id a cursor stands for; a 422 naming `cursor` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not raw.isdigit() or len(raw) > 19:
            raise ValueError(raw)
        return int(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_field(
            "query.cursor",
            "cursor",
            "is not a cursor this API returned",
            detail="is not a cursor this API returned; pass next_cursor from the previous page "
            "unchanged",
        ) from None


def _check_range(created_from: datetime | None, created_to: datetime | None) -> None:
    if created_from is not None and created_to is not None and created_to <= created_from:
        raise invalid_field("query.to", "range", "must be later than from")


@router.get("/transactions", summary="The ledger history, newest first (keyset pages)")
async def list_transactions(
    account_id: TargetAccount,
    pool: Pool,
    type: TypeFilter = None,
    created_from: From = None,
    created_to: To = None,
    cursor: Annotated[
        Annotated[str, Text(64)] | None,
        Query(description="next_cursor of the previous page; omit for the first"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="rows per page")] = 50,
) -> TransactionsPage:
    """Rows newest first, each with the grants it burned (`grants`: grant_id, amount, kind).
    Pages are keyed on the row id, so rows written while a client pages (they are newer)
    never shift or repeat the rows of the pages that follow.
    """
    _check_range(created_from, created_to)
    before = decode_cursor(cursor) if cursor is not None else None
    rows = await q.page_transactions(
        pool,
        account_id=account_id,
        type=type,
        created_from=created_from,
        created_to=created_to,
        before_id=before,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    burns: dict[int, list[Burn]] = {}
    for b in await burns_of(pool, transaction_ids=[r["id"] for r in rows]):
        burns.setdefault(b.transaction_id, []).append(b)
    return TransactionsPage(
        items=[row_out(r, burns.get(r["id"], ())) for r in rows],
        next_cursor=encode_cursor(rows[-1]["id"]) if more else None,
    )


def safe_cell(value: str | None) -> str:
    """A text cell a spreadsheet will not execute: a formula-like start gets a leading '."""
    if not value:
        return ""
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_lines(rows: Sequence[asyncpg.Record]) -> str:
    """Rows as RFC 4180 CSV (quoted where needed, CRLF line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for r in rows:
        writer.writerow(
            (
                r["id"],
                r["created_at"].isoformat(),
                r["type"],
                format_micros(r["amount_micros"]),
                format_micros(r["balance_after_micros"]),
                safe_cell(r["reason"]),
                safe_cell(r["idempotency_key"]),
                safe_cell(r["model"]),
                safe_cell(r["source"]),
                safe_cell(r["event_id"]),
            )
        )
    return buf.getvalue()


async def _csv_stream(
    pool: asyncpg.Pool,
    *,
    account_id: str,
    type: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> AsyncIterator[bytes]:
    # The first chunk is yielded only after the first page is read, so whatever can fail
    # (the connection, a value the database refuses) fails before the route answers: a clean
    # error, never a 200 whose file stops short. No connection is held between pages (see
    # stream_transactions): a slow reader cannot starve the pool.
    batches = q.stream_transactions(
        pool,
        account_id=account_id,
        type=type,
        created_from=created_from,
        created_to=created_to,
    )
    first = await anext(batches, None)
    yield _HEADER + (csv_lines(first).encode() if first else b"")
    async for batch in batches:
        yield csv_lines(batch).encode()


async def _started(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream with its first chunk already produced (errors raised here, before the 200)."""
    first = await anext(chunks)

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return rest()


@router.get(
    "/transactions/export",
    summary="The ledger history as CSV (streamed)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "CSV with a header row, newest first: " + ", ".join(CSV_COLUMNS),
        }
    },
)
async def export_transactions(
    account_id: TargetAccount,
    pool: Pool,
    type: TypeFilter = None,
    created_from: From = None,
    created_to: To = None,
) -> StreamingResponse:
    """Every matching row (same filters as the list) as CSV, streamed in
    keyset pages, so memory stays flat however long the history, and no database connection
    is held while the client reads. Quoting follows
    RFC 4180; text cells that a spreadsheet would run as a formula (starting with = + - @,
    tab or CR) get a leading apostrophe, while amounts such as -1.500000 stay numbers.
    Every parameter is checked and the first batch read before the 200 starts.
    """
    _check_range(created_from, created_to)
    body = await _started(
        _csv_stream(
            pool,
            account_id=account_id,
            type=type,
            created_from=created_from,
            created_to=created_to,
        )
    )
    return StreamingResponse(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="transactions-{_slug(account_id)}.csv"'
        },
    )


def _slug(account_id: str) -> str:
    # The account id is the caller's text: keep a filename of safe characters only.
    return re.sub(r"[^A-Za-z0-9._-]", "_", account_id)[:64] or "account"
