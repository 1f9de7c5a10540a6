"""Reconcile's adjustment keys: what a correction corrects, so each is posted at most once."""

from __future__ import annotations

from urllib.parse import quote, unquote


def adjustment_key(kind: str, source: str, event_id: str, *parts: object) -> str:
    """'reconcile:<kind>:<source>:<event_id>[:<part>...]', source and event_id %-quoted."""
    return ":".join(
        ["reconcile", kind, quote(source, safe=""), quote(event_id, safe=""), *map(str, parts)]
    )


def parse_adjustment_key(key: str) -> tuple[str, str, str] | None:
    """(kind, source, event_id) of a key made by adjustment_key, else None."""
    parts = key.split(":")
    if len(parts) < 4 or parts[0] != "reconcile":
        return None
    return parts[1], unquote(parts[2]), unquote(parts[3])
