"""The ledger's value types: account state, ledger rows, alerts, policy and errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from processors.pricing import DEFAULT_BYOK_FEE_PCT, Terms
from schemas.bounds import MAX_TOTAL_MICROS
from schemas.errors import DomainError
from schemas.money import format_micros

DEFAULT_TIER = "free"  # the tier an account is created with (a setting's default)
DEFAULT_LOW_BALANCE_MICROS = 1_000_000  # a low_balance alert below 1 credit (a setting's default)

LEDGER_TYPES = (
    "allocation",
    "usage",
    "deduction",
    "coupon",
    "refund",
    "adjustment",
    "expiration",
)
CAP_THRESHOLDS = (50, 80, 100)


@dataclass(slots=True)
class AccountState:
    """An account as locked inside a ledger transaction (spend is the current UTC month's)."""

    account_id: str
    balance_micros: int
    tier: str
    monthly_cap_micros: int | None
    monthly_spend_micros: int
    alerted_pct: int
    blocked: bool
    low_balance_alerted: bool
    price_multiplier: Decimal = Decimal(1)
    overdraft_micros: int = 0  # what debits took that no grant covered (invariant 7)
    held_micros: int = 0  # active, unexpired holds (invariant 8)

    @property
    def available_micros(self) -> int:
        """What may still be reserved or deducted: the balance less the active holds."""
        return self.balance_micros - self.held_micros

    @property
    def cap_remaining_micros(self) -> int | None:
        """What may still be spent this month; None when there is no cap."""
        if self.monthly_cap_micros is None:
            return None
        return max(self.monthly_cap_micros - self.monthly_spend_micros, 0)

    def should_block(self) -> str | None:
        """Why the account must be blocked now (overdrawn, cap reached), or None."""
        if self.balance_micros < 0:
            return "balance_overdrawn"
        if (
            self.monthly_cap_micros is not None
            and self.monthly_spend_micros >= self.monthly_cap_micros
        ):
            return "monthly_cap_reached"
        return None


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One row of credit_transactions."""

    id: int
    account_id: str
    type: str
    amount_micros: int
    balance_after_micros: int
    reason: str | None
    idempotency_key: str | None
    created_at: datetime
    source: str | None = None
    event_id: str | None = None
    model: str | None = None
    # A keyed write's request fingerprint, and the pricing a priced deduction answered with.
    request_hash: bytes | None = None
    priced: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """A notice for credit.alerts, written to the outbox in the transaction that caused it."""

    account_id: str
    kind: str  # cap_threshold | low_balance | blocked | unblocked
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LedgerPolicy:
    """Settings the ledger applies; callers build it from their service settings."""

    low_balance_micros: int = DEFAULT_LOW_BALANCE_MICROS
    byok_fee_pct: Decimal = DEFAULT_BYOK_FEE_PCT
    default_tier: str = DEFAULT_TIER

    def terms(self, multiplier: Decimal) -> Terms:
        """The terms a charge made now applies: the account tier's multiplier, the byok fee."""
        return Terms(multiplier=multiplier, byok_fee_pct=self.byok_fee_pct)


@dataclass(slots=True)
class BatchResult:
    """What one debit batch did."""

    debited: int = 0
    duplicates: int = 0
    debited_micros: int = 0
    unpriced: list[tuple[int, str]] = field(default_factory=list)  # (input index, message)
    # (input index, message): the (source, event_id) was debited for another account.
    conflicting: list[tuple[int, str]] = field(default_factory=list)
    alerts: int = 0
    settled: int = 0  # holds settled by the batch's events (reservation_id)


class LedgerError(DomainError):
    """A write the ledger refused; `code` is machine-readable, the message says what to do."""

    code = "ledger_error"


class InsufficientCredit(LedgerError):
    code = "insufficient_credit"
    status = 402

    def __init__(
        self, account_id: str, balance_micros: int, amount_micros: int, held_micros: int = 0
    ) -> None:
        self.account_id, self.balance_micros, self.amount_micros, self.held_micros = (
            account_id,
            balance_micros,
            amount_micros,
            held_micros,
        )
        balance, amount = format_micros(balance_micros), format_micros(amount_micros)
        available = format_micros(balance_micros - held_micros)
        if held_micros:
            message = (
                f"account {account_id!r} has {available} available ({format_micros(held_micros)}"
                f" of its balance of {balance} is held by reservations); {amount} would overdraw"
                " it. Add credit, release reservations or ask for less."
            )
        else:
            message = (
                f"account {account_id!r} has a balance of {balance}; {amount} would overdraw it."
                " Add credit or deduct less."
            )
        super().__init__(
            message,
            account_id=account_id,
            balance=balance,
            available=available,
            held=format_micros(held_micros),
            amount=amount,
        )

    @property
    def available_micros(self) -> int:
        """The balance less the active holds, when the write was refused."""
        return self.balance_micros - self.held_micros


class CapExceeded(LedgerError):
    code = "monthly_cap_exceeded"
    status = 402

    def __init__(
        self,
        account_id: str,
        spend_micros: int,
        cap_micros: int,
        amount_micros: int,
        held_micros: int = 0,
    ):
        self.account_id, self.spend_micros, self.cap_micros, self.amount_micros = (
            account_id,
            spend_micros,
            cap_micros,
            amount_micros,
        )
        self.held_micros = held_micros
        spend, cap, amount = map(format_micros, (spend_micros, cap_micros, amount_micros))
        holds = f" and holds {format_micros(held_micros)} in reservations" if held_micros else ""
        super().__init__(
            f"account {account_id!r} has spent {spend}{holds} of its monthly cap of {cap};"
            f" {amount} more would pass it. Raise the cap or wait for next month.",
            account_id=account_id,
            monthly_spend=spend,
            monthly_cap=cap,
            cap_remaining=format_micros(max(cap_micros - spend_micros, 0)),
            held=format_micros(held_micros),
            amount=amount,
        )


class IdempotencyConflict(LedgerError):
    code = "idempotency_conflict"
    status = 409

    def __init__(self, key: str, original: LedgerRow | Hold) -> None:
        self.key, self.original = key, original
        if isinstance(original, Hold):
            what = (
                f"reservation {original.reservation_id} of {format_micros(original.amount_micros)}"
            )
            ref: dict[str, Any] = {"original_reservation_id": original.reservation_id}
        else:
            # Credits as the wire writes them ("-1.000000"), not the ledger's micro-credits.
            article = "an" if original.type[0] in "aeiou" else "a"
            what = f"{article} {original.type} of {format_micros(original.amount_micros)}"
            ref = {"original_transaction_id": original.id}
        super().__init__(
            f"idempotency_key {key!r} was already used for a different request ({what});"
            " use a new key",
            idempotency_key=key,
            **ref,
        )


class BalanceOutOfRange(LedgerError):
    """An entry that would take a balance or a month's spend past what the ledger holds."""

    code = "balance_out_of_range"
    status = 422

    def __init__(self, account_id: str, amount_micros: int, total_micros: int, what: str) -> None:
        self.account_id = account_id
        verb = "crediting" if amount_micros > 0 else "debiting"
        message = (
            f"{verb} {format_micros(abs(amount_micros))} would bring the {what} of account "
            f"{account_id!r} to {format_micros(total_micros)}, past the most the ledger holds "
            f"({format_micros(MAX_TOTAL_MICROS)} either way); nothing was written"
        )
        super().__init__(
            message,
            account_id=account_id,
            errors=[{"field": "body.amount", "rule": self.code, "message": message}],
        )


def check_totals(account_id: str, amount_micros: int, balance: int, spend: int = 0) -> None:
    """BalanceOutOfRange unless a balance and a month's spend after an entry fit BIGINT."""
    if abs(balance) > MAX_TOTAL_MICROS:
        raise BalanceOutOfRange(account_id, amount_micros, balance, "balance")
    if abs(spend) > MAX_TOTAL_MICROS:
        raise BalanceOutOfRange(account_id, amount_micros, spend, "monthly spend")


class UnknownAccount(LedgerError):
    code = "unknown_account"
    status = 404

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"account {account_id!r} does not exist", account_id=account_id)


def month_of(at: datetime | date) -> date:
    """The first day of at's calendar month (callers pass UTC)."""
    return date(at.year, at.month, 1)


GRANT_CATEGORIES = ("paid", "promotional")
HOLD_STATUSES = ("active", "released", "settled", "expired")


@dataclass(frozen=True, slots=True)
class GrantTerms:
    """How a credit burns: category, priority (lower first), when it applies and expires.

    The default is an allocation's: paid, priority 50, effective now, never expires, any usage.
    """

    category: str = "paid"
    priority: int = 50
    effective_at: datetime | None = None  # None: when it is written
    expires_at: datetime | None = None  # None: never
    applies_to: tuple[str, ...] | None = None  # None: any usage; else model/provider prefixes


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of credit_grants."""

    grant_id: int
    account_id: str
    category: str
    amount_micros: int
    remaining_micros: int
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    applies_to: tuple[str, ...] | None
    transaction_id: int | None
    reason: str | None
    created_at: datetime

    def terms(self) -> GrantTerms:
        """The terms the grant was written with."""
        return GrantTerms(
            self.category, self.priority, self.effective_at, self.expires_at, self.applies_to
        )


@dataclass(frozen=True, slots=True)
class Burn:
    """What one ledger row took from one grant (kind debit, overdraft or expiry)."""

    transaction_id: int
    grant_id: int
    account_id: str
    kind: str
    amount_micros: int


@dataclass(frozen=True, slots=True)
class Hold:
    """One reservation (row of credit_holds); `status` is as of `now` (expired once past)."""

    reservation_id: str
    account_id: str
    amount_micros: int
    status: str
    expires_at: datetime
    idempotency_key: str
    request_hash: bytes
    metadata: dict[str, Any] | None
    available_after_micros: int
    created_at: datetime
    closed_at: datetime | None
    settled_transaction_id: int | None
    settled_source: str | None
    settled_event_id: str | None


@dataclass(frozen=True, slots=True)
class HoldAttempt:
    """What reserve_hold answered: `outcome` is reserved or replayed (with `hold`), or the
    refusal (no_account, insufficient_credit, monthly_cap_exceeded) with the account state
    that decided it, read under the account's lock."""

    outcome: str
    hold: Hold | None
    balance_micros: int | None
    held_micros: int | None
    spend_micros: int | None
    cap_micros: int | None


class UnknownReservation(LedgerError):
    code = "unknown_reservation"
    status = 404

    def __init__(self, reservation_id: str) -> None:
        self.reservation_id = reservation_id
        super().__init__(
            f"no reservation {reservation_id!r} exists for this account",
            reservation_id=reservation_id,
        )
