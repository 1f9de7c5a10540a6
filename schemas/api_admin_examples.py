"""The OpenAPI examples of the admin routes' models (schemas/api_admin.py), kept apart so
the models read as their fields and rules."""

from __future__ import annotations

from typing import Any

# AllocateIn
ALLOCATE_IN: list[Any] = [
    {
        "account_id": "acct-42",
        "amount": "100",
        "reason": "March top-up, invoice 2025-031",
        "idempotency_key": "inv-2025-031",
    }
]

# BulkAllocateIn
BULK_ALLOCATE_IN: list[Any] = [
    {
        "allocations": [
            {
                "account_id": "acct-1",
                "amount": "50",
                "reason": "promo",
                "idempotency_key": "promo-1",
            },
            {
                "account_id": "acct-2",
                "amount": "25.5",
                "reason": "promo",
                "idempotency_key": "promo-2",
            },
        ]
    }
]

# SystemAnalyticsOut
SYSTEM_ANALYTICS_OUT: list[Any] = [
    {
        "from": "2025-03-01",
        "to": "2025-03-31",
        "accounts": 1200,
        "blocked_accounts": 3,
        "total_balance": "84211.500000",
        "spend": "15422.125000",
        "events": 9123401,
        "active_accounts": 411,
    }
]

# AccountOut
ACCOUNT_OUT: list[Any] = [
    {
        "account_id": "acct-42",
        "balance": "87.250000",
        "monthly_spend": "12.750000",
        "monthly_cap": "50.000000",
        "cap_remaining": "37.250000",
        "tier": "pro",
        "blocked": False,
        "blocked_reason": None,
        "byok_configured": False,
        "api_keys": 2,
        "created_at": "2025-01-02T10:00:00Z",
        "updated_at": "2025-03-01T12:00:00Z",
    }
]

# SetTierIn
SET_TIER_IN: list[Any] = [{"tier": "pro"}]

# TierIn
TIER_IN: list[Any] = [
    {
        "monthly_allocation": "10",
        "price_multiplier": "0.95",
        "default_monthly_cap": None,
        "rate_limit": "200/second",
    }
]

# CouponIn
COUPON_IN: list[Any] = [
    {
        "code": "WELCOME25",
        "amount": "25",
        "max_redemptions": 100,
        "expires_at": "2025-12-31T23:59:59Z",
    }
]

# PriceIn
PRICE_IN: list[Any] = [
    {
        "effective_from": "2025-04-01T00:00:00Z",
        "provider": "openai",
        "input_per_mtok": "0.15",
        "cached_input_per_mtok": "0.075",
        "cache_write_per_mtok": None,
        "output_per_mtok": "0.6",
        "per_request": "0",
        "units": {"web_search": "0.01"},
    }
]

# ApiKeyIn
API_KEY_IN: list[Any] = [{"account_id": "acct-42", "scope": "user"}]

# ApiKeyOut
API_KEY_OUT: list[Any] = [
    {
        "key_id": "3f9a1c0d5e7b2a64",
        "key": "ml_3f9a1c0d5e7b2a64_<43 characters>",
        "scope": "user",
        "account_id": "acct-42",
    }
]
