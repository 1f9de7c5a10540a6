"""The in-process cache of verified API keys: TTL, forgetting, bounds."""

from __future__ import annotations

import pytest

from api import key_cache
from api.key_cache import KeyCache
from processors.api_keys import Principal

ALICE = Principal(key_id="a" * 16, scope="user", account_id="alice", tier="free")
BOB = Principal(key_id="b" * 16, scope="user", account_id="bob", tier="pro")


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
