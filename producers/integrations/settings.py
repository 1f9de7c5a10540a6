"""Settings of the proxy integrations: where meterline is, and the pre-call hold policy.

Every field reads from the environment (METERLINE_API_URL, METERLINE_LITELLM_ON_UNREACHABLE…)
and takes the same name as a constructor keyword (``MeterlineCallback(api_url=...,
on_unreachable="closed")``); a keyword wins over the environment.
"""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas import topics
from schemas.settings import likely_meant, meterline_home, setting_names, unknown_variables

log = logging.getLogger("meterline.integrations")
LITELLM_PREFIX = "METERLINE_LITELLM_"

AccountSource = Literal["end_user", "key_user", "team"]


def _env(name: str) -> str:
    # METERLINE_LITELLM_<NAME> from the environment; the keyword is the field's own name
    # (populate_by_name). An AliasChoices(name, ...) here made the bare name an environment
    # variable too: a SOURCE or MAX_HOLD set for something else in the proxy's environment
    # changed the events' source (their idempotency key) or the hold policy.
    return LITELLM_PREFIX.lower() + name


class IntegrationSettings(BaseSettings):
    """One proxy's connection to meterline and its hold policy."""

    model_config = SettingsConfigDict(
        env_prefix="METERLINE_", extra="ignore", populate_by_name=True
    )

    api_url: str = Field(default="", description="the meterline API (reservations, prices)")
    api_key: str = Field(
        default="", description="an admin key, or one allowed to act for the accounts"
    )
    kafka_bootstrap: str = Field(
        default="", description="publish usage to Kafka; empty: over the API's HTTP ingest"
    )
    topic_usage_events: str = topics.USAGE_EVENTS
    topic_usage_dlq: str = Field(
        default=topics.USAGE_DLQ,
        description="where usage that can never become an event is dead-lettered, with why",
    )

    account_from: Annotated[tuple[AccountSource, ...], NoDecode] = Field(
        default=("end_user", "key_user", "team"),
        validation_alias=_env("account_from"),
        description="who pays, first present wins: the request's `user`, the key's user, its team",
    )
    on_unreachable: Literal["open", "closed"] = Field(
        default="open",
        validation_alias=_env("on_unreachable"),
        description="meterline down: open lets calls through (usage spooled, nothing lost); "
        "closed refuses them with 503",
    )
    on_insufficient: Literal["refuse", "hold_available"] = Field(
        default="refuse",
        validation_alias=_env("on_insufficient"),
        description="the worst case does not fit: refuse (402), or hold what is available",
    )
    max_hold: Decimal | None = Field(
        default=None,
        gt=0,
        validation_alias=_env("max_hold"),
        description="cap on one call's hold (credits); None: the whole worst case",
    )
    unpriced_hold: Decimal = Field(
        default=Decimal("1"),
        gt=0,
        validation_alias=_env("unpriced_hold"),
        description="what to hold when meterline cannot price the model",
    )
    default_max_output_tokens: int = Field(
        default=4096,
        ge=1,
        validation_alias=_env("default_max_output_tokens"),
        description="output tokens to assume when the request has no max_tokens and LiteLLM "
        "does not know the model's maximum",
    )
    hold_ttl_seconds: int = Field(
        default=300, ge=1, le=86400, validation_alias=_env("hold_ttl_seconds")
    )
    api_timeout_seconds: float = Field(
        default=5.0, gt=0, validation_alias=_env("api_timeout_seconds")
    )
    spool_path: Path = Field(
        default_factory=lambda: meterline_home() / "litellm-usage.spool.jsonl",
        validation_alias=_env("spool_path"),
        description="where usage waits while meterline cannot take it",
    )
    spool_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, validation_alias=_env("spool_max_bytes")
    )
    source: str = Field(
        default="litellm", min_length=1, max_length=64, validation_alias=_env("source")
    )

    @classmethod
    def of(cls, **keywords: Any) -> IntegrationSettings:
        """Settings from the environment, overridden by these keywords. An unknown keyword is
        a TypeError naming it (and the closest setting): ignored, a typo such as
        ``on_insuficient="hold_available"`` would leave the default policy in force."""
        unknown = sorted(set(keywords) - set(cls.model_fields))
        if unknown:
            hints = []
            for name in unknown:
                close = " or ".join(repr(c) for c in likely_meant(name, cls.model_fields))
                hints.append(f"{name!r}" + (f" (did you mean {close}?)" if close else ""))
            raise TypeError(f"unknown meterline setting {', '.join(hints)}")
        for line in unknown_variables(
            {k: v for k, v in os.environ.items() if k.startswith(LITELLM_PREFIX)},
            setting_names([cls]),
        ):
            log.warning("%s", line)  # the proxy runs no `meterline` command that would say so
        return cls(**keywords)

    @field_validator("account_from", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
