"""Request and response models of the admin routes (amounts are decimal strings on the wire)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from schemas import api_admin_examples as ex
from schemas import bounds
from schemas.api_credits import (
    CouponCode,
    EntryOut,
    IdempotencyKey,
    Money,
    NonNegativeCredits,
    PositiveCredits,
    Reason,
    UnitName,
)
from schemas.bounds import Timestamp
from schemas.event import AccountId

TierName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")]
ProviderName = Annotated[str, bounds.Text(64)]
_PRICE_RE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,12})?")


def _parse_price(value: Any) -> Decimal:
    # Prices are exact decimals (finer than the micro-credit is allowed: per-token prices).
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError('must be a decimal string such as "0.15"; binary floats are refused')
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not _PRICE_RE.fullmatch(value):
        raise ValueError(
            'must be a non-negative decimal string such as "0.15" (at most 12 decimal places)'
        )
    return Decimal(value)


Price = Annotated[
    Decimal,
    BeforeValidator(_parse_price),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,12})?$"},
                {"type": "integer", "minimum": 0},
            ],
            "description": "credits, a non-negative decimal string; floats are refused",
            "examples": ["0.15"],
        }
    ),
]


RATE_LIMIT_MAX_AMOUNT = 1_000_000
RATE_LIMIT_MAX_WINDOW_S = 31 * 86_400


def _rate_limit(value: str) -> str:
    from limits import parse  # the API's rate limiter reads this string

    try:
        item = parse(value)
    except ValueError:
        raise ValueError(
            'must be a rate limit such as "20/second", "1000/minute" or "10 per second"'
        ) from None
    if not 1 <= item.amount <= RATE_LIMIT_MAX_AMOUNT:
        # 0 would refuse every request of the tier; the limiter stores the count per window.
        raise ValueError(f"must allow between 1 and {RATE_LIMIT_MAX_AMOUNT} requests per window")
    if not 1 <= item.get_expiry() <= RATE_LIMIT_MAX_WINDOW_S:
        raise ValueError("must have a window between 1 second and 31 days")
    return value


RateLimit = Annotated[
    str,
    StringConstraints(min_length=3, max_length=64),
    AfterValidator(bounds.check_identifier),
    AfterValidator(_rate_limit),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- credits --------------------------------------------------------------------------------


class AllocateIn(_In):
    """Credit to add to an account (created on first allocation); idempotent by key."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.ALLOCATE_IN},
    )

    account_id: AccountId
    amount: PositiveCredits
    reason: Reason
    idempotency_key: IdempotencyKey


class BulkAllocateIn(_In):
    """Up to 1,000 allocations, written all together or not at all."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.BULK_ALLOCATE_IN},
    )

    allocations: Annotated[list[AllocateIn], Field(min_length=1, max_length=1000)]


class BulkRowOut(EntryOut):
    """One allocation of a bulk request, by its index in the request."""

    index: int


class BulkAllocateOut(BaseModel):
    """Every allocation written (or replayed), in request order."""

    results: list[BulkRowOut]
    total: Money = Field(description="the sum of the allocations in this request")


# ---- analytics ------------------------------------------------------------------------------


class SystemAnalyticsOut(BaseModel):
    """System-wide figures: accounts and balances now, usage in [from, to] (UTC days)."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.SYSTEM_ANALYTICS_OUT})

    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    accounts: int
    blocked_accounts: int
    total_balance: Money
    spend: Money
    events: int
    active_accounts: int = Field(description="accounts with usage in the period")


class SpenderOut(BaseModel):
    """One account's usage spend in the period."""

    account_id: str
    spend: Money
    events: int


class TopSpendersOut(BaseModel):
    """The accounts that spent most in [from, to] (UTC days), highest first."""

    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    items: list[SpenderOut]


# ---- accounts and tiers ---------------------------------------------------------------------


class AccountSummaryOut(BaseModel):
    """One account in a list: its id, tier and balance."""

    account_id: str
    tier: str
    balance: Money
    created_at: datetime


class AccountsPage(BaseModel):
    """Accounts by id; pass next_cursor as `cursor` for the next page."""

    items: list[AccountSummaryOut]
    next_cursor: str | None = Field(description="null on the last page")


class AccountOut(BaseModel):
    """An account as an admin sees it."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.ACCOUNT_OUT})

    account_id: str
    balance: Money
    monthly_spend: Money
    monthly_cap: Money | None
    cap_remaining: Money | None
    tier: str
    blocked: bool
    blocked_reason: str | None
    byok_configured: bool
    api_keys: int = Field(description="live (unrevoked) user keys of the account")
    created_at: datetime
    updated_at: datetime


class SetTierIn(_In):
    """The tier to move the account to."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": ex.SET_TIER_IN})

    tier: TierName


class TierIn(_In):
    """A tier's terms (PUT creates or replaces the tier)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.TIER_IN},
    )

    monthly_allocation: NonNegativeCredits = Decimal(0)
    price_multiplier: Price = Field(default=Decimal(1), gt=0)
    default_monthly_cap: PositiveCredits | None = None
    rate_limit: RateLimit = "50/second"

    @field_validator("price_multiplier")
    @classmethod
    def _multiplier_fits(cls, v: Decimal) -> Decimal:
        # Stored as numeric(12, 6): refuse what would overflow or be rounded silently.
        if v >= 1_000_000:
            raise ValueError("price_multiplier must be below 1000000")
        if v != v.quantize(Decimal("0.000001")):
            raise ValueError("price_multiplier has more than 6 decimal places")
        return v


class TierOut(BaseModel):
    """A tier: what its accounts get each month, pay, may spend and may call."""

    name: str
    monthly_allocation: Money
    price_multiplier: str
    default_monthly_cap: Money | None
    rate_limit: str
    updated_at: datetime


class TiersOut(BaseModel):
    items: list[TierOut]


# ---- coupons --------------------------------------------------------------------------------


class CouponIn(_In):
    """A coupon: credit per redemption, how many accounts may redeem it, until when."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.COUPON_IN},
    )

    code: CouponCode
    amount: PositiveCredits
    max_redemptions: bounds.Integer = Field(gt=0, le=10_000_000)
    expires_at: Timestamp | None = None

    @field_validator("expires_at")
    @classmethod
    def _expires_in_future(cls, v: datetime | None) -> datetime | None:
        if v is not None and v <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future (a coupon nobody could redeem)")
        return v


class CouponOut(BaseModel):
    code: str
    amount: Money
    max_redemptions: int
    redemptions: int
    expires_at: datetime | None
    created_at: datetime


class CouponsPage(BaseModel):
    """Coupons by code; pass next_cursor as cursor for the next page."""

    items: list[CouponOut]
    next_cursor: str | None = Field(description="null on the last page")


# ---- pricing --------------------------------------------------------------------------------


class PriceIn(_In):
    """A new price version of a model from effective_from on (versions are immutable)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.PRICE_IN},
    )

    effective_from: Timestamp
    provider: ProviderName | None = None
    input_per_mtok: Price = Decimal(0)
    cached_input_per_mtok: Price | None = None
    cache_write_per_mtok: Price | None = None
    output_per_mtok: Price = Decimal(0)
    per_request: Price = Decimal(0)
    units: dict[UnitName, Price] = Field(default_factory=dict, max_length=64)


class PriceVersionOut(BaseModel):
    """A stored price version (prices are decimal strings, credits per million tokens)."""

    id: int
    model: str
    provider: str | None
    effective_from: datetime
    input_per_mtok: str
    cached_input_per_mtok: str | None
    cache_write_per_mtok: str | None
    output_per_mtok: str
    per_request: str
    units: dict[str, str]


# ---- API keys -------------------------------------------------------------------------------


class ApiKeyIn(_In):
    """A key for an account (scope user) or for admins (scope admin, account optional)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": ex.API_KEY_IN},
    )

    account_id: AccountId | None = None
    scope: Literal["user", "admin"] = "user"


class ApiKeyOut(BaseModel):
    """The new key: `key` is shown this once and never stored; keep it secret."""

    model_config = ConfigDict(json_schema_extra={"examples": ex.API_KEY_OUT})

    key_id: str
    key: str
    scope: Literal["user", "admin"]
    account_id: str | None


class ApiKeyInfo(BaseModel):
    """A key as listed: who it is for and whether it is live (the secret is never stored)."""

    key_id: str
    account_id: str | None
    scope: Literal["user", "admin"]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeysOut(BaseModel):
    """A page of keys ordered by key_id; pass next_cursor as `cursor` for the next one."""

    items: list[ApiKeyInfo]
    next_cursor: str | None
