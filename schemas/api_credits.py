"""Request and response models of the user credit routes: amounts are decimal strings on the wire.

Amount inputs accept a decimal string (``"12.5"``) or an integer number of credits; binary
floats are refused (they have already lost exactness), and so is anything finer than the
micro-credit (more than 6 decimal places). Every output amount is a decimal string with
exactly 6 places (``"12.500000"``).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    model_validator,
)

from schemas import api_credits_examples as ex
from schemas import bounds
from schemas.bounds import Count, EventTime, Timestamp
from schemas.event import check_reasoning_within_output
from schemas.money import format_micros

MAX_WHOLE_DIGITS = bounds.MAX_CREDIT_DIGITS  # < 10**12 credits: BIGINT micros with room to spare
_DECIMAL_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_AMOUNT_PATTERN = r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$"
_MONEY_OUT_PATTERN = r"^-?[0-9]+\.[0-9]{6}$"
_INT_LIMIT = 10**MAX_WHOLE_DIGITS


def _parse_credits(value: Any) -> Decimal:
    """A decimal string or an int → exact Decimal credits; floats and > 6 places refused."""
    if isinstance(value, bool):
        raise ValueError('must be a decimal string such as "12.5" or an integer, not a boolean')
    if isinstance(value, float):
        raise ValueError(
            'must be a decimal string such as "12.5" or an integer: binary floats are refused '
            "because they cannot hold amounts exactly"
        )
    if isinstance(value, int):
        if abs(value) >= _INT_LIMIT:
            raise ValueError(f"must have at most {MAX_WHOLE_DIGITS} digits before the point")
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("must be a finite amount")
        text = format(value, "f")
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError('must be a decimal string such as "12.5" or an integer')
    if not _DECIMAL_RE.fullmatch(text):
        raise ValueError(
            'must be a plain decimal string such as "12.5" (digits, an optional "-" and "."; '
            "no exponent, spaces or thousands separators)"
        )
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > 6:
        raise ValueError(
            "has more than 6 decimal places: amounts are exact to the micro-credit (0.000001)"
        )
    if len(whole) > MAX_WHOLE_DIGITS:
        raise ValueError(f"must have at most {MAX_WHOLE_DIGITS} digits before the point")
    return Decimal(text)


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _amount_schema(minimum_note: str, example: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _AMOUNT_PATTERN},
                {"type": "integer"},
            ],
            "description": (
                f"Credits as a decimal string (at most 6 decimal places) or an integer; "
                f"{minimum_note}. Floats are refused."
            ),
            "examples": [example],
        }
    )


PositiveCredits = Annotated[
    Decimal,
    BeforeValidator(_parse_credits),
    AfterValidator(_positive),
    _amount_schema("greater than 0", "12.5"),
]
NonNegativeCredits = Annotated[
    Decimal,
    BeforeValidator(_parse_credits),
    AfterValidator(_non_negative),
    _amount_schema("0 or more", "0.25"),
]
Money = Annotated[
    str,
    Field(pattern=_MONEY_OUT_PATTERN, examples=["12.500000"]),
]
Reason = Annotated[str, bounds.Text(500, free=True)]
IdempotencyKey = Annotated[str, bounds.Text(200)]
ModelName = Annotated[str, bounds.Text(256)]
UnitName = Annotated[str, bounds.Text(64)]
CouponCode = Annotated[str, bounds.Text(64, trimmed=True)]
UnitCount = bounds.UnitCount


def money_or_none(micros: int | None) -> str | None:
    """Micro-credits or None → the wire form or null."""
    return None if micros is None else format_micros(micros)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- balance, caps -------------------------------------------------------------------------


class BalanceOut(BaseModel):
    """An account's balance and this month's spend against its cap (UTC calendar month)."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.BALANCE_OUT})

    account_id: str
    balance: Money
    available: Money = Field(description="balance less the active holds (reservations)")
    held: Money = Field(description="credit held by active, unexpired reservations")
    monthly_spend: Money
    monthly_cap: Money | None = Field(description="null: no monthly cap")
    cap_remaining: Money | None = Field(description="null: no monthly cap")
    tier: str
    blocked: bool = Field(description="balance below 0 or this month's spend at the cap")
    blocked_reason: Literal["balance_overdrawn", "monthly_cap_reached"] | None = None


class MonthlyCapIn(_In):
    """A new monthly cap: a positive amount, or null to remove the cap."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.MONTHLY_CAP_IN},
    )

    monthly_cap: PositiveCredits | None = Field(
        description="Positive credits (decimal string or integer), or null for no cap"
    )


# ---- ledger rows, deductions ----------------------------------------------------------------


class GrantBurnOut(BaseModel):
    """What one ledger row took from one grant."""

    grant_id: int
    amount: Money
    kind: Literal["debit", "overdraft", "expiry"]


class LedgerRowOut(BaseModel):
    """One row of the transaction ledger; amount is signed (debits negative)."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.LEDGER_ROW_OUT})

    id: int
    account_id: str
    type: Literal[
        "allocation", "usage", "deduction", "coupon", "refund", "adjustment", "expiration"
    ]
    amount: Money
    balance_after: Money
    reason: str | None
    idempotency_key: str | None
    model: str | None
    source: str | None
    event_id: str | None
    created_at: datetime
    grants: list[GrantBurnOut] = Field(
        default_factory=list,
        description="which grants the row burned (a debit or an expiration) or repaid "
        "an overdraft from (a credit)",
    )


class DeductIn(_In):
    """A synchronous deduction; the same idempotency_key and body answer the original result."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.DEDUCT_IN},
    )

    amount: PositiveCredits
    reason: Reason
    idempotency_key: IdempotencyKey


class EntryOut(BaseModel):
    """A ledger write: the row, the balance after it, and whether this answer is a replay."""

    transaction: LedgerRowOut
    balance: Money
    replayed: bool = Field(
        description="true when the idempotency_key was already used with this body: the "
        "original result is returned and nothing new is written (also the Idempotent-Replayed "
        "header)"
    )


# ---- pricing --------------------------------------------------------------------------------


class CalculateCostIn(_In):
    """The token buckets and units of one model call (disjoint, as in the usage event)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.CALCULATE_COST_IN},
    )

    model: ModelName
    input_tokens: Count = 0
    cached_input_tokens: Count = 0
    cache_write_tokens: Count = 0
    output_tokens: Count = 0
    reasoning_tokens: Count = Field(
        default=0, description="the part of output_tokens spent on reasoning"
    )
    requests: Count = 1
    units: dict[UnitName, UnitCount] = Field(
        default_factory=dict, max_length=64, description='other billable units, e.g. {"images": 2}'
    )
    byok: bool = Field(default=False, description="only the platform fee is charged")
    occurred_at: Timestamp | None = Field(
        default=None, description="selects the price version; default now"
    )

    @model_validator(mode="after")
    def _reasoning_within_output(self) -> CalculateCostIn:
        check_reasoning_within_output(self.reasoning_tokens, self.output_tokens)
        return self


class CalculateAndDeductIn(CalculateCostIn):
    """A cost calculation followed by an idempotent deduction of that cost."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.CALCULATE_AND_DEDUCT_IN},
    )

    idempotency_key: IdempotencyKey
    reason: Reason | None = Field(default=None, description="default: the model's name")
    # A charge, so the usage event's bound: not ahead of the clock (a price version scheduled
    # for next month must not be paid today), not before 2000. An estimate may look ahead.
    occurred_at: EventTime | None = Field(
        default=None,
        description="selects the price version; default now. As the usage event's: from "
        "2000-01-01 to at most the clock skew (default 5 minutes) ahead of the server's clock",
    )


class BreakdownOut(BaseModel):
    """Exact credits per bucket before multiplier, fee and rounding (plain decimal strings)."""

    input: str
    cached_input: str
    cache_write: str
    output: str
    requests: str
    units: dict[str, str]


class CostOut(BaseModel):
    """What a call costs: the rounded cost and how it was computed."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.COST_OUT})

    model: str = Field(description="the catalog's model id the name resolved to")
    price_version_id: int | None
    occurred_at: datetime
    tier: str
    cost: Money
    breakdown: BreakdownOut
    subtotal: str
    multiplier: str
    byok: bool
    byok_fee_pct: str
    total_exact: str


class CalculateAndDeductOut(EntryOut):
    """The cost and the deduction it made."""

    cost: CostOut


class ModelPriceOut(BaseModel):
    """The price version in force for a model: credits per million tokens, request, unit."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.MODEL_PRICE_OUT})

    model: str
    provider: str | None
    price_version_id: int | None
    effective_from: datetime
    input_per_mtok: str
    cached_input_per_mtok: str | None
    cache_write_per_mtok: str | None
    output_per_mtok: str
    per_request: str
    units: dict[str, str]


class ModelPricesOut(BaseModel):
    """Every model's current price."""

    models: list[ModelPriceOut]


# ---- history and stats ----------------------------------------------------------------------


class TransactionsPage(BaseModel):
    """A page of ledger rows, newest first; pass next_cursor as cursor for the next page."""

    items: list[LedgerRowOut]
    next_cursor: str | None = Field(description="null on the last page")


class UsageGroupOut(BaseModel):
    """Usage of one model, provider or day."""

    key: str = Field(description="the model id, the provider, or the day (YYYY-MM-DD)")
    events: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    requests: int
    cost: Money


class UsageTotalsOut(BaseModel):
    """Usage summed over every group."""

    events: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    requests: int
    cost: Money


class UsageStatsOut(BaseModel):
    """Usage from the daily rollup, UTC days from..to inclusive."""

    model_config = ConfigDict(
        json_schema_extra={"examples": ex.USAGE_STATS_OUT},
        populate_by_name=True,
    )

    account_id: str
    from_: date = Field(alias="from")
    to: date
    group_by: Literal["model", "provider", "day"]
    groups: list[UsageGroupOut]
    totals: UsageTotalsOut


# ---- authorize ------------------------------------------------------------------------------


class AuthorizeIn(_In):
    """The cost a proxy expects a call to have, asked before making it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": ex.AUTHORIZE_IN})

    estimated_cost: NonNegativeCredits


class AuthorizeOut(BaseModel):
    """Whether the call may go ahead, and why not."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.AUTHORIZE_OUT})

    allowed: bool
    reason: Literal["ok", "blocked", "insufficient_balance", "monthly_cap"]
    balance: Money
    cap_remaining: Money | None = Field(description="null: no monthly cap")
    available: Money = Field(description="balance less the active holds")
    held: Money = Field(description="credit held by active reservations")


# ---- coupons --------------------------------------------------------------------------------


class RedeemIn(_In):
    """A coupon code to redeem for the account (once per account)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": ex.REDEEM_IN})

    code: CouponCode


class RedeemOut(EntryOut):
    """The coupon credit written to the ledger."""

    code: str


# ---- BYOK -----------------------------------------------------------------------------------


class OpenRouterKeyIn(_In):
    """The account's own OpenRouter API key; stored encrypted, never shown again in full."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.OPEN_ROUTER_KEY_IN},
    )

    api_key: SecretStr = Field(description="8–512 visible characters, no spaces")


class OpenRouterKeyOut(BaseModel):
    """The stored key, masked."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.OPEN_ROUTER_KEY_OUT})

    account_id: str
    provider: Literal["openrouter"] = "openrouter"
    masked_key: str
    key_last4: str
    created_at: datetime
    updated_at: datetime


# ---- ingest ---------------------------------------------------------------------------------


class IngestAccepted(BaseModel):
    """How many events were published to usage.events."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.INGEST_ACCEPTED})

    accepted: int
