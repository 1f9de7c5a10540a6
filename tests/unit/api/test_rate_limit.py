"""The in-process limiter answers as limits' fixed window over its memory storage did."""

from __future__ import annotations

import asyncio
import time

import pytest
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from api import rate_limit
from api.deps import make_rate_limiter, parse_limit
from api.rate_limit import MemoryFixedWindow


def test_memory_uri_gives_the_in_process_limiter() -> None:
    assert isinstance(make_rate_limiter("memory://"), MemoryFixedWindow)
    assert isinstance(make_rate_limiter("async+memory://"), MemoryFixedWindow)


@pytest.mark.parametrize("spec", ["1/second", "3/second", "5/minute", "2/hour"])
async def test_same_answers_as_limits_memory_storage(spec: str) -> None:
    item = parse_limit(spec)
    ours = MemoryFixedWindow()
    theirs = FixedWindowRateLimiter(storage_from_string("async+memory://"))
    for key in ("a", "b"):
        got = [await ours.hit(item, "key", key) for _ in range(item.amount + 3)]
        want = [await theirs.hit(item, "key", key) for _ in range(item.amount + 3)]
        assert got == want == [True] * item.amount + [False] * 3
        assert await ours.get_window_stats(item, "key", key) == await theirs.get_window_stats(
            item, "key", key
        )


async def test_a_new_window_opens_when_the_last_one_ends() -> None:
    item = parse_limit("2/second")
    limiter = MemoryFixedWindow()
    assert [await limiter.hit(item, "key", "k") for _ in range(3)] == [True, True, False]
    stats = await limiter.get_window_stats(item, "key", "k")
    assert stats.remaining == 0 and stats.reset_time <= time.time() + 1
    await asyncio.sleep(1.05)
    assert [await limiter.hit(item, "key", "k") for _ in range(3)] == [True, True, False]


async def test_expired_windows_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "SWEEP_EVERY_S", 0.0)
    item = parse_limit("5/second")
    limiter = MemoryFixedWindow()
    for n in range(100):
        await limiter.hit(item, "key", str(n))
    await asyncio.sleep(1.05)
    await limiter.hit(item, "key", "new")
    assert list(limiter._windows) == [item.key_for("key", "new")]


async def test_the_windows_stay_bounded_whatever_the_number_of_addresses() -> None:
    """One window per client address: a client may come from any number of them."""
    item = parse_limit("5/minute")
    limiter = MemoryFixedWindow(max_keys=100)
    for n in range(10_000):
        assert await limiter.hit(item, "lookup", f"10.0.{n // 256}.{n % 256}")
        assert len(limiter._windows) <= 100
    # The newest windows are kept, counts and all.
    for _ in range(4):
        assert await limiter.hit(item, "lookup", "10.0.39.15")
    assert not await limiter.hit(item, "lookup", "10.0.39.15")
