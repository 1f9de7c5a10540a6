"""Verified API keys kept in process for a few seconds, so most requests skip the key lookup.

Only keys that authenticated are kept, by the SHA-256 of the whole key (a wrong secret never
matches an entry). An entry lives `ttl_s` seconds: a key revoked, or an account moved to
another tier, through another process (another API replica or worker, the CLI, SQL) takes
effect within that time; through this process's admin routes, at once.

A key in use is re-checked before its entry runs out: the first use past the entry's refresh
moment starts the lookup in the background and is answered from the entry, which the lookup then
renews (or drops, when the key was revoked meanwhile). A busy key so never waits for its own
re-check; an entry is still never trusted past its TTL, and a key used less than once between
its refresh moment and its expiry is checked in line, as before.

Each entry draws its refresh moment at random within `REFRESH_WINDOW` of the TTL. With one
moment for all (3/4 of the TTL), keys cached together (the first requests after a start, a
clear) stayed in step for good, each renewal putting them back together: under
`meterline bench api` at 1,500 balance reads/s the 50 keys' re-checks came as one burst of 50
lookups within ~30 ms every 3.75 s, and the requests around each burst queued behind them.
Drawn at random, the same re-checks arrive one at a time.

A key the database refused (unknown, wrong secret, revoked) is remembered as refused for the
same TTL: a proxy left with a revoked key, retrying in a loop, costs one lookup per TTL instead
of one per request. No refused key can turn good: a new key has a new random secret, so a new
hash, and a revoked key stays revoked.

A key that authenticated is also remembered as known (its hash only, no principal, nothing
trusted) for `KNOWN_S`, whatever the TTL: the lookup of a known key is not counted against its
client address's limit on lookups of unknown keys (api.deps), so a client spraying random keys
from a proxy's address never locks out the real keys behind the same proxy, even those whose
cache entry ran out (or with the cache off). A known key is still looked up and can be refused;
a refusal forgets it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from api.bounded import make_room
from processors.api_keys import Principal

log = logging.getLogger("meterline.api")

_Match = Callable[[Principal], bool]
# Shares of the TTL between which an entry's background re-check becomes due (drawn per entry).
REFRESH_WINDOW = (0.5, 0.9)
# How long a key that authenticated here stays exempt from the per-address lookup limit.
KNOWN_S = 3600.0


class KeyCache:
    """key hash → (refresh at, expiry, Principal), bounded; a TTL of 0 keeps nothing."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        refresh_window: tuple[float, float] = REFRESH_WINDOW,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.refresh_window = refresh_window
        self._entries: dict[bytes, tuple[float, float, Principal]] = {}
        self._refused: dict[bytes, float] = {}  # key hash -> until when it is answered 401
        self._known: dict[bytes, float] = {}  # key hash -> until when it is known good
        self._refreshing: set[bytes] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Bumped by every forget and clear: a lookup that began before one does not put back
        # what it read (it may predate the revocation or re-tiering the forget was for).
        self.epoch = 0

    def get(self, key_hash: bytes) -> Principal | None:
        """The principal of a key verified less than `ttl_s` ago, or None."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return entry[2]

    def put(self, key_hash: bytes, principal: Principal, *, epoch: int | None = None) -> None:
        """Remember a verified key until the TTL runs out; `epoch` is `self.epoch` as it was
        before the lookup (ignored if a forget or clear came in between). The key is known
        good for `KNOWN_S` in any case (even with a TTL of 0)."""
        self._remember_known(key_hash)
        if self.ttl_s <= 0 or (epoch is not None and epoch != self.epoch):
            return
        if len(self._entries) >= self.max_entries:
            self._evict()
        now = time.monotonic()
        refresh_at = now + self.ttl_s * random.uniform(*self.refresh_window)  # noqa: S311 - spread, not secret
        self._entries[key_hash] = (refresh_at, now + self.ttl_s, principal)

    def refused(self, key_hash: bytes) -> bool:
        """Whether the key was refused by the database less than `ttl_s` ago."""
        until = self._refused.get(key_hash)
        if until is None:
            return False
        if until <= time.monotonic():
            self._refused.pop(key_hash, None)
            return False
        return True

    def known(self, key_hash: bytes) -> bool:
        """Whether the key authenticated here less than `KNOWN_S` ago (and was not refused
        since): its lookup is not one of an unknown key."""
        until = self._known.get(key_hash)
        if until is None:
            return False
        if until <= time.monotonic():
            self._known.pop(key_hash, None)
            return False
        return True

    def _remember_known(self, key_hash: bytes) -> None:
        # Popped and put back, so the record stays in order of last verification (the oldest
        # half is what make_room drops from a record full of live entries).
        if self._known.pop(key_hash, None) is None and len(self._known) >= self.max_entries:
            make_room(self._known, lambda until: until, self.max_entries, time.monotonic())
        self._known[key_hash] = time.monotonic() + KNOWN_S

    def refuse(self, key_hash: bytes) -> None:
        """Remember that the database refused this key (for `ttl_s`); it is no longer known."""
        self._known.pop(key_hash, None)
        if self.ttl_s <= 0:
            return
        if len(self._refused) >= self.max_entries:
            make_room(self._refused, lambda until: until, self.max_entries, time.monotonic())
        self._refused[key_hash] = time.monotonic() + self.ttl_s

    def refresh_due(
        self, key_hash: bytes, lookup: Callable[[], Awaitable[Principal | None]]
    ) -> None:
        """Re-check a cached key in the background with `lookup` once its entry is past its
        refresh moment (one lookup at a time per key): renewed if the key is still
        good, dropped if it is not; after a failed lookup the entry runs out at its TTL."""
        entry = self._entries.get(key_hash)
        if entry is None or key_hash in self._refreshing or entry[0] > time.monotonic():
            return
        self._refreshing.add(key_hash)
        task = asyncio.get_running_loop().create_task(self._refresh(key_hash, lookup, self.epoch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(
        self, key_hash: bytes, lookup: Callable[[], Awaitable[Principal | None]], epoch: int
    ) -> None:
        try:
            principal = await lookup()
        except Exception as exc:  # noqa: BLE001 - a background re-check; the TTL still bounds
            log.warning("re-checking a cached API key failed (%s: %s)", type(exc).__name__, exc)
            return
        finally:
            self._refreshing.discard(key_hash)
        if principal is None:
            self._entries.pop(key_hash, None)
            self._known.pop(key_hash, None)
        else:
            self.put(key_hash, principal, epoch=epoch)

    def forget_key(self, key_id: str) -> None:
        """Drop a key (revoked here), so its next request is checked against the database."""
        self._drop(lambda p: p.key_id == key_id)

    def forget_account(self, account_id: str) -> None:
        """Drop the keys of an account whose tier (and so rate limit) changed here."""
        self._drop(lambda p: p.account_id == account_id)

    def clear(self) -> None:
        """Drop everything."""
        self.epoch += 1
        self._entries.clear()
        self._refused.clear()
        self._known.clear()

    def _drop(self, match: _Match) -> None:
        self.epoch += 1
        for digest in [d for d, (_, _, p) in self._entries.items() if match(p)]:
            self._entries.pop(digest, None)

    def _evict(self) -> None:
        make_room(self._entries, lambda entry: entry[1], self.max_entries, time.monotonic())
