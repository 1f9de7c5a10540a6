"""The OpenAPI examples of the credit routes' models (schemas/api_credits.py), kept apart so
the models read as their fields and rules."""

from __future__ import annotations

from typing import Any

# BalanceOut
BALANCE_OUT: list[Any] = [
    {
        "account_id": "acct-42",
        "balance": "87.250000",
        "monthly_spend": "12.750000",
        "monthly_cap": "50.000000",
        "cap_remaining": "37.250000",
        "tier": "pro",
        "blocked": False,
        "blocked_reason": None,
        "available": "86.750000",
        "held": "0.500000",
    }
]

# MonthlyCapIn
MONTHLY_CAP_IN: list[Any] = [{"monthly_cap": "50"}, {"monthly_cap": None}]

# LedgerRowOut
LEDGER_ROW_OUT: list[Any] = [
    {
        "id": 1042,
        "account_id": "acct-42",
        "type": "deduction",
        "amount": "-1.500000",
        "balance_after": "85.750000",
        "reason": "image generation",
        "idempotency_key": "req-7f3a",
        "model": None,
        "source": None,
        "event_id": None,
        "created_at": "2025-03-01T12:00:00.123456Z",
    }
]

# DeductIn
DEDUCT_IN: list[Any] = [
    {"amount": "1.5", "reason": "image generation", "idempotency_key": "req-7f3a"}
]

# CalculateCostIn
CALCULATE_COST_IN: list[Any] = [
    {
        "model": "openai/gpt-4o-mini",
        "input_tokens": 1200,
        "cached_input_tokens": 1024,
        "output_tokens": 300,
    }
]

# CalculateAndDeductIn
CALCULATE_AND_DEDUCT_IN: list[Any] = [
    {
        "model": "openai/gpt-4o-mini",
        "input_tokens": 1200,
        "output_tokens": 300,
        "idempotency_key": "call-2025-03-01-0001",
        "reason": "chat completion",
    }
]

# CostOut
COST_OUT: list[Any] = [
    {
        "model": "openai/gpt-4o-mini",
        "price_version_id": 17,
        "occurred_at": "2025-03-01T12:00:00Z",
        "tier": "free",
        "cost": "0.000285",
        "breakdown": {
            "input": "0.0000264",
            "cached_input": "0.0000768",
            "cache_write": "0",
            "output": "0.00018",
            "requests": "0",
            "units": {},
        },
        "subtotal": "0.0002832",
        "multiplier": "1",
        "byok": False,
        "byok_fee_pct": "5",
        "total_exact": "0.0002832",
    }
]

# ModelPriceOut
MODEL_PRICE_OUT: list[Any] = [
    {
        "model": "openai/gpt-4o-mini",
        "provider": "openai",
        "price_version_id": 17,
        "effective_from": "2024-07-18T00:00:00Z",
        "input_per_mtok": "0.15",
        "cached_input_per_mtok": "0.075",
        "cache_write_per_mtok": None,
        "output_per_mtok": "0.6",
        "per_request": "0",
        "units": {},
    }
]

# UsageStatsOut
USAGE_STATS_OUT: list[Any] = [
    {
        "account_id": "acct-42",
        "from": "2025-03-01",
        "to": "2025-03-31",
        "group_by": "model",
        "groups": [
            {
                "key": "openai/gpt-4o-mini",
                "events": 1200,
                "input_tokens": 1500000,
                "cached_input_tokens": 400000,
                "cache_write_tokens": 0,
                "output_tokens": 300000,
                "reasoning_tokens": 0,
                "requests": 1200,
                "cost": "0.435000",
            }
        ],
        "totals": {
            "events": 1200,
            "input_tokens": 1500000,
            "cached_input_tokens": 400000,
            "cache_write_tokens": 0,
            "output_tokens": 300000,
            "reasoning_tokens": 0,
            "requests": 1200,
            "cost": "0.435000",
        },
    }
]

# AuthorizeIn
AUTHORIZE_IN: list[Any] = [{"estimated_cost": "0.25"}]

# AuthorizeOut
AUTHORIZE_OUT: list[Any] = [
    {
        "allowed": True,
        "reason": "ok",
        "balance": "87.250000",
        "cap_remaining": "37.250000",
    },
    {
        "allowed": False,
        "reason": "monthly_cap",
        "balance": "87.250000",
        "cap_remaining": "0.100000",
    },
]

# RedeemIn
REDEEM_IN: list[Any] = [{"code": "WELCOME25"}]

# OpenRouterKeyIn
OPEN_ROUTER_KEY_IN: list[Any] = [{"api_key": "sk-or-v1-0123456789abcdef0123456789abcdef"}]

# OpenRouterKeyOut
OPEN_ROUTER_KEY_OUT: list[Any] = [
    {
        "account_id": "acct-42",
        "provider": "openrouter",
        "masked_key": "sk-or-…cdef",
        "key_last4": "cdef",
        "created_at": "2025-03-01T12:00:00Z",
        "updated_at": "2025-03-01T12:00:00Z",
    }
]

# IngestAccepted
INGEST_ACCEPTED: list[Any] = [{"accepted": 2}]
