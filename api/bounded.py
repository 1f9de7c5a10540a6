"""One make-room rule for the API's in-process records: keys verified, refused, limit windows."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def make_room(
    entries: dict[K, V], expiry: Callable[[V], float], max_entries: int, now: float
) -> None:
    """Expired entries go first (expiry(value) <= now); if the record is still full of live
    ones, the oldest half goes (dicts keep insertion order).

    Called only when the record is full, so each call frees at least half of it and the cost
    per insert stays constant whatever a client sends (random keys, many addresses).
    """
    for k in [k for k, value in entries.items() if expiry(value) <= now]:
        del entries[k]
    if len(entries) >= max_entries:
        for k in list(entries)[: max_entries // 2]:
            del entries[k]
