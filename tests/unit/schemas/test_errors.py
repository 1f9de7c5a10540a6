"""One error hierarchy: every domain error is a DomainError with its own code and status."""

from __future__ import annotations

from datetime import UTC, datetime

import processors.byok
import processors.catalog
import processors.ledger
import processors.pricing
import processors.topic_range
import producers.errors
import schemas.money
from processors.ledger import (
    CapExceeded,
    CouponExpired,
    IdempotencyConflict,
    InsufficientCredit,
    LedgerRow,
    UnknownTier,
)
from schemas.errors import DomainError

MODULES = (
    processors.byok,
    processors.catalog,
    processors.ledger,
    processors.pricing,
    processors.topic_range,
    producers.errors,
    schemas.money,
)
BASES = {"DomainError", "LedgerError", "CouponError"}


def _concrete() -> dict[str, type[DomainError]]:
    found: dict[str, type[DomainError]] = {}
    for module in MODULES:
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, DomainError) and name not in BASES:
                found[name] = obj
    return found


def test_each_domain_error_has_its_own_code_and_an_error_status() -> None:
    errors = _concrete()
    assert {
        "InsufficientCredit",
        "CapExceeded",
        "IdempotencyConflict",
        "UnknownAccount",
        "UnknownTier",
        "CouponNotFound",
        "CouponExpired",
        "CouponExhausted",
        "CouponAlreadyRedeemed",
        "DuplicatePriceVersion",
        "Unpriced",
        "RangeError",
        "MoneyError",
        "AdapterError",
        "EncryptionNotConfigured",
    } <= set(errors)
    codes = [cls.code for cls in errors.values()]
    assert len(codes) == len(set(codes)), sorted(codes)
    for name, cls in errors.items():
        assert cls.code != DomainError.code, name
        assert 400 <= cls.status < 600, name


def test_messages_and_problem_members_are_written_where_the_error_is_raised() -> None:
    e = InsufficientCredit("acme", 1_500_000, 2_000_000)
    assert (e.status, e.code) == (402, "insufficient_credit")
    assert e.detail == (
        "account 'acme' has a balance of 1.500000; 2.000000 would overdraw it."
        " Add credit or deduct less."
    )
    assert e.extra == {
        "account_id": "acme",
        "balance": "1.500000",
        "available": "1.500000",
        "held": "0.000000",
        "amount": "2.000000",
    }
    held = InsufficientCredit("acme", 3_000_000, 1_500_000, held_micros=2_000_000)
    assert held.detail.startswith("account 'acme' has 1.000000 available (2.000000 of its")
    assert (held.extra["available"], held.extra["held"]) == ("1.000000", "2.000000")
    cap = CapExceeded("acme", 4_000_000, 5_000_000, 2_000_000)
    assert cap.extra["cap_remaining"] == "1.000000" and cap.status == 402
    expired = CouponExpired("SPRING", datetime(2025, 1, 1, tzinfo=UTC))
    assert (expired.status, expired.code, expired.coupon) == (410, "coupon_expired", "SPRING")
    assert expired.extra == {"coupon": "SPRING"}
    row = LedgerRow(7, "acme", "deduction", -5, 0, None, "k", datetime(2025, 1, 1, tzinfo=UTC))
    conflict = IdempotencyConflict("k", row)
    assert conflict.status == 409
    assert conflict.extra == {"idempotency_key": "k", "original_transaction_id": 7}
    tier = UnknownTier("gold")
    assert tier.status == 422 and tier.extra["errors"][0]["field"] == "body.tier"
