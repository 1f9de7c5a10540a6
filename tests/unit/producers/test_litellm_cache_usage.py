"""Cache tokens in LiteLLM's usage objects, as the installed LiteLLM itself builds them, become
the event's disjoint buckets: every token billed once, in its own bucket — never lost (a usage
object with more cache tokens than prompt tokens was refused, and its call not metered), never
counted twice, never billed above what was used."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

from collections.abc import Mapping  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from litellm import AnthropicConfig  # noqa: E402
from litellm.litellm_core_utils.litellm_logging import StandardLoggingPayloadSetup  # noqa: E402
from litellm.llms.bedrock.chat.converse_transformation import AmazonConverseConfig  # noqa: E402

from producers.adapters import to_event  # noqa: E402
from producers.errors import AdapterError  # noqa: E402

# Anthropic's own usage: input_tokens is the uncached input only; the cache counts stand apart.
ANTHROPIC = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 20,
}
USED = (10, 100, 20, 5)  # uncached input, cache reads, cache writes, output


def _payload(usage: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"user_api_key_user_id": "acct"}
    if usage is not None:
        meta["usage_object"] = dict(usage)
    return {
        "id": "chatcmpl-1",
        "call_type": "acompletion",
        "startTime": 1740830400.0,
        "model": "anthropic/claude-sonnet-4-5",
        "metadata": meta,
        **extra,
    }


def _buckets(payload: Mapping[str, Any]) -> tuple[int, int, int, int]:
    e = to_event(payload, format="litellm")
    return e.input_tokens, e.cached_input_tokens, e.cache_write_tokens, e.output_tokens


def test_anthropic_usage_that_litellm_logs_from_a_plain_dict_is_billed_whole() -> None:
    """LiteLLM's logging reads an Anthropic usage dict as Responses usage: prompt_tokens = 10
    (the cache left out), cached_tokens = 100, cache writes 20. Before, 120 > 10 was refused
    and the call's usage lost."""
    logged = StandardLoggingPayloadSetup.get_usage_as_dict({"usage": ANTHROPIC})
    assert logged["prompt_tokens"] == 10  # the shape as the installed LiteLLM makes it
    assert logged["prompt_tokens_details"]["cached_tokens"] == 100
    assert _buckets(_payload(logged)) == USED


def test_litellm_anthropic_chat_usage_counts_the_cache_inside_prompt_tokens_once() -> None:
    usage = AnthropicConfig().calculate_usage(usage_object=ANTHROPIC, reasoning_content=None)
    assert usage.prompt_tokens == 130  # LiteLLM's own convention: inclusive
    assert _buckets(_payload(usage.model_dump())) == USED


def test_bedrock_converse_usage_counts_the_cache_inside_prompt_tokens_once() -> None:
    usage = AmazonConverseConfig().transform_usage(
        {
            "inputTokens": 10,
            "outputTokens": 5,
            "totalTokens": 135,
            "cacheReadInputTokens": 100,
            "cacheWriteInputTokens": 20,
        }
    )
    assert usage.prompt_tokens == 130
    assert _buckets(_payload(usage.model_dump())) == USED


def test_anthropic_usage_as_the_response_carries_it_is_read_as_anthropic() -> None:
    """No usage_object: the usage of a /v1/messages answer, Anthropic-shaped (it was refused
    as "an Anthropic field")."""
    payload = _payload(None, response={"id": "msg_1", "type": "message", "usage": ANTHROPIC})
    assert _buckets(payload) == USED


def test_openai_cache_writes_named_cache_write_tokens_are_billed_as_writes() -> None:
    """OpenAI's (and LiteLLM's canonical) name for writes, inside prompt_tokens: 2000 read,
    400 written, 200 neither (they were billed as plain input before)."""
    usage = {
        "prompt_tokens": 2600,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 400},
    }
    assert _buckets(_payload(usage)) == (200, 2000, 400, 7)


def test_the_same_writes_under_litellms_mirrored_names_count_once() -> None:
    usage = {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "prompt_tokens_details": {
            "cached_tokens": 100,
            "cache_write_tokens": 20,
            "cache_creation_tokens": 20,
        },
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    }
    assert _buckets(_payload(usage)) == USED


@pytest.mark.parametrize(
    "usage",
    [
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
        {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 3},
        },
    ],
)
def test_openai_cache_counts_above_the_prompt_contradict_the_shape(usage: dict[str, Any]) -> None:
    """Without Anthropic's names nothing says prompt_tokens left the cache out: OpenAI counts
    it inside. The adapter refuses it naming the field (the callback dead-letters such usage)."""
    with pytest.raises(AdapterError) as refused:
        to_event(_payload(usage), format="litellm")
    assert refused.value.field == "metadata.usage_object.prompt_tokens_details.cached_tokens"
    assert "exceeds metadata.usage_object.prompt_tokens (10)" in refused.value.rule
