"""Coupon redemption: a coupon's credit written through post_entry, never past its maximum."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from processors.ledger import coupon_queries as cq
from processors.ledger.entries import EntryResult, post_entry
from processors.ledger.models import GrantTerms, LedgerError, LedgerPolicy


class CouponError(LedgerError):
    """A redemption the ledger refused; `code` says why, `coupon` names the coupon."""

    def __init__(self, coupon: str, message: str) -> None:
        self.coupon = coupon
        super().__init__(message, coupon=coupon)


class CouponNotFound(CouponError):
    code = "coupon_not_found"
    status = 404

    def __init__(self, coupon: str) -> None:
        super().__init__(coupon, f"no coupon has the code {coupon!r}; check its spelling")


class CouponExpired(CouponError):
    code = "coupon_expired"
    status = 410

    def __init__(self, coupon: str, expires_at: datetime) -> None:
        self.expires_at = expires_at
        super().__init__(coupon, f"coupon {coupon!r} expired at {expires_at.isoformat()}")


class CouponExhausted(CouponError):
    code = "coupon_exhausted"
    status = 409

    def __init__(self, coupon: str, max_redemptions: int) -> None:
        self.max_redemptions = max_redemptions
        super().__init__(
            coupon, f"coupon {coupon!r} has been redeemed its maximum of {max_redemptions} times"
        )


class CouponAlreadyRedeemed(CouponError):
    code = "coupon_already_redeemed"
    status = 409

    def __init__(self, coupon: str, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(
            coupon,
            f"account {account_id!r} has already redeemed coupon {coupon!r}; "
            "each account may redeem a coupon once",
        )


@dataclass(frozen=True, slots=True)
class Redemption:
    """The coupon's ledger entry and the coupon's redemption count after it."""

    entry: EntryResult
    code: str
    redemptions: int
    max_redemptions: int


async def redeem_coupon(
    conn: asyncpg.Connection,
    *,
    code: str,
    account_id: str,
    policy: LedgerPolicy,
    now: datetime | None = None,
) -> Redemption:
    """Credit the coupon's amount to the account, once per account, never past the maximum.

    The coupon row is locked first (FOR UPDATE), so concurrent redemptions queue on it and
    the count is checked by one writer at a time; the account row is locked after it inside
    post_entry (coupon → account, the only order any writer takes both in).
    """
    at = now or datetime.now(UTC)
    async with conn.transaction():
        coupon = await cq.lock_coupon(conn, code=code)
        if coupon is None:
            raise CouponNotFound(code)
        if coupon["expires_at"] is not None and coupon["expires_at"] <= at:
            raise CouponExpired(code, coupon["expires_at"])
        if await cq.redeemed_by(conn, code=code, account_id=account_id):
            raise CouponAlreadyRedeemed(code, account_id)
        if coupon["redemptions"] >= coupon["max_redemptions"]:
            raise CouponExhausted(code, coupon["max_redemptions"])
        entry = await post_entry(
            conn,
            account_id=account_id,
            type="coupon",
            amount_micros=coupon["amount_micros"],
            reason=f"coupon {code}",
            idempotency_key=None,  # once per account is coupon_redemptions' primary key
            policy=policy,
            # A promotion, at the default priority: among equal grants the older burns first.
            grant=GrantTerms(category="promotional"),
            now=at,
        )
        redemptions = await cq.record_redemption(
            conn, code=code, account_id=account_id, transaction_id=entry.row.id
        )
    return Redemption(entry, code, redemptions, int(coupon["max_redemptions"]))
