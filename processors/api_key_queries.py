"""API key rows: insert, revoke, find by key_id with the account's tier and rate limit."""

from __future__ import annotations

from typing import Any

import asyncpg


async def insert_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    key_id: str,
    key_hash: bytes,
    account_id: str | None,
    scope: str,
) -> None:
    """Store a key's hash."""
    await conn.execute(
        "INSERT INTO api_keys (key_id, key_hash, account_id, scope) VALUES ($1, $2, $3, $4)",
        key_id,
        key_hash,
        account_id,
        scope,
    )


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, *, key_id: str) -> bool:
    """Mark a live key revoked; False when there is none."""
    status: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    return status.endswith(" 1")


async def find_key(
    conn: asyncpg.Connection | asyncpg.Pool, *, key_id: str, default_tier: str
) -> Any:
    """The key's row with the tier of its account (the default tier before the account exists)."""
    return await conn.fetchrow(
        "SELECT k.key_hash, k.scope, k.account_id, k.revoked_at, t.name AS tier, t.rate_limit"
        " FROM api_keys k"
        " LEFT JOIN user_credits u ON u.account_id = k.account_id"
        " LEFT JOIN tiers t ON t.name = coalesce(u.tier, $2)"
        " WHERE k.key_id = $1",
        key_id,
        default_tier,
    )


async def list_keys(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: str | None,
    include_revoked: bool,
    after: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Keys by key_id (keyset pages), optionally of one account; never the hash."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT key_id, account_id, scope, created_at, revoked_at FROM api_keys"
        " WHERE ($1::text IS NULL OR account_id = $1)"
        " AND ($2 OR revoked_at IS NULL)"
        " AND ($3::text IS NULL OR key_id > $3)"
        " ORDER BY key_id LIMIT $4",
        account_id,
        include_revoked,
        after,
        limit,
    )
    return rows
