"""The bounds every edge enforces (DESIGN.md "Bounds"), each defined once.

The usage event, the API models and the adapters all build their fields from these, so an
input is refused the same way wherever it enters (HTTP: 422 naming the field and the rule;
``produce``: reported; the worker: usage.dlq as ``invalid_event``) and never reaches the
database as a value it cannot store.

Strings
    No NUL, no other C0 control character, no DEL, no C1 control (U+0080–U+009F) and no lone
    surrogate (JSON can spell ``"\\ud800"``; UTF-8, and so Postgres, cannot store it).
    Identifiers (ids, keys, codes, model names, metadata keys) allow none of them. Free text
    (a ``reason``, metadata values) allows tab, line feed and carriage return: people write
    multi-line notes and paste Windows line ends, JSON and jsonb store them escaped, and the
    CSV export quotes such cells; every other control character is refused there too.
Counts
    Token, unit and request counts are at most ``MAX_COUNT`` (10^12).
Money
    Amounts and priced costs are at most ``MAX_CREDITS`` (10^12 credits) = 10^18 micro-credits,
    a factor 9 below BIGINT's 9.22·10^18, so a sum of a few amounts still fits.
Times
    An event's ``occurred_at`` lies between 2000-01-01 and now + the clock-skew setting
    (``METERLINE_MAX_CLOCK_SKEW_SECONDS``, default 300), "now" read when the event is
    validated (by the API, ``produce`` or the worker). Every other timestamp a client sends
    lies in [1970-01-01, 9999-01-01) UTC, well inside what Python and Postgres represent (year
    1 or 9999 with an offset overflows when converted to UTC, and asyncpg writes the very first
    and last instants as -infinity/infinity).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_COUNT = 10**12
MAX_CREDITS = 10**12
MAX_CREDIT_DIGITS = 12  # whole digits of an amount: < 10**12 credits
MAX_MICROS = MAX_CREDITS * 1_000_000
# What a BIGINT column holds: a balance or a month's spend, in micro-credits, either sign.
MAX_TOTAL_MICROS = 2**63 - 1
MAX_DECIMAL_PLACES = 30  # of a decimal kept as given (reported_cost): numeric stores it exactly
EVENT_TIME_MIN = datetime(2000, 1, 1, tzinfo=UTC)
_EVENT_TIME_MIN_TS = EVENT_TIME_MIN.timestamp()
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(9999, 1, 1, tzinfo=UTC)
DEFAULT_MAX_CLOCK_SKEW_SECONDS = 300.0
METADATA_MAX_DEPTH = 16

# C0 except what the class allows, DEL, C1, and lone surrogates.
_IDENTIFIER_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FREE_TEXT_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# The same rules for JSON Schema readers (ECMA-262 regex syntax).
IDENTIFIER_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
FREE_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


class BoundsSettings(BaseSettings):
    """The one tunable bound; every service's settings extend this class."""

    model_config = SettingsConfigDict(env_prefix="METERLINE_", extra="ignore")

    max_clock_skew_seconds: float = Field(
        default=DEFAULT_MAX_CLOCK_SKEW_SECONDS,
        ge=0,
        le=86_400,
        description="How far ahead of this host's clock an event's occurred_at may be.",
    )


@lru_cache(maxsize=1)
def max_clock_skew() -> timedelta:
    """The clock-skew allowance, read once from the environment."""
    return timedelta(seconds=BoundsSettings().max_clock_skew_seconds)


# ---- strings --------------------------------------------------------------------------------


def _bad_char(value: str, pattern: re.Pattern[str]) -> str | None:
    # Both rules refuse only control (Cc) and surrogate (Cs) characters, which str.isprintable
    # never passes: most strings are decided there, in C, several times faster than a search.
    if value.isprintable():
        return None
    m = pattern.search(value)
    if m is None:
        return None
    return f"U+{ord(m.group()):04X} at position {m.start()}"


def check_identifier(value: str) -> str:
    """An identifier: no control character (nor tab or newline), no lone surrogate."""
    where = _bad_char(value, _IDENTIFIER_BAD)
    if where:
        raise PydanticCustomError(
            "control_character",
            "must not contain control characters (NUL, tab, newline, DEL, U+0080-U+009F) or "
            "lone surrogates; found {where}",
            {"where": where},
        )
    return value


def check_free_text(value: str) -> str:
    """Free text: tab, LF and CR allowed; other control characters and lone surrogates not."""
    where = _bad_char(value, _FREE_TEXT_BAD)
    if where:
        raise PydanticCustomError(
            "control_character",
            "must not contain control characters other than tab, line feed and carriage "
            "return (no NUL, DEL, U+0080-U+009F) or lone surrogates; found {where}",
            {"where": where},
        )
    return value


@dataclass(frozen=True)
class Text:
    """A bounded string: ``Annotated[str, Text(500, free=True)]``.

    Lengths, and no control characters (``free``: tab, LF and CR allowed). ``trimmed``: no
    whitespace at either end either, for values people type and compare as they see them (a
    coupon code " SP " was stored, and "SP" was then unknown; an applies_to prefix " " matched
    no model).
    """

    max_length: int
    min_length: int = 1
    free: bool = False
    trimmed: bool = False

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        check: Callable[[str], str] = check_free_text if self.free else check_identifier
        if self.trimmed:
            check = _trimmed(check)
        return core_schema.no_info_after_validator_function(
            check,
            core_schema.str_schema(min_length=self.min_length, max_length=self.max_length),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["pattern"] = FREE_TEXT_PATTERN if self.free else IDENTIFIER_PATTERN
        return out


def _trimmed(check: Callable[[str], str]) -> Callable[[str], str]:
    def checked(value: str) -> str:
        value = check(value)
        if value != value.strip():
            raise PydanticCustomError(
                "surrounding_space", "must not start or end with a space or other whitespace", {}
            )
        return value

    return checked


def check_json_strings(value: Any, *, depth: int = 0) -> Any:
    """Every key (identifier rule) and string (free-text rule) of a JSON value, nested too.

    Also refuses nesting deeper than METADATA_MAX_DEPTH and non-finite numbers (NaN and
    Infinity are not JSON; jsonb refuses them).
    """
    if depth > METADATA_MAX_DEPTH:
        raise PydanticCustomError(
            "too_deep", "must not nest deeper than {limit} levels", {"limit": METADATA_MAX_DEPTH}
        )
    if isinstance(value, str):
        check_free_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "must not contain NaN or Infinity", {})
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                check_identifier(key)
            check_json_strings(item, depth=depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_json_strings(item, depth=depth + 1)
    return value


def strip_control(value: str, *, free: bool = False) -> str:
    """value without the characters the rule refuses: for text meterline gathers itself."""
    return (_FREE_TEXT_BAD if free else _IDENTIFIER_BAD).sub("", value)


# ---- numbers --------------------------------------------------------------------------------


def check_not_bool(value: Any) -> Any:
    """JSON true/false where an integer is wanted: refused (pydantic's lax mode reads it as 1/0,
    so `"input_tokens": true` was billed as one token, and the adapters already refuse it)."""
    if value is True or value is False:
        raise PydanticCustomError("int_type", "must be an integer, not a boolean", {})
    return value


# An integer field of a request or event: true/false is not one.
Integer = Annotated[int, BeforeValidator(check_not_bool)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT), BeforeValidator(check_not_bool)]


class CostOutOfBounds(ValueError):
    """A priced cost beyond MAX_CREDITS: the input is wrong, retrying cannot fix it."""

    rule = "cost_too_large"

    def __init__(self, micros: int) -> None:
        super().__init__(
            f"the priced cost is beyond {MAX_CREDITS} credits, the most one charge may be "
            "(check the token counts and the price)"
        )
        self.micros = micros


def check_cost_micros(micros: int) -> int:
    """A priced cost in micro-credits within the bound (10^12 credits); CostOutOfBounds if not."""
    if abs(micros) > MAX_MICROS:
        raise CostOutOfBounds(micros)
    return micros


def check_decimal(value: Decimal) -> Decimal:
    """A decimal kept as given: finite, |value| ≤ MAX_CREDITS, ≤ MAX_DECIMAL_PLACES places."""
    if not value.is_finite():
        raise PydanticCustomError("finite_number", "must be a finite number", {})
    if abs(value) > MAX_CREDITS:
        raise PydanticCustomError(
            "too_large", "must be at most {limit} in absolute value", {"limit": MAX_CREDITS}
        )
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        raise PydanticCustomError(
            "too_many_decimals",
            "must have at most {places} decimal places",
            {"places": MAX_DECIMAL_PLACES},
        )
    return value


UnitCount = Annotated[
    Decimal, Field(ge=0, le=MAX_COUNT, allow_inf_nan=False), AfterValidator(check_decimal)
]


# ---- times ----------------------------------------------------------------------------------


def to_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a time_out_of_range error when UTC cannot represent it."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise PydanticCustomError(
            "time_out_of_range",
            "is outside the representable range once converted to UTC",
            {},
        ) from None


def _fmt(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def check_time(value: datetime) -> datetime:
    """An aware client timestamp within [TIME_MIN, TIME_MAX) UTC."""
    utc = to_utc(value)
    if not TIME_MIN <= utc < TIME_MAX:
        raise PydanticCustomError(
            "time_out_of_range",
            "must be from {low} and before {high}",
            {"low": _fmt(TIME_MIN), "high": _fmt(TIME_MAX)},
        )
    return value


_DAY_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def check_day_text(value: Any) -> Any:
    """A day as the client wrote it: `YYYY-MM-DD` and nothing else.

    Pydantic's lax date also reads a midnight datetime (its offset dropped, so
    ``2026-03-01T00:00:00-08:00``, which is the 1st's 08:00 UTC, read as the UTC day the 1st)
    and a Unix timestamp (``20260301`` read as seconds, refused as "should have zero time").
    A UTC day has no offset to honour, so a time or a number is refused, saying so."""
    if isinstance(value, date):
        return value
    if not (isinstance(value, str) and _DAY_TEXT.fullmatch(value)):
        raise PydanticCustomError(
            "date_format",
            "must be a UTC day written YYYY-MM-DD, without a time or an offset",
            {},
        )
    return value


def check_date(value: date) -> date:
    """A calendar day within [TIME_MIN, TIME_MAX)."""
    if not TIME_MIN.date() <= value < TIME_MAX.date():
        raise PydanticCustomError(
            "date_out_of_range",
            "must be from {low} and before {high}",
            {"low": TIME_MIN.date().isoformat(), "high": TIME_MAX.date().isoformat()},
        )
    return value


def check_event_time(value: datetime, *, now: datetime | None = None) -> datetime:
    """An event's occurred_at: from 2000-01-01 to now + the clock skew (now read at call time)."""
    skew = max_clock_skew()
    try:
        # The worker checks every event: an in-range time is accepted on POSIX timestamps (a
        # third of the cost of converting to UTC and reading an aware now); anything else
        # takes the full path below, which names the rule it breaks.
        latest_ts = (now.timestamp() if now is not None else time.time()) + skew.total_seconds()
        if _EVENT_TIME_MIN_TS <= value.timestamp() <= latest_ts:
            return value
    except (OverflowError, ValueError, OSError):
        pass
    utc = to_utc(value)
    if utc < EVENT_TIME_MIN:
        raise PydanticCustomError(
            "time_too_early", "must be on or after {low}", {"low": _fmt(EVENT_TIME_MIN)}
        )
    latest = (now or datetime.now(UTC)) + skew
    if utc > latest:
        raise PydanticCustomError(
            "time_in_future",
            "must not be more than {skew} s ahead of the receiver's clock (it is {ahead} s "
            "ahead); check the sender's clock or METERLINE_MAX_CLOCK_SKEW_SECONDS",
            {
                "skew": int(skew.total_seconds()),
                "ahead": int((utc - latest).total_seconds() + skew.total_seconds()),
            },
        )
    return value


# Aware client timestamps (query and body) and days, bounded; events use EventTime.
Timestamp = Annotated[AwareDatetime, AfterValidator(check_time)]
Day = Annotated[date, BeforeValidator(check_day_text), AfterValidator(check_date)]
EventTime = Annotated[AwareDatetime, AfterValidator(lambda v: check_event_time(v))]
