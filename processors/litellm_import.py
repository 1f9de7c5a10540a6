"""LiteLLM's model_prices_and_context_window.json → PriceVersions (per million tokens, exact)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from processors.pricing import Catalog, PriceVersion

__all__ = [
    "ImportResult",
    "drop_unchanged",
    "load_litellm_file",
    "model_id",
    "parse_litellm",
    "per_mtok",
]

_INPUT = "input_cost_per_token"
_OUTPUT = "output_cost_per_token"
_CACHE_READ = "cache_read_input_token_cost"
_CACHE_WRITE = "cache_creation_input_token_cost"


@dataclass
class ImportResult:
    """What a LiteLLM file yields: the versions to add and every entry skipped, with why."""

    versions: list[PriceVersion] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip_reasons(self) -> Counter[str]:
        """How many entries were skipped for each reason."""
        return Counter(reason for _, reason in self.skipped)


def load_litellm_file(path: Path) -> dict[str, Any]:
    """Read the JSON file; numbers with a fraction become Decimal straight from their text."""
    with path.open("rb") as f:
        data = json.load(f, parse_float=Decimal)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of model → prices, got {type(data)}")
    return data


def per_mtok(value: Any) -> Decimal:
    """A per-token price (float, int, Decimal or string) → exact credits per million tokens."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a price")
    if isinstance(value, float):
        # repr() is the shortest string that round-trips: the number the file meant,
        # without the binary float's tail.
        dec = Decimal(repr(value))
    elif isinstance(value, Decimal | int):
        dec = Decimal(value)
    elif isinstance(value, str):
        try:
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    else:
        raise ValueError(f"{value!r} is not a price")
    if not dec.is_finite() or dec < 0:
        raise ValueError(f"{value!r} is not a finite price >= 0")
    scaled = dec.scaleb(6)
    # Canonical form: no exponent ("1E+1" → "10"), trailing zeros dropped.
    return (
        scaled.quantize(Decimal(1)) if scaled == scaled.to_integral_value() else scaled.normalize()
    )


def _provider(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw:
        return None
    # "vertex_ai-language-models" and "vertex_ai-anthropic_models" are routes of "vertex_ai".
    return raw.split("-", 1)[0]


def model_id(name: str, provider: str | None) -> str:
    """meterline's "provider/model" id for a LiteLLM key ("gpt-4o" + openai → "openai/gpt-4o")."""
    if "/" in name or not provider:
        return name
    return f"{provider}/{name}"


def parse_litellm(
    data: Mapping[str, Any],
    *,
    effective_from: datetime,
    provider: str | None = None,
) -> ImportResult:
    """Turn LiteLLM's price map into versions effective from effective_from.

    Entries without per-token prices (images, audio, per-second), the `sample_spec` and, when
    `provider` is given, other providers' entries are skipped with a reason.
    """
    if effective_from.utcoffset() is None:
        raise ValueError(f"effective_from must be timezone-aware, got {effective_from}")
    result = ImportResult()
    seen: dict[str, str] = {}
    for name, entry in data.items():
        if name == "sample_spec":
            result.skipped.append((name, "the sample spec, not a model"))
            continue
        if not isinstance(entry, Mapping):
            result.skipped.append((name, "not an object"))
            continue
        raw_provider = entry.get("litellm_provider")
        prov = _provider(raw_provider)
        if provider is not None and raw_provider != provider and prov != provider:
            result.skipped.append((name, f"provider is not {provider}"))
            continue
        if entry.get(_INPUT) is None and entry.get(_OUTPUT) is None:
            mode = entry.get("mode") or "unknown"
            result.skipped.append((name, f"no per-token prices (mode {mode})"))
            continue
        try:
            inp = per_mtok(entry.get(_INPUT) or 0)
            out = per_mtok(entry.get(_OUTPUT) or 0)
            cached = None if entry.get(_CACHE_READ) is None else per_mtok(entry[_CACHE_READ])
            write = None if entry.get(_CACHE_WRITE) is None else per_mtok(entry[_CACHE_WRITE])
        except (ValueError, InvalidOperation) as exc:
            result.skipped.append((name, f"invalid price: {exc}"))
            continue
        mid = model_id(name, prov)
        if mid in seen:
            result.skipped.append((name, f"same model id as {seen[mid]!r} ({mid})"))
            continue
        seen[mid] = name
        result.versions.append(
            PriceVersion(
                id=None,
                model=mid,
                provider=prov,
                effective_from=effective_from,
                input_per_mtok=inp,
                cached_input_per_mtok=cached,
                cache_write_per_mtok=write,
                output_per_mtok=out,
            )
        )
    return result


def drop_unchanged(
    versions: Iterable[PriceVersion], catalog: Catalog
) -> tuple[list[PriceVersion], list[PriceVersion]]:
    """Split versions into (new or changed, unchanged) against the catalog's version then."""
    known = set(catalog.models())  # exact ids only: an alias is not the same model's price
    changed: list[PriceVersion] = []
    unchanged: list[PriceVersion] = []
    for v in versions:
        current = catalog.version_at(v.model, v.effective_from) if v.model in known else None
        (unchanged if current is not None and current.same_prices(v) else changed).append(v)
    return changed, unchanged
