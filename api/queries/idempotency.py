"""Stored answers of idempotent API requests (table idempotency_keys)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The hash of the request that used a key, and the answer it got."""

    request_hash: bytes
    response: dict[str, Any]


async def find_response(
    conn: asyncpg.Connection | asyncpg.Pool, *, scope: str, key: str
) -> StoredResponse | None:
    """The stored answer for (scope, key), or None."""
    r = await conn.fetchrow(
        "SELECT request_hash, response::text AS response FROM idempotency_keys"
        " WHERE scope = $1 AND key = $2",
        scope,
        key,
    )
    if r is None:
        return None
    return StoredResponse(bytes(r["request_hash"]), json.loads(r["response"]))


async def save_response(
    conn: asyncpg.Connection,
    *,
    scope: str,
    key: str,
    request_hash: bytes,
    response: dict[str, Any],
) -> None:
    """Store the answer of the first request with (scope, key)."""
    await conn.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, response)"
        " VALUES ($1, $2, $3, $4::text::jsonb)",
        scope,
        key,
        request_hash,
        json.dumps(response),
    )
