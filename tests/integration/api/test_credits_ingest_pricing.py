"""HTTP ingest (published to the real test topic and read back) and the price list."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from api.settings import ApiSettings
from tests.integration.api.conftest import UserKeyFactory, assert_problem, auth
from tests.integration.api.credits_helpers import MODEL, add_test_price
from tests.integration.worker import consume_to_end

EVENTS = "/api/v1/usage/events"
PRICES = "/api/v1/pricing/models"


async def consume(settings: ApiSettings, expect: int) -> list[Any]:
    """Every record on the test's usage.events topic (the API answers once Kafka has them)."""
    return await consume_to_end(settings.kafka_bootstrap, settings.topic_usage_events, expect)


def _event(i: int, account: str = "acme") -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "source": "proxy-eu",
        "account_id": account,
        "occurred_at": "2025-03-01T12:00:00Z",
        "model": "openai/gpt-4o-mini",
        "input_tokens": 100 + i,
        "output_tokens": 10,
    }


async def test_ingest_one_event_and_a_batch_of_mixed_shapes(
    client: httpx.AsyncClient, api_settings: ApiSettings, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    r = await client.post(EVENTS, json=_event(0), headers=auth(key))
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1}
    openai_envelope = {
        "event_id": "chat-1",
        "occurred_at": "2025-03-01T12:00:01Z",
        "model": "openai/gpt-4o",
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 80,
            "prompt_tokens_details": {"cached_tokens": 1024},
        },
    }  # no account_id: the key's own account
    anthropic_envelope = {
        "account_id": "acme",
        "event_id": "msg-1",
        "occurred_at": "2025-03-01T12:00:02Z",
        "model": "claude-sonnet-4-5",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 20,
            "cache_creation_input_tokens": 30,
            "output_tokens": 40,
        },
    }
    cloudevent = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "gw",
        "subject": "acme",
        "time": "2025-03-01T12:00:03Z",
        "type": "llm.usage",
        "data": {"model": "openai/gpt-4o-mini", "input_tokens": 5, "output_tokens": 6},
    }
    r = await client.post(
        EVENTS,
        json=[_event(1), openai_envelope, anthropic_envelope, cloudevent],
        headers=auth(key),
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 4}
    records = await consume(api_settings, 5)
    assert len(records) == 5
    by_id = {json.loads(rec.value)["event_id"]: (rec.key, json.loads(rec.value)) for rec in records}
    assert set(by_id) == {"e0", "e1", "chat-1", "msg-1", "ce-1"}
    assert all(k == b"acme" for k, _ in by_id.values())
    chat = by_id["chat-1"][1]
    assert (
        chat["account_id"],
        chat["input_tokens"],
        chat["cached_input_tokens"],
        chat["output_tokens"],
    ) == ("acme", 176, 1024, 80)
    msg = by_id["msg-1"][1]
    assert (msg["input_tokens"], msg["cached_input_tokens"], msg["cache_write_tokens"]) == (
        10,
        20,
        30,
    )
    assert by_id["ce-1"][1]["source"] == "gw"
    assert by_id["e1"][1]["input_tokens"] == 101


async def test_a_bad_item_refuses_the_whole_request_naming_index_field_and_rule(
    client: httpx.AsyncClient, api_settings: ApiSettings, user_key_for: UserKeyFactory
) -> None:
    key = await user_key_for("acme", tier="pro")
    bad = dict(_event(2))
    bad["input_tokens"] = -5
    no_time = {k: v for k, v in _event(3).items() if k != "occurred_at"}
    r = await client.post(EVENTS, json=[_event(0), _event(1), bad, no_time], headers=auth(key))
    body = assert_problem(r, 422, "validation_error")
    errors = {(e["index"], e["field"]) for e in body["errors"]}
    assert errors == {(2, "body.2.input_tokens"), (3, "body.3.occurred_at")}
    assert any("required" in e["message"] for e in body["errors"])
    assert "none published" in body["detail"]
    for payload, field in [
        ([], "body"),
        ("just text", "body"),
        ([1, 2], "body.0"),
        ({"hello": "world"}, "body"),
    ]:
        problem = assert_problem(await client.post(EVENTS, json=payload, headers=auth(key)), 422)
        assert problem["errors"][0]["field"] == field, (payload, problem)
    r = await client.post(EVENTS, json=[_event(i) for i in range(1001)], headers=auth(key))
    assert assert_problem(r, 422)["errors"][0]["rule"] == "max_items"
    r = await client.post(
        EVENTS, content=b"{not json", headers={**auth(key), "content-type": "application/json"}
    )
    assert_problem(r, 422)
    assert await consume(api_settings, 0) == []


async def test_a_user_key_publishes_only_for_its_own_account(
    client: httpx.AsyncClient,
    api_settings: ApiSettings,
    user_key_for: UserKeyFactory,
    admin_key: str,
) -> None:
    key = await user_key_for("acme", tier="pro")
    r = await client.post(EVENTS, json=[_event(0), _event(1, account="victim")], headers=auth(key))
    body = assert_problem(r, 403, "forbidden")
    assert body["indexes"] == [1]
    r = await client.post(
        EVENTS, params={"account_id": "victim"}, json=_event(0), headers=auth(key)
    )
    assert_problem(r, 403, "forbidden")
    # An admin may publish for any account, and name a default account for events without one.
    no_account = {k: v for k, v in _event(5).items() if k != "account_id"}
    r = await client.post(
        EVENTS,
        params={"account_id": "victim"},
        json=[_event(4, account="other"), no_account],
        headers=auth(admin_key),
    )
    assert r.status_code == 202, r.text
    records = await consume(api_settings, 2)
    assert sorted(rec.key for rec in records) == [b"other", b"victim"]
    r = await client.post(EVENTS, json=no_account, headers=auth(admin_key))
    assert assert_problem(r, 422)["errors"][0]["field"] == "body.account_id"


async def test_price_list_shows_current_versions_as_decimal_strings(
    client: httpx.AsyncClient, db: asyncpg.Pool, user_key_for: UserKeyFactory
) -> None:
    await add_test_price(db)
    from decimal import Decimal

    from processors.catalog import insert_price_version

    # A scheduled future version is not current yet.
    await insert_price_version(
        db,
        model=MODEL,
        effective_from=datetime(2999, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("99"),
        output_per_mtok=Decimal("99"),
    )
    key = await user_key_for("acme")
    r = await client.get(PRICES, headers=auth(key))
    assert r.status_code == 200, r.text
    models = {m["model"]: m for m in r.json()["models"]}
    m = models[MODEL]
    assert m == {
        "model": MODEL,
        "provider": "testprov",
        "price_version_id": m["price_version_id"],
        "effective_from": "2020-01-01T00:00:00Z",
        "input_per_mtok": "2",
        "cached_input_per_mtok": "1",
        "cache_write_per_mtok": None,
        "output_per_mtok": "8",
        "per_request": "0",
        "units": {"images": "0.04"},
    }
    assert_problem(await client.get(PRICES), 401)


async def test_a_count_means_the_same_in_an_envelope_as_in_the_event(
    client: httpx.AsyncClient, api_settings: ApiSettings, user_key_for: UserKeyFactory
) -> None:
    """ "10" is a count in the canonical event; an OpenAI or Anthropic envelope carrying it was
    refused (422) before. Both now take it, and refuse alike what the event refuses, naming
    the envelope's own field."""
    key = await user_key_for("acme", tier="pro")
    envelope = {
        "event_id": "digits-1",
        "occurred_at": "2025-03-01T12:00:01Z",
        "model": "openai/gpt-4o",
        "usage": {"prompt_tokens": "10", "completion_tokens": "4"},
    }
    anthropic = {
        "event_id": "digits-2",
        "occurred_at": "2025-03-01T12:00:01Z",
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": "7", "output_tokens": 3, "cache_read_input_tokens": "5"},
    }
    r = await client.post(
        EVENTS, json=[{**_event(0), "input_tokens": "10"}, envelope, anthropic], headers=auth(key)
    )
    assert r.status_code == 202, r.text
    by_id = {
        json.loads(rec.value)["event_id"]: json.loads(rec.value)
        for rec in await consume(api_settings, 3)
    }
    assert by_id["e0"]["input_tokens"] == 10
    assert (by_id["digits-1"]["input_tokens"], by_id["digits-1"]["output_tokens"]) == (10, 4)
    assert (by_id["digits-2"]["input_tokens"], by_id["digits-2"]["cached_input_tokens"]) == (7, 5)

    for value, rule in [
        (-1, "greater than or equal to 0"),
        (1.5, "fractional part"),
        ("1e3", "valid integer"),
        (True, "boolean"),
        ("1\u0000", "valid integer"),
        (2**63, "less than or equal to 1000000000000"),
    ]:
        bad = {**envelope, "usage": {"prompt_tokens": value, "completion_tokens": 1}}
        problem = assert_problem(await client.post(EVENTS, json=bad, headers=auth(key)), 422)
        assert [e["field"] for e in problem["errors"]] == ["body.usage.prompt_tokens"], problem
        assert rule in problem["errors"][0]["message"], (value, problem)
        as_event = {**_event(1), "input_tokens": value}
        problem = assert_problem(await client.post(EVENTS, json=as_event, headers=auth(key)), 422)
        assert [e["field"] for e in problem["errors"]] == ["body.input_tokens"], problem
        assert rule in problem["errors"][0]["message"], (value, problem)
    assert len(await consume(api_settings, 3)) == 3  # nothing refused was published
