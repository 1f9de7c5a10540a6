"""Small readers shared by the adapters: times, identifiers, money, metadata that fits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from producers.errors import AdapterError
from schemas.bounds import MAX_DECIMAL_PLACES, strip_control
from schemas.event import METADATA_MAX_BYTES, metadata_size

_PLACES = Decimal(1).scaleb(-MAX_DECIMAL_PLACES)


def epoch(value: Any, field: str) -> datetime:
    """Seconds since the epoch (int or float) → an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AdapterError(field, f"must be seconds since the epoch, got {value!r}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise AdapterError(field, f"is not a valid epoch time: {value!r}") from exc


def text(value: Any, field: str) -> str:
    """A non-empty string (numbers are accepted as their decimal text)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AdapterError(field, f"must be a string, got {type(value).__name__}")
    out = str(value)
    if not out:
        raise AdapterError(field, "must not be empty")
    return out


def decimal_text(value: Any, field: str) -> str:
    """A cost as a plain decimal string; a float keeps its shortest decimal form."""
    if isinstance(value, bool):
        raise AdapterError(field, f"must be a decimal number, got {value!r}")
    try:
        dec = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise AdapterError(field, f"must be a decimal number, got {value!r}") from exc
    if not dec.is_finite():
        raise AdapterError(field, f"must be a finite number, got {value!r}")
    exponent = dec.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMAL_PLACES:
        # A float's tail (1e-40) below the bound's precision: the cost is kept for
        # reconciliation only, so round it rather than refuse a real usage event.
        dec = dec.quantize(_PLACES)
    return format(dec, "f")


def fit_metadata(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """Metadata gathered from a payload, without nulls, cut to fit 4 KiB (last keys go first).

    Metadata we collect ourselves must never make a real usage event invalid: control
    characters the event's bounds refuse are dropped from keys and strings.
    """
    out = {
        strip_control(k): _clean(v)
        for k, v in meta.items()
        if v is not None and v != [] and v != {}
    }
    while out and metadata_size(out) > METADATA_MAX_BYTES:
        out.pop(next(reversed(out)))
    return out or None


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return strip_control(value, free=True)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, Mapping):
        return {strip_control(str(k)): _clean(v) for k, v in value.items()}
    return value
