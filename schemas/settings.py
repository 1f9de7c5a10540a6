"""Settings shared by every service: where Kafka and Postgres are, and the topic names.

Values come from the environment (``METERLINE_*``); what is not set there falls back to the
state file that ``meterline dev up`` writes, so commands and tests find the local stack
without flags. Outside such a stack nothing falls back to a local address: a service calls
``require()`` for the addresses it needs and stops with a message naming the missing variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Self, TypeVar, cast

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import topics
from schemas.bounds import BoundsSettings
from schemas.errors import DomainError


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
    topic_replication_factor: int | None = Field(
        default=None,
        ge=1,
        le=32767,
        description="Replicas of the topics meterline creates; unset: 3 on a cluster of 3 "
        "brokers or more (with min.insync.replicas=2), else one per broker.",
    )

    @model_validator(mode="after")
    def _fill_from_stack(self) -> CommonSettings:
        # Only a stack `meterline dev up` recorded fills what the environment leaves out; there
        # is no built-in localhost default, so a pod missing a variable cannot quietly talk to
        # a local address: require() names what is missing instead.
        if not self.kafka_bootstrap or not self.database_url:
            state = read_stack_state()
            if not self.kafka_bootstrap:
                self.kafka_bootstrap = str(state.get("kafka_bootstrap") or "")
            if not self.database_url:
                self.database_url = str(state.get("database_url") or "")
        return self

    def as_env(self, **extra: str) -> dict[str, str]:
        """os.environ plus the METERLINE_* variables that make a `meterline` subprocess use
        these addresses and topics (extra variables last)."""
        env = dict(os.environ)
        env.update(
            METERLINE_KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            METERLINE_DATABASE_URL=self.database_url,
            METERLINE_TOPIC_USAGE_EVENTS=self.topic_usage_events,
            METERLINE_TOPIC_USAGE_DLQ=self.topic_usage_dlq,
            METERLINE_TOPIC_CREDIT_ALERTS=self.topic_credit_alerts,
            METERLINE_USAGE_EVENTS_PARTITIONS=str(self.usage_events_partitions),
        )
        env.update(extra)
        return env

    def require(self, *, kafka: bool = False, database: bool = False) -> Self:
        """These settings, or MissingAddress naming each address a service needs but lacks."""
        missing = [
            name
            for name, needed, value in (
                ("kafka", kafka, self.kafka_bootstrap),
                ("database", database, self.database_url),
            )
            if needed and not value
        ]
        if missing:
            raise MissingAddress(missing)
        return self


_ADDRESS_HELP = {
    "kafka": ("METERLINE_KAFKA_BOOTSTRAP", "the Kafka bootstrap servers (host:port[,host:port])"),
    "database": ("METERLINE_DATABASE_URL", "the PostgreSQL DSN (postgresql://user@host:port/db)"),
}


class MissingAddress(DomainError):
    """A service does not know where Kafka or Postgres is (and will not guess localhost)."""

    code = "missing_address"
    status = 503

    def __init__(self, missing: list[str]) -> None:
        lines = [f"{_ADDRESS_HELP[m][0]} is not set: {_ADDRESS_HELP[m][1]}" for m in missing]
        super().__init__(
            "; ".join(lines) + f". No local stack is recorded either ({stack_state_file()} is "
            "missing; `meterline dev up` writes it). Set the variable(s) and start again.",
            missing=missing,
        )
        self.missing = missing


class InvalidSetting(ValueError):
    """A METERLINE_* variable whose value breaks its rule; the message names each one."""

    def __init__(self, exc: ValidationError) -> None:
        super().__init__(
            "; ".join(
                f"METERLINE_{str(e['loc'][0]).upper()}: {e['msg']} (got {e['input']!r})"
                if e["loc"]
                else e["msg"]
                for e in exc.errors(include_url=False)
            )
        )


S = TypeVar("S", bound=BaseSettings)
_LOADED: dict[type[BaseSettings], BaseSettings] = {}


def get_settings(cls: type[S]) -> S:
    """A service's settings (CommonSettings, WorkerSettings, ApiSettings, ...), read from the
    environment once per process, on first use (after tests have set the environment)."""
    loaded = _LOADED.get(cls)
    if loaded is None:
        try:
            loaded = _LOADED[cls] = cls()
        except ValidationError as exc:
            raise InvalidSetting(exc) from None
    return cast(S, loaded)
