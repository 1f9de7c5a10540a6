"""API keys: `ml_<key_id>_<secret>`, random (256-bit secret), shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal, cast

import asyncpg

from processors import api_key_queries as q

KEY_PREFIX = "ml_"
Scope = Literal["user", "admin"]
# Secrets are 43 characters (token_urlsafe(32)); up to 128 leaves room for longer ones later.
_KEY_RE = re.compile(r"^ml_([0-9a-f]{16})_([A-Za-z0-9_-]{43,128})$")
MAX_KEY_CHARS = len(KEY_PREFIX) + 16 + 1 + 128
"""No key is longer: a longer Authorization value is refused before it is hashed or looked up."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its scope, its account (None for a global admin), its tier."""

    key_id: str
    scope: Scope
    account_id: str | None
    tier: str | None
    rate_limit: str | None = None  # the tier's limit, e.g. "20/second"; None: the admin default

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


def hash_key(key: str) -> bytes:
    """The stored form of a key: SHA-256 of the whole key string."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A fresh (key_id, key); the secret is token_urlsafe(32): 256 bits of entropy."""
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_key_id(key: str) -> str | None:
    """The key_id of a well-formed key, or None."""
    m = _KEY_RE.match(key)
    return m.group(1) if m else None


async def create_api_key(
    conn: asyncpg.Connection | asyncpg.Pool, *, account_id: str | None, scope: Scope
) -> tuple[str, str]:
    """Create and store a key; returns (key_id, key). The key is never stored, only its hash."""
    if scope not in ("user", "admin"):
        raise ValueError(f"scope must be 'user' or 'admin', got {scope!r}")
    if scope == "user" and not account_id:
        raise ValueError("a user key needs an account_id")
    key_id, key = new_key()
    await q.insert_key(
        conn, key_id=key_id, key_hash=hash_key(key), account_id=account_id, scope=scope
    )
    return key_id, key


async def revoke_api_key(conn: asyncpg.Connection | asyncpg.Pool, *, key_id: str) -> bool:
    """Revoke a key from now on; False when no such live key exists."""
    return await q.revoke_key(conn, key_id=key_id)


async def authenticate_key(
    conn: asyncpg.Connection | asyncpg.Pool, key: str, *, default_tier: str
) -> Principal | None:
    """The principal of a live key, or None (malformed, unknown, wrong secret, revoked)."""
    key_id = parse_key_id(key)
    if key_id is None:
        return None
    row = await q.find_key(conn, key_id=key_id, default_tier=default_tier)
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(bytes(row["key_hash"]), hash_key(key)):
        return None
    account_id = row["account_id"]
    return Principal(
        key_id=key_id,
        scope=cast(Scope, row["scope"]),
        account_id=account_id,
        tier=row["tier"] if account_id is not None else None,
        rate_limit=row["rate_limit"] if account_id is not None else None,
    )
