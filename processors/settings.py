"""Settings of the metering worker (METERLINE_* environment variables)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from processors.ledger.models import DEFAULT_LOW_BALANCE_MICROS, DEFAULT_TIER, LedgerPolicy
from processors.pricing import DEFAULT_BYOK_FEE_PCT
from schemas import topics
from schemas.money import from_micros, to_micros
from schemas.settings import CommonSettings


class LedgerSettings(CommonSettings):
    """What every writer of the ledger applies alike (worker and API read the same variables)."""

    low_balance_threshold: Decimal = Field(default=from_micros(DEFAULT_LOW_BALANCE_MICROS), ge=0)
    byok_fee_pct: Decimal = Field(default=DEFAULT_BYOK_FEE_PCT, ge=0, le=100)
    default_tier: str = DEFAULT_TIER

    def ledger_policy(self) -> LedgerPolicy:
        """The ledger policy these settings describe."""
        return LedgerPolicy(
            low_balance_micros=to_micros(self.low_balance_threshold),
            byok_fee_pct=self.byok_fee_pct,
            default_tier=self.default_tier,
        )


class WorkerSettings(LedgerSettings):
    """The Faust worker: batching, limits, catalog refresh."""

    worker_group: str = Field(default="meterline-worker", description="Kafka consumer group")
    batch_max: int = Field(default=2000, ge=1, le=100_000)
    batch_within_s: float = Field(default=0.1, gt=0)
    max_event_bytes: int = Field(default=topics.MAX_EVENT_BYTES, ge=1024)
    catalog_refresh_s: float = Field(default=30.0, gt=0)
    seed_catalog: bool = True
    worker_lanes: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Batches a worker keeps in flight side by side, each on its own partitions "
        "(p % lanes) and connection: one lane's Python runs while another's statements run.",
    )
    pg_pool_max: int = Field(default=4, ge=1)
    retry_max_backoff_s: float = Field(default=5.0, gt=0)
    shutdown_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="On SIGTERM, how long the batch in flight may take before it is abandoned "
        "(uncommitted: redelivered and deduplicated) and the worker exits.",
    )
    worker_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Serve Prometheus metrics on this port (0: off)"
    )
    worker_metrics_host: str = "127.0.0.1"
    expiry_interval_s: float = Field(
        default=15.0, gt=0, le=60, description="how often expired grants and holds are swept"
    )
    partitions_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="how often the ledger's monthly partitions are created ahead (and at start)",
    )
