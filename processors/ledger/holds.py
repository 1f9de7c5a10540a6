"""Holds (reservations): credit set aside before a call, released, settled or expired (invariant 8).

A hold is not a ledger row: it moves no balance. It lowers `available` (balance − active,
unexpired holds) and counts against the monthly cap with this month's spend. Reserving locks
the account row, the lock every balance writer takes, so no number of concurrent reservations,
deductions or usage batches can commit the same credit twice. Reserve and release each run as
one server-side function (migration 0010): one round trip each, the refusal decided there.
Settling happens in `debit_batch`, in the transaction of the usage debit that names the hold.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from processors.ledger import grant_queries as gq
from processors.ledger.models import (
    CapExceeded,
    Hold,
    HoldAttempt,
    IdempotencyConflict,
    InsufficientCredit,
    UnknownReservation,
    month_of,
)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A hold as reserve answers it: the hold, available after it, and whether it is a replay."""

    hold: Hold
    replayed: bool


def new_reservation_id() -> str:
    """An unguessable reservation id (`rsv_` and 24 hex digits)."""
    return "rsv_" + secrets.token_hex(12)


async def reserve(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: str,
    amount_micros: int,
    ttl_seconds: int,
    idempotency_key: str,
    request_hash: bytes,
    metadata: dict[str, Any] | None,
    now: datetime | None = None,
) -> Reservation:
    """Hold amount_micros for ttl_seconds, under the account's row lock.

    Refused (InsufficientCredit naming available, CapExceeded naming the cap) when it would
    make available negative or push this month's spend plus holds past the cap. The same key
    and request hash answer the original hold; another request with the key raises
    IdempotencyConflict. One statement (reserve_hold, migration 0010), which decides the
    refusal; this only names it.
    """
    if amount_micros <= 0:
        raise ValueError("a reservation's amount must be greater than 0")
    attempt = await gq.reserve_hold(
        conn,
        reservation_id=new_reservation_id(),
        account_id=account_id,
        amount_micros=amount_micros,
        ttl_seconds=ttl_seconds,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        metadata=metadata,
        month=month_of(now or datetime.now(UTC)),
    )
    hold = attempt.hold
    if attempt.outcome == "reserved" and hold is not None:
        return Reservation(hold, replayed=False)
    if attempt.outcome == "replayed" and hold is not None:
        # The key was used before: a replay answers the original whatever the account's
        # state now.
        if hold.request_hash != request_hash:
            raise IdempotencyConflict(idempotency_key, hold)
        return Reservation(hold, replayed=True)
    raise _refusal(attempt, account_id, amount_micros)


def _refusal(
    attempt: HoldAttempt, account_id: str, amount_micros: int
) -> InsufficientCredit | CapExceeded:
    """The error of a refused reservation (reserve_hold decided it), with the account state it
    was decided on."""
    balance, held = attempt.balance_micros or 0, attempt.held_micros or 0
    if attempt.outcome == "no_account":
        # No account, no credit: refused like an empty one (nothing is created).
        return InsufficientCredit(account_id, 0, amount_micros)
    if attempt.outcome == "insufficient_credit":
        return InsufficientCredit(account_id, balance, amount_micros, held_micros=held)
    if attempt.outcome == "monthly_cap_exceeded" and attempt.cap_micros is not None:
        spend = attempt.spend_micros or 0
        return CapExceeded(account_id, spend, attempt.cap_micros, amount_micros, held)
    raise RuntimeError(f"reserve_hold answered {attempt.outcome!r}, which no caller knows")


def _scoped(hold: Hold | None, reservation_id: str, account_id: str | None) -> Hold:
    """The hold, unless it is missing or (account_id given) another account's."""
    if hold is None or (account_id is not None and hold.account_id != account_id):
        raise UnknownReservation(reservation_id)
    return hold


async def get_reservation(
    conn: asyncpg.Connection | asyncpg.Pool, *, reservation_id: str, account_id: str | None
) -> Hold:
    """A hold by id; UnknownReservation when missing or (account_id given) another account's."""
    hold = await gq.get_hold(conn, reservation_id=reservation_id)
    return _scoped(hold, reservation_id, account_id)


@dataclass(frozen=True, slots=True)
class Release:
    """A hold as release answers it: the hold now, whether this call released it, and what
    its account has available after it."""

    hold: Hold
    released: bool
    available_micros: int


async def release(
    conn: asyncpg.Connection | asyncpg.Pool, *, reservation_id: str, account_id: str | None
) -> Release:
    """Free an active hold (released True) — or answer its current state (released False) when
    it was no longer active (released, settled or expired before) — with the account's
    available after it, in one statement. UnknownReservation when there is no such hold (or,
    account_id given, it is another account's)."""
    hold, released, available = await gq.release_hold(
        conn, reservation_id=reservation_id, account_id=account_id
    )
    return Release(_scoped(hold, reservation_id, account_id), released, available)


@dataclass(frozen=True)
class ActiveHolds:
    """Up to `limit` active holds, soonest expiry first; `held` and `count` cover them all."""

    items: list[Hold]
    held_micros: int
    count: int


async def list_active(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, limit: int = 500
) -> ActiveHolds:
    """The account's active, unexpired holds, soonest expiry first, and their totals."""
    items, held, count = await gq.active_holds(conn, account_id=account_id, limit=limit)
    return ActiveHolds(items, held, count)


async def sweep_expired_holds(conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 5000) -> int:
    """Mark active holds past their expiry as expired (they stopped counting already)."""
    return await gq.mark_expired_holds(conn, limit=limit)
