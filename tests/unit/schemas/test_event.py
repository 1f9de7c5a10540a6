"""Every rule of the usage event (schema_version 1), as a producer meets it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.event import METADATA_MAX_BYTES, UsageEvent


def event(**over: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "event_id": "evt-1",
        "account_id": "acct-1",
        "occurred_at": "2025-03-01T12:00:00+00:00",
        "model": "openai/gpt-4o-mini",
    }
    fields.update(over)
    return UsageEvent.model_validate(fields)


def error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.value.errors()}


def test_defaults() -> None:
    e = event()
    assert e.source == "default"
    assert e.requests == 1
    assert e.schema_version == 1
    assert e.byok is False
    assert e.units == {}
    assert (e.input_tokens, e.cached_input_tokens, e.cache_write_tokens) == (0, 0, 0)
    assert (e.output_tokens, e.reasoning_tokens) == (0, 0)
    assert e.provider is None and e.reported_cost is None and e.metadata is None


@pytest.mark.parametrize("field", ["event_id", "account_id", "occurred_at", "model"])
def test_required_fields(field: str) -> None:
    fields = event().model_dump()
    del fields[field]
    with pytest.raises(ValidationError) as exc:
        UsageEvent.model_validate(fields)
    assert error_locs(exc) == {field}


@pytest.mark.parametrize(
    ("field", "max_len"), [("event_id", 128), ("account_id", 128), ("source", 64), ("model", 256)]
)
def test_string_lengths(field: str, max_len: int) -> None:
    assert getattr(event(**{field: "x" * max_len}), field) == "x" * max_len
    assert getattr(event(**{field: "x"}), field) == "x"
    for bad in ("", "x" * (max_len + 1)):
        with pytest.raises(ValidationError) as exc:
            event(**{field: bad})
        assert error_locs(exc) == {field}


@pytest.mark.parametrize(
    "bucket",
    [
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "requests",
    ],
)
def test_counts_are_non_negative_integers(bucket: str) -> None:
    assert getattr(event(**{bucket: 0}), bucket) == 0
    with pytest.raises(ValidationError) as exc:
        event(**{bucket: -1})
    assert error_locs(exc) == {bucket}
    with pytest.raises(ValidationError):
        event(**{bucket: 1.5})


def test_reasoning_is_part_of_output() -> None:
    assert event(output_tokens=10, reasoning_tokens=10).reasoning_tokens == 10
    with pytest.raises(ValidationError, match=r"reasoning_tokens \(11\) must be <= output_tokens"):
        event(output_tokens=10, reasoning_tokens=11)


def test_occurred_at_needs_an_offset() -> None:
    with pytest.raises(ValidationError) as exc:
        event(occurred_at="2025-03-01T12:00:00")
    assert error_locs(exc) == {"occurred_at"}
    with pytest.raises(ValidationError):
        event(occurred_at=datetime(2025, 3, 1, 12))  # naive


def test_occurred_at_keeps_the_instant_across_offsets() -> None:
    e = event(occurred_at="2025-03-01T13:30:00+01:30")
    assert e.occurred_at.utcoffset() == timedelta(hours=1, minutes=30)
    assert e.occurred_utc == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    z = event(occurred_at="2025-03-01T12:00:00Z")
    assert z.occurred_utc == e.occurred_utc
    assert event(occurred_at=datetime(2025, 3, 1, 12, tzinfo=UTC)).occurred_utc == (e.occurred_utc)


def test_metadata_limit_is_4_kib_of_utf8_json() -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    fits = {"k": "x" * (METADATA_MAX_BYTES - overhead)}
    assert event(metadata=fits).metadata == fits
    with pytest.raises(ValidationError, match="metadata is 4097 bytes; at most 4096"):
        event(metadata={"k": "x" * (METADATA_MAX_BYTES - overhead + 1)})


def test_metadata_limit_counts_utf8_bytes_not_escapes() -> None:
    # 1000 three-byte characters: 3 KB on the wire (it was once measured as 6 KB of \\uXXXX).
    meta = {"note": "文" * 1000}
    assert event(metadata=meta).metadata == meta
    with pytest.raises(ValidationError):
        event(metadata={"note": "文" * 1400})


def test_schema_version_is_1() -> None:
    assert event(schema_version=1).schema_version == 1
    with pytest.raises(ValidationError, match="schema_version must be 1, got 2"):
        event(schema_version=2)


def test_units_are_non_negative_numbers() -> None:
    e = event(units={"images": 2, "web_search": "1.5"})
    assert e.units == {"images": Decimal(2), "web_search": Decimal("1.5")}
    for bad in (-1, "NaN", "Infinity"):
        with pytest.raises(ValidationError) as exc:
            event(units={"images": bad})
        assert error_locs(exc) == {"units.images"}


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        event(prompt_tokens=10)
    assert error_locs(exc) == {"prompt_tokens"}


def test_reported_cost_is_exact_and_written_as_a_plain_decimal_string() -> None:
    assert event(reported_cost="0.001234").reported_cost == Decimal("0.001234")
    # A float is kept by its shortest decimal form, never by its binary value.
    assert event(reported_cost=0.1).reported_cost == Decimal("0.1")
    for cost, wire in (("0.0000001", "0.0000001"), (1.5e-07, "0.00000015"), ("1E+2", "100")):
        value = json.loads(event(reported_cost=cost).to_kafka()[1])["reported_cost"]
        assert value == wire
    with pytest.raises(ValidationError):
        event(reported_cost="NaN")


def test_to_kafka_keys_by_account_and_round_trips() -> None:
    e = event(
        account_id="acct-é",
        input_tokens=100,
        cached_input_tokens=20,
        cache_write_tokens=5,
        output_tokens=50,
        reasoning_tokens=10,
        units={"images": 2, "web_search": Decimal("0.5")},
        reported_cost="0.0123",
        metadata={"request_id": "r-1", "tags": ["a"]},
        byok=True,
        provider="openai",
    )
    key, value = e.to_kafka()
    assert key == "acct-é".encode()
    body = json.loads(value)
    assert body["units"] == {"images": 2, "web_search": 0.5}
    assert body["reported_cost"] == "0.0123"
    assert UsageEvent.model_validate_json(value) == e


def test_to_kafka_leaves_out_absent_optionals() -> None:
    body = json.loads(event().to_kafka()[1])
    assert "provider" not in body and "reported_cost" not in body and "metadata" not in body
    assert body["schema_version"] == 1 and body["source"] == "default"


def test_event_is_immutable() -> None:
    with pytest.raises(ValidationError):
        event().input_tokens = 5  # type: ignore[misc]
