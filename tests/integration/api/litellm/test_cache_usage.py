"""Prompt-cache usage through the real LiteLLM SDK, the real API, Kafka and the worker: a call
whose usage object has more cache tokens than prompt tokens is billed for what it used (it was
logged "not metered" and its usage lost); usage that contradicts itself reaches usage.dlq with
the reason, never only a log line."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import litellm
from litellm import CustomLLM, ModelResponse

from api.settings import ApiSettings
from producers.client import MeterlineClient
from schemas import topics
from tests.integration.api.litellm.helpers import COUNTING_MODEL, MODEL, balance, fund, usage_debits
from tests.integration.api.litellm.test_sdk import (  # noqa: F401 - `installed` is a fixture
    MESSAGES,
    Recording,
    installed,
    make_callback,
    use,
)
from tests.integration.api_server import ApiServer
from tests.integration.worker import USAGE_ROWS, Worker, consume_to_end, wait_for

# Anthropic's usage: input_tokens excludes the 100 tokens read from the cache and the 20 written.
ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 20,
}
# OpenAI's shape counts cached tokens inside prompt_tokens: 100 of 10 cannot be.
CONTRADICTORY = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "prompt_tokens_details": {"cached_tokens": 100},
}


class AnthropicUsage(CustomLLM):  # type: ignore[misc]
    """A provider answering with Anthropic's own usage object (a pass-through, a gateway)."""

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return ModelResponse(
            choices=[{"message": {"role": "assistant", "content": "cached"}}],
            usage=dict(ANTHROPIC_USAGE),
        )


def _contradictory() -> ModelResponse:
    return ModelResponse(
        choices=[{"message": {"role": "assistant", "content": "x"}}], usage=dict(CONTRADICTORY)
    )


async def test_cache_tokens_above_prompt_tokens_are_billed_for_what_was_used(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    await fund(db, "acme", 5_000_000)
    use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    litellm.custom_provider_map = [{"provider": "counting", "custom_handler": AnthropicUsage()}]
    litellm.utils.custom_llm_setup()
    await litellm.acompletion(model=COUNTING_MODEL, messages=MESSAGES, user="acme", max_tokens=50)
    await wait_for(db, USAGE_ROWS, 1, worker=worker)
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 1)
    event = json.loads(records[0].value)
    # every token in its own bucket, once: 10 uncached, 100 read, 20 written, 5 out
    assert [
        event.get(k, 0)
        for k in ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
    ] == [10, 100, 20, 5]
    async with MeterlineClient(served.url, admin_key) as ml:
        price = await ml.calculate_cost(
            COUNTING_MODEL,
            account_id="acme",
            input_tokens=10,
            cached_input_tokens=100,
            cache_write_tokens=20,
            output_tokens=5,
        )
        without_input = await ml.calculate_cost(
            COUNTING_MODEL,
            account_id="acme",
            cached_input_tokens=100,
            cache_write_tokens=20,
            output_tokens=5,
        )
    assert price.cost > without_input.cost  # the 10 uncached tokens are billed too
    assert await usage_debits(db, "acme") == [price.cost]
    assert await balance(db, "acme") == Decimal(5) - price.cost
    dlq = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_dlq, 0)
    assert dlq == []


async def test_contradictory_usage_goes_to_the_dlq_with_its_reason(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    installed: list[Recording],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """Async and sync calls alike: the usage, the payer and the reason naming the field are on
    usage.dlq as invalid_event (before: a log line, and the usage gone); the hold is freed."""
    await fund(db, "acme", 5_000_000)
    cb = use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    await litellm.acompletion(
        model=MODEL, messages=MESSAGES, mock_response=_contradictory(), user="acme", max_tokens=50
    )
    await asyncio.to_thread(
        litellm.completion,
        model=MODEL,
        messages=MESSAGES,
        mock_response=_contradictory(),
        user="acme",
    )
    letters = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_dlq, 2)
    assert len(letters) == 2
    for letter in letters:
        headers = dict(letter.headers)
        assert headers[topics.DLQ_HEADER_REASON] == b"invalid_event"
        why = headers[topics.DLQ_HEADER_MESSAGE].decode()
        assert "not metered" in why and "prompt_tokens_details.cached_tokens" in why, why
        assert letter.key == b"acme"
        record = json.loads(letter.value)
        assert record["account_id"] == "acme" and record["format"] == "litellm"
        usage = record["payload"]["metadata"]["usage_object"]
        assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == (
            10,
            100,
        )
    assert (
        await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 0) == []
    )
    async with MeterlineClient(served.url, admin_key) as ml:
        for _ in range(100):
            hold = await ml.get_reservation(cb.made[0].reservation_id or "", account_id="acme")
            if hold.status != "active":
                break
            await asyncio.sleep(0.05)
    assert hold.status == "released"
    assert await db.fetchval(USAGE_ROWS) == 0


async def test_without_kafka_contradictory_usage_is_kept_in_the_rejected_file(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    installed: list[Recording],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    use(installed, make_callback(served, admin_key, api_settings, tmp_path, kafka_bootstrap=""))
    await asyncio.to_thread(
        litellm.completion,
        model=MODEL,
        messages=MESSAGES,
        mock_response=_contradictory(),
        user="acme",
    )
    rejected = tmp_path / "spool.jsonl.rejected"
    for _ in range(200):  # LiteLLM runs the sync success callback in its logging thread
        if rejected.exists() and rejected.read_text().endswith("\n"):
            break
        await asyncio.sleep(0.05)
    kept = [json.loads(line) for line in rejected.read_text().splitlines()]
    assert len(kept) == 1 and kept[0]["reason"] == "invalid_event"
    assert "prompt_tokens_details.cached_tokens" in kept[0]["message"]
    assert kept[0]["record"]["payload"]["metadata"]["usage_object"]["prompt_tokens"] == 10
