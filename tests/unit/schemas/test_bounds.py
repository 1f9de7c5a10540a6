"""The bounds (DESIGN.md "Bounds"): strings, counts, costs and times, as the event applies them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from schemas import bounds, jsonschema
from schemas.bounds import MAX_COUNT, MAX_MICROS, Text, Timestamp
from schemas.event import UsageEvent
from schemas.settings import CommonSettings

# What the string rule refuses: C0, DEL, C1 (all of Unicode's Cc category).
CONTROL = st.characters(whitelist_categories=("Cc",))
CLEAN = st.characters(blacklist_categories=("Cc", "Cs"))
WHITESPACE_CONTROLS = "\t\n\r"


def event(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event_id": "evt-1",
        "account_id": "acct-1",
        "occurred_at": "2025-03-01T12:00:00+00:00",
        "model": "openai/gpt-4o-mini",
    }
    fields.update(over)
    return fields


def rules(body: dict[str, Any]) -> dict[str, str]:
    """{field path: rule} of what the event refuses, validated as the worker does (JSON)."""
    with pytest.raises(ValidationError) as exc:
        UsageEvent.model_validate_json(json.dumps(body))
    return {".".join(str(p) for p in e["loc"]): e["type"] for e in exc.value.errors()}


@pytest.fixture
def skew(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    bounds.max_clock_skew.cache_clear()
    yield
    bounds.max_clock_skew.cache_clear()


class Strings(BaseModel):
    ident: Annotated[str, Text(64)] = "x"
    free: Annotated[str, Text(64, free=True)] = "x"


# ---- strings --------------------------------------------------------------------------------


@given(st.text(CLEAN, max_size=20), CONTROL, st.text(CLEAN, max_size=20))
def test_an_identifier_with_any_control_character_is_refused(
    head: str, bad: str, tail: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        Strings(ident=head + bad + tail)
    err = exc.value.errors()[0]
    assert err["type"] == "control_character"
    assert f"U+{ord(bad):04X} at position {len(head)}" in err["msg"]


@given(st.text(CLEAN, min_size=1, max_size=64))
def test_an_identifier_without_control_characters_is_kept_as_is(value: str) -> None:
    assert Strings(ident=value).ident == value


@given(st.text(CLEAN | st.sampled_from(WHITESPACE_CONTROLS), min_size=1, max_size=64))
def test_free_text_keeps_tab_and_line_ends(value: str) -> None:
    assert Strings(free=value).free == value


@given(CONTROL.filter(lambda c: c not in WHITESPACE_CONTROLS))
@example("\x00")
@example("\x7f")
@example("\x85")
def test_free_text_refuses_the_other_control_characters(bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Strings(free="note " + bad)
    assert exc.value.errors()[0]["type"] == "control_character"


@pytest.mark.parametrize("field", ["event_id", "source", "account_id", "model", "provider"])
@pytest.mark.parametrize("bad", ["\x00", "\t", "\n", "\x1b", "\x7f", "\x9f"])
def test_every_event_string_refuses_control_characters(field: str, bad: str) -> None:
    assert rules(event(**{field: f"a{bad}b"})) == {field: "control_character"}


@given(st.text(max_size=30))
@example("\u00a0\u200b\u2028")  # printable? no (Zs, Cf, Zl) — yet allowed by both rules
@example("\udc80")
def test_both_rules_decide_any_text_as_their_pattern_does(value: str) -> None:
    # The isprintable fast path must never pass what the pattern refuses, nor refuse more.
    for check, pattern in (
        (bounds.check_identifier, bounds._IDENTIFIER_BAD),
        (bounds.check_free_text, bounds._FREE_TEXT_BAD),
    ):
        refused = pattern.search(value) is not None
        try:
            check(value)
        except PydanticCustomError:
            assert refused
        else:
            assert not refused


def test_a_lone_surrogate_is_refused() -> None:
    # JSON can spell it; UTF-8 (and so Postgres) cannot store it.
    with pytest.raises(ValidationError):
        UsageEvent.model_validate_json(
            '{"event_id": "a\\ud800", "account_id": "a", '
            '"occurred_at": "2025-03-01T12:00:00Z", "model": "m"}'
        )
    with pytest.raises(ValidationError):
        UsageEvent.model_validate(event(account_id="a\ud800"))


@pytest.mark.parametrize(
    ("metadata", "path", "rule"),
    [
        ({"request_id": "r\x00"}, "metadata", "control_character"),
        ({"ke\x00y": "v"}, "metadata", "control_character"),
        ({"tags": ["ok", {"deep\x01": 1}]}, "metadata", "control_character"),
        ({"a": {"b": {"c": ["x\x7f"]}}}, "metadata", "control_character"),
        ({"x": json.loads("[" * 20 + "1" + "]" * 20)}, "metadata", "too_deep"),
    ],
)
def test_metadata_strings_are_checked_at_every_depth(
    metadata: dict[str, Any], path: str, rule: str
) -> None:
    assert rules(event(metadata=metadata)) == {path: rule}


def test_metadata_text_may_hold_line_ends_and_nan_is_refused() -> None:
    ok = UsageEvent.model_validate(event(metadata={"note": "line 1\nline 2\tend"}))
    assert ok.metadata == {"note": "line 1\nline 2\tend"}
    with pytest.raises(ValidationError) as exc:
        UsageEvent.model_validate(event(metadata={"x": float("nan")}))
    assert exc.value.errors()[0]["type"] == "finite_number"


def test_unit_names_are_identifiers() -> None:
    assert rules(event(units={"im\x00ages": 1})) == {"units.im\x00ages.[key]": "control_character"}


# ---- counts and money -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "requests",
    ],
)
@given(over=st.integers(MAX_COUNT + 1, 10**40))
def test_counts_above_the_bound_are_refused(field: str, over: int) -> None:
    assert rules(event(**{field: over})) == {field: "less_than_equal"}
    assert getattr(UsageEvent.model_validate(event(**{field: MAX_COUNT})), field) == MAX_COUNT


def test_unit_counts_are_bounded_too() -> None:
    assert rules(event(units={"images": 10**12 + 1})) == {"units.images": "less_than_equal"}
    assert rules(event(units={"images": "1e-40"})) == {"units.images": "too_many_decimals"}
    assert UsageEvent.model_validate(event(units={"images": 10**12})).units["images"] == 10**12


@pytest.mark.parametrize(
    ("cost", "rule"),
    [("1e400", "too_large"), ("-1000000000001", "too_large"), ("1e-31", "too_many_decimals")],
)
def test_reported_cost_is_bounded(cost: str, rule: str) -> None:
    assert rules(event(reported_cost=cost)) == {"reported_cost": rule}


def test_reported_cost_within_the_bound_is_kept_exactly() -> None:
    e = UsageEvent.model_validate(event(reported_cost="0.000000000000000000000000000001"))
    assert json.loads(e.to_kafka()[1])["reported_cost"] == "0.000000000000000000000000000001"


@given(st.integers(-(10**20), 10**20))
def test_cost_bound_fits_bigint_with_margin(micros: int) -> None:
    assert MAX_MICROS * 9 < 2**63 - 1
    if abs(micros) <= MAX_MICROS:
        assert bounds.check_cost_micros(micros) == micros
    else:
        with pytest.raises(bounds.CostOutOfBounds, match="beyond 1000000000000 credits"):
            bounds.check_cost_micros(micros)


# ---- times ----------------------------------------------------------------------------------

OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(timezones=OFFSETS))
@example(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))))
@example(datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))))
def test_any_aware_time_is_accepted_or_refused_never_an_overflow(t: datetime) -> None:
    # The query/body timestamp rule: representable in UTC and within [1970, 9999).
    class M(BaseModel):
        at: Timestamp

    text = t.isoformat()
    try:
        out = M.model_validate({"at": text}).at
    except ValidationError as exc:
        assert exc.errors()[0]["type"] in ("time_out_of_range", "datetime_from_date_parsing")
        return
    assert bounds.TIME_MIN <= out.astimezone(UTC) < bounds.TIME_MAX


@given(st.datetimes(timezones=OFFSETS))
@example(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))))
def test_an_event_time_is_accepted_or_refused_by_name(t: datetime) -> None:
    try:
        e = UsageEvent.model_validate_json(json.dumps(event(occurred_at=t.isoformat())))
    except ValidationError as exc:
        assert {err["type"] for err in exc.errors()} <= {
            "time_out_of_range",
            "time_too_early",
            "time_in_future",
            "datetime_from_date_parsing",
        }
        return
    assert bounds.EVENT_TIME_MIN <= e.occurred_utc <= datetime.now(UTC) + bounds.max_clock_skew()


def test_event_time_bounds_at_their_edges() -> None:
    assert rules(event(occurred_at="1999-12-31T23:59:59Z")) == {"occurred_at": "time_too_early"}
    assert UsageEvent.model_validate(event(occurred_at="2000-01-01T00:00:00Z"))
    # 2000-01-01 01:00 at +02:00 is still 1999 in UTC.
    assert rules(event(occurred_at="2000-01-01T01:00:00+02:00")) == {
        "occurred_at": "time_too_early"
    }
    assert rules(event(occurred_at="9999-12-31T23:59:59-05:00")) == {
        "occurred_at": "time_out_of_range"
    }


def test_the_future_bound_is_read_at_validation_time(skew: None) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    later = (datetime.now(UTC) + timedelta(minutes=6)).isoformat()
    assert UsageEvent.model_validate(event(occurred_at=soon))
    assert rules(event(occurred_at=later)) == {"occurred_at": "time_in_future"}
    # The same event is valid when its time has come: "now" is not frozen at import.
    t = datetime.now(UTC) + timedelta(minutes=6)
    assert bounds.check_event_time(t, now=datetime.now(UTC) + timedelta(minutes=2)) == t


def test_the_clock_skew_is_a_setting(skew: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_MAX_CLOCK_SKEW_SECONDS", "3600")
    bounds.max_clock_skew.cache_clear()
    assert CommonSettings().max_clock_skew_seconds == 3600
    later = (datetime.now(UTC) + timedelta(minutes=50)).isoformat()
    assert UsageEvent.model_validate(event(occurred_at=later))
    monkeypatch.setenv("METERLINE_MAX_CLOCK_SKEW_SECONDS", "0")
    bounds.max_clock_skew.cache_clear()
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    assert rules(event(occurred_at=soon)) == {"occurred_at": "time_in_future"}


def test_dates_are_bounded() -> None:
    assert bounds.check_date(datetime(2025, 1, 1).date())
    for bad in (datetime(1, 1, 1).date(), datetime(9999, 12, 31).date()):
        with pytest.raises(ValueError):
            bounds.check_date(bad)


# ---- the JSON Schema says it too ------------------------------------------------------------


def test_the_schema_file_carries_the_bounds() -> None:
    props = json.loads(jsonschema.SCHEMA_FILE.read_text())["properties"]
    for field in ("event_id", "source", "account_id", "model"):
        assert props[field]["pattern"] == bounds.IDENTIFIER_PATTERN
    for field in ("input_tokens", "output_tokens", "requests"):
        assert props[field]["maximum"] == MAX_COUNT
    assert "2000-01-01" in props["occurred_at"]["description"]


def test_decimal_units_keep_their_exact_value() -> None:
    e = UsageEvent.model_validate(event(units={"seconds": "1.5"}))
    assert e.units["seconds"] == Decimal("1.5")
