"""MeterlineCallback in the LiteLLM SDK: real litellm.acompletion with mocked models, the real
meterline API (served), the real worker debiting from Kafka."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import litellm
import pytest
from litellm import CustomLLM, ModelResponse

from api.settings import ApiSettings
from producers.client import MeterlineClient
from producers.integrations.holds import CallRefused, Hold
from producers.integrations.litellm import MeterlineCallback
from tests.integration.api.litellm.helpers import (
    COUNTING_MODEL,
    MOCK_COST,
    MOCK_INPUT,
    MOCK_OUTPUT,
    MODEL,
    balance,
    fund,
    usage_debits,
)
from tests.integration.api_server import ApiServer, free_port
from tests.integration.worker import USAGE_ROWS, Worker, consume_to_end, wait_for

MESSAGES = [{"role": "user", "content": "What is metering?"}]


class Recording(MeterlineCallback):  # type: ignore[misc]
    """The callback, remembering every hold it made."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.made: list[Hold] = []

    def _track(self, call_id: str, hold: Hold) -> None:
        self.made.append(hold)
        super()._track(call_id, hold)


class Counting(CustomLLM):  # type: ignore[misc]
    """A provider that counts the calls that reach it."""

    calls = 0

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        Counting.calls += 1
        return ModelResponse(
            choices=[{"message": {"role": "assistant", "content": "counted"}}],
            usage={"prompt_tokens": MOCK_INPUT, "completion_tokens": MOCK_OUTPUT},
        )


def make_callback(
    server: ApiServer | None, key: str, settings: ApiSettings, tmp_path: Path, **kw: Any
) -> Recording:
    options: dict[str, Any] = {
        "api_url": server.url if server else f"http://127.0.0.1:{free_port()}",
        "api_key": key,
        "kafka_bootstrap": settings.kafka_bootstrap,
        "topic_usage_events": settings.topic_usage_events,
        "topic_usage_dlq": settings.topic_usage_dlq,
        "spool_path": tmp_path / "spool.jsonl",
    }
    options.update(kw)
    return Recording(**options)


@pytest.fixture
async def installed() -> AsyncIterator[list[Recording]]:
    """Install callbacks into litellm for one test; drained, closed and removed after."""
    mine: list[Recording] = []
    before = list(litellm.callbacks)
    providers = list(litellm.custom_provider_map)
    litellm.custom_provider_map = [{"provider": "counting", "custom_handler": Counting()}]
    litellm.utils.custom_llm_setup()
    Counting.calls = 0
    try:
        yield mine
    finally:
        for cb in mine:
            await cb.aclose()
        litellm.logging_callback_manager._reset_all_callbacks()
        litellm.callbacks = before
        litellm.custom_provider_map = providers


def use(installed: list[Recording], cb: Recording) -> Recording:
    """Make cb the only callback (LiteLLM copies callbacks into lists of its own on first use)."""
    installed.append(cb)
    litellm.logging_callback_manager._reset_all_callbacks()
    litellm.callbacks = [cb]
    return cb


async def test_a_call_is_debited_exactly_meterlines_price_and_settles_its_hold(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],
    tmp_path: Path,
) -> None:
    await fund(db, "acme", 5_000_000)
    cb = use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    answer = await litellm.acompletion(
        model=MODEL, messages=MESSAGES, mock_response="Metering counts.", user="acme", max_tokens=50
    )
    assert answer.choices[0].message.content == "Metering counts."
    await wait_for(db, USAGE_ROWS, 1, worker=worker)
    async with MeterlineClient(served.url, admin_key) as ml:
        price = await ml.calculate_cost(
            MODEL, account_id="acme", input_tokens=MOCK_INPUT, output_tokens=MOCK_OUTPUT
        )
        hold = await ml.get_reservation(cb.made[0].reservation_id or "", account_id="acme")
        after = await ml.balance(account_id="acme")
    assert price.cost == MOCK_COST
    assert await usage_debits(db, "acme") == [MOCK_COST]
    assert await balance(db, "acme") == Decimal(5) - MOCK_COST
    # the hold was the worst case: the prompt LiteLLM counts + max_tokens, at meterline's prices
    prompt = litellm.token_counter(model=MODEL, messages=MESSAGES)
    assert cb.made[0].amount == Decimal(prompt * 2000 + 50 * 8000) / 1_000_000
    assert hold.status == "settled" and after.held == 0 and after.available == after.balance


async def test_a_streamed_call_is_metered_once(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],
    tmp_path: Path,
) -> None:
    await fund(db, "acme", 5_000_000)
    use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    stream = await litellm.acompletion(
        model=MODEL,
        messages=MESSAGES,
        mock_response="one two three four five",
        user="acme",
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "one two three four five"
    await wait_for(db, USAGE_ROWS, 1, worker=worker)
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 1)
    assert len(records) == 1, [r.value for r in records]
    event = json.loads(records[0].value)
    assert event["account_id"] == "acme" and event["reservation_id"]
    assert event["output_tokens"] > 0
    cost = Decimal(event["input_tokens"] * 2000 + event["output_tokens"] * 8000) / 1_000_000
    assert await usage_debits(db, "acme") == [cost]


async def test_an_account_without_credit_is_refused_before_the_model_is_called(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    installed: list[Recording],
    tmp_path: Path,
) -> None:
    await fund(db, "rich", 5_000_000)
    use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    with pytest.raises(CallRefused) as refused:
        await litellm.acompletion(
            model=COUNTING_MODEL, messages=MESSAGES, user="broke", max_tokens=50
        )
    assert refused.value.status_code == 402 and refused.value.code == "insufficient_credit"
    assert "broke" in refused.value.message and refused.value.problem["account_id"] == "broke"
    assert Counting.calls == 0
    # the same provider does get the call of an account that can pay
    await litellm.acompletion(model=COUNTING_MODEL, messages=MESSAGES, user="rich", max_tokens=50)
    assert Counting.calls == 1


async def test_a_failing_call_releases_its_hold(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    installed: list[Recording],
    tmp_path: Path,
) -> None:
    await fund(db, "acme", 5_000_000)
    cb = use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    with pytest.raises(litellm.InternalServerError):
        await litellm.acompletion(
            model=MODEL,
            messages=MESSAGES,
            mock_response=Exception("provider down"),
            user="acme",
            max_tokens=50,
        )
    assert len(cb.made) == 1 and cb.made[0].reservation_id
    async with MeterlineClient(served.url, admin_key) as ml:
        for _ in range(100):  # the failure callback runs in LiteLLM's logging worker
            hold = await ml.get_reservation(cb.made[0].reservation_id, account_id="acme")
            if hold.status != "active":
                break
            await asyncio.sleep(0.05)
        after = await ml.balance(account_id="acme")
    assert hold.status == "released"
    assert after.held == 0 and after.available == after.balance == Decimal(5)


async def test_hold_policy_refuses_or_holds_what_is_left(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],
    tmp_path: Path,
) -> None:
    await fund(db, "small", 1_000_000)  # 1 credit; 1000 output tokens alone cost 8
    use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    with pytest.raises(CallRefused) as refused:
        await litellm.acompletion(
            model=MODEL, messages=MESSAGES, mock_response="x", user="small", max_tokens=1000
        )
    assert refused.value.status_code == 402

    lenient = use(
        installed,
        make_callback(served, admin_key, api_settings, tmp_path, on_insufficient="hold_available"),
    )
    await litellm.acompletion(
        model=MODEL, messages=MESSAGES, mock_response="x", user="small", max_tokens=1000
    )
    assert lenient.made[0].amount == Decimal(1)  # all that was available, not refused
    await wait_for(db, USAGE_ROWS, 1, worker=worker)
    assert await balance(db, "small") == Decimal(1) - MOCK_COST

    capped = use(
        installed, make_callback(served, admin_key, api_settings, tmp_path, max_hold="0.25")
    )
    await litellm.acompletion(
        model=MODEL, messages=MESSAGES, mock_response="x", user="small", max_tokens=1000
    )
    assert capped.made[0].amount == Decimal("0.25")

    unpriced = use(
        installed, make_callback(served, admin_key, api_settings, tmp_path, unpriced_hold="0.5")
    )
    await litellm.acompletion(
        model="openai/not-in-meterlines-catalog",
        messages=MESSAGES,
        mock_response="x",
        user="small",
        max_tokens=50,
    )
    assert unpriced.made[0].amount == Decimal("0.5") and unpriced.made[0].reservation_id


async def test_meterline_unreachable_fail_closed_refuses_with_503(
    admin_key: str, api_settings: ApiSettings, installed: list[Recording], tmp_path: Path
) -> None:
    use(installed, make_callback(None, admin_key, api_settings, tmp_path, on_unreachable="closed"))
    with pytest.raises(CallRefused) as refused:
        await litellm.acompletion(
            model=MODEL, messages=MESSAGES, mock_response="x", user="acme", max_tokens=50
        )
    assert refused.value.status_code == 503 and refused.value.code == "metering_unavailable"


async def test_fail_open_spools_usage_and_publishes_it_when_meterline_is_back(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],
    tmp_path: Path,
) -> None:
    await fund(db, "acme", 5_000_000)
    down = use(
        installed,
        make_callback(None, admin_key, api_settings, tmp_path, kafka_bootstrap=""),
    )
    for _ in range(3):
        await litellm.acompletion(
            model=MODEL, messages=MESSAGES, mock_response="x", user="acme", max_tokens=50
        )
    assert [h.reservation_id for h in down.made] == [None, None, None]  # let through unheld
    spool = tmp_path / "spool.jsonl"
    for _ in range(100):
        if spool.exists() and len(spool.read_text().splitlines()) == 3:
            break
        await asyncio.sleep(0.05)
    assert len(spool.read_text().splitlines()) == 3
    assert await db.fetchval(USAGE_ROWS) == 0

    # meterline is back: the next call's success drains the spool (same file, new callback)
    use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    await litellm.acompletion(
        model=MODEL, messages=MESSAGES, mock_response="x", user="acme", max_tokens=50
    )
    await wait_for(db, USAGE_ROWS, 4, worker=worker)
    assert await usage_debits(db, "acme") == [MOCK_COST] * 4
    assert not spool.exists() or spool.read_text() == ""


async def test_a_sync_completion_is_metered_after_the_call(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],
    tmp_path: Path,
) -> None:
    """litellm.completion (sync) runs no hook that could hold credit before it, but its usage
    is a fact: it is published after the call, streamed or not (before, it was not metered
    at all: the calls were free)."""
    await fund(db, "acme", 5_000_000)
    cb = use(installed, make_callback(served, admin_key, api_settings, tmp_path))

    def calls() -> str:
        litellm.completion(
            model=MODEL, messages=MESSAGES, mock_response="x", user="acme", max_tokens=50
        )
        stream = litellm.completion(
            model=MODEL, messages=MESSAGES, mock_response="one two", user="acme", stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    assert await asyncio.to_thread(calls) == "one two"
    await wait_for(db, USAGE_ROWS, 2, worker=worker)
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 2)
    events = [json.loads(r.value) for r in records]
    assert [e["account_id"] for e in events] == ["acme", "acme"]
    assert all("reservation_id" not in e for e in events) and cb.made == []
    costs = sorted(
        Decimal(e["input_tokens"] * 2000 + e["output_tokens"] * 8000) / 1_000_000 for e in events
    )
    assert sorted(await usage_debits(db, "acme")) == costs
    assert MOCK_COST in costs  # the non-streamed call: LiteLLM's mock usage, meterline's price
    assert await balance(db, "acme") == Decimal(5) - sum(costs)


@pytest.mark.parametrize(
    ("model", "user", "field"),
    [
        ("openai/" + "m" * 300, "acme", "body.model"),
        (MODEL, "a" * 200, "query.account_id"),
    ],
)
async def test_a_call_meterline_cannot_meter_is_refused_400_naming_the_field(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    installed: list[Recording],
    tmp_path: Path,
    model: str,
    user: str,
    field: str,
) -> None:
    """A model name or account id past the event's bounds: the call is refused with 400 and
    the rule (before: 503 metering_misconfigured, which a client retries for ever)."""
    use(installed, make_callback(served, admin_key, api_settings, tmp_path))
    with pytest.raises(CallRefused) as refused:
        await litellm.acompletion(
            model=model, messages=MESSAGES, mock_response="x", user=user, max_tokens=5
        )
    assert (refused.value.status_code, refused.value.code) == (400, "not_meterable")
    assert field in refused.value.message and "at most" in refused.value.message
    assert [e["field"] for e in refused.value.problem["errors"]] == [field]
