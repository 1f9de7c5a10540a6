"""Settings shared by every service: where Kafka and Postgres are, and the topic names.

Values come from the environment (``METERLINE_*``); what is not set there falls back to the
state file that ``meterline dev up`` writes, so commands and tests find the local stack
without flags.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from schemas import topics
from schemas.bounds import BoundsSettings


def meterline_home() -> Path:
    """The folder for local state (stack.json, data, logs); METERLINE_HOME overrides it."""
    return Path(os.environ.get("METERLINE_HOME", str(Path.home() / ".meterline"))).expanduser()


def stack_state_file() -> Path:
    """Where `meterline dev up` records the bootstrap servers and the DSN."""
    return meterline_home() / "stack.json"


def read_stack_state() -> dict[str, Any]:
    """The recorded local stack, or {} when none was brought up."""
    try:
        data = json.loads(stack_state_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class CommonSettings(BoundsSettings):
    """Where the services are (and the clock skew an event may have); every service's settings
    extend this."""

    model_config = SettingsConfigDict(env_prefix="METERLINE_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    database_url: str = Field(default="", description="PostgreSQL DSN for asyncpg")
    topic_usage_events: str = topics.USAGE_EVENTS
    topic_usage_dlq: str = topics.USAGE_DLQ
    topic_credit_alerts: str = topics.CREDIT_ALERTS
    usage_events_partitions: int = Field(default=topics.USAGE_EVENTS_PARTITIONS, ge=1)

    @model_validator(mode="after")
    def _fill_from_stack(self) -> CommonSettings:
        if not self.kafka_bootstrap or not self.database_url:
            state = read_stack_state()
            if not self.kafka_bootstrap:
                self.kafka_bootstrap = str(state.get("kafka_bootstrap") or "127.0.0.1:19092")
            if not self.database_url:
                self.database_url = str(
                    state.get("database_url") or "postgresql://meterline@127.0.0.1:15432/meterline"
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> CommonSettings:
    """The shared settings, read once (after tests have set the environment)."""
    return CommonSettings()
