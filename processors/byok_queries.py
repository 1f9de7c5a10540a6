"""The account's own provider keys (BYOK): encrypted rows of openrouter_accounts."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def upsert_openrouter_key(
    conn: asyncpg.Connection, *, account_id: str, encrypted_key: bytes, key_last4: str
) -> asyncpg.Record:
    """Store (or replace) the account's encrypted OpenRouter key."""
    row = await conn.fetchrow(
        "INSERT INTO openrouter_accounts (account_id, encrypted_key, key_last4)"
        " VALUES ($1, $2, $3)"
        " ON CONFLICT (account_id) DO UPDATE SET encrypted_key = excluded.encrypted_key,"
        " key_last4 = excluded.key_last4, updated_at = now()"
        " RETURNING account_id, encrypted_key, key_last4, created_at, updated_at",
        account_id,
        encrypted_key,
        key_last4,
    )
    assert row is not None
    return row


async def read_openrouter_key(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str
) -> asyncpg.Record | None:
    """The account's stored key row, or None."""
    return await conn.fetchrow(
        "SELECT account_id, encrypted_key, key_last4, created_at, updated_at"
        " FROM openrouter_accounts WHERE account_id = $1",
        account_id,
    )


async def delete_openrouter_key(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str
) -> bool:
    """Remove the account's key; False when there was none."""
    status: str = await conn.execute(
        "DELETE FROM openrouter_accounts WHERE account_id = $1", account_id
    )
    return status != "DELETE 0"


async def openrouter_keys_after(
    conn: asyncpg.Connection, *, after_account: str, limit: int
) -> list[asyncpg.Record]:
    """The next `limit` key rows by account_id (for re-encryption in batches), locked."""
    return list(
        await conn.fetch(
            "SELECT account_id, encrypted_key FROM openrouter_accounts WHERE account_id > $1"
            " ORDER BY account_id LIMIT $2 FOR UPDATE",
            after_account,
            limit,
        )
    )


async def replace_encrypted_keys(
    conn: asyncpg.Connection, *, account_ids: Sequence[str], encrypted_keys: Sequence[bytes]
) -> None:
    """Write re-encrypted tokens back in one statement."""
    await conn.execute(
        "UPDATE openrouter_accounts o SET encrypted_key = v.k, updated_at = now()"
        " FROM unnest($1::text[], $2::bytea[]) AS v(a, k) WHERE o.account_id = v.a",
        list(account_ids),
        list(encrypted_keys),
    )
