"""What MeterlineClient answers (typed results, amounts as Decimal) and raises (problem+json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


def _money(body: dict[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    return None if value is None else Decimal(str(value))


def _time(body: dict[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    return None if value is None else datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Balance:
    """GET /credits/balance. `available` and `held` are None on a server without holds."""

    account_id: str
    balance: Decimal
    monthly_spend: Decimal
    monthly_cap: Decimal | None
    cap_remaining: Decimal | None
    tier: str
    blocked: bool
    blocked_reason: str | None
    available: Decimal | None
    held: Decimal | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Balance:
        return cls(
            account_id=str(body["account_id"]),
            balance=Decimal(str(body["balance"])),
            monthly_spend=Decimal(str(body.get("monthly_spend", "0"))),
            monthly_cap=_money(body, "monthly_cap"),
            cap_remaining=_money(body, "cap_remaining"),
            tier=str(body.get("tier", "")),
            blocked=bool(body.get("blocked", False)),
            blocked_reason=body.get("blocked_reason"),
            available=_money(body, "available"),
            held=_money(body, "held"),
            raw=body,
        )


@dataclass(frozen=True)
class Authorization:
    """POST /credits/authorize: may a call of this estimated cost go ahead, and why not."""

    allowed: bool
    reason: str
    balance: Decimal
    cap_remaining: Decimal | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Authorization:
        return cls(
            allowed=bool(body["allowed"]),
            reason=str(body["reason"]),
            balance=Decimal(str(body["balance"])),
            cap_remaining=_money(body, "cap_remaining"),
            raw=body,
        )


@dataclass(frozen=True)
class Cost:
    """POST /credits/calculate-cost: the rounded cost, the catalog's model id, the breakdown."""

    model: str
    cost: Decimal
    tier: str
    price_version_id: int | None
    breakdown: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Cost:
        return cls(
            model=str(body["model"]),
            cost=Decimal(str(body["cost"])),
            tier=str(body.get("tier", "")),
            price_version_id=body.get("price_version_id"),
            breakdown=dict(body.get("breakdown") or {}),
            raw=body,
        )


@dataclass(frozen=True)
class Reservation:
    """A hold: `status` is active, settled, released or expired."""

    reservation_id: str
    amount: Decimal
    status: str
    expires_at: datetime | None
    available: Decimal | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Reservation:
        return cls(
            reservation_id=str(body.get("reservation_id") or body["id"]),
            amount=Decimal(str(body["amount"])),
            status=str(body["status"]),
            expires_at=_time(body, "expires_at"),
            available=_money(body, "available"),
            raw=body,
        )


class MeterlineError(Exception):
    """An error answer of the API (problem+json) or no answer at all.

    ``status`` is the HTTP status (None when the API could not be reached), ``code`` the
    problem's machine code (``insufficient_credit``), ``detail`` its text and ``problem`` the
    whole body, extra members included (``errors``, ``available``, ``retry_after``…).
    """

    status: int | None = None  # class default; subclasses name theirs

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        if status is not None:
            self.status = status
        self.detail = detail
        self.code = code
        self.problem = problem or {}
        self.retry_after = retry_after


class BadRequest(MeterlineError):
    """400 or another 4xx this client has no class for."""


class Unauthorized(MeterlineError):
    """401: the API key is missing, wrong or revoked."""

    status: int | None = 401


class Forbidden(MeterlineError):
    """403: the key may not act for this account or on this route."""

    status: int | None = 403


class NotFound(MeterlineError):
    """404: no such reservation, account or route."""

    status: int | None = 404


class PaymentRequired(MeterlineError):
    """402: not enough credit (or the monthly cap) for what was asked."""

    status: int | None = 402


class Conflict(MeterlineError):
    """409: the idempotency key was already used with another body."""

    status: int | None = 409


class ValidationFailed(MeterlineError):
    """422: the request broke a rule; ``problem["errors"]`` names each field and rule."""

    status: int | None = 422

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors = self.problem.get("errors")
        return list(errors) if isinstance(errors, list) else []


class RateLimited(MeterlineError):
    """429: the key's rate limit; ``retry_after`` says when to come back."""

    status: int | None = 429


class Unavailable(MeterlineError):
    """503 (a dependency of the API is down), or the API could not be reached at all."""

    status: int | None = 503


class Unreachable(Unavailable):
    """No HTTP answer: connection refused, DNS, timeout."""

    status = None


class ServerError(MeterlineError):
    """500 or another 5xx: a fault of the server, not of the request."""


ERRORS: dict[int, type[MeterlineError]] = {
    401: Unauthorized,
    402: PaymentRequired,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def error_for(status: int) -> type[MeterlineError]:
    """The exception class of an HTTP error status."""
    return ERRORS.get(status) or (ServerError if status >= 500 else BadRequest)
