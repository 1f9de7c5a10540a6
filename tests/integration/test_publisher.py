"""UsagePublisher and `meterline produce` against the real broker: keys, partitions, order,
exact values, bad lines reported and skipped, failures surfaced."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import ConsumerRecord

from producers.publisher import PublishError, UsagePublisher
from schemas.event import UsageEvent
from tests.integration.conftest import TopicFactory, env_for
from tests.integration.worker import consume_to_end


async def consume(
    bootstrap: str, topic: str, expected: int, wait_s: float = 30.0
) -> list[ConsumerRecord]:  # type: ignore[type-arg]
    """Every record of the topic: `expected` of them, and any duplicate beyond them."""
    return await consume_to_end(bootstrap, topic, expected, timeout=wait_s)


def make_events(accounts: int, per_account: int) -> list[UsageEvent]:
    t0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
    events = []
    # Interleave accounts, as real traffic does.
    for i in range(per_account):
        for a in range(accounts):
            events.append(
                UsageEvent(
                    event_id=f"evt-{a}-{i}",
                    source="it",
                    account_id=f"acct-{a:05d}",
                    occurred_at=t0 + timedelta(seconds=i),
                    model="openai/gpt-4o-mini",
                    input_tokens=100 + i,
                    cached_input_tokens=i,
                    output_tokens=10 + a,
                    reasoning_tokens=a % 3,
                    units={"web_search": a % 2},
                    reported_cost="0.000123",
                    metadata={"request_id": f"r-{a}-{i}"},
                )
            )
    return events


async def test_each_account_lands_in_one_partition_in_publish_order(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("usage.events", partitions=6)
    events = make_events(accounts=12, per_account=25)
    async with UsagePublisher(kafka_bootstrap, topic, linger_ms=20) as pub:
        first = await pub.publish(events[0])
        result = await pub.publish_many(events[1:])
    assert result.ok and result.published == len(events) - 1
    assert first.offset >= 0

    records = await consume(kafka_bootstrap, topic, expected=len(events))
    assert len(records) == len(events)
    by_account: dict[str, list[ConsumerRecord]] = defaultdict(list)  # type: ignore[type-arg]
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_account[r.key.decode()].append(r)
    assert len(by_account) == 12
    assert len({rs[0].partition for rs in by_account.values()}) > 1  # keys do spread
    sent = defaultdict(list)
    for e in events:
        sent[e.account_id].append(e)
    for account, recs in by_account.items():
        assert {r.partition for r in recs} == {recs[0].partition}, account
        got = [UsageEvent.model_validate_json(r.value) for r in recs]
        assert got == sent[account]  # same events, same order
        assert all(r.key == account.encode() for r in recs)


async def test_delivery_failures_are_returned_not_dropped(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("usage.events", partitions=1)
    small, big = make_events(1, 2)
    big = big.model_copy(update={"metadata": {"pad": "x" * 3000}})
    # A producer whose request limit the padded event exceeds: the broker never sees it.
    async with UsagePublisher(kafka_bootstrap, topic, max_request_size=2000) as pub:
        result = await pub.publish_many([small, big])
        assert result.published == 1
        assert [f.event.event_id for f in result.failed] == [big.event_id]
        try:
            await pub.publish(big)
        except PublishError as exc:
            assert exc.failures[0].event == big
        else:
            raise AssertionError("publish() of an undeliverable event did not raise")
    records = await consume(kafka_bootstrap, topic, expected=1, wait_s=10)
    assert [r.value for r in records] == [small.to_kafka()[1]]


async def test_unreachable_kafka_is_a_publish_error() -> None:
    pub = UsagePublisher("127.0.0.1:1", "usage.events", request_timeout_ms=2000)
    try:
        await pub.start()
    except PublishError as exc:
        assert "cannot reach Kafka at 127.0.0.1:1" in str(exc)
    else:
        await pub.close()
        raise AssertionError("start() against a closed port did not fail")


async def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meterline",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_produce_synthetic_publishes_every_event(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("usage.events", partitions=4)
    code, out, err = await run_cli(
        "produce", "--synthetic", "500", "--accounts", "20", "--seed", "11",
        "--bootstrap", kafka_bootstrap, "--topic", topic,
    )  # fmt: skip
    assert code == 0, err
    assert "published 500, bad 0, failed 0" in out
    records = await consume(kafka_bootstrap, topic, expected=500)
    assert len(records) == 500
    events = [UsageEvent.model_validate_json(r.value) for r in records]
    assert len({e.event_id for e in events}) == 500
    assert {e.account_id for e in events} <= {f"acct-{i:05d}" for i in range(20)}
    assert all(r.key == e.account_id.encode() for r, e in zip(records, events, strict=True))


async def test_produce_synthetic_spreads_occurred_at_over_window_days(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory("usage.events", partitions=1)
    started = datetime.now(UTC)
    code, out, err = await run_cli(
        "produce", "--synthetic", "300", "--accounts", "3", "--seed", "5", "--window-days", "14",
        "--bootstrap", kafka_bootstrap, "--topic", topic,
    )  # fmt: skip
    assert code == 0, err
    events = [
        UsageEvent.model_validate_json(r.value)
        for r in await consume(kafka_bootstrap, topic, expected=300)
    ]
    times = [e.occurred_at for e in events]
    assert min(times) >= started - timedelta(days=14) and max(times) <= datetime.now(UTC)
    assert len({t.date() for t in times}) >= 14  # every day of the window has usage
    assert max(times) - min(times) > timedelta(days=13)


async def test_produce_file_reports_the_bad_line_and_publishes_the_good(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    from schemas.settings import CommonSettings

    topic = await topic_factory("usage.events", partitions=2)
    good_event = {"event_id": "f-1", "account_id": "acct-1", "occurred_at": "2025-03-01T12:00:00Z",
                  "model": "openai/gpt-4o"}  # fmt: skip
    openai_line = {
        "account_id": "acct-2",
        "response": {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1741569952,
            "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5,
                      "prompt_tokens_details": {"cached_tokens": 20}},
        },
    }  # fmt: skip
    bad = {**good_event, "event_id": "f-bad", "output_tokens": 1, "reasoning_tokens": 3}
    lines = [json.dumps(good_event), json.dumps(openai_line), json.dumps(bad), ""]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_usage_events=topic)
    code, out, err = await run_cli("produce", str(path), env=env_for(settings))
    assert code != 0
    assert "line 3: reasoning_tokens:" in err
    assert "published 2, bad 1, failed 0" in out

    records = await consume(kafka_bootstrap, topic, expected=2)
    got = sorted(
        (UsageEvent.model_validate_json(r.value) for r in records), key=lambda e: e.event_id
    )
    assert [e.event_id for e in got] == ["chatcmpl-1", "f-1"]
    assert (got[0].input_tokens, got[0].cached_input_tokens, got[0].output_tokens) == (30, 20, 5)


async def test_produce_from_stdin(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = await topic_factory("usage.events", partitions=1)
    line = json.dumps(
        {"event_id": "s-1", "account_id": "acct-9", "occurred_at": "2025-03-01T12:00:00Z",
         "model": "m", "input_tokens": 7}
    )  # fmt: skip
    code, out, err = await run_cli(
        "produce",
        "-",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic,
        stdin=(line + "\n").encode(),
    )
    assert code == 0, err
    records = await consume(kafka_bootstrap, topic, expected=1)
    assert [(r.key, json.loads(r.value)["input_tokens"]) for r in records] == [(b"acct-9", 7)]


async def test_keeper_replaces_only_the_publisher_that_failed(kafka_bootstrap: str) -> None:
    # After a failed publish the API hands its publisher back; a fresh one connects by itself,
    # and a late report about a publisher already replaced changes nothing.
    from producers.keeper import PublisherKeeper

    keeper = PublisherKeeper(
        lambda: UsagePublisher(kafka_bootstrap, "usage.events"), min_backoff=0.05
    )
    await keeper.start(wait=10)
    try:
        first = keeper.current
        assert first is not None
        await keeper.recycle(first, "test: publish failed")
        assert keeper.current is None or keeper.current is not first
        async with asyncio.timeout(20):
            second = await keeper.wait_connected()
        assert second is not None and second is not first
        await keeper.recycle(first, "test: a late failure on the old publisher")
        assert keeper.current is second and keeper.last_error is None
    finally:
        await keeper.close()
