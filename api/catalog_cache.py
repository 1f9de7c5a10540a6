"""The price catalog for request-time pricing, reloaded from Postgres at most every few seconds."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from processors.catalog import load_catalog
from processors.pricing import Catalog

CATALOG_TTL_S = 5.0


class CatalogCache:
    """One Catalog per app, shared by requests; a new price is used within ttl seconds."""

    def __init__(self, ttl_s: float = CATALOG_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._catalog: Catalog | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, pool: asyncpg.Pool) -> Catalog:
        """The cached catalog, reloaded when older than ttl (one reload at a time)."""
        if self._catalog is not None and time.monotonic() - self._loaded_at < self.ttl_s:
            return self._catalog
        async with self._lock:
            if self._catalog is None or time.monotonic() - self._loaded_at >= self.ttl_s:
                self._catalog = await load_catalog(pool)
                self._loaded_at = time.monotonic()
            return self._catalog
