"""The ledger's value types: account state, ledger rows, alerts, policy and errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from processors.pricing import DEFAULT_BYOK_FEE_PCT, Terms
from schemas.errors import DomainError
from schemas.money import format_micros

DEFAULT_TIER = "free"  # the tier an account is created with (a setting's default)
DEFAULT_LOW_BALANCE_MICROS = 1_000_000  # a low_balance alert below 1 credit (a setting's default)

LEDGER_TYPES = ("allocation", "usage", "deduction", "coupon", "refund", "adjustment")
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
    alerts: int = 0


class LedgerError(DomainError):
    """A write the ledger refused; `code` is machine-readable, the message says what to do."""

    code = "ledger_error"


class InsufficientCredit(LedgerError):
    code = "insufficient_credit"
    status = 402

    def __init__(self, account_id: str, balance_micros: int, amount_micros: int) -> None:
        self.account_id, self.balance_micros, self.amount_micros = (
            account_id,
            balance_micros,
            amount_micros,
        )
        balance, amount = format_micros(balance_micros), format_micros(amount_micros)
        super().__init__(
            f"account {account_id!r} has a balance of {balance}; {amount} would overdraw it."
            " Add credit or deduct less.",
            account_id=account_id,
            balance=balance,
            amount=amount,
        )


class CapExceeded(LedgerError):
    code = "monthly_cap_exceeded"
    status = 402

    def __init__(self, account_id: str, spend_micros: int, cap_micros: int, amount_micros: int):
        self.account_id, self.spend_micros, self.cap_micros, self.amount_micros = (
            account_id,
            spend_micros,
            cap_micros,
            amount_micros,
        )
        spend, cap, amount = map(format_micros, (spend_micros, cap_micros, amount_micros))
        super().__init__(
            f"account {account_id!r} has spent {spend} of its monthly cap of {cap}; {amount} more"
            " would pass it. Raise the cap or wait for next month.",
            account_id=account_id,
            monthly_spend=spend,
            monthly_cap=cap,
            cap_remaining=format_micros(max(cap_micros - spend_micros, 0)),
            amount=amount,
        )


class IdempotencyConflict(LedgerError):
    code = "idempotency_conflict"
    status = 409

    def __init__(self, key: str, original: LedgerRow) -> None:
        self.key, self.original = key, original
        super().__init__(
            f"idempotency_key {key!r} was already used for a different request "
            f"(a {original.type} of {original.amount_micros} micro-credits); use a new key",
            idempotency_key=key,
            original_transaction_id=original.id,
        )


class UnknownAccount(LedgerError):
    code = "unknown_account"
    status = 404

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"account {account_id!r} does not exist", account_id=account_id)


def month_of(at: datetime | date) -> date:
    """The first day of at's calendar month (callers pass UTC)."""
    return date(at.year, at.month, 1)
