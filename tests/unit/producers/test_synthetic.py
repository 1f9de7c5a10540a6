"""The synthetic generator: deterministic per seed, realistic and always valid."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from producers.publisher import paced
from producers.synthetic import DEFAULT_MODELS, synthetic_events

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def test_same_seed_same_events_other_seed_other_ids() -> None:
    a = list(synthetic_events(300, 10, seed=5, now=NOW))
    assert a == list(synthetic_events(300, 10, seed=5, now=NOW))
    b = list(synthetic_events(300, 10, seed=6, now=NOW))
    assert not {e.event_id for e in a} & {e.event_id for e in b}


def test_shape_of_the_traffic() -> None:
    events = list(synthetic_events(2000, 40, seed=1, now=NOW, byok_fraction=0.25))
    assert len({e.event_id for e in events}) == 2000
    assert {e.account_id for e in events} <= {f"acct-{i:05d}" for i in range(40)}
    assert len({e.account_id for e in events}) > 20
    assert {e.model for e in events} == set(DEFAULT_MODELS)
    assert all(NOW - timedelta(minutes=5) <= e.occurred_at <= NOW for e in events)
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
    assert sum(e.cached_input_tokens > 0 for e in events) > 100
    assert sum(e.reasoning_tokens > 0 for e in events) > 50
    assert sum(e.cache_write_tokens > 0 for e in events) > 10
    assert all(e.cache_write_tokens == 0 for e in events if not e.model.startswith("anthropic/"))
    assert 0.18 < sum(e.byok for e in events) / 2000 < 0.32
    assert all(e.reasoning_tokens <= e.output_tokens for e in events)


def test_no_byok_unless_asked() -> None:
    assert not any(e.byok for e in synthetic_events(500, 5, seed=2, now=NOW))


async def test_paced_keeps_to_the_rate() -> None:
    events = list(synthetic_events(21, 2, seed=3, now=NOW))
    started = time.monotonic()
    got = [e async for e in paced(events, rate=100.0)]
    elapsed = time.monotonic() - started
    assert got == events
    assert elapsed >= 0.19  # 20 gaps of 10 ms
    started = time.monotonic()
    assert len([e async for e in paced(events, rate=None)]) == 21
    assert time.monotonic() - started < 0.1
    await asyncio.sleep(0)
