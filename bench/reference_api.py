"""The minimal FastAPI reference of `meterline bench api` (issue 13): not product code.

What the leanest FastAPI app does for meterline's hot reads: one asyncpg pool, a bearer token
looked up in a constant dict (one token per account, as meterline's keys name theirs), the
same SQL on the same tables as meterline's account read, and a pydantic response model of the
same shape. Reservations lock the token's account, so the reference's holds spread over as
many accounts as meterline's in the bench (one account for all made them queue on one lock).
No key table, no rate limit, no metrics, no error hierarchy: the gap between meterline and
this app is meterline's own per-request work.

Balance and authorize answer the same fields as meterline's (available and held included).
Served by uvicorn with the options `meterline api` uses (uvloop, httptools, one worker):
    METERLINE_REFERENCE_DSN=postgresql://... METERLINE_REFERENCE_ACCOUNTS=bench-acct-1,... \
    METERLINE_REFERENCE_TOKEN=... uvicorn bench.reference_api:create_app --factory
Account a's bearer token is reference_token(METERLINE_REFERENCE_TOKEN, a).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

# The same read as processors.ledger.queries.read_accounts, for one account.
BALANCE_SQL = (
    "SELECT u.account_id, u.balance_micros, u.tier, u.monthly_cap_micros, u.blocked,"
    " coalesce(m.spend_micros, 0) AS spend,"
    " (SELECT coalesce(sum(h.amount_micros), 0)::bigint FROM credit_holds h"
    "  WHERE h.account_id = u.account_id AND h.status = 'active' AND h.expires_at > now())"
    " AS held"
    " FROM user_credits u JOIN tiers t ON t.name = u.tier"
    " LEFT JOIN monthly_spend m ON m.account_id = u.account_id AND m.month = $2"
    " WHERE u.account_id = $1"
)


class BalanceOut(BaseModel):
    account_id: str
    balance: str
    available: str
    held: str
    monthly_spend: str
    monthly_cap: str | None
    cap_remaining: str | None
    tier: str
    blocked: bool
    blocked_reason: Literal["balance_overdrawn", "monthly_cap_reached"] | None


class ReserveIn(BaseModel):
    amount: Decimal
    ttl_seconds: int = 300
    idempotency_key: str


class ReservationOut(BaseModel):
    reservation_id: str
    account_id: str
    amount: str
    status: str
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None
    available: str | None


# A hold the lean way: lock the account row, check what is available, insert; release: update.
LOCK_SQL = (
    "SELECT u.balance_micros - coalesce((SELECT sum(h.amount_micros) FROM credit_holds h"
    " WHERE h.account_id = u.account_id AND h.status = 'active' AND h.expires_at > now()),"
    " 0)::bigint FROM user_credits u WHERE u.account_id = $1 FOR UPDATE"
)
HOLD_SQL = (
    "INSERT INTO credit_holds (reservation_id, account_id, amount_micros, expires_at,"
    " idempotency_key, request_hash, available_after_micros)"
    " VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, '', $6)"
    " RETURNING reservation_id, account_id, amount_micros, status, expires_at, created_at,"
    " closed_at"
)
RELEASE_SQL = (
    "UPDATE credit_holds SET status = 'released', closed_at = now()"
    " WHERE reservation_id = $1 AND account_id = $2 AND status = 'active'"
    " RETURNING reservation_id, account_id, amount_micros, status, expires_at, created_at,"
    " closed_at"
)


def _hold(r: asyncpg.Record, available: int | None) -> ReservationOut:
    return ReservationOut(
        reservation_id=r["reservation_id"],
        account_id=r["account_id"],
        amount=_money(r["amount_micros"]) or "",
        status=r["status"],
        expires_at=r["expires_at"],
        created_at=r["created_at"],
        closed_at=r["closed_at"],
        available=_money(available),
    )


class AuthorizeIn(BaseModel):
    estimated_cost: Decimal


class AuthorizeOut(BaseModel):
    allowed: bool
    reason: Literal["ok", "blocked", "insufficient_balance", "monthly_cap"]
    balance: str
    cap_remaining: str | None
    available: str
    held: str


def _money(micros: int | None) -> str | None:
    if micros is None:
        return None
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def reference_token(token: str, account: str) -> str:
    """The bearer token of `account` in a reference app whose METERLINE_REFERENCE_TOKEN is
    `token`."""
    return f"{token}.{account}"


async def check_token(request: Request) -> str:
    """The account of the bearer token; 401 unless it is one of the constant ones."""
    account: str | None = request.app.state.bearers.get(request.headers.get("authorization"))
    if account is None:
        raise HTTPException(401, "unauthorized")
    return account


Authed = Annotated[str, Depends(check_token)]


async def read(request: Request, account: str) -> asyncpg.Record:
    """The account's row with this month's spend."""
    month = datetime.now(UTC).date().replace(day=1)
    row = await request.app.state.pool.fetchrow(BALANCE_SQL, account, month)
    if row is None:
        raise HTTPException(404, "no such account")
    return row


def create_app() -> FastAPI:
    """The reference app; its database, accounts and token from METERLINE_REFERENCE_*."""
    dsn = os.environ["METERLINE_REFERENCE_DSN"]
    accounts = os.environ["METERLINE_REFERENCE_ACCOUNTS"].split(",")
    token = os.environ["METERLINE_REFERENCE_TOKEN"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=10, max_size=20)
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)
    app.state.bearers = {f"Bearer {reference_token(token, a)}": a for a in accounts}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/credits/balance")
    async def balance(request: Request, account: Authed) -> BalanceOut:
        r = await read(request, account)
        cap = r["monthly_cap_micros"]
        return BalanceOut(
            account_id=r["account_id"],
            balance=_money(r["balance_micros"]) or "",
            available=_money(r["balance_micros"] - r["held"]) or "",
            held=_money(r["held"]) or "",
            monthly_spend=_money(r["spend"]) or "",
            monthly_cap=_money(cap),
            cap_remaining=_money(None if cap is None else max(0, cap - r["spend"])),
            tier=r["tier"],
            blocked=r["blocked"],
            blocked_reason="balance_overdrawn" if r["blocked"] else None,
        )

    @app.post("/api/v1/credits/authorize")
    async def authorize(body: AuthorizeIn, request: Request, account: Authed) -> AuthorizeOut:
        r = await read(request, account)
        estimate = int(body.estimated_cost * 1_000_000)
        cap = r["monthly_cap_micros"]
        left = None if cap is None else max(0, cap - r["spend"])
        reason: Literal["ok", "blocked", "insufficient_balance", "monthly_cap"] = "ok"
        available = r["balance_micros"] - r["held"]
        if r["blocked"]:
            reason = "blocked"
        elif available < estimate:
            reason = "insufficient_balance"
        elif left is not None and estimate + r["held"] > left:
            reason = "monthly_cap"
        return AuthorizeOut(
            allowed=reason == "ok",
            reason=reason,
            balance=_money(r["balance_micros"]) or "",
            cap_remaining=_money(left),
            available=_money(available) or "",
            held=_money(r["held"]) or "",
        )

    @app.post("/api/v1/credits/reservations", status_code=201)
    async def reserve(body: ReserveIn, request: Request, account: Authed) -> ReservationOut:
        amount = int(body.amount * 1_000_000)
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            available = await conn.fetchval(LOCK_SQL, account)
            if available is None or available < amount:
                raise HTTPException(402, "insufficient credit")
            row = await conn.fetchrow(
                HOLD_SQL,
                "rsv_" + secrets.token_hex(12),
                account,
                amount,
                float(body.ttl_seconds),
                body.idempotency_key,
                available - amount,
            )
        return _hold(row, available - amount)

    @app.post("/api/v1/credits/reservations/{reservation_id}/release")
    async def release(reservation_id: str, request: Request, account: Authed) -> ReservationOut:
        row = await request.app.state.pool.fetchrow(RELEASE_SQL, reservation_id, account)
        if row is None:
            raise HTTPException(404, "no such active hold")
        return _hold(row, None)

    return app
