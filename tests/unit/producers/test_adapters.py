"""Adapters turn real-shaped provider, LiteLLM and CloudEvents payloads into UsageEvents."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from producers.adapters import detect_format, to_event
from producers.errors import AdapterError
from producers.jsonlines import BadLine, read_events
from schemas.event import UsageEvent

T0 = "2025-03-01T12:00:00Z"

CHAT = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 128,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
}

RESPONSES = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "model": "o3-mini-2025-01-31",
    "output": [],
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 123,
    },
}

MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi"}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 400,
        "server_tool_use": {"web_search_requests": 2},
        "service_tier": "standard",
    },
}

LITELLM = {
    "id": "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f",
    "trace_id": "97a0b8b5-b1e4-4a6c-92dc-3fc2b0e9b0b8",
    "call_type": "acompletion",
    "stream": False,
    "response_cost": 2.85e-05,
    "status": "success",
    "custom_llm_provider": "anthropic",
    "total_tokens": 3450,
    "prompt_tokens": 3050,
    "completion_tokens": 400,
    "startTime": 1741569952.123,
    "endTime": 1741569954.5,
    "completionStartTime": 1741569953.0,
    "response_time": 2.377,
    "model_map_information": {"model_map_key": "claude-sonnet-4-5", "model_map_value": None},
    "model": "claude-sonnet-4-5",
    "model_id": "a1b2",
    "model_group": "sonnet",
    "api_base": "https://api.anthropic.com/v1/messages",
    "metadata": {
        "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "user_api_key_alias": "prod-key",
        "user_api_key_org_id": "org-1",
        "user_api_key_team_id": "team-7",
        "user_api_key_user_id": "user-42",
        "user_api_key_team_alias": "research",
        "spend_logs_metadata": None,
        "requester_ip_address": "10.0.0.1",
        "usage_object": {
            "completion_tokens": 400,
            "prompt_tokens": 3050,
            "total_tokens": 3450,
            "prompt_tokens_details": {"cached_tokens": 2000, "cache_creation_tokens": 1000},
            "completion_tokens_details": {"reasoning_tokens": 0},
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 2000,
            "server_tool_use": {"web_search_requests": 1},
        },
    },
    "cache_hit": None,
    "cache_key": None,
    "saved_cache_cost": 0.0,
    "request_tags": ["prod", "chat"],
    "end_user": "customer-9",
    "requester_ip_address": "10.0.0.1",
    "messages": [{"role": "user", "content": "Hi"}],
    "response": {"id": "x", "object": "chat.completion"},
    "model_parameters": {"max_tokens": 1024},
    "hidden_params": {
        "model_id": "a1b2",
        "cache_key": None,
        "api_base": "https://api.anthropic.com/v1/messages",
        "response_cost": "2.85e-05",
        "additional_headers": {},
    },
}

CLOUDEVENT = {
    "specversion": "1.0",
    "id": "ce-0001",
    "source": "//proxy.eu-west-1.example.com/gateway",
    "type": "dev.meterline.usage.v1",
    "subject": "acct-7",
    "time": "2025-03-01T12:00:00Z",
    "datacontenttype": "application/json",
    "data": {"model": "openai/gpt-4o-mini", "input_tokens": 100, "output_tokens": 20},
}


def buckets(e: UsageEvent) -> tuple[int, int, int, int, int]:
    return (
        e.input_tokens,
        e.cached_input_tokens,
        e.cache_write_tokens,
        e.output_tokens,
        e.reasoning_tokens,
    )


# --- OpenAI -----------------------------------------------------------------------------


def test_chat_completion_response_with_account() -> None:
    e = to_event({**CHAT, "account_id": "acct-1"})
    assert buckets(e) == (2006 - 1920, 1920, 0, 300, 128)
    assert e.event_id == CHAT["id"]
    assert e.model == "gpt-4o-2024-08-06"
    assert e.occurred_at == datetime.fromtimestamp(1741569952, UTC)
    assert e.account_id == "acct-1" and e.source == "default"


def test_envelope_with_usage_and_meterline_fields() -> None:
    line = {
        "account_id": "acct-42",
        "event_id": "req-9",
        "occurred_at": "2025-03-01T13:00:00+01:00",
        "source": "proxy-eu",
        "model": "openai/gpt-4o",
        "byok": True,
        "metadata": {"team": "r"},
        "reported_cost": "0.0042",
        "usage": CHAT["usage"],
    }
    assert detect_format(line) == "openai"
    e = to_event(line)
    assert buckets(e) == (86, 1920, 0, 300, 128)
    assert (e.event_id, e.source, e.model, e.byok) == ("req-9", "proxy-eu", "openai/gpt-4o", True)
    assert e.occurred_utc == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert e.reported_cost == Decimal("0.0042") and e.metadata == {"team": "r"}


@pytest.mark.parametrize(
    "provider",
    [{"usage": CHAT["usage"], "model": "openai/gpt-4o", "event_id": "e"}, {"response": MESSAGE}],
    ids=["openai", "anthropic"],
)
def test_envelope_carries_the_reservation_id(provider: dict[str, Any]) -> None:
    # Dropped before: the event was debited but its hold never settled (held until its TTL).
    line = {"account_id": "a", "occurred_at": T0, "reservation_id": "rsv_1", **provider}
    assert to_event(line).reservation_id == "rsv_1"


def test_envelope_fields_win_over_the_response() -> None:
    line = {
        "account_id": "a",
        "event_id": "mine",
        "model": "openai/gpt-4o",
        "occurred_at": T0,
        "response": CHAT,
    }
    e = to_event(line)
    assert (e.event_id, e.model) == ("mine", "openai/gpt-4o")
    assert e.occurred_at == datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_responses_api_object() -> None:
    line = {"account_id": "a", "response": RESPONSES}
    assert detect_format(line) == "openai"
    e = to_event(line)
    assert buckets(e) == (36, 0, 0, 87, 64)
    assert e.event_id == RESPONSES["id"] and e.model == "o3-mini-2025-01-31"
    assert e.occurred_at == datetime.fromtimestamp(1741476542, UTC)


def test_responses_cached_tokens_are_taken_out_of_input() -> None:
    usage = copy.deepcopy(RESPONSES["usage"])
    usage["input_tokens_details"] = {"cached_tokens": 30}
    e = to_event(usage, format="openai", account_id="a", event_id="e", occurred_at=T0, model="m")
    assert buckets(e) == (6, 30, 0, 87, 64)


def test_null_details_count_as_zero() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None},
    }
    e = to_event(usage, format="openai", account_id="a", event_id="e", occurred_at=T0, model="m")
    assert buckets(e) == (10, 0, 0, 5, 0)


def test_openai_cached_more_than_prompt_is_refused() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 11},
    }
    with pytest.raises(AdapterError) as exc:
        to_event(
            {"account_id": "a", "usage": usage, "event_id": "e", "occurred_at": T0, "model": "m"}
        )
    assert exc.value.field == "usage.prompt_tokens_details.cached_tokens"
    assert "exceeds usage.prompt_tokens (10)" in exc.value.rule


def test_openai_reasoning_more_than_completion_is_refused() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "completion_tokens_details": {"reasoning_tokens": 6},
    }
    with pytest.raises(AdapterError) as exc:
        to_event(usage, format="openai", account_id="a", event_id="e", occurred_at=T0, model="m")
    # A bare usage object is the root, so its paths start at its own keys.
    assert exc.value.field == "completion_tokens_details.reasoning_tokens"
    assert "part of the completion" in exc.value.rule


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (-1, "greater than or equal to 0"),
        ("1e3", "valid integer"),  # a digit string such as "12" is a count (test_count_rule)
        (1.5, "fractional part"),
        (True, "integer"),
    ],
)
def test_openai_counts_must_be_non_negative_integers(value: Any, rule: str) -> None:
    with pytest.raises(AdapterError) as exc:
        to_event(
            {"prompt_tokens": value, "completion_tokens": 1},
            format="openai",
            account_id="a",
            event_id="e",
            occurred_at=T0,
            model="m",
        )
    assert exc.value.field == "prompt_tokens"
    assert rule in exc.value.rule


def test_litellm_style_usage_with_cache_writes_in_prompt() -> None:
    # LiteLLM's OpenAI-shaped usage of an Anthropic call: prompt_tokens includes reads and writes.
    usage = LITELLM["metadata"]["usage_object"]  # type: ignore[index]
    e = to_event(
        {"account_id": "a", "event_id": "e", "occurred_at": T0, "model": "m", "usage": usage}
    )
    assert buckets(e) == (50, 2000, 1000, 400, 0)
    assert e.units == {"web_search": Decimal(1)}


def test_anthropic_usage_under_openai_format_is_refused() -> None:
    with pytest.raises(AdapterError) as exc:
        to_event({"account_id": "a", "response": MESSAGE, "occurred_at": T0}, format="openai")
    assert "use format 'anthropic'" in exc.value.rule


# --- Anthropic --------------------------------------------------------------------------


def test_anthropic_message_keeps_every_bucket() -> None:
    line = {"account_id": "acct-3", "occurred_at": T0, "response": MESSAGE}
    assert detect_format(line) == "anthropic"
    e = to_event(line)
    assert buckets(e) == (50, 2000, 1000, 400, 0)
    assert e.units == {"web_search": Decimal(2)}
    assert e.event_id == MESSAGE["id"] and e.model == "claude-sonnet-4-5-20250929"


def test_anthropic_message_has_no_time_so_the_envelope_must_give_one() -> None:
    with pytest.raises(AdapterError) as exc:
        to_event({"account_id": "a", "response": MESSAGE})
    assert exc.value.field == "occurred_at"
    assert "required" in exc.value.rule


def test_anthropic_cache_creation_breakdown_alone_is_summed() -> None:
    usage = {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 20},
    }
    e = to_event(usage, format="anthropic", account_id="a", event_id="e", occurred_at=T0, model="m")
    assert buckets(e) == (5, 0, 120, 7, 0)


def test_anthropic_null_cache_creation_total_beside_its_breakdown_bills_the_breakdown() -> None:
    # SDKs that serialise a typed usage (LiteLLM's, pydantic models) write absent totals as null.
    usage = {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 20},
    }
    e = to_event(usage, format="anthropic", account_id="a", event_id="e", occurred_at=T0, model="m")
    assert buckets(e) == (5, 0, 120, 7, 0)


def test_envelope_units_win_over_usage_units() -> None:
    line = {"account_id": "a", "occurred_at": T0, "response": MESSAGE, "units": {"web_search": 5}}
    assert to_event(line).units == {"web_search": Decimal(5)}


def test_openai_usage_under_anthropic_format_is_refused() -> None:
    with pytest.raises(AdapterError) as exc:
        to_event({"account_id": "a", "usage": CHAT["usage"]}, format="anthropic")
    assert exc.value.field == "usage.input_tokens"
    assert "use format 'openai'" in exc.value.rule


def test_anthropic_negative_cache_read_is_refused() -> None:
    usage = {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": -3}
    with pytest.raises(AdapterError) as exc:
        to_event(usage, format="anthropic", account_id="a", event_id="e", occurred_at=T0, model="m")
    assert exc.value.field == "cache_read_input_tokens"


# --- LiteLLM ----------------------------------------------------------------------------


def test_litellm_payload() -> None:
    assert detect_format(LITELLM) == "litellm"
    e = to_event(LITELLM)
    assert e.event_id == LITELLM["id"]
    assert e.source == "litellm"
    assert e.account_id == "user-42"  # the key's owner, by default
    assert e.model == "claude-sonnet-4-5" and e.provider == "anthropic"
    assert e.occurred_at == datetime.fromtimestamp(1741569952.123, UTC)
    assert buckets(e) == (50, 2000, 1000, 400, 0)
    assert e.units == {"web_search": Decimal(1)}
    assert e.reported_cost == Decimal("0.0000285")
    assert json.loads(e.to_kafka()[1])["reported_cost"] == "0.0000285"
    assert e.metadata == {
        "trace_id": LITELLM["trace_id"],
        "api_key_id": LITELLM["metadata"]["user_api_key_hash"],  # type: ignore[index]
        "team": "team-7",
        "model_group": "sonnet",
        "end_user": "customer-9",
        "tags": ["prod", "chat"],
    }


@pytest.mark.parametrize(
    ("field", "account"),
    [
        ("end_user", "customer-9"),
        ("user_api_key_team_id", "team-7"),
        ("user_api_key_org_id", "org-1"),
        ("metadata.user_api_key_alias", "prod-key"),
        (("user_api_key_end_user_id", "user_api_key_team_id"), "team-7"),
    ],
)
def test_litellm_account_field_is_selectable(field: Any, account: str) -> None:
    assert to_event(LITELLM, litellm_account_field=field).account_id == account


def test_litellm_missing_account_is_an_error_not_a_guess() -> None:
    payload = copy.deepcopy(LITELLM)
    payload["metadata"]["user_api_key_user_id"] = None  # type: ignore[index]
    with pytest.raises(AdapterError) as exc:
        to_event(payload)
    assert exc.value.field == "metadata.user_api_key_user_id"
    assert "names the account" in exc.value.rule


def test_litellm_without_usage_object_uses_top_level_counts() -> None:
    payload = copy.deepcopy(LITELLM)
    del payload["metadata"]["usage_object"]  # type: ignore[attr-defined]
    payload["response"] = None
    e = to_event(payload, source="proxy-1")
    assert buckets(e) == (3050, 0, 0, 400, 0)
    assert e.source == "proxy-1"


def test_litellm_usage_from_hidden_params() -> None:
    payload = copy.deepcopy(LITELLM)
    del payload["metadata"]["usage_object"]  # type: ignore[attr-defined]
    payload["hidden_params"]["usage_object"] = {  # type: ignore[index]
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 40},
    }
    assert buckets(to_event(payload)) == (60, 40, 0, 10, 0)


def test_litellm_failure_is_refused() -> None:
    with pytest.raises(AdapterError) as exc:
        to_event({**LITELLM, "status": "failure"})
    assert exc.value.field == "status"


def test_litellm_huge_tags_never_break_the_event() -> None:
    payload = {**LITELLM, "request_tags": ["t" * 60] * 500}
    e = to_event(payload)
    assert e.metadata is not None and len(e.metadata["tags"]) == 20


def test_litellm_gathered_metadata_with_control_characters_never_breaks_the_event() -> None:
    # Tags and ids come from the proxy's payload: the bound refuses control characters in an
    # event, so the adapter drops them from what it gathers rather than lose the usage.
    payload = {**LITELLM, "request_tags": ["pr\x00od", "line\nbreak"], "end_user": "cust\x1b9"}
    e = to_event(payload)
    assert e.metadata is not None
    assert e.metadata["tags"] == ["prod", "line\nbreak"]
    assert e.metadata["end_user"] == "cust9"


def test_litellm_float_cost_below_the_bound_precision_is_rounded_not_refused() -> None:
    e = to_event({**LITELLM, "response_cost": 1.5e-40})
    assert e.reported_cost == 0


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"event_id": "a\x00b"}, "event_id"),
        ({"model": "gpt\x7f"}, "model"),
        ({"input_tokens": 10**30}, "input_tokens"),
        ({"occurred_at": "9999-12-31T23:59:59-05:00"}, "occurred_at"),
        ({"metadata": {"k": "v\x00"}}, "metadata"),
    ],
)
def test_canonical_events_outside_the_bounds_are_adapter_errors(
    override: dict[str, Any], field: str
) -> None:
    body = {
        "event_id": "e1",
        "account_id": "a1",
        "occurred_at": "2025-03-01T12:00:00Z",
        "model": "openai/gpt-4o",
        **override,
    }
    with pytest.raises(AdapterError) as exc:
        to_event(body)
    assert exc.value.field == field


# --- CloudEvents ------------------------------------------------------------------------


def test_cloudevent_with_canonical_data() -> None:
    assert detect_format(CLOUDEVENT) == "cloudevents"
    e = to_event(CLOUDEVENT)
    assert (e.event_id, e.account_id, e.source) == (
        "ce-0001",
        "acct-7",
        "//proxy.eu-west-1.example.com/gateway",
    )
    assert e.occurred_at == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert buckets(e) == (100, 0, 0, 20, 0)


def test_cloudevent_source_fits_in_64_and_stays_distinct() -> None:
    long = "https://example.com/" + "x" * 100
    e = to_event({**CLOUDEVENT, "source": long})
    assert len(e.source) == 64 and e.source.startswith("https://example.com/xx")
    assert e.source == to_event({**CLOUDEVENT, "source": long}).source  # retries: one key
    # Sources sharing their first 64 characters used to become one source, so the same id
    # from both was one idempotency key and the second event was never debited.
    other = to_event({**CLOUDEVENT, "source": long + "-region-2"})
    assert len(other.source) == 64 and other.source != e.source
    short = "//proxy.example.com/gateway"
    assert to_event({**CLOUDEVENT, "source": short}).source == short


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"model": "m", "usage": CHAT["usage"]}, (86, 1920, 0, 300, 128)),
        ({"model": "m", "response": MESSAGE}, (50, 2000, 1000, 400, 0)),
        ({"response": RESPONSES}, (36, 0, 0, 87, 64)),
    ],
)
def test_cloudevent_with_provider_data(data: dict[str, Any], expected: tuple[int, ...]) -> None:
    e = to_event({**CLOUDEVENT, "data": data})
    assert buckets(e) == expected
    assert e.event_id == "ce-0001"  # the CloudEvent id, not the response's


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"time": "2025-03-01T12:00:00"}, "time"),  # no offset
        ({"subject": "a" * 129}, "subject"),
        ({"data": {"model": "m" * 257, "input_tokens": 1}}, "data.model"),
        ({"data": {"input_tokens": 1}}, "data.model"),  # missing
        ({"data": {"model": "m", "input_tokens": 10**13}}, "data.input_tokens"),
    ],
)
def test_cloudevent_errors_name_the_cloudevents_own_fields(
    change: dict[str, Any], field: str
) -> None:
    # Named occurred_at, account_id, model, input_tokens before: fields the sender never wrote.
    ce = {
        "specversion": "1.0",
        "id": "c1",
        "source": "/proxy",
        "subject": "acct",
        "time": "2025-03-01T12:00:00Z",
        "data": {"model": "m", "input_tokens": 1},
        **change,
    }
    with pytest.raises(AdapterError) as exc:
        to_event(ce)
    assert exc.value.field == field


def test_cloudevent_conflicting_data_is_refused() -> None:
    bad = {**CLOUDEVENT, "data": {**CLOUDEVENT["data"], "account_id": "acct-other"}}  # type: ignore[dict-item]
    with pytest.raises(AdapterError) as exc:
        to_event(bad)
    assert exc.value.field == "data.account_id"


def test_cloudevent_other_version_is_refused() -> None:
    with pytest.raises(AdapterError) as exc:
        to_event({**CLOUDEVENT, "specversion": "0.3"})
    assert exc.value.field == "specversion"


# --- canonical events, detection, defaults, errors ---------------------------------------


def test_canonical_event_round_trips() -> None:
    e = UsageEvent(
        event_id="e", account_id="a", occurred_at=T0, model="m", input_tokens=3, units={"images": 1}
    )
    line = json.loads(e.to_kafka()[1])
    assert detect_format(line) == "event"
    assert to_event(line) == e


def test_defaults_fill_only_what_is_missing() -> None:
    line = {"event_id": "e", "occurred_at": T0, "model": "m", "source": "own"}
    e = to_event(line, account_id="dflt", source="other", byok=True)
    assert (e.account_id, e.source, e.byok) == ("dflt", "own", True)


def test_validation_errors_name_the_field_path() -> None:
    line = {
        "event_id": "e",
        "account_id": "a",
        "occurred_at": "2025-03-01T12:00:00",
        "model": "m",
        "units": {"images": -2},
    }
    with pytest.raises(AdapterError) as exc:
        to_event(line)
    fields = [f for f, _ in exc.value.problems]
    assert fields == ["occurred_at", "units.images"]
    assert "timezone" in exc.value.problems[0][1]


def test_model_level_rule_names_its_field() -> None:
    line = {"event_id": "e", "account_id": "a", "occurred_at": T0, "model": "m",
            "output_tokens": 1, "reasoning_tokens": 2}  # fmt: skip
    with pytest.raises(AdapterError) as exc:
        to_event(line)
    assert exc.value.field == "reasoning_tokens"


def test_unknown_fields_in_a_canonical_event_are_named() -> None:
    with pytest.raises(AdapterError) as exc:
        to_event({"event_id": "e", "account_id": "a", "occurred_at": T0, "model": "m", "tokens": 1})
    assert exc.value.field == "tokens"


@pytest.mark.parametrize("obj", [[1, 2], "text", 3, None, {"hello": "world"}])
def test_unrecognised_input_is_an_adapter_error(obj: Any) -> None:
    with pytest.raises(AdapterError):
        to_event(obj)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(AdapterError) as exc:
        to_event(CLOUDEVENT, format="xml")
    assert exc.value.field == "format"


def test_adapter_error_is_a_value_error() -> None:
    assert issubclass(AdapterError, ValueError)


def test_read_events_reports_bad_lines_and_keeps_good_ones() -> None:
    good = json.dumps({"event_id": "e1", "account_id": "a", "occurred_at": T0, "model": "m"})
    bad = json.dumps({"event_id": "e2", "account_id": "", "occurred_at": T0, "model": "m"})
    items = list(read_events([good, "", "{not json", bad, json.dumps(LITELLM)]))
    assert [type(i).__name__ for i in items] == ["UsageEvent", "BadLine", "BadLine", "UsageEvent"]
    assert isinstance(items[1], BadLine) and items[1].lineno == 3
    assert "not JSON" in items[1].rule
    assert isinstance(items[2], BadLine) and (items[2].lineno, items[2].field) == (4, "account_id")
    assert str(items[2]).startswith("line 4: account_id: ")
