"""The SQL of grants, burns and holds: small functions, connection first, $n placeholders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from processors.ledger.json_rows import json_rows
from processors.ledger.models import Burn, Grant, Hold, HoldAttempt

# Reads begin with these (a grant's or a hold's columns) and add their WHERE.
_GRANT_SELECT = (
    "SELECT grant_id, account_id, category, amount_micros, remaining_micros, priority,"
    " effective_at, expires_at, applies_to, transaction_id, reason, created_at FROM credit_grants"
)
_HOLD_COLUMNS = (
    "reservation_id",
    "account_id",
    "amount_micros",
    "status",
    "expires_at",
    "idempotency_key",
    "request_hash",
    "metadata",
    "available_after_micros",
    "created_at",
    "closed_at",
    "settled_transaction_id",
    "settled_source",
    "settled_event_id",
)


def _hold_fields(of: str) -> str:
    """A hold's columns as hold_of reads them, from `of`: "" for credit_holds' own, "(r.hold)."
    for the hold a hold function answered. The status is as of now: an active hold past its
    expiry is expired at once."""

    def field(name: str) -> str:
        if name == "status":
            return (
                f"CASE WHEN {of}status = 'active' AND {of}expires_at <= now() THEN 'expired'"
                f" ELSE {of}status END AS status"
            )
        if name == "metadata":
            return f"{of}metadata::text AS metadata"
        return f"{of}{name} AS {name}" if of else name

    return " " + ", ".join(field(n) for n in _HOLD_COLUMNS)


_HOLD_FIELDS = _hold_fields("")
_HOLD_SELECT = "SELECT" + _HOLD_FIELDS + " FROM credit_holds"

_OPEN_GRANTS = _GRANT_SELECT + " WHERE account_id = ANY($1::text[]) AND remaining_micros > 0"
_INSERT_GRANT = (
    "INSERT INTO credit_grants (account_id, category, amount_micros, remaining_micros,"
    " priority, effective_at, expires_at, applies_to, transaction_id, reason)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[], $9, $10)"
    " RETURNING grant_id, account_id, category, amount_micros, remaining_micros, priority,"
    " effective_at, expires_at, applies_to, transaction_id, reason, created_at"
)
_GRANT_OF_TRANSACTION = _GRANT_SELECT + " WHERE transaction_id = $1"
# The hold functions of migration 0010: one round trip each, the hold in the same answer
# (the fragments are constants; the values always travel as $n).
_RESERVE_HOLD = (
    "SELECT r.outcome, r.state_balance, r.state_held, r.state_spend, r.state_cap,"  # noqa: S608
    + _hold_fields("(r.hold).")
    + " FROM reserve_hold($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8) AS r"
)
_HOLD_BY_ID = _HOLD_SELECT + " WHERE reservation_id = $1"
_RELEASE_HOLD = (
    "SELECT r.released, r.available,"  # noqa: S608
    + _hold_fields("(r.hold).")
    + " FROM release_hold($1, $2) AS r"
)
# The window totals cover every active hold, not just the page the LIMIT keeps.
_ACTIVE_HOLDS = (
    "SELECT"  # noqa: S608
    + _HOLD_FIELDS
    + ", sum(amount_micros) OVER ()::bigint AS all_held, count(*) OVER () AS all_count"
    " FROM credit_holds WHERE account_id = $1 AND status = 'active' AND expires_at > now()"
    " ORDER BY expires_at, reservation_id LIMIT $2"
)


def grant_of(r: asyncpg.Record) -> Grant:
    """A credit_grants row as a Grant."""
    applies = r["applies_to"]
    return Grant(
        grant_id=r["grant_id"],
        account_id=r["account_id"],
        category=r["category"],
        amount_micros=r["amount_micros"],
        remaining_micros=r["remaining_micros"],
        priority=r["priority"],
        effective_at=r["effective_at"],
        expires_at=r["expires_at"],
        applies_to=None if applies is None else tuple(applies),
        transaction_id=r["transaction_id"],
        reason=r["reason"],
        created_at=r["created_at"],
    )


def hold_of(r: asyncpg.Record) -> Hold:
    """A credit_holds row (status as of now) as a Hold."""
    return Hold(
        reservation_id=r["reservation_id"],
        account_id=r["account_id"],
        amount_micros=r["amount_micros"],
        status=r["status"],
        expires_at=r["expires_at"],
        idempotency_key=r["idempotency_key"],
        request_hash=bytes(r["request_hash"]),
        metadata=None if r["metadata"] is None else json.loads(r["metadata"]),
        available_after_micros=r["available_after_micros"],
        created_at=r["created_at"],
        closed_at=r["closed_at"],
        settled_transaction_id=r["settled_transaction_id"],
        settled_source=r["settled_source"],
        settled_event_id=r["settled_event_id"],
    )


# ---- grants and burns ------------------------------------------------------------------------


async def open_grants(conn: asyncpg.Connection, *, account_ids: Sequence[str]) -> list[Grant]:
    """The accounts' grants with something left (callers hold the accounts' locks)."""
    rows = await conn.fetch(
        _OPEN_GRANTS,
        list(account_ids),
    )
    return [grant_of(r) for r in rows]


async def insert_grant(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    category: str,
    amount_micros: int,
    remaining_micros: int,
    priority: int,
    effective_at: datetime,
    expires_at: datetime | None,
    applies_to: Sequence[str] | None,
    transaction_id: int,
    reason: str | None,
) -> Grant:
    """Write a grant for the credit of ledger row transaction_id."""
    r = await conn.fetchrow(
        _INSERT_GRANT,
        account_id,
        category,
        amount_micros,
        remaining_micros,
        priority,
        effective_at,
        expires_at,
        None if applies_to is None else list(applies_to),
        transaction_id,
        reason,
    )
    assert r is not None
    return grant_of(r)


async def insert_grants(
    conn: asyncpg.Connection,
    *,
    account_ids: Sequence[str],
    categories: Sequence[str],
    amounts: Sequence[int],
    remaining: Sequence[int],
    priorities: Sequence[int],
    effective_ats: Sequence[datetime],
    expires_ats: Sequence[datetime | None],
    applies_to: Sequence[Sequence[str] | None],
    transaction_ids: Sequence[int],
    reasons: Sequence[str | None],
) -> dict[int, Grant]:
    """Write the grants of many credit rows in one statement; by transaction_id."""
    rows = await conn.fetch(
        "INSERT INTO credit_grants (account_id, category, amount_micros, remaining_micros,"
        " priority, effective_at, expires_at, applies_to, transaction_id, reason)"
        " SELECT a, c, am, rm, p, e, x, CASE WHEN t IS NULL THEN NULL"
        " ELSE (SELECT array_agg(v) FROM jsonb_array_elements_text(t) AS v) END, tx, r"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::smallint[],"
        " $6::timestamptz[], $7::timestamptz[], $8::jsonb[], $9::bigint[], $10::text[])"
        " AS v(a, c, am, rm, p, e, x, t, tx, r)"
        " RETURNING grant_id, account_id, category, amount_micros, remaining_micros, priority,"
        " effective_at, expires_at, applies_to, transaction_id, reason, created_at",
        list(account_ids),
        list(categories),
        list(amounts),
        list(remaining),
        list(priorities),
        list(effective_ats),
        list(expires_ats),
        [None if a is None else json.dumps(list(a)) for a in applies_to],
        list(transaction_ids),
        list(reasons),
    )
    return {r["transaction_id"]: grant_of(r) for r in rows}


async def grants_of_transactions(
    conn: asyncpg.Connection, *, transaction_ids: Sequence[int]
) -> dict[int, Grant]:
    """The grants these credit rows created, by transaction_id."""
    rows = await conn.fetch(
        "SELECT grant_id, account_id, category, amount_micros, remaining_micros, priority,"
        " effective_at, expires_at, applies_to, transaction_id, reason, created_at"
        " FROM credit_grants WHERE transaction_id = ANY($1::bigint[])",
        list(transaction_ids),
    )
    return {r["transaction_id"]: grant_of(r) for r in rows}


async def grant_of_transaction(conn: asyncpg.Connection, *, transaction_id: int) -> Grant | None:
    """The grant a credit row created, if any."""
    r = await conn.fetchrow(_GRANT_OF_TRANSACTION, transaction_id)
    return None if r is None else grant_of(r)


async def save_remaining(
    conn: asyncpg.Connection, *, grant_ids: Sequence[int], remaining: Sequence[int]
) -> None:
    """Set the remaining amounts of grants a transaction burned."""
    await conn.execute(
        "UPDATE credit_grants g SET remaining_micros = v.r"
        " FROM json_to_recordset($1::json) AS v(g bigint, r bigint) WHERE g.grant_id = v.g",
        json_rows([{"g": g, "r": r} for g, r in zip(grant_ids, remaining, strict=True)]),
    )


async def insert_burns(conn: asyncpg.Connection, *, burns: Sequence[Burn]) -> None:
    """Record which grants ledger rows burned, in one statement."""
    if not burns:
        return
    await conn.execute(
        "INSERT INTO grant_burns (transaction_id, grant_id, account_id, kind, amount_micros)"
        " SELECT * FROM json_to_recordset($1::json) AS v(t bigint, g bigint, a text, k text,"
        " m bigint)",
        json_rows(
            [
                {
                    "t": b.transaction_id,
                    "g": b.grant_id,
                    "a": b.account_id,
                    "k": b.kind,
                    "m": b.amount_micros,
                }
                for b in burns
            ]
        ),
    )


async def burns_of(
    conn: asyncpg.Connection | asyncpg.Pool, *, transaction_ids: Sequence[int]
) -> list[Burn]:
    """The burns of these ledger rows, by row and grant."""
    rows = await conn.fetch(
        "SELECT transaction_id, grant_id, account_id, kind, amount_micros FROM grant_burns"
        " WHERE transaction_id = ANY($1::bigint[]) ORDER BY transaction_id, grant_id",
        list(transaction_ids),
    )
    return [Burn(**dict(r)) for r in rows]


async def accounts_with_due_expiries(
    conn: asyncpg.Connection | asyncpg.Pool, *, limit: int
) -> list[str]:
    """Accounts holding a grant past its expires_at that no expiry run has closed yet."""
    rows = await conn.fetch(
        "SELECT DISTINCT account_id FROM credit_grants"
        " WHERE expires_at IS NOT NULL AND NOT expiry_done AND expires_at <= now()"
        " ORDER BY account_id LIMIT $1",
        limit,
    )
    return [r["account_id"] for r in rows]


async def close_expired(
    conn: asyncpg.Connection, *, account_ids: Sequence[str], at: datetime
) -> None:
    """Mark the accounts' grants past expiry as done (their remainder has left, or was 0)."""
    await conn.execute(
        "UPDATE credit_grants SET expiry_done = true WHERE account_id = ANY($1::text[])"
        " AND expires_at IS NOT NULL AND expires_at <= $2 AND NOT expiry_done",
        list(account_ids),
        at,
    )


# ---- holds -----------------------------------------------------------------------------------


async def reserve_hold(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    reservation_id: str,
    account_id: str,
    amount_micros: int,
    ttl_seconds: int,
    idempotency_key: str,
    request_hash: bytes,
    metadata: dict[str, Any] | None,
    month: date,
) -> HoldAttempt:
    """Hold amount_micros for ttl_seconds under the account's row lock, in one statement
    (reserve_hold, migration 0010): the new hold, the one this key made before, or the
    refusal with the account state that decided it."""
    r = await conn.fetchrow(
        _RESERVE_HOLD,
        reservation_id,
        account_id,
        amount_micros,
        ttl_seconds,
        idempotency_key,
        request_hash,
        None if metadata is None else json.dumps(metadata),
        month,
    )
    assert r is not None  # the function answers one row, always
    return HoldAttempt(
        outcome=r["outcome"],
        hold=None if r["reservation_id"] is None else hold_of(r),
        balance_micros=r["state_balance"],
        held_micros=r["state_held"],
        spend_micros=r["state_spend"],
        cap_micros=r["state_cap"],
    )


async def get_hold(conn: asyncpg.Connection | asyncpg.Pool, *, reservation_id: str) -> Hold | None:
    """A hold by id (status as of now)."""
    r = await conn.fetchrow(_HOLD_BY_ID, reservation_id)
    return None if r is None else hold_of(r)


async def release_hold(
    conn: asyncpg.Connection | asyncpg.Pool, *, reservation_id: str, account_id: str | None
) -> tuple[Hold | None, bool, int]:
    """Release an active, unexpired hold (account_id given: only that account's) and read its
    account's available after it, in one statement (release_hold, migration 0010): (the hold
    now, whether this call released it, available). The hold is None when there is no such
    id; it may be another account's (not released then: the caller scopes it)."""
    r = await conn.fetchrow(_RELEASE_HOLD, reservation_id, account_id)
    assert r is not None  # the function answers one row, always
    if r["reservation_id"] is None:
        return None, False, 0
    # No account row reads as an account the ledger never saw: nothing available.
    return hold_of(r), r["released"], r["available"] or 0


async def settle_holds(
    conn: asyncpg.Connection,
    *,
    reservation_ids: Sequence[str],
    account_ids: Sequence[str],
    transaction_ids: Sequence[int],
    sources: Sequence[str],
    event_ids: Sequence[str],
) -> int:
    """Settle the active, unexpired holds named by new usage debits (one debit per hold)."""
    result = await conn.execute(
        "UPDATE credit_holds h SET status = 'settled', closed_at = now(),"
        " settled_transaction_id = v.tx, settled_source = v.source, settled_event_id = v.event_id"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])"
        " AS v(reservation_id, account_id, tx, source, event_id)"
        " WHERE h.reservation_id = v.reservation_id AND h.account_id = v.account_id"
        " AND h.status = 'active' AND h.expires_at > now()",
        reservation_ids,
        account_ids,
        transaction_ids,
        sources,
        event_ids,
    )
    return int(result.split()[-1])


async def active_holds(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, limit: int
) -> tuple[list[Hold], int, int]:
    """The account's first `limit` active, unexpired holds, soonest expiry first, with what
    all its active holds hold and how many there are (in the same statement)."""
    rows = await conn.fetch(
        _ACTIVE_HOLDS,
        account_id,
        limit,
    )
    if not rows:
        return [], 0, 0
    return [hold_of(r) for r in rows], rows[0]["all_held"], rows[0]["all_count"]


async def mark_expired_holds(conn: asyncpg.Connection | asyncpg.Pool, *, limit: int) -> int:
    """Mark up to `limit` active holds past expires_at as expired (for the record only)."""
    result = await conn.execute(
        "UPDATE credit_holds SET status = 'expired', closed_at = expires_at"
        " WHERE reservation_id IN (SELECT reservation_id FROM credit_holds"
        " WHERE status = 'active' AND expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)",
        limit,
    )
    return int(result.split()[-1])
