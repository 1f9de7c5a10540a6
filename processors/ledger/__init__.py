"""The ledger: the only code that writes balances. Invariants in README.md beside this file."""

from processors.ledger.account_queries import upsert_tier
from processors.ledger.accounts import (
    MonthlyGrant,
    UnknownTier,
    ensure_account,
    grant_monthly_allocations,
    set_account_tier,
)
from processors.ledger.batch import RatedEvent, debit_batch
from processors.ledger.coupons import (
    CouponAlreadyRedeemed,
    CouponError,
    CouponExhausted,
    CouponExpired,
    CouponNotFound,
    Redemption,
    redeem_coupon,
)
from processors.ledger.entries import (
    EntryResult,
    post_entry,
    read_account,
    read_account_or_new,
    same_request,
    set_monthly_cap,
)
from processors.ledger.models import (
    LEDGER_TYPES,
    AccountState,
    Alert,
    BatchResult,
    CapExceeded,
    IdempotencyConflict,
    InsufficientCredit,
    LedgerError,
    LedgerPolicy,
    LedgerRow,
    UnknownAccount,
    month_of,
)
from processors.ledger.outbox import count_pending_alerts, publish_pending_alerts

__all__ = [
    "LEDGER_TYPES",
    "AccountState",
    "Alert",
    "BatchResult",
    "CapExceeded",
    "CouponAlreadyRedeemed",
    "CouponError",
    "CouponExhausted",
    "CouponExpired",
    "CouponNotFound",
    "EntryResult",
    "IdempotencyConflict",
    "InsufficientCredit",
    "LedgerError",
    "LedgerPolicy",
    "LedgerRow",
    "MonthlyGrant",
    "RatedEvent",
    "Redemption",
    "UnknownAccount",
    "UnknownTier",
    "debit_batch",
    "ensure_account",
    "grant_monthly_allocations",
    "month_of",
    "post_entry",
    "same_request",
    "count_pending_alerts",
    "publish_pending_alerts",
    "read_account",
    "read_account_or_new",
    "redeem_coupon",
    "set_account_tier",
    "upsert_tier",
    "set_monthly_cap",
]
