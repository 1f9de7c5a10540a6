"""A token count means the same in every shape: the adapters (OpenAI and Anthropic envelopes,
LiteLLM's payload, CloudEvents) take exactly what the canonical event takes (schemas.bounds.Count)
and refuse what it refuses, naming the field of the input and the rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from producers.adapters import to_event
from producers.errors import AdapterError
from schemas.event import UsageEvent

T0 = "2025-03-01T12:00:00Z"
BASE = {"event_id": "e", "account_id": "a", "occurred_at": T0, "model": "m"}

# (value, what the canonical event makes of it: the count, or the machine code of its refusal)
CASES: list[tuple[Any, int | str]] = [
    (10, 10),
    ("10", 10),  # refused by the adapters before, taken by the event: billed as 10 now
    ("0", 0),
    (10.0, 10),
    (1e3, 1000),
    (10**12, 10**12),
    (-1, "greater_than_equal"),
    ("-1", "greater_than_equal"),
    (1.5, "int_from_float"),
    ("1e3", "int_parsing"),
    ("1.5", "int_parsing"),
    (True, "int_type"),
    (False, "int_type"),
    ("1\x00", "int_parsing"),
    ("", "int_parsing"),
    ("ten", "int_parsing"),
    (10**12 + 1, "less_than_equal"),
    (2**63, "less_than_equal"),  # past BIGINT
    (str(2**63), "less_than_equal"),
    ("9" * 5000, "int_parsing_size"),
    (10**5000, "less_than_equal"),  # more digits than Python's str() of an int allows
    (float("nan"), "finite_number"),
    (float("inf"), "finite_number"),
    ([1], "int_type"),
    ({"n": 1}, "int_type"),
]


def _canonical(value: Any) -> int | str:
    try:
        return UsageEvent.model_validate({**BASE, "input_tokens": value}).input_tokens
    except ValidationError as exc:
        return str(exc.errors()[0]["type"])


def _shapes(value: Any) -> list[tuple[dict[str, Any], str, str]]:
    """(input, its format, the path of the count in it) for each adapter."""
    return [
        (
            {**BASE, "usage": {"prompt_tokens": value, "completion_tokens": 0}},
            "openai",
            "usage.prompt_tokens",
        ),
        (
            {**BASE, "usage": {"input_tokens": value, "output_tokens": 0}},
            "anthropic",
            "usage.input_tokens",
        ),
        (
            {
                "specversion": "1.0",
                "id": "e",
                "source": "s",
                "subject": "a",
                "time": T0,
                "data": {"model": "m", "usage": {"prompt_tokens": value, "completion_tokens": 0}},
            },
            "cloudevents",
            "data.usage.prompt_tokens",
        ),
        (
            {
                "id": "chatcmpl-1",
                "call_type": "acompletion",
                "startTime": 1740830400.0,
                "model": "m",
                "metadata": {
                    "user_api_key_user_id": "a",
                    "usage_object": {"prompt_tokens": value, "completion_tokens": 0},
                },
            },
            "litellm",
            "metadata.usage_object.prompt_tokens",
        ),
    ]


def _id(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"int of {value.bit_length()} bits"
    return repr(value)[:20]


@pytest.mark.parametrize(("value", "expected"), CASES, ids=[_id(v) for v, _ in CASES])
def test_adapters_read_a_count_as_the_canonical_event_does(value: Any, expected: int | str) -> None:
    assert _canonical(value) == expected  # the rule itself, as the event applies it
    for obj, fmt, path in _shapes(value):
        if isinstance(expected, int):
            event = to_event(obj, format=fmt)
            assert event.input_tokens == expected, (fmt, value)
            continue
        with pytest.raises(AdapterError) as refused:
            to_event(obj, format=fmt)
        assert refused.value.field == path, (fmt, value)
        assert refused.value.codes == [expected], (fmt, value)


def test_a_refused_count_says_the_rule_and_the_value() -> None:
    with pytest.raises(AdapterError) as refused:
        to_event({**BASE, "usage": {"prompt_tokens": -1, "completion_tokens": 0}}, format="openai")
    assert str(refused.value) == (
        "usage.prompt_tokens: Input should be greater than or equal to 0 (value: -1)"
    )
    with pytest.raises(AdapterError) as refused:
        to_event({**BASE, "usage": {"prompt_tokens": 10**13, "completion_tokens": 0}})
    assert "less than or equal to 1000000000000" in refused.value.rule


def test_a_digit_string_in_a_detail_is_read_too() -> None:
    usage = {
        "prompt_tokens": "100",
        "completion_tokens": "20",
        "prompt_tokens_details": {"cached_tokens": "40"},
        "completion_tokens_details": {"reasoning_tokens": "5"},
    }
    e = to_event({**BASE, "usage": usage}, format="openai")
    assert (e.input_tokens, e.cached_input_tokens, e.output_tokens, e.reasoning_tokens) == (
        60,
        40,
        20,
        5,
    )


@pytest.mark.parametrize("value", ["9" * 5000, 10**5000], ids=["digits", "int"])
def test_a_huge_refused_value_is_cut_in_the_message(value: Any) -> None:
    with pytest.raises(AdapterError) as refused:
        to_event({**BASE, "usage": {"prompt_tokens": value, "completion_tokens": 0}})
    assert refused.value.field == "usage.prompt_tokens" and len(str(refused.value)) < 300
