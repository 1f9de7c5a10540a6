"""Holds (reservations): credit set aside before a call, released, settled or expired (invariant 8).

A hold is not a ledger row: it moves no balance. It lowers `available` (balance − active,
unexpired holds) and counts against the monthly cap with this month's spend. Reserving locks
the account row, the lock every balance writer takes, so no number of concurrent reservations,
deductions or usage batches can commit the same credit twice. Settling happens in
`debit_batch`, in the transaction of the usage debit that names the hold.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from processors.ledger import grant_queries as gq
from processors.ledger import queries
from processors.ledger.models import (
    AccountState,
    CapExceeded,
    Hold,
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
    conn: asyncpg.Connection,
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
    IdempotencyConflict.
    """
    if amount_micros <= 0:
        raise ValueError("a reservation's amount must be greater than 0")
    month = month_of(now or datetime.now(UTC))
    async with conn.transaction():
        states = await queries.lock_accounts(conn, account_ids=[account_id], month=month)
        refusal = _refusal(states.get(account_id), account_id, amount_micros)
        if refusal is None:
            assert account_id in states
            hold = await gq.insert_hold(
                conn,
                reservation_id=new_reservation_id(),
                account_id=account_id,
                amount_micros=amount_micros,
                ttl_seconds=ttl_seconds,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                metadata=metadata,
                available_after_micros=states[account_id].available_micros - amount_micros,
            )
            if hold is not None:
                return Reservation(hold, replayed=False)
        # The key was used before (the insert met it), or this one would be refused: a replay
        # answers the original whatever the account's state now.
        original = await gq.find_hold_by_key(
            conn, account_id=account_id, idempotency_key=idempotency_key
        )
        if original is not None:
            if original.request_hash != request_hash:
                raise IdempotencyConflict(idempotency_key, original)
            return Reservation(original, replayed=True)
        assert refusal is not None  # the insert met no other hold with the key
        raise refusal


def _refusal(
    state: AccountState | None, account_id: str, amount_micros: int
) -> InsufficientCredit | CapExceeded | None:
    """Why a hold of amount_micros may not be made on this account state, or None."""
    if state is None:
        # No account, no credit: refused like an empty one (nothing is created).
        return InsufficientCredit(account_id, 0, amount_micros)
    if state.available_micros < amount_micros:
        return InsufficientCredit(
            account_id, state.balance_micros, amount_micros, held_micros=state.held_micros
        )
    cap = state.monthly_cap_micros
    if cap is not None and state.monthly_spend_micros + state.held_micros + amount_micros > cap:
        return CapExceeded(
            account_id, state.monthly_spend_micros, cap, amount_micros, state.held_micros
        )
    return None


async def get_reservation(
    conn: asyncpg.Connection | asyncpg.Pool, *, reservation_id: str, account_id: str | None
) -> Hold:
    """A hold by id; UnknownReservation when missing or (account_id given) another account's."""
    hold = await gq.get_hold(conn, reservation_id=reservation_id)
    if hold is None or (account_id is not None and hold.account_id != account_id):
        raise UnknownReservation(reservation_id)
    return hold


async def release(
    conn: asyncpg.Connection, *, reservation_id: str, account_id: str | None
) -> tuple[Hold, bool]:
    """Free an active hold; (the hold now, True) — or its current state and False when it was
    no longer active (released, settled or expired before). UnknownReservation when there is
    no such hold (or, account_id given, it is another account's)."""
    released = await gq.release_hold(conn, reservation_id=reservation_id, account_id=account_id)
    if released is not None:
        return released, True
    # Unknown, another account's, or no longer active: which one, and its state now.
    return await get_reservation(conn, reservation_id=reservation_id, account_id=account_id), False


async def list_active(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str, limit: int = 500
) -> list[Hold]:
    """The account's active, unexpired holds, soonest expiry first."""
    return await gq.active_holds(conn, account_id=account_id, limit=limit)


async def sweep_expired_holds(conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 5000) -> int:
    """Mark active holds past their expiry as expired (they stopped counting already)."""
    return await gq.mark_expired_holds(conn, limit=limit)
