"""Producers: turn proxies' usage shapes into UsageEvents and publish them to usage.events."""

from __future__ import annotations

from typing import Any

from producers.adapters import FORMATS, detect_format, to_event
from producers.errors import AdapterError
from producers.jsonlines import BadLine, read_events
from producers.synthetic import DEFAULT_MODELS, synthetic_events

_PUBLISHER = {"Delivery", "Failure", "PublishError", "PublishResult", "UsagePublisher"}
_CLIENT = {"MeterlineClient", "MeterlineSyncClient"}

__all__ = [
    "DEFAULT_MODELS",
    "FORMATS",
    "AdapterError",
    "BadLine",
    "Delivery",
    "Failure",
    "MeterlineClient",
    "MeterlineSyncClient",
    "PublishError",
    "PublishResult",
    "UsagePublisher",
    "detect_format",
    "read_events",
    "synthetic_events",
    "to_event",
]


def __getattr__(name: str) -> Any:
    # The publisher pulls in aiokafka; adapters alone (HTTP validation, tests) stay light.
    if name in _PUBLISHER:
        from producers import publisher

        return getattr(publisher, name)
    if name in _CLIENT:
        from producers import client

        return getattr(client, name)
    raise AttributeError(f"module 'producers' has no attribute {name!r}")
