"""The per-key rate limiter kept in process (METERLINE_RATE_LIMIT_STORAGE=memory://).

limits' FixedWindowRateLimiter over its async memory storage starts an asyncio task on
nearly every hit to sweep every key's window (limits 3.14, MemoryStorage.__schedule_expiry):
a task and a pass over all active keys per request, 9 us with 50 keys and 73 us with 1,000.
This one keeps the same windows and the same answers (a fixed window opens on a key's first
hit and lasts the item's expiry; every hit counts, refused or not; allowed while the count
is within the limit) and sweeps expired windows at most once a minute. Other storages
(redis://, ...) still go through limits.

It holds at most `max_keys` windows: the per-address limit on lookups of unknown API keys
opens one per client address, and a client may come from any number of them. When it is full,
expired windows go, then the oldest half (api.bounded): a dropped window starts again from
zero, so an address gets at most its limit once more per window for each time the record
filled, which takes `max_keys / 2` new windows.
"""

from __future__ import annotations

import time
from typing import Protocol

from limits import RateLimitItem
from limits.util import WindowStats

from api.bounded import make_room

SWEEP_EVERY_S = 60.0
MAX_KEYS = 100_000


class RateLimiter(Protocol):
    """What the API asks of a limiter (limits' async FixedWindowRateLimiter has both)."""

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool: ...

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats: ...


class MemoryFixedWindow:
    """Fixed windows in a dict: key -> [window end (epoch seconds), hits in the window]."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._windows: dict[str, list[float]] = {}
        self._next_sweep = 0.0

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """Count a hit; True while the window's count is within the limit."""
        key = item.key_for(*identifiers)
        now = time.time()
        window = self._windows.get(key)
        if window is None or window[0] <= now:
            if now >= self._next_sweep:
                self._sweep(now)
            self._windows.pop(key, None)  # a new window goes to the end (the newest)
            if len(self._windows) >= self.max_keys:
                make_room(self._windows, lambda w: w[0], self.max_keys, now)
            window = self._windows[key] = [now + item.get_expiry(), 0]
        window[1] += cost
        return window[1] <= item.amount

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        """When the key's window ends (epoch seconds) and how many hits it has left."""
        now = time.time()
        window = self._windows.get(item.key_for(*identifiers))
        # Whole seconds, as limits' memory storage answers.
        if window is None or window[0] <= now:
            return WindowStats(int(now), item.amount)
        return WindowStats(int(window[0]), max(0, item.amount - int(window[1])))

    def _sweep(self, now: float) -> None:
        for key in [k for k, (end, _) in self._windows.items() if end <= now]:
            del self._windows[key]
        self._next_sweep = now + SWEEP_EVERY_S
