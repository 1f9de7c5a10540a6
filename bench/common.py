"""What the benchmark harnesses share: a database of the bench's own beside the stack's."""

from __future__ import annotations

import asyncpg

from processors.catalog import seed_catalog
from schemas import migrate


async def bench_database(
    base_dsn: str, name: str, *, fresh: bool = False, seed_prices: bool = False
) -> str:
    """Create (or, with fresh, recreate) database `name` on base_dsn's server and migrate it.

    seed_prices: insert the shipped price catalog too.
    """
    conn = await asyncpg.connect(base_dsn)
    try:
        if fresh:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = base_dsn.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.up(conn)
        if seed_prices:
            await seed_catalog(conn)
    finally:
        await conn.close()
    return dsn


async def drop_database(base_dsn: str, name: str) -> None:
    """Drop database `name` on base_dsn's server (its connections are closed first)."""
    conn = await asyncpg.connect(base_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
