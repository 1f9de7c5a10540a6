"""BYOK key custody: Fernet encryption of accounts' provider keys, masking, key rotation.

METERLINE_ENCRYPTION_KEYS holds comma-separated Fernet keys: the first encrypts, every one
decrypts (MultiFernet). To rotate, put a new key first, run `meterline admin rotate-keys`
(re-encrypts every stored key under the first), then drop the old key.
"""

from __future__ import annotations

import re

import asyncpg
from cryptography.fernet import Fernet, MultiFernet

from processors import byok_queries as q
from schemas.errors import DomainError

OPENROUTER_PREFIX = "sk-or-"
_KEY_CHARS = re.compile(r"[A-Za-z0-9_\-]+")
MIN_KEY_LEN, MAX_KEY_LEN = 16, 512


class EncryptionNotConfigured(DomainError):
    """No (or an unusable) METERLINE_ENCRYPTION_KEYS; the message never contains a key."""

    code = "encryption_not_configured"
    status = 503


def multifernet(encryption_keys: str) -> MultiFernet:
    """MultiFernet over the comma-separated keys; the first encrypts."""
    parts = [k.strip() for k in encryption_keys.split(",") if k.strip()]
    if not parts:
        raise EncryptionNotConfigured(
            "BYOK needs an encryption key: set METERLINE_ENCRYPTION_KEYS to one or more "
            'comma-separated Fernet keys (make one with `python -c "from cryptography.fernet '
            'import Fernet; print(Fernet.generate_key().decode())"`)'
        )
    fernets = []
    for i, key in enumerate(parts, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            raise EncryptionNotConfigured(
                f"METERLINE_ENCRYPTION_KEYS entry {i} of {len(parts)} is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
    return MultiFernet(fernets)


def key_problem(api_key: str) -> str | None:
    """Why this is not an OpenRouter key (never quoting it), or None when it looks like one."""
    if not api_key.startswith(OPENROUTER_PREFIX):
        return f"must be an OpenRouter API key, starting with {OPENROUTER_PREFIX!r}"
    if not MIN_KEY_LEN <= len(api_key) <= MAX_KEY_LEN:
        return f"must be {MIN_KEY_LEN} to {MAX_KEY_LEN} characters long"
    if not _KEY_CHARS.fullmatch(api_key):
        return "may contain only letters, digits, '-' and '_'"
    return None


def mask(key_last4: str) -> str:
    """The masked form shown to users: the prefix and the last four characters."""
    return f"{OPENROUTER_PREFIX}…{key_last4}"


def encrypt(fernet: MultiFernet, api_key: str) -> bytes:
    """The token stored at rest."""
    return fernet.encrypt(api_key.encode())


def decrypt(fernet: MultiFernet, token: bytes) -> str:
    """The key from its stored token (for the code that calls OpenRouter on the account's
    behalf); raises cryptography.fernet.InvalidToken when no configured key opens it."""
    return fernet.decrypt(token).decode()


async def rotate_encryption(
    conn: asyncpg.Connection, fernet: MultiFernet, *, batch_size: int = 500
) -> int:
    """Re-encrypt every stored key under the first key of `fernet`; returns how many.

    Each batch is its own transaction (rows locked while rewritten), so a long rotation never
    holds every row; a stopped rotation is simply run again. A token no configured key opens
    raises InvalidToken, naming no key.
    """
    done = 0
    after = ""
    while True:
        async with conn.transaction():
            rows = await q.openrouter_keys_after(conn, after_account=after, limit=batch_size)
            if not rows:
                return done
            tokens = [fernet.rotate(bytes(r["encrypted_key"])) for r in rows]
            await q.replace_encrypted_keys(
                conn,
                account_ids=[r["account_id"] for r in rows],
                encrypted_keys=tokens,
            )
        done += len(rows)
        after = rows[-1]["account_id"]
