"""The ledger: the only code that writes balances. Invariants in README.md beside this file."""

from processors.ledger.batch import RatedEvent, debit_batch
from processors.ledger.entries import EntryResult, post_entry, read_account, set_monthly_cap
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
from processors.ledger.outbox import publish_pending_alerts

__all__ = [
    "LEDGER_TYPES",
    "AccountState",
    "Alert",
    "BatchResult",
    "CapExceeded",
    "EntryResult",
    "IdempotencyConflict",
    "InsufficientCredit",
    "LedgerError",
    "LedgerPolicy",
    "LedgerRow",
    "RatedEvent",
    "UnknownAccount",
    "debit_batch",
    "month_of",
    "post_entry",
    "publish_pending_alerts",
    "read_account",
    "set_monthly_cap",
]
