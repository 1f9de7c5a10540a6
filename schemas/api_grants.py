"""Request and response models of grants and reservations (holds): amounts as decimal strings."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)
from typing_extensions import TypeAliasType

from schemas import bounds
from schemas.api_credits import EntryOut, IdempotencyKey, Money, PositiveCredits, Reason
from schemas.bounds import Timestamp
from schemas.event import METADATA_MAX_BYTES, AccountId, check_metadata

Prefix = Annotated[str, bounds.Text(256, trimmed=True)]
# Reservation metadata: JSON whose keys are identifiers and strings free text, typed so that a
# refused value is named by its path (body.metadata.request_id), not by the whole object.
MetaKey = Annotated[str, bounds.Text(256)]
MetaText = Annotated[str, bounds.Text(METADATA_MAX_BYTES, min_length=0, free=True)]
MetaNumber = Annotated[float, Field(allow_inf_nan=False)]


def _json_kind(value: Any) -> str:
    # The one branch a JSON value can match, so a refusal names its path once.
    for kind, types in (("bool", bool), ("int", int), ("number", float), ("text", str)):
        if isinstance(value, types):
            return kind
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else "text"


if TYPE_CHECKING:  # mypy cannot follow the recursion; pydantic validates it
    MetaValue = Any
else:
    MetaValue = TypeAliasType(
        "MetaValue",
        Annotated[
            Annotated[bool, Tag("bool")]
            | Annotated[int, Tag("int")]
            | Annotated[MetaNumber, Tag("number")]
            | Annotated[MetaText, Tag("text")]
            | Annotated[list["MetaValue"], Tag("list")]
            | Annotated[dict[MetaKey, "MetaValue"], Tag("object")]
            | Annotated[None, Tag("null")],
            Discriminator(_json_kind),
        ],
    )
TTL_DEFAULT_S = 300
TTL_MAX_S = 86_400


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- grants ---------------------------------------------------------------------------------


class GrantIn(_In):
    """A grant with every attribute: how it burns, when it applies and when it expires."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "acct-42",
                    "amount": "20",
                    "category": "promotional",
                    "priority": 10,
                    "expires_at": "2026-12-31T23:59:59Z",
                    "applies_to": ["anthropic/"],
                    "reason": "launch promotion",
                    "idempotency_key": "promo-launch-acct-42",
                }
            ]
        },
    )

    account_id: AccountId
    amount: PositiveCredits
    category: Literal["paid", "promotional"] = "paid"
    priority: bounds.Integer = Field(
        default=50, ge=0, le=100, description="0–100; lower burns first"
    )
    effective_at: Timestamp | None = Field(
        default=None, description="from when it may be burned (default: now)"
    )
    expires_at: Timestamp | None = Field(
        default=None, description="when its remainder expires (null: never)"
    )
    applies_to: Annotated[list[Prefix], Field(min_length=1, max_length=50)] | None = Field(
        default=None,
        description="model or provider prefixes it pays for, e.g. `openai/` (null: any usage)",
    )
    reason: Reason
    idempotency_key: IdempotencyKey

    @field_validator("expires_at")
    @classmethod
    def _after_effective(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("effective_at")
        if v is not None and start is not None and v <= start:
            raise ValueError("must be later than effective_at")
        return v


class GrantOut(BaseModel):
    """A grant and what is left of it."""

    grant_id: int
    account_id: str
    category: Literal["paid", "promotional"]
    amount: Money
    remaining: Money
    priority: int
    effective_at: datetime
    expires_at: datetime | None = Field(description="null: never expires")
    applies_to: list[str] | None = Field(description="null: any usage")
    status: Literal["active", "pending", "used", "expired"] = Field(
        description="pending: not yet effective; used: nothing left; expired: past expires_at"
    )
    reason: str | None
    transaction_id: int | None = Field(description="the ledger row that brought the credit in")
    created_at: datetime


class GrantCreatedOut(EntryOut):
    """The grant written, its ledger row, and the balance after it."""

    grant: GrantOut


class GrantsPage(BaseModel):
    """A page of the account's grants, newest first."""

    items: list[GrantOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


# ---- reservations ---------------------------------------------------------------------------


class ReserveIn(_In):
    """A hold on credit before a call: the worst-case cost, for ttl_seconds."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "amount": "0.25",
                    "ttl_seconds": 300,
                    "idempotency_key": "call-7f3a",
                    "metadata": {"request_id": "req-7f3a", "model": "openai/gpt-4o"},
                }
            ]
        },
    )

    amount: PositiveCredits
    ttl_seconds: bounds.Integer = Field(default=TTL_DEFAULT_S, ge=1, le=TTL_MAX_S)
    idempotency_key: IdempotencyKey
    metadata: dict[MetaKey, MetaValue] | None = Field(
        default=None, description=f"at most {METADATA_MAX_BYTES} bytes as compact JSON"
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(v)


class ReservationOut(BaseModel):
    """A hold and its state; `available` is the account's after it (reserve) or now."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "reservation_id": "rsv_4f1c9a0b2d3e4f5a6b7c8d9e",
                    "account_id": "acct-42",
                    "amount": "0.250000",
                    "status": "active",
                    "expires_at": "2026-03-01T12:05:00Z",
                    "created_at": "2026-03-01T12:00:00Z",
                    "closed_at": None,
                    "settled_transaction_id": None,
                    "metadata": {"request_id": "req-7f3a"},
                    "available": "87.000000",
                    "replayed": False,
                }
            ]
        }
    )

    reservation_id: str
    account_id: str
    amount: Money
    status: Literal["active", "released", "settled", "expired"]
    expires_at: datetime
    created_at: datetime
    closed_at: datetime | None = Field(description="when it was released, settled or expired")
    settled_transaction_id: int | None = Field(description="the usage debit that settled it")
    idempotency_key: str
    metadata: dict[str, Any] | None
    available: Money | None = Field(description="the account's available credit")
    replayed: bool = False


class ReservationsOut(BaseModel):
    """The account's active holds, soonest expiry first (at most 500), and what all of its
    active holds hold together."""

    items: list[ReservationOut]
    held: Money
    count: int = Field(description="how many active holds the account has (items lists 500)")
