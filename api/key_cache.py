"""Verified API keys kept in process for a few seconds, so most requests skip the key lookup.

Only keys that authenticated are kept, by the SHA-256 of the whole key (a wrong secret never
matches an entry). An entry lives `ttl_s` seconds: a key revoked, or an account moved to
another tier, through another process (another API replica or worker, the CLI, SQL) takes
effect within that time; through this process's admin routes, at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from processors.api_keys import Principal

_Match = Callable[[Principal], bool]


class KeyCache:
    """key hash → (expiry, Principal), bounded; a TTL of 0 keeps nothing."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    def get(self, key_hash: bytes) -> Principal | None:
        """The principal of a key verified less than `ttl_s` ago, or None."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return entry[1]

    def put(self, key_hash: bytes, principal: Principal) -> None:
        """Remember a verified key until the TTL runs out."""
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[key_hash] = (time.monotonic() + self.ttl_s, principal)

    def forget_key(self, key_id: str) -> None:
        """Drop a key (revoked here), so its next request is checked against the database."""
        self._drop(lambda p: p.key_id == key_id)

    def forget_account(self, account_id: str) -> None:
        """Drop the keys of an account whose tier (and so rate limit) changed here."""
        self._drop(lambda p: p.account_id == account_id)

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()

    def _drop(self, match: _Match) -> None:
        for digest in [d for d, (_, p) in self._entries.items() if match(p)]:
            self._entries.pop(digest, None)

    def _evict(self) -> None:
        # Expired entries first; if the cache is full of live ones, the oldest half goes.
        now = time.monotonic()
        for digest in [d for d, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[digest]
        if len(self._entries) >= self.max_entries:
            for digest in list(self._entries)[: self.max_entries // 2]:
                del self._entries[digest]
