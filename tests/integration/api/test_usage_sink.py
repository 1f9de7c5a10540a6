"""The proxy plug-in's usage sink over HTTP ingest (no Kafka configured) against the real API:
an event the API refuses is dropped alone, not with the valid events of its batch, and a key
the API refuses keeps the usage in the spool until the key is fixed — never lost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.settings import ApiSettings
from producers.client import MeterlineClient
from producers.integrations.sink import UsageSink
from producers.integrations.spool import Spool
from schemas.event import UsageEvent
from tests.integration.api.conftest import UserKeyFactory
from tests.integration.api_server import ApiServer
from tests.integration.tcp_proxy import free_port
from tests.integration.worker import consume_to_end


@pytest.fixture
async def strict_api(api_settings: ApiSettings) -> AsyncIterator[ApiServer]:
    """The real API accepting no occurred_at ahead of its clock (the plug-in allows 5 min)."""
    server = await ApiServer(api_settings, METERLINE_MAX_CLOCK_SKEW_SECONDS="0").start()
    try:
        yield server
    finally:
        server.stop()


def _event(n: int, account: str = "acme", ahead_s: float = 0) -> UsageEvent:
    return UsageEvent(
        event_id=f"sink-{n}",
        source="litellm",
        account_id=account,
        occurred_at=datetime.now(UTC) + timedelta(seconds=ahead_s),
        model="openai/gpt-4o-mini",
        input_tokens=10,
    )


def _tear(path: Path, text: bytes) -> None:
    """Append text without its end of line, as a process killed mid-append leaves it."""
    with open(path, "ab") as f:
        f.write(text)


def _sink(server: ApiServer, key: str, spool: Spool) -> tuple[UsageSink, MeterlineClient]:
    client = MeterlineClient(server.url, key, retries=0)
    return UsageSink(client=client, kafka_bootstrap="", topic="unused", spool=spool), client


async def test_one_refused_event_does_not_drop_the_rest_of_its_batch(
    strict_api: ApiServer, admin_key: str, api_settings: ApiSettings, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.jsonl", 1 << 20)
    waiting = [_event(1), _event(2, ahead_s=120), _event(3)]  # 2: ahead of the API's clock
    spool.append([e.model_dump(mode="json", exclude_none=True) for e in waiting])
    sink, client = _sink(strict_api, admin_key, spool)
    try:
        sent = await sink.drain()
    finally:
        await client.aclose()
    # drain() said 3 published: the refused one was counted as published.
    assert (sent.published, sent.refused, sent.spooled) == (2, 1, 0)
    # and it is kept, with the API's reason, for an operator (no Kafka here for usage.dlq)
    [kept] = [json.loads(line) for line in spool.rejected.read_text().splitlines()]
    assert kept["record"]["event_id"] == "sink-2" and "occurred_at" in kept["message"]
    # Before, the 422 naming event 2 dropped all three: nothing reached the topic.
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 2)
    assert sorted(UsageEvent.model_validate_json(r.value).event_id for r in records) == [
        "sink-1",
        "sink-3",
    ]
    assert not spool.pending()


async def test_usage_a_key_may_not_publish_waits_in_the_spool(
    strict_api: ApiServer, user_key_for: UserKeyFactory, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.jsonl", 1 << 20)
    key = await user_key_for("acme")  # a user key: it may not publish bob's usage (403)
    sink, client = _sink(strict_api, key, spool)
    try:
        sent = await sink.send(_event(1, account="bob"))  # was "published": dropped
        assert (sent.published, sent.refused, sent.spooled) == (0, 0, 1)
    finally:
        await client.aclose()
    assert [e["event_id"] for e in spool.take()] == ["sink-1"]


async def test_an_event_the_api_refuses_is_counted_refused_by_send(
    strict_api: ApiServer, admin_key: str, api_settings: ApiSettings, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.jsonl", 1 << 20)
    sink, client = _sink(strict_api, admin_key, spool)
    try:
        ahead = await sink.send(_event(1, ahead_s=120))  # 422 from the API: not retried
        taken = await sink.send(_event(2))
    finally:
        await client.aclose()
    assert (ahead.published, ahead.refused, ahead.spooled) == (0, 1, 0)  # was True: "published"
    assert (taken.published, taken.refused, taken.spooled) == (1, 0, 0)
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 1)
    assert [UsageEvent.model_validate_json(r.value).event_id for r in records] == ["sink-2"]


async def test_drain_over_kafka_counts_published_refused_and_spooled(
    api_settings: ApiSettings, tmp_path: Path
) -> None:
    """Over Kafka: what the broker acknowledged is published; a spooled line that is no longer
    a valid event is refused (before, it failed every drain: the spool never emptied);
    with the broker unreachable, everything stays spooled and is counted so."""
    spool = Spool(tmp_path / "spool.jsonl", 1 << 20)
    good = [_event(n).model_dump(mode="json", exclude_none=True) for n in (1, 2, 3)]
    spool.append([good[0], {**good[1], "input_tokens": -1}, good[1], good[2]])

    down = UsageSink(
        client=None,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        topic=api_settings.topic_usage_events,
        spool=spool,
    )
    sent = await down.drain()
    await down.close()
    assert (sent.published, sent.refused, sent.spooled) == (0, 1, 3)
    [kept] = [json.loads(line) for line in spool.rejected.read_text().splitlines()]
    assert kept["record"]["input_tokens"] == -1 and "input_tokens" in kept["message"]
    assert [e["event_id"] for e in spool.take()] == ["sink-1", "sink-2", "sink-3"]
    spool.done(good)  # put them back as they were

    up = UsageSink(
        client=None,
        kafka_bootstrap=api_settings.kafka_bootstrap,
        topic=api_settings.topic_usage_events,
        spool=spool,
    )
    try:
        sent = await up.drain()
    finally:
        await up.close()
    assert (sent.published, sent.refused, sent.spooled) == (3, 0, 0)
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 3)
    assert sorted(UsageEvent.model_validate_json(r.value).event_id for r in records) == [
        "sink-1",
        "sink-2",
        "sink-3",
    ]
    assert not spool.pending()


async def test_a_torn_spool_line_is_refused_and_the_events_around_it_published(
    api_settings: ApiSettings, tmp_path: Path
) -> None:
    """A proxy killed mid-append leaves a line that is not JSON: every drain failed on it and
    the spool never emptied (in fail-open mode, calls were refused 503 once it was full)."""
    spool = Spool(tmp_path / "spool.jsonl", 1 << 20)
    spool.append([_event(1).model_dump(mode="json", exclude_none=True)])
    _tear(spool.path, b'{"event_id": "sink-2", "acc')
    spool.append([_event(3).model_dump(mode="json", exclude_none=True)])
    sink = UsageSink(
        client=None,
        kafka_bootstrap=api_settings.kafka_bootstrap,
        topic=api_settings.topic_usage_events,
        dlq_topic=api_settings.topic_usage_dlq,
        spool=spool,
    )
    try:
        sent = await sink.drain()
    finally:
        await sink.close()
    assert (sent.published, sent.refused, sent.spooled) == (2, 1, 0)
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 2)
    assert sorted(UsageEvent.model_validate_json(r.value).event_id for r in records) == [
        "sink-1",
        "sink-3",
    ]
    [letter] = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_dlq, 1)
    assert json.loads(letter.value) == '{"event_id": "sink-2", "acc'
    assert dict(letter.headers)["meterline.reason"] == b"invalid_event"
    assert not spool.pending()
