"""The usage event (schema_version 1): one per model call, JSON on usage.events keyed by account."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from schemas import bounds
from schemas.bounds import Count, EventTime, Integer

METADATA_MAX_BYTES = 4096
SCHEMA_VERSION = 1

SOURCE_MAX = 64
EventId = Annotated[str, bounds.Text(128)]
Source = Annotated[str, bounds.Text(SOURCE_MAX)]
AccountId = Annotated[str, bounds.Text(128)]
ModelId = Annotated[str, bounds.Text(256)]
Provider = Annotated[str, bounds.Text(64)]
UnitName = Annotated[str, bounds.Text(64)]
ReservationId = Annotated[str, bounds.Text(128)]


def _unit_number(d: Decimal) -> int | float:
    # Units are counts, not money: write them as JSON numbers, integers when whole.
    return int(d) if d == d.to_integral_value() else float(d)


def _plain_decimal(d: Decimal) -> str:
    # str(Decimal) switches to exponent form ("1E-7"); the wire wants a plain decimal string.
    return format(d, "f")


UnitCount = Annotated[bounds.UnitCount, PlainSerializer(_unit_number, when_used="json")]
ReportedCost = Annotated[
    Decimal,
    AfterValidator(bounds.check_decimal),
    PlainSerializer(_plain_decimal, return_type=str, when_used="json"),
]


def metadata_size(metadata: Mapping[str, Any]) -> int:
    """The metadata's size in UTF-8 bytes as written on the wire (not as \\u escapes).

    orjson writes the same compact UTF-8 as json.dumps(separators=(",", ":"),
    ensure_ascii=False) about ten times faster (it is measured for every event); integers
    past 64 bits, which orjson refuses, take the stdlib path.
    """
    try:
        return len(orjson.dumps(metadata, default=str, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return len(
            json.dumps(metadata, separators=(",", ":"), default=str, ensure_ascii=False).encode()
        )


# In orjson's compact output of a JSON value: a backslash (an escaped control character,
# quote or backslash in a key or string), DEL, a C1 control (UTF-8 C2 80–9F) or null (None,
# and NaN or Infinity, which orjson writes as null). None of them: no string or key of the
# value breaks a rule of bounds.check_json_strings.
_MAYBE_REFUSED = re.compile(rb"\\|\x7f|\xc2[\x80-\x9f]|null")


def check_metadata(value: dict[str, Any] | None, *, subject: str = "") -> dict[str, Any] | None:
    """The metadata rules (strings without control characters, nesting within the bound, at
    most METADATA_MAX_BYTES as compact JSON) of the event and of a reservation; ValueError
    says "<subject>is N bytes".

    Every event is checked, so the common case is decided on the compact JSON the size is
    measured on: nothing in it that could break a rule, and no more brackets than the depth
    bound, means nothing does (a walk of the value cost 4 % of a worker). Otherwise the value
    is walked (bounds.check_json_strings), which names the rule and the character.
    """
    if value is None:
        return None
    try:
        compact = orjson.dumps(value)
    except TypeError:
        compact = None  # an integer past 64 bits, or a non-string key: the walk decides
    if (
        compact is None
        or _MAYBE_REFUSED.search(compact) is not None
        or compact.count(b"{") + compact.count(b"[") > bounds.METADATA_MAX_DEPTH
    ):
        bounds.check_json_strings(value)
    size = len(compact) if compact is not None else metadata_size(value)
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"{subject}is {size} bytes; at most {METADATA_MAX_BYTES} allowed")
    return value


def check_reasoning_within_output(reasoning_tokens: int, output_tokens: int) -> None:
    """Reasoning tokens are part of the output tokens: never more (the event and the API)."""
    if reasoning_tokens > output_tokens:
        raise ValueError(
            f"reasoning_tokens ({reasoning_tokens}) must be <= output_tokens "
            f"({output_tokens}): reasoning is part of the output"
        )


class UsageEvent(BaseModel):
    """One model call's billable usage. (source, event_id) is the idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    event_id: EventId
    source: Source = "default"
    account_id: AccountId
    occurred_at: EventTime = Field(
        description="RFC 3339 with offset; selects the price. From 2000-01-01 to at most the "
        "clock skew (default 5 minutes) ahead of the receiver's clock."
    )
    model: ModelId
    provider: Provider | None = None
    input_tokens: Count = 0
    cached_input_tokens: Count = 0
    cache_write_tokens: Count = 0
    output_tokens: Count = 0
    reasoning_tokens: Count = 0
    requests: Count = 1
    units: dict[UnitName, UnitCount] = Field(default_factory=dict, max_length=64)
    byok: bool = False
    reported_cost: ReportedCost | None = None
    metadata: dict[str, Any] | None = None
    reservation_id: ReservationId | None = Field(
        default=None,
        description="The hold this call was reserved under: debiting the event settles it.",
    )
    schema_version: Integer = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema_version must be {SCHEMA_VERSION}, got {v}")
        return v

    @field_validator("reported_cost", mode="before")
    @classmethod
    def _no_float_cost(cls, v: Any) -> Any:
        if isinstance(v, float):
            # A float has already lost exactness; keep its shortest decimal form.
            return Decimal(repr(v))
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_metadata(v, subject="metadata ")

    @model_validator(mode="after")
    def _reasoning_within_output(self) -> UsageEvent:
        check_reasoning_within_output(self.reasoning_tokens, self.output_tokens)
        return self

    @property
    def occurred_utc(self) -> datetime:
        """occurred_at in UTC."""
        return self.occurred_at.astimezone(UTC)

    def to_kafka(self) -> tuple[bytes, bytes]:
        """(key, value) as published on usage.events."""
        return self.account_id.encode(), self.model_dump_json(exclude_none=True).encode()
