"""Settings of the HTTP API (METERLINE_* environment variables)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field

from processors.ledger import LedgerPolicy
from schemas.money import to_micros
from schemas.settings import CommonSettings


class ApiSettings(CommonSettings):
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
    low_balance_threshold: Decimal = Field(default=Decimal("1"), ge=0)
    byok_fee_pct: Decimal = Field(default=Decimal("5"), ge=0, le=100)
    default_tier: str = "free"
    api_key_cache_seconds: float = Field(
        default=5,
        ge=0,
        description="How long a verified key is trusted without a database lookup; a key "
        "revoked (or an account re-tiered) elsewhere takes effect within this time. 0: off.",
    )
    pg_pool_min: int = Field(default=2, ge=0)
    pg_pool_max: int = Field(default=10, ge=1)

    def ledger_policy(self) -> LedgerPolicy:
        """The ledger policy these settings describe."""
        return LedgerPolicy(
            low_balance_micros=to_micros(self.low_balance_threshold),
            byok_fee_pct=self.byok_fee_pct,
            default_tier=self.default_tier,
        )


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    """The API settings, read once (after tests have set the environment)."""
    return ApiSettings()
