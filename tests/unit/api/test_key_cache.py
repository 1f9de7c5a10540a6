"""The in-process cache of verified API keys: TTL, background re-checks, forgetting, bounds."""

from __future__ import annotations

import asyncio

import pytest

from api import key_cache
from api.key_cache import KeyCache
from processors.api_keys import Principal

ALICE = Principal(key_id="a" * 16, scope="user", account_id="alice", tier="free")
BOB = Principal(key_id="b" * 16, scope="user", account_id="bob", tier="pro")
AT_3_4 = (0.75, 0.75)  # every entry re-checked at 3/4 of its TTL


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(key_cache.time, "monotonic", lambda: now[0])
    return now


def test_an_entry_lives_for_the_ttl_then_is_gone(clock: list[float]) -> None:
    cache = KeyCache(ttl_s=5)
    cache.put(b"h-alice", ALICE)
    clock[0] += 4.9
    assert cache.get(b"h-alice") is ALICE
    clock[0] += 0.1
    assert cache.get(b"h-alice") is None


def test_a_ttl_of_zero_keeps_nothing(clock: list[float]) -> None:
    cache = KeyCache(ttl_s=0)
    cache.put(b"h-alice", ALICE)
    assert cache.get(b"h-alice") is None


def test_forget_key_and_account_and_clear(clock: list[float]) -> None:
    cache = KeyCache(ttl_s=5)
    cache.put(b"h-alice", ALICE)
    cache.put(b"h-bob", BOB)
    cache.forget_key(ALICE.key_id)
    assert cache.get(b"h-alice") is None and cache.get(b"h-bob") is BOB
    cache.put(b"h-alice", ALICE)
    cache.forget_account("bob")
    assert cache.get(b"h-bob") is None and cache.get(b"h-alice") is ALICE
    cache.clear()
    assert cache.get(b"h-alice") is None


def test_the_cache_stays_bounded(clock: list[float]) -> None:
    cache = KeyCache(ttl_s=5, max_entries=10)
    for i in range(100):
        cache.put(f"h{i}".encode(), ALICE)
        clock[0] += 0.01
    assert len(cache._entries) <= 10
    assert cache.get(b"h99") is ALICE  # the newest survive


def test_a_refused_key_is_remembered_for_the_ttl_and_the_record_stays_bounded(
    clock: list[float],
) -> None:
    cache = KeyCache(ttl_s=5, max_entries=10)
    assert not cache.refused(b"h-revoked")
    cache.refuse(b"h-revoked")
    clock[0] += 4.9
    assert cache.refused(b"h-revoked")
    clock[0] += 0.1
    assert not cache.refused(b"h-revoked")  # looked up again after the TTL
    for i in range(100):
        cache.refuse(f"r{i}".encode())
    assert len(cache._refused) <= 10 and cache.refused(b"r99")
    cache.clear()
    assert not cache.refused(b"r99")
    off = KeyCache(ttl_s=0)
    off.refuse(b"h-revoked")
    assert not off.refused(b"h-revoked")


def test_keys_cached_together_are_rechecked_at_spread_moments(clock: list[float]) -> None:
    cache = KeyCache(ttl_s=4)
    low, high = key_cache.REFRESH_WINDOW
    for i in range(200):
        cache.put(f"h{i}".encode(), ALICE)
    moments = sorted(refresh_at - clock[0] for refresh_at, _, _ in cache._entries.values())
    assert low * 4 <= moments[0] and moments[-1] <= high * 4
    # Spread over the window, not in step (all 200 at one moment): ~6 per 50 ms on average.
    assert moments[-1] - moments[0] > (high - low) * 4 * 0.8
    assert max(sum(1 for m in moments if t <= m < t + 0.05) for t in moments) <= 25


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_key_in_use_is_rechecked_in_the_background_before_it_runs_out(
    clock: list[float],
) -> None:
    cache = KeyCache(ttl_s=4, refresh_window=AT_3_4)
    cache.put(b"h-alice", ALICE)
    lookups: list[str] = []

    async def still_good() -> Principal:
        lookups.append("alice")
        return ALICE

    clock[0] += 2.9  # before 3/4 of the TTL: no re-check
    cache.refresh_due(b"h-alice", still_good)
    await _settle()
    assert lookups == []
    clock[0] += 0.2
    cache.refresh_due(b"h-alice", still_good)
    cache.refresh_due(b"h-alice", still_good)  # one re-check at a time
    await _settle()
    assert lookups == ["alice"]
    clock[0] += 3.9  # 7 s after the first check, 3.9 s after the re-check: still trusted
    assert cache.get(b"h-alice") is ALICE
    clock[0] += 0.1
    assert cache.get(b"h-alice") is None


async def test_a_recheck_that_finds_the_key_revoked_drops_it_before_the_ttl(
    clock: list[float],
) -> None:
    cache = KeyCache(ttl_s=4, refresh_window=AT_3_4)
    cache.put(b"h-alice", ALICE)

    async def revoked() -> None:
        return None

    clock[0] += 3.5
    cache.refresh_due(b"h-alice", revoked)
    await _settle()
    assert cache.get(b"h-alice") is None


async def test_a_failed_recheck_leaves_the_entry_to_its_ttl_and_may_be_retried(
    clock: list[float],
) -> None:
    cache = KeyCache(ttl_s=4, refresh_window=AT_3_4)
    cache.put(b"h-alice", ALICE)
    calls = 0

    async def database_away() -> Principal:
        nonlocal calls
        calls += 1
        raise OSError("connection refused")

    clock[0] += 3.5
    cache.refresh_due(b"h-alice", database_away)
    await _settle()
    assert cache.get(b"h-alice") is ALICE
    cache.refresh_due(b"h-alice", database_away)
    await _settle()
    assert calls == 2
    clock[0] += 0.5
    assert cache.get(b"h-alice") is None


async def test_a_lookup_begun_before_a_forget_does_not_put_the_key_back(
    clock: list[float],
) -> None:
    cache = KeyCache(ttl_s=4, refresh_window=AT_3_4)
    cache.put(b"h-alice", ALICE)
    gate = asyncio.Event()

    async def slow_lookup() -> Principal:
        await gate.wait()
        return ALICE  # read before the revocation below

    clock[0] += 3.5
    cache.refresh_due(b"h-alice", slow_lookup)
    await _settle()
    cache.forget_key(ALICE.key_id)  # revoked through this API meanwhile
    gate.set()
    await _settle()
    assert cache.get(b"h-alice") is None
    # The same for a lookup in line (a request that found no entry).
    epoch = cache.epoch
    cache.forget_account("alice")
    cache.put(b"h-alice", ALICE, epoch=epoch)
    assert cache.get(b"h-alice") is None
    cache.put(b"h-alice", ALICE, epoch=cache.epoch)
    assert cache.get(b"h-alice") is ALICE


def test_a_verified_key_stays_known_past_its_ttl_and_with_the_cache_off(
    clock: list[float],
) -> None:
    """Known keys skip the per-address lookup limit: an hour, whatever the TTL (even 0)."""
    for ttl in (5, 0):
        cache = KeyCache(ttl_s=ttl)
        assert not cache.known(b"h-alice")
        cache.put(b"h-alice", ALICE)
        clock[0] += key_cache.KNOWN_S - 1
        assert cache.get(b"h-alice") is None and cache.known(b"h-alice")
        clock[0] += 1
        assert not cache.known(b"h-alice")


def test_a_refused_or_cleared_key_is_no_longer_known(clock: list[float]) -> None:
    cache = KeyCache(ttl_s=5)
    cache.put(b"h-alice", ALICE)
    cache.put(b"h-bob", BOB)
    cache.refuse(b"h-alice")  # revoked since: its next lookup counts again
    assert not cache.known(b"h-alice") and cache.known(b"h-bob")
    cache.clear()
    assert not cache.known(b"h-bob")


async def test_a_key_revoked_at_its_background_recheck_is_no_longer_known(
    clock: list[float],
) -> None:
    cache = KeyCache(ttl_s=4, refresh_window=AT_3_4)
    cache.put(b"h-alice", ALICE)
    clock[0] += 3

    async def revoked() -> Principal | None:
        return None

    cache.refresh_due(b"h-alice", revoked)
    await _settle()
    assert cache.get(b"h-alice") is None and not cache.known(b"h-alice")


def test_the_known_record_stays_bounded_and_keeps_the_latest_verified(
    clock: list[float],
) -> None:
    cache = KeyCache(ttl_s=5, max_entries=10)
    cache.put(b"h-first", ALICE)
    for i in range(100):
        cache.put(f"h{i}".encode(), ALICE)
        cache.put(b"h-first", ALICE)  # verified again: among the newest
        clock[0] += 0.01
    assert len(cache._known) <= 10
    assert cache.known(b"h99") and cache.known(b"h-first")
