"""The metering pipeline end to end: real broker, real database, the real `meterline worker`."""

from __future__ import annotations

import asyncio
import json
import os
from itertools import zip_longest

import asyncpg
import pytest

from schemas import topics
from schemas.settings import CommonSettings
from tests.integration.ledger_helpers import allocate, ledger_matches_balances
from tests.integration.reconcile_helpers import run_reconcile, window
from tests.integration.worker import (
    Worker,
    add_test_price,
    consume_all,
    end_offsets,
    event,
    meter_with_worker,
    publish_raw,
    publish_usage,
    wait_for,
    wait_until_consumed,
)

PENDING_ALERTS = "SELECT count(*) FROM alert_outbox WHERE published_at IS NULL"


async def test_events_become_exact_debits(test_settings: CommonSettings, db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
        await allocate(conn, "alice", 10_000_000, "g", reason="grant")
    events = [
        # 1000 in × 2/M + 500 out × 8/M = 0.002 + 0.004 = 0.006
        event("a1", "alice", input_tokens=1000, output_tokens=500),
        # 2000 cached × 1/M + 1000 cache write × 3/M + 100 out (40 reasoning) × 8/M
        # = 0.002 + 0.003 + 0.0008 = 0.0058
        event(
            "a2",
            "alice",
            cached_input_tokens=2000,
            cache_write_tokens=1000,
            output_tokens=100,
            reasoning_tokens=40,
        ),
        # byok: 5 % of (1M in × 2/M) = 0.1
        event("b1", "bob", input_tokens=1_000_000, byok=True),
        # 333 in × 2/M = 0.000666; 1 out × 8/M = 0.000008 → 0.000674
        event("c1", "carol", input_tokens=333, output_tokens=1, source="proxy-2"),
    ]
    await meter_with_worker(test_settings, db, events, usage_rows=4)
    balances = dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits"))
    assert balances == {"alice": 10_000_000 - 6_000 - 5_800, "bob": -100_000, "carol": -674}
    rows = await db.fetch(
        "SELECT event_id, amount_micros, balance_after_micros"
        " FROM credit_transactions WHERE account_id = 'alice' ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (None, 10_000_000, 10_000_000),
        ("a1", -6_000, 9_994_000),
        ("a2", -5_800, 9_988_200),
    ]
    tiers = dict(await db.fetch("SELECT account_id, tier FROM user_credits"))
    assert tiers["bob"] == "free"  # unknown accounts are created with the default tier
    await ledger_matches_balances(db)


async def test_every_event_published_three_times_is_debited_once(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    events = [event(f"e{i}", f"acct-{i % 7}", input_tokens=1000 + i) for i in range(300)]
    expected_total = sum(round((1000 + i) * 2) for i in range(300))  # micros: tokens × 2/M × 1e6
    await publish_usage(test_settings, events)
    worker = Worker(test_settings).start()
    try:
        for _ in range(2):
            await publish_usage(test_settings, events)
        await wait_for(
            db, "SELECT coalesce(sum(times_seen), 0) FROM duplicate_events", 600, worker=worker
        )
    finally:
        worker.stop()
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == 300
    assert await db.fetchval("SELECT -sum(balance_micros) FROM user_credits") == expected_total
    await ledger_matches_balances(db)
    assert os.listdir(worker.cwd) == []  # no Faust data directory left where it was started


async def test_bad_records_go_to_the_dlq_with_their_reason_and_good_ones_are_debited(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    good = [event(f"g{i}", "acct", input_tokens=500_000) for i in range(6)]  # 1.0 each
    bad = {
        b"this is not json": "invalid_json",
        b"": "invalid_json",
        json.dumps(event("w1", "acct", input_tokens="many")).encode(): "invalid_event",
        json.dumps(event("n1", "acct", input_tokens=-5)).encode(): "invalid_event",
        json.dumps(
            event("r1", "acct", output_tokens=10, reasoning_tokens=11)
        ).encode(): "invalid_event",
        json.dumps(
            {k: v for k, v in event("m1", "x").items() if k != "account_id"}
        ).encode(): "invalid_event",
        json.dumps(event("o1", "acct", metadata={"blob": "x" * 70_000})).encode(): "oversized",
        json.dumps(event("u1", "acct", model="nobody/unknown-model")).encode(): "unpriced",
    }
    # Good and bad records interleaved, the empty record last.
    pairs = zip_longest([json.dumps(g).encode() for g in good], [v for v in bad if v])
    records: list[tuple[bytes | None, bytes]] = [
        (b"acct", v) for pair in pairs for v in pair if v is not None
    ]
    records.append((b"acct", b""))
    worker = Worker(test_settings).start()
    try:
        await publish_raw(test_settings.kafka_bootstrap, test_settings.topic_usage_events, records)
        dead = await consume_all(
            test_settings.kafka_bootstrap, test_settings.topic_usage_dlq, expected=len(bad)
        )
        await wait_for(db, "SELECT count(*) FROM credit_transactions", 6, worker=worker)
    finally:
        worker.stop()
    assert len(dead) == len(bad)  # the dict below would hide a record dead-lettered twice
    got = {}
    for r in dead:
        headers = dict(r.headers)
        got[r.value] = headers[topics.DLQ_HEADER_REASON].decode()
        assert headers[topics.DLQ_HEADER_TOPIC].decode() == test_settings.topic_usage_events
        assert int(headers[topics.DLQ_HEADER_OFFSET]) >= 0
        assert headers[topics.DLQ_HEADER_MESSAGE]
    assert got == bad
    reasons = {dict(r.headers)[topics.DLQ_HEADER_MESSAGE].decode() for r in dead}
    assert any("reasoning_tokens" in m for m in reasons)
    assert any("input_tokens" in m for m in reasons)
    assert any("nobody/unknown-model" in m for m in reasons)
    assert await db.fetchval("SELECT balance_micros FROM user_credits") == -6_000_000


@pytest.mark.parametrize("batches", ["one batch", "two batches"])
async def test_a_key_debited_for_another_account_goes_to_the_dlq_not_to_duplicates(
    test_settings: CommonSettings, db: asyncpg.Pool, batches: str
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
    # Both customers leave source at "default" and number their events 1, 2, 3.
    alice = event("1", "alice", input_tokens=500_000)  # 1.0
    bob = event("1", "bob", input_tokens=1_500_000)  # 3.0, never debited: alice holds the key
    after = [alice, event("2", "bob", input_tokens=250_000)]  # a redelivery, a valid event
    # One Kafka key: one partition, so the records keep this order.
    raw = [(b"same", json.dumps(e).encode()) for e in (alice, bob, *after)]
    bootstrap, topic = test_settings.kafka_bootstrap, test_settings.topic_usage_events
    worker = Worker(test_settings)
    try:
        if batches == "one batch":
            await publish_raw(bootstrap, topic, raw)  # before the worker starts: one fetch
            worker.start()
        else:
            worker.start()
            await publish_raw(bootstrap, topic, raw[:1])
            await wait_for(db, "SELECT count(*) FROM credit_transactions", 1, worker=worker)
            await publish_raw(bootstrap, topic, raw[1:])
        dead = await consume_all(bootstrap, test_settings.topic_usage_dlq, expected=1)
        await wait_for(db, "SELECT count(*) FROM credit_transactions", 2, worker=worker)
    finally:
        worker.stop()
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers[topics.DLQ_HEADER_REASON] == b"conflicting_event"
    assert json.loads(dead[0].value) == bob
    message = headers[topics.DLQ_HEADER_MESSAGE].decode()
    assert "source 'default', event_id '1'" in message
    assert "already used by another account" in message
    assert "alice" not in message  # another customer's id is not told
    rows = await db.fetch(
        "SELECT account_id, event_id, amount_micros FROM credit_transactions ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [("alice", "1", -1_000_000), ("bob", "2", -500_000)]
    balances = dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits"))
    assert balances["alice"] == -1_000_000 and balances["bob"] == -500_000
    # Only alice's redelivery is a duplicate; bob's record is accounted in the DLQ.
    assert await db.fetchval("SELECT sum(times_seen) FROM duplicate_events") == 1
    await ledger_matches_balances(db)


@pytest.mark.parametrize("batches", ["one batch", "one record at a time"])
async def test_an_unpriced_copy_of_a_key_holds_it_for_no_account(
    test_settings: CommonSettings, db: asyncpg.Pool, batches: str
) -> None:
    """A duplicate matches an event debited before or earlier in the batch, account and all.
    An unpriced record is debited by no one: another account's later copy of its key is
    debited (not dead-lettered as conflicting), in one batch as one record at a time."""
    async with db.acquire() as conn:
        await add_test_price(conn)  # test/model prices no unit
    alice = event("1", "alice", input_tokens=10, units={"images": 1})  # unpriced: no images price
    bob = event("1", "bob", input_tokens=1_500_000)  # 3.0
    carol = event("1", "carol", input_tokens=500_000)  # bob holds the key: conflicting
    records = [alice, bob, bob, carol]  # bob's second record is a redelivery
    raw = [(b"same", json.dumps(e).encode()) for e in records]  # one partition: in this order
    bootstrap, topic = test_settings.kafka_bootstrap, test_settings.topic_usage_events
    worker = Worker(test_settings)
    try:
        if batches == "one batch":
            await publish_raw(bootstrap, topic, raw)  # before the worker starts: one fetch
            worker.start()
        else:
            worker.start()
            for record in raw:
                await publish_raw(bootstrap, topic, [record])
                await wait_until_consumed(test_settings, worker)
        dead = await consume_all(bootstrap, test_settings.topic_usage_dlq, expected=2)
        await wait_until_consumed(test_settings, worker)
    finally:
        worker.stop()
    reasons = [(json.loads(r.value), dict(r.headers)[topics.DLQ_HEADER_REASON]) for r in dead]
    assert reasons == [(alice, b"unpriced"), (carol, b"conflicting_event")]
    assert "'images'" in dict(dead[0].headers)[topics.DLQ_HEADER_MESSAGE].decode()
    rows = await db.fetch(
        "SELECT account_id, event_id, amount_micros FROM credit_transactions ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [("bob", "1", -3_000_000)]
    # (Alone, carol's record creates her account, empty, before the key is found taken.)
    balances = await db.fetch("SELECT account_id, balance_micros FROM user_credits")
    assert {a: b for a, b in balances if b} == {"bob": -3_000_000}
    assert await db.fetchval("SELECT sum(times_seen) FROM duplicate_events") == 1
    await ledger_matches_balances(db)
    # Reconcile agrees: bob's debit is no finding, alice's record is unpriced, carol's apart.
    found = await run_reconcile(test_settings, *window())
    assert found.clean, found.findings
    assert found.conflicting == [("default", "1", "carol")]
    assert (found.in_range, found.distinct, found.duplicates, found.unpriced) == (4, 3, 1, 1)


@pytest.mark.parametrize("disruption", ["sigkill", "sigterm", "rebalance"])
async def test_disruption_mid_stream_loses_nothing_and_debits_nothing_twice(
    test_settings: CommonSettings, db: asyncpg.Pool, disruption: str
) -> None:
    """20,000 events; mid-stream the worker is killed (SIGKILL), stopped (SIGTERM) and
    restarted, or joined by a second worker (a rebalance): every event debited exactly once."""
    async with db.acquire() as conn:
        await add_test_price(conn)
    n, accounts = 20_000, 50
    events = [event(f"k{i}", f"acct-{i % accounts}", input_tokens=1 + i % 1000) for i in range(n)]
    expected = {
        f"acct-{a}": -sum(2 * (1 + i % 1000) for i in range(a, n, accounts))
        for a in range(accounts)
    }
    worker = Worker(test_settings, METERLINE_BATCH_MAX="500").start()
    await publish_usage(test_settings, events)
    # Disrupt it once part of the stream is debited, mid-flight.
    deadline = asyncio.get_running_loop().time() + 90
    while await db.fetchval("SELECT count(*) FROM credit_transactions") < n // 4:
        assert asyncio.get_running_loop().time() < deadline, worker.log()
        await asyncio.sleep(0.05)
    if disruption == "sigkill":
        worker.kill()
    elif disruption == "sigterm":
        worker.stop()
    debited_at = await db.fetchval("SELECT count(*) FROM credit_transactions")
    assert debited_at < n, "the worker finished before it could be disrupted"
    second = Worker(test_settings, group=worker.group, METERLINE_BATCH_MAX="500").start()
    try:
        await wait_for(
            db, "SELECT count(*) FROM credit_transactions", n, timeout=180, worker=second
        )
        # Let it drain whatever was redelivered after the disruption: every record committed.
        await wait_until_consumed(test_settings, second)
    finally:
        second.stop()
        worker.stop()
    assert await db.fetchval("SELECT count(*) FROM credit_transactions") == n
    assert await db.fetchval("SELECT count(DISTINCT event_id) FROM credit_transactions") == n
    assert dict(await db.fetch("SELECT account_id, balance_micros FROM user_credits")) == expected
    await ledger_matches_balances(db)


async def test_alerts_reach_credit_alerts_once(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        await add_test_price(conn)
        await allocate(conn, "dave", 2_000_000, reason=None)
    # free tier cap is 5.0: spend 3.0 (60 %) then 3.0 more (120 %, overdrawn)
    events = [
        event("d1", "dave", input_tokens=1_500_000),
        event("d2", "dave", input_tokens=1_500_000),
    ]
    worker = Worker(test_settings).start()
    try:
        await publish_usage(test_settings, events)
        alerts = await consume_all(
            test_settings.kafka_bootstrap, test_settings.topic_credit_alerts, expected=5
        )
        await wait_for(db, PENDING_ALERTS, 0, worker=worker)
    finally:
        worker.stop()
    # Once: the outbox is drained and the topic holds those five records, no more.
    ends = await end_offsets(test_settings.kafka_bootstrap, test_settings.topic_credit_alerts)
    assert sum(ends.values()) == len(alerts) == 5
    payloads = [json.loads(r.value) for r in alerts]
    assert {r.key for r in alerts} == {b"dave"}
    kinds = sorted((p["kind"], p.get("threshold_pct")) for p in payloads)
    assert kinds == sorted(
        [
            ("cap_threshold", 50),
            ("low_balance", None),
            ("cap_threshold", 80),
            ("cap_threshold", 100),
            ("blocked", None),
        ]
    )
    blocked = next(p for p in payloads if p["kind"] == "blocked")
    assert blocked["balance"] == "-4.000000" and blocked["monthly_cap"] == "5.000000"
