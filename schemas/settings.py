"""Settings shared by every service: where Kafka and Postgres are, and the topic names.

Values come from the environment (``METERLINE_*``); what is not set there falls back to the
state file that ``meterline dev up`` writes, so commands and tests find the local stack
without flags. Outside such a stack nothing falls back to a local address: a service calls
``require()`` for the addresses it needs and stops with a message naming the missing variable.
"""

from __future__ import annotations

import difflib
import json
import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, cast

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
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
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How every Kafka client meterline makes connects: TLS (SSL), SASL, or both",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = Field(
        default="", description="CA certificates (PEM) to check the brokers by; empty: the system's"
    )
    kafka_ssl_certfile: str = Field(default="", description="client certificate (PEM), for mTLS")
    kafka_ssl_keyfile: str = Field(default="", description="its private key (PEM)")
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

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> CommonSettings:
        # A half-configured connection would fail later as a timeout that names nothing.
        protocol = self.kafka_security_protocol
        sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        given = bool(self.kafka_sasl_username), bool(self.kafka_sasl_password.get_secret_value())
        if sasl and not all(given):
            raise ValueError(
                f"METERLINE_KAFKA_SECURITY_PROTOCOL={protocol} needs METERLINE_KAFKA_SASL_USERNAME"
                " and METERLINE_KAFKA_SASL_PASSWORD"
            )
        if not sasl and any(given):
            raise ValueError(
                "METERLINE_KAFKA_SASL_USERNAME/PASSWORD are set, but "
                f"METERLINE_KAFKA_SECURITY_PROTOCOL is {protocol}: use SASL_SSL or SASL_PLAINTEXT"
            )
        files = {
            "METERLINE_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "METERLINE_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "METERLINE_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        for name, path in files.items():
            if path and not tls:
                raise ValueError(
                    f"{name} is set, but METERLINE_KAFKA_SECURITY_PROTOCOL is {protocol}"
                )
            if path and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path!r}")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError(
                "METERLINE_KAFKA_SSL_CERTFILE and METERLINE_KAFKA_SSL_KEYFILE go together"
            )
        if tls:
            self._ssl_context()  # a file that is no PEM, or a key of another certificate
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"METERLINE_KAFKA_SSL_CAFILE {self.kafka_ssl_cafile!r}: no CA certificates "
                f"in PEM can be read from it ({exc})"
            ) from None
        if self.kafka_ssl_certfile:
            try:
                context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    "METERLINE_KAFKA_SSL_CERTFILE / METERLINE_KAFKA_SSL_KEYFILE: not a PEM "
                    f"certificate and its private key ({exc})"
                ) from None
        return context

    def kafka_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (producer, consumer, admin): the security
        settings; none for PLAINTEXT."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": protocol}
        if protocol.endswith("SSL"):
            options["ssl_context"] = self._ssl_context()
        if protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return options

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
            METERLINE_KAFKA_SECURITY_PROTOCOL=self.kafka_security_protocol,
            METERLINE_KAFKA_SASL_MECHANISM=self.kafka_sasl_mechanism,
            METERLINE_KAFKA_SASL_USERNAME=self.kafka_sasl_username,
            METERLINE_KAFKA_SASL_PASSWORD=self.kafka_sasl_password.get_secret_value(),
            METERLINE_KAFKA_SSL_CAFILE=self.kafka_ssl_cafile,
            METERLINE_KAFKA_SSL_CERTFILE=self.kafka_ssl_certfile,
            METERLINE_KAFKA_SSL_KEYFILE=self.kafka_ssl_keyfile,
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
                else e["msg"].removeprefix("Value error, ")  # a rule across several variables
                for e in exc.errors(include_url=False)
            )
        )


def kafka_options(settings: CommonSettings | None = None) -> dict[str, Any]:
    """The Kafka security options of `settings`, else of this process's environment."""
    return (settings or get_settings(CommonSettings)).kafka_options()


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


def setting_names(classes: Iterable[type[BaseSettings]]) -> set[str]:
    """The environment variables these settings classes read (env_prefix + field name)."""
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, str):  # an alias is the variable's whole name, no prefix
                names.add(alias.upper())
            elif isinstance(alias, AliasChoices):
                names.update(c.upper() for c in alias.choices if isinstance(c, str))
            else:
                names.add((prefix + field).upper())
    return names


def likely_meant(name: str, candidates: Iterable[str]) -> list[str]:
    """The candidates `name` was likely meant as (at most 3): the closest spelling, else those
    holding the same words in another order (USAGE_TOPIC → TOPIC_USAGE_EVENTS)."""
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    if not close:
        words = set(name.split("_"))
        close = [c for c in candidates if words <= set(c.split("_"))]
    return close[:3]


def unknown_variables(environ: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One line per METERLINE_* variable in `environ` that is not in `known`, with the likely
    meant names when there are any. pydantic-settings ignores such a variable, so a typo such
    as METERLINE_USAGE_TOPIC would leave the default topic in force without a word."""
    prefix = "METERLINE_"
    known_names = sorted({k for k in known if k.startswith(prefix)})
    tails = [k[len(prefix) :] for k in known_names]  # the shared prefix would match anything
    lines = []
    for name in sorted(environ):
        if not name.startswith(prefix) or name in known_names:
            continue
        close = [prefix + t for t in likely_meant(name[len(prefix) :], tails)]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        lines.append(f"{name} is not a meterline setting{hint}; it is ignored")
    return lines
