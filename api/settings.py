"""Settings of the HTTP API (METERLINE_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from processors.settings import LedgerSettings
from schemas.api_admin import RateLimit


class ApiSettings(LedgerSettings):
    """The API service: encryption keys, rate-limit storage, ledger policy, pool size."""

    encryption_keys: str = Field(
        default="",
        description="Comma-separated Fernet keys; the first encrypts, all decrypt (rotation).",
    )
    rate_limit_storage: str = Field(
        default="memory://", description="limits storage URI: memory:// or redis://host:port"
    )
    admin_rate_limit: str = Field(
        default="2000/second", description="Rate limit of admin keys that have no account"
    )
    api_key_cache_seconds: float = Field(
        default=5,
        ge=0,
        description="How long a verified key is trusted without a database lookup; a key "
        "revoked (or an account re-tiered) elsewhere takes effect within this time. 0: off.",
    )
    api_key_lookup_limit: RateLimit = Field(
        default="100/second",
        description="How many lookups of API keys not verified here lately one client address "
        "(an IPv6 /64) may cause per window; past it 429 with Retry-After and no lookup. Keys "
        "in the cache, refused lately or verified within the hour are not counted.",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=64 * 1024,
        description="The largest request body read (413 beyond it): a body is parsed in one go "
        "on the event loop, so an unbounded one stalls every other request (a 300 MB body took "
        "4 s and 1 GB). HTTP ingest's 1,000 events of 4 KiB metadata are about 5 MB.",
    )
    pg_pool_min: int = Field(default=2, ge=0)
    pg_pool_max: int = Field(default=10, ge=1)
    pg_connect_timeout_seconds: float = Field(
        default=5, gt=0, description="How long opening a Postgres connection may take"
    )
    pg_command_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="How long one query may take before the request answers 503 (never a hang)",
    )
    pg_acquire_timeout_seconds: float = Field(
        default=10,
        gt=0,
        le=300,
        description="How long a request waits for a free pool connection before it answers 503 "
        "(every connection busy: slow queries, rows locked by a long writer)",
    )
    kafka_publish_timeout_seconds: float = Field(
        default=10,
        gt=0,
        description="How long HTTP ingest waits for Kafka's acknowledgements before it answers "
        "503 with Retry-After (the events may still arrive; a retry is deduplicated)",
    )
