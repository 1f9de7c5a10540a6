"""The checked-in JSON Schema is the UsageEvent model's, and it says what the model enforces."""

from __future__ import annotations

import json

from schemas import jsonschema
from schemas.event import UsageEvent


def test_checked_in_schema_matches_the_model() -> None:
    on_disk = jsonschema.SCHEMA_FILE.read_text()
    assert on_disk == jsonschema.render(), (
        "schemas/usage_event.schema.json is stale: run `python -m schemas.jsonschema` and commit it"
    )


def test_schema_lists_every_field_and_the_required_ones() -> None:
    schema = json.loads(jsonschema.SCHEMA_FILE.read_text())
    assert set(schema["properties"]) == set(UsageEvent.model_fields)
    assert sorted(schema["required"]) == ["account_id", "event_id", "model", "occurred_at"]
    assert schema["additionalProperties"] is False
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_carries_the_event_rules() -> None:
    props = json.loads(jsonschema.SCHEMA_FILE.read_text())["properties"]
    assert (props["event_id"]["minLength"], props["event_id"]["maxLength"]) == (1, 128)
    assert (props["source"]["minLength"], props["source"]["maxLength"]) == (1, 64)
    assert props["source"]["default"] == "default"
    assert (props["account_id"]["minLength"], props["account_id"]["maxLength"]) == (1, 128)
    assert props["occurred_at"]["format"] == "date-time"
    for bucket in (
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "requests",
    ):
        assert props[bucket]["type"] == "integer"
        assert props[bucket]["minimum"] == 0
    assert props["requests"]["default"] == 1
    assert props["schema_version"]["const"] == 1
    assert "<= output_tokens" in props["reasoning_tokens"]["description"]
    assert "4096 bytes" in props["metadata"]["description"]


def test_a_drifted_model_would_be_caught(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The drift check compares text: any change to the generated schema must show up.
    real = jsonschema.usage_event_schema

    def drifted() -> dict[str, object]:
        schema = real()
        schema["properties"]["new_field"] = {"type": "string"}
        return schema

    monkeypatch.setattr(jsonschema, "usage_event_schema", drifted)
    assert jsonschema.SCHEMA_FILE.read_text() != jsonschema.render()
